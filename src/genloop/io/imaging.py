"""Sample grids as PNG files, for MLflow artifacts and the served ``generate`` endpoint."""
from __future__ import annotations

import io
import math
from pathlib import Path

import numpy as np

from genloop.io.atomic import write_bytes


def grid_image(images: np.ndarray, ncols: int | None = None, cell: int = 56, pad: int = 2) -> bytes:
    """PNG bytes of a grid of images in [0, 1] shaped (N, H, W) or (N, 1, H, W), upscaled to ``cell`` px."""
    from PIL import Image

    imgs = np.asarray(images, dtype=np.float32)
    if imgs.ndim == 4:
        imgs = imgs[:, 0]
    n, h, w = imgs.shape
    ncols = ncols or max(1, math.ceil(math.sqrt(n)))
    nrows = math.ceil(n / ncols)
    scale = max(1, cell // max(h, w))
    canvas = np.full((nrows * (h * scale + pad) + pad, ncols * (w * scale + pad) + pad), 255, np.uint8)
    tiles = (np.clip(imgs, 0, 1) * 255).round().astype(np.uint8)
    for i, tile in enumerate(tiles):
        r, c = divmod(i, ncols)
        big = np.kron(tile, np.ones((scale, scale), np.uint8))
        y, x = pad + r * (h * scale + pad), pad + c * (w * scale + pad)
        canvas[y:y + h * scale, x:x + w * scale] = big
    buf = io.BytesIO()
    Image.fromarray(canvas, mode="L").save(buf, format="PNG")
    return buf.getvalue()


def save_grid(images: np.ndarray, path: Path, ncols: int | None = None) -> Path:
    write_bytes(path, grid_image(images, ncols))
    return path


def labelled_rows_image(images: np.ndarray, labels: list[int], cell: int = 56, pad: int = 2,
                        margin: int = 40) -> bytes:
    """PNG bytes of one row per label, the label written left of its row: ``images`` (N, [1,] H, W) in
    [0, 1] hold ``N / len(labels)`` images of each label, label by label (a conditional model's samples)."""
    from PIL import Image, ImageDraw

    imgs = np.asarray(images, dtype=np.float32)
    if len(labels) == 0 or len(imgs) % len(labels):
        raise ValueError(f"{len(imgs)} images do not split into {len(labels)} equal rows")
    per_row = len(imgs) // len(labels)
    grid = Image.open(io.BytesIO(grid_image(imgs, ncols=per_row, cell=cell, pad=pad)))
    canvas = Image.new("L", (grid.width + margin, grid.height), 255)
    canvas.paste(grid, (margin, 0))
    draw = ImageDraw.Draw(canvas)
    row_height = (grid.height - pad) / len(labels)
    for i, label in enumerate(labels):
        draw.text((6, pad + i * row_height + row_height / 2 - 6), str(label), fill=0)
    buf = io.BytesIO()
    canvas.save(buf, format="PNG")
    return buf.getvalue()
