"""The two reference generators of ``quality_vs_reference.py``, written as pytorch/examples writes them.

- ``dcgan/main.py`` shrunk from 64x64 to MNIST's native 28x28: nz 100, ngf = ndf = 64, BCE on a
  sigmoid discriminator, Adam 2e-4 with betas (0.5, 0.999), batch 128, images scaled to [-1, 1];
  the examples' layer pattern with one upsampling stage fewer (7 -> 14 -> 28).
- ``vae/main.py``: the 784-400-20 MLP VAE, BCE-sum + KL, Adam 1e-3, batch 128.

Deliberately independent of genloop (no genloop import), so a change to genloop's models cannot
move the baseline. The only departure from the examples' loops: the images are held as one tensor
and shuffled with ``randperm`` each epoch instead of going through a DataLoader of PIL images
(``train_throughput.py`` measures that input pipeline), so both arms are compared on model and
recipe, not on data loading. No training step starts after the wall-clock budget.
"""
from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

NZ, NGF, NDF, GAN_BATCH, GAN_LR, GAN_BETAS = 100, 64, 64, 128, 2e-4, (0.5, 0.999)
VAE_LATENT, VAE_HIDDEN, VAE_BATCH, VAE_LR = 20, 400, 128, 1e-3


class DCGANGenerator(nn.Module):
    """z (N, nz) -> image (N, 1, 28, 28) in [-1, 1]."""

    def __init__(self, nz: int = NZ, ngf: int = NGF):
        super().__init__()
        self.nz = nz
        self.main = nn.Sequential(
            nn.ConvTranspose2d(nz, ngf * 4, 7, 1, 0, bias=False),  # 7x7
            nn.BatchNorm2d(ngf * 4),
            nn.ReLU(True),
            nn.ConvTranspose2d(ngf * 4, ngf * 2, 4, 2, 1, bias=False),  # 14x14
            nn.BatchNorm2d(ngf * 2),
            nn.ReLU(True),
            nn.ConvTranspose2d(ngf * 2, 1, 4, 2, 1, bias=False),  # 28x28
            nn.Tanh(),
        )

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.main(z.view(-1, self.nz, 1, 1))


class DCGANDiscriminator(nn.Module):
    """Image (N, 1, 28, 28) in [-1, 1] -> probability of real (N,)."""

    def __init__(self, ndf: int = NDF):
        super().__init__()
        self.main = nn.Sequential(
            nn.Conv2d(1, ndf * 2, 4, 2, 1, bias=False),  # 14x14
            nn.LeakyReLU(0.2, inplace=True),
            nn.Conv2d(ndf * 2, ndf * 4, 4, 2, 1, bias=False),  # 7x7
            nn.BatchNorm2d(ndf * 4),
            nn.LeakyReLU(0.2, inplace=True),
            nn.Conv2d(ndf * 4, 1, 7, 1, 0, bias=False),  # 1x1
            nn.Sigmoid(),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.main(x).view(-1)


def weights_init(m: nn.Module) -> None:
    """dcgan/main.py's initialisation: N(0, 0.02) convolutions, N(1, 0.02) batch-norm scales."""
    classname = m.__class__.__name__
    if classname.find("Conv") != -1:
        nn.init.normal_(m.weight.data, 0.0, 0.02)
    elif classname.find("BatchNorm") != -1:
        nn.init.normal_(m.weight.data, 1.0, 0.02)
        nn.init.constant_(m.bias.data, 0)


class ExamplesVAE(nn.Module):
    """vae/main.py's VAE; ``decode`` returns pixel probabilities (N, 784)."""

    def __init__(self, pixels: int = 784, hidden: int = VAE_HIDDEN, latent: int = VAE_LATENT):
        super().__init__()
        self.pixels, self.latent_dim = pixels, latent
        self.fc1 = nn.Linear(pixels, hidden)
        self.fc21 = nn.Linear(hidden, latent)
        self.fc22 = nn.Linear(hidden, latent)
        self.fc3 = nn.Linear(latent, hidden)
        self.fc4 = nn.Linear(hidden, pixels)

    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h1 = F.relu(self.fc1(x))
        return self.fc21(h1), self.fc22(h1)

    def reparameterize(self, mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
        std = torch.exp(0.5 * logvar)
        eps = torch.randn_like(std)
        return mu + eps * std

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        h3 = F.relu(self.fc3(z))
        return torch.sigmoid(self.fc4(h3))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        mu, logvar = self.encode(x.view(-1, self.pixels))
        z = self.reparameterize(mu, logvar)
        return self.decode(z), mu, logvar


def vae_loss_function(recon_x: torch.Tensor, x: torch.Tensor, mu: torch.Tensor,
                      logvar: torch.Tensor) -> torch.Tensor:
    """Reconstruction + KL divergence losses summed over all elements and batch (vae/main.py)."""
    bce = F.binary_cross_entropy(recon_x, x.view(-1, recon_x.shape[1]), reduction="sum")
    kld = -0.5 * torch.sum(1 + logvar - mu.pow(2) - logvar.exp())
    return bce + kld


@dataclass(frozen=True)
class Trained:
    """A reference arm after its budget: ``sample(z)`` gives images in [0, 1] (N, 1, H, W)."""

    model: nn.Module
    sample: Callable[[torch.Tensor], torch.Tensor]
    latent_dim: int
    images_seen: int
    seconds: float
    epochs: float


def _synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _train_for(budget_s: float, n: int, batch_size: int, step: Callable[[torch.Tensor], None],
               generator: torch.Generator, device: torch.device) -> tuple[int, float]:
    """Shuffled mini-batch epochs of ``step(indices)`` until ``budget_s`` of wall clock is spent."""
    started = time.perf_counter()
    seen = 0
    while True:
        for idx in torch.randperm(n, generator=generator).split(batch_size):
            _synchronize(device)
            if time.perf_counter() - started >= budget_s:
                return seen, time.perf_counter() - started
            step(idx)
            seen += len(idx)


def train_dcgan(data: torch.Tensor, budget_s: float, device: torch.device, seed: int) -> Trained:
    """dcgan/main.py's training loop on ``data`` (N, 1, 28, 28) in [0, 1] for ``budget_s`` seconds."""
    started = time.perf_counter()
    torch.manual_seed(seed)
    real_data = (data * 2.0 - 1.0).to(device)  # transforms.Normalize((0.5,), (0.5,))
    net_g, net_d = DCGANGenerator().to(device), DCGANDiscriminator().to(device)
    net_g.apply(weights_init)
    net_d.apply(weights_init)
    criterion = nn.BCELoss()
    optimizer_d = torch.optim.Adam(net_d.parameters(), lr=GAN_LR, betas=GAN_BETAS)
    optimizer_g = torch.optim.Adam(net_g.parameters(), lr=GAN_LR, betas=GAN_BETAS)
    real_label, fake_label = 1.0, 0.0

    def step(idx: torch.Tensor) -> None:
        # (1) Update D network: maximize log(D(x)) + log(1 - D(G(z)))
        net_d.zero_grad()
        real_cpu = real_data[idx]
        batch_size = real_cpu.size(0)
        label = torch.full((batch_size,), real_label, dtype=real_cpu.dtype, device=device)
        output = net_d(real_cpu)
        err_d_real = criterion(output, label)
        err_d_real.backward()
        noise = torch.randn(batch_size, NZ, 1, 1, device=device)
        fake = net_g(noise)
        label.fill_(fake_label)
        output = net_d(fake.detach())
        err_d_fake = criterion(output, label)
        err_d_fake.backward()
        optimizer_d.step()
        # (2) Update G network: maximize log(D(G(z)))
        net_g.zero_grad()
        label.fill_(real_label)
        output = net_d(fake)
        err_g = criterion(output, label)
        err_g.backward()
        optimizer_g.step()
        (err_d_real + err_d_fake).item(), err_g.item()  # the examples log both every step

    remaining = budget_s - (time.perf_counter() - started)
    seen, _ = _train_for(remaining, len(real_data), GAN_BATCH, step, torch.Generator().manual_seed(seed), device)
    seconds = time.perf_counter() - started
    net_g.eval()

    def sample(z: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            return (net_g(z.to(device)) + 1.0) * 0.5

    return Trained(net_g, sample, NZ, seen, seconds, seen / len(real_data))


def train_vae(data: torch.Tensor, budget_s: float, device: torch.device, seed: int) -> Trained:
    """vae/main.py's training loop on ``data`` (N, 1, H, W) in [0, 1] for ``budget_s`` seconds."""
    started = time.perf_counter()
    torch.manual_seed(seed)
    height, width = int(data.shape[2]), int(data.shape[3])
    flat = data.reshape(len(data), -1).to(device)
    model = ExamplesVAE(pixels=height * width).to(device)
    optimizer = torch.optim.Adam(model.parameters(), lr=VAE_LR)
    model.train()

    def step(idx: torch.Tensor) -> None:
        x = flat[idx]
        optimizer.zero_grad()
        recon_batch, mu, logvar = model(x)
        loss = vae_loss_function(recon_batch, x, mu, logvar)
        loss.backward()
        loss.item()  # train_loss += loss.item()
        optimizer.step()

    remaining = budget_s - (time.perf_counter() - started)
    seen, _ = _train_for(remaining, len(flat), VAE_BATCH, step, torch.Generator().manual_seed(seed), device)
    seconds = time.perf_counter() - started
    model.eval()

    def sample(z: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            return model.decode(z.to(device)).view(-1, 1, height, width)

    return Trained(model, sample, VAE_LATENT, seen, seconds, seen / len(flat))


@torch.no_grad()
def negative_elbo_nats(model: ExamplesVAE, images: torch.Tensor, seed: int = 0, batch_size: int = 1000) -> float:
    """The examples' test loss in nats per image: BCE-sum + KL with one seeded z per image.

    The same formula and noise scheme as ``genloop.core.models.vae.negative_elbo_nats``, so the two VAEs'
    figures compare directly.
    """
    if len(images) == 0:
        raise ValueError("negative_elbo_nats needs at least one image")
    model.eval()
    device = next(model.parameters()).device
    flat = images.reshape(len(images), -1).float().to(device)
    generator = torch.Generator(device=device).manual_seed(seed)
    noise = torch.randn(len(flat), model.latent_dim, generator=generator, device=device)
    total = 0.0
    for x, eps in zip(flat.split(batch_size), noise.split(batch_size)):
        mu, logvar = model.encode(x)
        recon = model.decode(mu + eps * torch.exp(0.5 * logvar))
        total += float(vae_loss_function(recon, x, mu, logvar))
    return total / len(flat)
