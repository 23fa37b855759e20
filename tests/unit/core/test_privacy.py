"""Tests for differentially private training (genloop.core.privacy, train.<model>.privacy): config checks,
DP-SGD on the VAE and on the GAN's discriminator with a finite ε that falls as the noise grows, batch
norm swapped out, and the spent ε reaching metrics.json, the report, the MLflow run and the registry.

The fast tests train a few steps on random 8x8 images in memory; the end-to-end one (integration)
trains the tiny digits project privately and exports it.
"""
from __future__ import annotations

import copy
import json
import math

import pytest
import torch
from torch import nn

from genloop.core import privacy
from genloop.config import ConfigError, GANConfig, PrivacyConfig, VAEConfig, load_params
from genloop.stages.train import fit_gan, fit_vae

IMAGES = (torch.rand(64, 1, 8, 8, generator=torch.Generator().manual_seed(0)) > 0.5).float()


def private(**settings) -> dict:
    return {"enabled": True, **settings}


def train_vae(noise: float, epochs: int = 2, **overrides):
    cfg = VAEConfig(images=128, batch_size=16, prior="standard", privacy=private(noise_multiplier=noise), **overrides)
    trainer = fit_vae(cfg, IMAGES, IMAGES[:8], torch.device("cpu"), torch.Generator().manual_seed(0))
    rows = [trainer.run_epoch(64) for _ in range(epochs)]
    return trainer, rows


def train_gan(noise: float, epochs: int = 2):
    cfg = GANConfig(images=128, batch_size=16, channels=8, latent_dim=4, privacy=private(noise_multiplier=noise))
    trainer = fit_gan(cfg, IMAGES, IMAGES[:8], torch.device("cpu"), torch.Generator().manual_seed(0))
    rows = [trainer.run_epoch(64) for _ in range(epochs)]
    return trainer, rows


# ---- config ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("key,value,message", [
    ("train.vae.privacy.target_epsilon", 3.0, "either privacy.target_epsilon or privacy.noise_multiplier"),
    ("train.gan.privacy.noise_multiplier", None, "both null"),
    ("train.vae.privacy.noise_multiplier", -1.0, "greater than 0"),
    ("train.gan.privacy.max_grad_norm", 0.0, "greater than 0"),
    ("train.vae.privacy.delta", 1.5, "less than or equal to 0.01"),
    ("train.gan.privacy.delta", 0.9, "less than or equal to 0.01"),
    ("train.vae.privacy.target_epsilon", -2.0, "greater than 0"),
    ("train.gan.privacy.accountant", "gdp", "rdp"),
    ("train.vae.privacy.enabeld", True, "unknown key"),
    ("export.promotion.max_epsilon", -1.0, "greater than 0"),
])
def test_bad_privacy_settings_are_rejected_naming_the_field(tmp_path, key, value, message):
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")) as caught:
        load_params(tmp_path / "params.yaml", {key: value})
    assert message in str(caught.value)


def test_a_private_vae_needs_the_standard_prior_and_a_private_gan_no_spectral_norm(tmp_path):
    with pytest.raises(ConfigError, match=r"train\.vae.*prior: standard"):
        load_params(tmp_path / "params.yaml", {"train.vae.privacy.enabled": True})
    with pytest.raises(ConfigError, match=r"train\.gan.*spectral_norm"):
        load_params(tmp_path / "params.yaml", {"train.gan.privacy.enabled": True, "train.gan.spectral_norm": True})
    params = load_params(tmp_path / "params.yaml", {"train.vae.privacy.enabled": True, "train.vae.prior": "standard",
                                                    "train.vae.privacy.target_epsilon": 4.0,
                                                    "train.vae.privacy.noise_multiplier": None})
    assert params.train.vae.privacy.target_epsilon == 4.0


def test_privacy_is_off_by_default_and_the_default_training_reports_no_epsilon():
    params = load_params("does-not-exist.yaml")
    assert not params.train.vae.privacy.enabled and not params.train.gan.privacy.enabled
    assert params.export.promotion.max_epsilon is None
    trainer = fit_vae(VAEConfig(images=64, batch_size=16), IMAGES, IMAGES[:8], torch.device("cpu"),
                      torch.Generator().manual_seed(0))
    assert trainer.privacy is None and "dp_steps" not in trainer.state
    assert "epsilon" not in trainer.run_epoch(64)


def test_delta_above_one_over_the_training_images_is_refused_before_training():
    model = nn.Linear(4, 1)
    with pytest.raises(ConfigError, match=r"privacy\.delta 0\.005 exceeds 1 / training images \(1/1000"):
        privacy.private_training(PrivacyConfig(enabled=True, delta=0.005), model,
                                 torch.optim.SGD(model.parameters(), lr=0.1), 1000, 10, 10, "sum")


def test_a_target_epsilon_too_small_for_any_noise_is_a_config_error_naming_it():
    model = nn.Linear(4, 1)
    config = PrivacyConfig(enabled=True, target_epsilon=1e-6, noise_multiplier=None)
    with pytest.raises(ConfigError, match=r"privacy\.target_epsilon 1e-06 is too small"):
        privacy.private_training(config, model, torch.optim.SGD(model.parameters(), lr=0.1), 100, 10, 10, "sum")


def test_a_negative_epsilon_fails_the_training_instead_of_passing_any_bound():
    model = nn.Linear(4, 1)  # huge noise, one step, δ = 1 / n: the accountant's conversion gives ε < 0
    config = PrivacyConfig(enabled=True, noise_multiplier=50.0, delta=0.01)
    assert privacy.epsilon(50.0, 0.1, 1, 0.01) < 0
    with pytest.raises(privacy.PrivacyAccountingError, match=r"epsilon -0\.0\d+ at delta 0\.01"):
        privacy.private_training(config, model, torch.optim.SGD(model.parameters(), lr=0.1), 100, 10, 1, "sum")
    assert privacy.checked_epsilon(math.inf, 1e-5) == math.inf  # no privacy, said honestly


# ---- training ---------------------------------------------------------------------------------------

def test_private_vae_reports_a_finite_epsilon_that_falls_as_the_noise_grows():
    low_noise, rows = train_vae(0.7)
    high_noise, _ = train_vae(2.0)
    eps_low, eps_high = low_noise.privacy.epsilon(), high_noise.privacy.epsilon()
    assert 0 < eps_high < eps_low < math.inf
    assert rows[0]["epsilon"] < rows[1]["epsilon"] == pytest.approx(eps_low)  # spent grows with the steps
    assert all(math.isfinite(v) for row in rows for v in row.values())
    summary = low_noise.privacy.summary()
    assert summary["steps"] == 2 * math.ceil(64 / 16) and summary["delta"] == 1e-5
    assert summary["sample_rate"] == pytest.approx(16 / 64) and summary["sampling"] == "poisson"


def test_private_vae_steps_its_weights_and_counts_steps_in_its_training_state():
    trainer, _ = train_vae(1.0, epochs=0)
    before = {k: v.clone() for k, v in trainer.saved["vae"].state_dict().items()}
    trainer.run_epoch(64)
    after = trainer.saved["vae"].state_dict()
    assert any(not torch.equal(before[k], after[k]) for k in before)
    assert int(trainer.state["dp_steps"].steps) == 4  # resumed trainings restore it with the weights
    assert "dp_steps" not in trainer.saved  # model.pt holds the model only


@pytest.mark.parametrize("arch", ("mlp", "conv"))
def test_ghost_clipping_gives_the_same_clipped_gradient_as_per_image_gradients(arch):
    from genloop.core.models.vae import ConvVAE, MLPVAE, loss_per_image

    torch.manual_seed(0)
    base = MLPVAE(4, 32, 8, 8) if arch == "mlp" else ConvVAE(4, 4, 8, 8)
    x = IMAGES[:16]
    grads = []
    for ghost in (False, True):
        model = copy.deepcopy(base)
        dp = privacy.private_training(PrivacyConfig(enabled=True, noise_multiplier=1e-12, max_grad_norm=0.5), model,
                                      torch.optim.SGD(model.parameters(), lr=0.0), 64, 16, 10, "sum", ghost=ghost)
        torch.manual_seed(1)
        logits, mu, logvar = dp.module(x)
        dp.optimizer.zero_grad()
        dp.clipped_loss(loss_per_image(logits, x, mu, logvar)).backward()
        dp.optimizer.step()
        grads.append(torch.cat([p.grad.flatten() for p in model.parameters()]))
    clipped, ghosted = grads
    assert torch.allclose(clipped, ghosted, atol=1e-5)
    assert 0 < clipped.norm() <= 16 * 0.5 + 1e-4  # a sum of 16 gradients clipped to norm 0.5


def test_loss_per_image_sums_to_the_batch_loss():
    from genloop.core.models.vae import MLPVAE, loss_function, loss_per_image

    torch.manual_seed(0)
    logits, mu, logvar = MLPVAE(4, 32, 8, 8)(IMAGES[:10])
    per_image = loss_per_image(logits, IMAGES[:10], mu, logvar, 0.25)
    assert per_image.shape == (10,)
    assert per_image.sum().item() == pytest.approx(loss_function(logits, IMAGES[:10], mu, logvar, 0.25)[0].item(),
                                                   rel=1e-5)


def test_a_resumed_private_training_keeps_counting_its_steps(tmp_path):
    from genloop.io.checkpoints import load_training_state, restore_training_state, save_training_state

    first, _ = train_vae(1.0, epochs=1)
    rng = torch.Generator().manual_seed(5)
    save_training_state(tmp_path / "last.pt", "f", 1, "run", [], first.state, first.optimizers, rng)
    resumed, _ = train_vae(1.0, epochs=0)
    restore_training_state(load_training_state(tmp_path / "last.pt", "f"), resumed.state, resumed.optimizers, rng)
    assert int(resumed.privacy.counter.steps) == 4 and resumed.privacy.epsilon() == first.privacy.epsilon()
    resumed.run_epoch(64)
    assert int(resumed.privacy.counter.steps) == 8


def test_private_gan_trains_the_discriminator_privately_without_batch_norm():
    low_noise, rows = train_gan(0.7)
    high_noise, _ = train_gan(2.0)
    assert 0 < high_noise.privacy.epsilon() < low_noise.privacy.epsilon() < math.inf
    assert all(math.isfinite(v) for row in rows for v in row.values())
    disc = low_noise.state["discriminator"]
    assert not privacy.has_batch_norm(disc) and any(isinstance(m, nn.GroupNorm) for m in disc.modules())
    assert low_noise.privacy.module._module is disc  # its passes go through Opacus' per-sample wrapper
    assert privacy.has_batch_norm(low_noise.state["generator"])  # the generator never sees real images


def test_non_private_gan_keeps_its_batch_norm():
    trainer = fit_gan(GANConfig(images=64, batch_size=16, channels=8, latent_dim=4), IMAGES, IMAGES[:8],
                      torch.device("cpu"), torch.Generator().manual_seed(0))
    assert trainer.privacy is None and privacy.has_batch_norm(trainer.state["discriminator"])


def test_target_epsilon_sets_the_noise_so_the_whole_training_spends_about_that():
    cfg = VAEConfig(images=256, batch_size=16, prior="standard",
                    privacy=private(target_epsilon=5.0, noise_multiplier=None))
    trainer = fit_vae(cfg, IMAGES, IMAGES[:8], torch.device("cpu"), torch.Generator().manual_seed(0))
    for _ in range(4):
        trainer.run_epoch(64)
    spent = trainer.privacy.epsilon()
    assert 4.5 < spent <= 5.0 + 1e-6
    assert trainer.privacy.sigma > 0


def test_poisson_batches_draw_each_image_at_the_sample_rate():
    drawn = list(privacy.poisson_batches(1000, 0.1, 50, torch.Generator().manual_seed(1)))
    sizes = torch.tensor([len(b) for b in drawn], dtype=torch.float)
    assert len(drawn) == 50 and abs(sizes.mean().item() - 100) < 10 and sizes.std() > 0
    assert all(len(set(b.tolist())) == len(b) for b in drawn)


def test_opacus_compatible_swaps_batch_norm_and_in_place_activations():
    model = nn.Sequential(nn.Conv2d(1, 8, 3), nn.BatchNorm2d(8), nn.LeakyReLU(0.2, inplace=True))
    fixed = privacy.opacus_compatible(model)
    assert not privacy.has_batch_norm(fixed) and privacy.has_batch_norm(model)  # a copy
    assert not any(getattr(m, "inplace", False) for m in fixed.modules())
    with pytest.raises(ValueError, match="batch norm"):
        privacy.private_training(PrivacyConfig(enabled=True), model, torch.optim.SGD(model.parameters(), 0.1),
                                 100, 10, 10, "mean")


def test_epsilon_of_no_steps_is_zero_and_spent_of_a_non_private_checkpoint_is_empty():
    assert privacy.epsilon(1.0, 0.1, 0, 1e-5) == 0.0
    assert privacy.spent({"kind": "vae"}) == {}
    assert privacy.spent({"privacy": {"epsilon": 2.5, "delta": 1e-5}}) == {"epsilon": 2.5, "delta": 1e-5}


def test_report_line_says_epsilon_at_delta_or_not_private():
    from genloop.evaluation.report import privacy_line, render_html

    assert privacy_line({"epsilon": 3.21, "delta": 1e-5}) == "ε = 3.21 at δ = 1e-05"
    assert privacy_line({"fid": 3.0}) == "not private"
    page = render_html({"vae": {"fid": 1.0, "epsilon": 3.21, "delta": 1e-5}, "gan": {"fid": 2.0}}, [], {})
    assert "VAE: ε = 3.21 at δ = 1e-05" in page and "GAN: not private" in page


# ---- end to end: metrics.json, report, MLflow run, registry tag --------------------------------------

@pytest.fixture(scope="module")
def private_project(genloop_tiny_project):
    from genloop.stages.evaluate import evaluate
    from genloop.stages.export import export

    project = genloop_tiny_project("private", overrides={
        "train.vae.images": 1000, "train.gan.images": 1000, "train.vae.prior": "standard",
        "train.vae.privacy.enabled": True, "train.gan.privacy.enabled": True,
        "train.vae.privacy.noise_multiplier": 1.5, "train.gan.privacy.noise_multiplier": 1.5,
    })
    evaluate(project.params, project.paths, log_to_mlflow=False)
    return project, export(project.params, project.paths)


@pytest.mark.integration
@pytest.mark.parametrize("kind", ("vae", "gan"))
def test_spent_epsilon_reaches_metrics_report_run_and_registry(private_project, kind):
    from genloop.io.tracking import DELTA_TAG, EPSILON_TAG

    project, result = private_project
    figures = json.loads(project.paths.metrics.read_text())[kind]
    assert 0 < figures["epsilon"] < math.inf and figures["delta"] == 1e-5
    assert math.isfinite(figures["fid"])  # promotion still reads fid beside them
    page = (project.paths.reports / "index.html").read_text(encoding="utf-8")
    assert f"{kind.upper()}: ε = {figures['epsilon']:.3g} at δ = 1e-05" in page

    run = project.client().get_run(project.results[kind].run_id).data
    assert run.metrics["epsilon"] == pytest.approx(figures["epsilon"])
    assert run.params["delta"] == "1e-05" and run.params["dp_noise_multiplier"] == "1.5"

    model = result.models[kind]
    tags = project.client().get_model_version(model.registered_name, model.registered_version).tags
    assert float(tags[EPSILON_TAG]) == pytest.approx(figures["epsilon"]) and float(tags[DELTA_TAG]) == 1e-5


@pytest.mark.integration
def test_private_epsilon_bound_in_the_gate_refuses_a_looser_model(private_project):
    from mlflow import MlflowClient

    from genloop.stages.export import promote_if_better

    project, result = private_project
    model = result.models["vae"]
    spent = json.loads(project.paths.metrics.read_text())["vae"]["epsilon"]
    strict = project.params_with({"export.promotion.max_epsilon": spent / 2})
    decision = promote_if_better("vae", model.registered_name, model.registered_version, strict, project.paths)
    assert not decision.promoted and "exceeds export.promotion.max_epsilon" in decision.reason
    version = MlflowClient().get_model_version(model.registered_name, model.registered_version)
    assert version.tags["promotion.decision"] == "kept"
    assert f"privacy: epsilon {spent:.6g}, bound {spent / 2:.6g}" in version.description
