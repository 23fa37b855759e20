"""The Prefect flows ``genloop-pipeline`` and ``genloop-loop``: one task per stage, each calling the
stage function in genloop.

A stage whose params, inputs and code did not change since its last run, and whose outputs are
still on disk as it left them, is skipped (state ``Cached``; see genloop.pipeline.caching); ``force=True``
runs everything. collect and export retry transient failures (network, busy registry) with
exponential backoff; errors that cannot pass (bad config, bad data, parity) fail at once.

Run it with ``genloop run`` or ``make run``; ``make prefect-up`` serves it as a deployment.
"""
from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from genloop.io.telemetry import switch_off

switch_off(PREFECT_LOGGING_EXTRA_LOGGERS="genloop",  # before prefect is imported
           PREFECT_LOGGING_TO_API_WHEN_MISSING_FLOW="ignore")  # genloop logs outside a flow run stay local

from prefect import flow, get_run_logger, task  # noqa: E402
from prefect.cache_policies import NO_CACHE  # noqa: E402
from prefect.runtime import flow_run  # noqa: E402
from prefect.states import Completed, State  # noqa: E402
from prefect.tasks import exponential_backoff  # noqa: E402
from prefect.utilities.annotations import opaque  # noqa: E402

from genloop.pipeline import caching, prefect_artifacts  # noqa: E402
from genloop.io import dvcio, tracking
from genloop.pipeline.caching import StageOutcome  # noqa: E402
from genloop.pipeline.recording import record_stage  # noqa: E402
from genloop.stages.augment import augment  # noqa: E402
from genloop.stages.clean import clean  # noqa: E402
from genloop.stages.collect import collect  # noqa: E402
from genloop.config import CollectConfig, Params, load_params  # noqa: E402
from genloop.stages.evaluate import evaluate  # noqa: E402
from genloop.stages.export import export  # noqa: E402
from genloop.config import MODELS  # noqa: E402
from genloop.io.lock import project_lock  # noqa: E402
from genloop.paths import ProjectPaths  # noqa: E402
from genloop.stages.train import train_model  # noqa: E402
from genloop.pipeline.transient import retry_if_transient  # noqa: E402

# The stages the flow runs after collect, in order: each is a stage of dvc.yaml, whose deps, params
# and outs decide when it is skipped (tests/unit/pipeline/test_caching.py checks the two lists agree).
STAGES = ("clean", "augment", *(f"train_{kind}" for kind in MODELS), "evaluate", "export")
RETRIES = 2
RETRY_DELAYS = exponential_backoff(backoff_factor=2)  # 2 s, then 4 s
stage = task(cache_policy=NO_CACHE)
retried_stage = task(cache_policy=NO_CACHE, retries=RETRIES, retry_delay_seconds=RETRY_DELAYS,
                     retry_condition_fn=retry_if_transient)


def run_or_skip(name: str, params: Params, paths: ProjectPaths, force: bool, run: Callable[[], Any]):
    """Skip the stage (a ``Cached`` state holding its earlier result) when its inputs are unchanged."""
    logger = get_run_logger()
    spec = caching.stage_spec(paths.root, name)
    checked = caching.check(spec, params, paths)
    if checked.hit and not force:
        message = f"{name}: inputs unchanged, skipped"
        logger.info(message)
        return Completed(data=StageOutcome(checked.result, True, checked.reason), name="Cached", message=message)
    logger.info("%s: %s, running", name, "forced (force=True)" if force else checked.reason)
    caching.forget(spec, paths)
    result = run()
    caching.record(spec, paths, checked, result)
    return StageOutcome(result, False, checked.reason)


def after(*upstream: Any) -> list[Any]:
    """``wait_for`` entries that link to exactly these task runs (states or returned values)."""
    return [opaque(u) for u in upstream]


def outcome(value: StageOutcome | State) -> StageOutcome:
    return value.result() if isinstance(value, State) else value


@retried_stage(name="collect")
def collect_task(config: CollectConfig, paths: ProjectPaths, mode: str = "replace", pull_if_missing: bool = False):
    return collect(config, paths, mode=mode, pull_if_missing=pull_if_missing)


@stage(name="clean")
def clean_task(params: Params, paths: ProjectPaths, force: bool = False):
    return run_or_skip("clean", params, paths, force, lambda: clean(params.clean, paths))


@stage(name="augment")
def augment_task(params: Params, paths: ProjectPaths, force: bool = False):
    return run_or_skip("augment", params, paths, force, lambda: augment(params.augment, paths, params.seed))


@stage(name="train", task_run_name="train-{kind}")
def train_task(kind: str, params: Params, paths: ProjectPaths, parent_run_id: str, force: bool = False):
    return run_or_skip(f"train_{kind}", params, paths, force,
                       lambda: train_model(kind, params, paths, parent_run_id))


@stage(name="evaluate")
def evaluate_task(params: Params, paths: ProjectPaths, force: bool = False):
    return run_or_skip("evaluate", params, paths, force, lambda: evaluate(params, paths))


@retried_stage(name="export")
def export_task(params: Params, paths: ProjectPaths, force: bool = False):
    return run_or_skip("export", params, paths, force, lambda: export(params, paths))


@stage(name="record-dvc-lock")
def record_dvc_lock_task(paths: ProjectPaths) -> list[str]:
    """Write the outputs of the stages this flow (or a stage command by hand) ran into dvc.lock, so a
    `dvc repro` right after has nothing to do; nothing to write (every stage skipped) costs no DVC call."""
    if not dvcio.is_dvc_repo(paths.root) or not (paths.root / "dvc.yaml").exists():
        return []
    todo = caching.missing_from_dvc_lock(STAGES, paths, dvcio.locked_stages(paths.root))
    if todo:
        dvcio.dvc_commit(paths.root, todo)
        caching.mark_in_dvc_lock(todo, paths)
        get_run_logger().info("dvc.lock: recorded %s", ", ".join(todo))
    return todo


def prepare(project_root: str, params_file: str | None, overrides: dict[str, Any] | None,
            source: str | None, params: Params | None = None,
            paths: ProjectPaths | None = None) -> tuple[Params, ProjectPaths]:
    """The typed params and paths: as given (``genloop run``), else read from the strings a deployment
    or a scheduled run passes."""
    paths = paths or ProjectPaths.at(project_root)
    params = params or load_params(params_file or paths.params, overrides)
    if source:
        params = params.model_copy(update={"collect": params.collect.model_copy(update={"source": source})})
    return params, paths


def after_collect(params: Params, paths: ProjectPaths, collected, overrides: dict[str, Any] | None,
                  force: bool, runner: str, started: float) -> dict[str, Any]:
    """clean -> augment -> train (VAE, GAN) -> evaluate -> export, under one MLflow parent run.

    Each task waits for the one before it (``wait_for``), so the flow run's graph draws that chain
    rather than every task hanging from collect.
    """
    logger = get_run_logger()
    prefect_artifacts.route_genloop_logs()
    # Configuration, not data: `opaque` keeps Prefect from searching it (and upstream results) for
    # strings that happen to be other tasks' results, which would draw false edges.
    cfg, where = opaque(params), opaque(paths)
    clean_state = clean_task(cfg, where, force, wait_for=after(collected), return_state=True)
    cleaned = outcome(clean_state)
    logger.info(cleaned.result.summary())
    augment_state = augment_task(cfg, where, force, wait_for=after(clean_state), return_state=True)
    augmented = outcome(augment_state)

    run_name = f"{runner}-{flow_run.get_name() or 'local'}"
    parent_run_id = tracking.start_parent_run(params.mlflow, paths, runner=runner, run_name=run_name)
    logger.info("MLflow parent run %s", parent_run_id)
    record_stage("clean", cleaned.result, params, paths, parent_run_id)
    record_stage("augment", augmented.result, params, paths, parent_run_id)
    with tracking.failed_on_error(parent_run_id):
        train_states: dict[str, State] = {}
        trained: dict[str, StageOutcome] = {}
        for kind in MODELS:  # one after the other; a failed training stops the flow here
            train_states[kind] = train_task(kind, cfg, where, parent_run_id, force, wait_for=after(augment_state),
                                            return_state=True)
            trained[kind] = outcome(train_states[kind])
        evaluate_state = evaluate_task(cfg, where, force, wait_for=after(*train_states.values()), return_state=True)
        evaluated = outcome(evaluate_state)
        export_state = export_task(cfg, where, force, wait_for=after(evaluate_state), return_state=True)
        exported = outcome(export_state)
    stages = {"clean": cleaned, "augment": augmented, **{f"train_{k}": t for k, t in trained.items()},
              "evaluate": evaluated, "export": exported}
    cached = [name for name, o in stages.items() if o.cached]
    _tag_parent(parent_run_id, cached, trained)
    record_stage("evaluate", evaluated.result, params, paths, parent_run_id)
    if len(cached) == len(stages):
        run_name = tracking.mark_all_skipped(parent_run_id, run_name, {k: t.result.run_id for k, t in trained.items()})
        logger.info("every stage skipped: MLflow parent run %r only points to the earlier runs", run_name)
    tracking.end_run(parent_run_id)
    caching.record_trained_data(paths, caching.data_identity(paths, collected.dvc_hash), parent_run_id)
    if not overrides:
        record_dvc_lock_task(where, wait_for=after(export_state))

    summary = _summary(started, collected, cleaned, trained, evaluated, exported, parent_run_id, cached)
    prefect_artifacts.publish(summary, paths.metrics, getattr(evaluated.result, "html", None),
                              tracking.setup(params.mlflow, paths))
    return summary


def _summary(started: float, collected, cleaned: StageOutcome, trained: dict[str, StageOutcome],
             evaluated: StageOutcome, exported: StageOutcome, parent_run_id: str, cached: list[str]) -> dict[str, Any]:
    """What `genloop run` prints and the flow returns."""
    return {
        "seconds": time.perf_counter() - started,
        "rows": collected.rows,
        "image_shape": f"{collected.image_shape[0]}x{collected.image_shape[1]}",
        "dvc_hash": collected.dvc_hash,
        "pulled_from": getattr(collected, "pulled_from", None),  # the DVC remote data/ came from, if pulled
        "quarantined": cleaned.result.quarantined,
        "parent_run_id": parent_run_id,
        "child_run_ids": {k: t.result.run_id for k, t in trained.items()},
        "cached_stages": cached,
        "metrics": evaluated.result.metrics,
        "classifier_accuracy": evaluated.result.classifier_accuracy,
        "onnx": {
            k: {"path": str(m.path), "max_abs_diff": max(m.max_abs_diff.values()),
                "registered": m.registration() if m.registered_name else None,
                "promotion": m.promotion.summary() if getattr(m, "promotion", None) else None}
            for k, m in exported.result.models.items()
        },
    }


def _tag_parent(parent_run_id: str, cached: list[str], trained: dict[str, StageOutcome]) -> None:
    """Say on the parent which stages were skipped and which earlier child runs stand for them."""
    tracking.set_tags(parent_run_id, {"genloop.cached_stages": ",".join(cached) or "none",
                                      **{f"genloop.reused_run.{kind}": t.result.run_id
                                         for kind, t in trained.items() if t.cached}})


@flow(name="genloop-pipeline", log_prints=True)
def pipeline(project_root: str = ".", params_file: str | None = None,
             overrides: dict[str, Any] | None = None, source: str | None = None,
             force: bool = False, params: Params | None = None, paths: ProjectPaths | None = None) -> dict[str, Any]:
    """collect -> clean -> augment -> train (VAE, GAN) -> evaluate -> export; unchanged stages are
    skipped unless ``force``. ``params``/``paths`` (typed, from ``genloop run``) take the place of
    ``project_root``/``params_file``/``overrides`` (strings, from deployments); ``overrides`` still
    says the params differ from params.yaml, so dvc.lock is left alone."""
    started = time.perf_counter()
    params, paths = prepare(project_root, params_file, overrides, source, params, paths)
    with project_lock(paths.root, "flow genloop-pipeline"):  # re-entrant: `genloop run` already holds it
        # a clone without data/ pulls data.dvc's version from the default DVC remote, unless a source was named
        collected = collect_task(params.collect, paths, pull_if_missing=source is None)
        return after_collect(params, paths, collected, overrides, force, "prefect", started)


@flow(name="genloop-loop", log_prints=True)
def loop(project_root: str = ".", params_file: str | None = None, overrides: dict[str, Any] | None = None,
         source: str | None = None, mode: str | None = None, force: bool = False):
    """One tick of the scheduled loop: collect from ``schedule.source`` (mode ``schedule.mode``); if
    the data equals what the current models were trained on, stop (Completed); else retrain,
    evaluate and export (promotion only through export's gate)."""
    logger = get_run_logger()
    started = time.perf_counter()
    params, paths = prepare(project_root, params_file, overrides, None)
    with project_lock(paths.root, "flow genloop-loop"):
        spec = source or params.schedule.source or params.collect.source
        mode = mode or params.schedule.mode
        collected = collect_task(params.collect.model_copy(update={"source": spec}), paths, mode,
                                 pull_if_missing=mode == "append")  # a clone appends to the team's data
        data_id = caching.data_identity(paths, collected.dvc_hash)
        last = caching.last_trained_data(paths)
        if last and last.get("data") == data_id and not force:
            message = (f"data unchanged ({data_id}, {collected.rows} images from {spec!r}); the models trained "
                       f"on it in MLflow run {last.get('parent_run_id')} stay; nothing to do")
            logger.info(message)
            return Completed(message=message, data={"status": "unchanged", "dvc_hash": collected.dvc_hash,
                                                     "rows": collected.rows, "parent_run_id": last.get("parent_run_id")})
        logger.info("data %s: %s (%d images); retraining",
                    "changed" if last else "never trained on", data_id, collected.rows)
        summary = after_collect(params, paths, collected, overrides, force, "prefect-loop", started)
    return {"status": "retrained", **summary}

