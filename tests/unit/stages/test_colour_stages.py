"""clean and augment on colour data (N, H, W, 3): the GE suite checks channels and size, the splits keep
the channels, near-duplicates are found in colour, augmentation moves every channel alike and its
colour jitter is off unless asked. Real files in data/ and outputs/, real Great Expectations runs."""
from __future__ import annotations

import json

import numpy as np
import pytest
from click.testing import CliRunner

from genloop.cli import main
from genloop.config import AugmentConfig, CleanConfig
from genloop.io.datasets import content_hash
from genloop.paths import ProjectPaths
from genloop.stages.augment import augment, augment_images
from genloop.io.validation import DataValidationError
from genloop.stages.clean import clean
from genloop.stages.collect import SourceBatch, build_manifest, write_dataset

IDENTITY = dict(rotation_degrees=0.0, scale_min=1.0, scale_max=1.0, crop_min=1.0)


def colour_data(n: int = 40, side: int = 8, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, (n, side, side, 3), dtype=np.uint8), np.arange(n) % 3


def write(paths: ProjectPaths, images: np.ndarray, labels: np.ndarray) -> None:
    batch = SourceBatch(images=images, labels=labels.astype(np.int64), source="test")
    write_dataset(paths.data, images, build_manifest(batch))


def test_clean_keeps_colour_in_every_split_and_checks_channels_in_the_suite(tmp_path):
    paths = ProjectPaths.at(tmp_path)
    images, labels = colour_data()
    # a held-out near-copy of some training image: add 1 grey level to every channel of each image's twin
    twins = np.clip(images.astype(int) + 1, 0, 255).astype(np.uint8)
    write(paths, np.concatenate([images, twins]), np.concatenate([labels, labels]))

    result = clean(CleanConfig(min_rows=10), paths)

    for split in ("train", "val", "test"):
        stored = np.load(paths.clean / f"{split}.npz")["images"]
        assert stored.ndim == 4 and stored.shape[1:] == (8, 8, 3)
    report = json.loads(paths.validation_report.read_text())
    checked = {(e["expectation"], e["column"]) for e in report["expectations"]}
    assert ("expect_column_values_to_be_in_set", "channels") in checked
    assert result.near_duplicates > 0  # twins split apart from their originals are found in colour
    assert (paths.data_docs / "index.html").is_file()


def test_pixels_that_no_longer_match_the_recorded_channels_are_refused(tmp_path):
    paths = ProjectPaths.at(tmp_path)
    images, labels = colour_data(20)
    write(paths, images, labels)
    np.save(paths.images, np.ascontiguousarray(images[..., 0]), allow_pickle=False)  # grey now, manifest says 3

    with pytest.raises(DataValidationError, match="quarantined"):
        clean(CleanConfig(min_rows=10), paths)
    report = json.loads(paths.validation_report.read_text())
    assert report["by_reason"] == {"wrong_shape": 20}


def test_too_few_rows_is_one_error_line_naming_the_setting_and_value(tmp_path):
    paths = ProjectPaths.at(tmp_path)
    images, labels = colour_data(60)
    write(paths, images, labels)

    result = CliRunner().invoke(main, ["--root", str(tmp_path), "clean", "--no-mlflow"])

    assert result.exit_code == 1 and "Traceback" not in result.output
    errors = [line for line in result.output.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "60 rows, fewer than clean.min_rows=100" in errors[0]
    assert "-S clean.min_rows=60" in errors[0]


def test_augment_moves_every_channel_alike():
    images, _ = colour_data(12, side=10)
    config = AugmentConfig(copies=2, elastic=True, translate_max=0.1)

    colour = augment_images(images, config, seed=3)

    assert colour.shape == (24, 10, 10, 3) and colour.dtype == np.uint8
    for k in range(3):  # each channel warped exactly as that channel alone would be
        assert np.array_equal(colour[..., k], augment_images(np.ascontiguousarray(images[..., k]), config, seed=3))


def test_colour_jitter_is_off_by_default_and_changes_colours_not_geometry_when_on():
    images, _ = colour_data(6)
    still = augment_images(images, AugmentConfig(**IDENTITY), seed=0)
    jittered = augment_images(images, AugmentConfig(**IDENTITY, colour_jitter=0.5), seed=0)
    grey = augment_images(np.ascontiguousarray(images[..., 0]), AugmentConfig(**IDENTITY, colour_jitter=0.5), seed=0)

    assert AugmentConfig().colour_jitter == 0.0
    assert np.array_equal(still, images)  # identity geometry, no jitter: the same bytes
    assert not np.array_equal(jittered, images) and jittered.shape == images.shape
    flat = np.full((1, 8, 8, 3), [200, 40, 90], np.uint8)
    out = augment_images(flat, AugmentConfig(**IDENTITY, colour_jitter=0.5), seed=1)
    assert (out == out[0, 0, 0]).all(axis=-1).all()  # one colour per image stays one colour: no warp
    assert grey.shape == (6, 8, 8)


def test_augment_stage_writes_colour_originals_copies_and_preview(tmp_path):
    paths = ProjectPaths.at(tmp_path)
    images, labels = colour_data(40)
    write(paths, images, labels)
    clean(CleanConfig(min_rows=10), paths)

    result = augment(AugmentConfig(copies=1, preview_images=4), paths, seed=0)

    stored = np.load(result.output)
    assert stored["images"].shape == (2 * result.originals, 8, 8, 3)
    assert result.preview is not None and result.preview.stat().st_size > 0
    assert content_hash(stored["images"][0]) != content_hash(stored["images"][result.originals])
