"""A convolutional VAE with a Bernoulli likelihood on [0, 1] pixels (as in pytorch/examples)."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from genloop.models.shapes import base_grid


class Decoder(nn.Module):
    """z -> image in [0, 1]; exported alone to ONNX (no sampling inside)."""

    def __init__(self, latent_dim: int, channels: int, height: int, width: int):
        super().__init__()
        self.latent_dim, self.channels = latent_dim, channels
        self.grid = base_grid(height, width)
        self.fc = nn.Linear(latent_dim, 2 * channels * self.grid[0] * self.grid[1])
        self.net = nn.Sequential(
            nn.ReLU(),
            nn.ConvTranspose2d(2 * channels, channels, 4, stride=2, padding=1),
            nn.ReLU(),
            nn.ConvTranspose2d(channels, channels, 4, stride=2, padding=1),
            nn.ReLU(),
            nn.Conv2d(channels, 1, 3, padding=1),
        )

    def logits(self, z: torch.Tensor) -> torch.Tensor:
        h = self.fc(z).view(-1, 2 * self.channels, *self.grid)
        return self.net(h)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.logits(z))


class ConvVAE(nn.Module):
    def __init__(self, latent_dim: int, channels: int, height: int, width: int):
        super().__init__()
        self.latent_dim = latent_dim
        gh, gw = base_grid(height, width)
        self.encoder = nn.Sequential(
            nn.Conv2d(1, channels, 3, padding=1),
            nn.ReLU(),
            nn.Conv2d(channels, channels, 4, stride=2, padding=1),
            nn.ReLU(),
            nn.Conv2d(channels, 2 * channels, 4, stride=2, padding=1),
            nn.ReLU(),
            nn.Flatten(),
        )
        self.mu = nn.Linear(2 * channels * gh * gw, latent_dim)
        self.logvar = nn.Linear(2 * channels * gh * gw, latent_dim)
        self.decoder = Decoder(latent_dim, channels, height, width)

    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h = self.encoder(x)
        return self.mu(h), self.logvar(h)

    def reparameterize(self, mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
        return mu + torch.randn_like(mu) * torch.exp(0.5 * logvar)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        mu, logvar = self.encode(x)
        return self.decoder.logits(self.reparameterize(mu, logvar)), mu, logvar


def loss_function(recon_logits: torch.Tensor, x: torch.Tensor, mu: torch.Tensor, logvar: torch.Tensor,
                  beta: float = 1.0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Negative ELBO summed over the batch: BCE(x, x̂) + β·KL(q(z|x) || N(0, I)); returns (loss, bce, kl)."""
    bce = F.binary_cross_entropy_with_logits(recon_logits, x, reduction="sum")
    kl = -0.5 * torch.sum(1 + logvar - mu.pow(2) - logvar.exp())
    return bce + beta * kl, bce, kl
