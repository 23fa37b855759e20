"""Unit tests for genloop.augment: seeded affine augmentation and the augment stage."""
from __future__ import annotations

import numpy as np
import pytest

from genloop.arrays import load_npz, save_npz
from genloop.augment import augment, augment_images
from genloop.config import AugmentConfig
from genloop.paths import ProjectPaths

IDENTITY = AugmentConfig(copies=1, rotation_degrees=0.0, scale_min=1.0, scale_max=1.0, crop_min=1.0)


def digit_like(n: int = 12, seed: int = 0) -> np.ndarray:
    """Images with a bright random blob in the middle and a dark border."""
    rng = np.random.default_rng(seed)
    images = np.zeros((n, 8, 8), dtype=np.uint8)
    images[:, 2:6, 2:6] = rng.integers(60, 256, size=(n, 4, 4), dtype=np.uint8)
    return images


@pytest.mark.parametrize("copies", [1, 3])
def test_output_count_shape_and_dtype(copies):
    images = digit_like(10)
    out = augment_images(images, AugmentConfig(copies=copies), seed=0)
    assert out.shape == (copies * 10, 8, 8)
    assert out.dtype == np.uint8


def test_zero_copies_gives_empty_array():
    out = augment_images(digit_like(4), AugmentConfig(copies=0), seed=0)
    assert out.shape == (0, 8, 8) and out.dtype == np.uint8


def test_same_seed_same_output_different_seed_different_output():
    images = digit_like(16)
    config = AugmentConfig(copies=2)
    a = augment_images(images, config, seed=3)
    b = augment_images(images, config, seed=3)
    c = augment_images(images, config, seed=4)
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)


def test_batch_size_does_not_change_shape():
    images = digit_like(10)
    out = augment_images(images, AugmentConfig(copies=2, batch_size=3), seed=0)
    assert out.shape == (20, 8, 8)


def test_identity_settings_reproduce_input():
    images = digit_like(8)
    out = augment_images(images, IDENTITY, seed=0)
    diff = np.abs(out.astype(np.int16) - images.astype(np.int16))
    assert diff.max() <= 1


def test_default_settings_change_images():
    images = digit_like(8)
    out = augment_images(images, AugmentConfig(copies=1), seed=0)
    assert not np.array_equal(out, images)


def test_rotated_single_pixel_moves_on_a_circle():
    image = np.zeros((1, 8, 8), dtype=np.uint8)
    image[0, 1, 6] = 255  # off-centre: 3.54 px from the image centre (3.5, 3.5)
    config = AugmentConfig(copies=8, rotation_degrees=90.0, scale_min=1.0, scale_max=1.0, crop_min=1.0)
    out = augment_images(image, config, seed=0).astype(np.float64)
    yy, xx = np.mgrid[0:8, 0:8]
    mass = out.sum(axis=(1, 2))
    cy = (out * yy).sum(axis=(1, 2)) / mass
    cx = (out * xx).sum(axis=(1, 2)) / mass
    # a pure rotation about the centre keeps the brightness and the distance from the centre ...
    assert np.all(np.abs(mass - 255) < 0.15 * 255)
    assert np.allclose(np.hypot(cy - 3.5, cx - 3.5), np.hypot(1 - 3.5, 6 - 3.5), atol=0.3)
    # ... but moves the pixel: most of 8 random angles in [-90, 90] degrees shift it visibly
    shift = np.hypot(cy - 1, cx - 6)
    assert (shift > 0.3).sum() >= 4
    assert shift.max() > 1.0


def test_augment_stage_writes_originals_plus_copies(tmp_path):
    paths = ProjectPaths.at(tmp_path)
    images = digit_like(6)
    labels = np.array([0, 1, 2, 3, 4, 5], dtype=np.int64)
    save_npz(paths.clean / "train.npz", images=images, labels=labels, ids=np.arange(6, dtype=np.int64))
    config = AugmentConfig(copies=2)

    result = augment(config, paths, seed=11)

    assert result.originals == 6
    assert result.augmented == 12
    assert result.output == paths.augment / "train.npz"
    out = load_npz(result.output)
    assert out["images"].shape == (18, 8, 8) and out["images"].dtype == np.uint8
    np.testing.assert_array_equal(out["images"][:6], images)  # originals first, unchanged
    np.testing.assert_array_equal(out["labels"], np.concatenate([labels, labels, labels]))
    np.testing.assert_array_equal(out["augmented"], [False] * 6 + [True] * 12)
    np.testing.assert_array_equal(out["images"][6:], augment_images(images, config, seed=11))

    # same seed, same bytes: DVC sees an unchanged output
    first = result.output.read_bytes()
    augment(config, paths, seed=11)
    assert result.output.read_bytes() == first


def test_augment_stage_without_clean_output_says_so(tmp_path):
    with pytest.raises(FileNotFoundError, match="genloop clean"):
        augment(AugmentConfig(), ProjectPaths.at(tmp_path), seed=0)
