"""Tests for the VAE's sampling and schedules: the fitted Gaussian prior folded into the exported
sampler, KL warm-up and lr schedule values, and the config fields that choose them."""
from __future__ import annotations

import math

import pytest
import torch

from genloop.io.checkpoints import load_sampler, read_checkpoint, save_checkpoint
from genloop.config import VAEConfig
from genloop.core.models.vae import Decoder, LatentAffine, PriorDecoder, kl_weight, lr_factor
from genloop.stages.train import fit_vae, optimizer_steps, planned_vae_steps


def tiny_config(**overrides) -> VAEConfig:
    return VAEConfig(**{"arch": "conv", "prior": "standard", "images": 80, "batch_size": 16, "latent_dim": 3,
                        "channels": 4, "hidden": 16, **overrides})


def tiny_data(n: int = 40, seed: int = 0) -> torch.Tensor:
    return torch.rand(n, 1, 8, 8, generator=torch.Generator().manual_seed(seed))


def train(cfg: VAEConfig, epochs: int | None = None):
    """``cfg.images`` over the 40 tiny images (or ``epochs`` full passes)."""
    torch.manual_seed(0)
    trainer = fit_vae(cfg, tiny_data(), tiny_data(8, seed=1), torch.device("cpu"), torch.Generator().manual_seed(0))
    rows = [trainer.run_epoch() for _ in range(-(-cfg.images // 40) if epochs is None else epochs)]
    return trainer, rows


def test_latent_affine_is_the_identity_until_fitted():
    z = torch.randn(5, 4)
    assert torch.equal(LatentAffine(4)(z), z)


def test_fitted_latent_affine_maps_standard_normal_onto_the_data_mean_and_covariance():
    gen = torch.Generator().manual_seed(0)
    true_l = torch.tensor([[2.0, 0.0, 0.0], [1.0, 0.5, 0.0], [-0.5, 0.3, 0.2]])
    true_mean = torch.tensor([1.0, -2.0, 0.5])
    latents = true_mean + torch.randn(20000, 3, generator=gen) @ true_l.T
    affine = LatentAffine(3)
    affine.fit(latents)
    assert torch.allclose(affine.mean, latents.mean(0), atol=1e-4)
    mapped = affine(torch.randn(50000, 3, generator=gen))
    assert torch.allclose(mapped.mean(0), true_mean, atol=0.05)
    assert torch.allclose(torch.cov(mapped.T), true_l @ true_l.T, atol=0.08)


def test_fit_with_posterior_variances_adds_their_mean_to_the_covariance_diagonal():
    latents = torch.randn(500, 2, generator=torch.Generator().manual_seed(0))
    variances = torch.full((500, 2), 0.25)
    means_only, aggregate = LatentAffine(2), LatentAffine(2)
    means_only.fit(latents)
    aggregate.fit(latents, variances)
    cov = lambda a: a.scale @ a.scale.T  # noqa: E731
    assert torch.allclose(cov(aggregate) - cov(means_only), 0.25 * torch.eye(2), atol=1e-4)
    assert torch.equal(aggregate.mean, means_only.mean)


def test_fitting_a_gaussian_to_one_vector_is_refused():
    with pytest.raises(ValueError, match="at least two"):
        LatentAffine(2).fit(torch.zeros(1, 2))


def test_kl_weight_rises_linearly_over_the_warmup_fraction_then_stays_at_beta():
    assert kl_weight(1.0, 0.2, 0.0) == 0.0
    assert kl_weight(1.0, 0.2, 0.1) == pytest.approx(0.5)
    assert kl_weight(0.5, 0.2, 0.2) == pytest.approx(0.5)
    assert kl_weight(0.5, 0.2, 0.9) == pytest.approx(0.5)
    assert kl_weight(0.7, 0.0, 0.0) == 0.7  # no warm-up: beta from the first step


def test_cosine_lr_factor_decays_from_one_to_zero_and_constant_stays_one():
    assert lr_factor("cosine", 0.0) == pytest.approx(1.0)
    assert lr_factor("cosine", 0.5) == pytest.approx(0.5)
    assert lr_factor("cosine", 1.0) == pytest.approx(0.0, abs=1e-12)
    assert lr_factor("constant", 0.7) == 1.0
    with pytest.raises(ValueError, match="schedule"):
        lr_factor("step", 0.5)


def test_warmup_weights_the_first_epoch_below_beta_and_reaches_beta_by_the_end():
    cfg = tiny_config(images=160, kl_warmup=0.5, beta=0.8)
    trainer, rows = train(cfg)
    steps_per_epoch = math.ceil(40 / 16)
    assert planned_vae_steps(cfg, 40) == 4 * steps_per_epoch
    assert optimizer_steps(trainer.optimizers["vae"]) == 4 * steps_per_epoch
    assert rows[0]["kl_weight"] < 0.8
    assert rows[-1]["kl_weight"] == pytest.approx(0.8)


def test_cosine_schedule_leaves_the_last_step_near_zero_learning_rate():
    trainer, _ = train(tiny_config(lr_schedule="cosine"))
    last_lr = trainer.optimizers["vae"].param_groups[0]["lr"]
    assert 0 < last_lr < 0.1 * 1e-3


def test_standard_prior_samples_from_the_plain_decoder_and_saves_no_prior(tmp_path):
    trainer, _ = train(tiny_config())
    assert isinstance(trainer.sampler, Decoder)
    assert set(trainer.saved) == {"vae"}


@pytest.mark.parametrize("arch", ["conv", "mlp"])
def test_fitted_prior_is_fitted_during_training_and_folded_into_the_sampler(arch):
    trainer, _ = train(tiny_config(prior="fitted_gaussian", arch=arch))
    assert isinstance(trainer.sampler, PriorDecoder)
    prior = trainer.state["prior"]
    assert not torch.equal(prior.scale, torch.eye(3)) and not torch.equal(prior.mean, torch.zeros(3))
    z = torch.randn(6, 3)
    vae = trainer.state["vae"].eval()
    with torch.no_grad():
        assert torch.allclose(trainer.sampler(z), vae.decoder(prior.mean + z @ prior.scale.T))
        assert not torch.allclose(trainer.sampler(z), vae.decoder(z))


def test_fitted_prior_survives_the_checkpoint_and_the_sampler_says_which_it_is(tmp_path):
    cfg = tiny_config(prior="fitted_gaussian")
    trainer, _ = train(cfg)
    path = tmp_path / "model.pt"
    save_checkpoint(path, "vae", cfg.model_dump(), (8, 8), trainer.saved)
    assert read_checkpoint(path)["hparams"]["prior"] == "fitted_gaussian"
    sampler, latent_dim = load_sampler(path)
    assert isinstance(sampler, PriorDecoder) and latent_dim == 3
    z = torch.randn(7, 3)
    with torch.no_grad():
        assert torch.allclose(sampler(z), trainer.sampler.eval()(z), atol=1e-6)


def test_fitted_prior_checkpoint_without_its_prior_is_a_clear_error(tmp_path):
    cfg = tiny_config(prior="fitted_gaussian")
    trainer, _ = train(cfg, epochs=1)
    path = tmp_path / "model.pt"
    save_checkpoint(path, "vae", cfg.model_dump(), (8, 8), {"vae": trainer.state["vae"]})
    with pytest.raises(ValueError, match="lacks its fitted prior"):
        load_sampler(path)


def test_checkpoint_without_prior_or_decoder_convs_loads_as_before(tmp_path):
    cfg = tiny_config()
    trainer, _ = train(cfg, epochs=1)
    hparams = {k: v for k, v in cfg.model_dump().items() if k not in ("prior", "decoder_convs")}
    path = tmp_path / "old.pt"
    save_checkpoint(path, "vae", hparams, (8, 8), trainer.saved)
    sampler, _ = load_sampler(path)
    assert isinstance(sampler, Decoder)


def test_decoder_convs_add_conv_layers_and_still_make_images_in_unit_range():
    plain, deeper = Decoder(3, 4, 8, 8), Decoder(3, 4, 8, 8, extra_convs=2)
    count = lambda d: sum(isinstance(m, torch.nn.Conv2d) for m in d.modules())  # noqa: E731
    assert count(deeper) == count(plain) + 4
    with torch.no_grad():
        images = deeper(torch.randn(5, 3))
    assert images.shape == (5, 1, 8, 8) and 0 <= float(images.min()) and float(images.max()) <= 1


@pytest.mark.parametrize("arch", ["conv", "mlp"])
def test_exported_fitted_prior_sampler_matches_eager(tmp_path, arch):
    from genloop.stages.export import export_onnx, parity

    trainer, _ = train(tiny_config(prior="fitted_gaussian", arch=arch), epochs=1)
    sampler = trainer.sampler.eval()
    path = tmp_path / "vae_decoder.onnx"
    export_onnx(sampler, 3, path)
    with torch.no_grad():
        diffs = parity(sampler, 3, path, [1, 64], seed=0)
    assert max(diffs.values()) < 1e-4


@pytest.mark.parametrize(("field", "value"), [
    ("kl_warmup", 1.5), ("kl_warmup", -0.1), ("prior", "gmm"), ("lr_schedule", "step"), ("decoder_convs", -1),
])
def test_bad_vae_sampling_settings_are_rejected_naming_the_field(tmp_path, field, value):
    from genloop.config import ConfigError, load_params

    with pytest.raises(ConfigError, match=rf"train\.vae\.{field}"):
        load_params(tmp_path / "params.yaml", {f"train.vae.{field}": value})


def test_a_short_last_epoch_keeps_the_full_epochs_prior_fit():
    """The fit divides by the images it saw: a partial last epoch must not shrink the Gaussian."""
    cfg = tiny_config(prior="fitted_gaussian", arch="mlp", images=40 + 8)  # one full pass, then 8 images
    torch.manual_seed(0)
    trainer = fit_vae(cfg, tiny_data(), tiny_data(8, seed=1), torch.device("cpu"), torch.Generator().manual_seed(0))
    trainer.run_epoch(40)
    after_full = {k: v.clone() for k, v in trainer.state["prior"].state_dict().items()}
    trainer.run_epoch(8)
    for key, value in trainer.state["prior"].state_dict().items():
        assert torch.equal(value, after_full[key]), key


def test_a_partial_epoch_of_most_of_the_data_refits_on_what_it_saw():
    cfg = tiny_config(prior="fitted_gaussian", arch="mlp", images=40 + 30)
    torch.manual_seed(0)
    trainer = fit_vae(cfg, tiny_data(), tiny_data(8, seed=1), torch.device("cpu"), torch.Generator().manual_seed(0))
    trainer.run_epoch(40)
    scale_full = trainer.state["prior"].state_dict()
    scale_full = {k: v.clone() for k, v in scale_full.items()}
    trainer.run_epoch(30)
    changed = [k for k, v in trainer.state["prior"].state_dict().items() if not torch.equal(v, scale_full[k])]
    assert changed
    # a mean over 30 images divided by 30, not by 40: its size stays that of the full fit's
    mean_full = scale_full["mean"].norm()
    assert 0.5 * mean_full < trainer.state["prior"].mean.norm() < 2.0 * mean_full + 1e-3
