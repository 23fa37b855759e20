"""Telemetry of Prefect, MLflow and DVC switched off in one place: offline it fails noisily, and a
project's runs are nobody else's business. Every entry point (CLI, flows, server, tests) calls
``switch_off`` before importing those libraries; the Makefile exports the same variables for shells."""
from __future__ import annotations

import os
from collections.abc import Mapping, MutableMapping

QUIET_ENV = {
    "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    "MLFLOW_DISABLE_TELEMETRY": "true",
    "DO_NOT_TRACK": "true",
    "DVC_NO_ANALYTICS": "1",
    "GIT_PYTHON_REFRESH": "quiet",
    # Not telemetry, but set at the same entry points: Prefect's temporary server gets 20 s to start by
    # default, which a loaded 2-core machine overruns on a new database ("Timed out while attempting to
    # connect to ephemeral Prefect API server").
    "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "120",
}


def switch_off(environ: MutableMapping[str, str] | None = None, **extra: str) -> None:
    """Set the variables in ``environ`` (the process's by default) unless the user set them already."""
    target = os.environ if environ is None else environ
    for key, value in {**QUIET_ENV, **extra}.items():
        target.setdefault(key, value)


def quiet_env(base: Mapping[str, str] | None = None) -> dict[str, str]:
    """A copy of ``base`` (the process's environment by default) for a subprocess, telemetry off."""
    env = dict(os.environ if base is None else base)
    switch_off(env)
    return env
