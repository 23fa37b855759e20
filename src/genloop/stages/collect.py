"""Stage 1, collect: read a source into ``data/`` (one images array plus a manifest) and version it."""
from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import pandas as pd

from genloop.io import dataremote, dvcio
from genloop.io.atomic import atomic_dir
from genloop.config import CollectConfig
from genloop.io.datacommit import commit_data
from genloop.io.datasets import DataSetError, content_hash, read_dataset
from genloop.errors import GenloopError, MissingInputError
from genloop.paths import ProjectPaths
from genloop.io.pixels import pixel_stats
from genloop.io.sources import SourceBatch, load_source

MANIFEST_COLUMNS = [
    "id", "source", "batch", "label", "content_hash", "height", "width",
    "pixel_min", "pixel_max", "pixel_mean", "pixel_std",
]
CLASS_NAME = "class_name"  # after "label", only in manifests of data with named classes (folder:PATH, non-integer names)
NAMED_COLUMNS = [*MANIFEST_COLUMNS[:4], CLASS_NAME, *MANIFEST_COLUMNS[4:]]
# At the end, in manifests of image files (folder:PATH, emoji) or colour data: the channels stored and each
# image's Pillow mode and (H, W) as read, before any conversion or resize ("" and -1 where unknown, for rows
# an earlier collect wrote without them). Grey array sources (digits, IDX) leave them out, so their
# manifests stay byte for byte what earlier versions wrote.
ORIGIN_COLUMNS = ["channels", "orig_mode", "orig_height", "orig_width"]
# Every text column, read as text: a class folder named NA or null keeps its name.
TEXT_COLUMNS = {"source": str, CLASS_NAME: str, "content_hash": str, "orig_mode": str}


MODES = ("replace", "append")


@dataclass(frozen=True)
class CollectResult:
    rows: int  # rows in data/ after this collect
    image_shape: tuple[int, int]  # (H, W)
    data_dir: Path
    dvc_hash: str
    added: int = 0  # rows this collect read from the source
    batch: int = 0  # the manifest `batch` those rows carry
    mode: str = "replace"
    pulled_from: str | None = None  # the DVC remote data/ was pulled from instead of collecting
    pushed_to: str | None = None  # the DVC remote data/ was pushed to after collecting
    warnings: tuple[str, ...] = ()  # conversions and resizes (counted), a failed push or pull
    channels: int = 1  # 3 for colour data (images.npy (N, H, W, 3))


def build_manifest(batch: SourceBatch, batch_id: int = 0, first_id: int = 0, named: bool = False,
                   origins: bool = False) -> pd.DataFrame:
    """One row per image; ``first_id`` lets appended rows continue the ids already in data/. The
    class_name column is there when the batch's classes have names other than their labels (or
    ``named``), the ORIGIN_COLUMNS when it has origins to record (or ``origins``); without them a
    manifest is byte for byte what earlier versions wrote, so their DVC versions stay valid."""
    images = batch.images
    stats = pixel_stats(images)
    names = {label: name for name, label in (batch.classes or {}).items()}
    frame = pd.DataFrame(
        {
            "id": np.arange(first_id, first_id + len(images), dtype=np.int64),
            "source": batch.source,
            "batch": batch_id,
            "label": batch.labels.astype(np.int64),
            "class_name": [names.get(int(label), "") for label in batch.labels],
            "content_hash": [content_hash(img) for img in images],
            "height": images.shape[1],
            "width": images.shape[2],
            "pixel_min": stats["pixel_min"],
            "pixel_max": stats["pixel_max"],
            "pixel_mean": stats["pixel_mean"].round(6),
            "pixel_std": stats["pixel_std"].round(6),
        }
    )
    columns = NAMED_COLUMNS if named or has_names(batch) else MANIFEST_COLUMNS
    if origins or has_origins(batch):
        frame = frame.assign(**origin_columns(batch))
        columns = [*columns, *ORIGIN_COLUMNS]
    return frame[columns]


def has_origins(batch: SourceBatch) -> bool:
    """Something to record beyond the stored array: files read (their modes and sizes) or colour."""
    return batch.modes is not None or batch.images.ndim == 4


def origin_columns(batch: SourceBatch) -> dict[str, object]:
    """The ORIGIN_COLUMNS of ``batch``; array sources record their array's own mode and size."""
    images = batch.images
    n, h, w = images.shape[:3]
    channels = 3 if images.ndim == 4 else 1
    modes = batch.modes if batch.modes is not None else ("RGB" if channels == 3 else "L",) * n
    sizes = batch.sizes if batch.sizes is not None else np.tile(np.asarray([h, w], np.int64), (n, 1))
    return {"channels": channels, "orig_mode": list(modes),
            "orig_height": sizes[:, 0].astype(np.int64), "orig_width": sizes[:, 1].astype(np.int64)}


def read_manifest(path: Path, **kwargs) -> pd.DataFrame:
    """A manifest (or any CSV genloop writes) with its text columns kept as text: no "NA" or "null"
    read as missing (``keep_default_na=False``)."""
    return pd.read_csv(path, keep_default_na=False, na_values=[], dtype=TEXT_COLUMNS, **kwargs)


def shape_text(shape: tuple[int, ...]) -> str:
    """``28x28 grey`` or ``32x32 colour`` for an image shape (H, W) or (H, W, 3)."""
    return f"{shape[0]}x{shape[1]} {'colour' if len(shape) == 3 else 'grey'}"


def has_names(batch: SourceBatch) -> bool:
    """Class names that say more than the label (integer folder names are the labels themselves)."""
    return bool(batch.classes) and batch.renumberable


def _write_files(folder: Path, images: np.ndarray, manifest: pd.DataFrame) -> None:
    np.save(folder / "images.npy", np.ascontiguousarray(images, dtype=np.uint8), allow_pickle=False)
    manifest.to_csv(folder / "manifest.csv", index=False, float_format="%.6f", lineterminator="\n")


def write_dataset(data_dir: Path, images: np.ndarray, manifest: pd.DataFrame) -> None:
    """Write both files into a fresh folder and swap it in whole (no DVC): for tests and fixtures."""
    with atomic_dir(data_dir) as tmp:
        _write_files(tmp, images, manifest)


def appended_dataset(paths: ProjectPaths, batch: SourceBatch) -> tuple[np.ndarray, pd.DataFrame, int]:
    """The current data set plus ``batch`` as the next batch, with ids continuing after the current max."""
    if not paths.images.exists() or not paths.manifest.exists():
        raise MissingInputError(
            f"--mode append needs an existing data set in {paths.data}; collect one first (default --mode replace)"
        )
    images, manifest = read_dataset(paths)
    missing = [c for c in MANIFEST_COLUMNS if c not in manifest.columns]
    if missing:
        raise DataSetError(f"{paths.manifest} lacks column(s) {', '.join(missing)}; collect it again with --mode replace")
    _check_same_layout(images, batch, paths)
    next_id = int(manifest["id"].max()) + 1 if len(manifest) else 0
    next_batch = int(manifest["batch"].max()) + 1 if len(manifest) else 0
    named = CLASS_NAME in manifest.columns or has_names(batch)
    if named and CLASS_NAME not in manifest.columns:
        manifest = manifest.assign(class_name="")  # the rows so far have no class names
    origins = ORIGIN_COLUMNS[0] in manifest.columns or has_origins(batch)
    if origins and ORIGIN_COLUMNS[0] not in manifest.columns:  # rows so far: grey, origin unknown
        manifest = manifest.assign(channels=1, orig_mode="", orig_height=-1, orig_width=-1)
    batch = relabelled(batch, manifest, paths)
    added = build_manifest(batch, batch_id=next_batch, first_id=next_id, named=named, origins=origins)
    columns = [*(NAMED_COLUMNS if named else MANIFEST_COLUMNS), *(ORIGIN_COLUMNS if origins else [])]
    combined = pd.concat([manifest[columns], added], ignore_index=True)
    return np.concatenate([images, batch.images]), combined, next_batch


def _check_same_layout(images: np.ndarray, batch: SourceBatch, paths: ProjectPaths) -> None:
    """An append must match data/'s size and channels; the message names the settings that convert."""
    have, new = images.shape[1:], batch.images.shape[1:]
    if have == new:
        return
    fixes = [f"--resize {have[0]}x{have[1]}"] if have[:2] != new[:2] else []
    if len(have) != len(new):
        fixes.append(f"-S collect.channels={3 if len(have) == 3 else 1}")
    raise DataSetError(
        f"cannot append {shape_text(new)} images from {batch.source!r} to {paths.data}, which holds "
        f"{shape_text(have)} images; pass {' '.join(fixes)} or use --mode replace"
    )


def class_map(manifest: pd.DataFrame) -> dict[str, int]:
    """The class name -> label map the manifest's named rows record."""
    if CLASS_NAME not in manifest.columns:
        return {}
    named = manifest.loc[manifest["class_name"].astype(str) != "", ["class_name", "label"]].drop_duplicates()
    return {str(name): int(label) for name, label in zip(named["class_name"], named["label"])}


def _map_text(mapping: dict[str, int]) -> str:
    return "{" + ", ".join(f"{name}: {label}" for name, label in sorted(mapping.items(), key=lambda kv: kv[1])) + "}"


def relabelled(batch: SourceBatch, manifest: pd.DataFrame, paths: ProjectPaths) -> SourceBatch:
    """``batch`` with the labels data/ already gives its class names: names data/ knows keep their
    label, new names take the next free labels. Labels a batch fixes itself (integer folder names)
    must agree with data/'s map; a clash is an error naming both maps."""
    if not batch.classes:
        return batch
    known = class_map(manifest)
    if batch.renumberable:
        used = set(int(x) for x in manifest["label"].unique()) | set(known.values())
        new_map, next_label = {}, 0
        for name in sorted(batch.classes):
            if name in known:
                new_map[name] = known[name]
                continue
            while next_label in used:
                next_label += 1
            new_map[name] = next_label
            used.add(next_label)
    else:
        new_map = dict(batch.classes)
    owner = {label: name for name, label in known.items()}
    clashes = [name for name, label in new_map.items()
               if (name in known and known[name] != label) or owner.get(label, name) != name]
    if clashes:
        raise DataSetError(
            f"cannot append {batch.source!r}: its classes {_map_text(new_map)} clash with the classes "
            f"{paths.manifest} records {_map_text(known)} (at {', '.join(sorted(clashes))}); rename the class "
            "folders to match, or use --mode replace")
    labels = np.asarray([new_map[name] for name in _names_of(batch)], dtype=np.int64)
    return replace(batch, labels=labels, classes=new_map)


def _names_of(batch: SourceBatch) -> list[str]:
    names = {label: name for name, label in (batch.classes or {}).items()}
    return [names[int(label)] for label in batch.labels]


def collect(
    config: CollectConfig,
    paths: ProjectPaths,
    version_with_dvc: bool = True,
    mode: str = "replace",
    resize: tuple[int, int] | None = None,
    max_rows: int | None = None,
    pull_if_missing: bool = False,
) -> CollectResult:
    """Read ``config.source`` into data/ (replacing it, or appending a new batch), ``dvc add`` it and
    push it to the default DVC remote if one is set (genloop.io.dataremote).

    Everything is read and checked before data/ is touched; data/ and data.dvc are then replaced
    together (genloop.io.datacommit), so a bad source or a crash leaves a consistent pair. ``max_rows``
    (clean.max_rows) lets IDX sources refuse an oversized file from its header. ``pull_if_missing``:
    a clone without data/ whose data.dvc the remote holds pulls that version instead of collecting
    (``append``: pulls it, then appends to it).
    """
    if mode not in MODES:
        raise DataSetError(f"collect mode {mode!r}: expected one of {', '.join(MODES)}")
    notes: tuple[str, ...] = ()
    pulled = dataremote.pull_missing_data(paths) if pull_if_missing and version_with_dvc else None
    pulled_from = pulled.remote if pulled is not None and pulled.done else None
    if pulled_from and mode == "replace":
        return _pulled_result(paths, pulled_from)
    if pulled is not None and not pulled.done:
        notes = (pulled.message,)
    batch = load_source(config.source, resize=resize, max_rows=max_rows, config=config)
    notes = (*batch.notes, *notes)
    if mode == "append":
        images, manifest, batch_id = appended_dataset(paths, batch)
    else:
        images, manifest, batch_id = batch.images, build_manifest(batch), 0
    dvc_hash = commit_data(paths, lambda folder: _write_files(folder, images, manifest), version_with_dvc)
    pushed = dataremote.push_data(paths) if dvc_hash != "untracked" else None
    if pushed is not None and not pushed.done:
        notes = (*notes, pushed.message)
    return CollectResult(
        rows=len(manifest),
        image_shape=(int(images.shape[1]), int(images.shape[2])),
        channels=3 if images.ndim == 4 else 1,
        data_dir=paths.data,
        dvc_hash=dvc_hash,
        added=len(batch.images),
        batch=batch_id,
        mode=mode,
        pulled_from=pulled_from,
        pushed_to=pushed.remote if pushed is not None and pushed.done else None,
        warnings=notes,
    )


def _pulled_result(paths: ProjectPaths, remote: str) -> CollectResult:
    images = np.load(paths.images, mmap_mode="r", allow_pickle=False)
    return CollectResult(rows=int(images.shape[0]), image_shape=(int(images.shape[1]), int(images.shape[2])),
                         channels=3 if images.ndim == 4 else 1, data_dir=paths.data, dvc_hash=dvcio.read_dvc_hash(paths.data_dvc),
                         batch=0, mode="replace", pulled_from=remote)


# ---- history: which batches data/ holds, and which versions of it git has recorded ----------------

@dataclass(frozen=True)
class BatchSummary:
    batch: int
    source: str
    rows: int
    first_id: int
    last_id: int


@dataclass(frozen=True)
class DataVersion:
    commit: str
    date: str
    subject: str
    dvc_hash: str


def batch_history(paths: ProjectPaths) -> list[BatchSummary]:
    """One line per collect that built the current data/ (a replace starts over at batch 0)."""
    if not paths.manifest.exists():
        raise MissingInputError(f"no collected data in {paths.data}; run `genloop collect --source digits` first")
    manifest = read_manifest(paths.manifest, usecols=["id", "source", "batch"])
    return [
        BatchSummary(int(b), ", ".join(sorted(set(g["source"].astype(str)))), len(g),
                     int(g["id"].min()), int(g["id"].max()))
        for b, g in manifest.groupby("batch", sort=True)
    ]


def _git(paths: ProjectPaths, *args: str) -> str | None:
    """stdout of a read-only git command, or None outside a repository or without git."""
    import subprocess

    try:
        proc = subprocess.run(["git", *args], cwd=paths.root, capture_output=True, text=True, env=dvcio.dvc_env())
    except OSError:
        return None
    return proc.stdout if proc.returncode == 0 else None


def data_versions(paths: ProjectPaths, limit: int = 20) -> list[DataVersion]:
    """The versions of data/ that git has recorded (commits changing data.dvc), newest first."""
    import yaml

    log = _git(paths, "log", f"-n{limit}", "--date=short", "--format=%h%x09%ad%x09%s", "--", "data.dvc")
    versions = []
    for line in (log or "").splitlines():
        commit, date, subject = line.split("\t", 2)
        try:
            meta = yaml.safe_load(_git(paths, "show", f"{commit}:data.dvc") or "") or {}
            dvc_hash = str(meta["outs"][0]["md5"])
        except (yaml.YAMLError, KeyError, IndexError, TypeError):
            dvc_hash = "(data.dvc removed or unreadable)"
        versions.append(DataVersion(commit, date, subject, dvc_hash))
    return versions
