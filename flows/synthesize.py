"""The synthetic data release as a Prefect flow: `genloop synthesize` for deployments and schedules.

One task, the stage function itself (genloop.stages.synthesize): sample a registered class-conditional
model version, write synthetic/<name>-v<N>/, version it with DVC, log it under the version's MLflow
run. Run it from the served deployment:

    prefect deployment run 'genloop-synthesize/local' -p version=3 -p images=10000
"""
from __future__ import annotations

from typing import Any

from genloop.io.telemetry import switch_off

switch_off()  # before prefect is imported

from prefect import flow, get_run_logger, task  # noqa: E402
from prefect.cache_policies import NO_CACHE  # noqa: E402

from genloop.config import Params, load_params  # noqa: E402
from genloop.io.lock import project_lock  # noqa: E402
from genloop.paths import ProjectPaths  # noqa: E402
from genloop.stages.synthesize import SynthesizeResult, synthesize  # noqa: E402


@task(name="synthesize", cache_policy=NO_CACHE)
def synthesize_task(params: Params, paths: ProjectPaths, version: int, images: int, model: str | None = None,
                    seed: int | None = None) -> SynthesizeResult:
    """Never cached: a release is an act (a new folder, DVC version and MLflow run), not a pure result."""
    result = synthesize(params, paths, version, images, model, seed)
    m = result.manifest
    get_run_logger().info("%s v%s: %d labelled images in %s at ε %s, δ %s (DVC %s, MLflow run %s)",
                          m["model"], m["version"], m["images"], result.data, m["epsilon"], m["delta"],
                          result.dvc_hash or "untracked", result.run_id)
    return result


@flow(name="genloop-synthesize", log_prints=True)
def synthesize_flow(version: int, images: int, project_root: str = ".", params_file: str | None = None,
                    overrides: dict[str, Any] | None = None, model: str | None = None,
                    seed: int | None = None) -> dict[str, Any]:
    """A labelled synthetic data set from registered model ``version`` (default model: export.gan_model_name)."""
    paths = ProjectPaths.at(project_root)
    params = load_params(params_file or paths.params, overrides)
    with project_lock(paths.root, "flow genloop-synthesize"):
        result = synthesize_task(params, paths, version, images, model, seed)
    return {**result.manifest, "data": str(result.data), "dvc_hash": result.dvc_hash, "run_id": result.run_id}
