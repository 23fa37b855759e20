"""Sample grids as PNG files, for MLflow artifacts and the served ``generate`` endpoint: grey images
as 8-bit grey PNGs (as before colour), 3-channel images as RGB PNGs."""
from __future__ import annotations

import io
import math
from pathlib import Path

import numpy as np

from genloop.io.atomic import write_bytes


def channels_last(images: np.ndarray) -> np.ndarray:
    """Images in [0, 1] shaped (N, H, W), (N, 1, H, W) or (N, 3, H, W) -> float32 (N, H, W) for grey or
    (N, H, W, 3) for colour, the layouts Pillow draws."""
    imgs = np.asarray(images, dtype=np.float32)
    if imgs.ndim == 3:
        return imgs
    if imgs.ndim == 4 and imgs.shape[1] == 1:
        return imgs[:, 0]
    if imgs.ndim == 4 and imgs.shape[1] == 3:
        return imgs.transpose(0, 2, 3, 1)
    raise ValueError(f"images shaped {imgs.shape}; expected (N, H, W), (N, 1, H, W) or (N, 3, H, W)")


def grid_image(images: np.ndarray, ncols: int | None = None, cell: int = 56, pad: int = 2) -> bytes:
    """PNG bytes of a grid of images in [0, 1] shaped (N, H, W) or (N, C, H, W) with C = 1 or 3, upscaled
    to ``cell`` px: a grey PNG for one channel, an RGB PNG for three, on a white background."""
    from PIL import Image

    imgs = channels_last(images)
    n, h, w = imgs.shape[:3]
    ncols = ncols or max(1, math.ceil(math.sqrt(n)))
    nrows = math.ceil(n / ncols)
    scale = max(1, cell // max(h, w))
    canvas = np.full((nrows * (h * scale + pad) + pad, ncols * (w * scale + pad) + pad, *imgs.shape[3:]), 255,
                     np.uint8)
    tiles = (np.clip(imgs, 0, 1) * 255).round().astype(np.uint8)
    for i, tile in enumerate(tiles):
        r, c = divmod(i, ncols)
        big = tile.repeat(scale, axis=0).repeat(scale, axis=1)
        y, x = pad + r * (h * scale + pad), pad + c * (w * scale + pad)
        canvas[y:y + h * scale, x:x + w * scale] = big
    buf = io.BytesIO()
    Image.fromarray(canvas, mode="L" if canvas.ndim == 2 else "RGB").save(buf, format="PNG")
    return buf.getvalue()


def save_grid(images: np.ndarray, path: Path, ncols: int | None = None) -> Path:
    write_bytes(path, grid_image(images, ncols))
    return path


def labelled_rows_image(images: np.ndarray, labels: list[int] | list[str], cell: int = 56, pad: int = 2,
                        margin: int = 40) -> bytes:
    """PNG bytes of one row per label, the label (a class value or name) written left of its row:
    ``images`` (N, [C,] H, W) in [0, 1] hold ``N / len(labels)`` images of each label, label by label
    (a conditional model's samples). Grey or RGB, as ``grid_image``."""
    from PIL import Image, ImageDraw

    imgs = np.asarray(images, dtype=np.float32)
    if len(labels) == 0 or len(imgs) % len(labels):
        raise ValueError(f"{len(imgs)} images do not split into {len(labels)} equal rows")
    per_row = len(imgs) // len(labels)
    grid = Image.open(io.BytesIO(grid_image(imgs, ncols=per_row, cell=cell, pad=pad)))
    margin = max(margin, 12 + 6 * max(len(str(label)) for label in labels))  # room for a class name
    white = 255 if grid.mode == "L" else (255, 255, 255)
    canvas = Image.new(grid.mode, (grid.width + margin, grid.height), white)
    canvas.paste(grid, (margin, 0))
    draw = ImageDraw.Draw(canvas)
    row_height = (grid.height - pad) / len(labels)
    for i, label in enumerate(labels):
        draw.text((6, pad + i * row_height + row_height / 2 - 6), str(label), fill=0 if grid.mode == "L" else (0, 0, 0))
    buf = io.BytesIO()
    canvas.save(buf, format="PNG")
    return buf.getvalue()
