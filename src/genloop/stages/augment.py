"""Stage 3, augment: seeded random rotation, scaling, cropping, translation and (optionally) an
elastic warp and a colour jitter of the training split.

All transforms of a batch become one sampling grid and one ``grid_sample`` call: no per-image
loop, and every channel of a colour image is moved alike. The random draws come from one seeded
generator, so the same seed gives the same bytes; the jitter draws come after the geometric ones and
only when it is on, so turning it on leaves the geometry of every copy as it was.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from genloop.io import atomic
from genloop.io.arrays import save_npz
from genloop.io.datasets import load_split
from genloop.config import AugmentConfig
from genloop.io.imaging import grid_image
from genloop.paths import ProjectPaths

PREVIEW_COLUMNS = 8  # tiles per preview row: originals each followed by their copies


@dataclass(frozen=True)
class AugmentResult:
    originals: int
    augmented: int
    output: Path
    preview: Path | None = None


@dataclass(frozen=True)
class Transforms:
    """The random draws for one batch of N images.

    ``translate`` is in fractions of the side (+x right, +y down); ``displacement`` is the elastic
    field in pixels, (N, H, W, 2) as (dx, dy), or None without elastic warp.
    """

    angle: torch.Tensor  # radians, (N,)
    zoom: torch.Tensor  # (N,)
    crop_shift: torch.Tensor  # normalised grid units, (N, 2)
    translate: torch.Tensor  # (N, 2)
    displacement: torch.Tensor | None = None


def gaussian_matrix(size: int, sigma: float) -> torch.Tensor:
    """(size, size) matrix whose product with a signal is a Gaussian blur with zero padding.

    Two small matrix products blur a whole batch of fields: on CPU that is over 10x faster than a
    (grouped) ``conv2d`` with a kernel of 6 sigma.
    """
    offset = torch.arange(size, dtype=torch.float32)
    offset = offset[:, None] - offset[None, :]
    radius = max(1, math.ceil(3 * sigma))
    weights = torch.exp(-0.5 * (offset / sigma) ** 2) * (offset.abs() <= radius)
    full = torch.exp(-0.5 * (torch.arange(-radius, radius + 1, dtype=torch.float32) / sigma) ** 2).sum()
    return weights / full


def elastic_field(n: int, shape: tuple[int, int], alpha: float, sigma: float,
                  generator: torch.Generator) -> torch.Tensor:
    """Uniform noise in [-1, 1] smoothed by a Gaussian and scaled by ``alpha`` (Simard et al. 2003)."""
    h, w = shape
    noise = torch.rand(n, 2, h, w, generator=generator) * 2 - 1
    smooth = gaussian_matrix(h, sigma) @ noise @ gaussian_matrix(w, sigma).T
    return (smooth * alpha).permute(0, 2, 3, 1)  # (N, H, W, 2)


def draw_transforms(n: int, shape: tuple[int, int], config: AugmentConfig,
                    generator: torch.Generator) -> Transforms:
    """Draw every random parameter of a batch, in a fixed order, from ``generator``.

    A crop keeping a fraction ``c`` of each side is a zoom by ``1/c`` plus a shift inside the
    remaining margin, so it composes with rotation and scaling into one matrix per image.
    """
    u = lambda: torch.rand(n, generator=generator)  # noqa: E731
    angle = (u() * 2 - 1) * math.radians(config.rotation_degrees)
    scale = config.scale_min + u() * (config.scale_max - config.scale_min)
    keep = config.crop_min + u() * (1.0 - config.crop_min)
    crop_shift = torch.stack([(u() * 2 - 1) * (1.0 - keep), (u() * 2 - 1) * (1.0 - keep)], dim=1)
    translate = (torch.rand(n, 2, generator=generator) * 2 - 1) * config.translate_max
    displacement = (
        elastic_field(n, shape, config.elastic_alpha, config.elastic_sigma, generator) if config.elastic else None
    )
    return Transforms(angle=angle, zoom=scale / keep, crop_shift=crop_shift, translate=translate,
                      displacement=displacement)


def sampling_grid(t: Transforms, shape: tuple[int, int]) -> torch.Tensor:
    """Where each output pixel reads the input, in ``grid_sample``'s normalised coordinates.

    ``grid_sample`` maps output to input coordinates, so the matrix is the inverse transform:
    ``input = A @ output + b``. Moving content by ``d`` afterwards reads ``A @ (p - d) + b``.
    """
    h, w = shape
    n = len(t.angle)
    inv = 1.0 / t.zoom
    cos, sin = torch.cos(t.angle) * inv, torch.sin(t.angle) * inv
    a = torch.stack([torch.stack([cos, -sin], dim=1), torch.stack([sin, cos], dim=1)], dim=1)  # (N, 2, 2)
    d = t.translate * 2.0  # the side spans 2 grid units
    b = t.crop_shift - (a @ d.unsqueeze(2)).squeeze(2)
    theta = torch.cat([a, b.unsqueeze(2)], dim=2)
    grid = F.affine_grid(theta, [n, 1, h, w], align_corners=False)
    if t.displacement is not None:
        grid = grid + t.displacement * torch.tensor([2.0 / w, 2.0 / h])
    return grid


def apply_transforms(images: torch.Tensor, t: Transforms, fill: str = "black") -> torch.Tensor:
    """Warp a float batch (N, C, H, W) in [0, 1] with one ``grid_sample`` call (one grid for all channels).

    Where the warp reads outside the image it shows ``fill``: black (zeros, what the digits always had),
    white (the warp of the inverted image, inverted back: images on a white background get no dark
    wedges at their corners) or border (the nearest edge pixel)."""
    grid = sampling_grid(t, (images.shape[2], images.shape[3]))
    if fill == "white":
        return 1.0 - F.grid_sample(1.0 - images, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    mode = "border" if fill == "border" else "zeros"
    return F.grid_sample(images, grid, mode="bilinear", padding_mode=mode, align_corners=False)


def colour_jitter(images: torch.Tensor, strength: float, generator: torch.Generator) -> torch.Tensor:
    """Random brightness, contrast and (colour only) saturation factors in [1 - strength, 1 + strength]
    per image, on a float batch (N, C, H, W) in [0, 1]; the result is clipped to [0, 1]."""
    n, c = images.shape[:2]
    factor = lambda: (1.0 + (torch.rand(n, generator=generator) * 2 - 1) * strength).view(n, 1, 1, 1)  # noqa: E731
    brightness, contrast, saturation = factor(), factor(), factor()
    out = images * brightness
    mean = out.mean(dim=(1, 2, 3), keepdim=True)
    out = (out - mean) * contrast + mean
    if c == 3:
        weights = torch.tensor([0.299, 0.587, 0.114]).view(1, 3, 1, 1)
        grey = (out * weights).sum(dim=1, keepdim=True)
        out = (out - grey) * saturation + grey
    return out.clamp_(0.0, 1.0)


def random_transform(images: torch.Tensor, config: AugmentConfig, generator: torch.Generator) -> torch.Tensor:
    """Rotate, scale, crop, translate and optionally elastically warp and colour-jitter a float batch
    (N, C, H, W)."""
    t = draw_transforms(images.shape[0], (images.shape[2], images.shape[3]), config, generator)
    warped = apply_transforms(images, t, config.fill)
    return colour_jitter(warped, config.colour_jitter, generator) if config.colour_jitter > 0 else warped


def channels_first(images: np.ndarray) -> torch.Tensor:
    """uint8 (N, H, W) or (N, H, W, 3) -> float (N, C, H, W) in [0, 1]."""
    source = torch.from_numpy(np.ascontiguousarray(images)).float().div_(255.0)
    return source.unsqueeze(1) if images.ndim == 3 else source.permute(0, 3, 1, 2).contiguous()


def augment_images(images: np.ndarray, config: AugmentConfig, seed: int) -> np.ndarray:
    """``config.copies`` augmented versions of uint8 ``images`` (N, H, W) or (N, H, W, 3), as uint8 in
    the same layout.

    Copy ``c`` of image ``i`` is row ``c * N + i``.
    """
    if config.copies == 0 or len(images) == 0:
        return np.empty((0, *images.shape[1:]), dtype=np.uint8)
    generator = torch.Generator().manual_seed(seed)
    source = channels_first(images)
    out = []
    for _ in range(config.copies):
        for start in range(0, len(source), config.batch_size):
            batch = random_transform(source[start:start + config.batch_size], config, generator)
            batch = batch.mul_(255.0).round_().clamp_(0, 255).to(torch.uint8)
            out.append(batch.squeeze(1) if images.ndim == 3 else batch.permute(0, 2, 3, 1))
    return torch.cat(out).numpy()


def preview_tiles(images: np.ndarray, extra: np.ndarray, copies: int, count: int) -> np.ndarray:
    """The first ``count`` originals, each followed by its ``copies`` augmented versions, in [0, 1]:
    (N, H, W) for grey, (N, 3, H, W) for colour (the channels-first form the grid images take)."""
    count = min(count, len(images))
    groups = [np.stack([images[i], *(extra[c * len(images) + i] for c in range(copies))]) for i in range(count)]
    if not groups:
        return np.empty((0, *images.shape[1:]), np.float32)
    tiles = np.concatenate(groups).astype(np.float32) / 255.0
    return tiles if tiles.ndim == 3 else tiles.transpose(0, 3, 1, 2)


def preview_columns(copies: int) -> int:
    group = 1 + copies
    return group * max(1, PREVIEW_COLUMNS // group)


def augment(config: AugmentConfig, paths: ProjectPaths, seed: int) -> AugmentResult:
    images, labels = load_split(paths, "train")
    extra = augment_images(images, config, seed)
    all_images = np.concatenate([images, extra])
    all_labels = np.concatenate([labels, np.tile(labels, config.copies)])
    is_augmented = np.concatenate([np.zeros(len(images), bool), np.ones(len(extra), bool)])
    tiles = preview_tiles(images, extra, config.copies, config.preview_images)
    with atomic.atomic_dir(paths.augment) as out:
        save_npz(out / "train.npz", images=all_images, labels=all_labels, augmented=is_augmented)
        if len(tiles):
            (out / "preview.png").write_bytes(grid_image(tiles, preview_columns(config.copies)))
    preview = paths.augment / "preview.png"
    return AugmentResult(originals=len(images), augmented=len(extra), output=paths.augment / "train.npz",
                         preview=preview if len(tiles) else None)
