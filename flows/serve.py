"""Serve the genloop deployments from this process, so `prefect deployment run` has a runner.

Started by `make prefect-up` (see flows/prefect-local.sh); stops when the process stops, which
pauses the deployments until the next start.
"""
from __future__ import annotations

import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")

from prefect import serve  # noqa: E402

from pipeline import pipeline  # noqa: E402

if __name__ == "__main__":
    root = str(Path(__file__).resolve().parents[1])
    serve(
        pipeline.to_deployment(
            name="local",
            parameters={"project_root": root},
            description="The whole genloop loop on this checkout; override params with "
                        "-p overrides='{\"train.vae.epochs\": 5}'",
            tags=["genloop"],
        ),
    )
