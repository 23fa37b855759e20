"""The ``emoji`` source: Google's Noto Color Emoji, rendered offline into a colour data set.

The font comes from Debian's ``fonts-noto-color-emoji`` package (``apt-get install -y
fonts-noto-color-emoji``, or ``make emoji-font``), so nothing is downloaded at run time. The font is
licensed under the SIL Open Font License 1.1 (the package's copyright file); images rendered from it
may be used and shared, the font itself may not be sold on its own.

What it holds: every single code point the font maps to a colour glyph (about 1,350; emoji written
as sequences, such as flags, skin tones and ZWJ families, are left out), drawn by Pillow with
``embedded_color=True`` at the font's only bitmap size, 109 px (136x128 glyph cells), centred on a
square, its transparent background composited on ``collect.background`` (white by default), then
resized to ``collect.size`` with ``collect.resize_filter``. ``collect.size: native`` means 32x32 here:
the 136 px renders are far larger than the loop needs, so that resize is the source's own and not
counted as a conversion. Glyph rendering differs a little between font versions, so the data set's
DVC hash follows the installed package version.

Classes: Python's unicodedata has no emoji groups, so the labels come from ``GROUPS``, a small table of
code-point ranges after the blocks and sub-headings of the Unicode code charts (faces, animals, food and
plants, transport, ...). Class names are those group names; labels number them in sorted order.
"""
from __future__ import annotations

import os
import unicodedata
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from genloop.errors import SourceError, display_path
from genloop.io.pixels import Decoded, conform, decode

FONT_ENV = "GENLOOP_EMOJI_FONT"
FONT_PATHS = (Path("/usr/share/fonts/truetype/noto/NotoColorEmoji.ttf"),)
FONT_PACKAGE = "fonts-noto-color-emoji"
BITMAP_SIZE = 109  # the only strike (pixels per em) NotoColorEmoji's CBDT bitmaps have
NATIVE_SIDE = 32  # collect.size: native means this for the emoji source
LICENCE = "SIL Open Font License 1.1"

# (first, last, group): inclusive ranges, first match wins; code points outside every range are left out.
GROUPS: tuple[tuple[int, int, str], ...] = (
    (0x1F1E6, 0x1F1FF, ""),  # regional indicators: only meaningful in pairs (flags)
    (0x1F3FB, 0x1F3FF, ""),  # skin-tone modifiers: colour swatches, not emoji of their own
    (0x1F300, 0x1F32C, "sky-weather"),
    (0x1F32D, 0x1F37F, "food-plants"),
    (0x1F380, 0x1F3FA, "activities-places"),
    (0x1F400, 0x1F43F, "animals"),
    (0x1F440, 0x1F4FF, "people-objects"),
    (0x1F500, 0x1F5FF, "symbols-objects"),
    (0x1F600, 0x1F64F, "faces"),
    (0x1F680, 0x1F6FF, "transport-map"),
    (0x1F900, 0x1F94F, "people-sports"),
    (0x1F950, 0x1F96F, "food-plants"),
    (0x1F970, 0x1F97F, "faces"),
    (0x1F980, 0x1F9AE, "animals"),
    (0x1F9AF, 0x1F9FF, "people-objects"),
    (0x1FA70, 0x1FAFF, "objects-extended"),
    (0x2600, 0x27BF, "symbols-dingbats"),
    (0x1F000, 0x1F2FF, "signs"),
    (0x00A9, 0x32FF, "signs"),
)


def font_path() -> Path:
    """``$GENLOOP_EMOJI_FONT`` or the Debian package's file; missing: one error saying how to install it."""
    candidates = [Path(os.environ[FONT_ENV])] if os.environ.get(FONT_ENV) else list(FONT_PATHS)
    for path in candidates:
        if path.is_file():
            return path
    where = ", ".join(display_path(p) for p in candidates)
    raise SourceError(f"the emoji source needs the Noto Color Emoji font from Debian's {FONT_PACKAGE} package "
                      f"({where} not found); install it with `sudo apt-get install -y {FONT_PACKAGE}` (or "
                      f"`make emoji-font`), or point {FONT_ENV} at a copy of NotoColorEmoji.ttf")


def group_of(code: int) -> str:
    """The class of one code point from GROUPS; "" when it is left out."""
    for first, last, group in GROUPS:
        if first <= code <= last:
            return group
    return ""


def emoji_code_points(path: Path) -> list[int]:
    """The single code points the font maps to a glyph and GROUPS gives a class, in code point order."""
    from fontTools.ttLib import TTFont

    try:
        cmap = TTFont(str(path), lazy=True).getBestCmap() or {}
    except Exception as exc:  # fontTools raises many kinds on a damaged file
        raise SourceError(f"{display_path(path)}: cannot read as a font ({exc}); reinstall {FONT_PACKAGE}") from None
    return [c for c in sorted(cmap) if c > 0x7F and unicodedata.name(chr(c), "") and group_of(c)]


def render_glyph(font, code: int, path: Path, background: str) -> Decoded:
    """One glyph in colour, centred on a transparent square, composited on ``background``."""
    from PIL import Image, ImageDraw

    left, top, right, bottom = font.getbbox(chr(code))
    side = max(right - left, bottom - top, 1)
    canvas = Image.new("RGBA", (side, side), (0, 0, 0, 0))
    offset = ((side - (right - left)) // 2 - left, (side - (bottom - top)) // 2 - top)
    ImageDraw.Draw(canvas).text(offset, chr(code), font=font, embedded_color=True)
    return decode(canvas, path, background)


@dataclass(frozen=True)
class EmojiSet:
    images: np.ndarray  # (N, H, W, 3) uint8, or (N, H, W) under collect.channels=1
    labels: np.ndarray  # int64 (N,)
    classes: dict[str, int]
    modes: tuple[str, ...]
    sizes: np.ndarray  # (N, 2): the rendered square before the resize
    notes: tuple[str, ...]


def load_emoji_source(size: tuple[int, int] | None = None, resize_filter: str = "lanczos",
                      background: str = "white", channels: str | int = "auto") -> EmojiSet:
    """Every emoji glyph of the installed font as a colour image, labelled by its GROUPS class."""
    from PIL import ImageFont

    path = font_path()
    codes = emoji_code_points(path)
    if not codes:
        raise SourceError(f"{display_path(path)} maps no emoji code points; is it NotoColorEmoji.ttf?")
    font = ImageFont.truetype(str(path), BITMAP_SIZE)
    decoded = [render_glyph(font, code, path, background) for code in codes]
    done = conform(decoded, "emoji", channels, size or (NATIVE_SIDE, NATIVE_SIDE), resize_filter)
    names = [group_of(c) for c in codes]
    classes = {name: i for i, name in enumerate(sorted(set(names)))}
    return EmojiSet(images=done.images, labels=np.asarray([classes[n] for n in names], dtype=np.int64),
                    classes=classes, modes=tuple(d.mode for d in decoded),
                    sizes=np.asarray([d.size for d in decoded], np.int64),
                    notes=tuple(n for n in done.notes if "resized" not in n or size is not None))
