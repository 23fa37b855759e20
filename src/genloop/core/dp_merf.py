"""DP-MERF: a class-conditional generator trained against a privatised mean embedding of the data.

Harder, Adamczewski & Park 2021 ("DP-MERF: Differentially Private Mean Embeddings with Random
Features"). The data are touched once: every image x with label y is mapped to

    v(x, y) = [phi(x) ⊗ onehot(y),  c * onehot(y)]

where phi is a random Fourier feature map (Rahimi & Recht 2007) of a Gaussian kernel, scaled so that
||phi(x)|| = 1 exactly, and c = ``count_weight``. The per-class sums of v (the unnormalised
per-class mean embeddings and the class counts) are released ONCE with the Gaussian mechanism.
The generator then trains on that released vector only (an MMD loss between the generated and the
noisy per-class mean embeddings), which is post-processing: no further privacy cost, however long
it trains.

Sensitivity. Adjacency is add/remove one image (the notion Opacus' DP-SGD accounting uses), so the
released sum changes by one v(x, y), whose norm is sqrt(||phi||² + c²) = sqrt(1 + c²): the L2
sensitivity. (Replace-one adjacency, DP-MERF's own, doubles it: ``adjacency="replace"``.) The noise
is N(0, (sigma * sensitivity)² I) with sigma from the analytic Gaussian mechanism (Balle & Wang
2018, Theorem 8): the smallest sigma with
    Phi(Δ/(2s) - ε s/Δ) - e^ε Phi(-Δ/(2s) - ε s/Δ) <= δ,   s = sigma * Δ,
which is exact for one Gaussian release (and valid for every ε, unlike the classic
sqrt(2 ln(1.25/δ)) / ε, which needs ε < 1 and is looser).

Beyond the paper:
- an unbiased MMD estimate in the generator's loss (``mmd_loss``): the plain one rewards a small
  batch's samples for sitting together;
- label-balanced training: the generator draws every class equally and matches each class's mean
  embedding (noisy sum / noisy count), so a rare class is fitted as well as a common one; samples
  for release draw labels from the noisy class shares;
- optional sums of kernels (``View``s: several bandwidths, average-pooled low-resolution images),
  each view's features weighted so the total norm stays 1. On MNIST t10k at ε = 10 a three-view
  sum gave a better FID but no better TSTR than one full-resolution kernel (one seed each), so the
  default is one kernel.

Pure torch; no I/O. Images are float (N, C, H, W) in [0, 1]; generators are (z, label) -> image.
"""
from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

ADJACENCIES = ("add_remove", "replace")


# ---- Gaussian mechanism calibration ---------------------------------------------------------------

def _phi(t: float) -> float:
    """Standard normal CDF."""
    return 0.5 * math.erfc(-t / math.sqrt(2.0))


def gaussian_delta(sigma: float, epsilon: float) -> float:
    """δ(ε) of the Gaussian mechanism with noise multiplier ``sigma`` (noise std / sensitivity): exact
    (Balle & Wang 2018, Theorem 8), the hockey-stick divergence of N(1, sigma²) from N(0, sigma²)."""
    if sigma <= 0:
        return 1.0
    a, b = 1.0 / (2.0 * sigma), epsilon * sigma
    upper = _phi(a - b)
    lower = math.exp(epsilon) * _phi(-a - b) if epsilon < 700 else 0.0
    return max(0.0, upper - lower)


def analytic_sigma(epsilon: float, delta: float) -> float:
    """The smallest noise multiplier whose Gaussian mechanism is (ε, δ)-DP (bisection on ``gaussian_delta``)."""
    check_budget(epsilon, delta)
    lo, hi = 1e-6, 1.0
    while gaussian_delta(hi, epsilon) > delta:
        hi *= 2.0
    for _ in range(200):
        mid = 0.5 * (lo + hi)
        if gaussian_delta(mid, epsilon) > delta:
            lo = mid
        else:
            hi = mid
    return hi


def classic_sigma(epsilon: float, delta: float) -> float:
    """Dwork & Roth's sqrt(2 ln(1.25/δ)) / ε (their Theorem A.1 holds for ε < 1); for comparison."""
    check_budget(epsilon, delta)
    return math.sqrt(2.0 * math.log(1.25 / delta)) / epsilon


def check_budget(epsilon: float, delta: float) -> None:
    """ε > 0 and 0 < δ < 1, said up front with the field's name."""
    if not (isinstance(epsilon, (int, float)) and math.isfinite(epsilon) and epsilon > 0):
        raise ValueError(f"epsilon must be a positive finite number (got {epsilon!r})")
    if not (isinstance(delta, (int, float)) and 0 < delta < 1):
        raise ValueError(f"delta must lie strictly between 0 and 1 (got {delta!r})")


def sensitivity(count_weight: float, adjacency: str = "add_remove") -> float:
    """L2 sensitivity of the released per-class sums of v(x, y) (||phi|| = 1, count entry c)."""
    if adjacency not in ADJACENCIES:
        raise ValueError(f"adjacency must be one of {ADJACENCIES} (got {adjacency!r})")
    if count_weight <= 0:
        raise ValueError(f"count_weight must be positive (got {count_weight!r})")
    norm = math.sqrt(1.0 + count_weight ** 2)
    return norm if adjacency == "add_remove" else 2.0 * norm


# ---- random Fourier features ----------------------------------------------------------------------

@dataclass(frozen=True)
class View:
    """One Gaussian kernel on average-pooled images: ``pool`` x ``pool`` pooling (1 = full resolution),
    bandwidth ``bandwidth * sqrt(pixels)`` (a per-pixel RMS distance, so it means the same at every
    resolution and needs no data), ``features`` random frequencies, and a share ``weight`` of the
    kernel sum."""

    pool: int = 1
    bandwidth: float = 0.3
    features: int = 2000
    weight: float = 1.0


class FeatureMap(nn.Module):
    """x -> phi(x) with ||phi(x)|| = 1 exactly: per view, sqrt(w / D) [cos(xW), sin(xW)] (weights summing
    to 1), W drawn from N(0, 1/bandwidth²) with a seeded generator (public randomness, data-free)."""

    def __init__(self, shape: Sequence[int], views: Sequence[View], seed: int):
        super().__init__()
        if not views:
            raise ValueError("a feature map needs at least one view")
        self.shape = tuple(int(s) for s in shape)
        channels, height, width = self.shape
        total = sum(v.weight for v in views)
        generator = torch.Generator().manual_seed(seed)
        self.pools = [v.pool for v in views]
        self.scales = [math.sqrt(v.weight / total / v.features) for v in views]
        for i, v in enumerate(views):
            if v.pool < 1 or height % v.pool or width % v.pool:
                raise ValueError(f"view {i}: pool {v.pool} must divide the image sides {height}x{width}")
            pixels = channels * (height // v.pool) * (width // v.pool)
            sigma = v.bandwidth * math.sqrt(pixels)
            self.register_buffer(f"w{i}", torch.randn(pixels, v.features, generator=generator) / sigma)

    @property
    def dim(self) -> int:
        return sum(2 * getattr(self, f"w{i}").shape[1] for i in range(len(self.pools)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        parts = []
        for i, (pool, scale) in enumerate(zip(self.pools, self.scales)):
            xi = F.avg_pool2d(x, pool) if pool > 1 else x
            proj = xi.flatten(1) @ getattr(self, f"w{i}")
            parts += [torch.cos(proj) * scale, torch.sin(proj) * scale]
        return torch.cat(parts, dim=1)


# ---- the one private release ----------------------------------------------------------------------

@dataclass
class Release:
    """The noisy per-class feature sums (K, F) and class counts (K,), and how they were made.

    Everything the generator's training sees; keeping it is free (it is already public)."""

    sums: torch.Tensor
    counts: torch.Tensor
    epsilon: float | None
    delta: float | None
    sigma: float  # noise multiplier (std / sensitivity); 0 without privacy
    sensitivity: float
    extra: dict = field(default_factory=dict)

    def class_means(self, min_count: float = 1.0) -> torch.Tensor:
        """Per-class mean embeddings: noisy sum / noisy count (the count floored at ``min_count``)."""
        return self.sums / self.counts.clamp_min(min_count)[:, None]

    def class_shares(self) -> torch.Tensor:
        """The label distribution to draw released samples from (noisy counts, clipped at 0)."""
        c = self.counts.clamp_min(0.0)
        return c / c.sum() if c.sum() > 0 else torch.full_like(c, 1.0 / len(c))

    def summary(self) -> dict:
        """What a model record carries about its privacy."""
        return {"epsilon": self.epsilon, "delta": self.delta, "noise_multiplier": self.sigma,
                "sensitivity": self.sensitivity, "mechanism": "analytic_gaussian", "releases": 1,
                "method": "dp_merf", **self.extra}


@torch.no_grad()
def release(features: FeatureMap, images: torch.Tensor, labels: torch.Tensor, num_classes: int,
            epsilon: float | None, delta: float | None, seed: int, count_weight: float = 0.25,
            adjacency: str = "add_remove", batch_size: int = 1000) -> Release:
    """Per-class sums of phi(x) and counts, plus N(0, (sigma Δ)²) noise for (ε, δ); ``epsilon=None``: none.

    The count entries carry weight ``count_weight`` in v(x, y) (so the noise on a count is
    sigma Δ / c); a small c spends less of the sensitivity on counts, which need little precision.
    """
    labels = labels.long()
    if len(images) != len(labels):
        raise ValueError(f"{len(images)} images but {len(labels)} labels")
    if len(labels) and (labels.min() < 0 or labels.max() >= num_classes):
        raise ValueError(f"labels must lie in 0..{num_classes - 1}")
    sums = torch.zeros(num_classes, features.dim, dtype=torch.float64)
    for x, y in zip(images.split(batch_size), labels.split(batch_size)):
        sums.index_add_(0, y, features(x.float()).double())
    counts = torch.bincount(labels, minlength=num_classes).double()
    delta_ = sensitivity(count_weight, adjacency)
    if epsilon is None:
        return Release(sums.float(), counts.float(), None, None, 0.0, delta_)
    check_budget(epsilon, delta)
    sigma = analytic_sigma(epsilon, delta)
    gen = torch.Generator().manual_seed(seed)
    std = sigma * delta_
    sums = sums + std * torch.randn(sums.shape, generator=gen, dtype=torch.float64)
    counts = counts + std / count_weight * torch.randn(counts.shape, generator=gen, dtype=torch.float64)
    return Release(sums.float(), counts.float(), float(epsilon), float(delta), sigma, delta_,
                   {"adjacency": adjacency, "count_weight": count_weight})


# ---- generators and their training (post-processing) ----------------------------------------------

class MerfGenerator(nn.Module):
    """(z, label) -> image in [0, 1], shaped (C, H, W) with H, W multiples of 4: [z, onehot(y)] through
    two linear layers to a (2c, H/4, W/4) grid, two nearest-upsampling convolutions to (C, H, W).
    Batch norm is fine here: the generator never sees private data."""

    def __init__(self, latent_dim: int, shape: Sequence[int], num_classes: int, hidden: int = 256,
                 channels: int = 32):
        super().__init__()
        self.latent_dim, self.num_classes, self.shape = latent_dim, num_classes, tuple(shape)
        c, h, w = self.shape
        if h % 4 or w % 4:
            raise ValueError(f"image sides must be multiples of 4 (got {h}x{w})")
        self.grid = (2 * channels, h // 4, w // 4)
        self.register_buffer("eye", torch.eye(num_classes), persistent=False)
        self.fc = nn.Sequential(
            nn.Linear(latent_dim + num_classes, hidden), nn.BatchNorm1d(hidden), nn.ReLU(),
            nn.Linear(hidden, math.prod(self.grid)), nn.BatchNorm1d(math.prod(self.grid)), nn.ReLU())
        self.net = nn.Sequential(
            nn.Upsample(scale_factor=2), nn.Conv2d(2 * channels, channels, 3, padding=1),
            nn.BatchNorm2d(channels), nn.ReLU(),
            nn.Upsample(scale_factor=2), nn.Conv2d(channels, c, 3, padding=1), nn.Sigmoid())

    def forward(self, z: torch.Tensor, label: torch.Tensor) -> torch.Tensor:
        h = self.fc(torch.cat([z, self.eye[label.long()]], dim=1))
        return self.net(h.view(-1, *self.grid))


def balanced_labels(batch_size: int, num_classes: int) -> torch.Tensor:
    """Each class batch_size // num_classes times (at least once)."""
    return torch.arange(num_classes).repeat_interleave(max(1, batch_size // num_classes))


def mmd_loss(features: FeatureMap, images: torch.Tensor, labels: torch.Tensor, targets: torch.Tensor,
             unbiased: bool = True) -> torch.Tensor:
    """Sum over the batch's classes of ||target - generated mean embedding||² (the random-feature MMD²).

    ``unbiased``: the generated term ||mean phi||² is estimated without each sample's own product
    (sum_{i != j} phi_i . phi_j / (B (B - 1))). The plain ||mean phi||² carries (1 - ||E phi||²) / B
    more, a reward for samples that sit together: at 50 samples a class it pulled towards one digit.
    """
    phi = features(images)
    k = targets.shape[0]
    sums = torch.zeros(k, phi.shape[1], dtype=phi.dtype).index_add(0, labels, phi)
    counts = torch.bincount(labels, minlength=k).to(phi.dtype)
    present = counts > (1 if unbiased else 0)
    sums, counts, targets = sums[present], counts[present], targets[present]
    cross = (sums * targets).sum(1) / counts
    if unbiased:
        self_sq = torch.zeros(k, dtype=phi.dtype).index_add(0, labels, phi.pow(2).sum(1))[present]
        gen_sq = (sums.pow(2).sum(1) - self_sq) / (counts * (counts - 1))
    else:
        gen_sq = sums.pow(2).sum(1) / counts ** 2
    return (targets.pow(2).sum(1) - 2 * cross + gen_sq).sum()


def train_generator(generator: nn.Module, features: FeatureMap, released: Release, steps: int,
                    batch_size: int = 500, lr: float = 1e-3, seed: int = 0, unbiased: bool = True,
                    on_step: Callable[[int, float], None] | None = None) -> nn.Module:
    """Fit ``generator`` to the released per-class mean embeddings (Adam, cosine-decayed lr).

    Only ``released`` is read: whatever this does, it spends no privacy."""
    torch.manual_seed(seed)
    targets = released.class_means()
    labels = balanced_labels(batch_size, targets.shape[0])
    opt = torch.optim.Adam(generator.parameters(), lr=lr)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, max(1, steps))
    generator.train()
    for step in range(steps):
        z = torch.randn(len(labels), generator.latent_dim)
        loss = mmd_loss(features, generator(z, labels), labels, targets, unbiased)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        if on_step is not None:
            on_step(step, float(loss.detach()))
    return generator.eval()


@torch.no_grad()
def sample(generator: nn.Module, labels: torch.Tensor, seed: int, batch_size: int = 1000) -> torch.Tensor:
    """Images (N, C, H, W) in [0, 1] for the given labels, drawn with a seeded z."""
    generator.eval()
    gen = torch.Generator().manual_seed(seed)
    out = [generator(torch.randn(len(y), generator.latent_dim, generator=gen), y)
           for y in labels.long().split(batch_size)]
    return torch.cat(out) if out else torch.empty(0)


def draw_labels(released: Release, n: int, seed: int) -> torch.Tensor:
    """n labels from the released (noisy) class shares: what a synthetic data set is labelled with."""
    gen = torch.Generator().manual_seed(seed)
    return torch.multinomial(released.class_shares(), n, replacement=True, generator=gen)
