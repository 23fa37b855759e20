"""Unit tests for genloop.io.atomic (atomic file/folder writes) and genloop.io.arrays (reproducible npz)."""
from __future__ import annotations

import json
import time
import zipfile

import numpy as np
import pytest

from genloop.io.arrays import load_npz, save_npz
from genloop.io.atomic import atomic_dir, atomic_path, write_json, write_text, write_with


def _leftovers(folder):
    """Temp files/folders the atomic helpers may have left behind (they all start with a dot)."""
    return sorted(p.name for p in folder.iterdir() if p.name.startswith("."))


def test_write_json_creates_and_replaces(tmp_path):
    target = tmp_path / "sub" / "report.json"
    write_json(target, {"b": 1, "a": [1, 2]})
    assert json.loads(target.read_text()) == {"a": [1, 2], "b": 1}
    write_json(target, {"c": 3})
    assert json.loads(target.read_text()) == {"c": 3}
    assert target.read_text().endswith("\n")
    assert _leftovers(target.parent) == []


def test_write_json_is_deterministic(tmp_path):
    a, b = tmp_path / "a.json", tmp_path / "b.json"
    write_json(a, {"z": 1, "a": 2})
    write_json(b, {"a": 2, "z": 1})
    assert a.read_bytes() == b.read_bytes()


def test_failing_writer_leaves_old_file_and_no_temp(tmp_path):
    target = tmp_path / "model.bin"
    write_text(target, "old")

    def bad_writer(tmp):
        tmp.write_text("half-written")
        raise RuntimeError("disk on fire")

    with pytest.raises(RuntimeError, match="disk on fire"):
        write_with(target, bad_writer)
    assert target.read_text() == "old"
    assert _leftovers(tmp_path) == []


def test_atomic_path_failure_inside_block(tmp_path):
    target = tmp_path / "out.txt"
    target.write_text("old")
    with pytest.raises(KeyboardInterrupt):
        with atomic_path(target) as tmp:
            assert tmp.parent == target.parent and tmp != target
            tmp.write_text("new")
            raise KeyboardInterrupt  # BaseException too must not publish
    assert target.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["out.txt"]


def test_atomic_path_success_publishes(tmp_path):
    target = tmp_path / "out.txt"
    with atomic_path(target) as tmp:
        tmp.write_text("new")
        assert not target.exists()  # nothing visible before the block ends
    assert target.read_text() == "new"
    assert [p.name for p in tmp_path.iterdir()] == ["out.txt"]


def test_atomic_dir_failure_leaves_old_folder(tmp_path):
    target = tmp_path / "clean"
    target.mkdir()
    (target / "keep.txt").write_text("old")
    with pytest.raises(ValueError):
        with atomic_dir(target) as tmp:
            (tmp / "keep.txt").write_text("new")
            (tmp / "extra.txt").write_text("new")
            raise ValueError("boom")
    assert sorted(p.name for p in target.iterdir()) == ["keep.txt"]
    assert (target / "keep.txt").read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["clean"]


def test_atomic_dir_success_swaps_whole_folder(tmp_path):
    target = tmp_path / "clean"
    target.mkdir()
    (target / "stale.txt").write_text("old")
    with atomic_dir(target) as tmp:
        (tmp / "fresh.txt").write_text("new")
        assert (target / "stale.txt").exists()  # old contents still in place while filling
    assert sorted(p.name for p in target.iterdir()) == ["fresh.txt"]
    assert (target / "fresh.txt").read_text() == "new"
    assert [p.name for p in tmp_path.iterdir()] == ["clean"]


def test_atomic_dir_creates_missing_target(tmp_path):
    target = tmp_path / "a" / "b"
    with atomic_dir(target) as tmp:
        (tmp / "x").write_text("1")
    assert (target / "x").read_text() == "1"


def _arrays():
    rng = np.random.default_rng(0)
    return {
        "images": rng.integers(0, 256, size=(5, 8, 8), dtype=np.uint8),
        "labels": np.arange(5, dtype=np.int64),
        "mask": np.array([True, False, True, True, False]),
    }


def test_save_npz_is_byte_identical_across_time(tmp_path):
    arrays = _arrays()
    first, second = tmp_path / "first.npz", tmp_path / "second.npz"
    save_npz(first, **arrays)
    time.sleep(1.1)  # zip timestamps have 2 s resolution; a naive np.savez could differ here
    save_npz(second, **arrays)
    assert first.read_bytes() == second.read_bytes()
    # the sleep only crosses a 2 s zip-timestamp tick about half the time; check the stamp itself too
    with zipfile.ZipFile(first) as zf:
        assert {info.date_time for info in zf.infolist()} == {(1980, 1, 1, 0, 0, 0)}
        assert sorted(zf.namelist()) == ["images.npy", "labels.npy", "mask.npy"]


def test_save_npz_order_of_keywords_does_not_matter(tmp_path):
    arrays = _arrays()
    a, b = tmp_path / "a.npz", tmp_path / "b.npz"
    save_npz(a, **arrays)
    save_npz(b, **dict(reversed(list(arrays.items()))))
    assert a.read_bytes() == b.read_bytes()


def test_save_npz_differs_for_different_data(tmp_path):
    arrays = _arrays()
    a, b = tmp_path / "a.npz", tmp_path / "b.npz"
    save_npz(a, **arrays)
    arrays["labels"] = arrays["labels"] + 1
    save_npz(b, **arrays)
    assert a.read_bytes() != b.read_bytes()


def test_load_npz_round_trips(tmp_path):
    arrays = _arrays()
    arrays["non_contiguous"] = np.arange(20, dtype=np.float32).reshape(4, 5)[:, ::2]
    target = tmp_path / "d" / "data.npz"
    save_npz(target, **arrays)
    loaded = load_npz(target)
    assert set(loaded) == set(arrays)
    for name, value in arrays.items():
        assert loaded[name].dtype == value.dtype
        np.testing.assert_array_equal(loaded[name], value)
    assert _leftovers(target.parent) == []


def test_load_npz_missing_file_names_it(tmp_path):
    missing = tmp_path / "nope.npz"
    with pytest.raises(FileNotFoundError, match="nope.npz"):
        load_npz(missing)
