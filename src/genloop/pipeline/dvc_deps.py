"""dvc.yaml's code deps, generated: each stage lists exactly the genloop source files its stage module
imports, directly or not (genloop.pipeline.caching.code_files, the same closure the Prefect flow hashes).

So `dvc repro` and `genloop run` rerun a stage on the same code changes. ``genloop stages
--write-dvc-deps`` rewrites the ``src/`` entries of each stage's ``deps`` in place (comments and every
other line kept); tests/unit/pipeline/test_dvc_deps.py fails when they fall out of date.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import yaml

from genloop.io import atomic
from genloop.pipeline import caching

SOURCE_PREFIX = "src/genloop/"
_STAGE_LINE = re.compile(r"^  (?P<name>[\w-]+):\s*(#.*)?$")
_DEPS_LINE = re.compile(r"^    deps:\s*(#.*)?$")
_ENTRY_LINE = re.compile(r"^      - (?P<path>\S+)")


@dataclass(frozen=True)
class DepsDrift:
    """How a stage's listed code deps differ from its import closure."""

    stage: str
    missing: tuple[str, ...]  # imported, not listed: `dvc repro` would miss a change to them
    stale: tuple[str, ...]  # listed, not imported (or gone)


def stage_module(cmd: str) -> str:
    """``genloop train --model vae`` -> ``genloop.stages.train``: every stage command runs its stage module."""
    words = cmd.split()
    if len(words) < 2 or words[0] != "genloop":
        raise ValueError(f"stage command {cmd!r} does not run a genloop stage (`genloop STAGE ...`)")
    return f"genloop.stages.{words[1]}"


def closure(cmd: str) -> list[str]:
    """The project-relative source files the stage of ``cmd`` imports, sorted."""
    package_root = caching.PACKAGE_DIR.parents[1]
    files = caching.code_files((stage_module(cmd),))
    return sorted(f.relative_to(package_root).as_posix() for f in files)


def _stages(dvc_yaml: Path) -> dict:
    return (yaml.safe_load(dvc_yaml.read_text()) or {}).get("stages", {})


def _listed(stage: dict) -> list[str]:
    return [d for d in caching._names(stage.get("deps"), "deps", "dvc.yaml") if d.startswith(SOURCE_PREFIX)]


def drift(dvc_yaml: Path) -> list[DepsDrift]:
    """Stages whose ``src/`` deps are not exactly their import closure (empty when all agree)."""
    found = []
    for name, stage in _stages(dvc_yaml).items():
        want, have = set(closure(stage["cmd"])), set(_listed(stage))
        if want != have:
            found.append(DepsDrift(name, tuple(sorted(want - have)), tuple(sorted(have - want))))
    return found


def write(dvc_yaml: Path) -> list[str]:
    """Rewrite each stage's ``src/`` deps as its import closure; returns the stages that changed."""
    wanted = {name: closure(stage["cmd"]) for name, stage in _stages(dvc_yaml).items()}
    old = dvc_yaml.read_text()
    lines, stage, changed = old.splitlines(keepends=True), None, []
    out: list[str] = []
    i = 0
    while i < len(lines):
        line = lines[i]
        match = _STAGE_LINE.match(line)
        if match:
            stage = match["name"]
        out.append(line)
        i += 1
        if stage in wanted and _DEPS_LINE.match(line):
            block, i = _deps_block(lines, i)
            kept = [entry for entry in block if not _is_source_entry(entry)]
            new = _with_code(kept, wanted[stage])
            if new != block:
                changed.append(stage)
            out.extend(new)
    if changed:
        atomic.write_text(dvc_yaml, "".join(out))
    return changed


def _deps_block(lines: list[str], start: int) -> tuple[list[str], int]:
    """The lines of a ``deps:`` list (entries and comments between them) from ``start``; and where it ends."""
    end = start
    while end < len(lines) and (_ENTRY_LINE.match(lines[end]) or lines[end].startswith("        ")
                                or lines[end].lstrip().startswith("#") and lines[end].startswith("      ")):
        end += 1
    return lines[start:end], end


def _is_source_entry(line: str) -> bool:
    match = _ENTRY_LINE.match(line)
    return bool(match) and match["path"].rstrip(":").startswith(SOURCE_PREFIX)


def _with_code(kept: list[str], code: list[str]) -> list[str]:
    """The non-code entries as they were, then the code files (one entry each)."""
    return [*kept, *(f"      - {path}\n" for path in code)]
