"""Stage 2, clean: validate the collected images, quarantine bad rows, split deterministically."""
from __future__ import annotations

import hashlib
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from genloop import atomic
from genloop.arrays import load_npz, save_npz
from genloop.collect import content_hash, read_dataset
from genloop.config import CleanConfig
from genloop.paths import ProjectPaths
from genloop.validation import validate_table

SPLITS = ("train", "val", "test")


class DataValidationError(RuntimeError):
    """The data set as a whole is unusable; the message names the report to read."""


@dataclass(frozen=True)
class CleanResult:
    checked: int
    passed: int
    quarantined: int
    by_reason: dict[str, int]
    split_sizes: dict[str, int]
    report: Path


def image_table(images: np.ndarray, manifest: pd.DataFrame) -> pd.DataFrame:
    """Recompute hash and statistics from the pixels themselves rather than trust the manifest."""
    flat = images.reshape(len(images), -1).astype(np.float64)
    finite = np.isfinite(flat).all(axis=1)
    hashes = [content_hash(img) for img in images]
    table = pd.DataFrame({
        "id": manifest["id"].to_numpy(),
        "label": manifest["label"].to_numpy(),
        "content_hash": hashes,
        "height": images.shape[1],
        "width": images.shape[2],
        "pixel_min": flat.min(axis=1),
        "pixel_max": flat.max(axis=1),
        "pixel_mean": np.where(finite, flat.mean(axis=1), np.nan),
        "pixel_std": flat.std(axis=1),
    })
    table["is_duplicate"] = table["content_hash"].duplicated(keep="first")
    return table


def split_of(content_hash_hex: str, val: float, test: float) -> str:
    """A split from the content hash alone: the same image lands in the same split in every version."""
    bucket = int(hashlib.sha256(content_hash_hex.encode()).hexdigest()[:12], 16) / float(16**12)
    if bucket < test:
        return "test"
    if bucket < test + val:
        return "val"
    return "train"


def clean(config: CleanConfig, paths: ProjectPaths) -> CleanResult:
    images, manifest = read_dataset(paths)
    table = image_table(images, manifest)
    expected_shape = (int(images.shape[1]), int(images.shape[2]))
    outcome = validate_table(table, config, expected_shape)

    reasons = outcome.row_reasons
    quarantined_ids = set(reasons)
    by_reason = Counter(r for rs in reasons.values() for r in rs)
    share = len(quarantined_ids) / max(len(table), 1)
    failures = list(outcome.dataset_failures)
    if share > config.max_quarantine_share:
        failures.append(
            f"{share:.1%} of rows quarantined, above clean.max_quarantine_share={config.max_quarantine_share:.1%}"
        )

    keep = ~table["id"].isin(quarantined_ids)
    table["split"] = [split_of(h, config.split.val, config.split.test) for h in table["content_hash"]]
    split_sizes = {s: int(((table["split"] == s) & keep).sum()) for s in SPLITS}
    report_path = paths.reports / "validation.json"
    report = {
        "checked": int(len(table)),
        "passed": int(keep.sum()),
        "quarantined": len(quarantined_ids),
        "by_reason": dict(sorted(by_reason.items())),
        "dataset_failures": failures,
        "split_sizes": split_sizes,
        "expectations": outcome.expectations,
    }
    atomic.write_json(report_path, report)
    if failures:
        raise DataValidationError(
            "data set failed validation: " + "; ".join(failures) + f". See {report_path}"
        )

    with atomic.atomic_dir(paths.clean) as out:
        row_index = np.arange(len(table))
        for split in SPLITS:
            rows = row_index[(table["split"] == split).to_numpy() & keep.to_numpy()]
            save_npz(
                out / f"{split}.npz",
                images=images[rows],
                labels=table["label"].to_numpy()[rows].astype(np.int64),
                ids=table["id"].to_numpy()[rows].astype(np.int64),
            )
        quarantine = table.loc[~keep, ["id", "label", "content_hash", "height", "width"]].copy()
        quarantine["reason"] = [";".join(reasons[i]) for i in quarantine["id"]]
        quarantine.to_csv(out / "quarantine.csv", index=False, lineterminator="\n")

    return CleanResult(
        checked=report["checked"], passed=report["passed"], quarantined=report["quarantined"],
        by_reason=report["by_reason"], split_sizes=split_sizes, report=report_path,
    )


def load_split(paths: ProjectPaths, split: str) -> tuple[np.ndarray, np.ndarray]:
    """Images as uint8 (N, H, W) and labels of one clean split."""
    file = paths.clean / f"{split}.npz"
    if not file.exists():
        raise FileNotFoundError(f"{file} is missing; run `genloop clean` first")
    arrays = load_npz(file)
    return arrays["images"], arrays["labels"]
