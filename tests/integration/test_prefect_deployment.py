"""`make prefect-up`'s script, then `prefect deployment run ... --watch` through the real CLI."""
from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from project_copy import TINY_PARAMS, copy_project

pytestmark = pytest.mark.integration

BIN = Path(sys.executable).parent
YEARLY = "0 3 1 1 *"  # a schedule that will not fire during the test


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def served_project(tmp_path_factory):
    root = copy_project(tmp_path_factory.mktemp("served"), {**TINY_PARAMS, "schedule": {"cron": YEARLY}})
    port = free_port()
    env = {**os.environ, "PREFECT_HOME": str(root / ".prefect"), "PREFECT_PORT": str(port),
           "GENLOOP_VENV_BIN": str(BIN)}
    script = root / "flows" / "prefect-local.sh"
    up = subprocess.run([str(script), "up"], env=env, capture_output=True, text=True, timeout=240)
    assert up.returncode == 0, up.stdout + up.stderr
    env["PREFECT_API_URL"] = f"http://127.0.0.1:{port}/api"
    try:
        yield root, env
    finally:
        subprocess.run([str(script), "down"], env=env, capture_output=True, timeout=60)


def deployment_run(env, *params: str, name: str = "genloop-pipeline/local") -> subprocess.CompletedProcess[str]:
    args = [str(BIN / "prefect"), "deployment", "run", name, "--watch", "--watch-timeout", "300"]
    for p in params:
        args += ["-p", p]
    return subprocess.run(args, env=env, capture_output=True, text=True, timeout=360)


def test_deployment_run_completes_and_leaves_mlflow_runs(served_project):
    from mlflow import MlflowClient

    root, env = served_project
    overrides = json.dumps({"train.vae.images": 1200, "train.gan.images": 1200, "evaluate.classifier_epochs": 1})
    proc = deployment_run(env, f"overrides={overrides}")
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "Completed" in proc.stdout
    client = MlflowClient(tracking_uri=f"sqlite:///{root}/mlflow/mlflow.db")
    runs = client.search_runs([client.get_experiment_by_name("genloop").experiment_id])
    parents = [r for r in runs if r.data.tags.get("genloop.runner") == "prefect"]
    assert len(parents) == 1
    children = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == parents[0].info.run_id]
    assert sorted(r.data.tags["genloop.model"] for r in children) == ["gan", "vae"]
    assert (root / "models" / "gan_generator.onnx").exists()


def test_a_failing_stage_fails_the_deployment_run(served_project):
    root, env = served_project
    proc = deployment_run(env, 'overrides={"clean.min_rows": 100000}')
    assert proc.returncode == 1
    assert "Failed" in proc.stdout


def test_the_cron_in_params_yaml_schedules_the_loop(served_project):
    _, env = served_project
    proc = subprocess.run([str(BIN / "prefect"), "deployment", "inspect", "genloop-loop/scheduled"],
                          env=env, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert YEARLY in proc.stdout
    assert "'active': True" in proc.stdout or '"active": true' in proc.stdout


def test_sweep_deployment_runs_trials_on_dask(served_project):
    """After the pipeline run above prepared the data: two trials, each one MLflow child run."""
    from mlflow import MlflowClient

    root, env = served_project
    assert (root / "outputs" / "augment").exists(), "runs after test_deployment_run_completes_and_leaves_mlflow_runs"
    overrides = json.dumps({"train.vae.images": 1200, "evaluate.classifier_epochs": 1})
    proc = deployment_run(env, f"overrides={overrides}", 'space={"train.vae.beta": [0.5, 2.0]}',
                          name="genloop-sweep/local")
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    client = MlflowClient(tracking_uri=f"sqlite:///{root}/mlflow/mlflow.db")
    experiment = client.get_experiment_by_name("genloop").experiment_id
    [parent] = client.search_runs([experiment], filter_string="tags.`genloop.runner` = 'prefect-sweep'")
    children = client.search_runs([experiment], filter_string=f"tags.`mlflow.parentRunId` = '{parent.info.run_id}'")
    assert sorted(float(c.data.params["train.vae.beta"]) for c in children) == [0.5, 2.0]
    assert [c.data.tags["genloop.sweep_best"] for c in children].count("true") == 1
