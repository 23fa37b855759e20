"""One writer per project (genloop.io.lock): a second genloop command fails at once naming the holder,
or queues behind it with --wait; the lock is re-entrant in one process and outlives no process."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import pytest

from genloop.errors import ProjectBusyError
from genloop.io.lock import LOCK_NAME, StaleLockWarning, project_lock, read_holder

GENLOOP = str(Path(sys.executable).with_name("genloop"))


def start_collect(root: Path, *args: str, pause_s: float = 0.0) -> subprocess.Popen:
    env = {**os.environ}
    if pause_s:
        env.update(GENLOOP_TEST_PAUSE_AT="before_data_swap", GENLOOP_TEST_PAUSE_S=str(pause_s))
    return subprocess.Popen([GENLOOP, "--root", str(root), *args, "collect", "--source", "digits", "--no-dvc"],
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def wait_for_holder(root: Path, pid: int, timeout: float = 60.0) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        holder = read_holder(root / LOCK_NAME)
        if holder.get("pid") == pid:
            return holder
        time.sleep(0.1)
    raise AssertionError(f"process {pid} never took the lock")


@pytest.mark.integration  # several seconds: two genloop processes, or a live server under load
def test_second_command_fails_at_once_naming_the_holder_and_the_first_completes(tmp_path):
    (tmp_path / "params.yaml").write_text("")
    first = start_collect(tmp_path, pause_s=20)
    holder = wait_for_holder(tmp_path, first.pid)

    second = subprocess.run([GENLOOP, "--root", str(tmp_path), "collect", "--source", "digits", "--no-dvc"],
                            capture_output=True, text=True)
    first_still_running = first.poll() is None
    out, err = first.communicate(timeout=120)

    assert second.returncode == 1
    assert first_still_running  # the second did not wait for the first
    assert "Traceback" not in second.stderr
    message = second.stderr.strip().splitlines()[-1]
    assert f"pid {first.pid}" in message and "collect --source digits" in message
    assert holder["since"] in message
    assert first.returncode == 0, err
    images = np.load(tmp_path / "data" / "images.npy")
    assert images.shape == (1797, 8, 8)
    assert len((tmp_path / "data" / "manifest.csv").read_text().splitlines()) == 1798
    assert read_holder(tmp_path / LOCK_NAME) == {}  # released: nothing held any more
    assert not (tmp_path / ".genloop").exists()


@pytest.mark.integration  # several seconds: two genloop processes, or a live server under load
def test_second_command_with_wait_runs_after_the_first(tmp_path):
    (tmp_path / "params.yaml").write_text("")
    first = start_collect(tmp_path, pause_s=3)
    wait_for_holder(tmp_path, first.pid)
    second = start_collect(tmp_path, "--wait", "120")
    results = [p.communicate(timeout=180) for p in (first, second)]
    assert (first.returncode, second.returncode) == (0, 0), results


def test_lock_is_reentrant_in_one_process_and_exclusive_across_processes(tmp_path):
    probe = [sys.executable, "-c", "import sys; from genloop.io.lock import project_lock\n"
             "try:\n    project_lock(sys.argv[1]).__enter__()\nexcept Exception as e:\n    print(e); sys.exit(3)",
             str(tmp_path)]
    with project_lock(tmp_path, "outer"):
        with project_lock(tmp_path, "inner (the flow inside `genloop run`)"):
            assert read_holder(tmp_path / LOCK_NAME)["command"] == "outer"
        other = subprocess.run(probe, capture_output=True, text=True)
        assert other.returncode == 3 and f"pid {os.getpid()}" in other.stdout and "outer" in other.stdout
    assert subprocess.run(probe, capture_output=True, text=True).returncode == 0


def test_lock_of_a_dead_process_is_taken_over_with_a_warning(tmp_path):
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    import socket

    (tmp_path / LOCK_NAME).write_text(json.dumps({"pid": int(dead.stdout), "host": socket.gethostname(),
                                                  "command": "genloop train", "since": "2026-01-01T00:00:00+00:00"}))
    with pytest.warns(StaleLockWarning, match=rf"pid {int(dead.stdout)} .*genloop train.*no longer running"):
        with project_lock(tmp_path, "genloop clean"):
            assert read_holder(tmp_path / LOCK_NAME)["command"] == "genloop clean"
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # released cleanly: no warning next time
        with project_lock(tmp_path, "genloop clean"):
            pass


def test_busy_error_is_a_user_error():
    from genloop.errors import GenloopError

    assert issubclass(ProjectBusyError, GenloopError)


def test_the_stale_lock_warning_names_the_line_that_took_the_lock(tmp_path):
    import socket

    (tmp_path / LOCK_NAME).write_text(json.dumps({"pid": 2**22 + 7, "host": socket.gethostname(),
                                                  "command": "genloop train", "since": "2026-01-01T00:00:00+00:00"}))
    with pytest.warns(StaleLockWarning) as seen:
        with project_lock(tmp_path, "genloop clean"):
            pass
    assert seen[0].filename == __file__  # not contextlib.py


@pytest.fixture()
def read_only_folder(tmp_path):
    """A project folder this process cannot write: chmod for a normal user, the immutable flag for root."""
    folder = tmp_path / "project"
    folder.mkdir()
    folder.chmod(0o555)
    immutable = os.access(folder, os.W_OK) and subprocess.run(["chattr", "+i", str(folder)],
                                                              capture_output=True).returncode == 0
    try:
        if os.access(folder, os.W_OK) and not immutable:
            pytest.skip("cannot make a folder read-only for this user here")
        if immutable:
            try:
                (folder / "probe").touch()
                pytest.skip("the immutable flag does not stop this user here")
            except OSError:
                pass
        yield folder
    finally:
        if immutable:
            subprocess.run(["chattr", "-i", str(folder)], check=True)
        folder.chmod(0o755)


def test_a_read_only_project_folder_is_one_clear_error_naming_it(read_only_folder):
    from genloop.errors import GenloopError

    with pytest.raises(GenloopError, match=rf"cannot write to {read_only_folder} .*make it writable"):
        with project_lock(read_only_folder, "genloop clean"):
            pass
    done = subprocess.run([GENLOOP, "--root", str(read_only_folder), "clean"], capture_output=True, text=True)
    assert done.returncode == 1 and "Traceback" not in done.stderr, done.stderr
    assert done.stderr.strip().startswith("error: cannot write to"), done.stderr
