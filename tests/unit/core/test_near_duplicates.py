"""Near-duplicates across splits: found when planted, absent from a clean set, reported not moved."""
from __future__ import annotations

import json

import numpy as np
import pandas as pd

from genloop.core import near_duplicates
from genloop.io.arrays import load_npz
from genloop.stages.clean import clean, split_of
from genloop.io.datasets import content_hash
from genloop.stages.collect import build_manifest, write_dataset
from genloop.config import CleanConfig
from genloop.core.near_duplicates import COLUMNS, find_near_duplicates, nearest_rms
from genloop.paths import ProjectPaths
from genloop.io.sources import SourceBatch


def random_images(n: int, seed: int, size: int = 8) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, size=(n, size, size), dtype=np.uint8)


def write(paths: ProjectPaths, images: np.ndarray) -> None:
    labels = np.arange(len(images), dtype=np.int64) % 10
    write_dataset(paths.data, images, build_manifest(SourceBatch(images, labels, "test")))


def split_for(image: np.ndarray, config: CleanConfig) -> str:
    return split_of(content_hash(image), config.split.val, config.split.test)


def plant_near_duplicate(images: np.ndarray, config: CleanConfig) -> tuple[int, int, np.ndarray]:
    """A slightly brightened copy of a training image that the content hash sends to val or test."""
    for source in range(len(images)):
        if split_for(images[source], config) != "train":
            continue
        for step in range(1, 40):
            copy = images[source].astype(np.int16)
            copy[0, :step % 8 + 1] += step // 8 + 1  # a few grey levels on a few pixels
            copy = np.clip(copy, 0, 255).astype(np.uint8)
            if split_for(copy, config) != "train":
                return source, len(images), copy
    raise AssertionError("no perturbation landed outside train")


def test_nearest_rms_matches_brute_force_in_small_chunks(monkeypatch):
    queries, train = random_images(37, 1), random_images(53, 2)
    monkeypatch.setattr(near_duplicates, "CHUNK_ELEMENTS", 53 * 4)  # 4 queries per chunk
    index, distance = nearest_rms(queries, train)
    q = queries.reshape(37, -1) / 255.0
    t = train.reshape(53, -1) / 255.0
    full = np.sqrt(((q[:, None, :] - t[None, :, :]) ** 2).mean(axis=2))
    np.testing.assert_array_equal(index, full.argmin(axis=1))
    np.testing.assert_allclose(distance, full.min(axis=1), atol=1e-9)


def test_only_held_out_rows_below_threshold_are_reported():
    train = random_images(20, 3)
    brighter = np.clip(train[[4]].astype(np.int16) + 1, 0, 255).astype(np.uint8)
    images = np.concatenate([train, brighter, train[[9]]])  # near copy of row 4, exact copy of row 9
    images[-1, 0, 0] ^= 0x80  # one pixel moved by half the range: RMS 0.0625 on 8x8
    splits = np.array(["train"] * 20 + ["val", "test"])
    ids = np.arange(100, 122)
    labels = np.arange(22) % 10
    table = find_near_duplicates(images, ids, labels, splits, threshold=0.03)
    assert list(table.columns) == COLUMNS
    assert table[["id", "split", "train_id"]].values.tolist() == [[120, "val", 104]]
    assert 0 < table["distance"].iloc[0] < 0.01  # one grey level everywhere: 1/255
    wider = find_near_duplicates(images, ids, labels, splits, threshold=0.1)
    assert wider["id"].tolist() == [120, 121] and wider["train_id"].tolist() == [104, 109]


def test_clean_reports_planted_near_duplicate_and_keeps_splits(tmp_path):
    config = CleanConfig()
    paths = ProjectPaths.at(tmp_path)
    images = random_images(200, 4)
    source, planted_id, copy = plant_near_duplicate(images, config)
    images = np.concatenate([images, copy[None]])
    write(paths, images)

    result = clean(config, paths)

    csv = pd.read_csv(paths.reports / "near_duplicates.csv")
    assert list(csv.columns) == COLUMNS
    assert csv[["id", "train_id"]].values.tolist() == [[planted_id, source]]
    assert csv["split"].iloc[0] == split_for(copy, config) != "train"
    assert csv["distance"].iloc[0] < config.near_duplicate_distance
    assert result.near_duplicates == 1
    assert sum(result.near_duplicates_by_split.values()) == 1
    report = json.loads(result.report.read_text())
    assert report["near_duplicates"]["count"] == 1
    assert report["near_duplicates"]["by_split"] == result.near_duplicates_by_split
    assert report["near_duplicates"]["report"] == "reports/near_duplicates.csv"
    assert "near-duplicates across splits (RMS < 0.03): 1" in result.summary()
    # reported only: both images stay, each in the split its content hash gives
    split = {s: load_npz(paths.clean / f"{s}.npz")["ids"].tolist() for s in ("train", "val", "test")}
    assert source in split["train"] and planted_id in split[csv["split"].iloc[0]]


def test_clean_set_reports_no_near_duplicates(tmp_path):
    paths = ProjectPaths.at(tmp_path)
    write(paths, random_images(200, 5))
    result = clean(CleanConfig(), paths)
    assert result.near_duplicates == 0
    assert pd.read_csv(paths.reports / "near_duplicates.csv").empty
    assert json.loads(result.report.read_text())["near_duplicates"]["count"] == 0
