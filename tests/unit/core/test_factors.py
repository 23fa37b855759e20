"""Factor scores on synthetic latents whose answers are known: one dimension per factor vs mixtures."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from genloop.core.factors import (Gap, active_units, dci, dci_from_importance, discretise, distribution_gaps,
                                  factor_directions, gap_sentence, ganspace_directions, kl_per_dimension, linear_probe_accuracy,
                                  mig, pca_map)


def factor_data(n: int = 4000, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    factors = rng.normal(size=(n, 3))
    return factors, rng


def test_mig_is_high_when_each_dimension_is_one_factor():
    f, rng = factor_data()
    z = np.concatenate([f + 0.05 * rng.normal(size=f.shape), rng.normal(size=(len(f), 2))], axis=1)
    res = mig(z, f)
    assert res.score > 0.6
    assert res.top_dimension.tolist() == [0, 1, 2]


def test_mig_is_low_when_dimensions_mix_factors():
    f, rng = factor_data()
    c = math.sqrt(0.5)
    rotate_01 = np.array([[c, c, 0.0], [-c, c, 0.0], [0.0, 0.0, 1.0]])
    rotate_12 = np.array([[1.0, 0.0, 0.0], [0.0, c, c], [0.0, -c, c]])
    aligned = mig(f + 0.05 * rng.normal(size=f.shape), f).score
    assert mig(f @ rotate_01 @ rotate_12, f).score < 0.5 * aligned


def test_mig_per_factor_gap_is_zero_for_a_factor_duplicated_in_two_dimensions():
    f, rng = factor_data()
    z = np.stack([f[:, 0], f[:, 0], f[:, 1], f[:, 2]], axis=1)
    res = mig(z, f)
    assert res.per_factor[0] == pytest.approx(0.0, abs=1e-9)
    assert res.per_factor[1] > 0.9


def test_mig_refuses_rows_that_do_not_match():
    with pytest.raises(ValueError, match="rows"):
        mig(np.zeros((10, 2)), np.zeros((9, 1)))


def test_discretise_keeps_labels_and_bins_continuous_values_equally():
    labels = np.array([3, 7, 7, 3, 9])
    assert discretise(labels).ravel().tolist() == [0, 1, 1, 0, 2]
    codes = discretise(np.random.default_rng(0).normal(size=(2000, 1)), bins=10).ravel()
    assert np.bincount(codes).min() >= 190


def test_dci_disentangled_latents_score_high_and_mixed_ones_low():
    f, rng = factor_data(3000)
    good = dci(f + 0.05 * rng.normal(size=f.shape), f)
    mix = f @ np.linalg.qr(rng.normal(size=(3, 3)))[0]
    bad = dci(mix + 0.05 * rng.normal(size=f.shape), f)
    assert good.disentanglement > 0.9 and good.completeness > 0.9 and good.informativeness > 0.95
    assert bad.disentanglement < good.disentanglement - 0.3
    assert bad.informativeness > 0.95  # mixed but still linearly decodable


def test_dci_importance_matrix_edge_cases():
    assert dci_from_importance(np.eye(3)) == pytest.approx((1.0, 1.0))
    assert dci_from_importance(np.ones((3, 3))) == pytest.approx((0.0, 0.0), abs=1e-12)
    assert dci_from_importance(np.zeros((2, 2))) == (0.0, 0.0)


def test_dci_handles_a_label_and_the_forest_method():
    rng = np.random.default_rng(1)
    y = rng.integers(0, 4, 2000)
    z = np.stack([y + 0.1 * rng.normal(size=2000), rng.normal(size=2000)], axis=1)
    res = dci(z, y[:, None], method="forest")
    assert res.informativeness > 0.9
    assert res.importance[0, 0] > res.importance[1, 0]
    with pytest.raises(ValueError, match="method"):
        dci(z, y[:, None], method="boosting")


def test_kl_per_dimension_and_active_units():
    n = 1000
    rng = np.random.default_rng(0)
    mu = np.stack([rng.normal(size=n) * 2, np.zeros(n), rng.normal(size=n) * 0.5], axis=1)
    logvar = np.stack([np.full(n, -3.0), np.zeros(n), np.full(n, -1.0)], axis=1)
    kl = kl_per_dimension(mu, logvar)
    assert kl[1] == pytest.approx(0.0, abs=1e-12)
    assert active_units(kl).tolist() == [0, 2]


def test_ganspace_finds_the_z_direction_that_moves_the_features_most():
    torch.manual_seed(0)
    out_rot, in_rot = torch.linalg.qr(torch.randn(6, 6))[0][:, :4], torch.linalg.qr(torch.randn(4, 4))[0]
    weight = out_rot @ torch.diag(torch.tensor([10.0, 3.0, 1.0, 0.1])) @ in_rot.T   # features = W z
    res = ganspace_directions(lambda z: z @ weight.T, latent_dim=4, components=2, samples=2048)
    assert res.directions.shape == (2, 4)
    assert abs(float(np.dot(res.directions[0], in_rot[:, 0].numpy()))) > 0.99
    assert abs(float(np.dot(res.directions[1], in_rot[:, 1].numpy()))) > 0.99
    assert res.explained_variance_ratio[0] > 0.85
    assert res.sd[0] == pytest.approx(1.0, abs=0.1)


def test_linear_probe_accuracy_separable_vs_noise():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 3, 1500)
    sep = np.eye(3)[y] * 5 + rng.normal(size=(1500, 3))
    assert linear_probe_accuracy(sep, y) > 0.95
    assert linear_probe_accuracy(rng.normal(size=(1500, 3)), y) < 0.5


def test_pca_map_first_axis_is_the_largest_spread():
    rng = np.random.default_rng(0)
    z = rng.normal(size=(500, 4)) * np.array([0.1, 5.0, 0.1, 0.1])
    coords, ratio = pca_map(z)
    assert coords.shape == (500, 2) and ratio[0] > 0.95
    assert abs(np.corrcoef(coords[:, 0], z[:, 1])[0, 1]) > 0.99


def test_distribution_gaps_per_class_and_the_sentence():
    rng = np.random.default_rng(0)
    labels = np.repeat([1, 7], 500)
    real = {"thickness": rng.normal(3.0, 0.3, 1000), "slant": rng.normal(0.0, 0.1, 1000)}
    gen = {"thickness": real["thickness"] * np.where(labels == 7, 1.12, 1.0), "slant": real["slant"] + 0.1}
    gaps = distribution_gaps(real, gen, labels, labels)
    seven = next(g for g in gaps if g.measure == "thickness" and g.label == 7)
    one = next(g for g in gaps if g.measure == "thickness" and g.label == 1)
    assert seven.relative_difference == pytest.approx(0.12, abs=1e-9) and seven.ks > 0.1
    assert one.wasserstein == pytest.approx(0.0) and one.ks == 0.0
    assert gap_sentence(seven) == "generated 7s are 12% thicker than real 7s"
    lean = next(g for g in gaps if g.measure == "slant" and g.label is None)
    assert gap_sentence(lean) == f"generated images lean {math.degrees(0.1):.1f}° further right than real images"


def test_gap_sentence_for_smaller_values_and_class_names():
    g = Gap("width", 0, 100, 100, 10.0, 9.0, -0.1, 1.0, 0.5, 0.3, 0.01)
    assert gap_sentence(g, class_names=["zeros"]) == "generated zeros are 10% narrower than real zeros"


def test_distribution_gaps_skip_classes_with_too_few_images():
    real = {"area": np.arange(100.0)}
    gaps = distribution_gaps(real, real, np.r_[np.zeros(95), np.ones(5)], np.r_[np.zeros(95), np.ones(5)])
    assert {g.label for g in gaps} == {None, 0}


def test_factor_direction_finds_a_factor_spread_over_rotated_dimensions():
    f, rng = factor_data(3000)
    rotation = np.linalg.qr(rng.normal(size=(3, 3)))[0]
    z = f @ rotation.T + 0.05 * rng.normal(size=f.shape)      # factor k lies along rotation[:, k]
    res = factor_directions(z, f)
    assert mig(z, f).score < 0.5
    for k in range(3):
        assert abs(float(res.directions[k] @ rotation[:, k])) > 0.99
    assert res.r2.min() > 0.99 and res.sd == pytest.approx(np.ones(3), abs=0.1)
    assert factor_directions(rng.normal(size=(3000, 3)), f).r2.max() < 0.05


def test_factor_direction_follows_the_dimension_that_varies_not_a_near_constant_one_that_predicts():
    rng = np.random.default_rng(0)
    f = rng.normal(size=3000)
    active = f + 0.3 * rng.normal(size=3000)            # what the decoder reads: moves with the factor
    inactive = 1e-3 * (f + 0.1 * rng.normal(size=3000))  # a β-VAE's inactive unit: predicts f, barely moves
    res = factor_directions(np.column_stack([active, inactive]), f[:, None])
    assert abs(float(res.directions[0, 0])) > 0.99, res.directions
    assert res.r2[0] > 0.95 and res.sd[0] > 0.9


def test_mutual_information_of_a_uniform_code_with_itself_is_its_entropy_and_zero_with_noise():
    from genloop.core.factors import mutual_information

    a = np.tile(np.arange(4), 1000)[:, None]
    assert mutual_information(a, a)[0, 0] == pytest.approx(math.log(4))
    noise = np.random.default_rng(0).integers(0, 4, (4000, 1))
    assert mutual_information(a, noise)[0, 0] < 0.01


def test_ganspace_on_a_wide_feature_map_matches_the_exact_pca():
    """The randomised SVD (feature maps wider than a few thousand) finds the same leading axes."""
    gen = torch.Generator().manual_seed(3)
    weight = torch.randn(600, 6, generator=gen) * torch.tensor([5.0, 3.0, 1.0, 0.5, 0.2, 0.1])
    res = ganspace_directions(lambda z: torch.tanh(z @ weight.T / 4), latent_dim=6, components=3, samples=400)
    z = torch.randn(400, 6, generator=torch.Generator().manual_seed(0))
    y = torch.tanh(z @ weight.T / 4).double()
    s = np.linalg.svd((y - y.mean(0)).numpy(), compute_uv=False)
    np.testing.assert_allclose(res.explained_variance_ratio, (s[:3] ** 2) / (s ** 2).sum(), rtol=1e-3)
    assert abs(res.directions[0] @ np.eye(6)[0]) > 0.9
