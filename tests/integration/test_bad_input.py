"""Bad input never damages the data set: each case fails with an error naming the file or field, and
the collected ``data/`` and its DVC version (``data.dvc``) stay byte for byte as they were."""
from __future__ import annotations

import gzip
import io
import shutil
import subprocess
import sys
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from genloop.io import dvcio
from genloop.stages.collect import collect
from genloop.config import CollectConfig
from genloop.io.idx import write_idx
from genloop.paths import ProjectPaths
from genloop.errors import SourceError

pytestmark = pytest.mark.skipif(
    shutil.which(dvcio._dvc_exe()) is None or shutil.which("git") is None, reason="needs dvc and git"
)
pytestmark = [pytestmark, pytest.mark.integration]  # DVC subprocesses
PROJECT_DOT_ENTRIES = {".git", ".gitignore", ".dvc", ".dvcignore"}  # made by git init, dvc init, dvc add


@dataclass(frozen=True)
class Snapshot:
    """What a failed collect must leave untouched."""

    dvc_hash: str
    data_dvc: bytes
    images: bytes
    manifest: bytes
    root_entries: frozenset[str]
    data_entries: frozenset[str]

    @classmethod
    def take(cls, paths: ProjectPaths) -> "Snapshot":
        return cls(
            dvc_hash=dvcio.read_dvc_hash(paths.data_dvc),
            data_dvc=paths.data_dvc.read_bytes(),
            images=paths.images.read_bytes(),
            manifest=paths.manifest.read_bytes(),
            root_entries=frozenset(p.name for p in paths.root.iterdir()),
            data_entries=frozenset(p.name for p in paths.data.iterdir()),
        )


def make_project(root: Path) -> ProjectPaths:
    """A git + DVC project with the digits collected and versioned, as after `genloop collect`."""
    root.mkdir(parents=True, exist_ok=True)
    subprocess.run(["git", "init", "-q"], cwd=root, check=True, env=dvcio.dvc_env())
    dvcio.run_dvc(["init", "-q"], cwd=root)
    paths = ProjectPaths.at(root)
    collect(CollectConfig(source="digits"), paths, version_with_dvc=True)
    return paths


@pytest.fixture(scope="module")
def project(tmp_path_factory) -> tuple[ProjectPaths, Snapshot]:
    """One project for all cases: a failed collect changes nothing, which each case checks."""
    paths = make_project(tmp_path_factory.mktemp("project"))
    return paths, Snapshot.take(paths)


def assert_unchanged(paths: ProjectPaths, before: Snapshot) -> None:
    after = Snapshot.take(paths)
    assert after == before
    assert after.dvc_hash.endswith(".dir")
    assert {n for n in after.root_entries if n.startswith(".")} <= PROJECT_DOT_ENTRIES  # no stray temp files
    assert not any(n.startswith(".") for n in after.data_entries)


# ---- the bad inputs: each writes its files under `tmp` and returns (spec, text the error must name) --

def idx_files(tmp: Path, n_images: int = 5, n_labels: int = 5, magic_ok: bool = True) -> Path:
    folder = tmp / "idx"
    folder.mkdir()
    write_idx(folder / "train-images-idx3-ubyte.gz", np.zeros((n_images, 4, 4), np.uint8))
    write_idx(folder / "train-labels-idx1-ubyte.gz", np.zeros(n_labels, np.uint8))
    if not magic_ok:  # an images file carrying the labels magic (2049)
        raw = bytearray(gzip.decompress((folder / "train-images-idx3-ubyte.gz").read_bytes()))
        raw[3] = 0x01
        (folder / "train-images-idx3-ubyte.gz").write_bytes(gzip.compress(bytes(raw)))
    return folder


def truncated_gzip(tmp: Path) -> tuple[str, str]:
    folder = idx_files(tmp, n_images=200, n_labels=200)
    path = folder / "train-images-idx3-ubyte.gz"
    path.write_bytes(path.read_bytes()[:-30])  # cut before the end-of-stream marker
    return f"idx:{folder}", r"train-images-idx3-ubyte.gz: gzip stream ends early"


def wrong_magic(tmp: Path) -> tuple[str, str]:
    spec = f"idx:{idx_files(tmp, magic_ok=False)}"
    return spec, r"train-images-idx3-ubyte.gz: IDX magic number is 2049 .* expected 2051"


def count_mismatch(tmp: Path) -> tuple[str, str]:
    spec = f"idx:{idx_files(tmp, n_images=5, n_labels=4)}"
    return spec, r"train-images-idx3-ubyte.gz holds 5 images but .*train-labels-idx1-ubyte.gz holds 4 labels"


def missing_idx_folder(tmp: Path) -> tuple[str, str]:
    return f"idx:{tmp / 'nowhere'}", r"nowhere does not exist"


def empty_folder(tmp: Path) -> tuple[str, str]:
    (tmp / "empty").mkdir()
    return f"folder:{tmp / 'empty'}", r"empty is empty; folder:PATH needs one subfolder per class"


def png(path: Path, size: tuple[int, int] = (8, 8)) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("L", (size[1], size[0]), 128).save(path)
    return path


def non_image_in_tree(tmp: Path) -> tuple[str, str]:
    png(tmp / "imgs" / "0" / "a.png")
    (tmp / "imgs" / "1" / "deeper").mkdir(parents=True)
    (tmp / "imgs" / "1" / "deeper" / "notes.txt").write_text("not an image")
    return f"folder:{tmp / 'imgs'}", r"imgs/1/deeper/notes.txt: not a PNG or JPEG image"


def corrupt_png(tmp: Path) -> tuple[str, str]:
    png(tmp / "imgs" / "0" / "a.png")
    (tmp / "imgs" / "0" / "b.png").write_bytes(b"\x89PNG\r\n\x1a\nnonsense")
    return f"folder:{tmp / 'imgs'}", r"imgs/0/b.png: not a readable PNG or JPEG image"


def mixed_sizes(tmp: Path) -> tuple[str, str]:
    png(tmp / "imgs" / "0" / "a.png", (8, 8))
    png(tmp / "imgs" / "1" / "b.png", (8, 10))
    return f"folder:{tmp / 'imgs'}", (r"imgs mixes sizes \(HxW\) 8x10 1, 8x8 1; nothing is converted silently: "
                                      r"choose with -S collect.size=SIDE .* or --resize HxW")


def huge_png_bytes(width: int, height: int) -> bytes:
    """A valid 1-bit PNG of width x height that is a few kilobytes on disk (written by hand, in
    streaming fashion, so building it costs neither time nor memory)."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return len(data).to_bytes(4, "big") + kind + data + zlib.crc32(kind + data).to_bytes(4, "big")

    ihdr = width.to_bytes(4, "big") + height.to_bytes(4, "big") + bytes([1, 0, 0, 0, 0])
    packer = zlib.compressobj(9)
    row = bytes(1 + (width + 7) // 8)  # filter byte + packed zero bits
    idat = b"".join(packer.compress(row) for _ in range(height)) + packer.flush()
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")


def decompression_bomb(tmp: Path) -> tuple[str, str]:
    png(tmp / "imgs" / "0" / "a.png")
    (tmp / "imgs" / "0" / "bomb.png").write_bytes(huge_png_bytes(20000, 20000))
    return f"folder:{tmp / 'imgs'}", r"imgs/0/bomb.png: refused as a possible decompression bomb"


def npz_with(tmp: Path, **arrays: np.ndarray) -> str:
    np.savez(tmp / "bad.npz", **arrays)
    return f"npz:{tmp / 'bad.npz'}"


def npz_nan(tmp: Path) -> tuple[str, str]:
    images = np.zeros((3, 8, 8), np.float32)
    images[1, 2, 3] = np.nan
    return npz_with(tmp, images=images), r"bad.npz: array 'images' holds 1 NaN or inf values \(first in image 1\)"


def npz_inf(tmp: Path) -> tuple[str, str]:
    images = np.zeros((3, 8, 8))
    images[2, 0, 0] = np.inf
    return npz_with(tmp, images=images), r"bad.npz: array 'images' holds 1 NaN or inf values \(first in image 2\)"


def npz_labels_wrong_length(tmp: Path) -> tuple[str, str]:
    spec = npz_with(tmp, images=np.zeros((3, 8, 8), np.uint8), labels=np.arange(2))
    return spec, r"bad.npz: array 'labels' has shape \(2,\); expected \(3,\)"


def npz_wrong_ndim(tmp: Path) -> tuple[str, str]:
    """(N, H, W, 3) is colour now; four channels (RGBA) are not."""
    spec = npz_with(tmp, images=np.zeros((3, 8, 8, 4), np.uint8))
    return spec, r"bad.npz: array 'images' has shape \(3, 8, 8, 4\); expected \(N, H, W\) grey or \(N, H, W, 3\) colour"


def names_nothing(tmp: Path) -> tuple[str, str]:
    return "mnist-digits-please", r"unknown source 'mnist-digits-please'; valid forms: .*idx:PATH"


CASES: dict[str, Callable[[Path], tuple[str, str]]] = {
    f.__name__: f for f in (
        truncated_gzip, wrong_magic, count_mismatch, missing_idx_folder, empty_folder, non_image_in_tree,
        corrupt_png, mixed_sizes, decompression_bomb, npz_nan, npz_inf, npz_labels_wrong_length,
        npz_wrong_ndim, names_nothing,
    )
}


@pytest.mark.parametrize("mode", ["replace", "append"])
@pytest.mark.parametrize("case", sorted(CASES))
def test_bad_input_fails_clearly_and_leaves_data_and_dvc_version_alone(project, tmp_path, case, mode):
    paths, before = project
    spec, names = CASES[case](tmp_path)

    with pytest.raises(SourceError, match=names):
        collect(CollectConfig(source=spec), paths, version_with_dvc=True, mode=mode)

    assert_unchanged(paths, before)


def test_append_of_another_image_size_fails_and_leaves_data_alone(project, tmp_path):
    paths, before = project
    np.savez(tmp_path / "big.npz", images=np.zeros((2, 28, 28), np.uint8))
    with pytest.raises(ValueError, match=r"cannot append 28x28 grey images .* holds 8x8 grey images; pass --resize 8x8 or"):
        collect(CollectConfig(source=f"npz:{tmp_path / 'big.npz'}"), paths, version_with_dvc=True, mode="append")
    assert_unchanged(paths, before)


def test_mixed_sizes_succeed_with_resize_as_a_new_dvc_version(tmp_path):
    paths = make_project(tmp_path / "project")
    before = Snapshot.take(paths)
    spec, _ = mixed_sizes(tmp_path)

    result = collect(CollectConfig(source=spec), paths, version_with_dvc=True, mode="append", resize=(8, 8))

    assert (result.rows, result.added, result.batch, result.image_shape) == (1799, 2, 1, (8, 8))
    assert result.dvc_hash == dvcio.read_dvc_hash(paths.data_dvc) != before.dvc_hash
    old, now = pd.read_csv(io.BytesIO(before.manifest)), pd.read_csv(paths.manifest)
    pd.testing.assert_frame_equal(now.loc[: len(old) - 1, list(old.columns)], old)  # the old rows are untouched
    new_rows = now.loc[len(old):, ["channels", "orig_mode", "orig_height", "orig_width"]]
    assert new_rows.values.tolist() == [[1, "L", 8, 8], [1, "L", 8, 10]]  # each new row records what it was


def test_cli_reports_bad_source_in_one_line_without_traceback(tmp_path):
    genloop = Path(sys.executable).with_name("genloop")
    (tmp_path / "params.yaml").write_text("seed: 42\n")
    proc = subprocess.run([str(genloop), "--root", str(tmp_path), "collect", "--source", "idx:/nonexistent"],
                          capture_output=True, text=True, cwd=tmp_path)
    assert proc.returncode == 1
    assert proc.stderr.strip() == (
        "error: /nonexistent does not exist; idx:PATH needs a folder of *-images-idx3-ubyte[.gz] files"
    )
    assert "Traceback" not in proc.stderr + proc.stdout
    assert not (tmp_path / "data").exists()
