"""A damaged MLflow SQLite store (genloop.io.tracking.check_sqlite_store): every command that opens it says so in
one line naming the file and the way back, instead of sqlalchemy tracebacks; a 0-byte store is not silently
replaced by a new empty one. Real stores: one made by MLflow, then damaged on disk."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from genloop.config import MlflowConfig
from genloop.io import tracking
from genloop.paths import ProjectPaths

GENLOOP = str(Path(sys.executable).with_name("genloop"))


@pytest.fixture(scope="module")
def sound_store(tmp_path_factory, genloop_mlflow_env) -> Path:
    """A real store with an experiment and a few runs (several pages), made by MLflow."""
    from mlflow import MlflowClient

    root = tmp_path_factory.mktemp("store")
    experiment_id = tracking.setup(MlflowConfig(), ProjectPaths.at(root))
    client = MlflowClient()
    for i in range(30):
        run = client.create_run(experiment_id, run_name=f"run-{i}", tags={"note": "x" * 500})
        client.log_batch(run.info.run_id, params=[__import__("mlflow").entities.Param(f"p{j}", "y" * 200)
                                                  for j in range(20)])
    return root / "mlflow" / "mlflow.db"


def damaged_project(tmp_path: Path, store: Path, damage) -> Path:
    db = tmp_path / "mlflow" / "mlflow.db"
    db.parent.mkdir()
    shutil.copyfile(store, db)
    damage(db)
    tracking._sound.discard(db.resolve())
    return tmp_path


def garbage_header(db: Path) -> None:
    with open(db, "r+b") as f:
        f.write(b"this is not sqlite at all")


def truncated(db: Path) -> None:
    os.truncate(db, db.stat().st_size // 2 + 100)


def random_pages(db: Path) -> None:
    size = db.stat().st_size
    with open(db, "r+b") as f:
        for page in range(2, size // 4096):
            f.seek(page * 4096)
            f.write(os.urandom(4096))


def emptied_long_ago(db: Path) -> None:
    os.truncate(db, 0)
    old = time.time() - 3600
    os.utime(db, (old, old))


@pytest.mark.parametrize("damage,why", [(garbage_header, "not an SQLite database"), (truncated, "quick_check|sqlite"),
                                        (random_pages, "quick_check|sqlite"), (emptied_long_ago, "an empty file")])
def test_a_damaged_store_is_refused_naming_the_file_and_the_way_back(sound_store, tmp_path, damage, why):
    root = damaged_project(tmp_path, sound_store, damage)
    db = root / "mlflow" / "mlflow.db"
    before = db.read_bytes()
    with pytest.raises(tracking.StoreDamagedError, match=rf"{db} is damaged \(({why}).*backup.*migrate-store"):
        tracking.setup(MlflowConfig(), ProjectPaths.at(root))
    assert db.read_bytes() == before  # not recreated, not touched


@pytest.mark.integration  # two genloop processes
def test_the_commands_say_it_in_one_line(sound_store, tmp_path):
    root = damaged_project(tmp_path, sound_store, garbage_header)
    for args in (["promote", "genloop-vae", "1"], ["migrate-store", "--to", "sqlite:///x.db"]):
        done = subprocess.run([GENLOOP, "--root", str(root), *args], capture_output=True, text=True, timeout=120)
        assert done.returncode == 1 and "Traceback" not in done.stderr, done.stderr
        last = done.stderr.strip().splitlines()[-1]
        assert last.startswith("error:") and "mlflow.db is damaged" in last, done.stderr


def test_a_sound_store_and_a_missing_one_pass(sound_store, tmp_path):
    tracking._sound.discard(sound_store.resolve())
    tracking.check_sqlite_store(sound_store)
    tracking.check_sqlite_store(tmp_path / "none.db")  # MLflow creates it
    fresh = tmp_path / "being-created.db"
    fresh.touch()  # a 0-byte file just made: another process may be creating the store right now
    tracking.check_sqlite_store(fresh)


def test_a_hot_journal_from_a_killed_writer_is_rolled_back_not_called_damage(sound_store, tmp_path):
    """A training SIGKILLed mid-write leaves mlflow.db-journal beside the store: SQLite's recovery, which a
    read-only check cannot run, restores the last committed state."""
    import sqlite3

    work = tmp_path / "work.db"
    shutil.copy(sound_store, work)
    writer = sqlite3.connect(work, isolation_level=None)
    writer.execute("PRAGMA cache_size=1")  # spill changed pages into the file before the commit, as a crash would
    runs_before = writer.execute("SELECT count(*) FROM runs").fetchone()[0]
    writer.execute("BEGIN")
    writer.execute("DELETE FROM runs")
    crashed = tmp_path / "crashed" / "mlflow.db"
    crashed.parent.mkdir()
    shutil.copy(work, crashed)  # the file and its journal as the killed process left them
    shutil.copy(work.with_name("work.db-journal"), crashed.with_name("mlflow.db-journal"))
    writer.execute("ROLLBACK")
    writer.close()

    tracking.check_sqlite_store(crashed)  # no StoreDamagedError

    assert not crashed.with_name("mlflow.db-journal").exists()
    with sqlite3.connect(crashed) as conn:
        assert conn.execute("SELECT count(*) FROM runs").fetchone()[0] == runs_before > 0
