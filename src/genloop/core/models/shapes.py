from __future__ import annotations


def base_grid(height: int, width: int) -> tuple[int, int]:
    """Two stride-2 stages halve each side twice, so sides must be multiples of 4 (8 -> 2, 28 -> 7)."""
    if height % 4 or width % 4 or height < 4 or width < 4:
        raise ValueError(f"image sides must be multiples of 4 (got {height}x{width})")
    return height // 4, width // 4
