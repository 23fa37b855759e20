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
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import numpy as np

from genloop.errors import MAX_SIDE, SourceError

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


@contextmanager
def _opened(path: Path) -> Iterator[BinaryIO]:
    try:
        fh = gzip.open(path, "rb") if path.suffix == ".gz" else path.open("rb")
    except OSError as exc:
        raise SourceError(f"{path}: cannot read ({exc.strerror or exc})") from None
    with fh:
        yield fh


def _guarded(path: Path, read, *args):
    """Run one read, turning a truncated or corrupt gzip into a SourceError naming the file."""
    try:
        return read(*args)
    except EOFError:
        raise SourceError(f"{path}: gzip stream ends early (truncated download?); fetch the file again") from None
    except (gzip.BadGzipFile, zlib.error) as exc:
        raise SourceError(f"{path}: not a valid gzip file ({exc})") from None
    except OSError as exc:
        raise SourceError(f"{path}: cannot read ({exc.strerror or exc})") from None


def parse_header(header: bytes, path: Path, magic: int, ndim: int) -> tuple[int, ...]:
    """The dimensions an IDX header promises, after checking its magic number."""
    if len(header) < 4 + 4 * ndim:
        raise SourceError(f"{path}: {len(header)} bytes is too short for an IDX header with {ndim} dimension(s)")
    found = int.from_bytes(header[:4], "big")
    if found != magic:
        kind = "images" if magic == IMAGES_MAGIC else "labels"
        raise SourceError(
            f"{path}: IDX magic number is {found} (0x{found:08x}); expected {magic} (0x{magic:08x}) for "
            f"{kind}. Is this an MNIST-format {kind} file?"
        )
    return tuple(int(d) for d in np.frombuffer(header, dtype=">u4", count=ndim, offset=4))


def _check_promise(dims: tuple[int, ...], path: Path, max_rows: int | None, max_bytes: int | None = None) -> None:
    """Refuse a header that promises more than a data set may hold (rows, side, bytes), before reading
    its payload: a header alone must not make collect allocate gigabytes."""
    if max_rows is not None and dims[0] > max_rows:
        raise SourceError(f"{path}: header promises {dims[0]} rows, more than the {max_rows} still "
                          "allowed by clean.max_rows; refused before reading its data")
    if any(d > MAX_SIDE for d in dims[1:]):
        raise SourceError(f"{path}: header promises {'x'.join(map(str, dims[1:]))} images; sides may be at most {MAX_SIDE}")
    size = int(np.prod(dims, dtype=object))
    if max_bytes is not None and size > max_bytes:
        raise SourceError(f"{path}: header promises {'x'.join(map(str, dims))} = {size} bytes, more than "
                          f"collect.max_bytes={max_bytes}; refused before reading its data (raise "
                          "collect.max_bytes if the file really holds that much)")


def read_idx(path: Path, magic: int, ndim: int, max_rows: int | None = None,
             max_bytes: int | None = None) -> np.ndarray:
    """One IDX file as a uint8 array, read no further than its header promises (plus one byte to see
    that nothing follows): a gzip that inflates to more is refused without inflating the rest."""
    header_size = 4 + 4 * ndim
    with _opened(path) as fh:
        dims = parse_header(_guarded(path, fh.read, header_size), path, magic, ndim)
        _check_promise(dims, path, max_rows, max_bytes)
        expected = int(np.prod(dims, dtype=np.int64))
        payload = _guarded(path, fh.read, expected)
        extra = _guarded(path, fh.read, 1) if len(payload) == expected else b""
    shape = "x".join(str(d) for d in dims)
    if len(payload) < expected:
        raise SourceError(f"{path}: header says {shape} = {expected} bytes of data but the file holds "
                          f"{len(payload)}; the file is truncated")
    if extra:
        held = (f"{path.stat().st_size - header_size}" if path.suffix != ".gz"
                else "more (inflating stopped one byte past the promise)")
        raise SourceError(f"{path}: header says {shape} = {expected} bytes of data but the file holds {held}; "
                          "the file is padded or not what its header says")
    return np.frombuffer(payload, dtype=np.uint8).reshape(dims)


def parse_idx(data: bytes, path: Path, magic: int, ndim: int) -> np.ndarray:
    """Check the header of one IDX file (given whole) against what it should hold; return its array."""
    dims = parse_header(data[:4 + 4 * ndim], path, magic, ndim)
    payload = len(data) - 4 - 4 * ndim
    expected = int(np.prod(dims, dtype=np.int64))
    if payload != expected:
        shape = "x".join(str(d) for d in dims)
        raise SourceError(
            f"{path}: header says {shape} = {expected} bytes of data but the file holds {payload}; "
            "the file is truncated or padded"
        )
    return np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim).reshape(dims)


def read_idx_images(path: Path, max_rows: int | None = None, max_bytes: int | None = None) -> np.ndarray:
    """uint8 images (N, H, W) from an ``*-images-idx3-ubyte[.gz]`` file."""
    images = read_idx(path, IMAGES_MAGIC, 3, max_rows, max_bytes)
    if images.shape[0] == 0 or images.shape[1] == 0 or images.shape[2] == 0:
        raise SourceError(f"{path}: holds no images (shape {images.shape})")
    return images


def read_idx_labels(path: Path, max_rows: int | None = None) -> np.ndarray:
    """int64 labels (N,) from an ``*-labels-idx1-ubyte[.gz]`` file."""
    return read_idx(path, LABELS_MAGIC, 1, max_rows).astype(np.int64)


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


def read_idx_part(part: IdxPart, max_rows: int | None = None,
                  max_bytes: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Images and labels of one prefix; labels are -1 when the folder has no labels file for it."""
    images = read_idx_images(part.images, max_rows, max_bytes)
    if part.labels is None:
        return images, np.full(len(images), -1, dtype=np.int64)
    labels = read_idx_labels(part.labels, max_rows)
    if len(labels) != len(images):
        raise SourceError(
            f"{part.images} holds {len(images)} images but {part.labels} holds {len(labels)} labels; "
            "they must come from the same release"
        )
    return images, labels


def read_idx_folder(folder: Path, max_rows: int | None = None,
                    max_bytes: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """All images and labels of an IDX folder, train then t10k, checked to share one image size;
    ``max_rows`` and ``max_bytes`` bound each file's header promise (what is still unread) before its
    data is read."""
    parts = find_idx_parts(folder)
    images, labels = [], []
    for part in parts:
        left = None if max_rows is None else max_rows - sum(len(i) for i in images)
        bytes_left = None if max_bytes is None else max_bytes - sum(i.nbytes for i in images)
        part_images, part_labels = read_idx_part(part, left, bytes_left)
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
