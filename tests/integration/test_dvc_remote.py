"""`dvc push`/`dvc pull` with a local-folder remote: data and every pipeline output come back
byte-identical, and a fresh clone + `dvc pull` has nothing left to reproduce."""
from __future__ import annotations

import hashlib
import shutil

import pytest

from genloop.io.dvcio import run_dvc

from project_copy import ARTIFACT_DIRS, artifact_files, clone_workspace, commit_all, git, project_env, ran_stages

pytestmark = pytest.mark.integration


def dvc(root, *args: str) -> str:
    proc = run_dvc(list(args), cwd=root, env=project_env(root))
    return proc.stdout + proc.stderr


STAMPS = "outputs/.stamps/"  # the flow's local skip stamps (stage commands leave them), not DVC outputs


def digests(root) -> dict[str, str]:
    """Every DVC-tracked file's md5: what push and pull must carry."""
    return {rel: hashlib.md5(path.read_bytes()).hexdigest() for rel, path in artifact_files(root).items()
            if not rel.startswith(STAMPS)}


@pytest.fixture(scope="module")
def pushed(genloop_reproduced, tmp_path_factory):
    """A copy of the reproduced project with a local remote (committed, as a team would) and everything pushed."""
    base = tmp_path_factory.mktemp("remote")
    root = clone_workspace(genloop_reproduced.root, base / "repo")
    remote = base / "storage"
    dvc(root, "remote", "add", "-d", "storage", str(remote))
    commit_all(root, "dvc remote storage")
    dvc(root, "push")
    return root, remote, digests(root)


def test_push_fills_the_remote(pushed):
    root, remote, before = pushed
    assert any(p.is_file() for p in remote.rglob("*"))
    assert "data/images.npy" in before and "reports/metrics.json" in before and "models/vae_decoder.onnx" in before
    assert any(rel.startswith(STAMPS) for rel in artifact_files(root))  # repro left them; they stay local


def test_pull_restores_data_and_outputs_byte_for_byte(pushed):
    root, _, before = pushed
    shutil.rmtree(root / ".dvc" / "cache")
    for top in ARTIFACT_DIRS:
        for path in (root / top).iterdir() if (root / top).exists() else ():
            if path.name != ".gitkeep":
                shutil.rmtree(path) if path.is_dir() else path.unlink()
    assert artifact_files(root) == {}
    dvc(root, "pull")
    assert digests(root) == before


def test_fresh_clone_pull_then_repro_is_up_to_date(pushed, tmp_path):
    root, _, before = pushed
    clone = tmp_path / "clone"
    git(tmp_path, "clone", "-q", str(root), str(clone))
    assert not (clone / "data").exists()
    dvc(clone, "pull")
    assert digests(clone) == before
    out = dvc(clone, "repro")
    assert ran_stages(out) == set()
    assert "up to date" in out
    status = run_dvc(["status", "-q"], cwd=clone, env=project_env(clone), check=False)
    assert status.returncode == 0, status.stdout + status.stderr
