"""The import contracts of pyproject.toml ([tool.importlinter]) hold, and they do catch a break."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

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


def _add_import(file: Path, line: str) -> None:
    file.write_text(file.read_text() + f"\n{line}\n")


def test_a_stage_importing_another_stage_breaks_the_contracts(tmp_path):
    root = _copy(tmp_path)
    _add_import(root / "src/genloop/evaluate.py", "from genloop.train import train_model  # noqa")
    proc = lint_imports(root)
    assert proc.returncode == 1
    assert "Stages do not import each other BROKEN" in proc.stdout
    assert "genloop.evaluate -> genloop.train" in proc.stdout


def test_an_import_cycle_breaks_the_contracts(tmp_path):
    root = _copy(tmp_path)
    _add_import(root / "src/genloop/metric_names.py", "import genloop.report  # noqa")
    proc = lint_imports(root)
    assert proc.returncode == 1
    assert "No import cycles between modules of genloop or flows BROKEN" in proc.stdout


def test_an_adapter_importing_a_stage_breaks_the_layers(tmp_path):
    root = _copy(tmp_path)
    _add_import(root / "src/genloop/tracking.py", "import genloop.clean  # noqa")
    proc = lint_imports(root)
    assert proc.returncode == 1
    assert "CLI > orchestration > stages > shared logic > adapters BROKEN" in proc.stdout
