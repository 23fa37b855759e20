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


def dvc_add(root: Path, target: Path) -> str:
    """``dvc add`` a folder of the project (writes ``<target>.dvc`` beside it, and its .gitignore entry in
    a git project) and return the md5 DVC recorded, so a written data set is versioned as ``data/`` is."""
    run_dvc(["add", "--quiet", str(target.relative_to(root))], cwd=root)
    return read_dvc_hash(target.with_name(target.name + ".dvc"))


def locked_stages(root: Path) -> set[str]:
    """The stages dvc.lock holds an entry for (none when there is no dvc.lock)."""
    try:
        lock = yaml.safe_load((root / LOCK_FILE).read_text()) or {}
    except FileNotFoundError:
        return set()
    except yaml.YAMLError as exc:
        raise DvcError(f"{root / LOCK_FILE}: not valid YAML ({exc}); delete it and run `dvc commit -f`") from None
    return set((lock.get("stages") or {}) if isinstance(lock, dict) else {})


def dvc_commit(root: Path, stages: list[str]) -> None:
    """Record outputs produced outside ``dvc repro`` (by the Prefect flow) in ``dvc.lock``, so a
    ``dvc repro`` right after has nothing to do.

    dvc.lock is not in git (DVC refuses a git-ignored one, so it stays untracked): it records this
    machine's outputs (MLflow run ids, CPU-dependent weights), which no other clone has.
    """
    run_dvc(["commit", "--force", "--quiet", *stages], cwd=root)


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


def _file_md5(path: Path) -> str:
    digest = hashlib.md5()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def cache_dir(root: Path) -> Path:
    """The DVC cache's objects folder (``dvc cache dir``; DVC 3 keeps md5 objects under files/md5)."""
    proc = run_dvc(["cache", "dir"], cwd=root, check=False)
    base = Path(proc.stdout.strip()) if proc.returncode == 0 and proc.stdout.strip() else root / ".dvc" / "cache"
    return (base if base.is_absolute() else root / base) / "files" / "md5"


def purge_unverified(root: Path, dir_md5: str) -> list[Path]:
    """Remove from the DVC cache the objects of directory ``dir_md5`` whose bytes do not hash to their name
    (a tampered remote's, fetched under the genuine md5): otherwise DVC trusts them, `dvc status` says up to
    date and every later checkout or pull returns them. Returns what was removed."""
    objects = cache_dir(root)
    listing = objects / dir_md5[:2] / dir_md5[2:]
    if not listing.is_file():
        return []
    removed = []
    if _file_md5(listing) != dir_md5.removesuffix(".dir"):
        entries = []
        removed.append(listing)
    else:
        try:
            entries = json.loads(listing.read_text())
        except ValueError:
            entries = []
            removed.append(listing)
    for entry in entries if isinstance(entries, list) else []:
        md5 = str(entry.get("md5", ""))
        blob = objects / md5[:2] / md5[2:]
        if len(md5) == 32 and blob.is_file() and _file_md5(blob) != md5:
            removed.append(blob)
    for path in removed:
        path.chmod(0o644)  # DVC makes cache objects read-only
        path.unlink()
    return removed
