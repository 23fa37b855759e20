"""What one stage reads of another's outputs: the collected data set, the clean splits, a trained
model's MLflow run, and the tensor form the models take.

Stages import these from here rather than from each other, so no stage depends on another stage's
module (the import-linter contracts in pyproject.toml check it).
"""
from __future__ import annotations

import hashlib
import json
from typing import TYPE_CHECKING

import numpy as np

from genloop.io.arrays import load_npz
from genloop.errors import GenloopError, MissingInputError
from genloop.paths import ProjectPaths

if TYPE_CHECKING:
    import pandas as pd
    import torch


class DataSetError(GenloopError, ValueError):
    """data/ (or a batch to add to it) cannot be used as it is; the message says how to fix it."""


def content_hash(image: np.ndarray) -> str:
    """Hash of the pixels and shape, so the same image always gets the same id and split."""
    h = hashlib.sha256()
    h.update(np.asarray(image.shape, dtype=np.int64).tobytes())
    h.update(np.ascontiguousarray(image, dtype=np.uint8).tobytes())
    return h.hexdigest()


def read_dataset(paths: ProjectPaths) -> tuple[np.ndarray, pd.DataFrame]:
    """The collected images (uint8, N x H x W) and their manifest, checked to be the same length."""
    import pandas as pd  # here, so the training path (and GPU-box benchmarks) runs without pandas

    if not paths.images.exists() or not paths.manifest.exists():
        raise MissingInputError(
            f"no collected data in {paths.data}; run `genloop collect --source digits` first"
        )
    images = np.load(paths.images, allow_pickle=False)
    manifest = pd.read_csv(paths.manifest, dtype={"class_name": str})
    if "class_name" in manifest.columns:
        manifest["class_name"] = manifest["class_name"].fillna("")
    if len(images) != len(manifest):
        raise DataSetError(
            f"{paths.images} holds {len(images)} images but {paths.manifest} has {len(manifest)} rows"
        )
    return images, manifest


def load_split(paths: ProjectPaths, split: str) -> tuple[np.ndarray, np.ndarray]:
    """Images as uint8 (N, H, W) and labels of one clean split."""
    file = paths.clean / f"{split}.npz"
    if not file.exists():
        raise MissingInputError(f"{file} is missing; run `genloop clean` first")
    arrays = load_npz(file)
    return arrays["images"], arrays["labels"]


def to_tensor(images: np.ndarray) -> torch.Tensor:
    """uint8 (N, H, W) -> float (N, 1, H, W) in [0, 1], once, so batches are plain slices."""
    import torch

    return torch.from_numpy(np.ascontiguousarray(images)).float().div_(255.0).unsqueeze(1)


def read_run_id(paths: ProjectPaths, kind: str) -> str:
    """The MLflow run that trained ``kind`` (written by train to outputs/train/KIND/run.json)."""
    file = paths.train(kind) / "run.json"
    if not file.exists():
        raise MissingInputError(f"{file} is missing; run `genloop train --model {kind}` first")
    return str(json.loads(file.read_text())["run_id"])


def class_names(paths: ProjectPaths) -> dict[int, str]:
    """Label -> the class name the manifest records (data collected with named classes, e.g. from
    ``folder:PATH``); empty when it names none or there is no manifest."""
    import csv

    if not paths.manifest.exists():
        return {}
    with paths.manifest.open(newline="") as fh:
        return {int(row["label"]): row["class_name"] for row in csv.DictReader(fh)
                if row.get("class_name") and row.get("label", "").lstrip("-").isdigit()}
