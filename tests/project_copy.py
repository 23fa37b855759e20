"""A throwaway copy of this repository (a git + DVC repo of its own) for tests that run real tools.

The copy carries the real ``.gitignore`` (outputs, models and reports stay out of git, as in the
project), and ``project_env`` points ``genloop`` at the copy's own ``src`` so that the code a stage
runs is the code DVC hashed, even while the checkout the venv points at is being edited.
"""
from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import yaml

REPO_ROOT = Path(__file__).resolve().parents[1]
COPIED = ["src", "flows", "dvc.yaml", "params.yaml", "pyproject.toml", ".dvc/config", ".dvc/.gitignore", ".dvcignore",
          "data.dvc",
          ".gitignore", "mlflow/.gitkeep", "reports/.gitkeep"]
TINY_PARAMS = {
    "train": {"vae": {"images": 1000}, "gan": {"images": 1000}},
    "evaluate": {"classifier_epochs": 1, "kid_subsets": 5},
    "augment": {"copies": 0},
}
# Where the loop writes: the sets compared between a `dvc repro` and a flow run.
ARTIFACT_DIRS = ("data", "outputs", "models", "reports")


def deep_update(base: dict, new: dict) -> dict:
    for key, value in new.items():
        base[key] = deep_update(base.get(key, {}), value) if isinstance(value, dict) else value
    return base


def git(root: Path, *args: str) -> str:
    return subprocess.run(["git", *args], cwd=root, check=True, capture_output=True, text=True).stdout


def copy_project(dest: Path, params: dict | None = None, source: Path = REPO_ROOT) -> Path:
    """Copy the tracked project files of ``source`` into ``dest``, apply ``params`` to params.yaml, commit.

    Pass another copy as ``source`` to get exactly its code: this checkout may change in between.
    """
    for rel in COPIED:
        src = source / rel
        if src.is_dir():
            shutil.copytree(src, dest / rel, ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
        elif src.exists():
            (dest / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dest / rel)
    if not (dest / ".gitignore").exists():
        (dest / ".gitignore").write_text("/data\n/mlflow\n/.prefect\n")
    merged = deep_update(yaml.safe_load((dest / "params.yaml").read_text()), params or {})
    (dest / "params.yaml").write_text(yaml.safe_dump(merged, sort_keys=False))
    git(dest, "init", "-q")
    git(dest, "add", "-A")
    git(dest, "commit", "-q", "-m", "copy")
    return dest


def clone_workspace(src: Path, dest: Path) -> Path:
    """A byte-for-byte copy of a project copy (git history, DVC cache, workspace), minus DVC's tmp state."""
    shutil.copytree(src, dest, symlinks=True, dirs_exist_ok=True,
                    ignore=lambda folder, names: ["tmp"] if Path(folder).name == ".dvc" else [])
    return dest


def project_env(root: Path) -> dict[str, str]:
    """The environment for `genloop`/`dvc` subprocesses in a copy: its own ``src`` first on the path."""
    return {**os.environ, "PYTHONPATH": os.pathsep.join([str(root / "src"), str(root)]), "DVC_NO_ANALYTICS": "1"}


def ran_stages(output: str) -> set[str]:
    """The stages ``dvc repro``/``dvc exp run`` said they ran."""
    return set(re.findall(r"Running stage '([\w-]+)'", output))


def artifact_files(root: Path) -> dict[str, Path]:
    """Every file the loop wrote under data/, outputs/, models/ and reports/, by relative path."""
    found = {}
    for top in ARTIFACT_DIRS:
        for path in sorted((root / top).rglob("*")):
            if path.is_file() and path.name not in {".gitkeep", ".gitignore"}:
                found[path.relative_to(root).as_posix()] = path
    return found


# Tiny budgets; no Model Registry (export's registration is MLflow's concern, tested elsewhere).
TINY_DVC_PARAMS = deep_update(deep_update({}, TINY_PARAMS), {"export": {"register_models": False}})


def collect_digits(root: Path) -> None:
    """Recreate data/ the way a fresh clone does: `genloop collect` (same hash as data.dvc)."""
    subprocess.run(["genloop", "collect", "--source", "digits"], cwd=root, env=project_env(root),
                   check=True, capture_output=True, text=True)


def reproduce(root: Path, *args: str) -> str:
    """``dvc repro ARGS`` in a copy; its stdout and stderr together."""
    from genloop.io.dvcio import run_dvc

    proc = run_dvc(["repro", *args], cwd=root, env=project_env(root))
    return proc.stdout + proc.stderr


def commit_all(root: Path, message: str) -> None:
    git(root, "add", "-A")
    git(root, "commit", "-q", "--allow-empty", "-m", message)
