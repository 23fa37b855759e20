"""The Prefect flow ``genloop-sweep``: a grid or random search over params, one trial per Dask task.

Trials run on a Dask LocalCluster (processes, ``sweep.workers`` workers, 1 thread each) or on an
existing cluster (``dask_address``, e.g. tcp://scheduler:8786). Each trial is an MLflow run nested
under one sweep parent run; the best is tagged ``genloop.sweep_best=true``.

Run it with ``genloop sweep`` or the served deployment ``genloop-sweep/local``. Dask workers talk
to the Prefect API the flow uses, so run it against a server (``genloop sweep`` starts one when
PREFECT_API_URL is unset) or every worker would start a temporary server of its own.
"""
from __future__ import annotations

import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from genloop.io.telemetry import switch_off

switch_off()  # before prefect is imported

from prefect import flow, get_run_logger, task, unmapped  # noqa: E402
from prefect.cache_policies import NO_CACHE  # noqa: E402
from prefect.runtime import flow_run  # noqa: E402

from genloop.pipeline import trials as sweeping  # noqa: E402
from genloop.config import load_params  # noqa: E402
from genloop.paths import ProjectPaths  # noqa: E402
from genloop.io.tracking import failed_on_error  # noqa: E402
from genloop.pipeline.transient import retry_if_transient  # noqa: E402

@task(name="trial", task_run_name="trial-{trial.index}", cache_policy=NO_CACHE, retries=1,
      retry_delay_seconds=2, retry_condition_fn=retry_if_transient)
def trial_task(root: str, params_file: str | None, overrides: dict[str, Any] | None, trial: sweeping.Trial,
               parent_run_id: str, metric: str, threads: int) -> sweeping.TrialResult:
    return sweeping.run_trial(root, params_file, overrides, trial, parent_run_id, metric, threads)


@contextmanager
def prefect_api() -> Iterator[str]:
    """The Prefect API to run against: PREFECT_API_URL when set, else one temporary server for this
    process, exported so that Dask worker processes use it too instead of each starting its own."""
    from prefect.settings import PREFECT_API_URL, temporary_settings

    if os.environ.get("PREFECT_API_URL"):
        yield os.environ["PREFECT_API_URL"]
        return
    from prefect.server.api.server import SubprocessASGIServer

    server = SubprocessASGIServer()
    server.start(timeout=120)
    os.environ["PREFECT_API_URL"] = server.api_url
    try:
        with temporary_settings({PREFECT_API_URL: server.api_url}):
            yield server.api_url
    finally:
        from prefect.events.worker import EventsWorker
        from prefect.logging.handlers import APILogWorker

        for worker in (APILogWorker, EventsWorker):  # send what is queued while the server still listens
            worker.drain_all(timeout=10)
        os.environ.pop("PREFECT_API_URL", None)
        server.stop()


def dask_runner(address: str | None, workers: int):
    from prefect_dask import DaskTaskRunner

    if address:
        return DaskTaskRunner(address=address)
    return DaskTaskRunner(cluster_kwargs={"n_workers": workers, "threads_per_worker": 1, "processes": True,
                                          "dashboard_address": None})


@flow(name="genloop-sweep-trials")
def run_trials(root: str, params_file: str | None, overrides: dict[str, Any] | None,
               trials: list[sweeping.Trial], parent_run_id: str, metric: str, threads: int):
    """Every trial as a task on this flow's Dask task runner; failed trials are reported, not fatal."""
    logger = get_run_logger()
    futures = trial_task.map(unmapped(root), unmapped(params_file), unmapped(overrides), trials,
                             unmapped(parent_run_id), unmapped(metric), unmapped(threads))
    results, failed = [], []
    for trial, future in zip(trials, futures):
        future.wait()
        if future.state.is_completed():
            results.append(future.result())
        else:
            failed.append(trial.index)
            logger.warning("trial %d %s failed: %s", trial.index, trial.values, future.state.message)
    return results, failed


@flow(name="genloop-sweep", log_prints=True)
def sweep(project_root: str = ".", params_file: str | None = None, overrides: dict[str, Any] | None = None,
          method: str | None = None, n_trials: int | None = None, space: dict[str, Any] | None = None,
          metric: str | None = None, direction: str | None = None, dask_address: str | None = None,
          workers: int | None = None) -> dict[str, Any]:
    """Search ``space`` (default: params.yaml ``sweep``); arguments given here replace its fields."""
    logger = get_run_logger()
    started = time.perf_counter()
    paths = ProjectPaths.at(project_root)
    params_path = params_file or str(paths.params)
    params = load_params(params_path, overrides)
    given = {"method": method, "n_trials": n_trials, "space": space, "metric": metric, "direction": direction,
             "dask_address": dask_address, "workers": workers}
    config = sweeping.resolve_config(params, given)
    trials = sweeping.expand(config)
    for trial in trials:  # a bad value fails here, before any worker starts
        sweeping.trial_params(Path(params_path), overrides, trial, paths.root)
    where = config.dask_address or f"a local Dask cluster of {config.workers} worker processes"
    logger.info("%s sweep of %d trials over %s on %s; metric %s (%s)", config.method, len(trials),
                ", ".join(config.space), where, config.metric, config.direction)

    parent_run_id = sweeping.start_sweep_run(params, config, paths, f"sweep-{flow_run.get_name() or 'local'}", trials)
    with failed_on_error(parent_run_id):
        results, failed = run_trials.with_options(task_runner=dask_runner(config.dask_address, config.workers))(
            str(paths.root), params_path, overrides, trials, parent_run_id, config.metric, config.threads_per_trial)
        best = sweeping.best_of(results, config.direction)
    result = sweeping.SweepResult(parent_run_id, config.metric, config.direction, results, best,
                                  time.perf_counter() - started, sorted({f"{r.host}:{r.pid}" for r in results}))
    table = sweeping.results_table(result)
    sweeping.finish_sweep_run(parent_run_id, result, table)
    print(f"sweep {parent_run_id}: {len(results)} of {len(trials)} trials finished"
          + (f" (failed: {failed})" if failed else "") + f" on {len(result.workers)} worker process(es)\n{table}")
    return {
        "parent_run_id": parent_run_id, "metric": config.metric, "direction": config.direction,
        "best_run_id": best.run_id, "best_params": best.values, "best_score": best.score,
        "trials": [r.__dict__ for r in results], "failed": failed, "workers": result.workers,
        "seconds": result.seconds, "table": table,
    }

