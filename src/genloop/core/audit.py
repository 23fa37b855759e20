"""A membership audit strong enough to see a leak: per-image losses calibrated by reference models.

The plain loss attack (member when the target model's loss on an image is low) mostly measures how
hard an image is: easy digits score as members whether trained on or not, which buries the leak
and kept genloop's audits at chance. The offline likelihood-ratio attack (LiRA, Carlini et al. 2022,
"offline" variant) asks instead how much lower the target's loss on an image is than the loss of
reference models that did NOT train on it:

    score(x) = (mean_r loss_r(x) - loss_target(x)) / std

with the std per image when there are at least ``MIN_PER_IMAGE_STD`` reference models, else one
global std (the paper's choice for few references). The references train, with the target's own
recipe, on disjoint halves of an auxiliary set the attacker holds (same distribution, none of the
candidates), so every candidate is "out" for every reference. Cost: one extra training per
reference (``references`` x the target's training) plus a loss pass over the candidates each.

The figures: ROC AUC and TPR at 1% FPR (genloop.core.membership.auc / tpr_at_fpr). Pure: the
caller passes how to train a model and how to score an image; no I/O.
"""
from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from genloop.core.membership import LOW_FPR, auc, tpr_at_fpr

MIN_PER_IMAGE_STD = 4

TrainFn = Callable[[torch.Tensor, int], nn.Module]  # (images, seed) -> trained model
LossFn = Callable[[nn.Module, torch.Tensor], torch.Tensor]  # (model, images) -> loss per image (N,)


def loss_scores(target_losses: np.ndarray) -> np.ndarray:
    """The uncalibrated attack: a lower loss means "member"."""
    return -np.asarray(target_losses, dtype=np.float64)


def lira_scores(target_losses: np.ndarray, reference_losses: np.ndarray) -> np.ndarray:
    """Offline LiRA: how many reference stds the target's loss lies below the references' mean.

    ``reference_losses`` is (R, N): R models that did not train on any of the N images.
    """
    target = np.asarray(target_losses, dtype=np.float64)
    refs = np.atleast_2d(np.asarray(reference_losses, dtype=np.float64))
    if refs.shape[1] != len(target):
        raise ValueError(f"reference losses cover {refs.shape[1]} images but the target's cover {len(target)}")
    mean = refs.mean(0)
    if len(refs) >= MIN_PER_IMAGE_STD:
        std = refs.std(0, ddof=1)
    else:  # too few references for a per-image spread: one global one (of the residuals when R > 1)
        std = np.full(len(target), (refs - mean).std() if len(refs) > 1 else refs.std())
    return (mean - target) / np.maximum(std, 1e-12)


@dataclass(frozen=True)
class AuditResult:
    loss_auc: float
    loss_tpr: float  # TPR at ``LOW_FPR`` of the uncalibrated loss attack
    lira_auc: float
    lira_tpr: float
    references: int
    seconds: float  # the attack's own cost: reference trainings and loss passes

    def as_metrics(self, prefix: str = "audit_") -> dict[str, float]:
        return {f"{prefix}loss_auc": self.loss_auc, f"{prefix}loss_tpr_at_1pct_fpr": self.loss_tpr,
                f"{prefix}lira_auc": self.lira_auc, f"{prefix}lira_tpr_at_1pct_fpr": self.lira_tpr}


@torch.no_grad()
def _losses(loss: LossFn, model: nn.Module, images: torch.Tensor) -> np.ndarray:
    model.eval()
    return loss(model, images).double().numpy()


def reference_losses(train: TrainFn, loss: LossFn, auxiliary: torch.Tensor, candidates: torch.Tensor,
                     references: int, seed: int) -> np.ndarray:
    """(references, N) losses on ``candidates`` of models trained on disjoint slices of ``auxiliary``
    (two halves for two references; ``references`` equal slices in general)."""
    if references < 1:
        raise ValueError(f"references must be at least 1 (got {references})")
    if len(auxiliary) < references:
        raise ValueError(f"{len(auxiliary)} auxiliary images cannot be split among {references} references")
    order = torch.randperm(len(auxiliary), generator=torch.Generator().manual_seed(seed))
    return np.stack([_losses(loss, train(auxiliary[part], seed + 1 + r), candidates)
                     for r, part in enumerate(order.chunk(references))])


def run_audit(target: nn.Module, train: TrainFn, loss: LossFn, members: torch.Tensor, non_members: torch.Tensor,
              auxiliary: torch.Tensor, references: int = 2, seed: int = 0) -> AuditResult:
    """Both attacks on ``target`` (trained on ``members``, never on ``non_members`` or ``auxiliary``).

    ``train`` must be the target's own training recipe, so the references differ from it only in
    their data; ``auxiliary`` must share none of the candidates.
    """
    start = time.perf_counter()
    candidates = torch.cat([members, non_members])
    target_losses = _losses(loss, target, candidates)
    refs = reference_losses(train, loss, auxiliary, candidates, references, seed)
    plain, calibrated = loss_scores(target_losses), lira_scores(target_losses, refs)
    m = len(members)
    return AuditResult(auc(plain[:m], plain[m:]), tpr_at_fpr(plain[:m], plain[m:], LOW_FPR),
                       auc(calibrated[:m], calibrated[m:]), tpr_at_fpr(calibrated[:m], calibrated[m:], LOW_FPR),
                       references, time.perf_counter() - start)
