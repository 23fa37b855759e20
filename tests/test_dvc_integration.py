"""`dvc repro` in a copy of the repository: all stages, then a no-op, then only what a param touches."""
from __future__ import annotations

import re
import shutil
import subprocess

import pytest
import yaml

from genloop.dvcio import run_dvc

from conftest import REPO_ROOT

pytestmark = pytest.mark.integration

COPIED = ["src", "flows", "dvc.yaml", "params.yaml", "pyproject.toml", ".dvc/config", ".dvcignore", "data.dvc"]
TINY = {"train": {"vae": {"epochs": 1}, "gan": {"epochs": 1}},
        "evaluate": {"classifier_epochs": 1, "kid_subsets": 5}, "augment": {"copies": 0},
        "export": {"register_models": False}}


def _deep_update(base: dict, new: dict) -> dict:
    for k, v in new.items():
        base[k] = _deep_update(base.get(k, {}), v) if isinstance(v, dict) else v
    return base


def ran_stages(output: str) -> set[str]:
    return set(re.findall(r"Running stage '([\w-]+)'", output))


def repro(root) -> str:
    proc = run_dvc(["repro"], cwd=root)
    return proc.stdout + proc.stderr


@pytest.fixture(scope="module")
def project(tmp_path_factory):
    root = tmp_path_factory.mktemp("repo")
    for rel in COPIED:
        src = REPO_ROOT / rel
        if src.is_dir():
            shutil.copytree(src, root / rel, ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
        elif src.exists():
            (root / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, root / rel)
    params = _deep_update(yaml.safe_load((root / "params.yaml").read_text()), TINY)
    (root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    (root / ".gitignore").write_text("/data\n/mlflow\n")
    subprocess.run(["git", "init", "-q"], cwd=root, check=True)
    subprocess.run(["git", "add", "-A"], cwd=root, check=True)
    subprocess.run(["git", "commit", "-q", "-m", "copy"], cwd=root, check=True)
    subprocess.run(["genloop", "collect", "--source", "digits"], cwd=root, check=True, capture_output=True)
    return root


def test_first_repro_runs_every_stage(project):
    out = repro(project)
    assert ran_stages(out) == {"clean", "augment", "train_vae", "train_gan", "evaluate", "export"}
    assert (project / "reports" / "metrics.json").exists()
    assert (project / "models" / "vae_decoder.onnx").exists()


def test_second_repro_with_nothing_changed_is_a_no_op(project):
    out = repro(project)
    assert ran_stages(out) == set()
    assert "up to date" in out


def test_changing_a_gan_parameter_reruns_only_what_depends_on_it(project):
    params = yaml.safe_load((project / "params.yaml").read_text())
    params["train"]["gan"]["epochs"] = 2
    (project / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    out = repro(project)
    assert ran_stages(out) == {"train_gan", "evaluate", "export"}


def test_collecting_the_embedded_source_again_keeps_the_committed_hash(project):
    before = (REPO_ROOT / "data.dvc").read_text()
    assert (project / "data.dvc").read_text() == before
