"""Tiny synthetic colour data for tests: three classes of coloured squares (red, green, blue) on a
dark background, stored as the clean splits store colour images, uint8 (N, H, W, 3)."""
from __future__ import annotations

import numpy as np

COLOURS = np.array([[220, 40, 40], [40, 200, 60], [50, 70, 230]], dtype=np.uint8)
CLASS_NAMES = ["red", "green", "blue"]


def coloured_squares(n: int, side: int = 16, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """(images uint8 (n, side, side, 3), labels int64 (n,)): one square of the class's colour per image,
    of random size and place, on noise-free dark grey."""
    rng = np.random.default_rng(seed)
    labels = np.arange(n, dtype=np.int64) % len(COLOURS)
    images = np.full((n, side, side, 3), 20, dtype=np.uint8)
    for i, label in enumerate(labels):
        size = int(rng.integers(side // 3, side // 2 + 1))
        top, left = rng.integers(0, side - size + 1, size=2)
        images[i, top:top + size, left:left + size] = COLOURS[label]
    return images, labels
