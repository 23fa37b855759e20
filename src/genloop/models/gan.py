"""A DCGAN-style generator and discriminator at the data's native size (no upscaling to 64x64)."""
from __future__ import annotations

import torch
from torch import nn

from genloop.models.shapes import base_grid


class Generator(nn.Module):
    """z -> image in [0, 1] (tanh rescaled), the same range as the VAE decoder so both serve alike."""

    def __init__(self, latent_dim: int, channels: int, height: int, width: int):
        super().__init__()
        self.latent_dim, self.channels = latent_dim, channels
        self.grid = base_grid(height, width)
        self.fc = nn.Sequential(
            nn.Linear(latent_dim, 2 * channels * self.grid[0] * self.grid[1], bias=False),
            nn.BatchNorm1d(2 * channels * self.grid[0] * self.grid[1]),
            nn.ReLU(True),
        )
        self.net = nn.Sequential(
            nn.ConvTranspose2d(2 * channels, channels, 4, stride=2, padding=1, bias=False),
            nn.BatchNorm2d(channels),
            nn.ReLU(True),
            nn.ConvTranspose2d(channels, channels // 2, 4, stride=2, padding=1, bias=False),
            nn.BatchNorm2d(channels // 2),
            nn.ReLU(True),
            nn.Conv2d(channels // 2, 1, 3, padding=1),
            nn.Tanh(),
        )

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        h = self.fc(z).view(-1, 2 * self.channels, *self.grid)
        return (self.net(h) + 1.0) * 0.5


class Discriminator(nn.Module):
    """Image in [0, 1] -> one logit per image."""

    def __init__(self, channels: int, height: int, width: int):
        super().__init__()
        gh, gw = base_grid(height, width)
        self.net = nn.Sequential(
            nn.Conv2d(1, channels // 2, 4, stride=2, padding=1),
            nn.LeakyReLU(0.2, True),
            nn.Conv2d(channels // 2, channels, 4, stride=2, padding=1, bias=False),
            nn.BatchNorm2d(channels),
            nn.LeakyReLU(0.2, True),
            nn.Flatten(),
            nn.Linear(channels * gh * gw, 1),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x * 2.0 - 1.0).view(-1)


def init_weights(module: nn.Module) -> None:
    """DCGAN initialisation: N(0, 0.02) convolutions, N(1, 0.02) batch-norm scales."""
    if isinstance(module, (nn.Conv2d, nn.ConvTranspose2d, nn.Linear)):
        nn.init.normal_(module.weight, 0.0, 0.02)
        if module.bias is not None:
            nn.init.zeros_(module.bias)
    elif isinstance(module, (nn.BatchNorm2d, nn.BatchNorm1d)):
        nn.init.normal_(module.weight, 1.0, 0.02)
        nn.init.zeros_(module.bias)
