"""Tests for TSTR (genloop.core.tstr) on tiny 8x8 data: a synthetic set that carries the classes scores
near the real floor, one with wrong labels scores near 0, and bad shapes are refused."""
from __future__ import annotations

import pytest
import torch

from genloop.core.tstr import tstr


def bars(n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Class 0: a bright row; class 1: a bright column; class 2: a bright diagonal (plus noise)."""
    g = torch.Generator().manual_seed(seed)
    y = torch.randint(0, 3, (n,), generator=g)
    x = 0.2 * torch.rand(n, 1, 8, 8, generator=g)
    pos = torch.randint(1, 7, (n,), generator=g)
    for i in range(n):
        if y[i] == 0:
            x[i, 0, pos[i], :] = 1.0
        elif y[i] == 1:
            x[i, 0, :, pos[i]] = 1.0
        else:
            x[i, 0] += torch.eye(8)
    return x.clamp(0, 1), y


def test_synthetic_set_with_the_classes_scores_high_and_the_floor_is_reported():
    synth, synth_y = bars(240, 0)
    real, real_y = bars(240, 1)
    test, test_y = bars(120, 2)
    result = tstr(synth, synth_y, test, test_y, 3, epochs=6, seed=0, feature_dim=8, batch_size=24, real=real, real_labels=real_y)
    assert result.accuracy > 0.9 and result.real_accuracy > 0.9
    assert set(result.as_metrics()) == {"tstr_accuracy", "tstr_real_accuracy"}


def test_synthetic_set_with_wrong_labels_scores_far_below_the_floor():
    synth, synth_y = bars(240, 0)
    test, test_y = bars(120, 2)
    result = tstr(synth, (synth_y + 1) % 3, test, test_y, 3, epochs=6, seed=0, feature_dim=8, batch_size=24)
    assert result.accuracy < 0.2 and result.real_accuracy is None


def test_mismatched_or_unshaped_inputs_are_refused():
    x, y = bars(10, 0)
    with pytest.raises(ValueError, match="synthetic: 10 images and 9 labels"):
        tstr(x, y[:9], x, y, 3, epochs=1, seed=0)
    with pytest.raises(ValueError, match=r"test images must be shaped \(N, C, H, W\)"):
        tstr(x, y, x[:, 0], y, 3, epochs=1, seed=0)
