"""A training killed with SIGKILL resumes from its last per-epoch checkpoint, in the same MLflow run,
and ends bit-identical to an uninterrupted one; a changed config starts fresh.

Real processes (`genloop train` as a subprocess, killed for real), real MLflow, tiny VAE on the digits.
"""
from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
import torch

from genloop.io.checkpoints import read_checkpoint
from genloop.paths import ProjectPaths
from genloop.io.checkpoints import load_training_state, restore_training_state, save_training_state
from genloop.config import GANConfig
from genloop.stages.train import RESUMED_TAG, epoch_plan, fit_gan, load_training_images, train_model

pytestmark = pytest.mark.integration

IMAGES, KILL_AFTER = 9_500, 2  # 7 full epochs of the tiny digits' ~1,250 training images and a partial 8th
# One thread so the interrupted and the uninterrupted run do the same arithmetic in the same order;
# the conv VAE (with the default fitted prior, which the training state must carry) is slow enough
# per epoch to be killed between checkpoints.
TRAIN_OVERRIDES = {"train.vae.images": IMAGES, "train.vae.batch_size": 32, "train.threads": 1,
                   "train.vae.arch": "conv"}
GENLOOP = str(Path(sys.executable).parent / "genloop")
LOSSES = ["train_loss", "train_bce", "train_kl", "val_loss"]


def genloop_train(root: Path, overrides: dict) -> subprocess.Popen:
    sets = [arg for key, value in overrides.items() for arg in ("-S", f"{key}={value}")]
    return subprocess.Popen([GENLOOP, "--root", str(root), *sets, "train", "--model", "vae"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def planned_epochs(project) -> int:
    return len(epoch_plan(IMAGES, len(load_training_images(project.paths))))


def saved_epoch(state_file: Path) -> int:
    try:
        return int(torch.load(state_file, map_location="cpu", weights_only=True)["epoch"])
    except (FileNotFoundError, RuntimeError, EOFError, KeyError):
        return 0


@pytest.fixture(scope="module")
def killed(genloop_tiny_project):
    """A project whose VAE training was SIGKILLed right after the checkpoint of epoch KILL_AFTER."""
    project = genloop_tiny_project("killed", train=())
    state_file = project.paths.training_state("vae")
    proc = genloop_train(project.root, TRAIN_OVERRIDES)
    deadline = time.monotonic() + 120
    while saved_epoch(state_file) < KILL_AFTER:
        assert proc.poll() is None, f"training ended before it could be killed: {proc.communicate()}"
        assert time.monotonic() < deadline, "no checkpoint within 120 s"
        time.sleep(0.02)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL
    state = torch.load(state_file, map_location="cpu", weights_only=True)
    assert KILL_AFTER <= state["epoch"] < planned_epochs(project)
    assert not (project.paths.train("vae") / "model.pt").exists()
    return project, int(state["epoch"]), str(state["run_id"])


def copy_of(project, dest: Path) -> ProjectPaths:
    shutil.copytree(project.root, dest)
    return ProjectPaths.at(dest)


def store_of(root: Path) -> dict[str, str]:
    """The overrides that point MLflow at the store inside ``root`` (as `genloop --root` does by default)."""
    return {"mlflow.tracking_uri": f"sqlite:///{root}/mlflow/mlflow.db",
            "mlflow.artifact_root": str(root / "mlflow" / "artifacts")}


def client_of(root: Path):
    from mlflow import MlflowClient

    return MlflowClient(tracking_uri=store_of(root)["mlflow.tracking_uri"])


def test_killed_training_resumes_after_its_last_epoch_in_the_same_run_and_matches_an_uninterrupted_one(
        killed, genloop_tiny_project, tmp_path):
    project, epoch, run_id = killed
    paths = copy_of(project, tmp_path / "resumed")
    EPOCHS = planned_epochs(project)

    proc = genloop_train(paths.root, TRAIN_OVERRIDES)
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err

    assert f"resuming from epoch {epoch} of {EPOCHS}" in err
    assert f"resumed from epoch {epoch}" in out
    history = pd.read_csv(paths.train("vae") / "history.csv")
    assert history["epoch"].tolist() == list(range(1, EPOCHS + 1))  # each epoch once
    assert history["images"].iloc[-1] == IMAGES
    assert not paths.training_state("vae").exists()  # done: the next training starts fresh
    assert read_checkpoint(paths.train("vae") / "model.pt")["run_id"] == run_id

    client = client_of(paths.root)
    run = client.get_run(run_id)
    assert run.info.status == "FINISHED"
    assert run.data.tags[RESUMED_TAG] == str(epoch)
    for key in [*LOSSES, "images_per_s"]:
        steps = sorted(m.step for m in client.get_metric_history(run_id, key))
        assert steps == list(range(1, EPOCHS + 1)), key

    reference = genloop_tiny_project("uninterrupted", overrides=TRAIN_OVERRIDES, train=("vae",))
    ref_dir = reference.paths.train("vae")
    ref_history = pd.read_csv(ref_dir / "history.csv")
    pd.testing.assert_frame_equal(history[["epoch", *LOSSES]], ref_history[["epoch", *LOSSES]], check_exact=True)
    resumed_weights = read_checkpoint(paths.train("vae") / "model.pt")["state_dicts"]["vae"]
    reference_weights = read_checkpoint(ref_dir / "model.pt")["state_dicts"]["vae"]
    assert resumed_weights.keys() == reference_weights.keys()
    for name, tensor in reference_weights.items():
        assert torch.equal(resumed_weights[name], tensor), name
    assert (paths.train("vae") / "samples.png").read_bytes() == (ref_dir / "samples.png").read_bytes()


def test_a_changed_config_ignores_the_saved_state_and_trains_from_scratch(killed, tmp_path):
    project, epoch, run_id = killed
    paths = copy_of(project, tmp_path / "changed")
    n = len(load_training_images(project.paths))
    params = project.params_with({**TRAIN_OVERRIDES, "train.vae.images": 3 * n, "train.vae.lr": 5e-4,
                                  **store_of(paths.root)})

    result = train_model("vae", params, paths)

    assert result.resumed_from_epoch == 0
    assert result.run_id != run_id
    assert pd.read_csv(paths.train("vae") / "history.csv")["epoch"].tolist() == [1, 2, 3]
    assert RESUMED_TAG not in client_of(paths.root).get_run(result.run_id).data.tags
    assert not paths.training_state("vae").exists()


def test_resume_false_trains_from_scratch_even_with_a_matching_state(killed, tmp_path):
    project, epoch, run_id = killed
    paths = copy_of(project, tmp_path / "fresh")
    result = train_model("vae", project.params_with({**TRAIN_OVERRIDES, **store_of(paths.root)}), paths, resume=False)
    assert result.resumed_from_epoch == 0 and result.run_id != run_id
    epochs = planned_epochs(project)
    assert pd.read_csv(paths.train("vae") / "history.csv")["epoch"].tolist() == list(range(1, epochs + 1))


def test_gan_with_diffaugment_resumed_mid_budget_matches_an_uninterrupted_one(tmp_path):
    """DiffAugment draws from torch's global RNG: the saved state must carry it (and the partial last
    epoch must come out the same) for a resumed GAN to end bit-identical."""
    torch.set_num_threads(1)
    data = torch.rand(96, 1, 8, 8)
    cfg = GANConfig(images=250, batch_size=32, channels=8, latent_dim=4, diffaugment=["translation", "cutout"])
    plan = epoch_plan(cfg.images, len(data))
    assert plan == [96, 96, 58]

    def trained(stop_after: int | None) -> dict[str, torch.Tensor]:
        torch.manual_seed(0)
        batch_rng = torch.Generator().manual_seed(0)
        trainer = fit_gan(cfg, data, data[:4], torch.device("cpu"), batch_rng)
        start, state_file = 0, tmp_path / "last.pt"
        if stop_after is None and state_file.exists():
            saved = load_training_state(state_file, "fp")
            torch.manual_seed(123)  # a new process: the global RNG starts elsewhere
            restore_training_state(saved, trainer.state, trainer.optimizers, batch_rng)
            start = int(saved["epoch"])
        for epoch in range(start + 1, len(plan) + 1):
            trainer.run_epoch(plan[epoch - 1])
            save_training_state(state_file, "fp", epoch, "run", [], trainer.state, trainer.optimizers, batch_rng)
            if epoch == stop_after:
                break
        return {k: v.clone() for k, v in trainer.sampler.state_dict().items()}

    uninterrupted = trained(stop_after=len(plan))
    (tmp_path / "last.pt").unlink()
    trained(stop_after=1)
    resumed = trained(stop_after=None)
    assert resumed.keys() == uninterrupted.keys()
    for name, tensor in uninterrupted.items():
        assert torch.equal(resumed[name], tensor), name
