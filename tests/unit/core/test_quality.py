"""genloop.core.quality's FID against the formula computed here with numpy, not through torchmetrics."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from genloop.core import quality


def frechet_distance(a: np.ndarray, b: np.ndarray) -> float:
    """|mu_a - mu_b|^2 + Tr(S_a + S_b - 2 (S_a S_b)^1/2); the trace of the root is the sum of the square
    roots of the eigenvalues of S_a S_b (real and non-negative for two covariance matrices)."""
    s_a, s_b = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    root_trace = np.sqrt(np.linalg.eigvals(s_a @ s_b).real.clip(min=0)).sum()
    return float(((a.mean(0) - b.mean(0)) ** 2).sum() + np.trace(s_a) + np.trace(s_b) - 2 * root_trace)


def test_fid_equals_the_frechet_distance_of_the_fitted_gaussians():
    rng = np.random.default_rng(0)
    a = rng.normal(size=(500, 6))
    b = rng.normal(loc=0.4, size=(400, 6)) @ rng.normal(scale=0.7, size=(6, 6))
    expected = frechet_distance(a, b)
    assert expected > 1.0  # far enough apart that a wrong term would show
    assert quality.fid(torch.from_numpy(a).float(), torch.from_numpy(b).float()) == pytest.approx(expected, rel=1e-3)


def test_fid_is_zero_for_the_same_set_and_the_squared_shift_for_a_shifted_copy():
    a = torch.from_numpy(np.random.default_rng(1).normal(size=(300, 5))).float()
    assert quality.fid(a, a) == pytest.approx(0.0, abs=1e-3)
    assert quality.fid(a, a + 0.5) == pytest.approx(5 * 0.5 ** 2, rel=1e-3)  # same covariance: only the means differ
