"""The one logging hook: what a finished stage leaves in MLflow, whichever route ran it.

The Prefect flow passes its parent run; a stage command under `dvc repro` or `dvc exp run` passes
none and gets the DVC route's parent (one per data hash and commit, and per experiment), so both
routes' parent runs carry the same artifacts and headline metrics. Training, evaluation and export
still log their own child runs (their curves, samples and registered models).
"""
from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any

from genloop.config import Params
from genloop.io import tracking
from genloop.paths import ProjectPaths


def parent_run(params: Params, paths: ProjectPaths, parent_run_id: str | None = None) -> str:
    """The flow's parent run when it gives one, else the DVC route's."""
    return parent_run_id or tracking.parent_for_dvc(params.mlflow, paths)


def record_reports(reports: Iterable[Path | None], params: Params, paths: ProjectPaths,
                   parent_run_id: str | None = None) -> tuple[str, list[Path]]:
    """Attach data reports (files or folders) to the parent run; returns (run id, what was logged)."""
    run_id = parent_run(params, paths, parent_run_id)
    return run_id, tracking.log_data_reports(run_id, list(reports))


def record_stage(name: str, result: Any, params: Params, paths: ProjectPaths,
                 parent_run_id: str | None = None) -> tuple[str, list[str]]:
    """Record stage ``name``'s result on the parent run: clean's reports, augment's preview, the
    evaluation's headline metrics (``vae_fid``, ``gan_fid``, ...). Returns (run id, what was logged)."""
    run_id = parent_run(params, paths, parent_run_id)
    if name == "clean":
        return run_id, [p.name for p in tracking.log_data_reports(run_id, list(result.reports))]
    if name == "augment":
        return run_id, [p.name for p in tracking.log_data_reports(run_id, [result.preview])]
    if name == "evaluate":
        return run_id, sorted(tracking.log_parent_metrics(run_id, paths.metrics))
    return run_id, []
