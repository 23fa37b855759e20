"""The Prefect flow run tells the story: the task graph is the stage chain, the run carries the
headline metrics, promotion decisions and links as artifacts, genloop's log records reach the run
logs, and the MLflow parent run carries both models' headline metrics. Real Prefect, real MLflow."""
from __future__ import annotations

import asyncio
import subprocess

import pytest

from genloop.io.dvcio import run_dvc
from flows.pipeline import pipeline


pytestmark = pytest.mark.integration

TINY = {"train.vae.images": 1200, "train.gan.images": 1200, "evaluate.classifier_epochs": 1,
        "augment.copies": 0, "evaluate.kid_subsets": 5}
CHAIN = {"collect": set(), "clean": {"collect"}, "augment": {"clean"}, "train-vae": {"augment"},
         "train-gan": {"augment"}, "evaluate": {"train-vae", "train-gan"}, "export": {"evaluate"}}


async def _read_run(flow_run_id):
    from prefect.client.orchestration import get_client
    from prefect.logging.handlers import APILogHandler
    from prefect.client.schemas.filters import (ArtifactFilter, ArtifactFilterFlowRunId, FlowRunFilter,
                                                FlowRunFilterId, LogFilter, LogFilterFlowRunId)

    await APILogHandler.aflush()  # logs go to the API in batches
    async with get_client() as client:
        task_runs = await client.read_task_runs(flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[flow_run_id])))
        artifacts = await client.read_artifacts(
            artifact_filter=ArtifactFilter(flow_run_id=ArtifactFilterFlowRunId(any_=[flow_run_id])))
        logs = await client.read_logs(log_filter=LogFilter(flow_run_id=LogFilterFlowRunId(any_=[flow_run_id])))
    return task_runs, artifacts, logs


def _stage(task_run_name: str) -> str:
    return task_run_name if task_run_name.startswith("train-") else task_run_name.rsplit("-", 1)[0]


def test_flow_run_shows_the_stage_chain_artifacts_logs_and_parent_metrics(tmp_path, prefect_harness):
    from mlflow import MlflowClient

    subprocess.run(["git", "init", "-q"], cwd=tmp_path, check=True)
    run_dvc(["init", "-q"], cwd=tmp_path)
    state = pipeline(project_root=str(tmp_path), overrides=TINY, return_state=True)
    summary = state.result()
    task_runs, artifacts, logs = asyncio.run(_read_run(state.state_details.flow_run_id))

    names = {t.id: _stage(t.name) for t in task_runs}
    upstream = {_stage(t.name): {names[i.id] for inputs in t.task_inputs.values() for i in inputs if hasattr(i, "id")}
                for t in task_runs}
    assert upstream == CHAIN

    by_key = {a.key: a for a in artifacts}
    assert {"genloop-metrics", "genloop-promotion", "genloop-report", "genloop-latent-atlas", "genloop-mlflow-pipeline",
            "genloop-mlflow-vae", "genloop-mlflow-gan"} <= set(by_key)
    table = by_key["genloop-metrics"].data
    assert '"metric": "fid"' in table and '"real floor"' in table
    assert "genloop-vae v1" in by_key["genloop-promotion"].data
    assert f"#/experiments/1/runs/{summary['parent_run_id']}" in by_key["genloop-mlflow-pipeline"].data
    assert any(log.name.startswith("genloop.") for log in logs)  # genloop's own records reach the run logs

    client = MlflowClient(tracking_uri=f"sqlite:///{tmp_path}/mlflow/mlflow.db")
    metrics = client.get_run(summary["parent_run_id"]).data.metrics
    assert {"vae_fid", "gan_fid", "real_floor_fid"} <= set(metrics)
