"""Image sources the collect stage can read. Each returns uint8 images (N, H, W) and labels."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np


class SourceError(ValueError):
    """A source that names nothing or holds unusable data; the message says which."""


@dataclass(frozen=True)
class SourceBatch:
    images: np.ndarray  # uint8, (N, H, W)
    labels: np.ndarray  # int64, (N,); -1 where unknown
    source: str


def load_digits_source() -> SourceBatch:
    """scikit-learn's bundled 8x8 digits (values 0..16), rescaled to the 0..255 range."""
    from sklearn.datasets import load_digits

    bunch = load_digits()
    images = np.rint(bunch.images * (255.0 / 16.0)).clip(0, 255).astype(np.uint8)
    return SourceBatch(images=images, labels=bunch.target.astype(np.int64), source="digits")


SOURCES = {"digits": load_digits_source}


def load_source(spec: str) -> SourceBatch:
    loader = SOURCES.get(spec)
    if loader is None:
        raise SourceError(f"unknown source {spec!r}; known sources: {', '.join(sorted(SOURCES))}")
    return loader()
