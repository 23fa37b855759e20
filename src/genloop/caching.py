"""Skip a stage whose inputs did not change, the way ``dvc repro`` does, for the Prefect flow.

A stage's key covers its params sections, the content of its dependencies, and the source of
the genloop modules it runs (followed through their genloop imports). After a successful run a
stamp under ``outputs/.stamps/`` records that key, a fingerprint of the outputs and the stage's
result; a later run with the same key whose outputs are still on disk as they were returns that
result instead of running again. Pure files and hashes: no Prefect, no MLflow here.
"""
from __future__ import annotations

import ast
import hashlib
import json
import pickle
import time
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

from genloop import atomic
from genloop.config import Params
from genloop.paths import ProjectPaths

STAMP_DIR = Path("outputs") / ".stamps"
STAMP_VERSION = 1


@dataclass(frozen=True)
class StageSpec:
    """What a stage reads and writes; mirrors its entry in dvc.yaml."""

    name: str
    params: tuple[str, ...]  # dotted params keys, e.g. "train.vae"
    deps: tuple[str, ...]  # project-relative files or folders it reads
    outs: tuple[str, ...]  # project-relative files or folders it writes
    code: tuple[str, ...]  # genloop modules it runs (their genloop imports are followed)


def _train_spec(kind: str) -> StageSpec:
    return StageSpec(
        f"train_{kind}",
        ("seed", "train.device", "train.threads", "train.compile", "train.sample_grid", f"train.{kind}", "mlflow"),
        ("outputs/augment", "outputs/clean"),
        (f"outputs/train/{kind}",),
        ("genloop.train", f"genloop.models.{kind}"),
    )


STAGES: dict[str, StageSpec] = {
    "clean": StageSpec("clean", ("clean",), ("data",),
                       ("outputs/clean", "reports/validation.json", "reports/data_docs", "reports/near_duplicates.csv"),
                       ("genloop.clean",)),
    "augment": StageSpec("augment", ("seed", "augment"), ("outputs/clean",), ("outputs/augment",),
                         ("genloop.augment",)),
    "train_vae": _train_spec("vae"),
    "train_gan": _train_spec("gan"),
    "evaluate": StageSpec("evaluate", ("seed", "train.threads", "evaluate", "mlflow"),
                          ("outputs/clean", "outputs/train/vae/model.pt", "outputs/train/gan/model.pt",
                           "outputs/train/vae/history.csv", "outputs/train/gan/history.csv"),
                          ("reports/metrics.json", "reports/index.html", "reports/figures",
                           "outputs/evaluate/classifier.pt"),
                          ("genloop.evaluate",)),
    "export": StageSpec("export", ("seed", "evaluate", "export", "mlflow"),
                        ("outputs/train/vae/model.pt", "outputs/train/gan/model.pt", "outputs/clean",
                         "reports/metrics.json"),
                        ("models",), ("genloop.export",)),
}


@dataclass(frozen=True)
class CacheCheck:
    stage: str
    key: str
    hit: bool
    reason: str  # why it must run, or "inputs unchanged"
    result: Any = None
    inputs: dict[str, Any] | None = None


@dataclass(frozen=True)
class StageOutcome:
    """What a flow task hands on: the stage's result, and whether it came from the stamp."""

    result: Any
    cached: bool
    reason: str


# ---- fingerprints ------------------------------------------------------------------------------

def _is_scratch(path: Path) -> bool:
    """Half-written files of an atomic write, or staging files a stage removes itself."""
    return path.name.startswith(".") and path.suffix in (".tmp", ".staged")


def path_fingerprint(path: Path) -> str:
    """sha256 over the relative names and contents of a file or a folder tree; "missing" if absent."""
    if not path.exists():
        return "missing"
    h = hashlib.sha256()
    files = [path] if path.is_file() else sorted(
        p for p in path.rglob("*") if p.is_file() and "__pycache__" not in p.parts and not _is_scratch(p))
    for file in files:
        h.update(file.relative_to(path).as_posix().encode() if file != path else b".")
        h.update(b"\0")
        with file.open("rb") as f:
            while chunk := f.read(1 << 20):
                h.update(chunk)
        h.update(b"\0")
    return h.hexdigest()


def params_section(params: Params, dotted: str) -> Any:
    node: Any = params.model_dump(mode="json")
    for part in dotted.split("."):
        node = node[part]
    return node


PACKAGE_DIR = Path(__file__).resolve().parent


def _module_file(name: str) -> Path | None:
    """The source file of a genloop module, found on disk without importing it (None for non-modules)."""
    parts = name.split(".")[1:]
    base = PACKAGE_DIR.joinpath(*parts)
    for file in (base.with_suffix(".py"), base / "__init__.py"):
        if parts and file.is_file():
            return file
    return PACKAGE_DIR / "__init__.py" if not parts else None


def _genloop_imports(file: Path, package: str) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(file.read_text(), str(file))):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            if node.module == "genloop":
                names.update(f"genloop.{a.name}" for a in node.names)
            elif node.module.startswith("genloop."):
                names.add(node.module)
                names.update(f"{node.module}.{a.name}" for a in node.names)  # submodules imported by name
        elif isinstance(node, ast.ImportFrom) and node.level:  # relative import inside a subpackage
            base = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
            names.add(f"{base}.{node.module}" if node.module else base)
        elif isinstance(node, ast.Import):
            names.update(a.name for a in node.names if a.name.startswith("genloop."))
    return names


def code_files(modules: tuple[str, ...]) -> set[Path]:
    """The source files of ``modules`` and of every genloop module they import, transitively."""
    seen: dict[str, Path] = {}
    todo = list(modules)
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        file = _module_file(name)
        if file is None:  # an imported name that is a function or class, not a module
            continue
        seen[name] = file
        package = name if file.name == "__init__.py" else name.rpartition(".")[0]
        todo.extend(_genloop_imports(file, package) - seen.keys())
    return {f.resolve() for f in seen.values()}


@lru_cache(maxsize=None)
def code_fingerprint(modules: tuple[str, ...]) -> str:
    """sha256 of the source of ``modules`` and every genloop module they import (once per process)."""
    h = hashlib.sha256()
    for file in sorted(code_files(modules)):
        h.update(file.relative_to(PACKAGE_DIR).as_posix().encode() + b"\0" + file.read_bytes() + b"\0")
    return h.hexdigest()


def stage_inputs(spec: StageSpec, params: Params, paths: ProjectPaths) -> dict[str, Any]:
    """Everything the stage's output depends on, each part hashed on its own so a miss can say which."""
    return {
        "params": {k: hashlib.sha256(json.dumps(params_section(params, k), sort_keys=True).encode()).hexdigest()
                   for k in spec.params},
        "deps": {d: path_fingerprint(paths.root / d) for d in spec.deps},
        "code": code_fingerprint(spec.code),
    }


def outputs_fingerprint(spec: StageSpec, paths: ProjectPaths) -> dict[str, str]:
    return {o: path_fingerprint(paths.root / o) for o in spec.outs}


def _key(inputs: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(inputs, sort_keys=True).encode()).hexdigest()


# ---- stamps ------------------------------------------------------------------------------------

def stamp_files(spec: StageSpec, paths: ProjectPaths) -> tuple[Path, Path]:
    folder = paths.root / STAMP_DIR
    return folder / f"{spec.name}.json", folder / f"{spec.name}.pkl"


def _difference(old: dict[str, Any], new: dict[str, Any], outs_then: dict[str, str], outs_now: dict[str, str]) -> str:
    changed = [f"params {k}" for k, v in new["params"].items() if old.get("params", {}).get(k) != v]
    changed += [f"{d}" for d, v in new["deps"].items() if old.get("deps", {}).get(d) != v]
    if old.get("code") != new["code"]:
        changed.append("code")
    if changed:
        return "changed: " + ", ".join(changed)
    gone = [o for o, v in outs_now.items() if v == "missing" and outs_then.get(o) != "missing"]
    if gone:
        return "output(s) missing: " + ", ".join(gone)
    edited = [o for o, v in outs_now.items() if outs_then.get(o) != v]
    return "output(s) changed on disk: " + ", ".join(edited) if edited else ""


def check(spec: StageSpec, params: Params, paths: ProjectPaths) -> CacheCheck:
    """Whether ``spec`` can be skipped: same key as its stamp and its outputs as the stamp left them."""
    inputs = stage_inputs(spec, params, paths)
    key = _key(inputs)
    meta_file, result_file = stamp_files(spec, paths)
    if not meta_file.exists() or not result_file.exists():
        return CacheCheck(spec.name, key, False, "no earlier run recorded", inputs=inputs)
    try:
        meta = json.loads(meta_file.read_text())
    except (OSError, ValueError):
        return CacheCheck(spec.name, key, False, f"{meta_file} unreadable", inputs=inputs)
    if meta.get("version") != STAMP_VERSION:
        return CacheCheck(spec.name, key, False, "stamp from another genloop version", inputs=inputs)
    reason = _difference(meta.get("inputs", {}), inputs, meta.get("outs", {}), outputs_fingerprint(spec, paths))
    if reason:
        return CacheCheck(spec.name, key, False, reason, inputs=inputs)
    try:
        result = pickle.loads(result_file.read_bytes())
    except Exception as exc:  # a result class that changed shape: run again rather than fail
        return CacheCheck(spec.name, key, False, f"stored result unreadable ({exc.__class__.__name__})", inputs=inputs)
    return CacheCheck(spec.name, key, True, "inputs unchanged", result=result, inputs=inputs)


def forget(spec: StageSpec, paths: ProjectPaths) -> None:
    """Drop the stamp before running, so a crash half-way never leaves a stamp over new outputs."""
    for file in stamp_files(spec, paths):
        file.unlink(missing_ok=True)


def record(spec: StageSpec, paths: ProjectPaths, checked: CacheCheck, result: Any) -> Path:
    """Stamp a finished stage with the inputs it ran on (as checked before it ran) and its outputs now."""
    meta_file, result_file = stamp_files(spec, paths)
    atomic.write_bytes(result_file, pickle.dumps(result))
    atomic.write_json(meta_file, {
        "version": STAMP_VERSION, "stage": spec.name, "key": checked.key, "inputs": checked.inputs,
        "outs": outputs_fingerprint(spec, paths), "finished": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    })
    return meta_file


# ---- the data the deployed models were trained on ----------------------------------------------

def data_identity(paths: ProjectPaths, dvc_hash: str) -> str:
    """The DVC md5 of data/ when it is versioned, else a content hash of data/."""
    return dvc_hash if dvc_hash and dvc_hash != "untracked" else "sha256:" + path_fingerprint(paths.data)


def trained_file(paths: ProjectPaths) -> Path:
    return paths.root / STAMP_DIR / "trained.json"


def record_trained_data(paths: ProjectPaths, data_id: str, parent_run_id: str) -> None:
    """Remember which data the current models/ were trained and exported from."""
    atomic.write_json(trained_file(paths), {
        "data": data_id, "parent_run_id": parent_run_id,
        "finished": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    })


def last_trained_data(paths: ProjectPaths) -> dict[str, str] | None:
    file = trained_file(paths)
    if not file.exists():
        return None
    try:
        return json.loads(file.read_text())
    except (OSError, ValueError):
        return None
