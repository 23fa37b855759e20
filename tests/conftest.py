# ---- session environment (shared) -------------------------------------------------------------
# Telemetry off (offline it fails noisily) and Prefect state in a throwaway folder, so results of
# earlier real runs never leak into tests as cached states.
import os
import sys
import tempfile
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
VENV_BIN = str(Path(sys.executable).parent)


def pytest_configure(config: pytest.Config) -> None:
    os.environ["PREFECT_HOME"] = tempfile.mkdtemp(prefix="genloop-prefect-")
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    os.environ.setdefault("DO_NOT_TRACK", "true")
    os.environ.setdefault("DVC_NO_ANALYTICS", "1")
    os.environ.setdefault("GIT_PYTHON_REFRESH", "quiet")
    # Subprocesses (dvc stages calling `genloop ...`) must find the venv's entry points.
    if VENV_BIN not in os.environ.get("PATH", "").split(os.pathsep):
        os.environ["PATH"] = VENV_BIN + os.pathsep + os.environ.get("PATH", "")
    # Commits made by tests need an identity even on a machine with no git config.
    for key, value in {"GIT_AUTHOR_NAME": "genloop-tests", "GIT_AUTHOR_EMAIL": "tests@genloop.invalid",
                       "GIT_COMMITTER_NAME": "genloop-tests", "GIT_COMMITTER_EMAIL": "tests@genloop.invalid"}.items():
        os.environ.setdefault(key, value)
