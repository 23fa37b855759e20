"""Unit tests for genloop.stages.clean (with the Great Expectations suite in genloop.io.validation)."""
from __future__ import annotations

import hashlib
import json
from collections import Counter

import numpy as np
import pandas as pd
import pytest

from genloop.io.arrays import load_npz
from genloop.io.datasets import content_hash, load_split
from genloop.io.validation import DataValidationError
from genloop.stages.clean import clean, split_of
from genloop.stages.collect import build_manifest, write_dataset
from genloop.config import CleanConfig, SplitConfig
from genloop.paths import ProjectPaths
from genloop.io.sources import SourceBatch


def random_data(n: int = 200, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 256, size=(n, 8, 8), dtype=np.uint8)
    labels = np.arange(n, dtype=np.int64) % 10
    return images, labels


def write(paths: ProjectPaths, images: np.ndarray, labels: np.ndarray) -> None:
    manifest = build_manifest(SourceBatch(images, labels, "test"))
    write_dataset(paths.data, images, manifest)


def split_ids(paths: ProjectPaths) -> dict[str, np.ndarray]:
    return {s: load_npz(paths.clean / f"{s}.npz")["ids"] for s in ("train", "val", "test")}


def test_clean_data_passes(tmp_path):
    paths = ProjectPaths.at(tmp_path)
    images, labels = random_data()
    write(paths, images, labels)

    result = clean(CleanConfig(), paths)

    assert result.checked == 200
    assert result.passed == 200
    assert result.quarantined == 0
    assert result.by_reason == {}
    assert sum(result.split_sizes.values()) == 200
    assert all(size > 0 for size in result.split_sizes.values())

    ids = split_ids(paths)
    assert {s: len(v) for s, v in ids.items()} == result.split_sizes
    all_ids = np.concatenate(list(ids.values()))
    assert sorted(all_ids.tolist()) == list(range(200))  # every row in exactly one split

    train_images, train_labels = load_split(paths, "train")
    assert train_images.dtype == np.uint8 and train_images.shape[1:] == (8, 8)
    np.testing.assert_array_equal(train_images, images[ids["train"]])
    np.testing.assert_array_equal(train_labels, labels[ids["train"]])

    report = json.loads(result.report.read_text())
    assert result.report == paths.reports / "validation.json"
    assert report["quarantined"] == 0 and report["dataset_failures"] == []
    assert report["expectations"] and all(e["success"] for e in report["expectations"])

    quarantine = pd.read_csv(paths.clean / "quarantine.csv")
    assert len(quarantine) == 0
    assert "reason" in quarantine.columns


def test_bad_rows_are_quarantined_not_deleted(tmp_path):
    paths = ProjectPaths.at(tmp_path)
    images, labels = random_data()
    images[3] = 0  # blank
    images[5] = images[4]  # duplicate content of row 4
    labels[7] = -1  # no label: out of set
    write(paths, images, labels)
    data_before = (paths.images.read_bytes(), paths.manifest.read_bytes())

    result = clean(CleanConfig(), paths)

    assert result.quarantined == 3
    assert result.passed == 197
    assert result.by_reason == {"blank_image": 1, "duplicate_content": 1, "label_out_of_set": 1}
    assert sum(result.split_sizes.values()) == 197

    quarantine = pd.read_csv(paths.clean / "quarantine.csv")
    assert dict(zip(quarantine["id"], quarantine["reason"])) == {
        3: "blank_image",
        5: "duplicate_content",
        7: "label_out_of_set",
    }
    assert quarantine.set_index("id").loc[7, "label"] == -1
    assert quarantine.set_index("id").loc[5, "content_hash"] == content_hash(images[4])

    kept = np.concatenate(list(split_ids(paths).values()))
    assert not {3, 5, 7} & set(kept.tolist())
    assert 4 in kept  # the first copy of a duplicate stays

    # nothing removed from the collected data
    assert (paths.images.read_bytes(), paths.manifest.read_bytes()) == data_before
    assert np.load(paths.images).shape == (200, 8, 8)


def test_row_with_several_problems_lists_each_reason(tmp_path):
    paths = ProjectPaths.at(tmp_path)
    images, labels = random_data()
    images[10] = 0
    labels[10] = -1
    write(paths, images, labels)
    clean(CleanConfig(), paths)
    quarantine = pd.read_csv(paths.clean / "quarantine.csv")
    assert quarantine["id"].tolist() == [10]
    assert set(quarantine["reason"].iloc[0].split(";")) == {"blank_image", "label_out_of_set"}


def test_too_few_rows_fails_and_keeps_previous_output(tmp_path):
    paths = ProjectPaths.at(tmp_path)
    images, labels = random_data()
    write(paths, images, labels)
    clean(CleanConfig(), paths)
    before = {p.name: p.read_bytes() for p in paths.clean.iterdir()}

    with pytest.raises(DataValidationError) as info:
        clean(CleanConfig(min_rows=500), paths)

    message = str(info.value)
    assert "reports/validation.json" in message
    assert "min_rows" in message
    assert {p.name: p.read_bytes() for p in paths.clean.iterdir()} == before
    report = json.loads((paths.reports / "validation.json").read_text())
    assert report["dataset_failures"] and "500" in report["dataset_failures"][0]


def test_quarantine_share_above_limit_raises(tmp_path):
    paths = ProjectPaths.at(tmp_path)
    images, labels = random_data()
    labels[:20] = -1  # 10% of rows, limit is 5%
    write(paths, images, labels)

    with pytest.raises(DataValidationError, match="max_quarantine_share") as info:
        clean(CleanConfig(max_quarantine_share=0.05), paths)
    assert "validation.json" in str(info.value)
    assert not paths.clean.exists()  # nothing published
    report = json.loads((paths.reports / "validation.json").read_text())
    assert report["quarantined"] == 20
    assert report["by_reason"] == {"label_out_of_set": 20}

    # the same data passes once the limit allows it
    result = clean(CleanConfig(max_quarantine_share=0.2), paths)
    assert result.quarantined == 20


def test_quarantine_failure_names_reasons_and_labels_outside_clean_labels(tmp_path):
    """A source with 12 classes under an explicit list of 10 labels: the error says why and what to set."""
    paths = ProjectPaths.at(tmp_path)
    images, labels = random_data(240)
    labels = np.arange(240, dtype=np.int64) % 12
    write(paths, images, labels)

    with pytest.raises(DataValidationError) as info:
        clean(CleanConfig(labels=list(range(10))), paths)
    message = str(info.value)
    assert "(label_out_of_set 40)" in message
    assert "labels 10, 11 are not in clean.labels (0, 1, 2, 3, 4, 5, 6, 7, 8, 9)" in message
    assert "clean.labels: all" in message


def test_default_clean_labels_keep_every_class_of_a_twelve_class_source(tmp_path):
    """The shipped default (all) passes every class label found, however many; -1 (no label) is still
    quarantined as label_out_of_set, and an explicit list keeps working."""
    paths = ProjectPaths.at(tmp_path)
    images, _ = random_data(240)
    labels = np.arange(240, dtype=np.int64) % 12
    labels[0] = -1
    write(paths, images, labels)

    result = clean(CleanConfig(), paths)
    assert result.quarantined == 1 and result.by_reason == {"label_out_of_set": 1}
    kept = np.concatenate([np.load(paths.clean / f"{s}.npz")["labels"] for s in ("train", "val", "test")])
    assert sorted(set(kept.tolist())) == list(range(12))
    assert clean(CleanConfig(labels=[-1, *range(12)]), paths).quarantined == 0


def test_empty_clean_labels_are_refused():
    with pytest.raises(ValueError, match="use all"):
        CleanConfig(labels=[])


def test_split_of_is_deterministic():
    h = content_hash(np.full((8, 8), 7, dtype=np.uint8))
    assert len({split_of(h, 0.15, 0.15) for _ in range(5)}) == 1
    assert split_of(h, 0.0, 0.0) == "train"
    assert split_of(h, 0.0, 0.999999) == "test"


def test_split_is_stable_when_images_are_appended(tmp_path):
    paths = ProjectPaths.at(tmp_path)
    images, labels = random_data(200, seed=1)
    write(paths, images, labels)
    clean(CleanConfig(), paths)
    first = {s: {content_hash(images[i]) for i in ids} for s, ids in split_ids(paths).items()}

    more_images, more_labels = random_data(100, seed=2)
    all_images = np.concatenate([images, more_images])
    all_labels = np.concatenate([labels, more_labels])
    write(paths, all_images, all_labels)
    clean(CleanConfig(), paths)
    second = {s: {content_hash(all_images[i]) for i in ids} for s, ids in split_ids(paths).items()}

    for split in first:
        assert first[split] <= second[split], f"images moved out of {split}"
    assert sum(len(v) for v in second.values()) == 300


def test_split_fractions_roughly_follow_config():
    hashes = [hashlib.sha256(str(i).encode()).hexdigest() for i in range(2000)]
    config = SplitConfig(val=0.2, test=0.1)
    counts = {"train": 0, "val": 0, "test": 0}
    for h in hashes:
        counts[split_of(h, config.val, config.test)] += 1
    # binomial sd is about 18 (val) and 13 (test); allow roughly 4 sd
    assert abs(counts["val"] - 400) < 75
    assert abs(counts["test"] - 200) < 55
    assert abs(counts["train"] - 1400) < 85


def test_summary_counts_by_reason_match_the_quarantine_table(tmp_path):
    paths = ProjectPaths.at(tmp_path)
    images, labels = random_data()
    images[3] = 0  # blank
    images[8] = 9  # blank as well (a different grey, so not a duplicate of row 3)
    images[5] = images[4]  # duplicate content
    labels[[7, 8]] = -1  # label out of set; row 8 is blank too
    write(paths, images, labels)

    result = clean(CleanConfig(), paths)

    quarantine = pd.read_csv(paths.clean / "quarantine.csv")
    from_table = Counter(r for reasons in quarantine["reason"] for r in reasons.split(";"))
    assert result.by_reason == dict(from_table) == {"blank_image": 2, "duplicate_content": 1, "label_out_of_set": 2}
    assert result.quarantined == len(quarantine) == 4
    report = json.loads(result.report.read_text())
    assert report["by_reason"] == dict(from_table)
    assert (report["checked"], report["passed"], report["quarantined"]) == (200, 196, 4)
    summary = result.summary()
    assert "checked 200, passed 196, quarantined 4" in summary
    assert "quarantined by reason: blank_image 2, duplicate_content 1, label_out_of_set 2" in summary
    assert f"near-duplicates across splits (RMS < 0.03): {result.near_duplicates}" in summary
    assert str(paths.reports / "data_docs" / "index.html") in summary
