"""Differentiable augmentation (Zhao et al. 2020, "DiffAugment"): the same random colour change,
translation and cutout applied to real and generated images before the discriminator sees them.

Unlike the augment stage, these copies never become training targets: the generator is still
scored on un-shifted digits, so shifts do not leak into its samples. Gradients flow through both
operations, so the generator learns through them. Draws use torch's global RNG (part of the
saved training state, so resuming stays bit-identical).
"""
from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F

POLICIES = ("color", "translation", "cutout")


def color(x: torch.Tensor) -> torch.Tensor:
    """The paper's brightness, saturation and contrast jitter, per image, on [0, 1] images (its shifts
    were on [-1, 1], so brightness moves by up to a quarter here). Grey images get brightness and
    contrast only: their saturation is a no-op."""
    n = x.shape[0]
    x = x + (torch.rand(n, 1, 1, 1, dtype=x.dtype, device=x.device) - 0.5) * 0.5
    mean = x.mean(dim=1, keepdim=True)
    x = (x - mean) * (torch.rand(n, 1, 1, 1, dtype=x.dtype, device=x.device) * 2) + mean
    mean = x.mean(dim=(1, 2, 3), keepdim=True)
    return (x - mean) * (torch.rand(n, 1, 1, 1, dtype=x.dtype, device=x.device) + 0.5) + mean


def translate(x: torch.Tensor, ratio: float = 0.125) -> torch.Tensor:
    """Shift each image by up to ``ratio`` of its side (rounded, at least one pixel), filling with 0."""
    n, _, h, w = x.shape
    sy, sx = max(1, int(h * ratio + 0.5)), max(1, int(w * ratio + 0.5))
    dy = torch.randint(-sy, sy + 1, (n, 1, 1), device=x.device)
    dx = torch.randint(-sx, sx + 1, (n, 1, 1), device=x.device)
    rows = (torch.arange(h, device=x.device).view(1, h, 1) + dy + sy).expand(n, h, w)
    cols = (torch.arange(w, device=x.device).view(1, 1, w) + dx + sx).expand(n, h, w)
    padded = F.pad(x, (sx, sx, sy, sy))
    flat = padded.flatten(2)  # (n, c, (h + 2sy) * (w + 2sx))
    index = (rows * (w + 2 * sx) + cols).flatten(1).unsqueeze(1).expand(-1, x.shape[1], -1)
    return flat.gather(2, index).view_as(x)


def cutout(x: torch.Tensor, ratio: float = 0.5) -> torch.Tensor:
    """Zero one square of ``ratio`` of each side per image, centred anywhere in the image."""
    n, _, h, w = x.shape
    ch, cw = int(h * ratio + 0.5), int(w * ratio + 0.5)
    cy = torch.randint(0, h + (1 - ch % 2), (n, 1, 1), device=x.device)
    cx = torch.randint(0, w + (1 - cw % 2), (n, 1, 1), device=x.device)
    rows = torch.arange(h, device=x.device).view(1, h, 1)
    cols = torch.arange(w, device=x.device).view(1, 1, w)
    top, left = cy - ch // 2, cx - cw // 2
    inside = (rows >= top) & (rows < top + ch) & (cols >= left) & (cols < left + cw)
    return x * (~inside).unsqueeze(1).to(x.dtype)


def diff_augment(x: torch.Tensor, policy: Sequence[str]) -> torch.Tensor:
    """Apply ``policy``'s operations in order; an empty policy returns ``x`` itself."""
    for name in policy:
        if name == "color":
            x = color(x)
        elif name == "translation":
            x = translate(x)
        elif name == "cutout":
            x = cutout(x)
        else:
            raise ValueError(f"unknown DiffAugment operation {name!r}; expected one of {POLICIES}")
    return x
