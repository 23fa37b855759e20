"""Find the Prefect flows in the project's ``flows/`` folder (they are not part of the installed package)."""
from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType


def load_flows_module(root: Path, name: str) -> ModuleType:
    """Import ``ROOT/flows/NAME.py`` as the module ``genloop_flows_NAME`` (a fresh import each call)."""
    path = Path(root).resolve() / "flows" / f"{name}.py"
    if not path.exists():
        raise FileNotFoundError(f"{path} not found: run genloop from the genloop project root or pass --root")
    module_name = f"genloop_flows_{name}"
    spec = importlib.util.spec_from_file_location(module_name, path)
    module = importlib.util.module_from_spec(spec)
    assert spec.loader is not None
    sys.modules[module_name] = module
    try:
        spec.loader.exec_module(module)
    except BaseException:
        sys.modules.pop(module_name, None)
        raise
    return module


def load_pipeline_flow(root: Path):
    return load_flows_module(root, "pipeline").pipeline


def load_loop_flow(root: Path):
    return load_flows_module(root, "pipeline").loop


def load_sweep_flow(root: Path):
    return load_flows_module(root, "sweep").sweep
