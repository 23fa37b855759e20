"""The MLflow adapter: store location, experiment, parent/child runs and lineage tags.

Runs are addressed by id (``parent_run_id``) rather than MLflow's per-thread active-run stack,
because Prefect runs tasks on worker threads.
"""
from __future__ import annotations

import contextlib
import json
import os
import subprocess
import time
import warnings
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from genloop.io import dvcio
from genloop.core import headline
from genloop.core.promotion import EPSILON_TAG, IMAGE_SHAPE_TAG
from genloop.config import MlflowConfig
from genloop.errors import GenloopError, display_path
from genloop.paths import ProjectPaths
from genloop.io.telemetry import switch_off

RUNNER_TAG = "genloop.runner"
PIPELINE_KEY_TAG = "genloop.pipeline_key"


TRACKING_URI_ENV = "MLFLOW_TRACKING_URI"
SERVER_SCHEMES = ("http://", "https://")


def env_server(environ: Mapping[str, str] | None = None) -> str | None:
    """``$MLFLOW_TRACKING_URI`` when it names a tracking server (team mode: .services/team.env sets it).

    Any other value is ignored: ``mlflow.set_tracking_uri`` writes its URI into that variable itself, so a
    ``sqlite:`` value there may be another project's store left by this process or its parent."""
    uri = (os.environ if environ is None else environ).get(TRACKING_URI_ENV, "")
    return uri if is_server(uri) else None


def tracking_uri(config: MlflowConfig, root: Path, environ: Mapping[str, str] | None = None) -> str:
    """A tracking server named by ``$MLFLOW_TRACKING_URI`` (see ``env_server``), else params'
    ``mlflow.tracking_uri``; a relative ``sqlite:///file`` resolves against the project root. A SQLite
    store that is there but damaged is a StoreDamagedError (``check_sqlite_store``)."""
    prefix = "sqlite:///"
    uri = env_server(environ) or config.tracking_uri
    if uri.startswith(prefix) and not uri.startswith(prefix + "/"):
        db = (root / uri[len(prefix):]).resolve()
        db.parent.mkdir(parents=True, exist_ok=True)
        uri = prefix + str(db)
    if uri.startswith(prefix):
        check_sqlite_store(Path(uri[len(prefix):]))
    return uri


class StoreDamagedError(GenloopError):
    """The MLflow SQLite file is there but not a readable database; the message says how to get back."""


SQLITE_HEADER = b"SQLite format 3\x00"
EMPTY_GRACE_S = 60.0  # a 0-byte store younger than this may be one another process is creating right now
_sound: set[Path] = set()  # stores found sound in this process: checked once


def check_sqlite_store(db: Path) -> None:
    """Refuse a store MLflow would choke on (sqlalchemy tracebacks) or silently replace (a 0-byte file):
    a wrong header, or ``PRAGMA quick_check`` finding damage. A missing file is fine (MLflow creates it)."""
    db = Path(db)
    if db in _sound or not db.is_file():
        return
    why = _sqlite_damage(db)
    if why is None:
        _sound.add(db)
        return
    shown = display_path(db)
    raise StoreDamagedError(
        f"{shown} is damaged ({why}), so MLflow cannot use it; nothing was written. Restore it from a backup copy, "
        f"or move it aside (mv {shown} {shown}.damaged) to start an empty store; `genloop migrate-store --from "
        f"sqlite:///OTHER.db --to sqlite:///{shown}` copies the runs and models of a readable copy into it")


def _quick_check(db: Path, read_only: bool) -> list[str]:
    import sqlite3

    uri = db.resolve().as_uri() + ("?mode=ro" if read_only else "")
    with contextlib.closing(sqlite3.connect(uri, uri=True, timeout=30)) as conn:
        return [row[0] for row in conn.execute("PRAGMA quick_check(3)")]


def _sqlite_damage(db: Path) -> str | None:
    import sqlite3

    size = db.stat().st_size
    if size == 0:
        old = time.time() - db.stat().st_mtime > EMPTY_GRACE_S
        return "an empty file: its runs and registered models are gone" if old else None
    with open(db, "rb") as f:
        if f.read(len(SQLITE_HEADER)) != SQLITE_HEADER:
            return "not an SQLite database: its first bytes are not the SQLite header"
    try:
        try:
            problems = _quick_check(db, read_only=True)
        except sqlite3.OperationalError as exc:
            if "readonly" not in str(exc):
                raise
            # a hot journal: a writer was killed mid-transaction (SIGKILL, OOM). Read-only, SQLite cannot roll
            # it back; a read-write connection does, as MLflow's own would: recovery, not damage.
            problems = _quick_check(db, read_only=False)
    except sqlite3.OperationalError as exc:
        return None if "locked" in str(exc) else f"sqlite: {exc}"  # busy with a writer: not damage
    except sqlite3.DatabaseError as exc:
        return f"sqlite: {exc}"
    return None if problems == ["ok"] else f"PRAGMA quick_check: {'; '.join(problems)}"


def sqlite_store(config: MlflowConfig, root: Path) -> Path | None:
    """The SQLite file behind the tracking URI (as ``tracking_uri`` resolves it, minus the mkdir), or None for
    a server URI."""
    prefix = "sqlite:///"
    uri = env_server() or config.tracking_uri
    if not uri.startswith(prefix):
        return None
    db = Path(uri[len(prefix):])
    return db if db.is_absolute() else (root / db).resolve()


def is_server(uri: str) -> bool:
    """A tracking server (it stores artifacts itself), not a database file or URL the client writes to."""
    return uri.startswith(SERVER_SCHEMES)


def setup(config: MlflowConfig, paths: ProjectPaths) -> str:
    """Point MLflow at the project's store and return the experiment id (created on first use)."""
    switch_off()
    import mlflow

    uri = tracking_uri(config, paths.root)
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)  # the registry lives in the same store; never one a server or test left set
    experiment = mlflow.get_experiment_by_name(config.experiment)
    if experiment is None:
        experiment_id = _create_experiment(config, paths, uri)
    else:
        experiment_id = experiment.experiment_id
    mlflow.set_experiment(experiment_id=experiment_id)
    return experiment_id


def _create_experiment(config: MlflowConfig, paths: ProjectPaths, uri: str) -> str:
    """A server keeps artifacts where it chooses (``mlflow-artifacts:`` behind its proxy); a local store
    under ``mlflow.artifact_root``. Another process creating the same experiment first is fine."""
    import mlflow
    from mlflow.exceptions import MlflowException

    location = None
    if not is_server(uri):
        artifacts = Path(config.artifact_root)
        artifacts = artifacts if artifacts.is_absolute() else paths.root / artifacts
        artifacts.mkdir(parents=True, exist_ok=True)
        location = artifacts.resolve().as_uri()
    try:
        return mlflow.create_experiment(config.experiment, artifact_location=location)
    except MlflowException:
        experiment = mlflow.get_experiment_by_name(config.experiment)  # created meanwhile by another run
        if experiment is None:
            raise
        return experiment.experiment_id


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


def start_parent_run(config: MlflowConfig, paths: ProjectPaths, runner: str, run_name: str | None = None,
                     tags: dict[str, str] | None = None) -> str:
    """Open the parent run of one pipeline execution (or sweep); children attach with ``parent_run_id``."""
    from mlflow import MlflowClient

    experiment_id = setup(config, paths)
    client = MlflowClient()
    run = client.create_run(
        experiment_id, run_name=run_name or f"pipeline-{runner}",
        tags={RUNNER_TAG: runner, **(tags or {}), **lineage_tags(paths)},
    )
    return run.info.run_id


def end_run(run_id: str, status: str = "FINISHED") -> None:
    from mlflow import MlflowClient

    MlflowClient().set_terminated(run_id, status=status)


@contextmanager
def failed_on_error(run_id: str) -> Iterator[None]:
    """Mark ``run_id`` FAILED when the block raises (then re-raise), so no run stays RUNNING after a crash
    or a Ctrl-C; ending it FINISHED is the block's own business."""
    try:
        yield
    except BaseException:
        end_run(run_id, "FAILED")
        raise


@contextmanager
def finished_or_failed(run_id: str) -> Iterator[str]:
    """Yield ``run_id``; end it FINISHED when the block completes, FAILED (then re-raise) when it raises."""
    with failed_on_error(run_id):
        yield run_id
    end_run(run_id)


def start_child_run(experiment_id: str, parent_run_id: str, run_name: str, paths: ProjectPaths,
                    params: dict[str, Any] | None = None, tags: dict[str, str] | None = None,
                    data_input: bool = False) -> str:
    """Open a run nested under ``parent_run_id`` with the lineage tags, ``tags`` and ``params`` (as strings);
    with ``data_input``, the DVC-versioned data set as its input. A failure after it opened marks it FAILED."""
    from mlflow import MlflowClient

    run_id = MlflowClient().create_run(experiment_id, run_name=run_name, tags={
        "mlflow.parentRunId": parent_run_id, **lineage_tags(paths), **(tags or {}),
    }).info.run_id
    with failed_on_error(run_id):
        if params:
            log_params(run_id, params)
        if data_input:
            log_data_input(run_id, paths)
    return run_id


@contextmanager
def child_run(experiment_id: str, parent_run_id: str, run_name: str, paths: ProjectPaths,
              params: dict[str, Any] | None = None, tags: dict[str, str] | None = None,
              data_input: bool = False) -> Iterator[str]:
    """A run nested under ``parent_run_id`` (see ``start_child_run``) for the block: yields its id, ends it
    FINISHED, or FAILED when the block raises."""
    run_id = start_child_run(experiment_id, parent_run_id, run_name, paths, params, tags, data_input)
    with finished_or_failed(run_id):
        yield run_id


def reopen_child_run(experiment_id: str, run_id: str, parent_run_id: str, tags: dict[str, str]) -> bool:
    """Set ``run_id`` RUNNING again, re-parented under ``parent_run_id`` and tagged with ``tags``; False
    (and nothing changed) when it is gone: deleted, in another experiment or not in this store."""
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    client = MlflowClient()
    try:
        run = client.get_run(run_id)
        usable = run.info.experiment_id == experiment_id and run.info.lifecycle_stage == "active"
    except MlflowException:
        usable = False
    if not usable:
        return False
    client.update_run(run_id, status="RUNNING")
    set_tags(run_id, {"mlflow.parentRunId": parent_run_id, **tags})
    return True


def log_metric_rows(run_id: str, rows: list[dict[str, float]], step_key: str = "epoch") -> None:
    """Log each row's values at the step ``row[step_key]``, in batches MLflow accepts (at most 1000)."""
    from mlflow import MlflowClient
    from mlflow.entities import Metric

    client = MlflowClient()
    stamp = int(time.time() * 1000)
    metrics = [Metric(k, float(v), stamp, int(row[step_key])) for row in rows for k, v in row.items() if k != step_key]
    for start in range(0, len(metrics), 900):
        client.log_batch(run_id, metrics=metrics[start:start + 900])


def log_metrics(run_id: str, values: dict[str, float], step: int = 0) -> None:
    """Log ``values`` on ``run_id`` at one step."""
    log_metric_rows(run_id, [{**values, "step": step}], step_key="step")


def logged_steps(run_id: str, key: str) -> set[int]:
    """The steps at which ``run_id`` already has metric ``key``."""
    from mlflow import MlflowClient

    return {m.step for m in MlflowClient().get_metric_history(run_id, key)}


def log_files(run_id: str, files: Iterable[Path], artifact_path: str | None = None) -> None:
    """Attach files to ``run_id`` (under ``artifact_path``, default the artifact root)."""
    from mlflow import MlflowClient

    client = MlflowClient()
    for file in files:
        client.log_artifact(run_id, str(file), artifact_path=artifact_path)


def log_folder(run_id: str, folder: Path, artifact_path: str) -> None:
    """Attach a folder's files to ``run_id`` under ``artifact_path``."""
    from mlflow import MlflowClient

    MlflowClient().log_artifacts(run_id, str(folder), artifact_path=artifact_path)


def log_params(run_id: str, params: dict[str, Any]) -> None:
    """Log ``params`` on ``run_id`` as strings, in one batch."""
    from mlflow import MlflowClient
    from mlflow.entities import Param

    MlflowClient().log_batch(run_id, params=[Param(k, str(v)) for k, v in params.items()])


def log_text(run_id: str, text: str, artifact_file: str) -> None:
    from mlflow import MlflowClient

    MlflowClient().log_text(run_id, text, artifact_file)


def log_dict(run_id: str, obj: dict[str, Any], artifact_file: str) -> None:
    from mlflow import MlflowClient

    MlflowClient().log_dict(run_id, obj, artifact_file)


def set_tags(run_id: str, tags: dict[str, str]) -> None:
    from mlflow import MlflowClient

    client = MlflowClient()
    for key, value in tags.items():
        client.set_tag(run_id, key, value)


def registry_client(config: MlflowConfig, paths: ProjectPaths):
    """An ``MlflowClient`` on the project's store (tracking and registry), for genloop.io.promotion's gate and
    commands."""
    from mlflow import MlflowClient

    setup(config, paths)
    return MlflowClient()


def client_at(uri: str):
    """An ``MlflowClient`` on ``uri`` for tracking and registry, also made the process's current URI (model
    downloads through ``models:/`` resolve against it); serving uses it without creating a store."""
    switch_off()
    import mlflow
    from mlflow import MlflowClient

    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)
    return MlflowClient(tracking_uri=uri, registry_uri=uri)


def registry_errors() -> tuple[type[Exception], ...]:
    """What MLflow raises for a missing model, version or alias, or a failed download (imported lazily:
    ``import mlflow`` takes seconds)."""
    from mlflow.exceptions import MlflowException

    return (MlflowException,)


def download_artifacts(uri: str, dst: Path) -> Path:
    """Download ``uri`` (``models:/NAME@alias``, ``runs:/...``) from the current store into ``dst``."""
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")  # no tqdm bars in logs
    import mlflow

    return Path(mlflow.artifacts.download_artifacts(artifact_uri=uri, dst_path=str(dst)))


def current_uri() -> str:
    import mlflow

    return mlflow.get_tracking_uri()


def parent_for_dvc(config: MlflowConfig, paths: ProjectPaths) -> str:
    """The parent run that groups ``dvc repro`` stages on the same data and commit.

    DVC runs each stage as its own process with nothing shared between them, so the stages find
    their common parent by a key made of the data hash and the git commit.
    """
    from mlflow import MlflowClient

    experiment_id = setup(config, paths)
    tags = lineage_tags(paths)
    experiment = os.environ.get("DVC_EXP_NAME")  # set by `dvc exp run`: each experiment its own parent
    key = f"{tags['dvc_data_hash']}@{tags['git_commit']}" + (f"#{experiment}" if experiment else "")
    client = MlflowClient()
    found = client.search_runs(
        [experiment_id],
        filter_string=f"tags.`{PIPELINE_KEY_TAG}` = '{key}' and tags.`{RUNNER_TAG}` = 'dvc'",
        max_results=1, order_by=["attributes.start_time DESC"],
    )
    if found:
        return found[0].info.run_id
    run = client.create_run(
        experiment_id, run_name=dvc_run_name(tags["git_commit"]),
        tags={RUNNER_TAG: "dvc", PIPELINE_KEY_TAG: key, **tags},
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


def child_run_name(kind: str, paths: ProjectPaths, now: float | None = None) -> str:
    """``vae 3f2a9c1 2026-11-03 16:05:07``: the model, the data's DVC hash (short) and the start time,
    so two trainings tell apart on MLflow's compare page and in the runs table."""
    data = dvcio.read_dvc_hash(paths.data_dvc)
    stamp = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(time.time() if now is None else now))
    return f"{kind} {data[:7] if data != 'untracked' else 'untracked'} {stamp}"


def dvc_run_name(commit: str, environ: dict[str, str] | None = None) -> str:
    """``dvc-exp <name>`` under `dvc exp run` (DVC sets DVC_EXP_NAME), else ``dvc-repro <short sha>``."""
    environ = os.environ if environ is None else environ
    experiment = environ.get("DVC_EXP_NAME")
    return f"dvc-exp {experiment}" if experiment else f"dvc-repro {commit[:7]}"


def log_parent_metrics(run_id: str, metrics_file: Path) -> dict[str, float]:
    """Put both models' headline metrics (``vae_fid``, ``gan_fid``, ``real_floor_fid``, ...) on the
    parent run, so the runs table and chart view compare pipelines, not only their children."""
    values = headline.flat(headline.read(metrics_file))
    log_metrics(run_id, values)
    return values


def mark_all_skipped(run_id: str, run_name: str, reused: dict[str, str]) -> str:
    """Name the parent of a pipeline whose every stage was skipped ``... (all stages skipped)`` and
    say in its description which earlier runs hold the models; returns the new name."""
    from mlflow import MlflowClient

    name = f"{run_name} (all stages skipped)"
    runs = ", ".join(f"{kind}: {rid}" for kind, rid in reused.items()) or "none"
    note = (f"Nothing ran: params, code and data were unchanged, so every stage was skipped. "
            f"The models and their metrics are those of the earlier training runs ({runs}).")
    client = MlflowClient()
    client.set_tag(run_id, "mlflow.runName", name)
    client.set_tag(run_id, "mlflow.note.content", note)
    client.set_tag(run_id, "genloop.all_stages_skipped", "true")
    return name


@contextmanager
def reopened_run(run_id: str) -> Iterator[Any]:
    """``mlflow.start_run(run_id=...)`` on a finished run (to log a model onto its training run) that
    puts back its status and end time afterwards: the run ends when its training ended."""
    import mlflow
    from mlflow import MlflowClient

    client = MlflowClient()
    before = client.get_run(run_id).info
    with mlflow.start_run(run_id=run_id) as run:
        yield run
    if before.end_time:
        client.set_terminated(run_id, before.status, end_time=before.end_time)


DELTA_TAG = "genloop.delta"  # with EPSILON_TAG (genloop.core.promotion): the spent DP budget


def log_privacy(run_id: str, summary: dict[str, Any]) -> None:
    """A private training's budget on its run: params ``delta`` and how ε was reached (``dp_*``), and
    the spent ε as a tag (the ``epsilon`` metric is logged per epoch with the losses)."""
    from mlflow import MlflowClient
    from mlflow.entities import Param, RunTag

    params = {"delta": summary["delta"], **{f"dp_{k}": summary[k] for k in
                                             ("noise_multiplier", "max_grad_norm", "sample_rate", "steps",
                                              "accountant", "sampling", "method", "mechanism", "sensitivity",
                                              "releases", "count_weight", "adjacency") if k in summary}}
    MlflowClient().log_batch(run_id, params=[Param(k, str(v)) for k, v in params.items()],
                             tags=[RunTag(EPSILON_TAG, repr(float(summary["epsilon"]))),
                                   RunTag(DELTA_TAG, repr(float(summary["delta"])))])


VERSION_TAG_KEYS = ("run_id", "model_kind", "latent_dim", "dvc_data_hash", "git_commit", "eval_data_hash",
                    "parity_passed", "onnx_max_abs_diff", EPSILON_TAG, DELTA_TAG, IMAGE_SHAPE_TAG)


def log_release(version_run_id: str, release: str, files: Iterable[Path], params: dict[str, Any],
                paths: ProjectPaths) -> str:
    """A synthetic data set made from a model version, as a run nested under the version's training run:
    its ``params`` (ε, δ, seed, images) and ``files`` (data and manifest) as artifacts; the version's run
    gets a ``genloop.synthetic.<release>`` tag naming it. Nested, not logged into the version's run,
    because MLflow params are write-once and each release has its own seed and size."""
    from mlflow import MlflowClient

    experiment_id = MlflowClient().get_run(version_run_id).info.experiment_id
    with child_run(experiment_id, version_run_id, f"synthesize {release}", paths, params,
                   {"genloop.release": "synthetic data set"}) as run_id:
        log_files(run_id, files, artifact_path="synthetic")
    set_tags(version_run_id, {f"genloop.synthetic.{release}": run_id})
    return run_id


def version_tags(tags: dict[str, str], keep_metrics: Iterable[str]) -> dict[str, str]:
    """The few tags a registry version needs (lineage, parity, the promotion metric and the headline
    metrics): the full params go to ``params.json`` and all metrics onto the LoggedModel instead."""
    metrics = {f"metric.{m}" for m in (*keep_metrics, *headline.PREFERRED)}
    return {k: v for k, v in tags.items() if k in VERSION_TAG_KEYS or k in metrics
            or k.startswith("promotion.")}


def log_model_details(run_id: str, model_id: str | None, params: dict[str, Any],
                      metrics: dict[str, float]) -> None:
    """Attach the full params as ``params.json`` to the training run and the evaluation metrics to the
    MLflow 3 LoggedModel (``log_metrics(model_id=...)``), where the Models tab shows them."""
    import mlflow
    from mlflow import MlflowClient

    MlflowClient().log_text(run_id, json.dumps(params, indent=2, sort_keys=True), "params.json")
    if model_id and metrics:
        mlflow.log_metrics({k: float(v) for k, v in metrics.items()}, run_id=run_id, model_id=model_id)


def log_onnx_model(run_id: str, onnx_path: Path, registered_name: str, example_in: Any, example_out: Any,
                   metrics: dict[str, float]) -> tuple[str, str | None]:
    """Log ``metrics`` and the ONNX graph (CPU provider, signature from the example) onto the finished training
    run ``run_id`` and register it as a new version of ``registered_name``; returns (version, model id)."""
    import mlflow
    import onnx
    from mlflow.models import infer_signature

    with reopened_run(run_id):
        for key, value in metrics.items():
            mlflow.log_metric(key, value)
        info = mlflow.onnx.log_model(
            onnx.load(str(onnx_path)), name="onnx", registered_model_name=registered_name,
            signature=infer_signature(example_in, example_out), input_example=None,
            onnx_execution_providers=["CPUExecutionProvider"], save_as_external_data=False,
        )
    return str(info.registered_model_version), info.model_id


def version_tags_of(name: str, version: str) -> dict[str, str]:
    """The tags on version ``version`` of registered model ``name``."""
    from mlflow import MlflowClient

    return dict(MlflowClient().get_model_version(name, version).tags)


def set_version_tags(name: str, version: str, tags: dict[str, str]) -> None:
    """Tag a registered model version, in ``tags``' order (so a tag set last marks the rest as written)."""
    from mlflow import MlflowClient

    client = MlflowClient()
    for key, value in tags.items():
        client.set_model_version_tag(name, version, key, value)
