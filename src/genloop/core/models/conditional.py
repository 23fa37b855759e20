"""Class-conditional VAE and GAN: the same networks as genloop.core.models.vae and .gan, told the label.

Labels are class values used as indices (0 .. num_classes - 1, with num_classes = the largest trained
class + 1), so the served ``label`` input is the class itself. Every conditional sampler is a
``(z, label) -> image`` module, exported to ONNX with the two inputs ``z`` and ``label``.

- CVAE (Sohn et al. 2015): one-hot y concatenated to the encoder's input and to z before decoding;
  the loss is the unconditional negative ELBO of x given y.
- cGAN (Mirza & Osindero 2014): the generator decodes z * embed(y); the discriminator is a
  projection discriminator (Miyato & Koyama 2018): D(x, y) = psi(phi(x)) + <embed(y), phi(x)>.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.parametrizations import spectral_norm as _spectral_norm

from genloop.core.models.gan import Discriminator, Generator
from genloop.core.models.shapes import pad
from genloop.core.models.vae import ConvVAE, Decoder, LatentAffine, MLPDecoder, VAEBase


class OneHot(nn.Module):
    """y -> one-hot rows, as a lookup in an identity matrix (a Gather in ONNX; no one_hot op needed)."""

    def __init__(self, num_classes: int):
        super().__init__()
        self.num_classes = num_classes
        self.register_buffer("eye", torch.eye(num_classes), persistent=False)

    def forward(self, y: torch.Tensor) -> torch.Tensor:
        return self.eye[y.long()]


class ConditionalDecoder(nn.Module):
    """(z, y) -> image in [0, 1]: an unconditional decoder whose input is [z, one_hot(y)]."""

    def __init__(self, decoder: Decoder | MLPDecoder, latent_dim: int, num_classes: int):
        super().__init__()
        self.latent_dim, self.num_classes = latent_dim, num_classes
        self.one_hot = OneHot(num_classes)
        self.decoder = decoder  # built with latent_dim + num_classes inputs

    def logits(self, z: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return self.decoder.logits(torch.cat([z, self.one_hot(y)], dim=1))

    def forward(self, z: torch.Tensor, label: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.logits(z, label))


class ConditionalMLPVAE(VAEBase):
    """The pytorch/examples MLP VAE with one-hot y concatenated to x (encoder) and to z (decoder)."""

    def __init__(self, latent_dim: int, hidden: int, height: int, width: int, num_classes: int,
                 image_channels: int = 1):
        super().__init__()
        self.latent_dim, self.pixels, self.num_classes = latent_dim, image_channels * height * width, num_classes
        self.one_hot = OneHot(num_classes)
        self.fc1 = nn.Linear(self.pixels + num_classes, hidden)
        self.fc21 = nn.Linear(hidden, latent_dim)
        self.fc22 = nn.Linear(hidden, latent_dim)
        self.decoder = ConditionalDecoder(MLPDecoder(latent_dim + num_classes, hidden, height, width, image_channels),
                                          latent_dim, num_classes)

    def encode(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h1 = F.relu(self.fc1(torch.cat([x.reshape(-1, self.pixels), self.one_hot(y)], dim=1)))
        return self.fc21(h1), self.fc22(h1)


class ConditionalConvVAE(VAEBase):
    """The conv VAE with one-hot y concatenated to the encoder's flattened features and to z."""

    def __init__(self, latent_dim: int, channels: int, height: int, width: int, num_classes: int,
                 decoder_convs: int = 0, image_channels: int = 1):
        super().__init__()
        self.latent_dim, self.num_classes, self.height, self.width = latent_dim, num_classes, height, width
        self.one_hot = OneHot(num_classes)
        base = ConvVAE(latent_dim, channels, height, width, decoder_convs, image_channels)
        features = base.mu.in_features
        self.encoder = base.encoder
        self.mu = nn.Linear(features + num_classes, latent_dim)
        self.logvar = nn.Linear(features + num_classes, latent_dim)
        self.decoder = ConditionalDecoder(Decoder(latent_dim + num_classes, channels, height, width, decoder_convs,
                                                  image_channels), latent_dim, num_classes)

    def encode(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h = torch.cat([self.encoder(pad(x, self.height, self.width)), self.one_hot(y)], dim=1)
        return self.mu(h), self.logvar(h)


ConditionalVAE = ConditionalMLPVAE | ConditionalConvVAE


class ConditionalPriorDecoder(nn.Module):
    """decoder(mean + L z, y): one Gaussian fitted to the aggregate posterior of all classes (the label
    enters the decoder, so q(z | x, y) carries style rather than class), fed z ~ N(0, I)."""

    def __init__(self, prior: LatentAffine, decoder: ConditionalDecoder):
        super().__init__()
        self.prior, self.decoder = prior, decoder
        self.latent_dim, self.num_classes = decoder.latent_dim, decoder.num_classes

    def forward(self, z: torch.Tensor, label: torch.Tensor) -> torch.Tensor:
        return self.decoder(self.prior(z), label)


class ConditionalGenerator(nn.Module):
    """(z, y) -> image in [0, 1]: the DCGAN generator decoding z * embed(y).

    Multiplied rather than concatenated: the label reaches the generator only through z, so it cannot
    learn to ignore z (with [z, embed(y)] it drew one image per class on MNIST at 60k images)."""

    def __init__(self, latent_dim: int, channels: int, height: int, width: int, num_classes: int,
                 image_channels: int = 1, upsample: str = "transposed"):
        super().__init__()
        self.latent_dim, self.num_classes = latent_dim, num_classes
        self.embed = nn.Embedding(num_classes, latent_dim)  # N(0, 1) rows, on the scale of z
        self.generator = Generator(latent_dim, channels, height, width, image_channels, upsample)

    def forward(self, z: torch.Tensor, label: torch.Tensor) -> torch.Tensor:
        return self.generator(z * self.embed(label.long()))


class ProjectionDiscriminator(nn.Module):
    """(x, y) -> logit = psi(phi(x)) + <embed(y), phi(x)> (Miyato & Koyama 2018), phi and psi being the
    DCGAN discriminator's convolutional features and its last linear layer."""

    def __init__(self, channels: int, height: int, width: int, num_classes: int, spectral_norm: bool = False,
                 image_channels: int = 1, extra_convs: int = 0):
        super().__init__()
        self.height, self.width = height, width
        base = Discriminator(channels, height, width, spectral_norm, image_channels, extra_convs)
        self.phi, self.psi = base.net[:-1], base.net[-1]
        embed = nn.Embedding(num_classes, self.psi.in_features)
        nn.init.normal_(embed.weight, 0.0, 0.02)  # the DCGAN scale: the class term starts small
        self.embed = _spectral_norm(embed) if spectral_norm else embed

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        h = self.phi(pad(x * 2.0 - 1.0, self.height, self.width))
        return self.psi(h).view(-1) + (self.embed(y.long()) * h).sum(1)


class WithDrawnLabels(nn.Module):
    """z -> sampler(z, y) with y drawn from ``labels`` (seeded), so code written for z -> image samplers
    (batch-norm recalibration) runs a conditional one."""

    def __init__(self, sampler: nn.Module, labels: torch.Tensor, seed: int):
        super().__init__()
        self.sampler, self.labels = sampler, labels
        self.rng = torch.Generator().manual_seed(seed)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        pick = torch.randint(len(self.labels), (len(z),), generator=self.rng)
        return self.sampler(z, self.labels[pick].to(z.device))
