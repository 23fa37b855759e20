"""Stage caching in genloop-pipeline and the scheduled loop's early stop, with real Prefect, MLflow and DVC.

One tiny project runs the flow several times in order; the fixture records what each run did and
the tests read those records.
"""
from __future__ import annotations

import shutil
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest

from genloop.io.dvcio import read_dvc_hash, run_dvc
from flows import pipeline as flows


pytestmark = pytest.mark.integration

TINY = {
    "train.vae.images": 1200, "train.gan.images": 1200, "evaluate.classifier_epochs": 1,
    "augment.copies": 0, "evaluate.kid_subsets": 5, "train.threads": 2,
}
STAGES = ["clean", "augment", "train_vae", "train_gan", "evaluate", "export"]


def _digits_npz(path: Path, rows: slice) -> str:
    from sklearn.datasets import load_digits

    d = load_digits()
    images = np.clip(d.images[rows] * 16, 0, 255).astype(np.uint8)
    np.savez(path, images=images, labels=d.target[rows].astype(np.int64))
    return f"npz:{path}"


def _versions(root: Path, name: str) -> int:
    from mlflow import MlflowClient

    uri = f"sqlite:///{root}/mlflow/mlflow.db"
    return len(MlflowClient(tracking_uri=uri, registry_uri=uri).search_model_versions(f"name = '{name}'"))


def _timed(fn, **kwargs):
    started = time.perf_counter()
    state = fn(return_state=True, **kwargs)
    return state, time.perf_counter() - started


@pytest.fixture(scope="module")
def runs(tmp_path_factory, prefect_harness, genloop_mlflow_env):
    root = tmp_path_factory.mktemp("cached")
    subprocess.run(["git", "init", "-q"], cwd=root, check=True)
    run_dvc(["init", "-q"], cwd=root)
    first = _digits_npz(root.parent / f"{root.name}-first.npz", slice(0, 1000))
    second = _digits_npz(root.parent / f"{root.name}-second.npz", slice(1000, None))
    out: dict = {"root": root}

    def pipeline(name, overrides=TINY, **kw):
        state, seconds = _timed(flows.pipeline, project_root=str(root), overrides=overrides, source=first, **kw)
        out[name] = {"state": state, "seconds": seconds, "result": state.result(raise_on_failure=False),
                     "versions": _versions(root, "genloop-gan")}
        print(f"pipeline run {name}: {seconds:.1f} s, {state.type.value}")

    pipeline("first")
    pipeline("same")
    pipeline("gan_lr_changed", overrides={**TINY, "train.gan.lr_g": 3e-4})
    (root / "models" / "vae_decoder.onnx").unlink()
    pipeline("onnx_deleted", overrides={**TINY, "train.gan.lr_g": 3e-4})
    shutil.rmtree(root / "outputs" / "augment")
    pipeline("augment_deleted", overrides={**TINY, "train.gan.lr_g": 3e-4})

    loop_kw = {"project_root": str(root), "overrides": {**TINY, "train.gan.lr_g": 3e-4}}
    state, seconds = _timed(flows.loop, source=first, **loop_kw)
    out["loop_same"] = {"state": state, "seconds": seconds, "result": state.result()}
    state, seconds = _timed(flows.loop, source=second, mode="append", **loop_kw)
    out["loop_new"] = {"state": state, "seconds": seconds, "result": state.result(),
                       "dvc_hash": read_dvc_hash(root / "data.dvc")}
    pipeline("forced", overrides={**TINY, "train.gan.lr_g": 3e-4}, force=True)
    pipeline("clean_failed", overrides={**TINY, "train.gan.lr_g": 3e-4, "clean.min_rows": 100_000})
    pipeline("after_failure", overrides={**TINY, "train.gan.lr_g": 3e-4})
    return out


def test_first_run_runs_every_stage(runs):
    assert runs["first"]["result"]["cached_stages"] == []


def test_second_run_with_same_inputs_skips_every_stage_and_is_fast(runs):
    first, same = runs["first"], runs["same"]
    assert same["result"]["cached_stages"] == STAGES
    assert same["result"]["child_run_ids"] == first["result"]["child_run_ids"]  # earlier child runs reused
    assert same["result"]["metrics"] == first["result"]["metrics"]
    assert same["versions"] == first["versions"]  # no new registry version
    assert same["seconds"] < first["seconds"] / 2, (same["seconds"], first["seconds"])


def test_cached_run_says_so_on_the_mlflow_parent(runs):
    from mlflow import MlflowClient

    root = runs["root"]
    parent = MlflowClient(tracking_uri=f"sqlite:///{root}/mlflow/mlflow.db").get_run(
        runs["same"]["result"]["parent_run_id"])
    assert parent.data.tags["genloop.cached_stages"] == ",".join(STAGES)
    assert parent.data.tags["genloop.reused_run.vae"] == runs["first"]["result"]["child_run_ids"]["vae"]


def test_a_gan_param_change_reruns_only_the_gan_and_what_follows(runs):
    result = runs["gan_lr_changed"]["result"]
    assert result["cached_stages"] == ["clean", "augment", "train_vae"]
    assert result["child_run_ids"]["vae"] == runs["first"]["result"]["child_run_ids"]["vae"]
    assert result["child_run_ids"]["gan"] != runs["first"]["result"]["child_run_ids"]["gan"]
    assert runs["gan_lr_changed"]["versions"] == runs["first"]["versions"] + 1


def test_a_deleted_output_reruns_its_stage(runs):
    assert runs["onnx_deleted"]["result"]["cached_stages"] == ["clean", "augment", "train_vae", "train_gan", "evaluate"]
    assert (runs["root"] / "models" / "vae_decoder.onnx").exists()
    # augment re-made byte for byte (seeded), so the training stages downstream stay cached
    assert runs["augment_deleted"]["result"]["cached_stages"] == STAGES[:1] + STAGES[2:]


def test_loop_stops_early_when_the_data_did_not_change(runs):
    loop = runs["loop_same"]
    assert loop["state"].is_completed()
    assert "data unchanged" in loop["state"].message
    assert loop["result"]["status"] == "unchanged"
    assert loop["result"]["parent_run_id"] == runs["augment_deleted"]["result"]["parent_run_id"]


def test_loop_retrains_when_new_data_arrives(runs):
    loop = runs["loop_new"]
    assert loop["state"].is_completed()
    result = loop["result"]
    assert result["status"] == "retrained"
    assert result["rows"] == 1797  # 1000 first + 797 appended
    assert result["dvc_hash"] == loop["dvc_hash"] != runs["first"]["result"]["dvc_hash"]
    assert result["cached_stages"] == []
    assert result["parent_run_id"] != runs["augment_deleted"]["result"]["parent_run_id"]


def test_force_reruns_every_stage(runs):
    assert runs["forced"]["result"]["cached_stages"] == []
    assert runs["forced"]["result"]["child_run_ids"] != runs["loop_new"]["result"]["child_run_ids"]


def test_a_failed_stage_fails_the_flow_with_its_message_and_is_not_trusted_next_time(runs):
    failed = runs["clean_failed"]["state"]
    assert failed.is_failed()
    assert "min_rows" in failed.message or "100000" in failed.message, failed.message
    # the failed clean dropped its stamp: the next run re-checks the data, and the rest (unchanged) is skipped
    assert runs["after_failure"]["result"]["cached_stages"] == STAGES[1:]
