"""Unit tests for genloop.io.sources and genloop.io.idx: every source on tiny data written here, plus the
real MNIST t10k files when the shared folder has them. Nothing here touches the network."""
from __future__ import annotations

import hashlib
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from genloop.io import sources
from genloop.io.datasets import DataSetError, read_dataset
from genloop.stages.collect import collect
from genloop.config import CollectConfig
from genloop.io.idx import parse_idx, write_idx
from genloop.paths import ProjectPaths
from genloop.errors import SourceError
from genloop.io.sources import load_source, parse_size

MNIST_T10K = Path(__file__).resolve().parents[4] / "shared" / "data" / "mnist-t10k"
OFFICIAL_FILES = ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz",
                  "t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz")


def tiny_images(n: int, h: int = 4, w: int = 5, offset: int = 0) -> np.ndarray:
    """Images whose first pixel is their index, so order survives every check."""
    images = np.zeros((n, h, w), dtype=np.uint8)
    images[:, 0, 0] = np.arange(offset, offset + n)
    images[:, 1:, 1:] = 200
    return images


def write_idx_pair(folder: Path, prefix: str, images: np.ndarray, labels: np.ndarray | None, gz: bool = True) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    ext = ".gz" if gz else ""
    write_idx(folder / f"{prefix}-images-idx3-ubyte{ext}", images)
    if labels is not None:
        write_idx(folder / f"{prefix}-labels-idx1-ubyte{ext}", labels)


def save_png(path: Path, pixels: np.ndarray, mode: str = "L") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(pixels).convert(mode).save(path)
    return path


# ---- idx ---------------------------------------------------------------------------------------

def test_idx_reads_train_then_t10k_gz_or_raw(tmp_path):
    write_idx_pair(tmp_path, "t10k", tiny_images(2, offset=10), np.array([7, 8]), gz=False)
    write_idx_pair(tmp_path, "train", tiny_images(3), np.array([1, 2, 3]), gz=True)

    batch = load_source(f"idx:{tmp_path}")

    assert batch.images.dtype == np.uint8 and batch.images.shape == (5, 4, 5)
    assert batch.images[:, 0, 0].tolist() == [0, 1, 2, 10, 11]  # train rows first
    assert batch.labels.dtype == np.int64 and batch.labels.tolist() == [1, 2, 3, 7, 8]
    assert batch.source == f"idx:{tmp_path.resolve()}"


def test_idx_without_labels_file_gives_unknown_labels(tmp_path):
    write_idx_pair(tmp_path, "t10k", tiny_images(3), None)
    batch = load_source(f"idx:{tmp_path}")
    assert batch.labels.tolist() == [-1, -1, -1]


def test_idx_header_that_disagrees_with_file_size_names_the_file(tmp_path):
    write_idx_pair(tmp_path, "train", tiny_images(3), np.array([0, 1, 2]), gz=False)
    path = tmp_path / "train-images-idx3-ubyte"
    path.write_bytes(path.read_bytes() + b"\x00")  # one byte of padding
    with pytest.raises(SourceError, match=r"train-images-idx3-ubyte: header says 3x4x5 = 60 bytes .* holds 61"):
        load_source(f"idx:{tmp_path}")


def test_idx_parts_of_different_sizes_are_refused(tmp_path):
    write_idx_pair(tmp_path, "train", tiny_images(2, 4, 5), None)
    write_idx_pair(tmp_path, "t10k", tiny_images(2, 6, 6), None)
    with pytest.raises(SourceError, match="t10k-images-idx3-ubyte.gz holds 6x6 images"):
        load_source(f"idx:{tmp_path}")


@pytest.mark.parametrize("spec, match", [
    ("idx:{tmp}/missing", "does not exist"),
    ("idx:{tmp}", "holds no IDX images file"),
])
def test_idx_folder_problems(tmp_path, spec, match):
    with pytest.raises(SourceError, match=match):
        load_source(spec.format(tmp=tmp_path))


def test_parse_idx_rejects_short_header(tmp_path):
    with pytest.raises(SourceError, match="too short"):
        parse_idx(b"\x00\x00\x08", tmp_path / "x", 2051, 3)


def test_real_mnist_t10k_through_idx():
    if not MNIST_T10K.is_dir():
        pytest.skip(f"{MNIST_T10K} is absent")
    batch = load_source(f"idx:{MNIST_T10K}")
    assert batch.images.shape == (10000, 28, 28)
    assert batch.images.dtype == np.uint8
    assert np.bincount(batch.labels).tolist() == [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]
    assert batch.images.mean() == pytest.approx(33.79, abs=0.01)


# ---- mnist, fashion-mnist, kmnist --------------------------------------------------------------

def write_official_files(folder: Path) -> None:
    write_idx_pair(folder, "train", tiny_images(3), np.array([3, 4, 5]))
    write_idx_pair(folder, "t10k", tiny_images(2, offset=20), np.array([6, 7]))


@pytest.mark.parametrize("name", ["mnist", "fashion-mnist", "kmnist"])
def test_named_dataset_reads_the_cache(tmp_path, monkeypatch, name):
    monkeypatch.setenv("GENLOOP_CACHE", str(tmp_path))
    monkeypatch.setenv("GENLOOP_DATASET_URL", "http://127.0.0.1:9/")  # any download attempt would fail
    write_official_files(tmp_path / name)

    batch = load_source(name)

    assert batch.source == name
    assert batch.images[:, 0, 0].tolist() == [0, 1, 2, 20, 21]
    assert batch.labels.tolist() == [3, 4, 5, 6, 7]


def test_named_dataset_offline_fails_at_once_saying_how_to_supply_files(tmp_path, monkeypatch):
    monkeypatch.setenv("GENLOOP_CACHE", str(tmp_path))
    monkeypatch.setenv("GENLOOP_DATASET_URL", "http://127.0.0.1:9/")  # discard port: connection refused
    started = time.monotonic()
    with pytest.raises(SourceError) as info:
        load_source("mnist")
    assert time.monotonic() - started < 5
    message = str(info.value)
    assert "http://127.0.0.1:9/train-images-idx3-ubyte.gz" in message
    assert "idx:PATH" in message and str(tmp_path / "mnist") in message
    assert not any((tmp_path / "mnist").glob("*"))  # no partial download left behind


def serve_from(folder: Path) -> str:
    """A file:// base URL: exercises the real download code with no network."""
    return folder.resolve().as_uri() + "/"


def test_named_dataset_download_is_verified_then_cached(tmp_path, monkeypatch):
    mirror = tmp_path / "mirror"
    write_official_files(mirror)
    md5 = {f: hashlib.md5((mirror / f).read_bytes()).hexdigest() for f in OFFICIAL_FILES}
    monkeypatch.setitem(sources.OFFICIAL_DATASETS, "mnist", sources.OfficialDataset("mnist", "unused", md5))
    monkeypatch.setenv("GENLOOP_CACHE", str(tmp_path / "cache"))

    batch = sources.load_official_source("mnist", base_url=serve_from(mirror))

    assert batch.labels.tolist() == [3, 4, 5, 6, 7]
    assert sorted(p.name for p in (tmp_path / "cache" / "mnist").iterdir()) == sorted(OFFICIAL_FILES)


def test_named_dataset_download_with_wrong_checksum_is_not_kept(tmp_path, monkeypatch):
    mirror = tmp_path / "mirror"
    write_official_files(mirror)
    monkeypatch.setenv("GENLOOP_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("GENLOOP_DATASET_URL", serve_from(mirror))  # tiny files: the official md5s differ

    with pytest.raises(SourceError, match=r"train-images-idx3-ubyte.gz: md5 \w+ does not match the published f68b3c2d"):
        load_source("mnist")
    assert list((tmp_path / "cache" / "mnist").iterdir()) == []


# ---- folder:PATH -------------------------------------------------------------------------------

def test_folder_with_integer_class_names_uses_them_as_labels(tmp_path):
    save_png(tmp_path / "3" / "a.png", np.full((6, 7), 30, np.uint8))
    save_png(tmp_path / "3" / "nested" / "b.PNG", np.full((6, 7), 40, np.uint8))
    (tmp_path / "7").mkdir()
    Image.fromarray(np.full((6, 7), 50, np.uint8)).save(tmp_path / "7" / "c.jpg", quality=100)
    (tmp_path / "7" / ".DS_Store").write_bytes(b"junk")  # hidden files are not data

    batch = load_source(f"folder:{tmp_path}")

    assert batch.images.shape == (3, 6, 7) and batch.images.dtype == np.uint8
    assert batch.labels.tolist() == [3, 3, 7]
    assert batch.images[:, 0, 0].tolist()[:2] == [30, 40]
    assert abs(int(batch.images[2, 0, 0]) - 50) <= 2  # JPEG is lossy
    assert batch.source == f"folder:{tmp_path.resolve()}"


def test_folder_with_named_classes_sorts_and_numbers_them_and_keeps_colour_unless_told(tmp_path):
    rgb = np.zeros((4, 4, 3), np.uint8)
    rgb[..., 0] = 255  # pure red: luma 76
    for name in ("dog", "cat", "bird"):
        (tmp_path / name).mkdir()
        Image.fromarray(rgb).save(tmp_path / name / "img.png")

    batch = load_source(f"folder:{tmp_path}")
    grey = load_source(f"folder:{tmp_path}", config=CollectConfig(channels=1))

    assert batch.labels.tolist() == [0, 1, 2]  # bird, cat, dog
    assert batch.images.shape == (3, 4, 4, 3) and (batch.images == rgb).all() and batch.notes == ()
    assert grey.images.shape == (3, 4, 4) and (grey.images == 76).all()
    assert "converted 3 of 3 images to grey" in grey.notes[0]


def test_folder_16_bit_png_is_scaled_not_clipped(tmp_path):
    (tmp_path / "0").mkdir()
    Image.fromarray(np.full((3, 3), 65535, np.uint16)).save(tmp_path / "0" / "deep.png")
    assert load_source(f"folder:{tmp_path}").images.max() == 255
    Image.fromarray(np.full((3, 3), 257 * 100, np.uint16)).save(tmp_path / "0" / "deep.png")
    assert load_source(f"folder:{tmp_path}").images.max() == 100


def test_folder_resize_brings_mixed_sizes_to_one(tmp_path):
    save_png(tmp_path / "0" / "small.png", np.full((4, 4), 100, np.uint8))
    save_png(tmp_path / "1" / "large.png", np.full((12, 10), 100, np.uint8))
    batch = load_source(f"folder:{tmp_path}", resize=(8, 6))
    assert batch.images.shape == (2, 8, 6)
    assert (batch.images == 100).all()  # a flat image stays flat


def test_folder_with_a_top_level_file_names_it(tmp_path):
    save_png(tmp_path / "0" / "a.png", np.zeros((2, 2), np.uint8))
    (tmp_path / "README.txt").write_text("hello")
    with pytest.raises(SourceError, match="README.txt: folder:PATH expects only class subfolders"):
        load_source(f"folder:{tmp_path}")


def test_folder_with_an_empty_class_names_it(tmp_path):
    save_png(tmp_path / "0" / "a.png", np.zeros((2, 2), np.uint8))
    (tmp_path / "1").mkdir()
    with pytest.raises(SourceError, match=r"/1 holds no PNG or JPEG images"):
        load_source(f"folder:{tmp_path}")


def test_folder_png_that_is_not_an_image_names_it(tmp_path):
    (tmp_path / "0").mkdir()
    (tmp_path / "0" / "fake.png").write_bytes(b"not a png at all")
    with pytest.raises(SourceError, match="fake.png: not a readable PNG or JPEG image"):
        load_source(f"folder:{tmp_path}")


def test_folder_png_that_is_really_a_gif_names_it(tmp_path):
    (tmp_path / "0").mkdir()
    Image.new("L", (2, 2)).save(tmp_path / "0" / "odd.png", format="GIF")
    with pytest.raises(SourceError, match="odd.png: is a GIF file"):
        load_source(f"folder:{tmp_path}")


def test_decompression_bomb_limit_is_restored_after_reading(tmp_path):
    save_png(tmp_path / "0" / "a.png", np.zeros((2, 2), np.uint8))
    before = Image.MAX_IMAGE_PIXELS
    load_source(f"folder:{tmp_path}")
    assert Image.MAX_IMAGE_PIXELS == before


def test_decompression_bomb_limit_is_a_module_constant(tmp_path, monkeypatch):
    save_png(tmp_path / "0" / "big.png", np.zeros((40, 40), np.uint8))
    monkeypatch.setattr(sources, "MAX_IMAGE_PIXELS", 1000)  # 1600 pixels: above the limit
    with pytest.raises(SourceError, match="big.png: refused as a possible decompression bomb"):
        load_source(f"folder:{tmp_path}")


# ---- npz:PATH ----------------------------------------------------------------------------------

def write_npz(path: Path, **arrays: np.ndarray) -> Path:
    np.savez(path, **arrays)
    return path


def test_npz_uint8_with_labels(tmp_path):
    file = write_npz(tmp_path / "d.npz", images=tiny_images(3), labels=np.array([1, 2, 3], np.int32))
    batch = load_source(f"npz:{file}")
    np.testing.assert_array_equal(batch.images, tiny_images(3))
    assert batch.labels.dtype == np.int64 and batch.labels.tolist() == [1, 2, 3]
    assert batch.source == f"npz:{file.resolve()}"


def test_npz_float_in_unit_range_is_scaled_and_missing_labels_are_unknown(tmp_path):
    images = np.array([[[0.0, 0.5], [1.0, 0.25]]], dtype=np.float32)
    batch = load_source(f"npz:{write_npz(tmp_path / 'd.npz', images=images)}")
    assert batch.images.dtype == np.uint8
    assert batch.images.tolist() == [[[0, 128], [255, 64]]]
    assert batch.labels.tolist() == [-1]


def test_npz_float_in_byte_range_is_rounded(tmp_path):
    images = np.array([[[0.0, 12.4], [254.6, 255.0]]])
    labels = np.array([4.0])
    batch = load_source(f"npz:{write_npz(tmp_path / 'd.npz', images=images, labels=labels)}")
    assert batch.images.tolist() == [[[0, 12], [255, 255]]]
    assert batch.labels.tolist() == [4]


@pytest.mark.parametrize("arrays, match", [
    ({"images": np.full((1, 2, 2), 256, np.int16)}, r"array 'images' has values from 256 to 256; expected 0..255"),
    ({"images": np.full((1, 2, 2), -1.0)}, "array 'images' has values from -1"),
    ({"images": np.zeros((2, 2), np.uint8)}, r"array 'images' has shape \(2, 2\); expected \(N, H, W\)"),
    ({"images": np.zeros((0, 2, 2), np.uint8)}, "holds no pixels"),
    ({"images": np.array([[["a"]]])}, "array 'images' has dtype <U1"),
    ({"pixels": np.zeros((1, 2, 2), np.uint8)}, r"no array named 'images' \(found: pixels\)"),
    ({"images": np.zeros((2, 2, 2), np.uint8), "labels": np.array([0.5, 1.0])},
     "array 'labels' holds NaN, inf or fractional"),
    ({"images": np.zeros((2, 2, 2), np.uint8), "labels": np.zeros((2, 1))}, r"array 'labels' has shape \(2, 1\)"),
])
def test_npz_refuses_unusable_arrays_naming_file_and_array(tmp_path, arrays, match):
    file = write_npz(tmp_path / "bad.npz", **arrays)
    with pytest.raises(SourceError, match=match) as info:
        load_source(f"npz:{file}")
    assert "bad.npz" in str(info.value) or "found: pixels" in str(info.value)


@pytest.mark.parametrize("content, match", [
    (b"garbage", "cannot read as an .npz archive"),
    (None, "is a single .npy array"),
])
def test_npz_that_is_not_an_archive(tmp_path, content, match):
    file = tmp_path / "bad.npz"
    if content is None:
        with file.open("wb") as fh:
            np.save(fh, np.zeros((1, 2, 2), np.uint8))
    else:
        file.write_bytes(content)
    with pytest.raises(SourceError, match=match):
        load_source(f"npz:{file}")


# ---- specs and sizes ---------------------------------------------------------------------------

@pytest.mark.parametrize("spec", ["no-such-source", "idx:", "folder:  ", "tar:/x", "MNIST", "digits:x"])
def test_unknown_spec_lists_valid_forms(spec):
    forms = "digits, mnist, fashion-mnist, kmnist, emoji, idx:PATH, folder:PATH, npz:PATH"
    with pytest.raises(SourceError, match=f"valid forms: {forms}"):
        load_source(spec)


@pytest.mark.parametrize("text, size", [("28x28", (28, 28)), (" 8X6 ", (8, 6))])
def test_parse_size(text, size):
    assert parse_size(text) == size


@pytest.mark.parametrize("text", ["28", "0x28", "28x28x1", "axb", "5000x5"])
def test_parse_size_refuses_bad_text(text):
    with pytest.raises(SourceError, match="size"):
        parse_size(text)


def test_digits_resized(tmp_path):
    batch = load_source("digits", resize=(16, 16))
    assert batch.images.shape == (1797, 16, 16) and batch.images.dtype == np.uint8


# ---- collect --mode append ---------------------------------------------------------------------

def test_append_adds_a_batch_with_continuing_ids_and_keeps_old_rows(tmp_path):
    paths = ProjectPaths.at(tmp_path)
    collect(CollectConfig(source="digits"), paths, version_with_dvc=False)
    old_images = np.load(paths.images)
    old_manifest_lines = paths.manifest.read_text().splitlines()
    extra = write_npz(tmp_path / "extra.npz", images=tiny_images(4, 8, 8), labels=np.array([0, 1, 2, 3]))

    result = collect(CollectConfig(source=f"npz:{extra}"), paths, version_with_dvc=False, mode="append")

    images, manifest = read_dataset(paths)
    assert (result.rows, result.added, result.batch, result.mode) == (1801, 4, 1, "append")
    np.testing.assert_array_equal(images[:1797], old_images)
    np.testing.assert_array_equal(images[1797:], tiny_images(4, 8, 8))
    assert paths.manifest.read_text().splitlines()[:1798] == old_manifest_lines  # old rows byte for byte
    assert manifest["id"].tolist() == list(range(1801))
    assert manifest["batch"].tolist() == [0] * 1797 + [1] * 4
    assert (manifest["source"].iloc[1797:] == f"npz:{extra.resolve()}").all()

    again = collect(CollectConfig(source=f"npz:{extra}"), paths, version_with_dvc=False, mode="append")
    assert (again.rows, again.batch) == (1805, 2)
    assert pd.read_csv(paths.manifest)["id"].iloc[-1] == 1804


def test_append_of_another_size_is_refused_unless_resized(tmp_path):
    paths = ProjectPaths.at(tmp_path)
    collect(CollectConfig(source="digits"), paths, version_with_dvc=False)
    before = paths.manifest.read_bytes()
    extra = write_npz(tmp_path / "extra.npz", images=tiny_images(2, 28, 28))

    with pytest.raises(ValueError, match=r"cannot append 28x28 grey images .* holds 8x8 grey images; pass --resize 8x8"):
        collect(CollectConfig(source=f"npz:{extra}"), paths, version_with_dvc=False, mode="append")
    assert paths.manifest.read_bytes() == before

    result = collect(CollectConfig(source=f"npz:{extra}"), paths, version_with_dvc=False, mode="append", resize=(8, 8))
    assert (result.rows, result.image_shape) == (1799, (8, 8))


def test_append_without_data_says_to_collect_first(tmp_path):
    with pytest.raises(FileNotFoundError, match="--mode append needs an existing data set"):
        collect(CollectConfig(source="digits"), ProjectPaths.at(tmp_path), version_with_dvc=False, mode="append")


def test_unknown_mode_is_refused(tmp_path):
    with pytest.raises(ValueError, match="collect mode 'merge'"):
        collect(CollectConfig(source="digits"), ProjectPaths.at(tmp_path), version_with_dvc=False, mode="merge")


# ---- data history ------------------------------------------------------------------------------

def fake_dvc_file(root: Path, md5: str) -> None:
    (root / "data.dvc").write_text(f"outs:\n- md5: {md5}\n  path: data\n")


def test_data_history_lists_batches_and_committed_versions(tmp_path):
    import subprocess

    from click.testing import CliRunner

    from genloop.cli import main
    from genloop.stages.collect import batch_history, data_versions

    paths = ProjectPaths.at(tmp_path)
    collect(CollectConfig(source="digits"), paths, version_with_dvc=False)
    extra = write_npz(tmp_path / "extra.npz", images=tiny_images(4, 8, 8))
    collect(CollectConfig(source=f"npz:{extra}"), paths, version_with_dvc=False, mode="append")
    assert batch_history(paths) == [
        batch_summary(0, "digits", 1797, 0, 1796), batch_summary(1, f"npz:{extra.resolve()}", 4, 1797, 1800),
    ]
    assert data_versions(paths) == []  # not a git repository

    git = ["git", "-c", "user.name=t", "-c", "user.email=t@t.invalid"]
    subprocess.run(["git", "init", "-q"], cwd=tmp_path, check=True)
    for n, md5 in enumerate(["aaa.dir", "bbb.dir"]):
        fake_dvc_file(tmp_path, md5)
        subprocess.run(["git", "add", "data.dvc"], cwd=tmp_path, check=True)
        subprocess.run([*git, "commit", "-qm", f"data v{n}"], cwd=tmp_path, check=True)
    versions = data_versions(paths)
    assert [(v.dvc_hash, v.subject) for v in versions] == [("bbb.dir", "data v1"), ("aaa.dir", "data v0")]

    out = CliRunner().invoke(main, ["--root", str(tmp_path), "data", "history"])
    assert out.exit_code == 0, out.output
    assert "1801 images in 2 batch(es); dvc md5 bbb.dir (committed)" in out.output
    assert "1797-1800" in out.output and "data v0" in out.output


def batch_summary(batch: int, source: str, rows: int, first: int, last: int):
    from genloop.stages.collect import BatchSummary

    return BatchSummary(batch, source, rows, first, last)


# ---- class names across appends ----------------------------------------------------------------

def class_folder(root: Path, names: list[str], value: int = 100) -> Path:
    for i, name in enumerate(names):
        save_png(root / name / "a.png", np.full((4, 4), value + i, np.uint8))
    return root


def test_named_classes_keep_their_labels_when_a_batch_appends_a_subset_or_new_names(tmp_path):
    paths = ProjectPaths.at(tmp_path / "project")
    first = class_folder(tmp_path / "first", ["cat", "dog"])
    collect(CollectConfig(source=f"folder:{first}"), paths, version_with_dvc=False)
    only_dogs = class_folder(tmp_path / "second", ["dog"])
    collect(CollectConfig(source=f"folder:{only_dogs}"), paths, version_with_dvc=False, mode="append")
    more = class_folder(tmp_path / "third", ["bird", "dog"])
    collect(CollectConfig(source=f"folder:{more}"), paths, version_with_dvc=False, mode="append")

    _, manifest = read_dataset(paths)
    assert list(zip(manifest["class_name"], manifest["label"], manifest["batch"])) == [
        ("cat", 0, 0), ("dog", 1, 0), ("dog", 1, 1), ("bird", 2, 2), ("dog", 1, 2)]


def test_append_whose_own_labels_clash_with_the_manifest_names_both_maps(tmp_path):
    paths = ProjectPaths.at(tmp_path / "project")
    collect(CollectConfig(source=f"folder:{class_folder(tmp_path / 'a', ['cat', 'dog'])}"), paths,
            version_with_dvc=False)
    before = paths.manifest.read_bytes()
    numbered = class_folder(tmp_path / "b", ["0", "1"])  # integer names fix their labels: 0 is taken by cat
    with pytest.raises(DataSetError, match=r"\{0: 0, 1: 1\}.*\{cat: 0, dog: 1\}"):
        collect(CollectConfig(source=f"folder:{numbered}"), paths, version_with_dvc=False, mode="append")
    assert paths.manifest.read_bytes() == before


def test_sources_without_class_names_write_the_manifest_as_before_and_named_appends_add_the_column(tmp_path):
    """Unnamed data keeps the old manifest (so earlier DVC versions of it stay valid); appending named
    classes adds the column, empty for the rows before."""
    paths = ProjectPaths.at(tmp_path / "project")
    collect(CollectConfig(source="digits"), paths, version_with_dvc=False)
    _, manifest = read_dataset(paths)
    assert "class_name" not in manifest.columns
    collect(CollectConfig(source=f"folder:{class_folder(tmp_path / 'n', ['cat'], 0)}"), paths,
            version_with_dvc=False, mode="append", resize=(8, 8))
    _, manifest = read_dataset(paths)
    assert (manifest["class_name"].iloc[:1797] == "").all()
    assert (manifest["class_name"].iloc[-1], manifest["label"].iloc[-1]) == ("cat", 10)  # 0-9 are the digits


# ---- IDX gzip bounded by its header ------------------------------------------------------------

def test_idx_gz_inflating_past_its_header_is_refused_without_inflating_the_rest(tmp_path, monkeypatch):
    import gzip
    import zlib

    folder = tmp_path / "bomb"
    folder.mkdir()
    header = bytes([0, 0, 8, 3]) + np.asarray([2, 4, 4], dtype=">u4").tobytes()  # promises 2 images of 4x4
    packer = zlib.compressobj(9, zlib.DEFLATED, 31)  # gzip container
    body = [packer.compress(header + bytes(32))]
    zeros = bytes(1 << 20)
    body += [packer.compress(zeros) for _ in range(64)]  # then 64 MiB more
    body.append(packer.flush())
    bomb = folder / "train-images-idx3-ubyte.gz"
    bomb.write_bytes(b"".join(body))
    assert bomb.stat().st_size < 200_000

    inflated = []
    real_open = gzip.open

    class Counting:
        def __init__(self, fh):
            self.fh = fh

        def read(self, n=-1):
            data = self.fh.read(n)
            inflated.append(len(data))
            return data

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            self.fh.close()

    monkeypatch.setattr(gzip, "open", lambda *a, **k: Counting(real_open(*a, **k)))
    with pytest.raises(SourceError, match=r"train-images-idx3-ubyte\.gz: header says 2x4x4 = 32 bytes"):
        load_source(f"idx:{folder}")
    assert sum(inflated) <= len(header) + 32 + 1


def test_idx_header_promising_more_rows_than_max_rows_is_refused_before_reading(tmp_path):
    write_idx_pair(tmp_path, "train", tiny_images(5), np.arange(5))
    with pytest.raises(SourceError, match=r"train-images-idx3-ubyte\.gz: header promises 5 rows.*max_rows"):
        load_source(f"idx:{tmp_path}", max_rows=4)
    assert len(load_source(f"idx:{tmp_path}", max_rows=5).images) == 5


# ---- symlinks in folder: sources ---------------------------------------------------------------

def test_folder_symlink_leading_out_of_the_source_is_refused_naming_it(tmp_path):
    outside = save_png(tmp_path / "elsewhere" / "secret.png", np.full((4, 4), 9, np.uint8))
    root = class_folder(tmp_path / "src", ["cat"])
    (root / "cat" / "link.png").symlink_to(outside)
    with pytest.raises(SourceError, match=r"cat/link\.png: symlink to .*elsewhere/secret\.png, outside"):
        load_source(f"folder:{root}")
    (root / "cat" / "link.png").unlink()
    (root / "dog").symlink_to(tmp_path / "elsewhere", target_is_directory=True)  # a whole class folder
    with pytest.raises(SourceError, match=r"src/dog: symlink to .*elsewhere, outside"):
        load_source(f"folder:{root}")


def test_folder_symlink_inside_the_source_is_followed(tmp_path):
    root = class_folder(tmp_path / "src", ["cat", "dog"])
    (root / "dog" / "same-as-cat.png").symlink_to(root / "cat" / "a.png")
    batch = load_source(f"folder:{root}")
    assert batch.labels.tolist() == [0, 1, 1]
    assert batch.images[2, 0, 0] == batch.images[0, 0, 0]
