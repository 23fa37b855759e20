"""Membership inference: how well an attacker tells the images a model trained on from held-out ones.

A privacy audit beside the memorisation figures: an attack gives every image a score (higher =
"member"); its ROC AUC is 0.5 when it cannot tell members from non-members (no leak) and 1 when it
always can, and its true-positive rate at a 1% false-positive rate says how many members it picks out
while almost never accusing a non-member (Carlini et al. 2022: a leak of a few images shows there,
not in the AUC). Two attacks:

- ``distance_scores`` (black box, any generator): minus the RMS pixel distance from each image to its
  nearest generated sample, the "full black-box" attack of GAN-leaks (Chen et al. 2020), close to
  Hilprecht et al.'s 2019 Monte-Carlo attack: a generator that reproduces its training images puts
  samples nearer them than near fresh images.
- ``elbo_scores`` (VAE, white box): each image's ELBO, since a model fits its training images better.

Pure functions of scores, images and models (no I/O); ``genloop.stages.evaluate`` feeds them.
"""
from __future__ import annotations

import math
from collections.abc import Iterable

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

# The FPR the low-error operating point is read at (1%), and the FPR grid the report's ROC curves keep:
# 61 log-spaced points from 1e-3 to 1 for a log axis's low-FPR end, and every 0.02 for a linear one.
LOW_FPR = 0.01
ROC_GRID = np.unique(np.round(np.concatenate([np.logspace(-3, 0, 61), np.linspace(0, 1, 51)]), 6))
# z draws per image averaged in the ELBO score: one draw's noise would blur the attack.
ELBO_DRAWS = 16


def _scores(member: np.ndarray, non_member: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    member = np.asarray(member, dtype=np.float64).ravel()
    non_member = np.asarray(non_member, dtype=np.float64).ravel()
    if len(member) == 0 or len(non_member) == 0:
        raise ValueError(f"a membership attack needs members and non-members (got {len(member)} and "
                         f"{len(non_member)} scores)")
    if not (np.isfinite(member).all() and np.isfinite(non_member).all()):
        raise ValueError("membership scores contain NaN or infinite values")
    return member, non_member


def roc(member: np.ndarray, non_member: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(fpr, tpr) of "member when score >= t" over every threshold t, from (0, 0) to (1, 1).

    Tied scores form one threshold, so a tie moves both rates at once (a diagonal step), never
    splitting members from non-members the scores cannot tell apart.
    """
    member, non_member = _scores(member, non_member)
    scores = np.concatenate([member, non_member])
    is_member = np.concatenate([np.ones(len(member)), np.zeros(len(non_member))])
    order = np.argsort(-scores, kind="stable")
    scores, is_member = scores[order], is_member[order]
    last_of_tie = np.r_[np.flatnonzero(np.diff(scores)), len(scores) - 1]  # where the next score is lower
    tp = np.cumsum(is_member)[last_of_tie]
    fp = (last_of_tie + 1) - tp
    return np.r_[0.0, fp / len(non_member)], np.r_[0.0, tp / len(member)]


def auc(member: np.ndarray, non_member: np.ndarray) -> float:
    """ROC AUC: the chance a random member scores above a random non-member, ties counted half
    (the Mann-Whitney U statistic over the product of the counts)."""
    fpr, tpr = roc(member, non_member)
    return float(np.sum(np.diff(fpr) * (tpr[1:] + tpr[:-1]) / 2))


def tpr_at_fpr(member: np.ndarray, non_member: np.ndarray, fpr: float = LOW_FPR) -> float:
    """The largest TPR of a threshold whose FPR is at most ``fpr`` (0 when only "nobody" qualifies).

    With n non-members the FPR moves in steps of 1/n: under n = 100 a 1% FPR allows no false
    positive at all.
    """
    rates, tprs = roc(member, non_member)
    return float(tprs[rates <= fpr + 1e-12].max())


def roc_on_grid(member: np.ndarray, non_member: np.ndarray, grid: np.ndarray = ROC_GRID) -> np.ndarray:
    """``tpr_at_fpr`` at each FPR of ``grid``: a compact curve for a report (a step function)."""
    rates, tprs = roc(member, non_member)
    best = np.maximum.accumulate(tprs)  # rates are non-decreasing, so this is the best TPR so far
    return best[np.searchsorted(rates, np.asarray(grid) + 1e-12, side="right") - 1]


def attack_metrics(prefix: str, member: np.ndarray, non_member: np.ndarray) -> dict[str, float]:
    """``{prefix}_auc`` and ``{prefix}_tpr_at_1fpr`` of one attack."""
    return {f"{prefix}_auc": auc(member, non_member), f"{prefix}_tpr_at_1fpr": tpr_at_fpr(member, non_member)}


def balanced(members: torch.Tensor, non_members: torch.Tensor, limit: int,
             seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """As many members as non-members (at most ``limit`` each), each side a seeded random subset, so
    an AUC of 0.5 means chance and not the class balance."""
    n = min(len(members), len(non_members), limit)
    if n < 1:
        raise ValueError(f"a membership audit needs members and non-members (got {len(members)} and "
                         f"{len(non_members)} images, limit {limit})")
    generator = torch.Generator().manual_seed(seed)
    return (members[torch.randperm(len(members), generator=generator)[:n]],
            non_members[torch.randperm(len(non_members), generator=generator)[:n]])


@torch.no_grad()
def distance_scores(images: torch.Tensor, generated: torch.Tensor, block_entries: int = 1 << 22) -> np.ndarray:
    """Minus the RMS pixel distance (images in [0, 1]) from each image to its nearest generated sample.

    Walks the generated samples in blocks of about ``block_entries`` distances, keeping each image's
    nearest so far, so a large draw (the stronger attacker) costs time, not memory.
    """
    return nearest_generated([images], generated, block_entries)[0]


def nearest_generated(image_sets: list[torch.Tensor], generated: torch.Tensor | Iterable[torch.Tensor],
                      block_entries: int = 1 << 22) -> list[np.ndarray]:
    """``distance_scores`` of several image sets in one pass over ``generated``: a tensor, or an iterable of
    blocks (samples drawn as they are searched, so the whole draw is never held)."""
    xs = [images.reshape(len(images), -1).float() for images in image_sets]
    nearest = [torch.full((len(x),), math.inf) for x in xs]
    seen = 0
    for block in ([generated] if isinstance(generated, torch.Tensor) else generated):
        g = block.reshape(len(block), -1).float()
        seen += len(g)
        for i, (x, images) in enumerate(zip(xs, image_sets)):
            if len(x) == 0 or x.shape[1] != g.shape[1]:
                raise ValueError(f"distance attack: images {tuple(images.shape)} and samples {tuple(block.shape)} "
                                 "must both be non-empty and of one size")
            for part in g.split(max(1, block_entries // len(x))):
                nearest[i] = torch.minimum(nearest[i], torch.cdist(x, part).min(1).values)
    if seen == 0:
        raise ValueError("distance attack: no generated samples to search")
    return [-(n / math.sqrt(x.shape[1])).numpy().astype(np.float64) for n, x in zip(nearest, xs)]


@torch.no_grad()
def elbo_scores(vae: nn.Module, images: torch.Tensor, seed: int, draws: int = ELBO_DRAWS,
                batch_size: int = 1024) -> np.ndarray:
    """Each image's ELBO (β = 1: -BCE summed over pixels - KL, nats), averaged over ``draws`` z ~ q(z|x).

    ``vae`` needs ``encode`` and ``decoder.logits`` (both genloop VAEs have them); the noise comes
    from its own seeded generator, so the scores depend neither on the global RNG nor on batching.
    """
    was_training = vae.training
    vae.eval()
    images = images.float()
    per_block = max(1, batch_size // draws)
    out = []
    for x, eps in zip(images.split(per_block), _noise(vae, images, draws, seed).split(per_block, dim=1)):
        mu, logvar = vae.encode(x)
        z = (mu + eps * torch.exp(0.5 * logvar)).reshape(-1, mu.shape[1])
        logits = vae.decoder.logits(z)
        target = x.unsqueeze(0).expand(draws, *x.shape).reshape(logits.shape)
        bce = F.binary_cross_entropy_with_logits(logits, target, reduction="none").flatten(1).sum(1)
        kl = -0.5 * torch.sum(1 + logvar - mu.pow(2) - logvar.exp(), dim=1)
        out.append(-(bce.view(draws, -1).mean(0) + kl))
    vae.train(was_training)
    return torch.cat(out).double().numpy()


def _noise(vae: nn.Module, images: torch.Tensor, draws: int, seed: int) -> torch.Tensor:
    """(draws, N, latent) standard normal noise for all images at once, so batching cannot change it."""
    latent = vae.encode(images[:1])[0].shape[1]
    return torch.randn(draws, len(images), latent, generator=torch.Generator().manual_seed(seed))


def standard_error(auc_value: float, n: int) -> float:
    """A rough standard error of an AUC from n members and n non-members (Hanley & McNeil 1982 near
    0.5: sqrt((n + n + 1) / (12 n n))), to say when a figure is within chance."""
    return math.sqrt((2 * n + 1) / (12 * n * n)) if n > 0 else float("nan")


def audit(members: torch.Tensor, non_members: torch.Tensor, generated: torch.Tensor | Iterable[torch.Tensor],
          vae: nn.Module | None,
          limit: int, seed: int, batch_size: int = 1024) -> tuple[dict[str, float], dict[str, list[float]]]:
    """Both attacks on one model: ``MIA_METRICS`` (+ ``VAE_MIA_METRICS`` given ``vae``) and each attack's
    TPR on ``ROC_GRID`` (by attack name: distance, elbo).

    ``members`` are the images the model trained on, ``non_members`` held-out ones, balanced here to
    at most ``limit`` each; ``generated`` are the model's samples the distance attack searches.
    """
    members, non_members = balanced(members, non_members, limit, seed)
    scores = {"distance": tuple(nearest_generated([members, non_members], generated))}
    if vae is not None:
        scores["elbo"] = (elbo_scores(vae, members, seed, batch_size=batch_size),
                          elbo_scores(vae, non_members, seed, batch_size=batch_size))
    metrics: dict[str, float] = {}
    curves: dict[str, list[float]] = {}
    for attack, (member, non_member) in scores.items():
        metrics.update(attack_metrics(f"mia_{attack}", member, non_member))
        curves[attack] = [round(float(t), 6) for t in roc_on_grid(member, non_member)]
    return metrics, curves
