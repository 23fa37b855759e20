"""Sample-quality metrics of a generator, as pure functions of features, logits, pixels and models.

Sample metrics compare a candidate set with the real training images: FID and KID (torchmetrics),
the Inception-Score analogue (torchmetrics, on our classifier's logits), the share of confidently
classified (recognisable) samples, k-NN precision, recall, density and coverage (Naeem et al.
2020), the class distribution, and a memorisation check in pixel space. Likelihood metrics score a
VAE on held-out images: the IWAE bound (Burda et al. 2016) and the SSIM of reconstructions. No I/O
here; ``genloop.stages.evaluate`` feeds these.
"""
from __future__ import annotations

import math
import warnings

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn


class _Given(nn.Module):
    """Hands precomputed features to torchmetrics, which otherwise wants a network to run itself."""

    def __init__(self, num_features: int):
        super().__init__()
        self.num_features = num_features

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x


def fid(reference: torch.Tensor, candidate: torch.Tensor) -> float:
    """Fréchet distance between Gaussians fitted to two feature sets (N, d)."""
    from torchmetrics.image.fid import FrechetInceptionDistance

    metric = FrechetInceptionDistance(feature=_Given(reference.shape[1]))
    metric.update(reference, real=True)
    metric.update(candidate, real=False)
    return float(metric.compute())


def kid(reference: torch.Tensor, candidate: torch.Tensor, subsets: int, subset_size: int,
        seed: int) -> tuple[float, float]:
    """Kernel Inception Distance (cubic polynomial MMD², unbiased): mean and spread over random subsets."""
    from torchmetrics.image.kid import KernelInceptionDistance

    size = min(subset_size, len(reference), len(candidate))
    with warnings.catch_warnings():  # KID warns that it keeps all features; ours are small
        warnings.simplefilter("ignore", UserWarning)
        metric = KernelInceptionDistance(feature=_Given(reference.shape[1]), subsets=subsets, subset_size=size)
    metric.update(reference, real=True)
    metric.update(candidate, real=False)
    with torch.random.fork_rng(devices=[]):  # subsets come from the global RNG
        torch.manual_seed(seed)
        mean, std = metric.compute()
    return float(mean), float(std)


def inception_score(logits: torch.Tensor, splits: int, seed: int) -> tuple[float, float]:
    """exp(E_x KL(p(y|x) || p(y))) from classifier logits, mean and std over ``splits`` groups.

    1 when every sample gets the same class distribution, the number of classes at best.
    """
    from torchmetrics.image.inception import InceptionScore

    with warnings.catch_warnings():  # it warns that it keeps all features; ours are small
        warnings.simplefilter("ignore", UserWarning)
        metric = InceptionScore(feature=_Given(logits.shape[1]), splits=max(1, min(splits, len(logits))))
    metric.update(logits.double())
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        mean, std = metric.compute()
    return float(mean), float(std) if math.isfinite(float(std)) else 0.0


def knn_radii(features: torch.Tensor, nearest_k: int, block_rows: int = 1024) -> torch.Tensor:
    """Distance from each feature vector to its ``nearest_k``-th nearest neighbour in the same set (itself excluded)."""
    k = min(nearest_k + 1, len(features))  # the smallest distance is the point itself
    return torch.cat([torch.cdist(chunk, features).topk(k, dim=1, largest=False).values[:, -1]
                      for chunk in features.split(block_rows)])


def manifold(reference: torch.Tensor, candidate: torch.Tensor, nearest_k: int,
             reference_radii: torch.Tensor | None = None, block_rows: int = 1024) -> dict[str, float]:
    """k-NN precision, recall, density and coverage of ``candidate`` features against ``reference``.

    Precision/density: how much of the candidate set lies on the real manifold (density counts how
    many real neighbourhoods hold each sample, about 1 for real data); recall/coverage: how much of
    the real manifold the candidates reach. The same figures as ``prdc.compute_prdc`` (Naeem et al.
    2020), computed in blocks with torch instead of full distance matrices and joblib workers, and
    taking the reference's k-NN radii precomputed (they are the same for every candidate set).
    """
    reference, candidate = torch.as_tensor(reference).float(), torch.as_tensor(candidate).float()
    k = max(1, min(nearest_k, len(reference) - 1, len(candidate) - 1))
    reuse = reference_radii is not None and k == nearest_k
    real_radii = reference_radii if reuse else knn_radii(reference, k, block_rows)
    fake_radii = knn_radii(candidate, k, block_rows)
    inside_real = torch.zeros(len(candidate))  # how many real k-NN balls hold each candidate
    recalled = torch.zeros(len(reference), dtype=torch.bool)  # real points inside some candidate's ball
    nearest_fake = torch.full((len(reference),), math.inf)
    start = 0
    for chunk, radii in zip(candidate.split(block_rows), fake_radii.split(block_rows)):
        d = torch.cdist(reference, chunk)  # (real, block)
        inside_real[start:start + len(chunk)] = (d < real_radii[:, None]).sum(0).float()
        recalled |= (d < radii[None, :]).any(1)
        nearest_fake = torch.minimum(nearest_fake, d.min(1).values)
        start += len(chunk)
    return {
        "precision": float((inside_real > 0).float().mean()),
        "recall": float(recalled.float().mean()),
        "density": float(inside_real.mean() / k),
        "coverage": float((nearest_fake < real_radii).float().mean()),
    }


def recognisable_share(logits: torch.Tensor, confidence: float) -> float:
    """The share of images the classifier puts in one class with probability at least ``confidence``.

    Near 1 for clean real digits; low for noise, blends of two digits and smudges, whatever FID says.
    """
    return float((torch.softmax(logits.double(), dim=1).amax(1) >= confidence).double().mean())


def class_shares(logits: torch.Tensor, num_classes: int) -> np.ndarray:
    """The share of samples the classifier assigns to each class."""
    counts = torch.bincount(logits.argmax(1), minlength=num_classes)[:num_classes]
    return (counts.double() / max(len(logits), 1)).numpy()


def label_shares(labels: np.ndarray | torch.Tensor, num_classes: int) -> np.ndarray:
    counts = np.bincount(np.asarray(labels, np.int64), minlength=num_classes)[:num_classes]
    return counts / max(counts.sum(), 1)


def total_variation(p: np.ndarray, q: np.ndarray) -> float:
    """Half the L1 distance between two distributions: 0 when equal, 1 when disjoint."""
    return float(0.5 * np.abs(np.asarray(p) - np.asarray(q)).sum())


@torch.no_grad()
def nearest_distances(candidate: torch.Tensor, reference: torch.Tensor, batch_size: int = 1024) -> np.ndarray:
    """RMS pixel distance from each candidate image to its nearest reference image (images in [0, 1])."""
    cand = candidate.reshape(len(candidate), -1).float()
    ref = reference.reshape(len(reference), -1).float()
    # distance blocks of about batch_size * 256 entries, and at least 64 rows: each cdist call copies the
    # whole reference, so a few rows per call (large images pass few rows) made it crawl
    rows = max(64, batch_size * 256 // max(len(ref), 1))
    best = [torch.cdist(chunk, ref).min(1).values for chunk in cand.split(rows)]
    return (torch.cat(best) / math.sqrt(cand.shape[1])).numpy()


def memorisation(candidate_nn: np.ndarray, real_nn: np.ndarray, percentile: float) -> dict[str, float]:
    """Whether samples sit closer to training images than fresh real images do.

    ``candidate_nn`` and ``real_nn`` are nearest-training-image distances of the samples and of
    held-out real images. A ratio of medians well below 1, or a copy share well above
    ``percentile``/100 (what real images show), points at copied training images.
    """
    real_median = float(np.median(real_nn))
    candidate_median = float(np.median(candidate_nn))
    threshold = float(np.percentile(real_nn, percentile))
    return {
        "nn_train_distance_median": candidate_median,
        "nn_train_distance_ratio": candidate_median / real_median if real_median > 0 else float("inf"),
        "train_copy_share": float(np.mean(candidate_nn < threshold)),
    }


# ---- VAE likelihood and reconstruction -----------------------------------------------------------

LOG_2PI = math.log(2 * math.pi)


@torch.no_grad()
def iwae_nll(vae: nn.Module, images: torch.Tensor, samples: int, seed: int, batch_size: int = 1024,
             labels: torch.Tensor | None = None) -> float:
    """Importance-weighted estimate of -log p(x) in nats per image, with ``samples`` draws from q(z|x).

    -log (1/k sum_i p(x|z_i) p(z_i) / q(z_i|x)), the IWAE bound: an upper bound on the NLL that
    tightens as k grows; with k = 1 it is a one-sample negative ELBO. ``vae`` needs ``encode`` and
    ``decoder.logits`` (both genloop VAEs have them). Draws ``samples`` x images rows in blocks of
    about ``batch_size``. With ``labels`` (a conditional VAE) it estimates -log p(x | y).
    """
    if len(images) == 0:
        raise ValueError("iwae_nll needs at least one image")
    was_training = vae.training
    vae.eval()
    generator = torch.Generator().manual_seed(seed)
    per_block = max(1, batch_size // samples)
    total = 0.0
    blocks = images.float().split(per_block)
    conditions = [()] * len(blocks) if labels is None else [(y,) for y in labels.split(per_block)]
    for x, y in zip(blocks, conditions):
        mu, logvar = vae.encode(x, *y)
        eps = torch.randn((samples, *mu.shape), generator=generator, dtype=mu.dtype)
        z = mu + eps * torch.exp(0.5 * logvar)  # (k, n, d)
        logits = vae.decoder.logits(z.reshape(-1, mu.shape[1]), *(c.repeat(samples) for c in y))
        target = x.unsqueeze(0).expand(samples, *x.shape).reshape(logits.shape)
        log_px_z = -F.binary_cross_entropy_with_logits(logits, target, reduction="none").flatten(1).sum(1)
        log_pz = -0.5 * (z.pow(2) + LOG_2PI).sum(-1)
        log_qz_x = -0.5 * (eps.pow(2) + logvar + LOG_2PI).sum(-1)
        log_w = log_px_z.view(samples, -1) + log_pz - log_qz_x
        total += float((math.log(samples) - torch.logsumexp(log_w, dim=0)).sum())
    vae.train(was_training)
    return total / len(images)


@torch.no_grad()
def reconstruction_ssim(vae: nn.Module, images: torch.Tensor, batch_size: int = 1024,
                        labels: torch.Tensor | None = None) -> float:
    """Mean SSIM between images and their reconstructions through the posterior mean (torchmetrics);
    a conditional VAE is given each image's ``labels``."""
    from torchmetrics.image import StructuralSimilarityIndexMeasure

    was_training = vae.training
    vae.eval()
    metric = StructuralSimilarityIndexMeasure(data_range=1.0)
    blocks = images.float().split(batch_size)
    conditions = [()] * len(blocks) if labels is None else [(y,) for y in labels.split(batch_size)]
    for x, y in zip(blocks, conditions):
        mu, _ = vae.encode(x, *y)
        metric.update(torch.sigmoid(vae.decoder.logits(mu, *y)), x)
    vae.train(was_training)
    return float(metric.compute())
