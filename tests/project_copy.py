"""A throwaway copy of this repository (a git + DVC repo of its own) for tests that run real tools."""
from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import yaml

REPO_ROOT = Path(__file__).resolve().parents[1]
COPIED = ["src", "flows", "dvc.yaml", "params.yaml", "pyproject.toml", ".dvc/config", ".dvcignore", "data.dvc"]
TINY_PARAMS = {
    "train": {"vae": {"epochs": 1}, "gan": {"epochs": 1}},
    "evaluate": {"classifier_epochs": 1, "kid_subsets": 5},
    "augment": {"copies": 0},
}


def deep_update(base: dict, new: dict) -> dict:
    for key, value in new.items():
        base[key] = deep_update(base.get(key, {}), value) if isinstance(value, dict) else value
    return base


def copy_project(dest: Path, params: dict | None = None) -> Path:
    """Copy the tracked project files into ``dest``, apply ``params`` to params.yaml, commit."""
    for rel in COPIED:
        src = REPO_ROOT / rel
        if src.is_dir():
            shutil.copytree(src, dest / rel, ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
        elif src.exists():
            (dest / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dest / rel)
    merged = deep_update(yaml.safe_load((dest / "params.yaml").read_text()), params or {})
    (dest / "params.yaml").write_text(yaml.safe_dump(merged, sort_keys=False))
    (dest / ".gitignore").write_text("/data\n/mlflow\n/.prefect\n")
    subprocess.run(["git", "init", "-q"], cwd=dest, check=True)
    subprocess.run(["git", "add", "-A"], cwd=dest, check=True)
    subprocess.run(["git", "commit", "-q", "-m", "copy"], cwd=dest, check=True)
    return dest
