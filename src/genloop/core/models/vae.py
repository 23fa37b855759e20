"""VAEs with a Bernoulli likelihood on [0, 1] pixels (as in pytorch/examples): a convolutional one
and the examples' MLP (784-400-20 on 28x28). Both decoders are z -> image modules, exported alone,
optionally behind a ``LatentAffine`` fitted to the training posterior (``PriorDecoder``)."""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from genloop.core.models.shapes import base_grid, crop, pad


class Decoder(nn.Module):
    """z -> image (N, image_channels, H, W) in [0, 1]; exported alone to ONNX (no sampling inside).

    ``channels`` is the width of the network (feature maps), ``image_channels`` the image's (1 or 3)."""

    def __init__(self, latent_dim: int, channels: int, height: int, width: int, extra_convs: int = 0,
                 image_channels: int = 1):
        super().__init__()
        self.latent_dim, self.channels, self.height, self.width = latent_dim, channels, height, width
        self.grid = base_grid(height, width)
        self.fc = nn.Linear(latent_dim, 2 * channels * self.grid[0] * self.grid[1])
        # extra_convs: 3x3 conv + ReLU layers added at the 1/4 and 1/2 resolutions (cheap there);
        # 0 keeps the original layer list, so older checkpoints load unchanged.
        low = [m for _ in range(extra_convs) for m in (nn.Conv2d(2 * channels, 2 * channels, 3, padding=1), nn.ReLU())]
        mid = [m for _ in range(extra_convs) for m in (nn.Conv2d(channels, channels, 3, padding=1), nn.ReLU())]
        self.net = nn.Sequential(
            nn.ReLU(),
            *low,
            nn.ConvTranspose2d(2 * channels, channels, 4, stride=2, padding=1),
            nn.ReLU(),
            *mid,
            nn.ConvTranspose2d(channels, channels, 4, stride=2, padding=1),
            nn.ReLU(),
            nn.Conv2d(channels, image_channels, 3, padding=1),
        )

    def logits(self, z: torch.Tensor) -> torch.Tensor:
        h = self.fc(z).view(-1, 2 * self.channels, *self.grid)
        return crop(self.net(h), self.height, self.width)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.logits(z))


class VAEBase(nn.Module):
    """What every genloop VAE shares: the reparameterisation trick and the forward pass around the subclass's
    ``encode(x, *y)`` and ``decoder.logits(z, *y)`` (``y``: the label of a conditional VAE, else nothing)."""

    def reparameterize(self, mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
        return mu + torch.randn_like(mu) * torch.exp(0.5 * logvar)

    def forward(self, x: torch.Tensor, *y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        mu, logvar = self.encode(x, *y)
        return self.decoder.logits(self.reparameterize(mu, logvar), *y), mu, logvar


class ConvVAE(VAEBase):
    def __init__(self, latent_dim: int, channels: int, height: int, width: int, decoder_convs: int = 0,
                 image_channels: int = 1):
        super().__init__()
        self.latent_dim, self.height, self.width = latent_dim, height, width
        gh, gw = base_grid(height, width)
        self.encoder = nn.Sequential(
            nn.Conv2d(image_channels, channels, 3, padding=1),
            nn.ReLU(),
            nn.Conv2d(channels, channels, 4, stride=2, padding=1),
            nn.ReLU(),
            nn.Conv2d(channels, 2 * channels, 4, stride=2, padding=1),
            nn.ReLU(),
            nn.Flatten(),
        )
        self.mu = nn.Linear(2 * channels * gh * gw, latent_dim)
        self.logvar = nn.Linear(2 * channels * gh * gw, latent_dim)
        self.decoder = Decoder(latent_dim, channels, height, width, decoder_convs, image_channels)

    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h = self.encoder(pad(x, self.height, self.width))
        return self.mu(h), self.logvar(h)


class MLPDecoder(nn.Module):
    """z -> hidden -> C*H*W pixels, reshaped to (N, C, H, W) so it exports and serves like the conv decoder."""

    def __init__(self, latent_dim: int, hidden: int, height: int, width: int, image_channels: int = 1):
        super().__init__()
        self.latent_dim, self.image_channels, self.height, self.width = latent_dim, image_channels, height, width
        self.fc3 = nn.Linear(latent_dim, hidden)
        self.fc4 = nn.Linear(hidden, image_channels * height * width)

    def logits(self, z: torch.Tensor) -> torch.Tensor:
        return self.fc4(F.relu(self.fc3(z))).view(-1, self.image_channels, self.height, self.width)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.logits(z))


class MLPVAE(VAEBase):
    """The pytorch/examples VAE (fc1, fc21, fc22 | fc3, fc4), sized from the image (C*H*W) instead of 784."""

    def __init__(self, latent_dim: int, hidden: int, height: int, width: int, image_channels: int = 1):
        super().__init__()
        if height < 1 or width < 1:
            raise ValueError(f"image sides must be positive (got {height}x{width})")
        self.latent_dim, self.pixels = latent_dim, image_channels * height * width
        self.fc1 = nn.Linear(self.pixels, hidden)
        self.fc21 = nn.Linear(hidden, latent_dim)
        self.fc22 = nn.Linear(hidden, latent_dim)
        self.decoder = MLPDecoder(latent_dim, hidden, height, width, image_channels)

    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h1 = F.relu(self.fc1(x.reshape(-1, self.pixels)))
        return self.fc21(h1), self.fc22(h1)


VAE = ConvVAE | MLPVAE


class LatentAffine(nn.Module):
    """z -> mean + scale @ z: maps N(0, I) onto N(mean, scale scale^T); identity until ``fit``.

    With mean and scale fitted to the training set's posterior means (ex-post density estimation,
    Ghosh et al. 2020), z ~ N(0, I) lands where the decoder was trained instead of in the holes
    between the posteriors that N(0, I) also covers: the samples look like what the model learnt.
    """

    def __init__(self, latent_dim: int):
        super().__init__()
        self.register_buffer("mean", torch.zeros(latent_dim))
        self.register_buffer("scale", torch.eye(latent_dim))

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.mean + z @ self.scale.T

    @torch.no_grad()
    def fit_moments(self, count: int, total: torch.Tensor, outer: torch.Tensor,
                    variance_total: torch.Tensor | None = None, ridge: float = 1e-5) -> None:
        """Fit N(mean, cov) from ``count`` vectors' sum and sum of outer products (float64 preferred).

        ``variance_total`` (the posterior variances' sum) adds their mean to the diagonal: the moments
        of the aggregate posterior (mixture of the q(z|x)) rather than of the means alone. ``ridge``
        times the mean variance is added to the diagonal so the Cholesky factor exists."""
        if count < 2:
            raise ValueError(f"fitting a Gaussian needs at least two latent vectors (got {count})")
        mean = total / count
        cov = (outer - count * torch.outer(mean, mean)) / (count - 1)
        if variance_total is not None:
            cov = cov + torch.diag(variance_total / count)
        cov = (cov + cov.T) / 2
        cov += torch.eye(len(mean), dtype=cov.dtype, device=cov.device) * ridge * max(float(cov.diagonal().mean()), 1e-12)
        self.mean.copy_(mean.to(self.mean))
        self.scale.copy_(torch.linalg.cholesky(cov).to(self.scale))

    def fit(self, latents: torch.Tensor, variances: torch.Tensor | None = None) -> None:
        """Fit to rows of ``latents`` (N, latent_dim), plus their posterior ``variances`` if given."""
        z = latents.detach().double()
        total_var = None if variances is None else variances.detach().double().sum(0)
        self.fit_moments(len(z), z.sum(0), z.T @ z, total_var)


class PriorDecoder(nn.Module):
    """The exported sampler with a fitted prior: decoder(prior(z)), still fed z ~ N(0, I), so
    serving, ONNX export and evaluation are unchanged."""

    def __init__(self, prior: LatentAffine, decoder: nn.Module):
        super().__init__()
        self.prior, self.decoder = prior, decoder

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.decoder(self.prior(z))


def kl_weight(beta: float, warmup: float, progress: float) -> float:
    """β·min(1, progress / warmup): the KL term's weight after ``progress`` (0..1) of training, rising
    linearly from 0 over the first ``warmup`` fraction (KL annealing, Bowman et al. 2016)."""
    if warmup <= 0:
        return beta
    return beta * min(1.0, max(progress, 0.0) / warmup)


def lr_factor(schedule: str, progress: float) -> float:
    """The learning rate's multiplier after ``progress`` (0..1) of training: 1, or a cosine decay to 0."""
    if schedule == "constant":
        return 1.0
    if schedule == "cosine":
        return 0.5 * (1.0 + math.cos(math.pi * min(max(progress, 0.0), 1.0)))
    raise ValueError(f"unknown learning-rate schedule {schedule!r}; expected 'constant' or 'cosine'")


def loss_function(recon_logits: torch.Tensor, x: torch.Tensor, mu: torch.Tensor, logvar: torch.Tensor,
                  beta: float = 1.0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Negative ELBO summed over the batch: BCE(x, x̂) + β·KL(q(z|x) || N(0, I)); returns (loss, bce, kl)."""
    bce = F.binary_cross_entropy_with_logits(recon_logits, x, reduction="sum")
    kl = -0.5 * torch.sum(1 + logvar - mu.pow(2) - logvar.exp())
    return bce + beta * kl, bce, kl


def loss_per_image(recon_logits: torch.Tensor, x: torch.Tensor, mu: torch.Tensor, logvar: torch.Tensor,
                   beta: float = 1.0) -> torch.Tensor:
    """``loss_function``'s loss image by image, shape (batch,): what per-image gradient clipping
    (differentially private training) needs; it sums to ``loss_function(...)[0]``."""
    bce = F.binary_cross_entropy_with_logits(recon_logits, x, reduction="none").flatten(1).sum(1)
    kl = -0.5 * torch.sum(1 + logvar - mu.pow(2) - logvar.exp(), dim=1)
    return bce + beta * kl


@torch.no_grad()
def negative_elbo_nats(vae: VAE, images: torch.Tensor, seed: int = 0, batch_size: int = 1000,
                      labels: torch.Tensor | None = None) -> float:
    """The pytorch/examples "test set loss": mean over images of BCE-sum + KL (β = 1), one z per image.

    A negative ELBO in nats per image (lower is better); the noise comes from its own seeded generator,
    drawn for all images at once, so the result depends on neither the global RNG nor ``batch_size``.
    With ``labels`` (a conditional VAE) it bounds -log p(x | y).
    """
    if len(images) == 0:
        raise ValueError("negative_elbo_nats needs at least one image")
    was_training = vae.training
    vae.eval()
    generator = torch.Generator(device=images.device).manual_seed(seed)
    noise = torch.randn(len(images), vae.latent_dim, generator=generator, device=images.device)
    total = 0.0
    conditions = [()] * len(noise.split(batch_size)) if labels is None else [(y,) for y in labels.split(batch_size)]
    for x, eps, y in zip(images.split(batch_size), noise.split(batch_size), conditions):
        mu, logvar = vae.encode(x, *y)
        logits = vae.decoder.logits(mu + eps * torch.exp(0.5 * logvar), *y)
        total += float(loss_function(logits, x, mu, logvar, beta=1.0)[0])
    vae.train(was_training)
    return total / len(images)
