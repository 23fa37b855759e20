"""Team mode on real services: PostgreSQL, an MLflow tracking server and a Prefect server started by
``genloop.io.services`` (as ``make services-up`` does), shared by several project clones at once.

The services live in a throwaway hub folder; each clone reaches them only through the environment
that ``up`` returns (MLFLOW_TRACKING_URI, PREFECT_API_URL), as a teammate's shell would after
``make services-up``.
"""
from __future__ import annotations

import json
import re
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

import pytest

from project_copy import TINY_PARAMS, clone_workspace, commit_all, copy_project, deep_update, project_env

pytestmark = [pytest.mark.integration, pytest.mark.timeout(1800)]

PARENT_RUN = re.compile(r"parent run ([0-9a-f]{32})")
SWEEP_PARENT = re.compile(r"sweep parent ([0-9a-f]{32})")
MODEL_NAMES = ("genloop-vae", "genloop-gan")


@pytest.fixture(scope="session")
def team_services():
    """The services of one hub folder for the session, stopped and removed afterwards."""
    from genloop.io import services

    try:
        services.ensure_postgres()
    except services.ServicesError as exc:
        pytest.skip(f"PostgreSQL is not installed and cannot be installed here: {exc}")
    hub = Path(tempfile.mkdtemp(prefix="genloop-team-"))
    hub.chmod(0o755)  # run as root, PostgreSQL runs as the postgres user, which must reach hub/.services/pg
    try:
        env = services.up(hub)
        yield hub, env
    finally:
        services.down(hub)
        shutil.rmtree(hub, ignore_errors=True)


def team_env(root: Path, services_env: dict[str, str], **extra: str) -> dict[str, str]:
    # Each clone keeps its own Prefect client state, as on a teammate's machine.
    return {**project_env(root), **services_env, "PREFECT_HOME": str(root / ".prefect"), **extra}


def start(args: list[str], root: Path, env: dict[str, str], log: Path) -> subprocess.Popen:
    out = open(log, "w")
    return subprocess.Popen(["genloop", *args], cwd=root, env=env, stdout=out, stderr=subprocess.STDOUT)


def finish(proc: subprocess.Popen, log: Path, timeout: float) -> str:
    proc.wait(timeout=timeout)
    return log.read_text()


def client_for(uri: str):
    """A client of the server; models:/ downloads (promotion.download_onnx) go there too."""
    import mlflow
    from mlflow import MlflowClient

    mlflow.set_tracking_uri(uri)  # genloop_mlflow_env puts it back after the module
    mlflow.set_registry_uri(uri)
    return MlflowClient(tracking_uri=uri, registry_uri=uri)


def children(client, experiment_id: str, parent: str):
    return client.search_runs([experiment_id], filter_string=f"tags.`mlflow.parentRunId` = '{parent}'")


def local_mlflow_files(root: Path) -> list[Path]:
    return [p for p in (root / "mlflow").rglob("*") if p.is_file() and p.name != ".gitkeep"]


def prefect_flow_runs(api: str) -> list[tuple[str, str]]:
    """(flow name, state type) of every flow run the Prefect server holds."""
    import httpx

    flows = {f["id"]: f["name"] for f in httpx.post(f"{api}/flows/filter", json={}, timeout=30).json()}
    runs = httpx.post(f"{api}/flow_runs/filter", json={}, timeout=30).json()
    return [(flows.get(r["flow_id"], "?"), r["state_type"]) for r in runs]


def test_two_clones_and_a_sweep_at_once_share_the_tracking_and_prefect_servers(team_services, genloop_mlflow_env,
                                                                               tmp_path):
    from genloop.io import promotion

    hub, services_env = team_services
    uri, api = services_env["MLFLOW_TRACKING_URI"], services_env["PREFECT_API_URL"]
    work = hub / "clones"
    a = copy_project(work / "a", deep_update({"seed": 1}, TINY_PARAMS))
    b = clone_workspace(a, work / "b")
    params_b = (b / "params.yaml").read_text().replace("seed: 1\n", "seed: 2\n", 1)
    assert params_b != (b / "params.yaml").read_text()
    (b / "params.yaml").write_text(params_b)
    commit_all(b, "seed 2")
    sweep_params = deep_update(deep_update({}, TINY_PARAMS), {"sweep": {
        "space": {"train.vae.latent_dim": [4, 8]}, "n_trials": 2, "workers": 1, "metric": "vae.fid"}})
    c = copy_project(work / "c", sweep_params)
    for step in (["collect", "--source", "digits"], ["clean", "--no-mlflow"], ["augment", "--no-mlflow"]):
        subprocess.run(["genloop", *step], cwd=c, env=team_env(c, services_env), check=True, capture_output=True)

    started = time.monotonic()
    procs = {name: start(args, root, team_env(root, services_env), tmp_path / f"{name}.log")
             for name, args, root in (("a", ["run"], a), ("b", ["run"], b), ("sweep", ["sweep"], c))}
    out = {name: finish(proc, tmp_path / f"{name}.log", 1500) for name, proc in procs.items()}
    print(f"two pipelines and a sweep at once: {time.monotonic() - started:.0f} s")
    for name, proc in procs.items():
        assert proc.returncode == 0, f"{name} failed:\n{out[name][-3000:]}"

    client = client_for(uri)
    experiment = client.get_experiment_by_name("genloop")
    assert experiment.artifact_location.startswith("mlflow-artifacts:")  # the server chose it
    # Both pipelines: parent with headline metrics, a finished vae and gan child with metrics and artifacts.
    exported = {}
    for name, root in (("a", a), ("b", b)):
        parent = PARENT_RUN.search(out[name]).group(1)
        assert client.get_run(parent).data.metrics, f"{name}: no headline metrics on the parent run"
        kids = {r.data.tags.get("genloop.model"): r for r in children(client, experiment.experiment_id, parent)}
        for kind in ("vae", "gan"):
            run = kids[kind]
            assert run.info.status == "FINISHED" and run.data.metrics, f"{name} {kind}: {run.info.status}"
            assert run.info.artifact_uri.startswith("mlflow-artifacts:")
            assert client.list_artifacts(run.info.run_id), f"{name} {kind}: no artifacts through the proxy"
        exported[name] = (json.loads((root / "models" / "export.json").read_text()), kids)
        assert not local_mlflow_files(root), f"{name} wrote MLflow files locally: {local_mlflow_files(root)}"
    # The sweep: its parent and one finished trial per point of the space.
    sweep_parent = SWEEP_PARENT.search(out["sweep"]).group(1)
    trials = [r for r in children(client, experiment.experiment_id, sweep_parent)
              if "genloop.sweep_trial" in r.data.tags]
    finished = {r.data.tags["genloop.sweep_trial"] for r in trials if r.info.status == "FINISHED" and r.data.metrics}
    assert finished == {"0", "1"}, [(r.info.run_name, r.info.status) for r in trials]
    assert not local_mlflow_files(c)
    assert list((hub / ".services" / "artifacts").rglob("*.onnx")), "no model files in the server's artifact store"

    for kind, model in zip(("vae", "gan"), MODEL_NAMES):
        versions = {str(v.version): v for v in client.search_model_versions(f"name='{model}'")}
        mine = {}
        for name, (export_json, kids) in exported.items():
            version = export_json[kind]["registered_version"]
            assert version in versions, f"{name}'s {model} v{version} is not in the registry"
            # Lineage: the version was logged from this clone's own training run.
            assert versions[version].run_id == kids[kind].info.run_id
            assert versions[version].tags["run_id"] == kids[kind].info.run_id
            mine[name] = version
        assert mine["a"] != mine["b"] and set(mine.values()) == set(versions)
        champion = promotion.current_champion(client, model)
        decisions = {v: versions[v].tags.get("promotion.decision") for v in versions}
        assert decisions[str(champion.version)] == "promoted"
        assert promotion.champion_history(client, model)[-1] == str(champion.version)
        for version, decision in decisions.items():  # a version kept out was kept out by the one that stays
            if decision == "kept":
                assert f"champion before: v{champion.version}," in versions[version].description
        assert promotion.download_onnx(f"models:/{model}@champion", tmp_path / model).stat().st_size > 0

    runs = prefect_flow_runs(api)
    assert runs.count(("genloop-pipeline", "COMPLETED")) >= 2, runs
    assert ("genloop-sweep", "COMPLETED") in runs, runs


def test_a_tracking_server_killed_mid_training_fails_the_run_and_a_rerun_after_restart_is_consistent(
        team_services, genloop_mlflow_env, tmp_path):
    from genloop.io import promotion, services

    hub, services_env = team_services
    uri = services_env["MLFLOW_TRACKING_URI"]
    names = {"vae": "killed-vae", "gan": "killed-gan"}
    root = copy_project(hub / "clones" / "killed", deep_update(deep_update({}, TINY_PARAMS), {
        "train": {"vae": {"images": 100000}},  # long enough to be killed in the middle
        # A one-epoch evaluation classifier labels 10% of the held-out digits right at seed 42 (chance 12%):
        # the promotion gate then rightly refuses an untrusted evaluation and no champion is set. Three
        # epochs reach about 75-85% at seeds 0, 1, 2 and 42, so the first versions are promoted.
        "evaluate": {"classifier_epochs": 3},
        "mlflow": {"experiment": "killed"},
        "export": {"vae_model_name": names["vae"], "gan_model_name": names["gan"]},
    }))
    quick_failure = {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "1", "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",
                     "MLFLOW_HTTP_REQUEST_TIMEOUT": "10"}
    log = tmp_path / "killed.log"
    proc = start(["run"], root, team_env(root, services_env, **quick_failure), log)
    client = client_for(uri)
    deadline = time.monotonic() + 900
    training = []
    while not training:
        assert proc.poll() is None, f"the run ended before training started:\n{log.read_text()[-3000:]}"
        assert time.monotonic() < deadline, "training never started"
        experiment = client.get_experiment_by_name("killed")
        if experiment is not None:
            training = client.search_runs([experiment.experiment_id], filter_string=(
                "tags.`genloop.model` = 'vae' and attributes.status = 'RUNNING'"))
        time.sleep(1)
    assert services.stop(hub, "mlflow")
    output = finish(proc, log, 600)
    assert proc.returncode != 0, "the run went on without its tracking server"
    assert f"MLflow tracking server {uri}" in output, output[-3000:]

    services.up(hub)  # only the tracking server was down: it comes back on the same database and port
    client = client_for(uri)
    for model in names.values():  # nothing registered, not even half
        assert client.search_model_versions(f"name='{model}'") == []
    rerun = subprocess.run(["genloop", "run"], cwd=root, env=team_env(root, services_env), capture_output=True,
                           text=True, timeout=1200)
    assert rerun.returncode == 0, rerun.stdout[-2000:] + rerun.stderr[-3000:]
    parent = PARENT_RUN.search(rerun.stdout).group(1)
    experiment = client.get_experiment_by_name("killed")
    kids = {r.data.tags.get("genloop.model"): r for r in children(client, experiment.experiment_id, parent)}
    for kind, model in names.items():
        versions = client.search_model_versions(f"name='{model}'")
        assert len(versions) == 1, [v.version for v in versions]
        assert versions[0].run_id == kids[kind].info.run_id and kids[kind].info.status == "FINISHED"
        champion = promotion.current_champion(client, model)
        assert champion is not None, f"{model} v{versions[0].version}: {versions[0].description}"
        assert str(champion.version) == str(versions[0].version)
        assert promotion.download_onnx(f"models:/{model}@champion", tmp_path / model).suffix == ".onnx"
    killed = client.get_run(training[0].info.run_id)
    if killed.info.run_id == kids["vae"].info.run_id:  # the rerun resumed it from its checkpoint
        assert killed.info.status == "FINISHED" and killed.data.tags["mlflow.parentRunId"] == parent
    else:  # killed before its first checkpoint: left as the server last saw it, holding no model
        assert killed.info.status in ("RUNNING", "FAILED") and not client.search_logged_models(
            experiment_ids=[experiment.experiment_id], filter_string=f"source_run_id = '{killed.info.run_id}'")


def test_postgresql_stopped_mid_training_fails_the_training_in_seconds_naming_it(team_services, genloop_mlflow_env,
                                                                                tmp_path):
    """The tracking server keeps answering (503) when its database stops: the training must not hang in
    MLflow's default retries (~4 minutes per call) nor blame the server."""
    from genloop.io import services

    hub, services_env = team_services
    root = copy_project(hub / "clones" / "pgdown", deep_update(deep_update({}, TINY_PARAMS), {
        "train": {"vae": {"images": 3_000_000}},  # minutes: long enough to stop PostgreSQL in the middle
        "mlflow": {"experiment": "pgdown"}}))
    env = team_env(root, services_env)
    for step in (["collect", "--source", "digits"], ["clean", "--no-mlflow"], ["augment", "--no-mlflow"]):
        subprocess.run(["genloop", *step], cwd=root, env=env, check=True, capture_output=True)
    log = tmp_path / "pgdown.log"
    proc = start(["train", "--model", "vae"], root, env, log)
    client, deadline, training = client_for(services_env["MLFLOW_TRACKING_URI"]), time.monotonic() + 600, []
    while not training:
        assert proc.poll() is None, f"the training ended before it started:\n{log.read_text()[-3000:]}"
        assert time.monotonic() < deadline, "training never started"
        experiment = client.get_experiment_by_name("pgdown")
        if experiment is not None:
            training = client.search_runs([experiment.experiment_id], filter_string="attributes.status = 'RUNNING'")
        time.sleep(1)
    layout = services.ServicesLayout.of(hub)
    services._pg(services.postgres_bin(), "pg_ctl", "-D", str(layout.pg_data), "-m", "fast", "-w", "stop")
    stopped = time.monotonic()
    try:
        output = finish(proc, log, 900)
        took = time.monotonic() - stopped
    finally:
        services.up(hub)  # PostgreSQL back for whatever runs next
    assert proc.returncode == 1, output[-3000:]
    print(f"training failed {took:.0f} s after PostgreSQL stopped")
    assert took < 120, f"{took:.0f} s: the training hung in MLflow's retries"
    assert "its database (PostgreSQL on 127.0.0.1:" in output and "Traceback" not in output, output[-3000:]
