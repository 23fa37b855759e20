"""Hyperparameter sweeps: expand ``sweep.space`` into trials, run one trial in its own workspace,
score it, and pick the best. The ``genloop-sweep`` flow (flows/sweep.py) spreads trials over Dask.

A trial trains on the project's cleaned (and, unless the trial changes augment, augmented) data
copied into a private folder, so trials never overwrite each other's or the project's outputs.
Each trial is one MLflow run nested under the sweep's parent run; its model runs nest under it.
"""
from __future__ import annotations

import itertools
import math
import os
import shutil
import socket
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from genloop.config import ConfigError, MlflowConfig, Params, SweepConfig, SweepRange, load_params
from genloop.config import MODELS
from genloop.paths import ProjectPaths
from genloop.config import sampling_seed

SWEEPABLE = ("train.vae.", "train.gan.", "augment.", "evaluate.", "seed")
BEST_TAG = "genloop.sweep_best"


@dataclass(frozen=True)
class Trial:
    index: int
    values: dict[str, Any]  # dotted params key -> value


@dataclass(frozen=True)
class TrialResult:
    index: int
    values: dict[str, Any]
    run_id: str
    metrics: dict[str, float]  # "vae.fid", "gan.kid_mean", ...
    score: float
    pid: int
    host: str
    seconds: float


@dataclass(frozen=True)
class SweepResult:
    parent_run_id: str
    metric: str
    direction: str
    trials: list[TrialResult]
    best: TrialResult
    seconds: float
    workers: list[str] = field(default_factory=list)


# ---- expansion ---------------------------------------------------------------------------------

def _grid_points(dim: list[Any] | SweepRange) -> list[Any]:
    if isinstance(dim, list):
        return list(dim)
    assert dim.num is not None  # SweepConfig checks this
    if dim.log:
        lo, hi = math.log(dim.low), math.log(dim.high)
        points = [math.exp(lo + (hi - lo) * i / (dim.num - 1)) for i in range(dim.num)]
    else:
        points = [dim.low + (dim.high - dim.low) * i / (dim.num - 1) for i in range(dim.num)]
    if dim.integer:
        return list(dict.fromkeys(int(round(p)) for p in points))
    return [float(f"{p:.6g}") for p in points]


def _random_point(dim: list[Any] | SweepRange, rng) -> Any:
    if isinstance(dim, list):
        return dim[int(rng.integers(len(dim)))]
    if dim.log:
        value = math.exp(rng.uniform(math.log(dim.low), math.log(dim.high)))
    else:
        value = rng.uniform(dim.low, dim.high)
    return int(round(value)) if dim.integer else float(f"{value:.6g}")


def expand(config: SweepConfig) -> list[Trial]:
    """The trials of a sweep: every grid point (at most ``n_trials``), or ``n_trials`` seeded random draws."""
    import numpy as np

    keys = list(config.space)
    if config.method == "grid":
        combos = itertools.product(*(_grid_points(config.space[k]) for k in keys))
        if config.n_trials is not None:
            combos = itertools.islice(combos, config.n_trials)
        return [Trial(i, dict(zip(keys, values))) for i, values in enumerate(combos)]
    rng = np.random.default_rng(config.seed)
    n_trials = config.n_trials or 1
    return [Trial(i, {k: _random_point(config.space[k], rng) for k in keys}) for i in range(n_trials)]


def resolve_config(params: Params, given: dict[str, Any]) -> SweepConfig:
    """params.yaml ``sweep`` with the non-None ``given`` fields replacing its own, validated, so a bad
    command-line space fails as a ConfigError naming the field, before any server or worker starts."""
    from pydantic import ValidationError

    from genloop.config import describe_errors

    merged = {**params.sweep.model_dump(), **{k: v for k, v in given.items() if v is not None}}
    try:
        config = SweepConfig.model_validate(merged)
    except ValidationError as exc:
        raise ConfigError(f"invalid sweep settings: {describe_errors(exc, 'sweep.')}") from None
    check_space(config)
    return config


def check_space(config: SweepConfig) -> None:
    """Only knobs a trial can change in its own workspace: training, augmentation, evaluation, seed."""
    for key in config.space:
        if key != "seed" and not key.startswith(SWEEPABLE[:-1]):
            raise ConfigError(
                f"sweep.space.{key}: a sweep can vary train.vae.*, train.gan.*, augment.*, evaluate.* or seed; "
                "other stages (collect, clean, export) are shared by all trials")


def models_for(values: dict[str, Any], metric: str) -> tuple[str, ...]:
    """Train only what the trial changes (plus the metric's model); both when a shared knob changes."""
    kinds = {metric.split(".")[0]}
    for key in values:
        if key.startswith("train.vae."):
            kinds.add("vae")
        elif key.startswith("train.gan."):
            kinds.add("gan")
        else:
            kinds.update(MODELS)
    return tuple(k for k in MODELS if k in kinds)


def trial_params(params_file: Path, overrides: dict[str, Any] | None, trial: Trial, root: Path,
                 threads: int = 1) -> Params:
    """The trial's full params, validated (a bad value fails before any trial starts); the MLflow
    store is made absolute so a trial in another folder logs to the project's store."""
    from genloop.io.tracking import tracking_uri

    params = load_params(params_file, {**(overrides or {}), **trial.values})
    artifacts = Path(params.mlflow.artifact_root)
    mlflow = MlflowConfig(
        tracking_uri=tracking_uri(params.mlflow, root),
        artifact_root=str(artifacts if artifacts.is_absolute() else (root / artifacts).resolve()),
        experiment=params.mlflow.experiment,
    )
    return params.model_copy(update={"mlflow": mlflow, "train": params.train.model_copy(update={"threads": threads})})


# ---- one trial ---------------------------------------------------------------------------------

def prepare_workspace(project: ProjectPaths, dest: Path, reaugment: bool) -> ProjectPaths:
    """A private project folder holding a copy of the shared inputs a trial reads."""
    missing = [p for p in (project.clean, project.augment) if not p.exists()]
    if missing:
        raise FileNotFoundError(f"{missing[0]} is missing; run `genloop run` (or collect, clean, augment) "
                                "before a sweep")
    trial = ProjectPaths.at(dest)
    shutil.copytree(project.clean, trial.clean)
    if not reaugment:
        shutil.copytree(project.augment, trial.augment)
    if project.classifier.exists():  # reused only if its key matches the trial's data and settings
        trial.classifier.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(project.classifier, trial.classifier)
    if project.data_dvc.exists():  # lineage tags name the data version the trial trained on
        shutil.copy2(project.data_dvc, trial.data_dvc)
    return trial


def score_models(params: Params, paths: ProjectPaths, kinds: tuple[str, ...]) -> dict[str, float]:
    """The evaluate stage's generator metrics for each trained model, as ``MODEL.METRIC``, on the same
    classifier features (the project's saved classifier when its key matches, so every trial is
    scored by the same one)."""
    import torch

    from genloop.stages.evaluate import sample
    from genloop.evaluation.scoring import load_evaluation_data, score

    torch.set_num_threads(params.train.threads or 1)
    data = load_evaluation_data(params, paths)
    scores: dict[str, float] = {}
    for kind in kinds:
        fake = sample(paths.train(kind) / "model.pt", len(data.held_out), sampling_seed(params.seed))
        metrics, _ = score(data, fake, params.evaluate, params.seed)
        scores.update({f"{kind}.{k}": float(v) for k, v in metrics.items()})
    return scores


def run_trial(root: str | Path, params_file: str | Path | None, overrides: dict[str, Any] | None,
              trial: Trial, parent_run_id: str, metric: str, threads: int = 1,
              scratch: str | Path | None = None, keep_workspace: bool = False) -> TrialResult:
    """Train and score one configuration as an MLflow run under ``parent_run_id``."""
    from genloop.io import tracking
    from genloop.stages.augment import augment
    from genloop.stages.train import train_model

    started = time.perf_counter()
    project = ProjectPaths.at(root)
    params = trial_params(Path(params_file) if params_file else project.params, overrides, trial, project.root,
                          threads)
    reaugment = any(k.startswith("augment.") or k == "seed" for k in trial.values)
    scratch_dir = Path(scratch) if scratch else project.sweeps
    scratch_dir.mkdir(parents=True, exist_ok=True)
    workspace = Path(tempfile.mkdtemp(prefix=f"trial-{trial.index:03d}-", dir=scratch_dir))
    experiment_id = tracking.setup(params.mlflow, project)
    tags = {"genloop.sweep_trial": str(trial.index), "genloop.worker_pid": str(os.getpid()),
            "genloop.worker_host": socket.gethostname()}
    try:
        with tracking.child_run(experiment_id, parent_run_id, f"trial-{trial.index}", project,
                                params=trial.values, tags=tags) as run_id:
            paths = prepare_workspace(project, workspace, reaugment)
            if reaugment:
                augment(params.augment, paths, params.seed)
            trained = {kind: train_model(kind, params, paths, parent_run_id=run_id)
                       for kind in models_for(trial.values, metric)}
            metrics = score_models(params, paths, tuple(trained))
            for kind, t in trained.items():
                metrics.update({f"{kind}.{k}": float(v) for k, v in t.final_metrics.items() if k != "images_per_s"})
            if metric not in metrics:
                raise ConfigError(f"sweep.metric {metric!r} is not measured; choose one of "
                                  f"{', '.join(sorted(metrics))}")
            tracking.log_metrics(run_id, metrics)
    finally:
        if not keep_workspace:
            shutil.rmtree(workspace, ignore_errors=True)
    return TrialResult(trial.index, trial.values, run_id, metrics, metrics[metric], os.getpid(),
                       socket.gethostname(), time.perf_counter() - started)


# ---- the sweep around the trials ---------------------------------------------------------------

def best_of(results: list[TrialResult], direction: str) -> TrialResult:
    finite = [r for r in results if math.isfinite(r.score)]
    if not finite:
        raise ValueError(f"none of the {len(results)} finished trial(s) has a finite score (failed trials "
                         "are logged above); check the space for values that make training diverge")
    return (min if direction == "minimize" else max)(finite, key=lambda r: r.score)


def start_sweep_run(params: Params, config: SweepConfig, paths: ProjectPaths, run_name: str,
                    trials: list[Trial]) -> str:
    from genloop.io import tracking

    return tracking.start_parent_run(params.mlflow, paths, runner="prefect-sweep", run_name=run_name, tags={
        "genloop.sweep_method": config.method, "genloop.sweep_metric": config.metric,
        "genloop.sweep_direction": config.direction, "genloop.sweep_trials": str(len(trials)),
    })


def finish_sweep_run(parent_run_id: str, result: SweepResult, table: str) -> None:
    """Tag the best child and the parent (best run id, best params), log the table, close the parent."""
    import json

    from genloop.io import tracking

    best = result.best
    for r in result.trials:
        tracking.set_tags(r.run_id, {BEST_TAG: "true" if r.run_id == best.run_id else "false"})
    tracking.set_tags(parent_run_id, {"genloop.sweep_best_run_id": best.run_id,
                                      "genloop.sweep_best_params": json.dumps(best.values, sort_keys=True)})
    tracking.log_params(parent_run_id, {f"best.{k}": v for k, v in best.values.items()})
    tracking.log_metrics(parent_run_id, {f"best_{result.metric.replace('.', '_')}": best.score})
    tracking.log_text(parent_run_id, table, "sweep.txt")
    tracking.log_dict(parent_run_id, {"trials": [r.__dict__ for r in result.trials], "best_run_id": best.run_id},
                      "sweep.json")
    tracking.end_run(parent_run_id)


def results_table(result: SweepResult) -> str:
    keys = list(result.trials[0].values) if result.trials else []
    header = ["trial", *keys, result.metric, "seconds", "worker", "run"]
    rows = [[str(r.index), *(f"{r.values[k]:.4g}" if isinstance(r.values[k], float) else str(r.values[k])
                             for k in keys), f"{r.score:.4g}", f"{r.seconds:.1f}", f"{r.host}:{r.pid}",
             r.run_id[:8] + (" *best" if r.run_id == result.best.run_id else "")]
            for r in sorted(result.trials, key=lambda r: r.index)]
    widths = [max(len(h), *(len(row[i]) for row in rows)) for i, h in enumerate(header)]
    lines = ["  ".join(h.ljust(w) for h, w in zip(header, widths)), "  ".join("-" * w for w in widths)]
    lines += ["  ".join(c.ljust(w) for c, w in zip(row, widths)) for row in rows]
    return "\n".join(line.rstrip() for line in lines)
