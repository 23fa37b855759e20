"""Tests for DP-MERF (genloop.core.dp_merf): the Gaussian mechanism's calibration checked against an
independent numerical hockey-stick divergence, the feature map's unit norm (what the sensitivity
rests on), the noise scale of the release, and a generator that learns per-class means from it."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from genloop.core import dp_merf


def hockey_stick(sigma: float, epsilon: float) -> float:
    """δ(ε) = ∫ max(0, p(x) - e^ε q(x)) dx for p = N(1, σ²), q = N(0, σ²), by quadrature (no closed form used)."""
    x = np.linspace(-40 * sigma - 5, 40 * sigma + 5, 2_000_001)
    p = np.exp(-(x - 1) ** 2 / (2 * sigma ** 2)) / (sigma * math.sqrt(2 * math.pi))
    q = np.exp(-x ** 2 / (2 * sigma ** 2)) / (sigma * math.sqrt(2 * math.pi))
    return float(np.trapezoid(np.maximum(0.0, p - math.exp(epsilon) * q), x))


@pytest.mark.parametrize("epsilon", [0.5, 1.0, 10.0])
def test_calibrated_sigma_meets_delta_exactly_by_quadrature(epsilon):
    sigma = dp_merf.analytic_sigma(epsilon, 1e-5)
    assert hockey_stick(sigma, epsilon) == pytest.approx(1e-5, rel=2e-2)
    assert hockey_stick(0.9 * sigma, epsilon) > 1.2e-5  # a smaller noise would not do


def test_analytic_sigma_known_values_and_beats_the_classic_formula():
    assert dp_merf.analytic_sigma(1.0, 1e-5) == pytest.approx(3.73, abs=0.01)
    assert dp_merf.analytic_sigma(10.0, 1e-5) == pytest.approx(0.50, abs=0.01)
    assert dp_merf.analytic_sigma(0.5, 1e-5) < dp_merf.classic_sigma(0.5, 1e-5)


@pytest.mark.parametrize("epsilon,delta", [(0, 1e-5), (-1, 1e-5), (float("inf"), 1e-5), (1, 0), (1, 1)])
def test_bad_budget_is_refused_naming_the_field(epsilon, delta):
    with pytest.raises(ValueError, match="epsilon" if not (0 < epsilon < math.inf) else "delta"):
        dp_merf.analytic_sigma(epsilon, delta)


def test_sensitivity_add_remove_and_replace():
    assert dp_merf.sensitivity(1.0) == pytest.approx(math.sqrt(2))
    assert dp_merf.sensitivity(0.25, "replace") == pytest.approx(2 * math.sqrt(1.0625))
    with pytest.raises(ValueError, match="adjacency"):
        dp_merf.sensitivity(1.0, "swap")


def test_feature_map_has_unit_norm_for_any_image_with_several_views():
    views = [dp_merf.View(1, 0.3, 64, 2.0), dp_merf.View(2, 0.5, 32, 1.0)]
    fm = dp_merf.FeatureMap((3, 8, 8), views, seed=0)
    x = torch.cat([torch.rand(20, 3, 8, 8), torch.zeros(1, 3, 8, 8), torch.ones(1, 3, 8, 8)])
    assert fm(x).shape == (22, fm.dim) and fm.dim == 2 * (64 + 32)
    assert torch.allclose(fm(x).norm(dim=1), torch.ones(22), atol=1e-5)


def test_feature_map_refuses_a_pool_that_does_not_divide_the_image():
    with pytest.raises(ValueError, match="pool 3"):
        dp_merf.FeatureMap((1, 8, 8), [dp_merf.View(pool=3)], seed=0)


def test_release_adds_noise_of_the_calibrated_scale_and_none_without_epsilon():
    fm = dp_merf.FeatureMap((1, 8, 8), [dp_merf.View(features=2000)], seed=0)
    x, y = torch.rand(50, 1, 8, 8), torch.arange(50) % 5
    exact = dp_merf.release(fm, x, y, 5, None, None, seed=0)
    assert exact.sigma == 0 and torch.equal(exact.counts, torch.full((5,), 10.0))
    noisy = dp_merf.release(fm, x, y, 5, 1.0, 1e-5, seed=0, count_weight=0.5)
    expected = dp_merf.analytic_sigma(1.0, 1e-5) * math.sqrt(1.25)
    assert float((noisy.sums - exact.sums).std()) == pytest.approx(expected, rel=0.03)
    assert noisy.summary()["epsilon"] == 1.0 and noisy.summary()["releases"] == 1


def test_release_refuses_labels_out_of_range():
    fm = dp_merf.FeatureMap((1, 4, 4), [dp_merf.View(features=8)], seed=0)
    with pytest.raises(ValueError, match="labels"):
        dp_merf.release(fm, torch.rand(3, 1, 4, 4), torch.tensor([0, 1, 5]), 3, None, None, seed=0)


def test_generator_learns_each_class_mean_from_the_release():
    """Two classes: dark and bright 8x8 images; the trained generator draws each at its brightness."""
    x = torch.cat([torch.full((40, 1, 8, 8), 0.1), torch.full((40, 1, 8, 8), 0.9)]) + 0.02 * torch.randn(80, 1, 8, 8)
    y = torch.arange(2).repeat_interleave(40)
    fm = dp_merf.FeatureMap((1, 8, 8), [dp_merf.View(features=200, bandwidth=0.3)], seed=0)
    released = dp_merf.release(fm, x.clamp(0, 1), y, 2, None, None, seed=0)
    gen = dp_merf.MerfGenerator(4, (1, 8, 8), 2, hidden=32, channels=4)
    dp_merf.train_generator(gen, fm, released, steps=150, batch_size=40, lr=1e-2, seed=0)
    out = dp_merf.sample(gen, torch.tensor([0] * 20 + [1] * 20), seed=1)
    assert out.shape == (40, 1, 8, 8)
    assert float(out[:20].mean()) < 0.3 and float(out[20:].mean()) > 0.7


def test_draw_labels_follows_the_released_shares():
    released = dp_merf.Release(torch.zeros(3, 4), torch.tensor([0.0, 100.0, 300.0]), 1.0, 1e-5, 1.0, 1.0)
    labels = dp_merf.draw_labels(released, 4000, seed=0)
    shares = torch.bincount(labels, minlength=3).float() / 4000
    assert shares[0] == 0 and abs(float(shares[2]) - 0.75) < 0.03


def test_unbiased_mmd_does_not_charge_a_small_batch_for_its_spread():
    """Batches drawn from the class's own images: the unbiased loss averages near 0, the plain one
    carries about (1 - ||E phi||²) / B more, the term that rewards samples for sitting together."""
    fm = dp_merf.FeatureMap((1, 8, 8), [dp_merf.View(features=500)], seed=0)
    pool = torch.rand(2000, 1, 8, 8, generator=torch.Generator().manual_seed(0))
    target = dp_merf.release(fm, pool, torch.zeros(2000, dtype=torch.long), 1, None, None, seed=0).class_means()
    g = torch.Generator().manual_seed(1)
    draws = [pool[torch.randint(0, 2000, (10,), generator=g)] for _ in range(40)]
    labels = torch.zeros(10, dtype=torch.long)
    unbiased = np.mean([float(dp_merf.mmd_loss(fm, x, labels, target)) for x in draws])
    biased = np.mean([float(dp_merf.mmd_loss(fm, x, labels, target, unbiased=False)) for x in draws])
    spread = (1 - float(target.pow(2).sum())) / 10
    assert abs(unbiased) < 0.2 * spread
    assert biased == pytest.approx(unbiased + spread, rel=0.2)
