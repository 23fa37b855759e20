"""Atomic writes: a reader (or a crash) never sees a half-written file or folder."""
from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


@contextmanager
def atomic_path(target: str | Path, mode: int | None = None) -> Iterator[Path]:
    """Yield a temporary path beside ``target``; rename it over ``target`` only on success. ``mode``: the
    file's permissions from its creation on (e.g. 0o600 for a secret), instead of the umask's."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    os.chmod(tmp_path, 0o666 & ~_umask() if mode is None else mode)  # mkstemp makes 0600; published: the umask
    try:
        yield tmp_path
        os.replace(tmp_path, target)
    except BaseException:
        tmp_path.unlink(missing_ok=True)
        raise


def write_bytes(target: str | Path, data: bytes, mode: int | None = None) -> None:
    with atomic_path(target, mode) as tmp:
        tmp.write_bytes(data)


def write_text(target: str | Path, text: str, mode: int | None = None) -> None:
    write_bytes(target, text.encode(), mode)


def write_json(target: str | Path, obj: Any, mode: int | None = None) -> None:
    write_text(target, json.dumps(obj, indent=2, sort_keys=True) + "\n", mode)


def write_with(target: str | Path, writer: Callable[[Path], None]) -> None:
    """Let ``writer`` fill a temp path (e.g. ``np.save`` or ``torch.save``), then publish it."""
    with atomic_path(target) as tmp:
        writer(tmp)


def save_torch(target: str | Path, obj: object) -> None:
    """``torch.save`` through a temp file, as a file object so the archive's inner folder name does
    not come from the temp name: the same object always gives the same bytes."""
    import torch

    def writer(tmp: Path) -> None:
        with open(tmp, "wb") as handle:
            torch.save(obj, handle)

    write_with(target, writer)


@contextmanager
def atomic_dir(target: str | Path) -> Iterator[Path]:
    """Fill a fresh temporary folder; swap it in for ``target`` only if the block succeeds.

    The old folder is moved aside and the new one renamed in right after, then the old one is
    removed: a crash leaves either the old or the complete new contents, never a mix.
    """
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent))
    os.chmod(tmp, 0o777 & ~_umask())
    try:
        yield tmp
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    old = target.with_name(f".{target.name}.old")
    shutil.rmtree(old, ignore_errors=True)
    if target.exists():
        os.replace(target, old)
    os.replace(tmp, target)
    shutil.rmtree(old, ignore_errors=True)
