"""The DVC adapter: version ``data/`` and read back the hashes DVC recorded."""
from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path

import yaml

from genloop.errors import GenloopError
from genloop.io.telemetry import quiet_env


LOCK_FILE = "dvc.lock"


class DvcError(GenloopError, RuntimeError):
    pass


def dvc_env(base: Mapping[str, str] | None = None) -> dict[str, str]:
    """DVC reports analytics unless told not to; offline that fails noisily."""
    return {**quiet_env(base), "DVC_NO_ANALYTICS": "1"}


def _dvc_exe() -> str:
    beside = Path(sys.executable).with_name("dvc")
    return str(beside) if beside.exists() else "dvc"


def run_dvc(args: list[str], cwd: Path, check: bool = True,
            env: Mapping[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """Run ``dvc ARGS`` in ``cwd`` (environment ``env``, default this process's); raise DvcError on failure."""
    proc = subprocess.run([_dvc_exe(), *args], cwd=cwd, env=dvc_env(env), capture_output=True, text=True)
    if check and proc.returncode != 0:
        raise DvcError(f"`dvc {' '.join(args)}` failed in {cwd}:\n{proc.stdout}{proc.stderr}")
    return proc


def is_dvc_repo(root: Path) -> bool:
    return (root / ".dvc").is_dir()


def read_dvc_hash(dvc_file: Path) -> str:
    if not dvc_file.exists():
        return "untracked"
    meta = yaml.safe_load(dvc_file.read_text()) or {}
    try:
        return str(meta["outs"][0]["md5"])
    except (KeyError, IndexError, TypeError):
        raise DvcError(f"{dvc_file}: no outs[0].md5 entry; is it a DVC file?") from None


def dvc_commit(root: Path) -> bool:
    """Record outputs produced outside ``dvc repro`` (by the Prefect flow) in ``dvc.lock``, if there is one.

    dvc.lock is not in git: it records this machine's outputs (MLflow run ids, CPU-dependent weights),
    which no other clone has. A clone writes its own with its first ``dvc repro`` (or ``dvc commit -f``);
    until then the flow writes none, so ``make run`` on a fresh clone leaves ``git status`` clean.
    """
    if not (root / LOCK_FILE).exists():
        return False
    run_dvc(["commit", "--force", "--quiet"], cwd=root)
    return True


def default_remote(root: Path) -> str | None:
    """The default remote's name (``core.remote`` of .dvc/config, .dvc/config.local or the user's
    config), or None when none is set."""
    proc = run_dvc(["remote", "default"], cwd=root, check=False)
    name = proc.stdout.strip()
    return name if proc.returncode == 0 and name and " " not in name else None


def dir_md5(folder: Path) -> str:
    """The ``.dir`` md5 ``dvc add`` would record for ``folder``, computed here (DVC 3: md5 of the sorted
    JSON list of each file's md5 and relative path), to check pulled data independently of DVC."""
    entries = []
    for path in sorted(folder.rglob("*")):
        if path.is_file():
            digest = hashlib.md5()
            with path.open("rb") as fh:
                for block in iter(lambda: fh.read(1 << 20), b""):
                    digest.update(block)
            entries.append({"md5": digest.hexdigest(), "relpath": path.relative_to(folder).as_posix()})
    entries.sort(key=lambda e: e["relpath"])
    return hashlib.md5(json.dumps(entries, sort_keys=True).encode("utf-8")).hexdigest() + ".dir"
