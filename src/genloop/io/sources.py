"""Image sources the collect stage can read. Each returns uint8 images (N, H, W) and labels.

A source spec is one of ``digits``, ``mnist``, ``fashion-mnist``, ``kmnist``, ``idx:PATH``,
``folder:PATH`` or ``npz:PATH``. Every loader checks its input where it reads it and raises a
``SourceError`` naming the file (and the array or field) at fault, before collect writes anything.
"""
from __future__ import annotations

import hashlib
import os
import re
import urllib.request
import warnings
import zipfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from http.client import HTTPException
from pathlib import Path
from urllib.error import HTTPError, URLError

import numpy as np

from genloop.errors import MAX_SIDE, SourceError

SOURCE_FORMS = "digits, mnist, fashion-mnist, kmnist, idx:PATH, folder:PATH, npz:PATH"
MAX_IMAGE_PIXELS = 4096 * 4096  # above this an image file is refused as a possible decompression bomb
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")
IMAGE_FORMATS = ("PNG", "JPEG")
CACHE_ENV = "GENLOOP_CACHE"
DATASET_URL_ENV = "GENLOOP_DATASET_URL"
DOWNLOAD_TIMEOUT_S = 15.0


@dataclass(frozen=True)
class SourceBatch:
    images: np.ndarray  # uint8, (N, H, W)
    labels: np.ndarray  # int64, (N,); -1 where unknown
    source: str
    classes: dict[str, int] | None = None  # class name -> label, for sources whose classes have names
    renumberable: bool = False  # labels are only the names' sorted order, so an append may renumber them


# ---- digits ------------------------------------------------------------------------------------

def load_digits_source() -> SourceBatch:
    """scikit-learn's bundled 8x8 digits (values 0..16), rescaled to the 0..255 range."""
    from sklearn.datasets import load_digits

    bunch = load_digits()
    images = np.rint(bunch.images * (255.0 / 16.0)).clip(0, 255).astype(np.uint8)
    return SourceBatch(images=images, labels=bunch.target.astype(np.int64), source="digits")


# ---- idx:PATH ----------------------------------------------------------------------------------

def load_idx_source(folder: Path, max_rows: int | None = None) -> SourceBatch:
    """A folder of MNIST-family IDX files (train then t10k), checked byte for byte against the headers."""
    from genloop.io.idx import read_idx_folder

    folder = folder.resolve()
    images, labels = read_idx_folder(folder, max_rows)
    return SourceBatch(images=images, labels=labels, source=f"idx:{folder}")


# ---- mnist, fashion-mnist, kmnist --------------------------------------------------------------

@dataclass(frozen=True)
class OfficialDataset:
    """Where a named IDX data set is published and the md5 its publisher lists for each file."""

    name: str
    base_url: str
    md5: dict[str, str]


OFFICIAL_DATASETS: dict[str, OfficialDataset] = {
    "mnist": OfficialDataset("mnist", "https://ossci-datasets.s3.amazonaws.com/mnist/", {
        "train-images-idx3-ubyte.gz": "f68b3c2dcbeaaa9fbdd348bbdeb94873",
        "train-labels-idx1-ubyte.gz": "d53e105ee54ea40749a09fcbcd1e9432",
        "t10k-images-idx3-ubyte.gz": "9fb629c4189551a2d022fa330f9573f3",
        "t10k-labels-idx1-ubyte.gz": "ec29112dd5afa0611ce80d1b7f02629c",
    }),
    "fashion-mnist": OfficialDataset("fashion-mnist", "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/", {
        "train-images-idx3-ubyte.gz": "8d4fb7e6c68d591d4c3dfef9ec88bf0d",
        "train-labels-idx1-ubyte.gz": "25c81989df183df01b3e8a0aad5dffbe",
        "t10k-images-idx3-ubyte.gz": "bef4ecab320f06d8554ea6380940ec79",
        "t10k-labels-idx1-ubyte.gz": "bb300cfdad3c16e7a12a480ee83cd310",
    }),
    "kmnist": OfficialDataset("kmnist", "http://codh.rois.ac.jp/kmnist/dataset/kmnist/", {
        "train-images-idx3-ubyte.gz": "bdb82020997e1d708af4cf47b453dcf7",
        "train-labels-idx1-ubyte.gz": "e144d726b3acfaa3e44228e80efcd344",
        "t10k-images-idx3-ubyte.gz": "5c965bf0a639b31b8f53240b1b52f4d7",
        "t10k-labels-idx1-ubyte.gz": "7320c461ea6c1c855c0b718fb2a4b134",
    }),
}


def official_cache_dir(name: str) -> Path:
    """``$GENLOOP_CACHE/<name>`` or ``~/.cache/genloop/<name>``: one place to drop the official files."""
    base = os.environ.get(CACHE_ENV)
    return (Path(base).expanduser() if base else Path.home() / ".cache" / "genloop") / name


def _is_cached(folder: Path, filename: str) -> bool:
    """A file counts as present compressed or already gunzipped."""
    return (folder / filename).is_file() or (folder / filename.removesuffix(".gz")).is_file()


def _offline_hint(dataset: OfficialDataset, folder: Path) -> str:
    files = ", ".join(dataset.md5)
    return (f"to use {dataset.name} offline, put the official files ({files}) into {folder} "
            f"(or a folder named {dataset.name} under ${CACHE_ENV}), or point collect at any folder "
            "holding them with --source idx:PATH")


def download_verified(url: str, target: Path, md5: str, timeout: float) -> None:
    """Fetch ``url`` into ``target`` only if its md5 matches the published one; nothing half-written stays."""
    from genloop.io.atomic import atomic_path

    digest = hashlib.md5(usedforsecurity=False)
    with atomic_path(target) as tmp:
        with urllib.request.urlopen(url, timeout=timeout) as response, tmp.open("wb") as out:
            while chunk := response.read(1 << 20):
                digest.update(chunk)
                out.write(chunk)
        if digest.hexdigest() != md5:
            raise SourceError(
                f"{url}: md5 {digest.hexdigest()} does not match the published {md5}; the download is "
                "corrupt or the file changed upstream, so it was not kept"
            )


def fetch_official_files(dataset: OfficialDataset, folder: Path, base_url: str, timeout: float) -> None:
    """Download the files missing from the cache; the first network error stops with a way out."""
    for filename, md5 in dataset.md5.items():
        if _is_cached(folder, filename):
            continue
        url = base_url.rstrip("/") + "/" + filename
        try:
            download_verified(url, folder / filename, md5, timeout)
        except (OSError, HTTPException, ValueError) as exc:
            if isinstance(exc, SourceError):
                raise SourceError(f"{exc}; {_offline_hint(dataset, folder)}") from None
            reason = exc.reason if isinstance(exc, URLError) and not isinstance(exc, HTTPError) else exc
            raise SourceError(f"cannot download {url} ({reason}); {_offline_hint(dataset, folder)}") from None


def load_official_source(name: str, base_url: str | None = None, timeout: float = DOWNLOAD_TIMEOUT_S,
                         max_rows: int | None = None) -> SourceBatch:
    """A named data set from the cache, downloading (with checksums) only what is missing."""
    from genloop.io.idx import read_idx_folder

    dataset = OFFICIAL_DATASETS[name]
    folder = official_cache_dir(name)
    base_url = base_url or os.environ.get(DATASET_URL_ENV) or dataset.base_url
    fetch_official_files(dataset, folder, base_url, timeout)
    images, labels = read_idx_folder(folder, max_rows)
    return SourceBatch(images=images, labels=labels, source=name)


# ---- folder:PATH -------------------------------------------------------------------------------

@contextmanager
def decompression_bomb_guard() -> Iterator[None]:
    """Refuse images above MAX_IMAGE_PIXELS while reading, without changing Pillow's limit for others."""
    from PIL import Image

    previous = Image.MAX_IMAGE_PIXELS
    Image.MAX_IMAGE_PIXELS = MAX_IMAGE_PIXELS
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            yield
    finally:
        Image.MAX_IMAGE_PIXELS = previous


def _visible(path: Path) -> bool:
    return not path.name.startswith(".")


def _inside(path: Path, root: Path) -> Path:
    """Where a symlink under ``root`` leads; one that leads out of ``root`` is refused, naming both."""
    target = path.resolve()
    if target != root and root not in target.parents:
        raise SourceError(f"{path}: symlink to {target}, outside the source folder {root}; folder:PATH "
                          "reads only what lies inside it (copy the files in, or point it at their folder)")
    return target


def class_folders(root: Path) -> list[Path]:
    """The class subfolders of ``root``; a stray file beside them is an error, not silently skipped."""
    if not root.exists():
        raise SourceError(f"{root} does not exist; folder:PATH needs a folder with one subfolder per class")
    if not root.is_dir():
        raise SourceError(f"{root} is not a folder; folder:PATH needs a folder with one subfolder per class")
    entries = sorted(p for p in root.iterdir() if _visible(p))
    for entry in entries:
        if entry.is_symlink():
            _inside(entry, root)
        if not entry.is_dir():
            raise SourceError(f"{entry}: folder:PATH expects only class subfolders in {root}, found a file")
    if not entries:
        raise SourceError(f"{root} is empty; folder:PATH needs one subfolder per class holding PNG or JPEG images")
    return entries


def class_labels(names: list[str]) -> dict[str, int]:
    """Integer folder names are the labels themselves; otherwise classes are sorted and numbered."""
    if labels_are_names(names):
        labels = {n: int(n) for n in names}
        if len(set(labels.values())) != len(labels):
            raise SourceError(f"class folders {sorted(names)} name the same label twice (e.g. '1' and '01')")
        return labels
    return {n: i for i, n in enumerate(sorted(names))}


def labels_are_names(names: list[str]) -> bool:
    return all(re.fullmatch(r"\d+", n) for n in names)


def _walk(folder: Path, root: Path, ancestors: tuple[Path, ...]) -> Iterator[Path]:
    """Visible files under ``folder``, depth first in name order; symlinks must stay inside ``root``."""
    for entry in sorted(folder.iterdir()):
        if entry.name.startswith("."):
            continue
        real = _inside(entry, root) if entry.is_symlink() else entry
        if entry.is_dir():
            real = real.resolve()
            if real in ancestors:
                raise SourceError(f"{entry}: symlink loop back to {real}")
            yield from _walk(entry, root, (*ancestors, real))
        else:
            yield entry


def image_files(folder: Path, root: Path | None = None) -> list[Path]:
    """Every PNG/JPEG under one class folder (nested folders included), in a stable order; symlinks
    that lead out of ``root`` (default: the class folder's parent) are refused."""
    root = (root or folder.parent).resolve()
    files = []
    for path in _walk(folder, root, (folder.resolve(),)):
        if path.suffix.lower() not in IMAGE_SUFFIXES:
            raise SourceError(f"{path}: not a PNG or JPEG image; a class folder may hold only "
                              f"{', '.join(IMAGE_SUFFIXES)} files")
        files.append(path)
    if not files:
        raise SourceError(f"{folder} holds no PNG or JPEG images; remove the class folder or add images")
    return files


def _pixels_8bit(image, path: Path) -> np.ndarray:
    """Grayscale uint8 pixels; 16-bit PNGs are scaled down rather than clipped to white."""
    if image.mode.startswith("I;16") or image.mode == "I":
        return np.rint(np.asarray(image, dtype=np.float64) / 257.0).clip(0, 255).astype(np.uint8)
    if image.mode == "F":
        raise SourceError(f"{path}: floating-point images are not supported; save it as 8-bit PNG or JPEG")
    return np.asarray(image.convert("L"), dtype=np.uint8)


def read_image(path: Path) -> np.ndarray:
    """One PNG/JPEG file as uint8 (H, W) grayscale; any Pillow failure becomes a SourceError naming it."""
    from PIL import Image

    try:
        with Image.open(path) as image:
            if image.format not in IMAGE_FORMATS:
                raise SourceError(f"{path}: is a {image.format} file, not PNG or JPEG")
            image.load()
            return _pixels_8bit(image, path)
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise SourceError(f"{path}: refused as a possible decompression bomb ({exc}); images may have at "
                          f"most {MAX_IMAGE_PIXELS} pixels") from None
    except SourceError:
        raise
    except (OSError, ValueError, SyntaxError) as exc:  # UnidentifiedImageError is an OSError
        raise SourceError(f"{path}: not a readable PNG or JPEG image ({exc})") from None


def _size_text(shape: tuple[int, ...]) -> str:
    return f"{shape[0]}x{shape[1]}"


def load_folder_source(root: Path, resize: tuple[int, int] | None = None) -> SourceBatch:
    """One subfolder per class of PNG/JPEG files, all one size unless ``resize`` (H, W) is given."""
    root = root.resolve()
    folders = class_folders(root)
    names = [f.name for f in folders]
    labels_of = class_labels(names)
    images: list[np.ndarray] = []
    labels: list[int] = []
    first: Path | None = None
    with decompression_bomb_guard():
        for folder in folders:
            for path in image_files(folder, root):
                pixels = read_image(path)
                if resize is not None:
                    pixels = resize_image(pixels, resize)
                elif first is None:
                    first = path
                elif pixels.shape != images[0].shape:
                    raise SourceError(
                        f"images differ in size: {first} is {_size_text(images[0].shape)} but {path} is "
                        f"{_size_text(pixels.shape)} (HxW); pass --resize HxW to bring all to one size"
                    )
                images.append(pixels)
                labels.append(labels_of[folder.name])
    return SourceBatch(images=np.stack(images), labels=np.asarray(labels, dtype=np.int64), source=f"folder:{root}",
                       classes=labels_of, renumberable=not labels_are_names(names))


# ---- npz:PATH ----------------------------------------------------------------------------------

def _npz_array(npz, path: Path, name: str) -> np.ndarray:
    try:
        return np.asarray(npz[name])
    except (OSError, ValueError, zipfile.BadZipFile, EOFError) as exc:
        raise SourceError(f"{path}: array '{name}' cannot be read ({exc})") from None


def images_to_uint8(array: np.ndarray, where: str) -> np.ndarray:
    """uint8 pixels from integer 0..255 or float images (0..1 is scaled up); anything else is refused."""
    if array.ndim != 3:
        raise SourceError(f"{where} has shape {array.shape}; expected (N, H, W) grayscale images")
    if 0 in array.shape:
        raise SourceError(f"{where} has shape {array.shape}; it holds no pixels")
    if array.dtype.kind not in "uif":
        raise SourceError(f"{where} has dtype {array.dtype}; expected uint8 0..255 or float 0..1")
    if array.dtype.kind == "f":
        bad = ~np.isfinite(array)
        if bad.any():
            first = int(np.argmax(bad.reshape(len(array), -1).any(axis=1)))
            raise SourceError(f"{where} holds {int(bad.sum())} NaN or inf values (first in image {first})")
    low, high = float(array.min()), float(array.max())
    if low < 0 or high > 255:
        raise SourceError(f"{where} has values from {low:g} to {high:g}; expected 0..255 (or 0..1 for floats)")
    if array.dtype.kind == "f":
        scale = 255.0 if high <= 1.0 else 1.0
        return np.rint(array.astype(np.float64) * scale).astype(np.uint8)
    return array.astype(np.uint8)


def labels_to_int64(array: np.ndarray, count: int, where: str) -> np.ndarray:
    """int64 labels, one per image; integral floats are accepted, fractions and NaN are not."""
    if array.ndim != 1 or len(array) != count:
        raise SourceError(f"{where} has shape {array.shape}; expected ({count},), one label per image")
    if array.dtype.kind not in "uif":
        raise SourceError(f"{where} has dtype {array.dtype}; expected integers")
    if array.dtype.kind == "f" and not (np.isfinite(array).all() and (array == np.round(array)).all()):
        raise SourceError(f"{where} holds NaN, inf or fractional values; expected integers")
    return array.astype(np.int64)


def load_npz_source(path: Path) -> SourceBatch:
    """An .npz with ``images`` (N, H, W) and optional ``labels`` (N,), checked before use."""
    path = path.resolve()
    if not path.is_file():
        raise SourceError(f"{path} does not exist or is not a file; npz:PATH needs an .npz archive")
    try:
        npz = np.load(path, allow_pickle=False)
    except (OSError, ValueError, zipfile.BadZipFile, EOFError) as exc:
        raise SourceError(f"{path}: cannot read as an .npz archive ({exc})") from None
    if not isinstance(npz, np.lib.npyio.NpzFile):
        raise SourceError(f"{path}: is a single .npy array, not an .npz archive with an 'images' array")
    with npz:
        if "images" not in npz.files:
            raise SourceError(f"{path}: no array named 'images' (found: {', '.join(npz.files) or 'none'})")
        images = images_to_uint8(_npz_array(npz, path, "images"), f"{path}: array 'images'")
        if "labels" in npz.files:
            labels = labels_to_int64(_npz_array(npz, path, "labels"), len(images), f"{path}: array 'labels'")
        else:
            labels = np.full(len(images), -1, dtype=np.int64)
    return SourceBatch(images=images, labels=labels, source=f"npz:{path}")


# ---- sizes -------------------------------------------------------------------------------------

def parse_size(text: str) -> tuple[int, int]:
    """``HxW`` (e.g. ``28x28``) as (height, width)."""
    match = re.fullmatch(r"\s*(\d+)\s*[xX]\s*(\d+)\s*", text)
    if not match:
        raise SourceError(f"size {text!r}: expected HxW, e.g. 28x28")
    size = (int(match[1]), int(match[2]))
    if not all(1 <= s <= MAX_SIDE for s in size):
        raise SourceError(f"size {text!r}: height and width must be between 1 and {MAX_SIDE}")
    return size


def resize_image(pixels: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """One uint8 (H, W) image resampled to ``size`` (H, W) with Pillow's Lanczos filter."""
    from PIL import Image

    if pixels.shape == size:
        return pixels
    resized = Image.fromarray(pixels).resize((size[1], size[0]), Image.Resampling.LANCZOS)
    return np.asarray(resized, dtype=np.uint8)


def resize_batch(batch: SourceBatch, size: tuple[int, int]) -> SourceBatch:
    if batch.images.shape[1:] == size:
        return batch
    images = np.stack([resize_image(img, size) for img in batch.images])
    return replace(batch, images=images)


# ---- dispatch ----------------------------------------------------------------------------------

def _read_spec(spec: str, resize: tuple[int, int] | None, max_rows: int | None) -> SourceBatch:
    kind, sep, arg = spec.partition(":")
    if not sep and kind == "digits":
        return load_digits_source()
    if not sep and kind in OFFICIAL_DATASETS:
        return load_official_source(kind, max_rows=max_rows)
    if sep and arg.strip():
        path = Path(arg.strip()).expanduser()
        if kind == "idx":
            return load_idx_source(path, max_rows)
        if kind == "folder":
            return load_folder_source(path, resize)
        if kind == "npz":
            return load_npz_source(path)
    raise SourceError(f"unknown source {spec!r}; valid forms: {SOURCE_FORMS}")


def check_batch(batch: SourceBatch) -> SourceBatch:
    """The contract every loader promises collect: uint8 (N, H, W) with N >= 1 and int64 labels (N,)."""
    images, labels = batch.images, batch.labels
    if images.dtype != np.uint8 or images.ndim != 3 or 0 in images.shape:
        raise SourceError(
            f"source {batch.source!r} gave images {images.dtype} {images.shape}; expected uint8 (N, H, W)"
        )
    if labels.dtype != np.int64 or labels.shape != (len(images),):
        raise SourceError(
            f"source {batch.source!r} gave labels {labels.dtype} {labels.shape}; expected int64 ({len(images)},)"
        )
    return batch


def load_source(spec: str, resize: tuple[int, int] | None = None, max_rows: int | None = None) -> SourceBatch:
    """Read a source spec; ``resize`` (H, W) brings every image to one size. ``max_rows`` (clean.max_rows)
    lets IDX sources refuse a header promising more rows before reading its data."""
    batch = _read_spec(spec.strip(), resize, max_rows)
    if resize is not None:
        batch = resize_batch(batch, resize)
    return check_batch(batch)
