"""Replace ``data/`` and ``data.dvc`` together: after a crash at any point the project holds either
the old pair or the new one, and the next command puts away what the crash left.

The new data set is written under ``.genloop/collect/txn-*/data`` and versioned there by ``dvc add``
in a throwaway DVC repository that shares the project's cache (DVC refuses git-ignored ``.dvc``
files inside the project), which gives the ``data.dvc`` it will have. Then a journal is written and
the two are renamed into place; the old pair is kept in the transaction folder until the journal
says committed. ``recover`` reads the journal: a complete swap is finished, anything else is undone.
"""
from __future__ import annotations

import json
import os
import shutil
import signal
import tempfile
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from genloop.errors import GenloopError
from genloop.io import crashpoints, dvcio
from genloop.io.atomic import write_json, write_text
from genloop.paths import ProjectPaths

WORK_DIR = Path(".genloop") / "collect"
JOURNAL = "journal.json"


class InterruptedAfterSwap(GenloopError):
    """Ctrl-C reached collect while it swapped data/ and data.dvc: it finished the swap first (both hold
    the new data set) and stops here, instead of a bare "Aborted!" that would suggest nothing changed."""


@contextmanager
def _sigint_deferred() -> Iterator[list[int]]:
    """Hold SIGINT back while the pair is swapped (the list receives it), so Ctrl-C cannot stop the swap
    half way. Only the main thread can install a handler; elsewhere (a Prefect task thread) the journal
    alone keeps the pair consistent."""
    caught: list[int] = []
    if threading.current_thread() is not threading.main_thread():
        yield caught
        return
    previous = signal.signal(signal.SIGINT, lambda signum, _frame: caught.append(signum))
    try:
        yield caught
    finally:
        signal.signal(signal.SIGINT, previous)


def work_dir(paths: ProjectPaths) -> Path:
    return paths.root / WORK_DIR


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    elif path.exists() or path.is_symlink():
        path.unlink()


def _scratch_dvc_add(paths: ProjectPaths, txn: Path) -> Path:
    """``dvc add`` txn/data in a DVC repository rooted at ``txn`` that uses the project's cache."""
    cache = dvcio.run_dvc(["cache", "dir"], cwd=paths.root).stdout.strip()
    (txn / ".dvc").mkdir()
    (txn / ".dvc" / "config").write_text(
        f"[core]\n    no_scm = True\n    analytics = false\n[cache]\n    dir = {cache}\n")
    dvcio.run_dvc(["add", "--quiet", "data"], cwd=txn)
    return txn / "data.dvc"


def _ensure_gitignored(paths: ProjectPaths) -> None:
    """What ``dvc add data`` would do in a git project: list /data in the root .gitignore."""
    if not (paths.root / ".git").exists():
        return
    ignore = paths.root / ".gitignore"
    lines = ignore.read_text().splitlines() if ignore.exists() else []
    if not {"/data", "/data/", "data", "data/"} & {line.strip() for line in lines}:
        write_text(ignore, "\n".join([*lines, "/data"]) + "\n")


def commit_data(paths: ProjectPaths, write: Callable[[Path], None], version_with_dvc: bool) -> str:
    """Let ``write`` fill a fresh data folder, then swap it (and its data.dvc) in; return the DVC md5."""
    recover(paths)
    base = work_dir(paths)
    base.mkdir(parents=True, exist_ok=True)
    txn = Path(tempfile.mkdtemp(prefix="txn-", dir=base))
    try:
        new_data = txn / "data"
        new_data.mkdir()
        write(new_data)
        use_dvc = version_with_dvc and dvcio.is_dvc_repo(paths.root)
        new_dvc = _scratch_dvc_add(paths, txn) if use_dvc else None
        crashpoints.reached("before_data_swap")
    except BaseException:
        shutil.rmtree(txn, ignore_errors=True)
        raise
    with _sigint_deferred() as interrupted:
        _swap(paths, base, txn, new_data, new_dvc, use_dvc)
    md5 = dvcio.read_dvc_hash(paths.data_dvc) if use_dvc else "untracked"
    if interrupted:
        raise InterruptedAfterSwap(
            f"interrupted while data/ and data.dvc were being replaced: the swap was finished first, so both hold "
            f"the new data set (dvc md5 {md5}); nothing after it ran (no push to a DVC remote). `dvc status` is "
            "clean; `git checkout data.dvc && dvc checkout data.dvc` brings the previous data set back")
    return md5


def _swap(paths: ProjectPaths, base: Path, txn: Path, new_data: Path, new_dvc: Path | None, use_dvc: bool) -> None:
    """Journal, move the old pair into ``txn``, the new one into place, mark committed, clean up."""
    journal = {"txn": txn.name, "state": "swapping", "dvc": use_dvc,
               "had_data": paths.data.exists(), "had_dvc": paths.data_dvc.exists()}
    write_json(base / JOURNAL, journal)
    old = txn / "old"
    old.mkdir()
    if use_dvc and paths.data_dvc.exists():
        shutil.copy2(paths.data_dvc, old / "data.dvc.tmp")
        os.replace(old / "data.dvc.tmp", old / "data.dvc")
    if paths.data.exists():
        os.replace(paths.data, old / "data")
    crashpoints.reached("after_old_data_moved")
    os.replace(new_data, paths.data)
    crashpoints.reached("after_data_swap")
    if new_dvc is not None:
        os.replace(new_dvc, paths.data_dvc)
        _ensure_gitignored(paths)
    crashpoints.reached("after_dvc_swap")
    write_json(base / JOURNAL, {**journal, "state": "committed"})
    _finish(base, txn)


def _finish(base: Path, txn: Path) -> None:
    shutil.rmtree(txn, ignore_errors=True)
    (base / JOURNAL).unlink(missing_ok=True)
    for folder in (base, base.parent):  # leave no empty .genloop/ behind
        try:
            folder.rmdir()
        except OSError:
            break


def _roll_back(paths: ProjectPaths, txn: Path, journal: dict) -> None:
    """Put the old data/ and data.dvc back (each step can be repeated if this is interrupted too)."""
    old = txn / "old"
    discard = txn / "discard"
    new_placed = not (txn / "data").exists()  # the new folder has left the transaction
    if (old / "data").exists():
        if paths.data.exists():
            _remove(discard)
            os.replace(paths.data, discard)
        os.replace(old / "data", paths.data)
    elif new_placed and not journal.get("had_data") and paths.data.exists():
        _remove(discard)
        os.replace(paths.data, discard)
    if (old / "data.dvc").exists():
        os.replace(old / "data.dvc", paths.data_dvc)
    elif journal.get("dvc") and not journal.get("had_dvc") and not (txn / "data.dvc").exists():
        paths.data_dvc.unlink(missing_ok=True)


def recover(paths: ProjectPaths) -> str | None:
    """Finish or undo a collect that was killed mid-swap and remove its leftovers (and those of older
    versions: ``.data.*.tmp`` folders in the root). Returns what was done, or None when nothing was."""
    base = work_dir(paths)
    done = None
    for stray in [*paths.root.glob(".data.*.tmp"), paths.root / ".data.old"]:
        if stray.is_dir():
            shutil.rmtree(stray, ignore_errors=True)
            done = done or "removed leftovers of an interrupted collect"
    if not base.is_dir():
        return done
    journal_file = base / JOURNAL
    journal = {}
    if journal_file.exists():
        try:
            journal = json.loads(journal_file.read_text())
        except ValueError:
            journal = {}  # the journal is written atomically: unreadable means never completed
    txn = base / str(journal.get("txn", ""))
    if journal and txn.is_dir() and journal.get("txn"):
        complete = not (txn / "data").exists() and not (journal.get("dvc") and (txn / "data.dvc").exists())
        if journal.get("state") == "committed" or complete:
            done = "finished a collect that was interrupted after its data was in place"
        else:
            _roll_back(paths, txn, journal)
            done = "undid a collect that was interrupted while swapping data/ and data.dvc; the previous data stays"
    for leftover in base.glob("txn-*"):
        shutil.rmtree(leftover, ignore_errors=True)
        done = done or "removed leftovers of an interrupted collect"
    _finish(base, txn if journal.get("txn") else base / "none")
    return done
