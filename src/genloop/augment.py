"""Stage 3, augment: seeded random rotation, scaling and cropping of the training split.

All transforms of a batch are one affine grid and one ``grid_sample`` call: no per-image loop.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from genloop.arrays import save_npz
from genloop.clean import load_split
from genloop.config import AugmentConfig
from genloop.paths import ProjectPaths


@dataclass(frozen=True)
class AugmentResult:
    originals: int
    augmented: int
    output: Path


def random_affine(images: torch.Tensor, config: AugmentConfig, generator: torch.Generator) -> torch.Tensor:
    """Rotate, scale and crop a float batch (N, 1, H, W) in [0, 1].

    A crop keeping a fraction ``c`` of each side is a zoom by ``1/c`` plus a shift inside the
    remaining margin, so it composes with rotation and scaling into one matrix per image.
    """
    n = images.shape[0]
    u = lambda: torch.rand(n, generator=generator)  # noqa: E731
    angle = (u() * 2 - 1) * math.radians(config.rotation_degrees)
    scale = config.scale_min + u() * (config.scale_max - config.scale_min)
    keep = config.crop_min + u() * (1.0 - config.crop_min)
    zoom = scale / keep
    # grid_sample maps output coords to input coords, so the matrix is the inverse transform.
    inv = 1.0 / zoom
    cos, sin = torch.cos(angle) * inv, torch.sin(angle) * inv
    shift_x = (u() * 2 - 1) * (1.0 - keep)
    shift_y = (u() * 2 - 1) * (1.0 - keep)
    theta = torch.stack(
        [torch.stack([cos, -sin, shift_x], dim=1), torch.stack([sin, cos, shift_y], dim=1)], dim=1
    )
    grid = F.affine_grid(theta, list(images.shape), align_corners=False)
    return F.grid_sample(images, grid, mode="bilinear", padding_mode="zeros", align_corners=False)


def augment_images(images: np.ndarray, config: AugmentConfig, seed: int) -> np.ndarray:
    """``config.copies`` augmented versions of uint8 ``images`` (N, H, W), as uint8."""
    if config.copies == 0 or len(images) == 0:
        return np.empty((0, *images.shape[1:]), dtype=np.uint8)
    generator = torch.Generator().manual_seed(seed)
    source = torch.from_numpy(images).float().div_(255.0).unsqueeze(1)
    out = []
    for _ in range(config.copies):
        for start in range(0, len(source), config.batch_size):
            batch = random_affine(source[start:start + config.batch_size], config, generator)
            out.append(batch.mul_(255.0).round_().clamp_(0, 255).to(torch.uint8).squeeze(1))
    return torch.cat(out).numpy()


def augment(config: AugmentConfig, paths: ProjectPaths, seed: int) -> AugmentResult:
    images, labels = load_split(paths, "train")
    extra = augment_images(images, config, seed)
    all_images = np.concatenate([images, extra])
    all_labels = np.concatenate([labels, np.tile(labels, config.copies)])
    is_augmented = np.concatenate([np.zeros(len(images), bool), np.ones(len(extra), bool)])
    output = paths.augment / "train.npz"
    save_npz(output, images=all_images, labels=all_labels, augmented=is_augmented)
    return AugmentResult(originals=len(images), augmented=len(extra), output=output)
