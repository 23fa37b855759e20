"""Find the Prefect flow in the project's ``flows/`` folder (it is not part of the installed package)."""
from __future__ import annotations

import importlib.util
from pathlib import Path


def load_pipeline_flow(root: Path):
    path = root / "flows" / "pipeline.py"
    if not path.exists():
        raise FileNotFoundError(f"{path} not found: run `genloop run` from the genloop project root or pass --root")
    spec = importlib.util.spec_from_file_location("genloop_flows_pipeline", path)
    module = importlib.util.module_from_spec(spec)
    assert spec.loader is not None
    spec.loader.exec_module(module)
    return module.pipeline
