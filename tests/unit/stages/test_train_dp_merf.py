"""train.gan.method: dp_merf trains the project's conditional generator against one private release,
and records its (ε, δ) where DP-SGD's go (model.pt, MLflow, the export's tags)."""
from __future__ import annotations

import pytest

from genloop.config import ConfigError, Params, load_params

DP_MERF = {"train.gan.method": "dp_merf", "train.gan.conditional": True, "train.gan.augmented": False,
           "train.gan.dp_merf.steps": 15, "train.gan.dp_merf.features": 100, "train.gan.dp_merf.batch_size": 40,
           "train.gan.dp_merf.epsilon": 5.0}


@pytest.fixture(scope="module")
def project(genloop_tiny_project):
    return genloop_tiny_project("dp-merf", DP_MERF, train=("vae", "gan"))


def test_dp_merf_trains_a_conditional_generator_and_records_its_budget(project):
    import torch

    from genloop.io.checkpoints import load_sampler, read_checkpoint
    from genloop.stages.export import privacy_tags

    result = project.results["gan"]
    checkpoint = read_checkpoint(result.checkpoint)
    record = checkpoint["privacy"]
    assert (record["epsilon"], record["delta"], record["method"]) == (5.0, 1e-5, "dp_merf")
    assert record["mechanism"] == "analytic_gaussian" and record["sensitivity"] > 1.0
    assert "discriminator" not in checkpoint["state_dicts"]
    assert privacy_tags(result.checkpoint)["genloop.epsilon"] == repr(5.0)
    run = project.client().get_run(result.run_id)
    assert run.data.tags["genloop.epsilon"] == repr(5.0) and run.data.tags["genloop.delta"] == repr(1e-5)
    assert run.data.params["dp_method"] == "dp_merf" and run.data.metrics["epsilon"] == 5.0
    sampler, latent_dim = load_sampler(result.checkpoint)
    out = sampler(torch.randn(4, latent_dim), torch.tensor([0, 1, 2, 3]))
    assert out.shape[0] == 4 and float(out.min()) >= 0.0 and float(out.max()) <= 1.0


def test_evaluate_scores_tstr_for_the_conditional_model_only(project):
    import json

    from genloop.stages.evaluate import evaluate

    result = evaluate(project.params, project.paths)
    metrics = json.loads(project.paths.metrics.read_text())
    assert 0.0 <= metrics["gan"]["tstr_accuracy"] <= 1.0 and 0.5 < metrics["gan"]["tstr_real_accuracy"] <= 1.0
    assert "tstr_accuracy" not in metrics["vae"]  # not conditional
    assert metrics["gan"]["epsilon"] == 5.0
    run = project.client().get_run(project.results["gan"].run_id)
    assert run.data.metrics["tstr_accuracy"] == metrics["gan"]["tstr_accuracy"]
    assert "Train on synthetic, test on real" in result.html.read_text()


def test_a_dp_merf_training_with_delta_above_one_over_n_fails_and_saves_no_model(genloop_tiny_project):
    from genloop.stages.train import train_model

    project = genloop_tiny_project("dp-merf-delta", {**DP_MERF, "train.gan.dp_merf.delta": 1e-2}, train=())
    with pytest.raises(ConfigError, match="dp_merf.delta"):
        train_model("gan", project.params, project.paths, parent_run_id=None)
    assert not (project.paths.train("gan") / "model.pt").exists()


@pytest.mark.parametrize("override,field", [
    ({"train.gan.conditional": False}, "conditional"),
    ({"train.gan.augmented": True}, "augmented"),
    ({"train.gan.dp_merf.epsilon": 0}, "epsilon"),
    ({"train.gan.dp_merf.delta": 0.5}, "delta"),
])
def test_dp_merf_settings_are_checked_naming_the_field(tmp_path, override, field):
    with pytest.raises(ConfigError, match=field):
        load_params(tmp_path / "params.yaml", {**DP_MERF, **override})


def test_the_default_gan_method_is_adversarial():
    assert Params().train.gan.method == "adversarial"


def test_synthesize_writes_a_labelled_set_that_collect_reads_back(project, tmp_path):
    import numpy as np

    from genloop.config import CollectConfig
    from genloop.core.promotion import PromotionError
    from genloop.paths import ProjectPaths
    from genloop.stages.collect import collect
    from genloop.stages.evaluate import evaluate
    from genloop.stages.export import export
    from genloop.stages.synthesize import synthesize

    if not project.paths.metrics.exists():
        evaluate(project.params, project.paths)
    export(project.params, project.paths)
    result = synthesize(project.params, project.paths, 1, 30)
    manifest = result.manifest
    assert (manifest["model"], manifest["version"], manifest["epsilon"], manifest["delta"]) == \
        (project.params.export.gan_model_name, 1, 5.0, 1e-5)
    assert result.folder == project.paths.root / "synthetic" / "genloop-gan-v1"
    other = ProjectPaths.at(tmp_path)
    collect(CollectConfig(source=f"npz:{result.data}"), other, version_with_dvc=False)
    written = np.load(result.data)
    assert np.array_equal(np.load(other.images), written["images"])
    import pandas as pd

    assert np.array_equal(pd.read_csv(other.manifest)["label"].to_numpy(), written["labels"])
    with pytest.raises(PromotionError, match="no 'label' input"):
        synthesize(project.params, project.paths, 1, 5, model=project.params.export.vae_model_name)
    with pytest.raises(PromotionError, match="no version"):
        synthesize(project.params, project.paths, 9, 5)


def test_synthesize_logs_the_release_under_the_versions_mlflow_run(project):
    """Params ε, δ, seed and the files as artifacts, in a run nested under the version's training run."""
    from genloop.stages.synthesize import synthesize

    result = synthesize(project.params, project.paths, 1, 20, seed=3, version_with_dvc=False)
    client = project.client()
    release = client.get_run(result.run_id)
    version_run = result.manifest["run_id"]
    assert release.data.tags["mlflow.parentRunId"] == version_run
    assert {k: release.data.params[k] for k in ("epsilon", "delta", "seed", "images")} == \
        {"epsilon": "5.0", "delta": "1e-05", "seed": "3", "images": "20"}
    assert release.data.params["dvc_md5"] == "untracked" and result.dvc_hash is None
    assert {a.path for a in client.list_artifacts(result.run_id, "synthetic")} == \
        {"synthetic/data.npz", "synthetic/manifest.json"}
    assert client.get_run(version_run).data.tags["genloop.synthetic.genloop-gan-v1-seed3-n20"] == result.run_id


def test_synthesize_in_a_dvc_project_versions_the_release_like_the_data(project):
    import shutil

    import yaml

    from genloop.io.dvcio import run_dvc
    from genloop.stages.synthesize import synthesize

    run_dvc(["init", "--no-scm", "--quiet"], cwd=project.root)
    try:
        result = synthesize(project.params, project.paths, 1, 10, seed=4)
        dvc_file = project.root / "synthetic" / "genloop-gan-v1.dvc"
        assert yaml.safe_load(dvc_file.read_text())["outs"][0]["md5"] == result.dvc_hash
        assert project.client().get_run(result.run_id).data.params["dvc_md5"] == result.dvc_hash
        assert run_dvc(["status", "--quiet"], cwd=project.root, check=False).returncode == 0
    finally:
        shutil.rmtree(project.root / ".dvc")
        (project.root / "synthetic" / "genloop-gan-v1.dvc").unlink(missing_ok=True)


def test_the_synthesize_flow_releases_a_version_and_refuses_a_missing_one(project, prefect_harness):
    from conftest import GENLOOP_TINY_OVERRIDES
    from flows.synthesize import synthesize_flow

    overrides = {**GENLOOP_TINY_OVERRIDES, **project.overrides,
                 "mlflow.tracking_uri": project.params.mlflow.tracking_uri,
                 "mlflow.artifact_root": project.params.mlflow.artifact_root}
    out = synthesize_flow(version=1, images=12, project_root=str(project.root), overrides=overrides, seed=5)
    assert (out["images"], out["seed"], out["epsilon"]) == (12, 5, 5.0)
    assert project.client().get_run(out["run_id"]).data.params["seed"] == "5"
    state = synthesize_flow(version=9, images=12, project_root=str(project.root), overrides=overrides,
                            return_state=True)
    assert state.is_failed() and "no version" in str(state.message) + repr(state.result(raise_on_failure=False))


def test_the_merf_generator_trains_reloads_and_exports_to_onnx_with_parity(genloop_tiny_project, tmp_path):
    import torch

    from genloop.core.dp_merf import MerfGenerator
    from genloop.io.checkpoints import load_sampler
    from genloop.stages.export import export_onnx, parity

    project = genloop_tiny_project("dp-merf-small", {**DP_MERF, "train.gan.dp_merf.generator": "merf",
                                                     "train.gan.dp_merf.hidden": 32, "train.gan.channels": 8},
                                   train=("gan",))
    sampler, latent_dim = load_sampler(project.results["gan"].checkpoint)
    assert isinstance(sampler, MerfGenerator) and latent_dim == project.params.train.gan.latent_dim
    export_onnx(sampler, latent_dim, tmp_path / "g.onnx", conditional=True)
    diffs = parity(sampler, latent_dim, tmp_path / "g.onnx", [1, 16], seed=0, classes=list(range(10)))
    assert max(diffs.values()) < 1e-4
    images = sampler(torch.randn(10, latent_dim), torch.arange(10))
    assert images.shape == (10, 1, 8, 8) and float(images.std()) > 0


def test_the_merf_generator_refuses_sides_that_are_not_multiples_of_four():
    import torch

    from genloop.config import GANConfig
    from genloop.stages.train import Labels, fit_dp_merf

    cfg = GANConfig(method="dp_merf", conditional=True, augmented=False, dp_merf={"generator": "merf"})
    labels = Labels.of(torch.arange(20) % 10, torch.arange(4))
    with pytest.raises(ConfigError, match="dp_merf.generator: merf needs image sides"):
        fit_dp_merf(cfg, torch.zeros(20, 1, 30, 30), torch.zeros(4, 1, 30, 30), torch.device("cpu"),
                    torch.Generator(), labels=labels)
