"""Unit tests for genloop.models: shapes at 8x8 and 28x28, output ranges, size checks and the VAE loss."""
from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from genloop.models.classifier import DigitClassifier, FeatureExtractor
from genloop.models.gan import Discriminator, Generator
from genloop.models.vae import ConvVAE, loss_function

SIZES = [(8, 8), (28, 28)]
LATENT, CHANNELS, BATCH = 6, 8, 3


@pytest.fixture(autouse=True)
def _seeded():
    torch.manual_seed(0)


@pytest.mark.parametrize("height,width", SIZES)
def test_vae_forward_returns_logits_of_the_input_shape_and_latent_statistics(height, width):
    vae = ConvVAE(LATENT, CHANNELS, height, width)
    x = torch.rand(BATCH, 1, height, width)
    logits, mu, logvar = vae(x)
    assert logits.shape == (BATCH, 1, height, width)
    assert mu.shape == logvar.shape == (BATCH, LATENT)


@pytest.mark.parametrize("height,width", SIZES)
def test_vae_decoder_maps_latents_to_images_in_unit_range(height, width):
    decoder = ConvVAE(LATENT, CHANNELS, height, width).decoder
    out = decoder(torch.randn(BATCH, LATENT) * 5)
    assert out.shape == (BATCH, 1, height, width)
    assert out.min() >= 0.0 and out.max() <= 1.0


@pytest.mark.parametrize("height,width", SIZES)
@pytest.mark.parametrize("mode", ["train", "eval"])
def test_generator_maps_latents_to_images_in_unit_range(height, width, mode):
    gen = Generator(LATENT, CHANNELS, height, width)
    gen.train(mode == "train")
    out = gen(torch.randn(BATCH, LATENT) * 5)
    assert out.shape == (BATCH, 1, height, width)
    assert out.min() >= 0.0 and out.max() <= 1.0


@pytest.mark.parametrize("height,width", SIZES)
def test_discriminator_gives_one_logit_per_image(height, width):
    disc = Discriminator(CHANNELS, height, width)
    out = disc(torch.rand(BATCH, 1, height, width))
    assert out.shape == (BATCH,)
    assert torch.isfinite(out).all()


@pytest.mark.parametrize("height,width", SIZES)
def test_classifier_gives_ten_logits_and_features_of_feature_dim(height, width):
    clf = DigitClassifier(height, width, feature_dim=12)
    x = torch.rand(BATCH, 1, height, width)
    assert clf(x).shape == (BATCH, 10)
    features = FeatureExtractor(clf, 12)(x)
    assert features.shape == (BATCH, 12)
    assert FeatureExtractor(clf, 12).num_features == 12


@pytest.mark.parametrize("build", [
    pytest.param(lambda h, w: ConvVAE(LATENT, CHANNELS, h, w), id="vae"),
    pytest.param(lambda h, w: Generator(LATENT, CHANNELS, h, w), id="generator"),
    pytest.param(lambda h, w: Discriminator(CHANNELS, h, w), id="discriminator"),
    pytest.param(lambda h, w: DigitClassifier(h, w), id="classifier"),
])
@pytest.mark.parametrize("height,width", [(10, 10), (8, 10), (2, 2)])
def test_side_not_a_multiple_of_four_raises_value_error_naming_the_size(build, height, width):
    with pytest.raises(ValueError, match=f"{height}x{width}"):
        build(height, width)


def _bce_by_hand(logits: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    p = torch.sigmoid(logits)
    return -(x * torch.log(p) + (1 - x) * torch.log(1 - p)).sum()


def _kl_by_hand(mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    # KL(N(mu, sigma^2) || N(0, 1)) = 0.5 * (sigma^2 + mu^2 - 1 - log sigma^2), summed over dims and batch
    return 0.5 * (logvar.exp() + mu.pow(2) - 1 - logvar).sum()


def test_loss_function_is_summed_bce_plus_beta_times_kl():
    g = torch.Generator().manual_seed(1)
    logits = torch.randn(2, 1, 2, 2, generator=g, dtype=torch.float64)
    x = torch.rand(2, 1, 2, 2, generator=g, dtype=torch.float64)
    mu = torch.randn(2, 3, generator=g, dtype=torch.float64)
    logvar = torch.randn(2, 3, generator=g, dtype=torch.float64)
    beta = 0.37

    loss, bce, kl = loss_function(logits, x, mu, logvar, beta)

    bce_hand, kl_hand = _bce_by_hand(logits, x), _kl_by_hand(mu, logvar)
    assert bce.item() == pytest.approx(bce_hand.item(), rel=1e-12)
    assert kl.item() == pytest.approx(kl_hand.item(), rel=1e-12)
    assert loss.item() == pytest.approx((bce_hand + beta * kl_hand).item(), rel=1e-12)
    assert kl.item() > 0


def test_loss_function_on_numbers_worked_out_by_hand():
    # logits 0 -> p = 0.5 for 4 pixels: BCE = 4 ln 2 whatever x is;
    # mu = (1, 0), logvar = 0: KL = 0.5 * (1 + 1 - 1 - 0) + 0 = 0.5
    logits = torch.zeros(1, 1, 2, 2)
    x = torch.tensor([[[[0.0, 1.0], [0.25, 0.5]]]])
    mu, logvar = torch.tensor([[1.0, 0.0]]), torch.zeros(1, 2)

    loss, bce, kl = loss_function(logits, x, mu, logvar, beta=2.0)

    assert bce.item() == pytest.approx(4 * math.log(2), rel=1e-6)
    assert kl.item() == pytest.approx(0.5, rel=1e-6)
    assert loss.item() == pytest.approx(4 * math.log(2) + 1.0, rel=1e-6)


def test_loss_function_sums_over_the_batch_rather_than_averaging():
    logits, x = torch.randn(4, 1, 4, 4), torch.rand(4, 1, 4, 4)
    mu, logvar = torch.randn(4, 2), torch.randn(4, 2)
    _, bce, _ = loss_function(logits, x, mu, logvar)
    assert bce.item() == pytest.approx(F.binary_cross_entropy_with_logits(logits, x, reduction="mean").item() * 64,
                                       rel=1e-5)


def test_beta_zero_drops_the_kl_term():
    g = torch.Generator().manual_seed(2)
    logits, x = torch.randn(3, 1, 4, 4, generator=g), torch.rand(3, 1, 4, 4, generator=g)
    mu, logvar = torch.randn(3, 5, generator=g) * 3, torch.randn(3, 5, generator=g)

    loss, bce, kl = loss_function(logits, x, mu, logvar, beta=0.0)

    assert kl.item() > 1.0  # the KL is still computed and reported ...
    assert loss.item() == pytest.approx(bce.item(), rel=1e-7)  # ... but no longer counted
