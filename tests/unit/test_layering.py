"""The import contracts of pyproject.toml ([tool.importlinter]) hold, and they do catch a break."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import REPO_ROOT

LINT_IMPORTS = str(Path(sys.executable).parent / "lint-imports")


def lint_imports(root: Path) -> subprocess.CompletedProcess[str]:
    """``lint-imports`` on the genloop and flows packages under ``root``, with its contracts."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(root / "src"), str(root)])}
    return subprocess.run([LINT_IMPORTS, "--no-cache"], cwd=root, env=env, capture_output=True, text=True,
                          timeout=120)


def test_the_import_contracts_are_kept():
    proc = lint_imports(REPO_ROOT)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]
    assert "0 broken" in proc.stdout


def _copy(tmp_path: Path) -> Path:
    for rel in ("src/genloop", "flows"):
        shutil.copytree(REPO_ROOT / rel, tmp_path / rel, ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy2(REPO_ROOT / "pyproject.toml", tmp_path / "pyproject.toml")
    return tmp_path


@pytest.mark.parametrize("module, line, broken", [
    ("stages/evaluate.py", "from genloop.stages.train import train_model", "Stages do not import each other BROKEN"),
    ("core/metric_names.py", "import genloop.evaluation.report",
     "No import cycles between modules of genloop or flows BROKEN"),
    ("io/tracking.py", "import genloop.stages.clean", "Role packages import only the layers below them BROKEN"),
    ("core/quality.py", "import mlflow", "core is pure: no MLflow, Prefect, DVC, Great Expectations or onnxruntime BROKEN"),
], ids=["stage-imports-stage", "cycle", "adapter-imports-stage", "core-imports-a-tool"])
def test_a_forbidden_import_breaks_its_contract(tmp_path, module, line, broken):
    root = _copy(tmp_path)
    file = root / "src" / "genloop" / module
    file.write_text(file.read_text() + f"\n{line}  # noqa\n")
    proc = lint_imports(root)
    assert proc.returncode == 1
    assert broken in proc.stdout
