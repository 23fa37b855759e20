"""Serve the genloop deployments from this process, so `prefect deployment run` has a runner.

Started as `python -m flows.serve` in the project root by `make prefect-up` (flows/prefect-local.sh);
stops when the process stops, which pauses the deployments until the next start. Deployments:

- genloop-pipeline/local  the whole loop (unchanged stages skipped; -p force=true runs all)
- genloop-sweep/local     a hyperparameter sweep on Dask (params.yaml `sweep`)
- genloop-loop/local      one tick of the scheduled loop, on demand
- genloop-loop/scheduled  the same on params.yaml `schedule.cron`; only when it is set
- genloop-synthesize/local  a labelled synthetic data set from a registered model version (-p version=N -p images=M)
"""
from __future__ import annotations

from pathlib import Path

from genloop.io.telemetry import switch_off

switch_off()  # before prefect is imported

from prefect import serve  # noqa: E402
from prefect.types.entrypoint import EntrypointType  # noqa: E402

from flows.pipeline import loop, pipeline  # noqa: E402
from flows.sweep import sweep  # noqa: E402
from flows.synthesize import synthesize_flow  # noqa: E402

# Entrypoints by module name (flows.pipeline.pipeline), not by file: the runner and the sweep's Dask
# workers import the flows as the installed package ``flows``.
BY_MODULE = {"entrypoint_type": EntrypointType.MODULE_PATH}


def deployments(root: Path) -> list:
    from prefect.schedules import Cron

    from genloop.config import load_params

    schedule = load_params(root / "params.yaml").schedule
    where = {"project_root": str(root)}
    found = [
        pipeline.to_deployment(
            name="local", parameters=where, tags=["genloop"], **BY_MODULE,
            description="The whole genloop loop on this checkout; override params with "
                        "-p overrides='{\"train.vae.images\": 50000}', run every stage with -p force=true",
        ),
        sweep.to_deployment(
            name="local", parameters=where, tags=["genloop"], **BY_MODULE,
            description="Hyperparameter sweep (params.yaml `sweep`) on a local Dask cluster, or "
                        "-p dask_address=tcp://HOST:8786; e.g. -p space='{\"train.vae.beta\": [0.5, 1.0]}'",
        ),
        loop.to_deployment(
            name="local", parameters=where, tags=["genloop"], **BY_MODULE,
            description="One tick of the scheduled loop: collect, stop if the data did not change, "
                        "else retrain, evaluate, export (promotion through export's gate)",
        ),
        synthesize_flow.to_deployment(
            name="local", parameters=where, tags=["genloop"], **BY_MODULE,
            description="A labelled synthetic data set from a registered class-conditional model version: "
                        "-p version=N -p images=M (DVC-versioned, logged under the version's MLflow run)",
        ),
    ]
    if schedule.cron:
        found.append(loop.to_deployment(
            name="scheduled", parameters=where, tags=["genloop", "scheduled"], **BY_MODULE,
            schedule=Cron(schedule.cron, timezone=schedule.timezone),
            description=f"The loop on schedule.cron {schedule.cron!r} ({schedule.timezone}) from params.yaml",
        ))
    return found


if __name__ == "__main__":
    root = Path.cwd()  # the project: flows/prefect-local.sh starts this from its root
    found = deployments(root)
    print("serving " + ", ".join(f"{d.flow_name}/{d.name}" for d in found), flush=True)
    serve(*found)
