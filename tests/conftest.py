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


INTEGRATION_DIR = Path(__file__).resolve().parent / "integration"


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Everything under tests/integration/ is an integration test (make test-fast skips it), marked or not."""
    for item in items:
        if INTEGRATION_DIR in Path(str(item.path)).parents:
            item.add_marker(pytest.mark.integration)


@pytest.fixture(autouse=True)
def _genloop_logger_restored():
    """Each test leaves the ``genloop`` logger as it found it: a flow run in-process or
    ``route_genloop_logs`` attaches Prefect's handlers, and a later test's caplog would see every
    record twice."""
    import logging

    logger = logging.getLogger("genloop")
    handlers, level, propagate = list(logger.handlers), logger.level, logger.propagate
    yield
    logger.handlers[:] = handlers
    logger.setLevel(level)
    logger.propagate = propagate


PREFECT_HOME = pytest.StashKey[str]()


def pytest_configure(config: pytest.Config) -> None:
    os.environ["PREFECT_HOME"] = config.stash[PREFECT_HOME] = tempfile.mkdtemp(prefix="genloop-prefect-")
    # Team mode's servers (make services-up exports these) are no place for test runs.
    for key in ("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI", "PREFECT_API_URL"):
        os.environ.pop(key, None)
    from genloop.io.telemetry import switch_off

    switch_off()
    # Subprocesses (dvc stages calling `genloop ...`) must find the venv's entry points.
    if VENV_BIN not in os.environ.get("PATH", "").split(os.pathsep):
        os.environ["PATH"] = VENV_BIN + os.pathsep + os.environ.get("PATH", "")
    # Commits made by tests need an identity even on a machine with no git config.
    for key, value in {"GIT_AUTHOR_NAME": "genloop-tests", "GIT_AUTHOR_EMAIL": "tests@genloop.invalid",
                       "GIT_COMMITTER_NAME": "genloop-tests", "GIT_COMMITTER_EMAIL": "tests@genloop.invalid"}.items():
        os.environ.setdefault(key, value)


# ---- tiny trained projects (test_train, test_evaluate, test_export) -----------------------------
# Self-contained: the digits are collected, cleaned and augmented once per session; each test module
# then copies them into its own folder with its own MLflow store (sqlite + artifacts in that
# folder), so modules never see each other's runs or registered models.
import shutil as _genloop_shutil
from dataclasses import dataclass as _genloop_dataclass, field as _genloop_field
from typing import Any as _GenloopAny

GENLOOP_TINY_OVERRIDES = {
    "train.vae.images": 2000, "train.gan.images": 2000, "evaluate.classifier_epochs": 2,
    "augment.copies": 0, "train.threads": 2, "evaluate.kid_subsets": 10,
}


def genloop_tiny_params(root: Path, overrides: dict | None = None):
    """Tiny-epoch ``Params`` (no params.yaml needed) whose MLflow store lives under ``root``."""
    from genloop.config import load_params

    return load_params(root / "params.yaml", {
        **GENLOOP_TINY_OVERRIDES,
        "mlflow.tracking_uri": f"sqlite:///{root}/mlflow/mlflow.db",
        "mlflow.artifact_root": str(root / "mlflow" / "artifacts"),
        **(overrides or {}),
    })


@_genloop_dataclass
class GenloopTinyProject:
    root: Path
    paths: _GenloopAny
    params: _GenloopAny
    overrides: dict = _genloop_field(default_factory=dict)
    results: dict = _genloop_field(default_factory=dict)  # kind -> genloop.stages.train.TrainResult

    def params_with(self, overrides: dict):
        """This project's params with more ``load_params`` overrides (dotted keys) on top."""
        return genloop_tiny_params(self.root, {**self.overrides, **overrides})

    @property
    def tracking_uri(self) -> str:
        return f"sqlite:///{self.root}/mlflow/mlflow.db"

    def client(self):
        from mlflow import MlflowClient

        return MlflowClient(tracking_uri=self.tracking_uri, registry_uri=self.tracking_uri)


@pytest.fixture(scope="session")
def genloop_prepared_data(tmp_path_factory) -> Path:
    """A project folder holding collected, cleaned and augmented digits (no training, no MLflow)."""
    from genloop.stages.augment import augment
    from genloop.stages.clean import clean
    from genloop.stages.collect import collect
    from genloop.config import CollectConfig
    from genloop.paths import ProjectPaths

    root = tmp_path_factory.mktemp("genloop-prepared")
    params = genloop_tiny_params(root)
    paths = ProjectPaths.at(root)
    collect(CollectConfig(source="digits"), paths, version_with_dvc=False)
    clean(params.clean, paths)
    augment(params.augment, paths, params.seed)
    return root


@pytest.fixture(scope="module")
def genloop_mlflow_env():
    """Telemetry off; MLflow's process-wide tracking URI and experiment restored after the module."""
    import mlflow

    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MLFLOW_DISABLE_TELEMETRY", "true")
        mp.delenv("MLFLOW_TRACKING_URI", raising=False)
        mp.delenv("MLFLOW_EXPERIMENT_ID", raising=False)
        try:
            yield mp
        finally:
            mlflow.set_tracking_uri(None)  # then the context puts the environment back


@pytest.fixture(scope="module")
def genloop_tiny_project(genloop_prepared_data, genloop_mlflow_env, tmp_path_factory):
    """Factory: ``make(name, overrides=None, train=("vae", "gan"))`` -> a ``GenloopTinyProject``
    with a private copy of the prepared data and (unless ``train=()``) both models trained with
    no explicit parent run, so each takes the DVC-style parent from ``tracking.parent_for_dvc``."""
    from genloop.paths import ProjectPaths
    from genloop.stages.train import train_model

    def make(name: str = "project", overrides: dict | None = None,
             train: tuple[str, ...] = ("vae", "gan")) -> GenloopTinyProject:
        root = tmp_path_factory.mktemp(name)
        for rel in ("data", "outputs/clean", "outputs/augment", "reports"):
            _genloop_shutil.copytree(genloop_prepared_data / rel, root / rel)
        project = GenloopTinyProject(root, ProjectPaths.at(root), genloop_tiny_params(root, overrides),
                                     overrides=dict(overrides or {}))
        for kind in train:
            project.results[kind] = train_model(kind, project.params, project.paths, parent_run_id=None)
        return project

    return make


# ---- DVC projects (test_dvc_*.py) -------------------------------------------------------------
# One tiny copy of the repository, collected and `dvc repro`-ed once per session with dvc.lock
# committed, as a user would. Tests only read it; those that change things work on
# `project_copy.clone_workspace` copies of it.
@_genloop_dataclass
class GenloopReproduced:
    root: Path
    first_repro: str  # what the first `dvc repro` printed


@pytest.fixture(scope="session")
def genloop_reproduced(tmp_path_factory) -> GenloopReproduced:
    from project_copy import TINY_DVC_PARAMS, collect_digits, commit_all, copy_project, reproduce

    root = copy_project(tmp_path_factory.mktemp("dvc-reproduced"), TINY_DVC_PARAMS)
    collect_digits(root)
    first = reproduce(root)
    commit_all(root, "dvc repro")
    return GenloopReproduced(root, first)


# ---- Prefect test harness (flows: caching, loop, retries, sweep) ----------------------------------
# One temporary Prefect server for the whole session (~16 s to start), shared by the flow tests.
@pytest.fixture(scope="session")
def prefect_harness():
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=120):
        yield


def pytest_unconfigure(config: pytest.Config) -> None:
    """Remove the session's Prefect home (its database, about 6 MB): every run left one in the temp folder."""
    import shutil

    home = config.stash.get(PREFECT_HOME, None)
    if home:
        shutil.rmtree(home, ignore_errors=True)
