"""Decoded images brought to one layout, with nothing converted silently.

Layout on disk (the project's colour convention): uint8 ``(N, H, W)`` when grey, ``(N, H, W, 3)`` when
colour, channel last. How files are decoded (``decode``):

- 8-bit grey (``L``, ``1``) stays grey; RGB, YCbCr and CMYK (JPEG) become RGB.
- 16-bit grey PNGs (``I;16``, ``I``) are scaled to 8 bits (value / 257, rounded), not clipped.
- Palette PNGs (``P``) are expanded to their colours; one whose colours are all grey counts as grey.
- Alpha (``RGBA``, ``LA``, ``PA``, a palette or grey image with transparency) is composited on
  ``collect.background`` (default white) and dropped, so a transparent background does not turn black.
- Floating-point images (``F``) are refused.

``conform`` then settles channels (``collect.channels``) and size (``collect.size`` or ``--resize``):
mixed inputs without a setting are one error listing the counts per mode and per size; with a setting
each conversion and resize is counted in a note that collect prints as a warning.
"""
from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from genloop.errors import SourceError, display_path

GREY_MODES = ("1", "L")
ALPHA_MODES = ("RGBA", "RGBa", "LA", "La", "PA")
STATS_CHUNK = 4096  # images per chunk of per-image statistics: bounds the float64 copy


@dataclass(frozen=True)
class Decoded:
    """One image as read: pixels (H, W) grey or (H, W, 3) colour, its Pillow mode and (H, W) in the file."""

    pixels: np.ndarray
    mode: str
    size: tuple[int, int]

    @property
    def colour(self) -> bool:
        return self.pixels.ndim == 3


def is_colour(images: np.ndarray) -> bool:
    """Colour arrays carry the channel axis last: (N, H, W, 3); grey ones are (N, H, W)."""
    return images.ndim == 4


def resample_filter(name: str):
    """Pillow's filter for a ``collect.resize_filter`` name (nearest, box, bilinear, hamming, bicubic, lanczos)."""
    from PIL import Image

    try:
        return Image.Resampling[name.upper()]
    except KeyError:
        raise SourceError(f"collect.resize_filter {name!r}: not a Pillow filter") from None


def _composited(image, background: str):
    """``image`` with its alpha composited on ``background``, as RGB (or L for grey-with-alpha)."""
    from PIL import Image, ImageColor

    grey = image.mode in ("LA", "La", "L")
    rgba = image.convert("RGBA")
    base = Image.new("RGBA", rgba.size, (*ImageColor.getrgb(background)[:3], 255))
    flat = Image.alpha_composite(base, rgba)
    return flat.convert("L" if grey else "RGB")


def _grey_or_rgb(rgb: np.ndarray) -> np.ndarray:
    """(H, W) when every pixel has R == G == B (a grey palette), else the (H, W, 3) colours."""
    if (rgb[..., 0] == rgb[..., 1]).all() and (rgb[..., 1] == rgb[..., 2]).all():
        return np.ascontiguousarray(rgb[..., 0])
    return rgb


def decode(image, path: Path, background: str = "white") -> Decoded:
    """The pixels of one opened Pillow image, decoded as the module docstring states."""
    mode, size = image.mode, (image.height, image.width)
    if mode == "F":
        raise SourceError(f"{display_path(path)}: floating-point images are not supported; save it as 8-bit PNG or JPEG")
    if mode.startswith("I;16") or mode == "I":
        pixels = np.rint(np.asarray(image, dtype=np.float64) / 257.0).clip(0, 255).astype(np.uint8)
        return Decoded(pixels, mode, size)
    transparent = mode in ALPHA_MODES or "transparency" in image.info
    if transparent:
        flat = _composited(image, background)
        pixels = np.asarray(flat, dtype=np.uint8)
        return Decoded(_grey_or_rgb(pixels) if flat.mode == "RGB" and mode.startswith("P") else pixels, mode, size)
    if mode == "P":
        return Decoded(_grey_or_rgb(np.asarray(image.convert("RGB"), dtype=np.uint8)), mode, size)
    if mode in GREY_MODES:
        return Decoded(np.asarray(image.convert("L"), dtype=np.uint8), mode, size)
    return Decoded(np.asarray(image.convert("RGB"), dtype=np.uint8), mode, size)


def _counts(counter: Counter) -> str:
    return ", ".join(f"{key} {count}" for key, count in sorted(counter.items(), key=lambda kv: (-kv[1], str(kv[0]))))


def _size_text(size: tuple[int, int]) -> str:
    return f"{size[0]}x{size[1]}"


def mixed_error(where: str, decoded: Sequence[Decoded], channels_mixed: bool, sizes_mixed: bool) -> SourceError:
    """One message for every way the inputs disagree, with the counts and the settings that choose."""
    modes = Counter(d.mode for d in decoded)
    kinds = Counter("colour" if d.colour else "grey" for d in decoded)
    sizes = Counter(_size_text(d.size) for d in decoded)
    parts, fixes = [], []
    if channels_mixed:
        parts.append(f"{_counts(kinds)} (file modes: {_counts(modes)})")
        fixes.append("-S collect.channels=3 (grey becomes colour) or -S collect.channels=1 (colour becomes grey)")
    if sizes_mixed:
        parts.append(f"sizes (HxW) {_counts(sizes)}")
        fixes.append("-S collect.size=SIDE (e.g. 32, with collect.resize_filter) or --resize HxW")
    return SourceError(f"{where} mixes {'; and '.join(parts)}; nothing is converted silently: choose with "
                       + " and ".join(fixes))


def target_channels(decoded: Sequence[Decoded], channels: str | int) -> int | None:
    """1 or 3 as ``collect.channels`` asks, or from the images under ``auto``; None when auto meets a mix."""
    if channels != "auto":
        return int(channels)
    kinds = {d.colour for d in decoded}
    if len(kinds) > 1:
        return None
    return 3 if kinds == {True} else 1


def to_channels(pixels: np.ndarray, channels: int) -> np.ndarray:
    """One image as (H, W) grey or (H, W, 3) colour; colour to grey is Pillow's ITU-R 601-2 luma."""
    from PIL import Image

    if channels == 3 and pixels.ndim == 2:
        return np.repeat(pixels[:, :, None], 3, axis=2)
    if channels == 1 and pixels.ndim == 3:
        return np.asarray(Image.fromarray(pixels, mode="RGB").convert("L"), dtype=np.uint8)
    return pixels


def resize_pixels(pixels: np.ndarray, size: tuple[int, int], filter_name: str = "lanczos") -> np.ndarray:
    """One uint8 image, grey or colour, resampled to ``size`` (H, W); every channel alike."""
    from PIL import Image

    if pixels.shape[:2] == size:
        return pixels
    resized = Image.fromarray(pixels).resize((size[1], size[0]), resample_filter(filter_name))
    return np.asarray(resized, dtype=np.uint8)


@dataclass(frozen=True)
class Conformed:
    images: np.ndarray  # (N, H, W) or (N, H, W, 3) uint8
    notes: tuple[str, ...]  # one per kind of change, with its count


def conform(decoded: Sequence[Decoded], where: str, channels: str | int = "auto",
            size: tuple[int, int] | None = None, filter_name: str = "lanczos") -> Conformed:
    """Stack ``decoded`` into one array of one channel count and one size, as the settings say.

    ``size`` None means native: every image must already share one size. Mixed inputs without a
    setting raise one error (``mixed_error``); conversions and resizes become counted notes.
    """
    target = target_channels(decoded, channels)
    sizes = {d.pixels.shape[:2] for d in decoded}
    if target is None or (size is None and len(sizes) > 1):
        raise mixed_error(where, decoded, target is None, size is None and len(sizes) > 1)
    converted = sum(1 for d in decoded if d.colour != (target == 3))
    resized = sum(1 for d in decoded if size is not None and d.pixels.shape[:2] != size)
    images = np.stack([
        resize_pixels(to_channels(d.pixels, target), size, filter_name) if size is not None
        else to_channels(d.pixels, target) for d in decoded
    ])
    notes = []
    if converted:
        kind = "colour (grey repeated into 3 channels)" if target == 3 else "grey (luma)"
        notes.append(f"{where}: converted {converted} of {len(decoded)} images to {kind} (collect.channels={channels})")
    if resized:
        notes.append(f"{where}: resized {resized} of {len(decoded)} images to {_size_text(size)} with "
                     f"{filter_name} (collect.size / --resize)")
    return Conformed(images=images, notes=tuple(notes))


def conform_array(images: np.ndarray, where: str, channels: str | int = "auto",
                  size: tuple[int, int] | None = None, filter_name: str = "lanczos") -> Conformed:
    """``conform`` for a source that is already one array: untouched (the same bytes) when nothing is asked."""
    colour = is_colour(images)
    if (channels == "auto" or (int(channels) == 3) == colour) and (size is None or images.shape[1:3] == size):
        return Conformed(images=images, notes=())
    mode = "RGB" if colour else "L"
    hw = (int(images.shape[1]), int(images.shape[2]))
    return conform([Decoded(img, mode, hw) for img in images], where, channels, size, filter_name)


def pixel_stats(images: np.ndarray) -> dict[str, np.ndarray]:
    """Per-image min, max, mean and std over every pixel and channel, in chunks so the float64 copy
    stays small whatever the data set's size."""
    n = len(images)
    out = {key: np.empty(n, dtype=np.float64) for key in ("pixel_min", "pixel_max", "pixel_mean", "pixel_std")}
    for start in range(0, n, STATS_CHUNK):
        flat = images[start:start + STATS_CHUNK].reshape(min(STATS_CHUNK, n - start), -1).astype(np.float64)
        out["pixel_min"][start:start + len(flat)] = flat.min(axis=1)
        out["pixel_max"][start:start + len(flat)] = flat.max(axis=1)
        out["pixel_mean"][start:start + len(flat)] = flat.mean(axis=1)
        out["pixel_std"][start:start + len(flat)] = flat.std(axis=1)
    return out
