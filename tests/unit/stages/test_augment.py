"""Unit tests for genloop.stages.augment: seeded affine + elastic augmentation, the stage and its preview."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from genloop.io.arrays import load_npz, save_npz
from genloop.stages.augment import (
    Transforms, apply_transforms, augment, augment_images, draw_transforms, elastic_field, gaussian_matrix,
)
from genloop.config import AugmentConfig
from genloop.paths import ProjectPaths

IDENTITY = AugmentConfig(copies=1, rotation_degrees=0.0, scale_min=1.0, scale_max=1.0, crop_min=1.0,
                         translate_max=0.0)


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
    image = np.zeros((1, 16, 16), dtype=np.uint8)
    image[0, 5, 10] = 255  # 3.54 px from the image centre (7.5, 7.5): inside the frame at any angle
    config = AugmentConfig(copies=8, rotation_degrees=90.0, scale_min=1.0, scale_max=1.0, crop_min=1.0,
                           translate_max=0.0)
    out = augment_images(image, config, seed=0).astype(np.float64)
    yy, xx = np.mgrid[0:16, 0:16]
    mass = out.sum(axis=(1, 2))
    cy = (out * yy).sum(axis=(1, 2)) / mass
    cx = (out * xx).sum(axis=(1, 2)) / mass
    # a pure rotation about the centre keeps the brightness (roughly: bilinear sampling of one pixel
    # on a rotated lattice sums to 1-1.3x) and the distance from the centre ...
    assert np.all(np.abs(mass - 255) < 0.35 * 255)
    assert np.allclose(np.hypot(cy - 7.5, cx - 7.5), np.hypot(5 - 7.5, 10 - 7.5), atol=0.3)
    # ... but moves the pixel: most of 8 random angles in [-90, 90] degrees shift it visibly
    shift = np.hypot(cy - 5, cx - 10)
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


SHIFT_ONLY = AugmentConfig(copies=1, rotation_degrees=0.0, scale_min=1.0, scale_max=1.0, crop_min=1.0,
                           translate_max=0.25)


def centroid(images: np.ndarray) -> np.ndarray:
    """(N, 2) centre of mass as (x, y) in pixels."""
    img = images.astype(np.float64)
    yy, xx = np.mgrid[0:img.shape[1], 0:img.shape[2]]
    mass = img.sum(axis=(1, 2))
    return np.stack([(img * xx).sum(axis=(1, 2)) / mass, (img * yy).sum(axis=(1, 2)) / mass], axis=1)


def blobs(n: int = 6, size: int = 16) -> np.ndarray:
    images = np.zeros((n, size, size), dtype=np.uint8)
    images[:, 6:10, 6:10] = 200  # 4x4 in the middle: a 25% shift keeps it inside the frame
    return images


def test_explicit_translation_moves_content_right_and_down():
    image = torch.from_numpy(blobs(2)).float().div(255).unsqueeze(1)
    t = Transforms(angle=torch.zeros(2), zoom=torch.ones(2), crop_shift=torch.zeros(2, 2),
                   translate=torch.tensor([[0.25, 0.0], [0.0, -0.125]]))
    out = apply_transforms(image, t).squeeze(1).mul(255).round().numpy()
    shift = centroid(out) - centroid(blobs(2))
    np.testing.assert_allclose(shift, [[4.0, 0.0], [0.0, -2.0]], atol=1e-6)  # 0.25 and -0.125 of 16 px


def test_random_translation_moves_mass_by_the_drawn_shift():
    images = blobs(6)
    out = augment_images(images, SHIFT_ONLY, seed=5)
    drawn = draw_transforms(6, (16, 16), SHIFT_ONLY, torch.Generator().manual_seed(5)).translate.numpy()
    shift = centroid(out) - centroid(images)
    np.testing.assert_allclose(shift, drawn * 16, atol=0.15)  # uint8 rounding only
    assert np.abs(drawn).max() > 0.1  # the draws really moved something
    assert np.all(np.abs(drawn) <= 0.25)


def test_elastic_warp_is_deterministic_per_seed_and_changes_the_image():
    images = digit_like(8)
    warp = IDENTITY.model_copy(update={"elastic": True, "elastic_alpha": 6.0, "elastic_sigma": 1.5})
    a = augment_images(images, warp, seed=1)
    np.testing.assert_array_equal(a, augment_images(images, warp, seed=1))
    assert not np.array_equal(a, augment_images(images, warp, seed=2))
    changed = np.abs(a.astype(np.int16) - images.astype(np.int16)).max(axis=(1, 2))
    assert np.all(changed > 20)  # every image visibly warped, where identity settings change nothing
    t = draw_transforms(8, (8, 8), warp, torch.Generator().manual_seed(1))
    assert t.displacement is not None and t.displacement.shape == (8, 8, 8, 2)
    assert draw_transforms(8, (8, 8), IDENTITY, torch.Generator()).displacement is None


def test_elastic_warp_is_smooth_at_sigma():
    field = elastic_field(4, (28, 28), alpha=34.0, sigma=4.0, generator=torch.Generator().manual_seed(0))
    neighbour_step = (field[:, 1:] - field[:, :-1]).abs().mean()
    assert field.abs().mean() > 0.3  # pixels move ...
    assert neighbour_step < 0.35 * field.abs().mean()  # ... together with their neighbours


def test_augment_stage_saves_preview_of_originals_beside_copies(tmp_path):
    paths = ProjectPaths.at(tmp_path)
    images = digit_like(6)
    save_npz(paths.clean / "train.npz", images=images, labels=np.arange(6, dtype=np.int64),
             ids=np.arange(6, dtype=np.int64))
    config = AugmentConfig(copies=2, preview_images=4)

    result = augment(config, paths, seed=0)

    assert result.preview == paths.augment / "preview.png"
    preview = np.asarray(Image.open(result.preview).convert("L"))
    cell, pad = 7 * 8, 2  # 8x8 tiles upscaled 7x, 2 px apart; 2 groups of (original, copy, copy) per row
    assert preview.shape == (2 * (cell + pad) + pad, 6 * (cell + pad) + pad)
    extra = load_npz(result.output)["images"][6:]

    def tile(row: int, col: int) -> np.ndarray:
        y, x = pad + row * (cell + pad), pad + col * (cell + pad)
        return preview[y:y + cell, x:x + cell][::7, ::7]

    np.testing.assert_array_equal(tile(0, 0), images[0])
    np.testing.assert_array_equal(tile(0, 1), extra[0])  # copy 1 of image 0
    np.testing.assert_array_equal(tile(0, 2), extra[6])  # copy 2 of image 0
    np.testing.assert_array_equal(tile(1, 3), images[3])
    np.testing.assert_array_equal(tile(1, 5), extra[6 + 3])


def test_gaussian_matrix_blurs_like_a_zero_padded_convolution():
    sigma, radius = 1.5, 5
    x = torch.arange(-radius, radius + 1, dtype=torch.float32)
    kernel = torch.exp(-0.5 * (x / sigma) ** 2)
    kernel /= kernel.sum()
    signal = torch.rand(3, 1, 1, 12, generator=torch.Generator().manual_seed(0))
    by_conv = torch.nn.functional.conv2d(signal, kernel.view(1, 1, 1, -1), padding=(0, radius))
    by_matrix = signal @ gaussian_matrix(12, sigma).T
    torch.testing.assert_close(by_matrix, by_conv)


ROTATE = AugmentConfig(copies=1, rotation_degrees=45.0, scale_min=1.0, scale_max=1.0, crop_min=1.0)


def test_fill_white_keeps_a_white_background_white_where_black_darkens_the_corners():
    """Images on white (the emoji source) rotated with the default black fill get dark corners, which
    a GAN trained on the copies learns; fill white leaves a white image white."""
    white = np.full((4, 16, 16, 3), 255, dtype=np.uint8)
    black_filled = augment_images(white, ROTATE, seed=0)
    white_filled = augment_images(white, ROTATE.model_copy(update={"fill": "white"}), seed=0)
    assert black_filled.min() < 128  # dark wedges where the rotation reads outside the image
    assert white_filled.min() == 255


def test_fill_border_repeats_the_edge_colour():
    flat = np.full((4, 16, 16, 3), (200, 40, 90), dtype=np.uint8)
    out = augment_images(flat, ROTATE.model_copy(update={"fill": "border"}), seed=0)
    assert np.abs(out.astype(int) - flat.astype(int)).max() <= 1


def test_black_fill_is_the_default_and_unchanged():
    images = digit_like(12)
    assert AugmentConfig().fill == "black"
    explicit = augment_images(images, AugmentConfig(fill="black"), seed=3)
    np.testing.assert_array_equal(augment_images(images, AugmentConfig(), seed=3), explicit)
