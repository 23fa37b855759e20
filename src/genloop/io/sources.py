"""Image sources the collect stage can read. Each returns uint8 images and labels: (N, H, W) when
grey, (N, H, W, 3) when colour (channel last; genloop.io.pixels says how files are decoded).

A source spec is one of ``digits``, ``mnist``, ``fashion-mnist``, ``kmnist``, ``emoji``, ``idx:PATH``,
``folder:PATH`` or ``npz:PATH``. Every loader checks its input where it reads it and raises a
``SourceError`` naming the file (and the array or field) at fault, before collect writes anything.
Channels and size follow ``collect.channels`` / ``collect.size`` (``ReadOptions``); nothing is
converted without a note that collect prints as a warning.
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

from genloop.config import CollectConfig
from genloop.errors import MAX_SIDE, SourceError, display_path
from genloop.io.pixels import Decoded, conform, conform_array, decode, resize_pixels

SOURCE_FORMS = "digits, mnist, fashion-mnist, kmnist, emoji, idx:PATH, folder:PATH, npz:PATH"
MAX_IMAGE_PIXELS = 4096 * 4096  # above this an image file is refused as a possible decompression bomb
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")
IMAGE_FORMATS = ("PNG", "JPEG")
CACHE_ENV = "GENLOOP_CACHE"
DATASET_URL_ENV = "GENLOOP_DATASET_URL"
DOWNLOAD_TIMEOUT_S = 15.0


@dataclass(frozen=True)
class SourceBatch:
    images: np.ndarray  # uint8, (N, H, W) grey or (N, H, W, 3) colour
    labels: np.ndarray  # int64, (N,); -1 where unknown
    source: str
    classes: dict[str, int] | None = None  # class name -> label, for sources whose classes have names
    renumberable: bool = False  # labels are only the names' sorted order, so an append may renumber them
    modes: tuple[str, ...] | None = None  # each image's mode as read (sources of files), for the manifest
    sizes: np.ndarray | None = None  # (N, 2) int64: each image's (H, W) as read, before any resize
    notes: tuple[str, ...] = ()  # every conversion or resize, counted: collect warns with them


@dataclass(frozen=True)
class ReadOptions:
    """How a source is read: ``collect``'s settings plus the limits checked before inflating anything.
    ``size`` None is native (every image keeps its size, and all must agree)."""

    channels: str | int = "auto"
    size: tuple[int, int] | None = None
    resize_filter: str = "lanczos"
    background: str = "white"
    max_rows: int | None = None
    max_bytes: int = CollectConfig().max_bytes

    @classmethod
    def of(cls, config: CollectConfig | None, resize: tuple[int, int] | None = None,
           max_rows: int | None = None) -> "ReadOptions":
        """``--resize HxW`` wins over ``collect.size``."""
        config = config or CollectConfig()
        size = resize or ((config.size, config.size) if isinstance(config.size, int) else None)
        return cls(channels=config.channels, size=size, resize_filter=config.resize_filter,
                   background=config.background, max_rows=max_rows, max_bytes=config.max_bytes)


# ---- digits ------------------------------------------------------------------------------------

def load_digits_source() -> SourceBatch:
    """scikit-learn's bundled 8x8 digits (values 0..16), rescaled to the 0..255 range."""
    from sklearn.datasets import load_digits

    bunch = load_digits()
    images = np.rint(bunch.images * (255.0 / 16.0)).clip(0, 255).astype(np.uint8)
    return SourceBatch(images=images, labels=bunch.target.astype(np.int64), source="digits")


# ---- idx:PATH ----------------------------------------------------------------------------------

def load_idx_source(folder: Path, max_rows: int | None = None, max_bytes: int | None = None) -> SourceBatch:
    """A folder of MNIST-family IDX files (train then t10k), checked byte for byte against the headers."""
    from genloop.io.idx import read_idx_folder

    folder = folder.resolve()
    images, labels = read_idx_folder(folder, max_rows, max_bytes)
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
                         max_rows: int | None = None, max_bytes: int | None = None) -> SourceBatch:
    """A named data set from the cache, downloading (with checksums) only what is missing."""
    from genloop.io.idx import read_idx_folder

    dataset = OFFICIAL_DATASETS[name]
    folder = official_cache_dir(name)
    base_url = base_url or os.environ.get(DATASET_URL_ENV) or dataset.base_url
    fetch_official_files(dataset, folder, base_url, timeout)
    images, labels = read_idx_folder(folder, max_rows, max_bytes)
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
    for entry in entries:
        _utf8_name(entry)
    return entries


def _utf8_name(path: Path) -> str:
    """A class folder's name, which the manifest stores as text: one that is not UTF-8 is refused."""
    try:
        path.name.encode("utf-8")
    except UnicodeEncodeError:
        raise SourceError(f"{display_path(path)}: class folder name is not valid UTF-8; the manifest records "
                          "class names as UTF-8 text, so rename the folder (e.g. with convmv)") from None
    return path.name


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


def read_image(path: Path, background: str = "white") -> Decoded:
    """One PNG/JPEG file decoded as genloop.io.pixels.decode states (grey (H, W) or colour (H, W, 3),
    alpha composited on ``background``); any Pillow failure becomes a SourceError naming it."""
    from PIL import Image

    try:
        with Image.open(path) as image:
            if image.format not in IMAGE_FORMATS:
                raise SourceError(f"{path}: is a {image.format} file, not PNG or JPEG")
            image.load()
            return decode(image, path, background)
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise SourceError(f"{path}: refused as a possible decompression bomb ({exc}); images may have at "
                          f"most {MAX_IMAGE_PIXELS} pixels") from None
    except SourceError:
        raise
    except (OSError, ValueError, SyntaxError) as exc:  # UnidentifiedImageError is an OSError
        raise SourceError(f"{path}: not a readable PNG or JPEG image ({exc})") from None


def _folder_files(root: Path, folders: list[Path], options: ReadOptions) -> list[tuple[Path, Path]]:
    """(class folder, file) pairs, refused before any decoding when there are more than clean.max_rows."""
    files = [(folder, path) for folder in folders for path in image_files(folder, root)]
    if options.max_rows is not None and len(files) > options.max_rows:
        raise SourceError(f"{root} holds {len(files)} images, more than clean.max_rows={options.max_rows}; "
                          "refused before decoding them (raise clean.max_rows to collect them all)")
    return files


def _within_budget(decoded: Decoded, total: int, path: Path, options: ReadOptions) -> int:
    """The running count of decoded bytes, refused past collect.max_bytes (a folder of huge images)."""
    total += decoded.pixels.nbytes
    if total > options.max_bytes:
        raise SourceError(f"{path}: the images read so far hold {total} bytes of pixels, more than "
                          f"collect.max_bytes={options.max_bytes}; raise it, or pick a smaller collect.size")
    return total


def load_folder_source(root: Path, resize: tuple[int, int] | None = None,
                       options: ReadOptions | None = None) -> SourceBatch:
    """One subfolder per class of PNG/JPEG files, brought to one channel count and size as ``options``
    (collect.channels, collect.size or ``resize`` (H, W)) say; each file's mode and size go to the manifest."""
    options = options or ReadOptions(size=resize)
    root = root.resolve()
    where = f"folder:{display_path(root)}"
    _utf8_name(root)
    folders = class_folders(root)
    names = [f.name for f in folders]
    labels_of = class_labels(names)
    decoded: list[Decoded] = []
    total = 0
    with decompression_bomb_guard():
        pairs = _folder_files(root, folders, options)
        for _, path in pairs:
            decoded.append(read_image(path, options.background))
            total = _within_budget(decoded[-1], total, path, options)
    done = conform(decoded, where, options.channels, options.size, options.resize_filter)
    return SourceBatch(images=done.images, labels=np.asarray([labels_of[f.name] for f, _ in pairs], dtype=np.int64),
                       source=f"folder:{root}", classes=labels_of, renumberable=not labels_are_names(names),
                       modes=tuple(d.mode for d in decoded), sizes=np.asarray([d.size for d in decoded], np.int64),
                       notes=done.notes)


# ---- npz:PATH ----------------------------------------------------------------------------------

def _npz_array(npz, path: Path, name: str) -> np.ndarray:
    try:
        return np.asarray(npz[name])
    except (OSError, ValueError, zipfile.BadZipFile, EOFError) as exc:
        raise SourceError(f"{path}: array '{name}' cannot be read ({exc})") from None


def npz_declared(path: Path) -> dict[str, tuple[tuple[int, ...], np.dtype]]:
    """Each array's shape and dtype as its .npy header declares them, read without inflating the data."""
    declared = {}
    try:
        with zipfile.ZipFile(path) as archive:
            for info in archive.infolist():
                if not info.filename.endswith(".npy"):
                    continue
                with archive.open(info) as fh:
                    version = np.lib.format.read_magic(fh)
                    read = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
                    shape, _, dtype = read(fh)
                declared[info.filename.removesuffix(".npy")] = (tuple(int(d) for d in shape), dtype)
    except (OSError, ValueError, zipfile.BadZipFile, EOFError) as exc:
        raise SourceError(f"{path}: cannot read as an .npz archive ({exc})") from None
    return declared


def check_npz_promise(path: Path, declared: dict[str, tuple[tuple[int, ...], np.dtype]],
                      max_rows: int | None, max_bytes: int) -> None:
    """Refuse arrays whose declared size breaks clean.max_rows or collect.max_bytes before inflating them
    (a small archive of zeros can declare gigabytes)."""
    for name in ("images", "labels"):
        if name not in declared:
            continue
        shape, dtype = declared[name]
        if max_rows is not None and shape and shape[0] > max_rows:
            raise SourceError(f"{path}: array '{name}' declares {shape[0]} rows, more than clean.max_rows="
                              f"{max_rows}; refused before inflating it")
        size = int(np.prod(shape, dtype=object)) * dtype.itemsize
        if size > max_bytes:
            raise SourceError(f"{path}: array '{name}' declares shape {shape} of {dtype} = {size} bytes, more "
                              f"than collect.max_bytes={max_bytes}; refused before inflating it (raise "
                              "collect.max_bytes if the data set is really that large)")


def images_to_uint8(array: np.ndarray, where: str) -> np.ndarray:
    """uint8 pixels from integer 0..255 or float images (0..1 is scaled up), grey (N, H, W) or colour
    (N, H, W, 3) (a single channel (N, H, W, 1) counts as grey); anything else is refused."""
    if array.ndim == 4 and array.shape[-1] == 1:
        array = array[..., 0]
    if not (array.ndim == 3 or (array.ndim == 4 and array.shape[-1] == 3)):
        raise SourceError(f"{where} has shape {array.shape}; expected (N, H, W) grey or (N, H, W, 3) colour "
                          "images (channel last)")
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
    if len(array) and (array.dtype.kind in "uf") and (array.min() < -2.0**63 or array.max() >= 2.0**63):
        raise SourceError(f"{where} holds values from {array.min():g} to {array.max():g}, outside the int64 "
                          "range labels are stored in; expected small class numbers")
    return array.astype(np.int64)


def load_npz_source(path: Path, max_rows: int | None = None, max_bytes: int | None = None) -> SourceBatch:
    """An .npz with ``images`` (N, H, W) or (N, H, W, 3) and optional ``labels`` (N,), checked before use:
    the declared sizes before anything is inflated, the values after."""
    path = path.resolve()
    if not path.is_file():
        raise SourceError(f"{path} does not exist or is not a file; npz:PATH needs an .npz archive")
    if zipfile.is_zipfile(path):
        check_npz_promise(path, npz_declared(path), max_rows, max_bytes or CollectConfig().max_bytes)
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


def resize_image(pixels: np.ndarray, size: tuple[int, int], filter_name: str = "lanczos") -> np.ndarray:
    """One uint8 image, grey (H, W) or colour (H, W, 3), resampled to ``size`` (H, W) (Lanczos by default)."""
    return resize_pixels(pixels, size, filter_name)


# ---- dispatch ----------------------------------------------------------------------------------

def _read_spec(spec: str, options: ReadOptions) -> SourceBatch:
    kind, sep, arg = spec.partition(":")
    if not sep and kind == "digits":
        return load_digits_source()
    if not sep and kind in OFFICIAL_DATASETS:
        return load_official_source(kind, max_rows=options.max_rows, max_bytes=options.max_bytes)
    if not sep and kind == "emoji":
        from genloop.io.emoji import load_emoji_source

        emoji = load_emoji_source(options.size, options.resize_filter, options.background, options.channels)
        return SourceBatch(images=emoji.images, labels=emoji.labels, source="emoji", classes=emoji.classes,
                           renumberable=True, modes=emoji.modes, sizes=emoji.sizes, notes=emoji.notes)
    if sep and arg.strip():
        path = Path(arg.strip()).expanduser()
        if kind == "idx":
            return load_idx_source(path, options.max_rows, options.max_bytes)
        if kind == "folder":
            return load_folder_source(path, options=options)
        if kind == "npz":
            return load_npz_source(path, options.max_rows, options.max_bytes)
    raise SourceError(f"unknown source {spec!r}; valid forms: {SOURCE_FORMS}")


def conformed_batch(batch: SourceBatch, options: ReadOptions) -> SourceBatch:
    """An array source's batch with collect.channels and collect.size applied (the same array when
    nothing is asked, so the digits stay byte-identical)."""
    if batch.modes is not None:  # file sources conform while reading
        return batch
    where = batch.source.split(":", 1)[0] if batch.source.startswith(("npz:", "idx:")) else batch.source
    done = conform_array(batch.images, f"{where}", options.channels, options.size, options.resize_filter)
    if done.images is batch.images:
        return batch
    return replace(batch, images=done.images, notes=(*batch.notes, *done.notes))


def check_batch(batch: SourceBatch) -> SourceBatch:
    """The contract every loader promises collect: uint8 (N, H, W) or (N, H, W, 3) with N >= 1 and int64
    labels (N,)."""
    images, labels = batch.images, batch.labels
    layout = images.ndim == 3 or (images.ndim == 4 and images.shape[-1] == 3)
    if images.dtype != np.uint8 or not layout or 0 in images.shape:
        raise SourceError(f"source {batch.source!r} gave images {images.dtype} {images.shape}; expected uint8 "
                          "(N, H, W) or (N, H, W, 3)")
    if labels.dtype != np.int64 or labels.shape != (len(images),):
        raise SourceError(
            f"source {batch.source!r} gave labels {labels.dtype} {labels.shape}; expected int64 ({len(images)},)"
        )
    return batch


def load_source(spec: str, resize: tuple[int, int] | None = None, max_rows: int | None = None,
                config: CollectConfig | None = None) -> SourceBatch:
    """Read a source spec with ``config``'s channels, size, filter, background and byte budget; ``resize``
    (H, W, from ``--resize``) wins over collect.size. ``max_rows`` (clean.max_rows) lets sources refuse
    a declared size before reading the data."""
    options = ReadOptions.of(config, resize, max_rows)
    batch = conformed_batch(_read_spec(spec.strip(), options), options)
    return check_batch(batch)
