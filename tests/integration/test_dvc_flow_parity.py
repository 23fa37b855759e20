"""The Prefect flow (`genloop run`) and `dvc repro` produce the same artifacts from the same data and params.

Two copies of the repository with the same tiny params.yaml: one ran `dvc repro` (the session's
``genloop_reproduced``), the other runs the flow here. The same files must come out, byte-identical
except for what records a particular run, which must still agree once that record is set aside:

- ``outputs/train/*/run.json``: the MLflow run ids of that training;
- ``*.pt`` checkpoints: the MLflow run id beside the weights, and torch.save names the archive's
  inner folder after the temporary file the atomic write used; the tensors must be identical;
- ``models/*.onnx``: provenance metadata (MLflow run id, git commit of the copy) and the exporter's
  per-node stack traces (absolute source paths); the graphs and weights must be identical;
- ``outputs/train/*/history.csv``: the measured ``images_per_s`` column; the losses must be identical;
- ``reports/data_docs/``: Great Expectations names and stamps pages with the validation time and
  gives page elements random ids;
  ``reports/index.html``: the time the report was written;
- ``outputs/.stamps/`` exists only after the flow: its stage-skipping stamps (genloop.pipeline.caching);
  DVC keeps the same information in dvc.lock.

A file that differs in any other way fails the test by name.
"""
from __future__ import annotations

import csv
import fnmatch
import json
import re
import subprocess
from pathlib import Path

import pytest
import torch
import yaml

from genloop.io.dvcio import run_dvc

from project_copy import (
    REPO_ROOT, TINY_DVC_PARAMS, artifact_files, clone_workspace, copy_project, git, project_env, ran_stages,
)

pytestmark = pytest.mark.integration

FLOW_ONLY = "outputs/.stamps/*"
TIMING_COLUMNS = {"images_per_s"}
RUN_KEYS = {"run_id", "parent_run_id"}
GE_TIME = re.compile(r"\d{8}T\d{6}\.\d{6}Z")
VOLATILE = [  # wall-clock times and the random element ids Great Expectations puts in its pages
    GE_TIME, re.compile(r"\d{4}-\d\d-\d\d[ T]\d\d:\d\d:\d\d(Z| UTC)"), re.compile(r"'_run_time_sort': [\d.]+"),
    re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}"),
]
MUST_BE_BYTE_IDENTICAL = ("data/images.npy", "data/manifest.csv", "outputs/clean/train.npz",
                          "outputs/augment/train.npz", "reports/validation.json", "reports/metrics.json")


def normalized(rel: str) -> str:
    return GE_TIME.sub("<time>", rel)


def same_checkpoint(a: Path, b: Path) -> bool:
    def equal(x, y) -> bool:
        if isinstance(x, dict):
            keys = set(x) - RUN_KEYS
            return isinstance(y, dict) and keys == set(y) - RUN_KEYS and all(equal(x[k], y[k]) for k in keys)
        if torch.is_tensor(x):
            return torch.is_tensor(y) and torch.equal(x, y)
        return x == y

    return equal(torch.load(a, map_location="cpu", weights_only=True),
                 torch.load(b, map_location="cpu", weights_only=True))


def same_onnx(a: Path, b: Path) -> bool:
    import onnx

    def graph(path):
        model = onnx.load(str(path))
        for node in model.graph.node:  # the exporter's stack traces name the copy's source path
            del node.metadata_props[:]
        return model.graph.SerializeToString(), list(model.opset_import)

    return graph(a) == graph(b)


def same_history(a: Path, b: Path) -> bool:
    def rows(path):
        return [{k: v for k, v in row.items() if k not in TIMING_COLUMNS} for row in csv.DictReader(path.open())]

    return bool(rows(a)) and rows(a) == rows(b)


def same_run_record(a: Path, b: Path) -> bool:
    x, y = json.loads(a.read_text()), json.loads(b.read_text())
    return {k: v for k, v in x.items() if k not in RUN_KEYS} == {k: v for k, v in y.items() if k not in RUN_KEYS}


def same_text_but_volatile(a: Path, b: Path) -> bool:
    return volatile_free(a) == volatile_free(b)


def volatile_free(path: Path) -> str:
    content = path.read_text()
    for pattern in VOLATILE:
        content = pattern.sub("<volatile>", content)
    return content


def first_difference(a: Path, b: Path) -> str:
    """Where two text files part (after removing volatile values), for the failure message."""
    try:
        x, y = volatile_free(a).splitlines(), volatile_free(b).splitlines()
    except UnicodeDecodeError:
        return f"{a.name}: binary"
    for n, (p, q) in enumerate(zip(x, y), 1):
        if p != q:
            return f"{a.name} line {n}:\n  flow:  {p[:300]}\n  repro: {q[:300]}"
    return f"{a.name}: {len(x)} vs {len(y)} lines"


RUN_SPECIFIC = {  # pattern -> how two runs' files must still agree
    "outputs/train/*/run.json": same_run_record,
    "*.pt": same_checkpoint,
    "models/*.onnx": same_onnx,
    "outputs/train/*/history.csv": same_history,
    "reports/data_docs/*.html": same_text_but_volatile,
    "reports/index.html": same_text_but_volatile,
}


def equivalent(rel: str, a: Path, b: Path) -> bool:
    if a.read_bytes() == b.read_bytes():
        return True
    return any(fnmatch.fnmatch(rel, pattern) and check(a, b) for pattern, check in RUN_SPECIFIC.items())


def run_flow(root: Path) -> None:
    """`genloop run` (what `make run` runs) in a copy."""
    # The flow's temporary Prefect server needs ~16 s on a new database; on busy CPUs more than the 20 s default.
    env = {**project_env(root), "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "120"}
    proc = subprocess.run(["genloop", "run"], cwd=root, env=env, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]


@pytest.fixture(scope="module")
def flow_root(tmp_path_factory, genloop_reproduced):
    """A fresh clone (tracked files only: no data/, no dvc.lock) after `genloop run`."""
    # The same code as the reproduced copy (not this checkout, which others may be editing meanwhile).
    root = copy_project(tmp_path_factory.mktemp("flow"), TINY_DVC_PARAMS, source=genloop_reproduced.root)
    run_flow(root)
    return root


def test_fresh_clone_run_leaves_git_status_clean(flow_root):
    assert git(REPO_ROOT, "ls-files", "dvc.lock") == "", \
        "dvc.lock must not be committed: it records outputs only the committing machine has"
    assert git(flow_root, "status", "--porcelain", "--untracked-files=all") == ""
    assert not (flow_root / "dvc.lock").exists()  # data.dvc is rewritten with the committed md5: no change


@pytest.fixture(scope="module")
def both(flow_root, genloop_reproduced):
    """(flow files, repro files): normalised relative path -> file, without the flow's own stamps."""
    flow = {normalized(rel): p for rel, p in artifact_files(flow_root).items() if not fnmatch.fnmatch(rel, FLOW_ONLY)}
    return flow, {normalized(rel): p for rel, p in artifact_files(genloop_reproduced.root).items()}


def test_flow_and_repro_write_the_same_files(both):
    flow, repro = both
    assert sorted(flow) == sorted(repro)


def test_every_file_matches_and_deterministic_ones_byte_for_byte(both):
    flow, repro = both
    common = sorted(set(flow) & set(repro))
    differ = [rel for rel in common if not equivalent(rel, flow[rel], repro[rel])]
    assert differ == [], "\n".join(first_difference(flow[rel], repro[rel]) for rel in differ)
    for rel in MUST_BE_BYTE_IDENTICAL:
        assert flow[rel].read_bytes() == repro[rel].read_bytes(), rel


def test_flow_keeps_an_existing_dvc_lock_current_so_dvc_has_nothing_to_do(flow_root, genloop_reproduced, both,
                                                                        tmp_path):
    def outs(root):
        lock = yaml.safe_load((root / "dvc.lock").read_text())
        return {o["path"]: o["md5"] for s in lock["stages"].values() for o in s.get("outs", [])}

    # A workspace that uses DVC has a dvc.lock (from its first `dvc repro`); any one will do, even an empty one.
    # The second run skips every stage and ends by recording the outputs in it.
    root = clone_workspace(flow_root, tmp_path / "repo")
    (root / "dvc.lock").write_text("schema: '2.0'\n")
    run_flow(root)
    flow_outs, repro_outs = outs(root), outs(genloop_reproduced.root)
    assert flow_outs.keys() == repro_outs.keys()
    flow_files, repro_files = both
    byte_differ = {rel for rel in flow_files if flow_files[rel].read_bytes() != repro_files[rel].read_bytes()}
    for path, md5 in flow_outs.items():
        holds_run_record = any(rel == path or rel.startswith(path + "/") for rel in byte_differ)
        assert md5 == repro_outs[path] or holds_run_record, f"{path}: hash differs between flow and repro"
    proc = run_dvc(["repro"], cwd=root, env=project_env(root))
    assert ran_stages(proc.stdout) == set()
    assert "up to date" in proc.stdout
