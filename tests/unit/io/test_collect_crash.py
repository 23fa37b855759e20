"""A collect killed (SIGKILL) at any point of replacing data/ and data.dvc leaves, after the next
command, either the old pair or the new one, consistent for `dvc status`, and no leftovers."""
from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from genloop.io import dvcio
from genloop.stages.collect import collect
from genloop.config import CollectConfig
from genloop.io.crashpoints import KILL_ENV
from genloop.io.datacommit import recover
from genloop.paths import ProjectPaths

pytestmark = pytest.mark.skipif(
    shutil.which(dvcio._dvc_exe()) is None or shutil.which("git") is None, reason="needs dvc and git"
)
GENLOOP = str(Path(sys.executable).with_name("genloop"))
REPO_ROOT = Path(__file__).resolve().parents[3]


@pytest.fixture(scope="module")
def versioned(tmp_path_factory) -> Path:
    """A git + DVC project (the repo's ignore files) with the digits collected and committed."""
    root = tmp_path_factory.mktemp("versioned")
    for name in (".gitignore", ".dvcignore"):
        shutil.copy(REPO_ROOT / name, root / name)
    (root / "params.yaml").write_text("")
    subprocess.run(["git", "init", "-q"], cwd=root, check=True)
    dvcio.run_dvc(["init", "-q"], cwd=root)
    collect(CollectConfig(source="digits"), ProjectPaths.at(root))
    subprocess.run(["git", "add", "-A"], cwd=root, check=True)
    subprocess.run(["git", "commit", "-qm", "digits"], cwd=root, check=True)
    return root


def copy_of(versioned: Path, tmp_path: Path) -> ProjectPaths:
    root = tmp_path / "project"
    shutil.copytree(versioned, root, symlinks=True)
    return ProjectPaths.at(root)


def dvc_status_clean(root: Path) -> bool:
    return dvcio.run_dvc(["status", "-q", "data.dvc"], cwd=root, check=False).returncode == 0


def git_status(root: Path) -> str:
    return subprocess.run(["git", "status", "--porcelain"], cwd=root, capture_output=True, text=True).stdout


@pytest.mark.parametrize("point,outcome", [
    ("before_data_swap", "old"),
    ("after_old_data_moved", "old"),
    ("after_data_swap", "old"),
    ("after_dvc_swap", "new"),
])
def test_killed_collect_leaves_old_or_new_pair_after_the_next_command(versioned, tmp_path, point, outcome):
    paths = copy_of(versioned, tmp_path)
    old_dvc = paths.data_dvc.read_bytes()
    extra = tmp_path / "extra.npz"
    np.savez(extra, images=np.full((120, 8, 8), 7, np.uint8), labels=np.zeros(120, np.int64))

    killed = subprocess.run([GENLOOP, "--root", str(paths.root), "collect", "--source", f"npz:{extra}"],
                            env={**os.environ, KILL_ENV: point}, capture_output=True, text=True)
    assert killed.returncode == -signal.SIGKILL, killed.stderr

    after = subprocess.run([GENLOOP, "--root", str(paths.root), "collect", "--source", "nothing"],
                           capture_output=True, text=True)  # the next command (it fails on the bad source)
    assert after.returncode == 1 and "unknown source" in after.stderr

    assert dvc_status_clean(paths.root)
    rows = len(np.load(paths.images))
    assert rows == {"old": 1797, "new": 120}[outcome]
    assert (paths.data_dvc.read_bytes() == old_dvc) == (outcome == "old")
    assert not (paths.root / ".genloop").exists()
    assert git_status(paths.root) == ("" if outcome == "old" else " M data.dvc\n")


def test_recover_removes_temp_folders_of_older_versions(versioned, tmp_path):
    paths = copy_of(versioned, tmp_path)
    (paths.root / ".data.abc123.tmp").mkdir()
    (paths.root / ".data.abc123.tmp" / "images.npy").write_bytes(b"half")

    assert recover(paths) == "removed leftovers of an interrupted collect"
    assert not (paths.root / ".data.abc123.tmp").exists()
    assert recover(paths) is None  # nothing left to do
    assert dvc_status_clean(paths.root)


def test_collect_records_the_same_dvc_version_as_dvc_add(versioned, tmp_path):
    """The data.dvc written beside the staged data is what `dvc add data` records for it."""
    paths = copy_of(versioned, tmp_path)
    extra = tmp_path / "extra.npz"
    np.savez(extra, images=np.full((5, 8, 8), 9, np.uint8))
    result = collect(CollectConfig(source=f"npz:{extra}"), paths)
    ours = paths.data_dvc.read_bytes()

    dvcio.run_dvc(["add", "-q", "data"], cwd=paths.root)
    assert paths.data_dvc.read_bytes() == ours
    assert result.dvc_hash == dvcio.read_dvc_hash(paths.data_dvc)
    shutil.rmtree(paths.data)
    dvcio.run_dvc(["checkout", "-q", "data.dvc"], cwd=paths.root)  # the cache holds the new version
    assert len(np.load(paths.images)) == 5


@pytest.mark.parametrize("point", ["after_old_data_moved", "after_data_swap"])
def test_ctrl_c_during_the_swap_finishes_it_and_says_the_new_data_set_is_in_place(versioned, tmp_path, point):
    """SIGINT (Ctrl-C) mid-swap: no "Aborted!" over a half-swapped pair; both hold the new data set at once,
    before any next command recovers anything."""
    import time

    from genloop.io.crashpoints import PAUSE_ENV, PAUSE_SECONDS_ENV
    from genloop.io.datacommit import JOURNAL, work_dir

    paths = copy_of(versioned, tmp_path)
    extra = tmp_path / "extra.npz"
    np.savez(extra, images=np.full((120, 8, 8), 7, np.uint8), labels=np.zeros(120, np.int64))
    proc = subprocess.Popen([GENLOOP, "--root", str(paths.root), "collect", "--source", f"npz:{extra}"],
                            env={**os.environ, PAUSE_ENV: point, PAUSE_SECONDS_ENV: "4"},
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while not (work_dir(paths) / JOURNAL).exists():  # the swap has begun: it pauses at the point now
        assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()
        time.sleep(0.05)
    proc.send_signal(signal.SIGINT)
    _, stderr = proc.communicate(timeout=120)

    assert proc.returncode == 1 and "Aborted" not in stderr and "Traceback" not in stderr, stderr
    assert "both hold the new data set" in stderr, stderr
    assert len(np.load(paths.images)) == 120 and dvc_status_clean(paths.root)
    assert not (paths.root / ".genloop").exists()
