"""`genloop migrate-store` copies a local SQLite store into a real `mlflow server` (sqlite backend,
served artifacts): every run, metric history, param, tag, artifact, model version and alias arrives,
parent links point at the new run ids; a second run copies nothing; a same-named experiment of other
origin on the target stops it before it writes."""
from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from waiting import wait_until_ready

pytestmark = pytest.mark.integration

GENLOOP = str(Path(sys.executable).with_name("genloop"))
MLFLOW = str(Path(sys.executable).with_name("mlflow"))
T0 = 1_700_000_000_000  # ms: fixed times, so the copy's times can be compared exactly


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    base = tmp_path_factory.mktemp("mlflow-server")
    port = free_port()
    env = {**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false", "MLFLOW_DISABLE_TELEMETRY": "true"}
    proc = subprocess.Popen(
        [MLFLOW, "server", "--backend-store-uri", f"sqlite:///{base}/server.db", "--serve-artifacts",
         "--artifacts-destination", str(base / "art"), "--host", "127.0.0.1", "--port", str(port), "--workers", "1"],
        cwd=base, env=env, stdout=subprocess.DEVNULL, stderr=open(base / "server.log", "w"), start_new_session=True)
    try:
        wait_until_ready(f"http://127.0.0.1:{port}/health", timeout=120, alive=lambda: proc.poll() is None)
        yield f"http://127.0.0.1:{port}"
    finally:
        os.killpg(proc.pid, signal.SIGTERM)  # the server's own session: gunicorn/uvicorn children too
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)


def client(uri: str):
    from mlflow import MlflowClient

    return MlflowClient(tracking_uri=uri, registry_uri=uri)


def build_store(root: Path, experiment: str = "genloop") -> dict:
    """A small store as genloop leaves one: a parent run with two children (metric histories, params,
    tags, artifacts, one FAILED), a second experiment, and a registered model with a run-artifact
    version, a LoggedModel version (MLflow 3, as export's log_model makes) and an alias."""
    import mlflow

    (root / "mlflow").mkdir(parents=True)
    uri = f"sqlite:///{root}/mlflow/mlflow.db"
    mlflow.set_tracking_uri(uri)  # MLflow resolves a LoggedModel version's source through the global URI
    try:
        return _fill_store(client(uri), root, experiment)
    finally:
        mlflow.set_tracking_uri(None)


def _fill_store(c, root: Path, experiment: str) -> dict:
    import warnings

    from mlflow.data.dataset_source_registry import resolve_dataset_source
    from mlflow.data.meta_dataset import MetaDataset
    from mlflow.entities import DatasetInput, InputTag, Metric

    exp = c.create_experiment(experiment, artifact_location=(root / "mlflow" / "artifacts").as_uri(),
                              tags={"team": "gen"})
    parent = c.create_run(exp, start_time=T0, run_name="pipeline").info.run_id
    children = {}
    for i, kind in enumerate(("vae", "gan")):
        run = c.create_run(exp, start_time=T0 + 1000 * (i + 1), run_name=kind,
                           tags={"mlflow.parentRunId": parent, "genloop.kind": kind}).info.run_id
        c.log_batch(run, metrics=[Metric("train_loss", 10.0 / (s + 1) + i, T0 + 10 * s, s) for s in range(5)],
                    params=[], tags=[])
        c.log_param(run, "lr", f"1e-{3 + i}")
        c.log_text(run, f"{kind} history", "history.csv")
        c.log_text(run, "weights", "checkpoint/model.pt")
        c.set_terminated(run, "FAILED" if kind == "gan" else "FINISHED", end_time=T0 + 5000 + i)
        children[kind] = run
    c.set_tag(parent, "genloop.reused_run.vae", children["vae"])
    data = root / "data"
    data.mkdir()
    with warnings.catch_warnings():  # the local source is registered twice (as in genloop.io.tracking)
        warnings.simplefilter("ignore", UserWarning)
        dataset = MetaDataset(source=resolve_dataset_source(str(data)), name="data", digest="f31143fd.dir")
    c.log_inputs(children["vae"], datasets=[DatasetInput(dataset._to_mlflow_entity(),
                                                         tags=[InputTag("mlflow.data.context", "training")])])
    c.log_metric(parent, "vae.fid", 12.5, timestamp=T0 + 9, step=0)
    c.set_terminated(parent, "FINISHED", end_time=T0 + 9000)
    other = c.create_experiment("genloop-sweep", artifact_location=(root / "mlflow" / "sweep").as_uri())
    c.set_terminated(c.create_run(other, start_time=T0, run_name="trial-0").info.run_id, end_time=T0 + 1)

    name = "genloop-vae"
    c.create_registered_model(name, tags={"owner": "genloop"}, description="VAE decoder")
    c.log_text(children["vae"], "onnx bytes v1", "onnx/model.onnx")
    v1 = c.create_model_version(name, f"{c.get_run(children['vae']).info.artifact_uri}/onnx", run_id=children["vae"],
                                tags={"run_id": children["vae"]})
    logged = c.create_logged_model(exp, name="onnx", source_run_id=children["vae"])
    model_files = root / "logged"
    model_files.mkdir()
    (model_files / "model.onnx").write_text("onnx bytes v2")
    c.log_model_artifacts(logged.model_id, str(model_files))
    c.finalize_logged_model(logged.model_id, "READY")
    v2 = c.create_model_version(name, f"models:/{logged.model_id}", run_id=children["vae"], model_id=logged.model_id,
                                tags={"run_id": children["vae"], "parity": "true"})
    c.set_registered_model_alias(name, "champion", v2.version)
    c.set_registered_model_alias(name, "previous", v1.version)
    return {"parent": parent, "children": children, "model": name}


def migrate(root: Path, target: str, *options: str, **extra_env: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "MLFLOW_DISABLE_TELEMETRY": "true", **extra_env}
    env.pop("MLFLOW_TRACKING_URI", None)
    # Run from beside the project, never from this checkout: nothing a migration writes may land in it.
    return subprocess.run([GENLOOP, "--root", str(root), "migrate-store", "--to", target, *options], env=env,
                          cwd=root.parent, capture_output=True, text=True, timeout=600)


def all_runs(c, experiment: str) -> dict:
    exp = c.get_experiment_by_name(experiment)
    return {r.info.run_name: r for r in c.search_runs([exp.experiment_id])} if exp else {}


def download(c, run_id: str, path: str, dest: Path) -> str:
    return Path(c.download_artifacts(run_id, path, dst_path=str(dest))).read_text()


@pytest.fixture(scope="module")
def migrated(server, tmp_path_factory):
    root = tmp_path_factory.mktemp("source-project")
    ids = build_store(root)
    first = migrate(root, server)
    return root, ids, first


def test_migration_copies_runs_with_histories_params_tags_status_and_times(migrated, server):
    root, ids, first = migrated
    assert first.returncode == 0, first.stderr
    assert "copied 2 experiment(s), 4 run(s)" in first.stdout and "2 version(s) and 2 alias(es)" in first.stdout
    src, dst = client(f"sqlite:///{root}/mlflow/mlflow.db"), client(server)
    for experiment in ("genloop", "genloop-sweep"):
        before, after = all_runs(src, experiment), all_runs(dst, experiment)
        assert sorted(before) == sorted(after) and after
        for name, old in before.items():
            new = after[name]
            assert new.info.run_id != old.info.run_id
            assert (new.info.status, new.info.start_time, new.info.end_time) == \
                   (old.info.status, old.info.start_time, old.info.end_time)
            assert new.data.params == old.data.params
            for key in old.data.metrics:
                history = [(m.step, m.timestamp, m.value) for m in dst.get_metric_history(new.info.run_id, key)]
                assert sorted(history) == sorted((m.step, m.timestamp, m.value)
                                                 for m in src.get_metric_history(old.info.run_id, key))
            assert {k for k in old.data.tags} <= set(new.data.tags)
    assert dst.get_experiment_by_name("genloop").tags["team"] == "gen"
    assert len(dst.get_metric_history(all_runs(dst, "genloop")["vae"].info.run_id, "train_loss")) == 5
    inputs = all_runs(dst, "genloop")["vae"].inputs.dataset_inputs
    assert [(i.dataset.name, i.dataset.digest, i.tags[0].value) for i in inputs] == [("data", "f31143fd.dir", "training")]


def test_parent_links_and_run_id_tags_point_at_the_new_runs(migrated, server):
    _, ids, _ = migrated
    runs = all_runs(client(server), "genloop")
    parent = runs["pipeline"].info.run_id
    assert parent != ids["parent"]
    for kind in ("vae", "gan"):
        assert runs[kind].data.tags["mlflow.parentRunId"] == parent
    assert runs["pipeline"].data.tags["genloop.reused_run.vae"] == runs["vae"].info.run_id


def test_artifacts_arrive_on_the_server(migrated, server, tmp_path):
    _, _, _ = migrated
    dst = client(server)
    runs = all_runs(dst, "genloop")
    assert runs["vae"].info.artifact_uri.startswith("mlflow-artifacts:")
    assert download(dst, runs["vae"].info.run_id, "history.csv", tmp_path / "a") == "vae history"
    assert download(dst, runs["gan"].info.run_id, "checkpoint/model.pt", tmp_path / "b") == "weights"


def test_registered_model_versions_tags_and_aliases_arrive(migrated, server, tmp_path):
    import mlflow.artifacts

    _, ids, _ = migrated
    dst = client(server)
    model = dst.get_registered_model(ids["model"])
    assert model.description == "VAE decoder" and model.tags["owner"] == "genloop"
    assert model.aliases == {"champion": "2", "previous": "1"}
    vae = all_runs(dst, "genloop")["vae"].info.run_id
    for version, text in (("1", "onnx bytes v1"), ("2", "onnx bytes v2")):
        mv = dst.get_model_version(ids["model"], version)
        assert mv.run_id == vae and mv.tags["run_id"] == vae
        assert mv.source.startswith(dst.get_run(vae).info.artifact_uri)
        files = Path(mlflow.artifacts.download_artifacts(artifact_uri=dst.get_model_version_download_uri(
            ids["model"], version), dst_path=str(tmp_path / version), tracking_uri=server))
        assert (files / "model.onnx").read_text() == text
    assert dst.get_model_version_by_alias(ids["model"], "champion").tags["parity"] == "true"


def test_running_it_again_copies_nothing(migrated, server):
    root, ids, _ = migrated
    dst = client(server)
    before = {e: sorted(r.info.run_id for r in all_runs(dst, e).values()) for e in ("genloop", "genloop-sweep")}
    again = migrate(root, server)
    assert again.returncode == 0, again.stderr
    assert "copied 0 experiment(s), 0 run(s)" in again.stdout and "skipped" in again.stdout
    assert before == {e: sorted(r.info.run_id for r in all_runs(dst, e).values()) for e in before}
    assert len(dst.search_model_versions(f"name='{ids['model']}'")) == 2


def test_a_same_named_experiment_of_other_origin_is_refused_before_writing(migrated, server, tmp_path):
    other = tmp_path / "other-project"
    build_store(other, experiment="genloop")  # same names, other store
    dst = client(server)
    runs_before = len(all_runs(dst, "genloop"))
    out = migrate(other, server)
    assert out.returncode == 1
    assert "already has" in out.stderr and "experiment 'genloop'" in out.stderr and "nothing was written" in out.stderr
    assert "registered model 'genloop-vae'" in out.stderr
    assert len(all_runs(dst, "genloop")) == runs_before


def test_a_migration_killed_mid_run_and_mid_model_resumes_from_its_tags(tmp_path):
    root = tmp_path / "source-project"
    ids = build_store(root)
    target = f"sqlite:///{tmp_path}/target.db"
    for point in ("migrate_run_half_copied", "migrate_model_half_copied"):
        killed = migrate(root, target, GENLOOP_TEST_KILL_AT=point)
        assert killed.returncode == -signal.SIGKILL, killed.stderr
    done = migrate(root, target)
    assert done.returncode == 0, done.stderr
    src, dst = client(f"sqlite:///{root}/mlflow/mlflow.db"), client(target)
    for experiment in ("genloop", "genloop-sweep"):
        runs = dst.search_runs([dst.get_experiment_by_name(experiment).experiment_id])  # active ones
        assert sorted(r.info.run_name for r in runs) == sorted(all_runs(src, experiment)), experiment
        assert all(r.data.tags.get("genloop.migration") == "complete" for r in runs)
    copied = all_runs(dst, "genloop")
    assert copied["vae"].data.tags["mlflow.parentRunId"] == copied["pipeline"].info.run_id
    assert download(dst, copied["vae"].info.run_id, "history.csv", tmp_path / "a") == "vae history"
    model = dst.get_registered_model(ids["model"])
    assert {k: str(v) for k, v in model.aliases.items()} == {"champion": "2", "previous": "1"}
    assert model.tags["genloop.migration"] == "complete"
    assert len(dst.search_model_versions(f"name='{ids['model']}'")) == 2
    again = migrate(root, target)
    assert again.returncode == 0 and "copied 0 experiment(s), 0 run(s)" in again.stdout, again.stdout


def test_a_sqlite_target_keeps_its_artifacts_beside_its_database_not_in_the_working_folder(tmp_path):
    root = tmp_path / "source-project"
    build_store(root)
    target_dir = tmp_path / "team"
    target_dir.mkdir()
    done = migrate(root, f"sqlite:///{target_dir}/mlflow.db")
    assert done.returncode == 0, done.stderr
    assert not (tmp_path / "mlruns").exists(), "artifacts went to ./mlruns of the folder the command ran in"
    dst = client(f"sqlite:///{target_dir}/mlflow.db")
    for name in ("genloop", "genloop-sweep"):
        assert dst.get_experiment_by_name(name).artifact_location == (target_dir / "artifacts").as_uri()
    vae = all_runs(dst, "genloop")["vae"].info.run_id
    assert download(dst, vae, "history.csv", tmp_path / "a") == "vae history"


def test_update_aliases_brings_new_versions_and_the_moved_champion_of_a_model_copied_earlier(tmp_path):
    root = tmp_path / "source-project"
    ids = build_store(root)
    target = f"sqlite:///{tmp_path}/target.db"
    assert migrate(root, target).returncode == 0
    src, dst = client(f"sqlite:///{root}/mlflow/mlflow.db"), client(target)
    name, vae = ids["model"], ids["children"]["vae"]
    src.log_text(vae, "onnx bytes v3", "onnx3/model.onnx")  # after the migration: a new champion on the source
    v3 = src.create_model_version(name, f"{src.get_run(vae).info.artifact_uri}/onnx3", run_id=vae,
                                  tags={"run_id": vae})
    src.set_registered_model_alias(name, "champion", v3.version)
    src.set_registered_model_alias(name, "previous", "2")
    src.set_registered_model_tag(name, "champion_history", '["1", "2", "3"]')

    plain = migrate(root, target)
    assert plain.returncode == 0 and "skipped" in plain.stdout and "aliases moved" not in plain.stdout
    assert str(dst.get_registered_model(name).aliases["champion"]) == "2"  # unchanged without the option
    updated = migrate(root, target, "--update-aliases")
    assert updated.returncode == 0, updated.stderr
    assert f"{name}@champion v2 -> v3" in updated.stdout and f"{name}@previous v1 -> v2" in updated.stdout
    model = dst.get_registered_model(name)
    assert {k: str(v) for k, v in model.aliases.items()} == {"champion": "3", "previous": "2"}
    assert model.tags["champion_history"] == '["1", "2", "3"]'
    assert len(dst.search_model_versions(f"name='{name}'")) == 3
    files = Path(mlflow_download(dst.get_model_version_download_uri(name, "3"), tmp_path / "v3"))
    assert (files / "model.onnx").read_text() == "onnx bytes v3"
    again = migrate(root, target, "--update-aliases")
    assert again.returncode == 0 and "aliases moved" not in again.stdout, again.stdout
    assert len(dst.search_model_versions(f"name='{name}'")) == 3


def mlflow_download(uri: str, dest: Path) -> str:
    import mlflow.artifacts

    dest.mkdir()
    return mlflow.artifacts.download_artifacts(artifact_uri=uri, dst_path=str(dest))
