"""Stage 2, clean: validate the collected images, quarantine bad rows, split deterministically.

Besides the split it writes what a person needs to trust the data: ``reports/validation.json``
(counts, reasons, near-duplicates), GE's Data Docs (``reports/data_docs/index.html``) and
``reports/near_duplicates.csv``. It logs nothing itself; callers send ``CleanResult.reports`` to MLflow.
"""
from __future__ import annotations

import hashlib
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from genloop.io import atomic
from genloop.io.arrays import save_npz
from genloop.config import CleanConfig
from genloop.io.datasets import content_hash, read_dataset
from genloop.io.pixels import pixel_stats
from genloop.core.near_duplicates import find_near_duplicates
from genloop.paths import ProjectPaths
from genloop.io.validation import DataValidationError, validate_table

SPLITS = ("train", "val", "test")


def report_files(paths: ProjectPaths) -> tuple[Path, ...]:
    """What clean writes for people (also after a failed validation): the files to log to MLflow."""
    return (paths.validation_report, paths.near_duplicates, paths.data_docs)


@dataclass(frozen=True)
class CleanResult:
    checked: int
    passed: int
    quarantined: int
    by_reason: dict[str, int]
    split_sizes: dict[str, int]
    report: Path
    near_duplicates: int = 0
    near_duplicates_by_split: dict[str, int] = field(default_factory=dict)
    near_duplicate_distance: float = 0.0
    near_duplicates_report: Path | None = None
    data_docs: Path | None = None  # index.html
    reports: tuple[Path, ...] = ()

    def summary(self) -> str:
        """A few lines for the terminal and the flow log."""
        reasons = ", ".join(f"{k} {v}" for k, v in self.by_reason.items()) or "none"
        by_split = ", ".join(f"{k} {v}" for k, v in self.near_duplicates_by_split.items())
        return "\n".join([
            f"validation: checked {self.checked}, passed {self.passed}, quarantined {self.quarantined}",
            f"  quarantined by reason: {reasons}",
            f"  near-duplicates across splits (RMS < {self.near_duplicate_distance:g}): "
            f"{self.near_duplicates} ({by_split}) -> {self.near_duplicates_report}",
            f"  splits: {', '.join(f'{k} {v}' for k, v in self.split_sizes.items())}",
            f"  report {self.report}; Data Docs {self.data_docs}",
        ])


def image_table(images: np.ndarray, manifest: pd.DataFrame) -> pd.DataFrame:
    """Recompute hash, layout and statistics from the pixels themselves rather than trust the manifest
    (grey (N, H, W) or colour (N, H, W, 3); statistics span every channel)."""
    stats = pixel_stats(images)
    hashes = [content_hash(img) for img in images]
    table = pd.DataFrame({
        "id": manifest["id"].to_numpy(),
        "label": manifest["label"].to_numpy(),
        "content_hash": hashes,
        "channels": 3 if images.ndim == 4 else 1,
        "height": images.shape[1],
        "width": images.shape[2],
        "pixel_min": stats["pixel_min"],
        "pixel_max": stats["pixel_max"],
        "pixel_mean": np.where(np.isfinite(stats["pixel_mean"]), stats["pixel_mean"], np.nan),
        "pixel_std": stats["pixel_std"],
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


def expected_layout(images: np.ndarray, manifest: pd.DataFrame) -> tuple[int, int, int]:
    """The (C, H, W) collect recorded in the manifest (its most common row), which the pixels must match;
    the array's own layout where the manifest records none (channels: manifests of grey arrays)."""
    def recorded(column: str, fallback: int) -> int:
        if column not in manifest.columns or manifest.empty:
            return fallback
        return int(pd.to_numeric(manifest[column], errors="coerce").mode().iloc[0])

    return (recorded("channels", 3 if images.ndim == 4 else 1), recorded("height", int(images.shape[1])),
            recorded("width", int(images.shape[2])))


def write_splits(paths: ProjectPaths, images: np.ndarray, table: pd.DataFrame, kept: np.ndarray,
                 reasons: dict[int, list[str]]) -> None:
    """outputs/clean: one .npz per split of the kept rows (images in their own layout) and quarantine.csv,
    swapped in whole."""
    with atomic.atomic_dir(paths.clean) as out:
        row_index = np.arange(len(table))
        for split in SPLITS:
            rows = row_index[(table["split"] == split).to_numpy() & kept]
            save_npz(
                out / f"{split}.npz",
                images=images[rows],
                labels=table["label"].to_numpy()[rows].astype(np.int64),
                ids=table["id"].to_numpy()[rows].astype(np.int64),
            )
        quarantine = table.loc[~kept, ["id", "label", "content_hash", "channels", "height", "width"]].copy()
        quarantine["reason"] = [";".join(reasons[i]) for i in quarantine["id"]]
        quarantine.to_csv(out / "quarantine.csv", index=False, lineterminator="\n")


def near_duplicates(config: CleanConfig, paths: ProjectPaths, images: np.ndarray, table: pd.DataFrame,
                    kept: np.ndarray) -> tuple[pd.DataFrame, dict[str, int]]:
    """Held-out images close to a training image (RMS over every pixel and channel), written to
    reports/near_duplicates.csv, with their count per held-out split."""
    near = find_near_duplicates(
        images[kept], table["id"].to_numpy()[kept], table["label"].to_numpy()[kept],
        table["split"].to_numpy()[kept], config.near_duplicate_distance,
    )
    atomic.write_with(paths.near_duplicates, lambda tmp: near.to_csv(tmp, index=False, lineterminator="\n"))
    return near, {s: int((near["split"] == s).sum()) for s in SPLITS if s != "train"}


def quarantine_failure(config: CleanConfig, share: float, by_reason: Counter, labels: pd.Series) -> str:
    """The too-many-quarantined failure with its reasons, and the setting to change when labels outside
    ``clean.labels`` are the cause (an explicit list that misses classes, or unlabelled images under all)."""
    reasons = ", ".join(f"{reason} {count}" for reason, count in sorted(by_reason.items()))
    text = (f"{share:.1%} of rows quarantined ({reasons}), above clean.max_quarantine_share="
            f"{config.max_quarantine_share:.1%}")
    outside = sorted(v for v in set(int(v) for v in labels.unique()) if not config.allows(v))
    if by_reason.get("label_out_of_set"):
        shown = ", ".join(map(str, outside[:20])) + (", ..." if len(outside) > 20 else "")
        allowed = ("all: 0 and above" if config.labels == "all" else ", ".join(map(str, config.labels)))
        text += (f"; labels {shown} are not in clean.labels ({allowed}): "
                 + ("-1 marks an image without a class; list -1 in clean.labels to keep those"
                    if config.labels == "all" else "set clean.labels: all, or list every class label of the data"))
    return text


def clean(config: CleanConfig, paths: ProjectPaths) -> CleanResult:
    """Validate data/, quarantine bad rows and write the splits, which keep the images' layout ((N, H, W)
    grey or (N, H, W, 3) colour)."""
    images, manifest = read_dataset(paths)
    table = image_table(images, manifest)
    expected_shape = expected_layout(images, manifest)
    docs = paths.data_docs
    with atomic.atomic_dir(docs) as building:  # a failed build leaves the previous docs in place
        outcome = validate_table(table, config, expected_shape, docs_dir=building)
        if not (building / "index.html").is_file():
            raise RuntimeError(f"Great Expectations wrote no index.html for {docs}")

    reasons = outcome.row_reasons
    quarantined_ids = set(reasons)
    by_reason = Counter(r for rs in reasons.values() for r in rs)
    share = len(quarantined_ids) / max(len(table), 1)
    failures = list(outcome.dataset_failures)
    if share > config.max_quarantine_share:
        failures.append(quarantine_failure(config, share, by_reason, table["label"]))

    keep = ~table["id"].isin(quarantined_ids)
    table["split"] = [split_of(h, config.split.val, config.split.test) for h in table["content_hash"]]
    split_sizes = {s: int(((table["split"] == s) & keep).sum()) for s in SPLITS}
    kept = keep.to_numpy()
    near, near_by_split = near_duplicates(config, paths, images, table, kept)
    near_path = paths.near_duplicates

    report_path = paths.validation_report
    report = {
        "checked": int(len(table)),
        "passed": int(keep.sum()),
        "quarantined": len(quarantined_ids),
        "by_reason": dict(sorted(by_reason.items())),
        "dataset_failures": failures,
        "split_sizes": split_sizes,
        "near_duplicates": {
            "count": int(len(near)),
            "by_split": near_by_split,
            "distance_threshold": config.near_duplicate_distance,
            "metric": "rms pixel difference, pixels in [0, 1]",
            "report": str(near_path.relative_to(paths.root)),
        },
        "data_docs": str((docs / "index.html").relative_to(paths.root)),
        "expectations": outcome.expectations,
    }
    atomic.write_json(report_path, report)
    if failures:
        raise DataValidationError("data set failed validation: " + "; ".join(failures)
                                  + f". See {report_path} and {docs / 'index.html'}")

    write_splits(paths, images, table, kept, reasons)
    return CleanResult(
        checked=report["checked"], passed=report["passed"], quarantined=report["quarantined"],
        by_reason=report["by_reason"], split_sizes=split_sizes, report=report_path,
        near_duplicates=len(near), near_duplicates_by_split=near_by_split,
        near_duplicate_distance=config.near_duplicate_distance, near_duplicates_report=near_path,
        data_docs=docs / "index.html", reports=report_files(paths),
    )

