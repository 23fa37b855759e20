"""The Prefect flow end to end on the digits: real Prefect, real MLflow store, real DVC, real ONNX Runtime."""
from __future__ import annotations

import json
import subprocess

import numpy as np
import pytest
import torch

from genloop.io.dvcio import read_dvc_hash, run_dvc
from genloop.core.metric_names import EVAL_METRICS, MIA_METRICS, VAE_METRICS, VAE_MIA_METRICS
from genloop.core.trust import TRUSTED
from flows.pipeline import pipeline


pytestmark = pytest.mark.integration

TINY = {
    "train.vae.images": 2400, "train.gan.images": 2400, "evaluate.classifier_epochs": 2,
    "augment.copies": 1, "evaluate.kid_subsets": 5,
}


@pytest.fixture(scope="module")
def flow_run(tmp_path_factory, prefect_harness):
    root = tmp_path_factory.mktemp("project")
    subprocess.run(["git", "init", "-q"], cwd=root, check=True)
    run_dvc(["init", "-q"], cwd=root)
    result = pipeline(project_root=str(root), overrides=TINY)
    return root, result


def _client(root):
    from mlflow import MlflowClient

    return MlflowClient(tracking_uri=f"sqlite:///{root}/mlflow/mlflow.db")


def test_flow_nests_a_vae_and_a_gan_run_under_one_parent(flow_run):
    root, result = flow_run
    client = _client(root)
    parent = client.get_run(result["parent_run_id"])
    assert parent.info.status == "FINISHED"
    assert parent.data.tags["genloop.runner"] == "prefect"
    children = client.search_runs(
        [parent.info.experiment_id], filter_string=f"tags.`mlflow.parentRunId` = '{parent.info.run_id}'"
    )
    assert sorted(r.data.tags["genloop.model"] for r in children) == ["gan", "vae"]
    for child in children:
        assert child.info.status == "FINISHED"
        assert child.data.tags["dvc_data_hash"] == read_dvc_hash(root / "data.dvc") != "untracked"
        assert child.data.tags["git_commit"]
        assert child.data.metrics["images_per_s"] > 0


def test_both_child_runs_carry_the_same_evaluation_metric_names(flow_run):
    root, result = flow_run
    client = _client(root)
    keys = {}
    for kind, run_id in result["child_run_ids"].items():
        metrics = client.get_run(run_id).data.metrics
        keys[kind] = {k for k in metrics if k in EVAL_METRICS}
        assert all(np.isfinite(metrics[k]) for k in keys[kind])
    assert keys["vae"] == keys["gan"] == set(EVAL_METRICS)


def test_flow_writes_metrics_json_for_both_models(flow_run):
    root, _ = flow_run
    report = json.loads((root / "reports" / "metrics.json").read_text())
    assert set(report["gan"]) == set(EVAL_METRICS) | set(MIA_METRICS) | {TRUSTED}  # plus the privacy audit, the trust mark
    assert set(report["vae"]) == set(EVAL_METRICS) | set(VAE_METRICS) | set(MIA_METRICS) | set(VAE_MIA_METRICS) | {TRUSTED}
    assert report["real_floor"]["fid"] < min(report["vae"]["fid"], report["gan"]["fid"])


def test_exported_onnx_models_match_pytorch(flow_run):
    import onnxruntime as ort

    from genloop.io.checkpoints import load_sampler

    root, result = flow_run
    for kind, file in (("vae", "vae_decoder.onnx"), ("gan", "gan_generator.onnx")):
        sampler, latent_dim = load_sampler(root / "outputs" / "train" / kind / "model.pt")
        session = ort.InferenceSession(str(root / "models" / file), providers=["CPUExecutionProvider"])
        for n in (1, 64):
            z = torch.randn(n, latent_dim)
            with torch.no_grad():
                expected = sampler(z).numpy()
            got = session.run(None, {"z": z.numpy()})[0]
            assert got.shape == (n, 1, 8, 8)
            assert np.max(np.abs(got - expected)) <= 1e-4
        assert result["onnx"][kind]["registered"].startswith(f"registered genloop-{kind} v")


def test_flow_with_overrides_leaves_dvc_lock_alone(flow_run):
    root, _ = flow_run
    assert not (root / "dvc.lock").exists()
