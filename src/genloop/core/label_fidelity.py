"""Label fidelity of a class-conditional generator, and the labels it is sampled with.

Label fidelity of class k: the share of samples generated for label k that the evaluation classifier
puts in class k; its floor is the same share on held-out real images of class k (the classifier's
per-class accuracy), what a generator returning real images would score. Pure functions; the metric
names are genloop.core.metric_names'.
"""
from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import torch

def trained_classes(labels: np.ndarray | torch.Tensor) -> list[int]:
    """The sorted distinct labels of a training set: what a conditional model is trained (and served) on."""
    return sorted(int(c) for c in np.unique(np.asarray(labels)))


def draw_labels(train_labels: np.ndarray | torch.Tensor, n: int, seed: int) -> torch.Tensor:
    """``n`` labels drawn with replacement from the training labels (so from their class distribution), seeded."""
    labels = torch.as_tensor(np.asarray(train_labels), dtype=torch.long)
    if len(labels) == 0:
        raise ValueError("drawing labels needs a non-empty training label set")
    return labels[torch.randint(len(labels), (n,), generator=torch.Generator().manual_seed(seed))]


def per_class_labels(classes: list[int], per_class: int) -> torch.Tensor:
    """``per_class`` copies of each class, class by class: [c0]*n + [c1]*n + ..."""
    return torch.tensor(classes, dtype=torch.long).repeat_interleave(per_class)


def label_fidelity(predicted: torch.Tensor | np.ndarray, labels: torch.Tensor | np.ndarray,
                   classes: list[int]) -> tuple[dict[int, float], float]:
    """(per class k, the share of items labelled k that are predicted k; their unweighted mean over
    ``classes``). ``predicted`` are class predictions (e.g. the classifier's argmax)."""
    predicted, labels = np.asarray(predicted).astype(np.int64), np.asarray(labels).astype(np.int64)
    if predicted.shape != labels.shape:
        raise ValueError(f"{len(predicted)} predictions for {len(labels)} labels")
    per_class: dict[int, float] = {}
    for k in classes:
        mine = labels == k
        if not mine.any():
            raise ValueError(f"no item is labelled {k}; label fidelity needs every trained class")
        per_class[int(k)] = float((predicted[mine] == k).mean())
    return per_class, float(np.mean(list(per_class.values())))


@torch.no_grad()
def draw_blocks(sampler: torch.nn.Module, latent_dim: int, n: int, seed: int, labels: torch.Tensor | None = None,
                batch_size: int = 1024) -> Iterator[torch.Tensor]:
    """``n`` images in [0, 1] from a z (or, given ``labels``, a (z, label)) sampler, ``batch_size`` at a time;
    z ~ N(0, I) from ``torch.Generator().manual_seed(seed)``, drawn at once, so the images do not depend on
    ``batch_size`` and a caller may search them as they come without holding them all."""
    z = torch.randn(n, latent_dim, generator=torch.Generator().manual_seed(seed))
    device = next(iter(sampler.parameters()), torch.zeros(())).device
    for start in range(0, n, batch_size):
        zb = z[start:start + batch_size].to(device)
        out = sampler(zb) if labels is None else sampler(zb, labels[start:start + batch_size].to(device))
        yield out.float().cpu().clamp(0, 1)


def conditional_samples(sampler: torch.nn.Module, labels: torch.Tensor, latent_dim: int, seed: int,
                        batch_size: int = 1024) -> torch.Tensor:
    """Images in [0, 1] from a (z, label) sampler, z ~ N(0, I) from ``torch.Generator().manual_seed(seed)``."""
    return torch.cat(list(draw_blocks(sampler, latent_dim, len(labels), seed, labels, batch_size)))
