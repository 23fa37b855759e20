"""`dvc repro` in a copy of the repository: all stages, then a no-op, then only what a param touches."""
from __future__ import annotations

import copy
import re
import subprocess

import pytest
import yaml

from genloop.dvcio import run_dvc

from project_copy import REPO_ROOT, TINY_PARAMS, copy_project, deep_update

pytestmark = pytest.mark.integration

TINY = deep_update(copy.deepcopy(TINY_PARAMS), {"export": {"register_models": False}})


def ran_stages(output: str) -> set[str]:
    return set(re.findall(r"Running stage '([\w-]+)'", output))


def repro(root) -> str:
    proc = run_dvc(["repro"], cwd=root)
    return proc.stdout + proc.stderr


@pytest.fixture(scope="module")
def project(tmp_path_factory):
    root = copy_project(tmp_path_factory.mktemp("repo"), TINY)
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
