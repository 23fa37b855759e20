"""Team mode for data/: `genloop collect` pushes to the default DVC remote, a second clone pulls
data.dvc's version from it instead of collecting, a failed push is only a warning, and pulled data
with another hash is refused. Real git, DVC and a local-folder remote."""
from __future__ import annotations

import hashlib
import json
import shutil
import subprocess

import pytest
import yaml

from genloop.io.dvcio import run_dvc

from project_copy import TINY_DVC_PARAMS, commit_all, copy_project, git, project_env

pytestmark = pytest.mark.integration

# A source that cannot be read: a clone that collected instead of pulling would fail on it.
UNREADABLE = "collect.source=npz:no-such-file.npz"


def genloop(root, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["genloop", *args], cwd=root, env=project_env(root), capture_output=True, text=True,
                          timeout=300)


def recorded_md5(root) -> str:
    return yaml.safe_load((root / "data.dvc").read_text())["outs"][0]["md5"]


def md5_as_dvc_does(folder) -> str:
    """DVC 3's directory hash, written out here so the check does not rest on genloop's own copy."""
    files = sorted(p for p in folder.rglob("*") if p.is_file())
    entries = [{"md5": hashlib.md5(p.read_bytes()).hexdigest(), "relpath": p.relative_to(folder).as_posix()}
               for p in files]
    return hashlib.md5(json.dumps(entries, sort_keys=True).encode()).hexdigest() + ".dir"


@pytest.fixture(scope="module")
def team(tmp_path_factory):
    """A project with a committed local-folder remote, collected once (which pushed) and committed."""
    base = tmp_path_factory.mktemp("team")
    origin = copy_project(base / "origin", TINY_DVC_PARAMS)
    storage = base / "storage"
    run_dvc(["remote", "add", "-d", "team", str(storage)], cwd=origin, env=project_env(origin))
    commit_all(origin, "dvc remote team")
    collected = genloop(origin, "collect")
    assert collected.returncode == 0, collected.stderr
    commit_all(origin, "collect digits")
    return origin, storage, collected


def clone_of(origin, dest):
    git(dest.parent, "clone", "-q", str(origin), str(dest))
    return dest


def test_collect_pushes_data_to_the_default_remote(team):
    origin, storage, collected = team
    assert "pushed data/ to DVC remote 'team'" in collected.stdout
    stored = [p for p in storage.rglob("*") if p.is_file()]
    assert len(stored) == 3  # images.npy, manifest.csv and the .dir listing
    status = run_dvc(["status", "--cloud", "-q", "data.dvc"], cwd=origin, env=project_env(origin), check=False)
    assert status.returncode == 0, status.stdout + status.stderr


def test_second_clone_pulls_data_with_data_dvc_hash_without_collecting(team, tmp_path):
    origin, _, _ = team
    clone = clone_of(origin, tmp_path / "clone")
    assert not (clone / "data").exists()
    out = genloop(clone, "-S", UNREADABLE, "collect")
    assert out.returncode == 0, out.stderr
    assert "pulled 1797 images" in out.stdout and "from DVC remote 'team'" in out.stdout
    assert "collected" not in out.stdout
    assert md5_as_dvc_does(clone / "data") == recorded_md5(clone) == recorded_md5(origin)
    assert git(clone, "status", "--porcelain") == ""  # data.dvc untouched, data/ ignored
    for name in ("images.npy", "manifest.csv"):
        assert (clone / "data" / name).read_bytes() == (origin / "data" / name).read_bytes()


def test_clone_without_data_in_the_remote_collects_and_warns(team, tmp_path):
    origin, _, _ = team
    clone = clone_of(origin, tmp_path / "clone")
    empty = tmp_path / "empty-storage"
    empty.mkdir()
    run_dvc(["remote", "add", "--local", "-d", "elsewhere", str(empty)], cwd=clone, env=project_env(clone))
    out = genloop(clone, "collect")
    assert out.returncode == 0, out.stderr
    assert "'elsewhere' failed" in out.stderr and "collecting from the source instead" in out.stderr
    assert "collected 1797 images" in out.stdout
    assert recorded_md5(clone) == recorded_md5(origin)  # the digits are deterministic
    assert any(p.is_file() for p in empty.rglob("*"))  # ... and the collect pushed them there


def test_failed_push_is_a_warning_naming_the_remote_not_a_lost_collect(team, tmp_path):
    origin, _, _ = team
    clone = clone_of(origin, tmp_path / "clone")
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("a file where the remote's folder should be")
    run_dvc(["remote", "add", "--local", "-d", "unreachable", str(blocker / "store")], cwd=clone,
            env=project_env(clone))
    out = genloop(clone, "collect", "--source", "digits")
    assert out.returncode == 0, out.stderr
    assert "warning:" in out.stderr and "DVC remote 'unreachable' failed" in out.stderr
    warning = next(line for line in out.stderr.splitlines() if "DVC remote 'unreachable' failed" in line)
    assert "Having any troubles" not in warning and "(ERROR" in warning, warning  # DVC's cause, not its help link
    assert "collected 1797 images" in out.stdout and "pushed" not in out.stdout
    assert md5_as_dvc_does(clone / "data") == recorded_md5(clone)


def test_pulled_data_with_another_hash_is_refused(team, tmp_path):
    origin, storage, _ = team
    clone = clone_of(origin, tmp_path / "clone")
    tampered = tmp_path / "tampered"
    shutil.copytree(storage, tampered)
    listing = next(p for p in tampered.rglob("*.dir"))
    entries = json.loads(listing.read_text())
    manifest = next(e for e in entries if e["relpath"] == "manifest.csv")
    blob = tampered / "files" / "md5" / manifest["md5"][:2] / manifest["md5"][2:]
    blob.chmod(0o644)
    blob.write_text(blob.read_text().replace("digits", "digitz", 1))
    run_dvc(["remote", "add", "--local", "-d", "tampered", str(tampered)], cwd=clone, env=project_env(clone))
    out = genloop(clone, "-S", UNREADABLE, "collect")
    assert out.returncode == 1
    assert "'tampered' has md5" in out.stderr and recorded_md5(origin) in out.stderr
    assert not (clone / "data").exists()
    cached = clone / ".dvc" / "cache" / "files" / "md5" / manifest["md5"][:2] / manifest["md5"][2:]
    assert not cached.exists()  # the tampered bytes are not kept under the genuine md5
    shutil.copyfile(storage / "files" / "md5" / manifest["md5"][:2] / manifest["md5"][2:], blob)  # remote repaired
    again = genloop(clone, "-S", UNREADABLE, "collect")
    assert again.returncode == 0, again.stderr
    assert md5_as_dvc_does(clone / "data") == recorded_md5(origin)


def test_the_flows_collect_step_pulls_in_a_clone_without_data(team, tmp_path):
    """`genloop run`'s collect task (flows.pipeline.collect_task, called as the flow calls it when no
    source is named) pulls too, and hands the pulled version on."""
    from flows.pipeline import collect_task
    from genloop.config import CollectConfig
    from genloop.paths import ProjectPaths

    origin, _, _ = team
    clone = clone_of(origin, tmp_path / "clone")
    result = collect_task.fn(CollectConfig(source="npz:no-such-file.npz"), ProjectPaths.at(clone),
                             pull_if_missing=True)
    assert result.pulled_from == "team" and result.rows == 1797
    assert result.dvc_hash == recorded_md5(origin) == md5_as_dvc_does(clone / "data")


def test_append_in_a_clone_without_data_pulls_then_appends(team, tmp_path):
    origin, storage, _ = team
    clone = clone_of(origin, tmp_path / "clone")
    before = sum(1 for p in storage.rglob("*") if p.is_file())
    out = genloop(clone, "collect", "--mode", "append", "--source", "digits")
    assert out.returncode == 0, out.stderr
    assert "pulled data/ (1797 images) from DVC remote 'team' first" in out.stdout
    assert "now holds 3594" in out.stdout
    assert recorded_md5(clone) != recorded_md5(origin) == md5_as_dvc_does(origin / "data")
    assert md5_as_dvc_does(clone / "data") == recorded_md5(clone)
    assert sum(1 for p in storage.rglob("*") if p.is_file()) > before  # the appended version was pushed
