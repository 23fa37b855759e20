"""Morpho-MNIST-style measures on synthetic shapes whose answers are known."""
from __future__ import annotations

import math

import numpy as np
import pytest

from genloop.core.morphometrics import MEASURES, as_matrix, binarise, measure, skeletons


def bar(width: int = 3, height: int = 20, shear: float = 0.0, size: int = 28, value: int = 255) -> np.ndarray:
    """A bar ``width`` columns wide and ``height`` rows tall, centred, its top shifted right by ``shear``
    columns per row up (positive: leaning right)."""
    img = np.zeros((size, size), dtype=np.uint8)
    top = (size - height) // 2
    centre_row = top + (height - 1) / 2
    for r in range(top, top + height):
        left = int(round(size / 2 - width / 2 + shear * (centre_row - r)))
        img[r, left:left + width] = value
    return img


def box(width: int, height: int, size: int = 28) -> np.ndarray:
    img = np.zeros((size, size), dtype=np.uint8)
    top, left = (size - height) // 2, (size - width) // 2
    img[top:top + height, left:left + width] = 255
    return img


def one(img: np.ndarray, **kw) -> dict[str, float]:
    return {k: float(v[0]) for k, v in measure(img[None], **kw).items()}


def test_vertical_bar_has_no_slant_and_its_known_size():
    m = one(bar(width=3, height=20))
    assert abs(m["slant"]) < 1e-9
    assert m["area"] == 60
    assert m["width"] == pytest.approx(3) and m["height"] == 20
    assert m["thickness"] == pytest.approx(3.0, abs=0.4)
    assert m["length"] == pytest.approx(20, abs=3)


@pytest.mark.parametrize("shear", [0.25, -0.25, 0.5])
def test_sheared_bar_slant_is_the_shear_angle_and_deslanting_restores_its_width(shear):
    m = one(bar(width=3, height=20, shear=shear))
    assert m["slant"] == pytest.approx(math.atan(shear), abs=0.03)
    assert m["width"] == pytest.approx(3, abs=1.0)
    assert m["height"] == 20


def test_thicker_bar_is_thicker_and_longer_bar_is_longer():
    thin, thick = one(bar(width=2)), one(bar(width=6))
    assert thick["thickness"] > thin["thickness"] + 3
    assert one(bar(height=24))["length"] > one(bar(height=12))["length"] + 8


def test_wider_box_is_wider_and_taller_box_is_taller():
    assert one(box(16, 10))["width"] == 16 and one(box(8, 10))["width"] == 8
    assert one(box(8, 20))["height"] == 20 and one(box(8, 10))["height"] == 10


def test_batch_measures_match_single_images_so_tiles_do_not_touch():
    imgs = np.stack([bar(width=w, shear=s) for w, s in [(3, 0), (5, 0.3), (2, -0.2), (8, 0)]] + [box(26, 26, 28)])
    batch = measure(imgs)
    for i, img in enumerate(imgs):
        single = measure(img[None])
        for k in MEASURES:
            assert batch[k][i] == pytest.approx(single[k][0]), (k, i)


def test_skeleton_of_a_full_frame_box_stays_inside_its_tile():
    masks = np.ones((4, 10, 10), dtype=bool)
    sk = skeletons(masks)
    assert sk.shape == masks.shape and sk.sum(axis=(1, 2)).min() > 0
    assert len(set(sk.sum(axis=(1, 2)).tolist())) == 1


def test_empty_image_gives_nan_not_an_error():
    m = measure(np.zeros((2, 28, 28), dtype=np.uint8))
    assert all(np.isnan(v).all() for v in m.values())


def test_brightness_does_not_change_the_measures():
    a, b = one(bar(width=4, shear=0.2)), one(bar(width=4, shear=0.2, value=90))
    assert a == pytest.approx(b)


def test_dark_digit_on_white_is_measured_like_the_bright_one():
    img = bar(width=4, shear=0.2)
    assert one(255 - img) == pytest.approx(one(img))


def test_colour_image_is_measured_on_its_luminance():
    grey = bar(width=4, shear=0.3)
    red = np.zeros((28, 28, 3), dtype=np.uint8)
    red[..., 0] = grey
    assert one(red) == pytest.approx(one(grey))


def test_float_images_in_unit_range_match_uint8():
    img = bar(width=5)
    assert one(img.astype(np.float32) / 255) == pytest.approx(one(img))


def test_channels_first_input_is_refused_with_its_shape():
    with pytest.raises(ValueError, match="channels-first"):
        measure(np.zeros((2, 3, 28, 28), dtype=np.uint8))


def test_upsampling_keeps_units_in_original_pixels():
    m1, m4 = one(bar(width=4, height=20)), one(bar(width=4, height=20), scale=4)
    assert m4["area"] == pytest.approx(m1["area"], rel=0.15)
    assert m4["height"] == pytest.approx(m1["height"], abs=1.0)


def test_binarise_threshold_is_relative_to_each_image():
    img = np.array([[[0, 100, 200]]], dtype=np.float32)
    assert binarise(img, 0.5, "bright").tolist() == [[[False, True, True]]]
    with pytest.raises(ValueError):
        binarise(img, 0.0)


def test_as_matrix_orders_columns_by_name():
    m = measure(np.stack([bar(width=2), bar(width=6)]))
    mat = as_matrix(m)
    assert mat.shape == (2, len(MEASURES))
    assert mat[1, MEASURES.index("thickness")] > mat[0, MEASURES.index("thickness")]
