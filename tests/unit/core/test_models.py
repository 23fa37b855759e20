"""Unit tests for genloop.core.models: shapes at 8x8 and 28x28, output ranges, size checks, the VAE loss and
test ELBO, the GAN losses, the generator EMA, spectral norm and DiffAugment."""
from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from genloop.core.models.classifier import DigitClassifier, FeatureExtractor
from torch.nn.utils import parametrize

from genloop.core.models.diffaugment import color, cutout, diff_augment, translate
from genloop.core.models.gan import (Discriminator, Generator, WeightEMA, discriminator_loss, generator_loss,
                                init_weights, recalibrate_batch_norm)
from genloop.core.models.vae import ConvVAE, MLPVAE, loss_function, negative_elbo_nats

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


@pytest.mark.parametrize("height,width", SIZES + [(30, 30)])
def test_nearest_upsampling_generator_draws_the_same_shapes_without_transposed_convolutions(height, width):
    gen = Generator(LATENT, CHANNELS, height, width, 3, upsample="nearest")
    out = gen(torch.randn(BATCH, LATENT))
    assert out.shape == (BATCH, 3, height, width) and out.min() >= 0.0 and out.max() <= 1.0
    assert not any(isinstance(m, torch.nn.ConvTranspose2d) for m in gen.modules())
    assert sum(isinstance(m, torch.nn.Upsample) for m in gen.modules()) == 2
    with pytest.raises(ValueError, match="unknown upsampling 'bilinear'"):
        Generator(LATENT, CHANNELS, height, width, upsample="bilinear")


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


@pytest.mark.parametrize("height,width", [(10, 10), (8, 10), (2, 2), (30, 30)])
def test_side_not_a_multiple_of_four_is_padded_in_and_cropped_out(height, width):
    x = torch.rand(BATCH, 1, height, width)
    logits, _, _ = ConvVAE(LATENT, CHANNELS, height, width)(x)
    assert logits.shape == (BATCH, 1, height, width)
    assert Generator(LATENT, CHANNELS, height, width)(torch.randn(BATCH, LATENT)).shape == (BATCH, 1, height, width)
    assert Discriminator(CHANNELS, height, width)(x).shape == (BATCH,)
    assert DigitClassifier(height, width)(x).shape == (BATCH, 10)


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


# ---- the pytorch/examples MLP VAE ---------------------------------------------------------------

@pytest.mark.parametrize("height,width", SIZES)
def test_mlp_vae_is_the_examples_architecture_sized_from_the_image(height, width):
    vae = MLPVAE(20, 400, height, width)
    layers = {name: tuple(m.weight.shape) for name, m in vae.named_modules() if isinstance(m, torch.nn.Linear)}
    pixels = height * width
    assert layers == {"fc1": (400, pixels), "fc21": (20, 400), "fc22": (20, 400),
                      "decoder.fc3": (400, 20), "decoder.fc4": (pixels, 400)}
    x = torch.rand(BATCH, 1, height, width)
    logits, mu, logvar = vae(x)
    assert logits.shape == (BATCH, 1, height, width)
    assert mu.shape == logvar.shape == (BATCH, 20)
    images = vae.decoder(torch.randn(BATCH, 20) * 5)
    assert images.shape == (BATCH, 1, height, width)
    assert images.min() >= 0.0 and images.max() <= 1.0


def test_mlp_vae_loss_decreases_when_fitting_a_batch():
    vae = MLPVAE(4, 32, 8, 8)
    x = torch.zeros(32, 1, 8, 8)
    x[:16, :, :, :4] = 1.0  # two patterns: left half or right half lit
    x[16:, :, :, 4:] = 1.0
    opt = torch.optim.Adam(vae.parameters(), lr=1e-2)
    losses = []
    for _ in range(30):
        logits, mu, logvar = vae(x)
        loss = loss_function(logits, x, mu, logvar)[0]
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.8 * losses[0]


@pytest.mark.parametrize("build", [lambda: MLPVAE(3, 16, 8, 8), lambda: ConvVAE(3, 4, 8, 8)], ids=["mlp", "conv"])
def test_negative_elbo_is_the_mean_per_image_of_bce_sum_plus_kl_with_one_seeded_sample(build):
    vae = build()
    x = torch.rand(7, 1, 8, 8)
    value = negative_elbo_nats(vae, x, seed=3, batch_size=3)  # batches of 3, 3, 1
    assert value == pytest.approx(negative_elbo_nats(vae, x, seed=3), rel=1e-6)  # nor does the batch size
    g = torch.Generator().manual_seed(3)
    with torch.no_grad():
        mu, logvar = vae.encode(x)
        z = mu + torch.randn(7, 3, generator=g) * torch.exp(0.5 * logvar)
        by_hand = (_bce_by_hand(vae.decoder.logits(z), x) + _kl_by_hand(mu, logvar)).item() / 7
    assert value == pytest.approx(by_hand, rel=1e-5)
    assert value != negative_elbo_nats(vae, x, seed=4)


# ---- GAN losses, EMA, spectral norm -------------------------------------------------------------

def test_hinge_losses_match_their_definition():
    d_real, d_fake = torch.tensor([2.0, 0.5, -1.0]), torch.tensor([-3.0, 0.0, 1.5])
    # max(0, 1 - real): 0, 0.5, 2 -> mean 5/6; max(0, 1 + fake): 0, 1, 2.5 -> mean 7/6
    assert discriminator_loss("hinge", d_real, d_fake).item() == pytest.approx(2.0)
    assert generator_loss("hinge", d_fake).item() == pytest.approx(0.5)  # -mean(-3, 0, 1.5)


def test_nonsaturating_losses_are_binary_cross_entropies():
    d_real, d_fake = torch.tensor([2.0, -1.0]), torch.tensor([0.3, -0.7])
    expected_d = -(torch.log(torch.sigmoid(d_real)).mean() + torch.log(1 - torch.sigmoid(d_fake)).mean())
    assert discriminator_loss("nonsaturating", d_real, d_fake).item() == pytest.approx(expected_d.item(), rel=1e-6)
    assert generator_loss("nonsaturating", d_fake).item() == pytest.approx(
        -torch.log(torch.sigmoid(d_fake)).mean().item(), rel=1e-6)
    with pytest.raises(ValueError, match="wasserstein"):
        generator_loss("wasserstein", d_fake)


def _set_all(module: torch.nn.Module, value: float) -> None:
    with torch.no_grad():
        for p in module.parameters():
            p.fill_(value)


def test_ema_weights_lag_the_raw_weights_and_move_toward_them():
    gen = Generator(LATENT, CHANNELS, 8, 8)
    _set_all(gen, 0.0)
    ema = WeightEMA(gen, decay=0.9)
    _set_all(gen, 1.0)
    distances = []
    for _ in range(10):
        ema.update(gen)
        distances.append(max((e - p).abs().max().item() for e, p in zip(ema.module.parameters(), gen.parameters())))
    assert distances[0] > 0.05  # after one update the average still differs from the raw weights ...
    assert all(b < a for a, b in zip(distances, distances[1:]))  # ... and gets closer with every update
    assert distances[-1] < 1e-3
    # warm-up: the first update uses decay min(0.9, 1/10) = 0.1, the tenth min(0.9, 10/19)
    first = WeightEMA(gen, decay=0.9)
    _set_all(first.module, 0.0)
    first.update(gen)
    assert next(first.module.parameters()).flatten()[0].item() == pytest.approx(0.9)
    assert not any(p.requires_grad for p in ema.module.parameters())


def test_ema_copies_batch_norm_statistics_and_samples_like_a_generator():
    gen = Generator(LATENT, CHANNELS, 8, 8)
    ema = WeightEMA(gen, decay=0.99)
    gen.train()
    gen(torch.randn(16, LATENT))  # moves the running statistics
    ema.update(gen)
    for averaged, current in zip(ema.module.buffers(), gen.buffers()):
        assert torch.equal(averaged, current)
    out = ema(torch.randn(BATCH, LATENT))
    assert out.shape == (BATCH, 1, 8, 8)


@pytest.mark.parametrize("decay", [0.0, 1.0, -0.5])
def test_ema_rejects_a_decay_outside_the_open_unit_interval(decay):
    with pytest.raises(ValueError, match="decay"):
        WeightEMA(Generator(LATENT, CHANNELS, 8, 8), decay)


@pytest.mark.parametrize("height,width", SIZES)
@pytest.mark.parametrize("spectral_norm", [False, True])
def test_discriminator_extra_convs_add_same_size_layers_at_both_resolutions(height, width, spectral_norm):
    plain = Discriminator(CHANNELS, height, width, spectral_norm, 3)
    deeper = Discriminator(CHANNELS, height, width, spectral_norm, 3, extra_convs=2)
    convs = [m for m in deeper.modules() if isinstance(m, torch.nn.Conv2d)]
    assert len(convs) == 2 + 2 * 2
    assert sorted(m.in_channels for m in convs if m.kernel_size == (3, 3)) == [CHANNELS // 2] * 2 + [CHANNELS] * 2
    x = torch.rand(BATCH, 3, height, width)
    assert deeper(x).shape == plain(x).shape == (BATCH,)
    # without extra layers the layer indices are those of the older discriminator, so its checkpoints load
    assert list(plain.state_dict()) == list(Discriminator(CHANNELS, height, width, spectral_norm, 3, 0).state_dict())


@pytest.mark.parametrize("height,width", SIZES)
def test_spectral_norm_parametrizes_every_discriminator_weight_and_drops_batch_norm(height, width):
    plain = Discriminator(CHANNELS, height, width)
    normed = Discriminator(CHANNELS, height, width, spectral_norm=True)
    weighted = [m for m in normed.modules() if isinstance(m, (torch.nn.Conv2d, torch.nn.Linear))]
    assert len(weighted) == 3
    assert all(parametrize.is_parametrized(m, "weight") for m in weighted)
    assert not any(parametrize.is_parametrized(m) for m in plain.modules())
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in normed.modules())
    assert any(isinstance(m, torch.nn.BatchNorm2d) for m in plain.modules())
    normed.apply(init_weights)  # DCGAN init reaches the parametrized weights
    normed.train()
    for _ in range(20):  # power iteration converges: the largest singular value becomes ~1
        normed(torch.rand(BATCH, 1, height, width))
    top = torch.linalg.matrix_norm(weighted[-1].weight, ord=2).item()
    assert top == pytest.approx(1.0, rel=0.05)
    assert normed(torch.rand(BATCH, 1, height, width)).shape == (BATCH,)


def test_recalibrate_batch_norm_sets_the_statistics_from_the_generators_own_outputs():
    gen = Generator(LATENT, CHANNELS, 8, 8).eval()
    norm = gen.fc[1]
    with torch.no_grad():
        norm.running_mean.fill_(5.0)  # statistics that belong to other weights
    recalibrate_batch_norm(gen, LATENT, seed=7, batches=3, batch_size=10)
    rng = torch.Generator().manual_seed(7)
    z = torch.cat([torch.randn(10, LATENT, generator=rng) for _ in range(3)])
    with torch.no_grad():
        pre = gen.fc[0](z)
    assert torch.allclose(norm.running_mean, pre.mean(0), atol=1e-5)  # the average over all 3 batches
    assert not gen.training and norm.momentum == 0.1


# ---- DiffAugment ---------------------------------------------------------------------------------

@pytest.mark.parametrize("height,width", SIZES)
@pytest.mark.parametrize("policy", [["translation"], ["cutout"], ["translation", "cutout"]])
def test_diff_augment_keeps_the_shape_and_passes_gradients(height, width, policy):
    x = torch.rand(BATCH, 1, height, width, requires_grad=True)
    out = diff_augment(x, policy)
    assert out.shape == x.shape
    out.sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0
    assert ((x.grad == 0) | (x.grad == 1)).all()  # each output pixel is one input pixel or zero


def test_diff_augment_off_returns_the_input_itself():
    x = torch.rand(BATCH, 1, 8, 8)
    assert diff_augment(x, []) is x


def test_translation_shifts_whole_images_and_fills_with_zeros():
    x = torch.zeros(64, 1, 28, 28)
    x[:, :, 14, 14] = 1.0
    out = translate(x)
    assert torch.equal(out.sum(dim=(1, 2, 3)), torch.ones(64))  # the dot moves, it is not lost or smeared
    rows, cols = out[:, 0].nonzero()[:, 1], out[:, 0].nonzero()[:, 2]
    assert (rows - 14).abs().max() <= 4 and (cols - 14).abs().max() <= 4  # 1/8 of 28, rounded
    assert len({(int(r), int(c)) for r, c in zip(rows, cols)}) > 1


def test_cutout_zeroes_one_square_of_half_the_side_at_most():
    out = cutout(torch.ones(64, 1, 8, 8))
    zeroed = (out == 0).sum(dim=(1, 2, 3))
    assert (zeroed <= 16).all() and (zeroed > 0).all()
    assert set(out.unique().tolist()) <= {0.0, 1.0}


def test_color_jitter_changes_each_images_colours_but_not_where_its_pixels_are():
    x = torch.rand(BATCH, 3, 8, 8, requires_grad=True)
    out = color(x)
    assert out.shape == x.shape
    # one affine map of the channel values per image: equal pixels stay equal, the picture does not move
    twin = x.detach().clone()
    twin[:, :, 7, 7] = twin[:, :, 0, 0]
    torch.manual_seed(0)
    a = color(twin)
    assert torch.allclose(a[:, :, 7, 7], a[:, :, 0, 0])
    assert not torch.allclose(out, x)
    shifts = (out - x).mean(dim=(1, 2, 3))
    assert len(set(shifts.detach().round(decimals=4).tolist())) > 1  # drawn per image, not per batch
    out.sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0


def test_color_jitter_keeps_grey_images_grey():
    grey = torch.rand(BATCH, 1, 8, 8).expand(BATCH, 3, 8, 8)
    out = color(grey)
    assert torch.allclose(out[:, 0], out[:, 1]) and torch.allclose(out[:, 1], out[:, 2])


def test_diff_augment_rejects_an_unknown_operation():
    with pytest.raises(ValueError, match="colour"):
        diff_augment(torch.rand(2, 1, 8, 8), ["colour"])
