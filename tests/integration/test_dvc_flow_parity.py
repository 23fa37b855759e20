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
- ``reports/explain*``: the latent atlas records when it was written and how long each model took
  (``seconds``, ``(1.2 s)``); every score must be identical;
- ``outputs/.stamps/``: the stage-skipping stamps (genloop.pipeline.caching) both routes leave, holding
  the stage's result (run ids) and times.

Both routes also share one rerun rule: after either one the other has nothing to do, and a change to
a module a stage imports reruns that stage on both.

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

STAMPS = "outputs/.stamps/*"
TIMING_COLUMNS = {"images_per_s"}
RUN_KEYS = {"run_id", "parent_run_id"}
GE_TIME = re.compile(r"\d{8}T\d{6}\.\d{6}Z")
VOLATILE = [  # wall-clock times and the random element ids Great Expectations puts in its pages
    GE_TIME, re.compile(r"\d{4}-\d\d-\d\d[ T]\d\d:\d\d:\d\d(Z| UTC)"), re.compile(r"'_run_time_sort': [\d.]+"),
    re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}"),
    re.compile(r"\(\d+\.\d s\)</h2>"),  # the latent atlas's time per model (reports/explain.html)
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


def same_scores_but_seconds(a: Path, b: Path) -> bool:
    """reports/explain.json: per model the atlas's scores and the seconds it took, which may differ."""
    def scores(path):
        return {kind: {k: v for k, v in values.items() if k != "seconds"}
                for kind, values in json.loads(path.read_text()).items()}

    return bool(scores(a)) and scores(a) == scores(b)


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
    "reports/explain.html": same_text_but_volatile,
    "reports/explain_detail.json": same_text_but_volatile,
    "reports/explain.json": same_scores_but_seconds,
}


def equivalent(rel: str, a: Path, b: Path) -> bool:
    if a.read_bytes() == b.read_bytes():
        return True
    return any(fnmatch.fnmatch(rel, pattern) and check(a, b) for pattern, check in RUN_SPECIFIC.items())


def run_flow(root: Path) -> list[str]:
    """`genloop run` (what `make run` runs) in a copy; the stages it skipped."""
    # The flow's temporary Prefect server needs ~16 s on a new database; on busy CPUs more than the 20 s default.
    env = {**project_env(root), "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "120"}
    proc = subprocess.run(["genloop", "run"], cwd=root, env=env, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    skipped = re.findall(r"stages skipped \(inputs unchanged[^)]*\): (.*)", proc.stdout)
    assert len(skipped) <= 1, proc.stdout  # said once
    return skipped[0].split(", ") if skipped else []


def flow_would_run(root: Path) -> set[str]:
    """The stages `genloop run` would run now (`genloop stages`: the flow's own decision)."""
    proc = subprocess.run(["genloop", "stages"], cwd=root, env=project_env(root), capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    return {line.split()[0] for line in proc.stdout.splitlines() if " runs: " in line}


def dvc_would_run(root: Path) -> set[str]:
    """The stages whose recorded deps changed, as `dvc status` sees them."""
    proc = run_dvc(["status", "--json"], cwd=root, env=project_env(root))
    return set(json.loads(proc.stdout or "{}"))


def stages_listing(rel: str) -> set[str]:
    stages = yaml.safe_load((REPO_ROOT / "dvc.yaml").read_text())["stages"]
    return {name for name, stage in stages.items() if rel in stage["deps"]}


def touch_source(root: Path, rel: str) -> None:
    with (root / rel).open("a") as f:
        f.write("# changed\n")


@pytest.fixture(scope="module")
def flow_root(tmp_path_factory, genloop_reproduced):
    """A fresh clone (tracked files only: no data/, no dvc.lock) after `genloop run`."""
    # The same code as the reproduced copy (not this checkout, which others may be editing meanwhile).
    root = copy_project(tmp_path_factory.mktemp("flow"), TINY_DVC_PARAMS, source=genloop_reproduced.root)
    run_flow(root)
    return root


def test_fresh_clone_run_leaves_only_an_untracked_dvc_lock(flow_root):
    assert git(REPO_ROOT, "ls-files", "dvc.lock") == "", \
        "dvc.lock must not be committed: it records outputs only the committing machine has"
    # data.dvc is rewritten with the committed md5: no change; dvc.lock is new and stays untracked
    assert git(flow_root, "status", "--porcelain", "--untracked-files=all") == "?? dvc.lock\n"


@pytest.fixture(scope="module")
def both(flow_root, genloop_reproduced):
    """(flow files, repro files): normalised relative path -> file, without the flow's own stamps."""
    def files(root):
        return {normalized(rel): p for rel, p in artifact_files(root).items() if not fnmatch.fnmatch(rel, STAMPS)}

    return files(flow_root), files(genloop_reproduced.root)


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


def test_dvc_repro_after_the_flow_has_nothing_to_do(flow_root, genloop_reproduced, both, tmp_path):
    def outs(root):
        lock = yaml.safe_load((root / "dvc.lock").read_text())
        return {o["path"]: o["md5"] for s in lock["stages"].values() for o in s.get("outs", [])}

    # The flow recorded what it ran in dvc.lock (a fresh clone: no dvc.lock before it).
    root = clone_workspace(flow_root, tmp_path / "repo")
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
    assert "git add" not in proc.stdout + proc.stderr  # dvc.lock unchanged: nothing to stage
    assert dvc_would_run(root) == set() == flow_would_run(root)


def test_the_flow_after_dvc_repro_skips_every_stage(genloop_reproduced, tmp_path):
    root = clone_workspace(genloop_reproduced.root, tmp_path / "repo")
    lock = (root / "dvc.lock").read_bytes()
    assert flow_would_run(root) == set()
    assert run_flow(root) == ["clean", "augment", "train_vae", "train_gan", "evaluate", "export"]
    assert (root / "dvc.lock").read_bytes() == lock  # nothing ran, nothing to record


def test_an_imported_module_changed_reruns_its_stages_on_both_routes(genloop_reproduced, tmp_path):
    """label_fidelity is imported by training, evaluation and export (not listed by hand before)."""
    rel = "src/genloop/core/label_fidelity.py"
    root = clone_workspace(genloop_reproduced.root, tmp_path / "repo")
    touch_source(root, rel)
    expected = stages_listing(rel)
    assert {"train_vae", "train_gan", "evaluate"} <= expected
    assert dvc_would_run(root) == expected == flow_would_run(root)
    assert run_flow(root) == ["clean", "augment"]  # the flow reruns the rest ...
    assert dvc_would_run(root) == set()  # ... and records it: DVC agrees nothing is left


def test_dvc_repro_of_a_code_change_reruns_that_stage_and_the_flow_trusts_it(genloop_reproduced, tmp_path):
    rel = "src/genloop/core/near_duplicates.py"
    assert stages_listing(rel) == {"clean"}
    root = clone_workspace(genloop_reproduced.root, tmp_path / "repo")
    touch_source(root, rel)
    assert flow_would_run(root) == {"clean"}
    proc = run_dvc(["repro"], cwd=root, env=project_env(root))
    assert ran_stages(proc.stdout) == {"clean"}  # its outputs are the same, so nothing downstream reruns
    assert flow_would_run(root) == set()  # the stage command left the flow's stamp
