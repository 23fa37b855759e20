"""Near-duplicates across splits: val/test images that almost equal a training image.

Exact copies are already quarantined by content hash; these are the ones a hash misses (a re-scan,
a shifted grey level). They inflate held-out scores, so clean reports them; it never moves them,
because splits must stay stable when data is appended.

Distance is the root-mean-square pixel difference with pixels in [0, 1] (L2 / sqrt(H*W)), so one
threshold means the same for 8x8 digits and 28x28 MNIST.
"""
from __future__ import annotations

import math

import numpy as np
import pandas as pd
import torch

COLUMNS = ["id", "split", "label", "train_id", "train_label", "distance"]
CHUNK_ELEMENTS = 1 << 25  # queries x train distances held at once (128 MiB of float32)


def nearest_rms(queries: np.ndarray, train: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """For each query image, the index of its nearest train image and their RMS distance.

    ``torch.cdist`` runs on chunks of queries so memory stays bounded at any size; the distance of
    each chosen pair is then recomputed exactly in float64 (the matrix-product form loses digits).
    """
    if len(queries) == 0 or len(train) == 0:
        return np.zeros(0, np.int64), np.zeros(0, np.float64)
    pixels = math.prod(queries.shape[1:])
    q = torch.from_numpy(np.ascontiguousarray(queries).reshape(len(queries), pixels)).float().div_(255.0)
    t = torch.from_numpy(np.ascontiguousarray(train).reshape(len(train), pixels)).float().div_(255.0)
    chunk = max(1, CHUNK_ELEMENTS // len(t))
    nearest = torch.cat([torch.cdist(q[s:s + chunk], t).argmin(dim=1) for s in range(0, len(q), chunk)])
    index = nearest.numpy().astype(np.int64)
    diff = q.double() - t[nearest].double()
    distance = diff.pow(2).mean(dim=1).sqrt().numpy()
    return index, distance


def find_near_duplicates(images: np.ndarray, ids: np.ndarray, labels: np.ndarray, splits: np.ndarray,
                         threshold: float) -> pd.DataFrame:
    """Every val/test row whose nearest train image is closer than ``threshold`` (columns ``COLUMNS``).

    ``images`` (N, H, W) uint8 and the per-row ``ids``, ``labels`` and ``splits`` cover the kept
    rows only; the result is sorted by distance, closest first.
    """
    is_train = splits == "train"
    held_out = np.flatnonzero(~is_train)
    train_rows = np.flatnonzero(is_train)
    index, distance = nearest_rms(images[held_out], images[train_rows])
    close = distance < threshold
    rows, partners = held_out[close], train_rows[index[close]]
    table = pd.DataFrame({
        "id": ids[rows].astype(np.int64),
        "split": splits[rows].astype(str),
        "label": labels[rows].astype(np.int64),
        "train_id": ids[partners].astype(np.int64),
        "train_label": labels[partners].astype(np.int64),
        "distance": distance[close].round(6),
    }, columns=COLUMNS)
    return table.sort_values(["distance", "id"], kind="stable").reset_index(drop=True)
