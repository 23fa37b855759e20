"""MNIST-family IDX files, parsed with numpy and checked before anything is trusted.

The format (https://yann.lecun.com/exdb/mnist/): a big-endian magic number whose third byte is
the element type (0x08 = uint8) and fourth the number of dimensions, one big-endian uint32 per
dimension, then the elements. Images are magic 2051 (uint8, 3 dims), labels 2049 (uint8, 1 dim).
Every check names the file, because a folder of IDX files usually holds several.
"""
from __future__ import annotations

import gzip
import re
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from genloop.source_errors import SourceError

IMAGES_MAGIC = 2051
LABELS_MAGIC = 2049
_NAME = re.compile(r"^(?P<prefix>.+)-(?P<kind>images|labels)[-.](?:idx3|idx1)-ubyte(?P<gz>\.gz)?$")
_PREFIX_ORDER = {"train": 0, "t10k": 1}


@dataclass(frozen=True)
class IdxPart:
    """One images file and the labels file with the same prefix (``None`` when absent)."""

    prefix: str
    images: Path
    labels: Path | None


def read_file_bytes(path: Path) -> bytes:
    """The decompressed bytes of ``path``; a truncated or corrupt gzip becomes a SourceError."""
    try:
        if path.suffix == ".gz":
            with gzip.open(path, "rb") as fh:
                return fh.read()
        return path.read_bytes()
    except EOFError:
        raise SourceError(f"{path}: gzip stream ends early (truncated download?); fetch the file again") from None
    except (gzip.BadGzipFile, zlib.error) as exc:
        raise SourceError(f"{path}: not a valid gzip file ({exc})") from None
    except OSError as exc:
        raise SourceError(f"{path}: cannot read ({exc.strerror or exc})") from None


def parse_idx(data: bytes, path: Path, magic: int, ndim: int) -> np.ndarray:
    """Check the header of one IDX file against what it should hold and return its uint8 array."""
    if len(data) < 4 + 4 * ndim:
        raise SourceError(f"{path}: {len(data)} bytes is too short for an IDX header with {ndim} dimension(s)")
    found = int.from_bytes(data[:4], "big")
    if found != magic:
        kind = "images" if magic == IMAGES_MAGIC else "labels"
        raise SourceError(
            f"{path}: IDX magic number is {found} (0x{found:08x}); expected {magic} (0x{magic:08x}) for "
            f"{kind}. Is this an MNIST-format {kind} file?"
        )
    dims = tuple(int(d) for d in np.frombuffer(data, dtype=">u4", count=ndim, offset=4))
    payload = len(data) - 4 - 4 * ndim
    expected = int(np.prod(dims, dtype=np.int64))
    if payload != expected:
        shape = "x".join(str(d) for d in dims)
        raise SourceError(
            f"{path}: header says {shape} = {expected} bytes of data but the file holds {payload}; "
            "the file is truncated or padded"
        )
    return np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim).reshape(dims)


def read_idx_images(path: Path) -> np.ndarray:
    """uint8 images (N, H, W) from an ``*-images-idx3-ubyte[.gz]`` file."""
    images = parse_idx(read_file_bytes(path), path, IMAGES_MAGIC, 3)
    if images.shape[0] == 0 or images.shape[1] == 0 or images.shape[2] == 0:
        raise SourceError(f"{path}: holds no images (shape {images.shape})")
    return images


def read_idx_labels(path: Path) -> np.ndarray:
    """int64 labels (N,) from an ``*-labels-idx1-ubyte[.gz]`` file."""
    return parse_idx(read_file_bytes(path), path, LABELS_MAGIC, 1).astype(np.int64)


def _prefix_rank(prefix: str) -> tuple[int, str]:
    """train before t10k before anything else, so train rows come first as in the official split."""
    return (_PREFIX_ORDER.get(prefix, len(_PREFIX_ORDER)), prefix)


def _pick(candidates: list[Path]) -> Path:
    """Prefer the uncompressed copy when both ``x`` and ``x.gz`` are present (e.g. after ``gunzip -k``)."""
    return sorted(candidates, key=lambda p: (p.suffix == ".gz", p.name))[0]


def find_idx_parts(folder: Path) -> list[IdxPart]:
    """The images files in ``folder`` with their labels files, train first, then t10k."""
    if not folder.exists():
        raise SourceError(f"{folder} does not exist; idx:PATH needs a folder of *-images-idx3-ubyte[.gz] files")
    if not folder.is_dir():
        raise SourceError(f"{folder} is not a folder; idx:PATH needs a folder of *-images-idx3-ubyte[.gz] files")
    found: dict[tuple[str, str], list[Path]] = {}
    for path in folder.iterdir():
        match = _NAME.match(path.name)
        if match and path.is_file():
            found.setdefault((match["prefix"], match["kind"]), []).append(path)
    prefixes = sorted({p for p, kind in found if kind == "images"}, key=_prefix_rank)
    if not prefixes:
        raise SourceError(
            f"{folder} holds no IDX images file; expected e.g. train-images-idx3-ubyte.gz and "
            "train-labels-idx1-ubyte.gz (train and/or t10k)"
        )
    return [
        IdxPart(p, _pick(found[(p, "images")]), _pick(found[(p, "labels")]) if (p, "labels") in found else None)
        for p in prefixes
    ]


def read_idx_part(part: IdxPart) -> tuple[np.ndarray, np.ndarray]:
    """Images and labels of one prefix; labels are -1 when the folder has no labels file for it."""
    images = read_idx_images(part.images)
    if part.labels is None:
        return images, np.full(len(images), -1, dtype=np.int64)
    labels = read_idx_labels(part.labels)
    if len(labels) != len(images):
        raise SourceError(
            f"{part.images} holds {len(images)} images but {part.labels} holds {len(labels)} labels; "
            "they must come from the same release"
        )
    return images, labels


def read_idx_folder(folder: Path) -> tuple[np.ndarray, np.ndarray]:
    """All images and labels of an IDX folder, train then t10k, checked to share one image size."""
    parts = find_idx_parts(folder)
    images, labels = [], []
    for part in parts:
        part_images, part_labels = read_idx_part(part)
        if images and part_images.shape[1:] != images[0].shape[1:]:
            raise SourceError(
                f"{part.images} holds {part_images.shape[1]}x{part_images.shape[2]} images but "
                f"{parts[0].images} holds {images[0].shape[1]}x{images[0].shape[2]}; one folder must hold one size"
            )
        images.append(part_images)
        labels.append(part_labels)
    return np.concatenate(images), np.concatenate(labels)


def write_idx(path: Path, array: np.ndarray) -> None:
    """Write a uint8 array as an IDX file (gzip when the name ends in .gz): for tests and fixtures."""
    array = np.ascontiguousarray(array, dtype=np.uint8)
    header = bytes([0, 0, 0x08, array.ndim]) + np.asarray(array.shape, dtype=">u4").tobytes()
    data = header + array.tobytes()
    if path.suffix == ".gz":
        data = gzip.compress(data, mtime=0)
    path.write_bytes(data)
