"""The few figures people compare first, read from reports/metrics.json whatever its layout.

The report has been per model (``{"vae": {...}, "gan": {...}, "real_floor": {...}}``) and may become
flat (``vae_fid``, ``real_floor_fid``); the MLflow parent run and the Prefect artifacts both read it
through here, so a missing key is a blank cell rather than an error.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from genloop.config import MODELS

FLOOR = "real_floor"
# Shown first when present; lower is better for fid/fid_alt/kid_mean/class_tvd, higher for the rest.
PREFERRED = ("fid", "fid_alt", "kid_mean", "recognisable_share", "precision", "recall", "coverage",
             "class_tvd", "test_nll_iwae")


def _numbers(values: Any) -> dict[str, float]:
    if not isinstance(values, dict):
        return {}
    return {k: float(v) for k, v in values.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}


def by_model(report: dict[str, Any]) -> dict[str, dict[str, float]]:
    """``{"vae": {...}, "gan": {...}, "real_floor": {...}}`` from either layout of metrics.json."""
    out = {name: _numbers(report.get(name)) for name in (*MODELS, FLOOR)}
    for key, value in _numbers(report).items():  # flat layout: vae_fid, real_floor_fid
        for name in (FLOOR, *MODELS):
            if key.startswith(name + "_"):
                out[name].setdefault(key[len(name) + 1:], value)
                break
    for kind in MODELS:  # per-model floor copies: fid_real_floor
        for key, value in out[kind].items():
            if key.endswith("_" + FLOOR):
                out[FLOOR].setdefault(key[:-len(FLOOR) - 1], value)
    return out


def headline(report: dict[str, Any]) -> dict[str, dict[str, float]]:
    """``by_model`` cut to the preferred metrics any model has (all its metrics when none is known)."""
    models = by_model(report)
    present = [m for m in PREFERRED if any(m in models[name] for name in MODELS)]
    if not present:
        present = sorted({k for name in MODELS for k in models[name] if not k.endswith("_" + FLOOR)})
    return {name: {m: models[name][m] for m in present if m in models[name]} for name in models}


def read(path: Path) -> dict[str, dict[str, float]]:
    """``headline`` of the report at ``path``; empty models when it is missing or unreadable."""
    try:
        report = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        report = {}
    return headline(report if isinstance(report, dict) else {})


def flat(figures: dict[str, dict[str, float]]) -> dict[str, float]:
    """``vae_fid``, ``gan_fid``, ``real_floor_fid``, ...: names for one MLflow run's metrics."""
    return {f"{name}_{metric}": value for name, values in figures.items() for metric, value in values.items()}
