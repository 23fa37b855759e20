"""A DCGAN-style generator and discriminator at the data's native size (no upscaling to 64x64),
their two losses, and an exponential moving average of the generator's weights."""
from __future__ import annotations

import copy

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.parametrizations import spectral_norm as _spectral_norm

from genloop.core.models.shapes import base_grid, crop, pad


def upsampling(in_channels: int, out_channels: int, mode: str) -> list[nn.Module]:
    """A layer that doubles each side: a 4x4 stride-2 transposed convolution (DCGAN's), or nearest-neighbour
    upsampling then a 3x3 convolution, which leaves no checkerboard pattern (Odena et al. 2016)."""
    if mode == "nearest":
        return [nn.Upsample(scale_factor=2, mode="nearest"), nn.Conv2d(in_channels, out_channels, 3, padding=1, bias=False)]
    if mode == "transposed":
        return [nn.ConvTranspose2d(in_channels, out_channels, 4, stride=2, padding=1, bias=False)]
    raise ValueError(f"unknown upsampling {mode!r}; expected transposed or nearest")


class Generator(nn.Module):
    """z -> image (N, image_channels, H, W) in [0, 1] (tanh rescaled), the same range as the VAE decoder
    so both serve alike. ``channels`` is the network's width, ``image_channels`` the image's (1 or 3)."""

    def __init__(self, latent_dim: int, channels: int, height: int, width: int, image_channels: int = 1,
                 upsample: str = "transposed"):
        super().__init__()
        self.latent_dim, self.channels, self.height, self.width = latent_dim, channels, height, width
        self.grid = base_grid(height, width)
        self.fc = nn.Sequential(
            nn.Linear(latent_dim, 2 * channels * self.grid[0] * self.grid[1], bias=False),
            nn.BatchNorm1d(2 * channels * self.grid[0] * self.grid[1]),
            nn.ReLU(True),
        )
        self.net = nn.Sequential(
            *upsampling(2 * channels, channels, upsample),
            nn.BatchNorm2d(channels),
            nn.ReLU(True),
            *upsampling(channels, channels // 2, upsample),
            nn.BatchNorm2d(channels // 2),
            nn.ReLU(True),
            nn.Conv2d(channels // 2, image_channels, 3, padding=1),
            nn.Tanh(),
        )

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        h = self.fc(z).view(-1, 2 * self.channels, *self.grid)
        return (crop(self.net(h), self.height, self.width) + 1.0) * 0.5


class Discriminator(nn.Module):
    """Image in [0, 1] -> one logit per image.

    With ``spectral_norm`` every weight layer is spectrally normalised (Miyato et al. 2018) and the
    batch norm is dropped, as SN-GAN discriminators do. ``extra_convs`` adds that many 3x3 convolutions
    at each of its two resolutions (as SN-GAN's CIFAR discriminator does): the default one is about 30x
    cheaper than the generator, too weak a critic for varied colour images at 32x32.
    """

    def __init__(self, channels: int, height: int, width: int, spectral_norm: bool = False,
                 image_channels: int = 1, extra_convs: int = 0):
        super().__init__()
        self.height, self.width = height, width
        gh, gw = base_grid(height, width)
        sn = _spectral_norm if spectral_norm else (lambda layer: layer)

        def norm(width: int) -> nn.Module:
            return nn.Identity() if spectral_norm else nn.BatchNorm2d(width)

        def same_size(width: int) -> list[nn.Module]:
            return [layer for _ in range(extra_convs) for layer in
                    (sn(nn.Conv2d(width, width, 3, padding=1, bias=spectral_norm)), norm(width), nn.LeakyReLU(0.2, True))]

        self.net = nn.Sequential(
            sn(nn.Conv2d(image_channels, channels // 2, 4, stride=2, padding=1)),
            nn.LeakyReLU(0.2, True),
            *same_size(channels // 2),
            sn(nn.Conv2d(channels // 2, channels, 4, stride=2, padding=1, bias=spectral_norm)),
            norm(channels),
            nn.LeakyReLU(0.2, True),
            *same_size(channels),
            nn.Flatten(),
            sn(nn.Linear(channels * gh * gw, 1)),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(pad(x * 2.0 - 1.0, self.height, self.width)).view(-1)


def init_weights(module: nn.Module) -> None:
    """DCGAN initialisation: N(0, 0.02) convolutions, N(1, 0.02) batch-norm scales."""
    if isinstance(module, (nn.Conv2d, nn.ConvTranspose2d, nn.Linear)):
        weight = module.parametrizations.weight.original if hasattr(module, "parametrizations") else module.weight
        nn.init.normal_(weight, 0.0, 0.02)
        if module.bias is not None:
            nn.init.zeros_(module.bias)
    elif isinstance(module, (nn.BatchNorm2d, nn.BatchNorm1d)):
        nn.init.normal_(module.weight, 1.0, 0.02)
        nn.init.zeros_(module.bias)


def discriminator_loss(kind: str, d_real: torch.Tensor, d_fake: torch.Tensor) -> torch.Tensor:
    """``nonsaturating``: -log D(x) - log(1 - D(G(z))) (Goodfellow et al. 2014);
    ``hinge``: E[max(0, 1 - D(x))] + E[max(0, 1 + D(G(z)))] (Lim & Ye 2017)."""
    if kind == "nonsaturating":
        return (F.binary_cross_entropy_with_logits(d_real, torch.ones_like(d_real))
                + F.binary_cross_entropy_with_logits(d_fake, torch.zeros_like(d_fake)))
    if kind == "hinge":
        return F.relu(1.0 - d_real).mean() + F.relu(1.0 + d_fake).mean()
    raise ValueError(f"unknown GAN loss {kind!r}; expected 'nonsaturating' or 'hinge'")


def generator_loss(kind: str, d_gen: torch.Tensor) -> torch.Tensor:
    """``nonsaturating``: -log D(G(z)); ``hinge``: -E[D(G(z))]."""
    if kind == "nonsaturating":
        return F.binary_cross_entropy_with_logits(d_gen, torch.ones_like(d_gen))
    if kind == "hinge":
        return -d_gen.mean()
    raise ValueError(f"unknown GAN loss {kind!r}; expected 'nonsaturating' or 'hinge'")


class WeightEMA(nn.Module):
    """An exponential moving average of a module's weights, kept as a module of the same class.

    The decay ramps up as ``min(decay, (1 + n) / (10 + n))`` after ``n`` updates, so the average
    forgets the random initialisation within the first steps of a short training. Buffers (batch-norm
    statistics) are copied from the raw module; ``recalibrate_batch_norm`` re-estimates them for the
    averaged weights once training ends.
    """

    def __init__(self, model: nn.Module, decay: float):
        super().__init__()
        if not 0.0 < decay < 1.0:
            raise ValueError(f"EMA decay must be in (0, 1) (got {decay})")
        self.decay = decay
        self.module = copy.deepcopy(model).eval().requires_grad_(False)
        self.register_buffer("updates", torch.zeros((), dtype=torch.long))

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        n = int(self.updates)
        decay = min(self.decay, (1.0 + n) / (10.0 + n))
        for averaged, current in zip(self.module.parameters(), model.parameters()):
            averaged.lerp_(current.detach(), 1.0 - decay)
        for averaged, current in zip(self.module.buffers(), model.buffers()):
            averaged.copy_(current)
        self.updates += 1

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.module(z)


@torch.no_grad()
def recalibrate_batch_norm(generator: nn.Module, latent_dim: int, seed: int, batches: int = 20,
                           batch_size: int = 128) -> None:
    """Re-estimate a generator's batch-norm statistics from its own outputs ("standing statistics").

    The EMA generator's weights are an average, so the running statistics tracked for the raw
    weights do not match them; a cumulative average over ``batches`` seeded batches of z does.
    """
    norms = [m for m in generator.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    if not norms:
        return
    was_training = generator.training
    momenta = [m.momentum for m in norms]
    for m in norms:
        m.reset_running_stats()
        m.momentum = None  # cumulative average over the batches below
    generator.train()
    device = next(generator.parameters()).device
    rng = torch.Generator().manual_seed(seed)
    for _ in range(batches):
        generator(torch.randn(batch_size, latent_dim, generator=rng).to(device))
    for m, momentum in zip(norms, momenta):
        m.momentum = momentum
    generator.train(was_training)
