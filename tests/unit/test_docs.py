"""The user docs build offline in strict mode, and the README stays short and points only at real files."""
from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

from conftest import REPO_ROOT

README_MAX_LINES = 220
# [text](target) and ![alt](target); the target ends at the first space (a title may follow) or ")"
MARKDOWN_LINK = re.compile(r"!?\[[^\]]*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
EXTERNAL_TAG = re.compile(r"<(?:script|link|img|iframe)\b[^>]*\b(?:src|href)=\"(?:https?:)?//", re.IGNORECASE)


def build_docs(root: Path, site: Path) -> subprocess.CompletedProcess[str]:
    """``mkdocs build --strict`` of the project at ``root`` into ``site`` (what ``make docs`` runs)."""
    return subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(site)],
                          cwd=root, capture_output=True, text=True, timeout=120)


def _docs_copy(tmp_path: Path) -> Path:
    root = tmp_path / "project"
    shutil.copytree(REPO_ROOT / "docs", root / "docs")
    for name in ("mkdocs.yml", "BENCHMARKS.md"):
        shutil.copy2(REPO_ROOT / name, root / name)
    return root


def test_the_docs_build_in_strict_mode_without_warnings(tmp_path):
    proc = build_docs(REPO_ROOT, tmp_path / "site")
    assert proc.returncode == 0, proc.stderr[-4000:]
    assert "WARNING" not in proc.stderr, proc.stderr[-4000:]
    for page in ("index", "data", "training", "evaluation", "privacy", "serving", "team-mode", "dvc", "prefect",
                 "layout", "benchmarks"):
        assert (tmp_path / "site" / f"{page}.html").is_file(), page
    assert (tmp_path / "site" / "img" / "loop.svg").is_file()


def test_a_broken_link_in_the_docs_fails_the_build(tmp_path):
    root = _docs_copy(tmp_path)
    page = root / "docs" / "data.md"
    page.write_text(page.read_text(encoding="utf-8") + "\nSee [the missing page](no-such-page.md).\n",
                    encoding="utf-8")
    proc = build_docs(root, tmp_path / "site")
    assert proc.returncode != 0
    assert "no-such-page.md" in proc.stderr


def test_a_link_to_a_missing_heading_fails_the_build(tmp_path):
    root = _docs_copy(tmp_path)
    page = root / "docs" / "data.md"
    page.write_text(page.read_text(encoding="utf-8") + "\nSee [nothing](training.md#no-such-heading).\n",
                    encoding="utf-8")
    proc = build_docs(root, tmp_path / "site")
    assert proc.returncode != 0
    assert "no-such-heading" in proc.stderr


def test_the_built_site_loads_nothing_from_the_network(tmp_path):
    proc = build_docs(REPO_ROOT, tmp_path / "site")
    assert proc.returncode == 0, proc.stderr[-4000:]
    fetching = {str(page.relative_to(tmp_path)): EXTERNAL_TAG.findall(page.read_text(encoding="utf-8"))
                for page in (tmp_path / "site").rglob("*.html")}
    assert not {page: tags for page, tags in fetching.items() if tags}


def readme_links(text: str) -> list[str]:
    """Local targets of the README's links and images (web addresses and in-page anchors left out)."""
    targets = [m.group(1) for m in MARKDOWN_LINK.finditer(text)]
    return [t.split("#", 1)[0] for t in targets
            if not re.match(r"^[a-z][a-z0-9+.-]*:", t, re.IGNORECASE) and not t.startswith("#")]


def test_readme_link_finder_sees_links_and_images():
    text = "[a](docs/a.md) ![b](docs/img/b.svg \"t\") [c](https://x.org) [d](#top) [e](docs/e.md#part)"
    assert readme_links(text) == ["docs/a.md", "docs/img/b.svg", "docs/e.md"]


def test_readme_is_short_and_links_only_to_files_that_exist():
    text = (REPO_ROOT / "README.md").read_text(encoding="utf-8")
    lines = text.count("\n") + (0 if text.endswith("\n") else 1)
    assert lines <= README_MAX_LINES, f"README.md has {lines} lines; keep it to {README_MAX_LINES} and move detail to docs/"
    targets = readme_links(text)
    assert targets, "README.md links nowhere; it should point into docs/"
    missing = [t for t in targets if not (REPO_ROOT / t).exists()]
    assert not missing, f"README.md links to missing files: {missing}"
