"""dvc.yaml's code deps are each stage's import closure (genloop.pipeline.dvc_deps), so both routes
rerun a stage on the same code changes."""
from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import yaml

from genloop.pipeline import caching, dvc_deps

from conftest import REPO_ROOT


def test_dvc_yaml_lists_exactly_each_stages_imported_modules():
    drift = dvc_deps.drift(REPO_ROOT / "dvc.yaml")
    assert drift == [], "dvc.yaml's src/ deps are out of date; run `genloop stages --write-dvc-deps`:\n" + "\n".join(
        f"{d.stage}: missing {list(d.missing)}, no longer imported {list(d.stale)}" for d in drift)


def test_every_listed_source_file_exists():
    for name, stage in yaml.safe_load((REPO_ROOT / "dvc.yaml").read_text())["stages"].items():
        for dep in dvc_deps._listed(stage):
            assert (REPO_ROOT / dep).is_file(), f"{name}: {dep} does not exist"


def test_a_module_missing_from_a_stages_deps_is_reported(tmp_path):
    text = (REPO_ROOT / "dvc.yaml").read_text()
    assert "      - src/genloop/core/models/gan.py\n" in text
    (tmp_path / "dvc.yaml").write_text(text.replace("      - src/genloop/core/models/gan.py\n", "", 1))
    drift = dvc_deps.drift(tmp_path / "dvc.yaml")
    assert [(d.stage, d.missing) for d in drift] == [("train_vae", ("src/genloop/core/models/gan.py",))]


def test_a_listed_module_that_is_gone_is_reported(tmp_path):
    text = (REPO_ROOT / "dvc.yaml").read_text()
    (tmp_path / "dvc.yaml").write_text(text.replace("      - src/genloop/stages/clean.py\n",
                                                    "      - src/genloop/stages/clean.py\n      - src/genloop/gone.py\n", 1))
    assert [(d.stage, d.stale) for d in dvc_deps.drift(tmp_path / "dvc.yaml")] == [("clean", ("src/genloop/gone.py",))]


def test_write_restores_the_closure_and_keeps_every_other_line(tmp_path):
    original = (REPO_ROOT / "dvc.yaml").read_text()
    broken = original.replace("      - src/genloop/core/models/gan.py\n", "", 1).replace(
        "      - src/genloop/stages/clean.py\n", "      - src/genloop/stages/clean.py\n      - src/genloop/gone.py\n", 1)
    (tmp_path / "dvc.yaml").write_text(broken)
    assert dvc_deps.write(tmp_path / "dvc.yaml") == ["clean", "train_vae"]
    assert (tmp_path / "dvc.yaml").read_text() == original
    assert dvc_deps.write(tmp_path / "dvc.yaml") == []


def test_the_flow_hashes_the_same_files_dvc_yaml_lists():
    for name, stage in yaml.safe_load((REPO_ROOT / "dvc.yaml").read_text())["stages"].items():
        spec = caching.stage_spec(REPO_ROOT, name)
        hashed = {f.relative_to(REPO_ROOT).as_posix() for f in caching.code_files(spec.code)}
        assert hashed == set(dvc_deps._listed(stage)), name


def test_a_command_that_is_not_a_genloop_stage_is_refused():
    with pytest.raises(ValueError, match="does not run a genloop stage"):
        dvc_deps.stage_module("python train.py")
