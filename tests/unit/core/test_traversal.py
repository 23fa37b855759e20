"""Traversal latents and nearest-neighbour attribution."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from genloop.core.traversal import (attribution_rows, axis_directions, nearest_neighbours, spread_along,
                                    traversal_latents, typical_codes)


def test_traversal_moves_only_the_chosen_dimension_from_minus_to_plus_span_sd():
    codes = np.random.default_rng(0).normal(size=(500, 4)) * np.array([1.0, 2.0, 0.5, 1.0])
    dirs = axis_directions([1, 2], 4)
    sd = spread_along(codes, dirs)
    grid = traversal_latents(codes[:3], dirs, sd, steps=7, span=3.0)
    assert grid.shape == (3, 2, 7, 4)
    np.testing.assert_allclose(grid[:, 0, :, 1], np.tile(np.linspace(-3, 3, 7) * sd[0], (3, 1)), rtol=1e-5)
    for other in (0, 2, 3):  # row 0 (dimension 1) keeps every other coordinate of its centre
        np.testing.assert_allclose(grid[:, 0, :, other], np.repeat(codes[:3, other, None], 7, axis=1), rtol=1e-5)
    assert sd[0] == pytest.approx(2.0, rel=0.1)


def test_traversal_along_an_oblique_direction_steps_along_it():
    u = np.array([[0.6, 0.8]], dtype=np.float32)
    grid = traversal_latents(np.zeros((1, 2)), u, np.array([1.0]), steps=3, span=1.0)
    np.testing.assert_allclose(grid[0, 0], [[-0.6, -0.8], [0, 0], [0.6, 0.8]], atol=1e-6)


def test_traversal_refuses_mismatched_shapes_and_bad_dimensions():
    with pytest.raises(ValueError, match="fit together"):
        traversal_latents(np.zeros((1, 3)), np.zeros((1, 2)), np.ones(1))
    with pytest.raises(ValueError, match="outside"):
        axis_directions([5], 4)


def test_typical_codes_picks_the_image_nearest_the_median():
    codes = np.array([[10.0, 10.0], [0.1, 0.0], [-5.0, 3.0], [0.0, 0.2], [0.0, -0.1]])
    assert typical_codes(codes, 1).tolist() == [3]  # the median is (0, 0.2)
    assert typical_codes(codes, 5)[-1] == 0


def test_nearest_neighbours_finds_exact_matches_first():
    ref = torch.randn(300, 16)
    queries = ref[[5, 42, 299]] + 1e-4
    idx, dist = nearest_neighbours(queries, ref, k=3, block_rows=2)
    assert idx[:, 0].tolist() == [5, 42, 299]
    assert (np.diff(dist, axis=1) >= 0).all()
    with pytest.raises(ValueError, match="features"):
        nearest_neighbours(torch.zeros(1, 3), ref)


def test_attribution_rows_put_each_sample_before_its_neighbours():
    samples, train = np.zeros((2, 4, 4)), np.arange(5)[:, None, None] * np.ones((5, 4, 4))
    rows = attribution_rows(samples, train, np.array([[3, 1], [0, 4]]))
    assert rows.shape == (2, 3, 4, 4) and rows[1, 2, 0, 0] == 4 and rows[0, 0].sum() == 0
