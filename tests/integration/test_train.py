"""Tests for genloop.stages.train on the digits: output files, the MLflow child runs, devices and learning.

Real MLflow (a sqlite store in the test's folder), real training at tiny epoch counts.
"""
from __future__ import annotations

import json
import logging

import numpy as np
import pandas as pd
import pytest
import torch

from genloop.io import tracking
from genloop.io.checkpoints import load_sampler, read_checkpoint
from genloop.io.dvcio import read_dvc_hash
from genloop.io.datasets import read_run_id
from genloop.stages.train import ProgressLog, batches, epoch_plan, load_training_images, select_device, train_model

pytestmark = pytest.mark.integration

KINDS = ("vae", "gan")
OUTPUT_FILES = ("model.pt", "history.csv", "samples.png", "run.json")
LOSS_COLUMNS = {
    "vae": ["train_loss", "train_bce", "train_kl", "val_loss"],
    "gan": ["d_loss", "g_loss", "d_accuracy"],
}


@pytest.fixture(scope="module")
def project(genloop_tiny_project):
    """Both models trained on 2,000 images (one full epoch and a partial one), neither given a parent run."""
    return genloop_tiny_project("train")


@pytest.fixture(scope="module")
def scratch(genloop_tiny_project):
    """Prepared data and an MLflow store but nothing trained: for tests that train their own runs."""
    return genloop_tiny_project("train-scratch", train=())


def planned_epochs(project, kind: str) -> list[int]:
    return epoch_plan(getattr(project.params.train, kind).images, len(load_training_images(project.paths)))


def run_json(project, kind: str) -> dict:
    return json.loads((project.paths.train(kind) / "run.json").read_text())


@pytest.mark.parametrize("kind", KINDS)
def test_training_writes_model_history_samples_and_run_json(project, kind):
    out = project.paths.train(kind)
    for name in OUTPUT_FILES:
        assert (out / name).is_file() and (out / name).stat().st_size > 0, name
    assert (out / "samples.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    info = run_json(project, kind)
    result = project.results[kind]
    assert info == {"run_id": result.run_id, "parent_run_id": result.parent_run_id, "model": kind}
    assert read_run_id(project.paths, kind) == result.run_id
    assert result.checkpoint == out / "model.pt"


@pytest.mark.parametrize("kind", KINDS)
def test_history_has_one_row_per_epoch_with_finite_losses(project, kind):
    epochs = len(planned_epochs(project, kind))
    history = pd.read_csv(project.paths.train(kind) / "history.csv")
    assert history["epoch"].tolist() == list(range(1, epochs + 1))
    for column in [*LOSS_COLUMNS[kind], "images_per_s"]:
        assert column in history.columns
        assert np.isfinite(history[column].to_numpy()).all(), column
    assert (history["images_per_s"] > 0).all()
    final = project.results[kind].final_metrics
    assert final[LOSS_COLUMNS[kind][0]] == pytest.approx(history[LOSS_COLUMNS[kind][0]].iloc[-1], rel=1e-5)


@pytest.mark.parametrize("kind", KINDS)
def test_child_run_is_nested_under_the_parent_named_in_run_json(project, kind):
    run = project.client().get_run(run_json(project, kind)["run_id"])
    assert run.info.status == "FINISHED"
    assert run.data.tags["mlflow.parentRunId"] == run_json(project, kind)["parent_run_id"]
    assert run.data.tags["genloop.model"] == kind


@pytest.mark.parametrize("kind", KINDS)
def test_child_run_carries_lineage_tags(project, kind):
    tags = project.client().get_run(project.results[kind].run_id).data.tags
    assert tags["dvc_data_hash"] == read_dvc_hash(project.paths.data_dvc)  # "untracked": no DVC here
    assert tags["git_commit"] == tracking.git_commit(project.root)
    assert tags["git_commit"]


@pytest.mark.parametrize("kind", KINDS)
def test_child_run_logs_hyperparameters_and_data_description(project, kind):
    cfg = getattr(project.params.train, kind)
    logged = project.client().get_run(project.results[kind].run_id).data.params
    for key, value in cfg.model_dump().items():
        assert logged[key] == str(value), key
    assert logged["latent_dim"] == str(cfg.latent_dim)
    assert logged["seed"] == str(project.params.seed)
    assert logged["device"] == select_device(project.params.train.device).type
    assert logged["image_shape"] == "8x8"
    assert int(logged["train_images"]) > 0


@pytest.mark.parametrize("kind", KINDS)
def test_child_run_logs_metrics_once_per_epoch(project, kind):
    epochs = len(planned_epochs(project, kind))
    client, run_id = project.client(), project.results[kind].run_id
    for key in ["images_per_s", *LOSS_COLUMNS[kind]]:
        history = client.get_metric_history(run_id, key)
        assert len(history) == epochs, key
        assert sorted(m.step for m in history) == list(range(1, epochs + 1)), key
        assert all(np.isfinite(m.value) for m in history), key


@pytest.mark.parametrize("kind", KINDS)
def test_child_run_stores_samples_and_checkpoint_artifacts(project, kind):
    client, run_id = project.client(), project.results[kind].run_id
    top = {a.path for a in client.list_artifacts(run_id)}
    assert {"samples.png", "history.csv", "checkpoint"} <= top
    assert "checkpoint/model.pt" in {a.path for a in client.list_artifacts(run_id, "checkpoint")}


def test_vae_and_gan_trained_without_a_parent_share_the_dvc_parent_run(project):
    vae_parent, gan_parent = (run_json(project, k)["parent_run_id"] for k in KINDS)
    assert vae_parent == gan_parent
    assert tracking.parent_for_dvc(project.params.mlflow, project.paths) == vae_parent
    parent = project.client().get_run(vae_parent)
    assert parent.data.tags[tracking.RUNNER_TAG] == "dvc"
    assert parent.data.tags[tracking.PIPELINE_KEY_TAG] == (
        f"{read_dvc_hash(project.paths.data_dvc)}@{tracking.git_commit(project.root)}"
    )


def test_an_explicit_parent_run_id_is_used_as_given(scratch):
    parent = tracking.start_parent_run(scratch.params.mlflow, scratch.paths, runner="test")
    result = train_model("gan", scratch.params_with({"train.gan.images": 500}), scratch.paths, parent_run_id=parent)
    assert result.parent_run_id == parent
    assert json.loads((scratch.paths.train("gan") / "run.json").read_text())["parent_run_id"] == parent
    assert scratch.client().get_run(result.run_id).data.tags["mlflow.parentRunId"] == parent
    assert parent != tracking.parent_for_dvc(scratch.params.mlflow, scratch.paths)


@pytest.mark.skipif(torch.cuda.is_available(), reason="a CUDA device is present")
def test_select_device_cuda_without_a_gpu_raises_a_clear_error():
    with pytest.raises(RuntimeError, match="cuda.*no CUDA device"):
        select_device("cuda")


@pytest.mark.skipif(torch.cuda.is_available(), reason="a CUDA device is present")
def test_select_device_auto_falls_back_to_cpu_without_a_gpu():
    assert select_device("auto") == torch.device("cpu")
    assert select_device("cpu") == torch.device("cpu")


@pytest.mark.parametrize("kind", KINDS)
def test_load_sampler_rebuilds_a_module_producing_images_in_unit_range(project, kind):
    checkpoint = project.paths.train(kind) / "model.pt"
    sampler, latent_dim = load_sampler(checkpoint)
    assert latent_dim == getattr(project.params.train, kind).latent_dim
    assert not sampler.training
    with torch.no_grad():
        images = sampler(torch.randn(5, latent_dim))
    assert images.shape == (5, 1, 8, 8)
    assert images.min() >= 0.0 and images.max() <= 1.0
    state = read_checkpoint(checkpoint)
    assert state["kind"] == kind and state["shape"] == [1, 8, 8]  # (C, H, W)
    assert state["run_id"] == project.results[kind].run_id


def test_vae_trained_longer_reaches_a_lower_validation_loss(scratch):
    n = len(load_training_images(scratch.paths))
    short = train_model("vae", scratch.params_with({"train.vae.images": n}), scratch.paths)
    long = train_model("vae", scratch.params_with({"train.vae.images": 6 * n}), scratch.paths)
    after_one, after_six = short.final_metrics["val_loss"], long.final_metrics["val_loss"]
    assert np.isfinite(after_one) and np.isfinite(after_six)
    assert after_six < after_one
    history = pd.read_csv(scratch.paths.train("vae") / "history.csv")
    assert len(history) == 6
    assert history["val_loss"].iloc[-1] < history["val_loss"].iloc[0]


# ---- model variants, EMA sampling, compile fallback, config checks ------------------------------

def test_mlp_vae_trains_and_its_decoder_is_the_sampler(scratch):
    result = train_model("vae", scratch.params_with({"train.vae.arch": "mlp", "train.vae.hidden": 32,
                                                     "train.vae.latent_dim": 16, "train.vae.prior": "standard"}),
                         scratch.paths)
    state = read_checkpoint(result.checkpoint)
    assert state["hparams"]["arch"] == "mlp"
    assert {k: tuple(v.shape) for k, v in state["state_dicts"]["vae"].items() if k.endswith("weight")} == {
        "fc1.weight": (32, 64), "fc21.weight": (16, 32), "fc22.weight": (16, 32),
        "decoder.fc3.weight": (32, 16), "decoder.fc4.weight": (64, 32),
    }
    sampler, latent_dim = load_sampler(result.checkpoint)
    with torch.no_grad():
        images = sampler(torch.randn(5, latent_dim))
    assert type(sampler).__name__ == "MLPDecoder"
    assert images.shape == (5, 1, 8, 8) and images.min() >= 0.0 and images.max() <= 1.0
    assert np.isfinite(result.final_metrics["val_loss"])


def test_gan_with_ema_samples_and_exports_the_averaged_generator(project):
    checkpoint = project.paths.train("gan") / "model.pt"
    state = read_checkpoint(checkpoint)
    assert project.params.train.gan.ema_decay > 0  # the default
    assert state["sampler"] == "generator_ema"
    raw, averaged = state["state_dicts"]["generator"], state["state_dicts"]["generator_ema"]
    assert raw.keys() == averaged.keys()
    assert any(not torch.equal(raw[k], averaged[k]) for k in raw if k.endswith("weight"))
    sampler, _ = load_sampler(checkpoint)
    for key, value in sampler.state_dict().items():
        assert torch.equal(value, averaged[key]), key


def test_gan_without_ema_samples_the_raw_generator(scratch):
    result = train_model("gan", scratch.params_with({"train.gan.images": 500, "train.gan.ema_decay": 0.0}), scratch.paths)
    state = read_checkpoint(result.checkpoint)
    assert state["sampler"] == "generator"
    assert "generator_ema" not in state["state_dicts"]
    sampler, _ = load_sampler(result.checkpoint)
    for key, value in sampler.state_dict().items():
        assert torch.equal(value, state["state_dicts"]["generator"][key]), key


def test_hinge_loss_with_spectral_norm_trains_and_reloads(scratch):
    from genloop.io.checkpoints import build_gan

    result = train_model("gan", scratch.params_with({
        "train.gan.images": 500, "train.gan.loss": "hinge", "train.gan.spectral_norm": True,
    }), scratch.paths)
    assert all(np.isfinite(v) for v in result.final_metrics.values())
    logged = scratch.client().get_run(result.run_id).data.params
    assert logged["loss"] == "hinge" and logged["spectral_norm"] == "True"
    state = read_checkpoint(result.checkpoint)
    _, disc = build_gan(state["hparams"], (8, 8))
    disc.load_state_dict(state["state_dicts"]["discriminator"])  # spectral-norm keys round-trip
    assert any("parametrizations" in k for k in state["state_dicts"]["discriminator"])


def test_compile_off_uses_the_module_itself_and_a_failing_compile_falls_back_with_a_warning():
    from genloop.core.models.vae import MLPVAE
    from genloop.stages.train import compiled_or_eager

    vae = MLPVAE(3, 8, 8, 8)
    before = {k: v.clone() for k, v in vae.state_dict().items()}
    x = torch.rand(4, 1, 8, 8)
    assert compiled_or_eager(vae, x, enabled=False) is vae
    rng = torch.get_rng_state()
    with pytest.warns(RuntimeWarning, match="torch.compile failed"):
        assert compiled_or_eager(vae, x, enabled=True, backend="no-such-backend") is vae
    assert torch.equal(torch.get_rng_state(), rng)  # the failed trial changed nothing
    assert all(torch.equal(v, before[k]) for k, v in vae.state_dict().items())
    assert all(p.grad is None for p in vae.parameters())


@pytest.mark.parametrize("key,value", [
    ("train.vae.arch", "transformer"),
    ("train.vae.hidden", 0),
    ("train.gan.loss", "wasserstein"),
    ("train.gan.ema_decay", 1.0),
    ("train.gan.ema_decay", -0.1),
    ("train.gan.spectral_norm", "sometimes"),
    ("train.gan.channels", 1),
    ("train.compile", "later"),
])
def test_bad_training_settings_are_rejected_naming_the_field(tmp_path, key, value):
    from genloop.config import ConfigError, load_params

    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        load_params(tmp_path / "params.yaml", {key: value})


# ---- the images budget ----------------------------------------------------------------------------

@pytest.mark.parametrize("kind", KINDS)
def test_training_sees_exactly_its_images_budget_the_last_epoch_partial(project, kind):
    budget = getattr(project.params.train, kind).images
    n = len(load_training_images(project.paths))
    assert budget % n  # the tiny budget ends inside an epoch
    history = pd.read_csv(project.paths.train(kind) / "history.csv")
    assert history["images"].tolist() == [min(e * n, budget) for e in range(1, len(history) + 1)]
    assert history["images"].iloc[-1] == budget
    assert project.results[kind].images == budget
    assert project.results[kind].epochs == -(-budget // n)
    assert read_checkpoint(project.paths.train(kind) / "model.pt")["images"] == budget


def test_epoch_plan_is_full_passes_then_the_remainder():
    assert epoch_plan(2500, 1000) == [1000, 1000, 500]
    assert epoch_plan(2000, 1000) == [1000, 1000]
    assert epoch_plan(300, 1000) == [300]
    with pytest.raises(ValueError, match="empty"):
        epoch_plan(10, 0)


def test_a_partial_epoch_takes_the_first_images_of_the_same_order_and_leaves_the_rng_alike():
    full_rng, part_rng = torch.Generator().manual_seed(3), torch.Generator().manual_seed(3)
    full = torch.cat(list(batches(50, 8, full_rng)))
    part = list(batches(50, 8, part_rng, images=21))
    assert [len(b) for b in part] == [8, 8, 5]
    assert torch.equal(torch.cat(part), full[:21])
    assert sorted(full.tolist()) == list(range(50))
    assert torch.equal(torch.randperm(50, generator=full_rng), torch.randperm(50, generator=part_rng))


def test_progress_is_logged_without_a_terminal_and_silent_with_one(caplog):
    metrics = {"d_loss": 1.25, "g_loss": 0.5, "images_per_s": 900.0, "images": 3000.0}
    with caplog.at_level(logging.INFO, logger="genloop.stages.train"):
        ProgressLog("gan", epochs=3, images=9000, enabled=False).epoch_done(3, metrics)
        assert not caplog.records
        quiet = ProgressLog("gan", epochs=3, images=9000, enabled=True, every_s=3600)
        quiet.epoch_done(1, metrics)  # within every_s of the start: skipped
        quiet.epoch_done(3, metrics)  # the last epoch: always
    records = list({id(r): r for r in caplog.records}.values())  # a record seen by two capturing handlers once
    assert len(records) == 1
    line = records[0].getMessage()
    assert "epoch 3/3" in line and "3,000/9,000 images" in line and "d_loss=1.25" in line and "900 images/s" in line
