"""A training whose loss goes NaN or infinite fails at that epoch, naming it (genloop.core.divergence), instead
of saving a NaN model that reports Completed and breaks evaluate later."""
from __future__ import annotations

import math

import pytest

from genloop.core.divergence import DivergedError, check_finite


def test_finite_figures_pass_and_a_nan_or_inf_names_the_epoch_and_the_setting():
    check_finite("vae", 3, {"train_loss": 1.0, "val_loss": 2.0})
    with pytest.raises(DivergedError, match=r"train gan: the training diverged at epoch 7 \(d_loss nan, g_loss inf\)"
                                            r".*train\.gan\.lr_g / lr_d"):
        check_finite("gan", 7, {"d_loss": math.nan, "g_loss": math.inf, "d_accuracy": 0.5})


@pytest.mark.integration  # trains (briefly) in a tiny project with MLflow
@pytest.mark.parametrize("prior", ["standard", "fitted_gaussian"])
def test_a_vae_trained_at_a_huge_learning_rate_fails_at_its_first_epoch(genloop_tiny_project, prior):
    from genloop.stages.train import train_model

    project = genloop_tiny_project(f"diverging-{prior.replace('_', '-')}", train=())
    params = project.params_with({"train.vae.lr": 1e6, "train.vae.prior": prior, "train.vae.images": 2000})
    with pytest.raises(DivergedError, match=r"train vae: the training diverged at epoch 1 \(.*nan"):
        train_model("vae", params, project.paths, parent_run_id=None)
    assert not (project.paths.train("vae") / "model.pt").exists()
    assert not project.paths.training_state("vae").exists()  # no diverged state to resume from
    client = project.client()
    runs = client.search_runs([e.experiment_id for e in client.search_experiments()])
    assert "FAILED" in {r.info.status for r in runs}  # the training's run, not left RUNNING or FINISHED
