"""Stage 1, collect: read a source into ``data/`` (one images array plus a manifest) and version it."""
from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from genloop import dvcio
from genloop.atomic import atomic_dir
from genloop.config import CollectConfig
from genloop.paths import ProjectPaths
from genloop.sources import SourceBatch, load_source

MANIFEST_COLUMNS = [
    "id", "source", "batch", "label", "content_hash", "height", "width",
    "pixel_min", "pixel_max", "pixel_mean", "pixel_std",
]


@dataclass(frozen=True)
class CollectResult:
    rows: int
    image_shape: tuple[int, int]
    data_dir: Path
    dvc_hash: str


def content_hash(image: np.ndarray) -> str:
    """Hash of the pixels and shape, so the same image always gets the same id and split."""
    h = hashlib.sha256()
    h.update(np.asarray(image.shape, dtype=np.int64).tobytes())
    h.update(np.ascontiguousarray(image, dtype=np.uint8).tobytes())
    return h.hexdigest()


def build_manifest(batch: SourceBatch, batch_id: int = 0) -> pd.DataFrame:
    images = batch.images
    flat = images.reshape(len(images), -1).astype(np.float64)
    frame = pd.DataFrame(
        {
            "id": np.arange(len(images), dtype=np.int64),
            "source": batch.source,
            "batch": batch_id,
            "label": batch.labels.astype(np.int64),
            "content_hash": [content_hash(img) for img in images],
            "height": images.shape[1],
            "width": images.shape[2],
            "pixel_min": flat.min(axis=1),
            "pixel_max": flat.max(axis=1),
            "pixel_mean": flat.mean(axis=1).round(6),
            "pixel_std": flat.std(axis=1).round(6),
        }
    )
    return frame[MANIFEST_COLUMNS]


def write_dataset(data_dir: Path, images: np.ndarray, manifest: pd.DataFrame) -> None:
    """Write both files into a fresh folder and swap it in whole: no half-collected data set."""
    with atomic_dir(data_dir) as tmp:
        np.save(tmp / "images.npy", np.ascontiguousarray(images, dtype=np.uint8), allow_pickle=False)
        manifest.to_csv(tmp / "manifest.csv", index=False, float_format="%.6f", lineterminator="\n")


def read_dataset(paths: ProjectPaths) -> tuple[np.ndarray, pd.DataFrame]:
    if not paths.images.exists() or not paths.manifest.exists():
        raise FileNotFoundError(
            f"no collected data in {paths.data}; run `genloop collect --source digits` first"
        )
    images = np.load(paths.images, allow_pickle=False)
    manifest = pd.read_csv(paths.manifest)
    if len(images) != len(manifest):
        raise ValueError(
            f"{paths.images} holds {len(images)} images but {paths.manifest} has {len(manifest)} rows"
        )
    return images, manifest


def collect(config: CollectConfig, paths: ProjectPaths, version_with_dvc: bool = True) -> CollectResult:
    batch = load_source(config.source)
    if batch.images.ndim != 3 or len(batch.images) == 0:
        raise ValueError(f"source {config.source!r} gave images of shape {batch.images.shape}; expected (N, H, W)")
    manifest = build_manifest(batch)
    write_dataset(paths.data, batch.images, manifest)
    dvc_hash = "untracked"
    if version_with_dvc and dvcio.is_dvc_repo(paths.root):
        dvc_hash = dvcio.dvc_add(paths.root, "data")
    return CollectResult(
        rows=len(manifest),
        image_shape=(int(batch.images.shape[1]), int(batch.images.shape[2])),
        data_dir=paths.data,
        dvc_hash=dvc_hash,
    )
