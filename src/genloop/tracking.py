"""The MLflow adapter: store location, experiment, parent/child runs and lineage tags.

Runs are addressed by id (``parent_run_id``) rather than MLflow's per-thread active-run stack,
because Prefect runs tasks on worker threads.
"""
from __future__ import annotations

import os
import subprocess
import warnings
from pathlib import Path

from genloop import dvcio
from genloop.config import MlflowConfig
from genloop.paths import ProjectPaths

RUNNER_TAG = "genloop.runner"
PIPELINE_KEY_TAG = "genloop.pipeline_key"


def tracking_uri(config: MlflowConfig, root: Path) -> str:
    """Resolve a relative ``sqlite:///file`` against the project root, not the current directory."""
    prefix = "sqlite:///"
    uri = config.tracking_uri
    if uri.startswith(prefix) and not uri.startswith(prefix + "/"):
        db = (root / uri[len(prefix):]).resolve()
        db.parent.mkdir(parents=True, exist_ok=True)
        return prefix + str(db)
    return uri


def setup(config: MlflowConfig, paths: ProjectPaths) -> str:
    """Point MLflow at the project's store and return the experiment id (created on first use)."""
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    import mlflow

    mlflow.set_tracking_uri(tracking_uri(config, paths.root))
    experiment = mlflow.get_experiment_by_name(config.experiment)
    if experiment is None:
        artifacts = Path(config.artifact_root)
        artifacts = artifacts if artifacts.is_absolute() else paths.root / artifacts
        artifacts.mkdir(parents=True, exist_ok=True)
        experiment_id = mlflow.create_experiment(config.experiment, artifact_location=artifacts.resolve().as_uri())
    else:
        experiment_id = experiment.experiment_id
    mlflow.set_experiment(experiment_id=experiment_id)
    return experiment_id


def git_commit(root: Path) -> str:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return "unknown"
    return out.stdout.strip() if out.returncode == 0 else "unknown"


def lineage_tags(paths: ProjectPaths) -> dict[str, str]:
    return {
        "dvc_data_hash": dvcio.read_dvc_hash(paths.data_dvc),
        "git_commit": git_commit(paths.root),
    }


def start_parent_run(config: MlflowConfig, paths: ProjectPaths, runner: str, run_name: str | None = None) -> str:
    """Open the parent run of one pipeline execution; children attach with ``parent_run_id``."""
    from mlflow import MlflowClient

    experiment_id = setup(config, paths)
    client = MlflowClient()
    run = client.create_run(
        experiment_id, run_name=run_name or f"pipeline-{runner}",
        tags={RUNNER_TAG: runner, **lineage_tags(paths)},
    )
    return run.info.run_id


def end_run(run_id: str, status: str = "FINISHED") -> None:
    from mlflow import MlflowClient

    MlflowClient().set_terminated(run_id, status=status)


def parent_for_dvc(config: MlflowConfig, paths: ProjectPaths) -> str:
    """The parent run that groups ``dvc repro`` stages on the same data and commit.

    DVC runs each stage as its own process with nothing shared between them, so the stages find
    their common parent by a key made of the data hash and the git commit.
    """
    from mlflow import MlflowClient

    experiment_id = setup(config, paths)
    tags = lineage_tags(paths)
    key = f"{tags['dvc_data_hash']}@{tags['git_commit']}"
    client = MlflowClient()
    found = client.search_runs(
        [experiment_id],
        filter_string=f"tags.`{PIPELINE_KEY_TAG}` = '{key}' and tags.`{RUNNER_TAG}` = 'dvc'",
        max_results=1, order_by=["attributes.start_time DESC"],
    )
    if found:
        return found[0].info.run_id
    run = client.create_run(
        experiment_id, run_name="pipeline-dvc", tags={RUNNER_TAG: "dvc", PIPELINE_KEY_TAG: key, **tags}
    )
    client.set_terminated(run.info.run_id)
    return run.info.run_id


def log_data_input(run_id: str, paths: ProjectPaths, context: str = "training") -> None:
    """Record the DVC-versioned data set as the run's input, its DVC md5 as the digest."""
    from mlflow import MlflowClient
    from mlflow.data.dataset_source_registry import resolve_dataset_source
    from mlflow.data.meta_dataset import MetaDataset
    from mlflow.entities import DatasetInput, InputTag

    with warnings.catch_warnings():  # the local source is registered twice; either is right
        warnings.simplefilter("ignore", UserWarning)
        source = resolve_dataset_source(str(paths.data))
    dataset = MetaDataset(source=source, name="data", digest=dvcio.read_dvc_hash(paths.data_dvc))
    MlflowClient().log_inputs(run_id, datasets=[DatasetInput(
        dataset=dataset._to_mlflow_entity(), tags=[InputTag("mlflow.data.context", context)],
    )])


def log_data_reports(run_id: str, reports: list[Path | None] | tuple[Path | None, ...],
                     artifact_path: str = "data") -> list[Path]:
    """Attach the data reports (files, or folders such as the Data Docs) to ``run_id`` under
    ``artifact_path``; missing ones are skipped, so callers can pass what a stage may have written."""
    from mlflow import MlflowClient

    client = MlflowClient()
    logged: list[Path] = []
    for report in reports:
        if report is None or not Path(report).exists():
            continue
        report = Path(report)
        if report.is_dir():
            client.log_artifacts(run_id, str(report), artifact_path=f"{artifact_path}/{report.name}")
        else:
            client.log_artifact(run_id, str(report), artifact_path=artifact_path)
        logged.append(report)
    return logged
