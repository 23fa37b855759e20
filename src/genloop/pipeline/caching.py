"""Skip a stage whose inputs did not change, the way ``dvc repro`` does, for the Prefect flow.

Each stage's params, dependencies and outputs are read from dvc.yaml, the one place they are
declared. A stage's key covers its params sections, the content of its dependencies, and the source
of the genloop modules dvc.yaml lists for it (followed through their genloop imports). After a successful run a
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
from collections.abc import Callable

from genloop.io import atomic
from genloop.config import Params
from genloop.paths import ProjectPaths

PACKAGE_DIR = Path(__file__).resolve().parents[1]  # src/genloop
STAMP_VERSION = 1


@dataclass(frozen=True)
class StageSpec:
    """What a stage reads and writes, as its entry in dvc.yaml declares it."""

    name: str
    params: tuple[str, ...]  # dotted params keys, e.g. "train.vae"
    deps: tuple[str, ...]  # project-relative files or folders it reads (source files excluded)
    outs: tuple[str, ...]  # project-relative files or folders it writes (outs, metrics, plots)
    code: tuple[str, ...]  # genloop modules of its source deps (their genloop imports are followed)


# ---- the stage table, read from dvc.yaml ------------------------------------------------------------

DVC_FILE = "dvc.yaml"
PARAMS_FILE = "params.yaml"
SOURCE_DIR = "src/"


def dvc_file(root: Path) -> Path:
    """The project's dvc.yaml, else the one of the checkout genloop runs from (a bare project folder,
    as in tests, runs the stages of the code it imports)."""
    for candidate in (Path(root) / DVC_FILE, PACKAGE_DIR.parents[1] / DVC_FILE):
        if candidate.is_file():
            return candidate
    raise FileNotFoundError(f"no {DVC_FILE} in {root} or beside the genloop sources ({PACKAGE_DIR.parents[1]}); "
                            "the flow reads its stages from it")


def _names(items: Any, field: str, where: str) -> list[str]:
    """dvc.yaml list entries are a path, or a one-key mapping from the path to its options."""
    if items is None:
        return []
    if not isinstance(items, list):
        raise ValueError(f"{where}: {field} must be a list")
    return [next(iter(i)) if isinstance(i, dict) else str(i) for i in items]


def _params(items: Any, where: str) -> tuple[str, ...]:
    """Keys of params.yaml; ``{params.yaml: [keys]}`` is the long form of the same."""
    keys: list[str] = []
    for item in items or []:
        if isinstance(item, dict):
            for file, listed in item.items():
                if file != PARAMS_FILE:
                    raise ValueError(f"{where}: params from {file!r}; genloop reads only {PARAMS_FILE}")
                keys.extend(str(k) for k in listed or [])
        else:
            keys.append(str(item))
    return tuple(keys)


def _source_modules(dep: str) -> list[str]:
    """``src/genloop/core/models/vae.py`` -> ``genloop.core.models.vae``; a source folder -> each module in it."""
    rel = Path(dep[len(SOURCE_DIR):])
    if rel.suffix == ".py":
        files = [rel]
    else:
        folder = PACKAGE_DIR.parent / rel
        files = [f.relative_to(PACKAGE_DIR.parent) for f in sorted(folder.rglob("*.py"))]
    return [".".join(f.with_suffix("").parts).removesuffix(".__init__") for f in files]


@lru_cache(maxsize=8)
def _read_stages(file: Path, mtime_ns: int) -> dict[str, StageSpec]:
    import yaml

    try:
        stages = (yaml.safe_load(file.read_text()) or {})["stages"]
    except (yaml.YAMLError, KeyError, TypeError) as exc:
        raise ValueError(f"{file}: cannot read its stages ({exc.__class__.__name__}: {exc})") from None
    table = {}
    for name, stage in stages.items():
        where = f"{file} stage {name!r}"
        deps = _names(stage.get("deps"), "deps", where)
        code = [m for d in deps if d.startswith(SOURCE_DIR) for m in _source_modules(d)]
        outs = [o for f in ("outs", "metrics", "plots") for o in _names(stage.get(f), f, where)]
        table[name] = StageSpec(name, _params(stage.get("params"), where),
                                tuple(d for d in deps if not d.startswith(SOURCE_DIR)), tuple(outs), tuple(code))
    return table


def stages(root: Path) -> dict[str, StageSpec]:
    """Every stage of the project's dvc.yaml, by name (read again when the file changes)."""
    file = dvc_file(root)
    return _read_stages(file.resolve(), file.stat().st_mtime_ns)


def stage_spec(root: Path, name: str) -> StageSpec:
    table = stages(root)
    if name not in table:
        raise KeyError(f"stage {name!r} is not in {dvc_file(root)} (it has {', '.join(table)})")
    return table[name]


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
        todo.extend(p for p in _parent_packages(name) if p not in seen)  # Python runs each __init__ first
    return {f.resolve() for f in seen.values()}


def _parent_packages(name: str) -> list[str]:
    """``genloop.core.models.vae`` -> genloop, genloop.core, genloop.core.models."""
    parts = name.split(".")
    return [".".join(parts[:i]) for i in range(1, len(parts))]


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
    folder = paths.stamps
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


def record(spec: StageSpec, paths: ProjectPaths, checked: CacheCheck, result: Any, in_dvc_lock: bool = False) -> Path:
    """Stamp a finished stage with the inputs it ran on (as checked before it ran) and its outputs now.

    ``in_dvc_lock``: `dvc repro` ran it and records the same outputs in dvc.lock itself; otherwise the
    flow records them there at its end (`record_in_dvc_lock`).
    """
    meta_file, result_file = stamp_files(spec, paths)
    atomic.write_bytes(result_file, pickle.dumps(result))
    atomic.write_json(meta_file, {
        "version": STAMP_VERSION, "stage": spec.name, "key": checked.key, "inputs": checked.inputs,
        "outs": outputs_fingerprint(spec, paths), "finished": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "dvc_lock": in_dvc_lock,
    })
    return meta_file


def run_recorded(name: str, params: Params, paths: ProjectPaths, run: Callable[[], Any], in_dvc_lock: bool = False) -> Any:
    """Run a stage unconditionally (`dvc repro` or a stage command decided to) and leave its stamp, so
    `genloop run` afterwards skips it while nothing changes."""
    try:
        spec = stage_spec(paths.root, name)
    except (FileNotFoundError, KeyError):  # no dvc.yaml to say what the stage reads: nothing to stamp
        return run()
    checked = check(spec, params, paths)
    forget(spec, paths)
    result = run()
    record(spec, paths, checked, result, in_dvc_lock=in_dvc_lock)
    return result


def _stamp_meta(spec: StageSpec, paths: ProjectPaths) -> dict[str, Any] | None:
    meta_file, _ = stamp_files(spec, paths)
    try:
        return json.loads(meta_file.read_text())
    except (OSError, ValueError):
        return None


def missing_from_dvc_lock(names: tuple[str, ...] | list[str], paths: ProjectPaths, locked: set[str]) -> list[str]:
    """Stamped stages whose outputs dvc.lock does not hold yet: run by the flow (or by hand), or absent
    from dvc.lock altogether."""
    todo = []
    for name in names:
        meta = _stamp_meta(stage_spec(paths.root, name), paths)
        if meta is not None and (not meta.get("dvc_lock") or name not in locked):
            todo.append(name)
    return todo


def mark_in_dvc_lock(names: list[str], paths: ProjectPaths) -> None:
    for name in names:
        spec = stage_spec(paths.root, name)
        meta = _stamp_meta(spec, paths)
        if meta is not None:
            atomic.write_json(stamp_files(spec, paths)[0], {**meta, "dvc_lock": True})


# ---- the data the deployed models were trained on ----------------------------------------------

def data_identity(paths: ProjectPaths, dvc_hash: str) -> str:
    """The DVC md5 of data/ when it is versioned, else a content hash of data/."""
    return dvc_hash if dvc_hash and dvc_hash != "untracked" else "sha256:" + path_fingerprint(paths.data)


def trained_file(paths: ProjectPaths) -> Path:
    return paths.stamps / "trained.json"


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
