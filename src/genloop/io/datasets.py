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
    """The collected images (uint8 (N, H, W) grey or (N, H, W, 3) colour) and their manifest, checked to
    be the same length."""
    import pandas as pd  # here, so the training path (and GPU-box benchmarks) runs without pandas

    if not paths.images.exists() or not paths.manifest.exists():
        raise MissingInputError(
            f"no collected data in {paths.data}; run `genloop collect --source digits` first"
        )
    images = np.load(paths.images, allow_pickle=False)
    # Text stays text: a class folder named "NA" or "null" must not be read as a missing name.
    manifest = pd.read_csv(paths.manifest, keep_default_na=False, na_values=[],
                           dtype={"source": str, "class_name": str, "content_hash": str, "orig_mode": str})
    if len(images) != len(manifest):
        raise DataSetError(
            f"{paths.images} holds {len(images)} images but {paths.manifest} has {len(manifest)} rows"
        )
    return images, manifest


def class_names(paths: ProjectPaths) -> dict[int, str]:
    """Each label's class name from data/manifest.csv (its ``class_name`` column, written for folders of
    named classes); a label without one is named by its value ("0".."9" for the digits). Empty when
    there is no manifest."""
    import csv

    if not paths.manifest.exists():
        return {}
    names: dict[int, str] = {}
    with paths.manifest.open(newline="") as fh:
        for row in csv.DictReader(fh):
            label = int(row["label"])
            name = (row.get("class_name") or "").strip()
            if name or label not in names:
                names[label] = name or str(label)
    return dict(sorted(names.items()))


def load_split(paths: ProjectPaths, split: str) -> tuple[np.ndarray, np.ndarray]:
    """Images as uint8 (N, H, W) (grey) or (N, H, W, 3) (colour) and labels of one clean split."""
    file = paths.clean / f"{split}.npz"
    if not file.exists():
        raise MissingInputError(f"{file} is missing; run `genloop clean` first")
    arrays = load_npz(file)
    return arrays["images"], arrays["labels"]


def image_shape(images: np.ndarray) -> tuple[int, int, int]:
    """(C, H, W) of a stack of images stored channel-last: uint8 (N, H, W) is grey (C = 1), (N, H, W, C)
    with C = 1 or 3 is as stored. What models, checkpoints, ONNX and serving are sized from."""
    shape = tuple(int(s) for s in np.shape(images))
    if len(shape) == 3:
        return 1, shape[1], shape[2]
    if len(shape) == 4 and shape[3] in (1, 3):
        return shape[3], shape[1], shape[2]
    raise DataSetError(f"images shaped {shape}; expected (N, H, W) for grey or (N, H, W, 3) for colour")


def to_tensor(images: np.ndarray) -> torch.Tensor:
    """uint8 (N, H, W) or (N, H, W, C) -> float (N, C, H, W) in [0, 1], once, so batches are plain slices."""
    import torch

    image_shape(images)  # refuses any other layout
    pixels = torch.from_numpy(np.ascontiguousarray(images)).float().div_(255.0)
    if pixels.ndim == 3:
        return pixels.unsqueeze(1)
    return pixels.permute(0, 3, 1, 2).contiguous()


def read_run_id(paths: ProjectPaths, kind: str) -> str:
    """The MLflow run that trained ``kind`` (written by train to outputs/train/KIND/run.json)."""
    file = paths.train(kind) / "run.json"
    if not file.exists():
        raise MissingInputError(f"{file} is missing; run `genloop train --model {kind}` first")
    return str(json.loads(file.read_text())["run_id"])
