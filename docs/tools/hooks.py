"""MkDocs hook: the Benchmarks page is the repository's BENCHMARKS.md, read in at build time.

BENCHMARKS.md stays where benchmark scripts and their readers expect it (the repository root, outside
docs/), and the site shows the same text instead of a copy that could drift.
"""
from __future__ import annotations

from pathlib import Path

from mkdocs.structure.files import File

SOURCE = "BENCHMARKS.md"
PAGE = "benchmarks.md"
NOTE = ("\n\n*This page is `BENCHMARKS.md` at the top of the repository; the scripts that measured it "
        "are in `benchmarks/`.*\n\n")


def on_files(files, config):
    text = (Path(config["config_file_path"]).parent / SOURCE).read_text(encoding="utf-8")
    title, _, rest = text.partition("\n")
    files.append(File.generated(config, PAGE, content=title + NOTE + rest))
    return files
