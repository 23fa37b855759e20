"""Byte-reproducible ``.npz`` files: same arrays, same bytes, so DVC sees unchanged outputs as unchanged.

``np.savez`` stamps the current time into each zip entry; this writer fixes it.
"""
from __future__ import annotations

import io
import zipfile
from pathlib import Path

import numpy as np

from genloop.io.atomic import atomic_path

_EPOCH = (1980, 1, 1, 0, 0, 0)


def save_npz(target: str | Path, **arrays: np.ndarray) -> None:
    with atomic_path(target) as tmp, zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_STORED) as zf:
        for name in sorted(arrays):
            buf = io.BytesIO()
            np.save(buf, np.ascontiguousarray(arrays[name]), allow_pickle=False)
            info = zipfile.ZipInfo(f"{name}.npy", date_time=_EPOCH)
            zf.writestr(info, buf.getvalue())


def load_npz(source: str | Path) -> dict[str, np.ndarray]:
    source = Path(source)
    if not source.exists():
        raise FileNotFoundError(f"{source} is missing")
    with np.load(source, allow_pickle=False) as npz:
        return {k: npz[k] for k in npz.files}
