"""Tests for the calibrated membership audit (genloop.core.audit): in a deliberately leaky setting (a
wide autoencoder trained long on 128 images) it sees the leak clearly; when the "target" trained on
none of the candidates it stays at chance; the calibration itself is checked on hand-made losses."""
from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from genloop.core import audit


def data(n: int, seed: int) -> torch.Tensor:
    """8x8 images: one of 4 smooth templates plus strong per-image noise (what a model can memorise)."""
    g = torch.Generator().manual_seed(seed)
    templates = torch.rand(4, 64, generator=torch.Generator().manual_seed(99))
    return (templates[torch.randint(0, 4, (n,), generator=g)] + 0.3 * torch.randn(n, 64, generator=g)).clamp(0, 1)


def train(images: torch.Tensor, seed: int) -> nn.Module:
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Linear(64, 256), nn.ReLU(), nn.Linear(256, 64))
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    for _ in range(300):
        loss = F.mse_loss(model(images), images)
        opt.zero_grad()
        loss.backward()
        opt.step()
    return model


def loss(model: nn.Module, images: torch.Tensor) -> torch.Tensor:
    return (model(images) - images).pow(2).mean(1)


MEMBERS, NON_MEMBERS, AUXILIARY = data(128, 1), data(128, 2), data(256, 3)


def test_leaky_model_is_caught_by_the_calibrated_attack():
    result = audit.run_audit(train(MEMBERS, 0), train, loss, MEMBERS, NON_MEMBERS, AUXILIARY, references=2)
    assert result.lira_auc >= 0.7
    assert result.lira_tpr > 0.05
    assert result.references == 2 and result.seconds > 0


def test_model_that_never_saw_the_candidates_stays_at_chance():
    unrelated = train(data(128, 4), 0)
    result = audit.run_audit(unrelated, train, loss, MEMBERS, NON_MEMBERS, AUXILIARY, references=2)
    assert abs(result.lira_auc - 0.5) < 0.1 and abs(result.loss_auc - 0.5) < 0.1


def test_lira_scores_remove_per_image_difficulty():
    """Hard images (high reference loss) that the target fits well are the members; the raw loss
    ranks the easy non-members first, the calibrated score does not."""
    refs = np.array([[1.0, 1.0, 5.0, 5.0]] * 5) + np.random.default_rng(0).normal(0, 0.1, (5, 4))
    target = np.array([1.0, 0.5, 5.0, 3.0])  # image 1 and 3 are members: lower than their references
    scores = audit.lira_scores(target, refs)
    assert set(np.argsort(-scores)[:2]) == {1, 3}
    assert set(np.argsort(-audit.loss_scores(target))[:2]) == {0, 1}


def test_reference_count_and_shapes_are_checked():
    with pytest.raises(ValueError, match="references must be at least 1"):
        audit.reference_losses(train, loss, AUXILIARY, MEMBERS, 0, seed=0)
    with pytest.raises(ValueError, match="cover 3 images"):
        audit.lira_scores(np.zeros(4), np.zeros((2, 3)))
