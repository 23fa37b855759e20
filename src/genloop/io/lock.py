"""One writer per project: an advisory lock on ``ROOT/.genloop.lock`` around every command that
writes state (data/, outputs/, models/, the MLflow store, the registry).

``fcntl.flock`` on an open file: the OS drops it when the holder exits, even on SIGKILL. The file
also holds the holder's pid, host, command and start time, for the message a second command gets,
and is emptied on release; finding it filled by a process that is gone means the last holder died
(a stale lock), which is said in a warning. Re-entrant within a process, so ``genloop run`` holding
the lock can call the Prefect flow (which takes it too) and the stage functions.
"""
from __future__ import annotations

import fcntl
import json
import os
import socket
import sys
import time
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path

from genloop.errors import GenloopError, ProjectBusyError

LOCK_NAME = ".genloop.lock"
POLL_S = 0.2

_held: dict[Path, tuple[int, int]] = {}  # lock file -> (fd, depth) held by this process


class StaleLockWarning(UserWarning):
    """The last holder of the lock died without releasing it; its state may be half written."""


def lock_path(root: str | Path, name: str = LOCK_NAME) -> Path:
    return Path(root).resolve() / name


def read_holder(path: Path) -> dict:
    """The holder's metadata, or ``{}`` when the file is empty, missing or being written."""
    try:
        text = path.read_text(encoding="utf-8")
        holder = json.loads(text) if text.strip() else {}
    except (OSError, ValueError):
        return {}
    return holder if isinstance(holder, dict) else {}


def describe(holder: dict) -> str:
    if not holder:
        return "another genloop process (it has not written its details yet)"
    return (f"pid {holder.get('pid')} on {holder.get('host')} running `{holder.get('command')}` "
            f"since {holder.get('since')}")


def pid_alive(pid: int | None) -> bool:
    """The process exists on this machine and has not exited (a zombie, exited but not yet reaped, has not)."""
    if not pid:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    stat = Path(f"/proc/{pid}/stat")
    return not (stat.is_file() and ") Z" in stat.read_text())


def _acquire(fd: int, path: Path, wait: float) -> None:
    deadline = time.monotonic() + max(wait, 0.0)
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return
        except BlockingIOError:
            if time.monotonic() >= deadline:
                waited = f" after waiting {wait:g} s" if wait > 0 else ""
                raise ProjectBusyError(
                    f"{path.parent} is busy{waited}: {describe(read_holder(path))} holds {path}. Let it "
                    "finish, or pass --wait SECONDS to queue behind it") from None
            time.sleep(POLL_S)


def _warn_if_stale(path: Path) -> None:
    """A filled lock file we could lock means its writer died holding it."""
    holder = read_holder(path)
    if not holder:
        return
    same_host = holder.get("host") == socket.gethostname()
    gone = same_host and isinstance(holder.get("pid"), int) and not pid_alive(holder["pid"])
    why = "which is no longer running" if gone else "which exited without releasing it"
    warnings.warn(f"taking over a stale lock {path} left by {describe(holder)}, {why}; what it was "
                  "writing may be unfinished", StaleLockWarning, stacklevel=4)  # past project_lock and
    # contextlib's __enter__: the warning names the line that took the lock


def _write_holder(fd: int, command: str) -> None:
    holder = {"pid": os.getpid(), "host": socket.gethostname(), "command": command,
              "since": datetime.now(timezone.utc).isoformat(timespec="seconds")}
    data = json.dumps(holder).encode()
    os.ftruncate(fd, 0)
    os.pwrite(fd, data, 0)
    os.fsync(fd)


def _open_lock(path: Path) -> int:
    """The lock file's descriptor; a folder we cannot write (read-only, another owner) is one clear error."""
    try:
        return os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
    except OSError as exc:
        raise GenloopError(f"cannot write to {path.parent} ({exc.strerror or exc}: {path}); this command writes "
                           "to the project folder: make it writable, or run in a writable copy") from None


@contextmanager
def project_lock(root: str | Path, command: str | None = None, wait: float = 0.0,
                 name: str = LOCK_NAME) -> Iterator[Path]:
    """Hold the project's lock (or another lock file ``name`` in ``root``) for the block; raise ProjectBusyError
    (naming the holder) if another process holds it for longer than ``wait`` seconds. Nested calls in one
    process just count."""
    path = lock_path(root, name)
    if path in _held:
        fd, depth = _held[path]
        _held[path] = (fd, depth + 1)
        try:
            yield path
        finally:
            fd, depth = _held[path]
            _held[path] = (fd, depth - 1)
        return
    if not path.parent.is_dir():
        raise GenloopError(f"project folder {path.parent} does not exist")
    fd = _open_lock(path)
    try:
        _acquire(fd, path, wait)
        _warn_if_stale(path)
        _write_holder(fd, command or " ".join(["genloop", *sys.argv[1:]]))
        _held[path] = (fd, 1)
        try:
            yield path
        finally:
            del _held[path]
            os.ftruncate(fd, 0)  # empty = released cleanly; the flock goes with the close
    finally:
        os.close(fd)
