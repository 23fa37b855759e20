"""The Prefect flow ``genloop-pipeline``: one task per stage, each calling the stage function in genloop.

Run it with ``genloop run``, ``python flows/pipeline.py`` or ``make run``.
"""
from __future__ import annotations

import os
import time
from typing import Any

for _key, _value in {"PREFECT_SERVER_ANALYTICS_ENABLED": "false", "MLFLOW_DISABLE_TELEMETRY": "true",
                     "DVC_NO_ANALYTICS": "1", "DO_NOT_TRACK": "true"}.items():
    os.environ.setdefault(_key, _value)

from prefect import flow, get_run_logger, task  # noqa: E402
from prefect.cache_policies import NO_CACHE  # noqa: E402
from prefect.runtime import flow_run  # noqa: E402

from genloop import dvcio, tracking  # noqa: E402
from genloop.augment import augment  # noqa: E402
from genloop.clean import clean  # noqa: E402
from genloop.collect import collect  # noqa: E402
from genloop.config import Params, load_params  # noqa: E402
from genloop.evaluate import evaluate  # noqa: E402
from genloop.export import export  # noqa: E402
from genloop.paths import ProjectPaths  # noqa: E402
from genloop.train import train_model  # noqa: E402

stage = task(cache_policy=NO_CACHE)


@stage(name="collect")
def collect_task(params: Params, paths: ProjectPaths):
    return collect(params.collect, paths)


@stage(name="clean")
def clean_task(params: Params, paths: ProjectPaths):
    return clean(params.clean, paths)


@stage(name="augment")
def augment_task(params: Params, paths: ProjectPaths):
    return augment(params.augment, paths, params.seed)


@stage(name="train", task_run_name="train-{kind}")
def train_task(kind: str, params: Params, paths: ProjectPaths, parent_run_id: str):
    return train_model(kind, params, paths, parent_run_id)


@stage(name="evaluate")
def evaluate_task(params: Params, paths: ProjectPaths):
    return evaluate(params, paths)


@stage(name="export")
def export_task(params: Params, paths: ProjectPaths):
    return export(params, paths)


@stage(name="record-dvc-lock")
def record_dvc_lock_task(paths: ProjectPaths) -> bool:
    """Write the flow's outputs into dvc.lock, so a `dvc repro` right after has nothing to do."""
    if not dvcio.is_dvc_repo(paths.root) or not (paths.root / "dvc.yaml").exists():
        return False
    dvcio.dvc_commit(paths.root)
    return True


@flow(name="genloop-pipeline", log_prints=True)
def pipeline(project_root: str = ".", params_file: str | None = None,
             overrides: dict[str, Any] | None = None, source: str | None = None) -> dict[str, Any]:
    """collect -> clean -> augment -> train (VAE, GAN) -> evaluate -> export, under one MLflow parent run."""
    logger = get_run_logger()
    started = time.perf_counter()
    paths = ProjectPaths.at(project_root)
    params = load_params(params_file or paths.params, overrides)
    if source:
        params = params.model_copy(update={"collect": params.collect.model_copy(update={"source": source})})

    collected = collect_task(params, paths)
    cleaned = clean_task(params, paths)
    augment_task(params, paths)

    parent_run_id = tracking.start_parent_run(
        params.mlflow, paths, runner="prefect", run_name=f"pipeline-{flow_run.get_name() or 'local'}"
    )
    logger.info("MLflow parent run %s", parent_run_id)
    try:
        trained = {kind: train_task(kind, params, paths, parent_run_id) for kind in ("vae", "gan")}
        evaluated = evaluate_task(params, paths)
        exported = export_task(params, paths)
    except BaseException:
        tracking.end_run(parent_run_id, "FAILED")
        raise
    tracking.end_run(parent_run_id)
    if not overrides:
        record_dvc_lock_task(paths)

    return {
        "seconds": time.perf_counter() - started,
        "rows": collected.rows,
        "image_shape": f"{collected.image_shape[0]}x{collected.image_shape[1]}",
        "dvc_hash": collected.dvc_hash,
        "quarantined": cleaned.quarantined,
        "parent_run_id": parent_run_id,
        "child_run_ids": {k: t.run_id for k, t in trained.items()},
        "metrics": evaluated.metrics,
        "classifier_accuracy": evaluated.classifier_accuracy,
        "onnx": {
            k: {"path": str(m.path), "max_abs_diff": max(m.max_abs_diff.values()),
                "registered": f"{m.registered_name} v{m.registered_version}" if m.registered_name else None}
            for k, m in exported.models.items()
        },
    }


if __name__ == "__main__":
    import sys

    from genloop.cli import main

    sys.exit(main(["run", *sys.argv[1:]]))
