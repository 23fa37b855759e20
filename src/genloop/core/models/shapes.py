"""Image geometry the convolutional models share: two stride-2 stages halve each side twice, so they
work on sides that are multiples of 4. Other sides (30x30 IDX images, 7x7) are padded up to the next
multiple of 4 on the way in and cropped back on the way out; for multiples of 4 (8x8 digits, 28x28
MNIST, 32x32, 64x64) nothing is padded, so those models and their exported graphs are unchanged."""
from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch

# Largest side the models are sized and tested for; larger images train, but slowly and untested.
MAX_TESTED_SIDE = 64


def check_shape(channels: int, height: int, width: int) -> None:
    """Refuse shapes no model can take: positive sides, 1 (grey) or 3 (RGB) channels."""
    if channels not in (1, 3):
        raise ValueError(f"images must have 1 (grey) or 3 (RGB) channels (got {channels})")
    if height < 1 or width < 1:
        raise ValueError(f"image sides must be positive (got {height}x{width})")


def padding(side: int) -> int:
    """Pixels added to ``side`` to reach the next multiple of 4 (0 for 8, 28, 32, 64; 2 for 30)."""
    if side < 1:
        raise ValueError(f"image sides must be positive (got {side})")
    return -side % 4


def base_grid(height: int, width: int) -> tuple[int, int]:
    """The 1/4-resolution grid of the (padded) image: 8 -> 2, 28 -> 7, 30 -> 8."""
    return (height + padding(height)) // 4, (width + padding(width)) // 4


def pad(x: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """(N, C, height, width) -> (N, C, 4*gh, 4*gw), zeros split around the image; ``x`` itself if no padding."""
    import torch.nn.functional as F

    ph, pw = padding(height), padding(width)
    if not ph and not pw:
        return x
    return F.pad(x, (pw // 2, pw - pw // 2, ph // 2, ph - ph // 2))


def crop(x: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """The inverse of ``pad``: the (height, width) middle of a padded batch; ``x`` itself if no padding."""
    ph, pw = padding(height), padding(width)
    if not ph and not pw:
        return x
    return x[:, :, ph // 2:ph // 2 + height, pw // 2:pw // 2 + width]
