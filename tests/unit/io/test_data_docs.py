"""Great Expectations Data Docs from every clean run: complete, swapped in atomically, rendered by a
real browser, and logged to MLflow by the callers (here the DVC route's `genloop clean`/`augment`)."""
from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from genloop.stages import clean as clean_module
from genloop.io.validation import DataValidationError
from genloop.stages.clean import clean
from genloop.stages.collect import build_manifest, write_dataset
from genloop.config import CleanConfig
from genloop.paths import ProjectPaths
from genloop.io.sources import SourceBatch

CHROMIUM = next((c for c in ("chromium", "chromium-browser", "google-chrome") if shutil.which(c)), None)


def write_random(paths: ProjectPaths, n: int = 150, seed: int = 0, bad_labels: int = 0) -> None:
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 256, size=(n, 8, 8), dtype=np.uint8)
    labels = np.arange(n, dtype=np.int64) % 10
    labels[:bad_labels] = -1  # no label: outside clean.labels
    write_dataset(paths.data, images, build_manifest(SourceBatch(images, labels, "test")))


def site_files(docs: Path) -> dict[str, bytes]:
    return {p.relative_to(docs).as_posix(): p.read_bytes() for p in sorted(docs.rglob("*")) if p.is_file()}


def validation_pages(docs: Path) -> list[Path]:
    return sorted((docs / "validations").rglob("*.html"))


def test_clean_writes_data_docs_linking_the_validation_page(tmp_path):
    paths = ProjectPaths.at(tmp_path)
    write_random(paths, bad_labels=2)

    result = clean(CleanConfig(), paths)

    assert result.data_docs == paths.reports / "data_docs" / "index.html"
    assert result.data_docs.is_file()
    (page,) = validation_pages(result.data_docs.parent)
    text = page.read_text()
    assert "expect_column_values_to_be_in_set" in text or "values must belong to this set" in text
    index = result.data_docs.read_text()
    assert f'href="{page.relative_to(result.data_docs.parent).as_posix()}"' in index  # reachable offline
    assert result.data_docs.parent in result.reports


def test_data_docs_are_replaced_whole_and_kept_when_a_build_fails(tmp_path, monkeypatch):
    paths = ProjectPaths.at(tmp_path)
    write_random(paths)
    docs = clean(CleanConfig(), paths).data_docs.parent
    first = site_files(docs)

    clean(CleanConfig(), paths)  # a second run replaces the site: one validation page, not two
    assert len(validation_pages(docs)) == 1
    second = site_files(docs)
    assert second != first

    real = clean_module.validate_table

    def build_then_crash(*args, **kwargs):
        real(*args, **kwargs)  # the new site is complete in the temporary folder ...
        raise RuntimeError("disk full")  # ... and the run dies before publishing it

    monkeypatch.setattr(clean_module, "validate_table", build_then_crash)
    with pytest.raises(RuntimeError, match="disk full"):
        clean(CleanConfig(), paths)
    assert site_files(docs) == second
    assert sorted(p.name for p in paths.reports.iterdir()) == ["data_docs", "near_duplicates.csv", "validation.json"]


def test_failed_validation_still_publishes_data_docs(tmp_path):
    paths = ProjectPaths.at(tmp_path)
    write_random(paths, n=150)
    with pytest.raises(DataValidationError, match="data_docs/index.html"):
        clean(CleanConfig(min_rows=500), paths)
    (page,) = validation_pages(paths.reports / "data_docs")
    assert "Failed" in page.read_text()
    assert not paths.clean.exists()


@pytest.mark.integration  # starts Chromium
@pytest.mark.skipif(CHROMIUM is None, reason="needs a Chromium-compatible browser")
def test_data_docs_index_renders_in_headless_chromium(tmp_path):
    paths = ProjectPaths.at(tmp_path / "project")
    write_random(paths)
    index = clean(CleanConfig(), paths).data_docs
    shot = tmp_path / "index.png"
    subprocess.run([CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
                    f"--user-data-dir={tmp_path / 'chromium-profile'}", f"--screenshot={shot}",
                    "--window-size=1024,768", index.as_uri()],
                   check=True, capture_output=True, timeout=90)
    pixels = np.asarray(Image.open(shot).convert("L"), dtype=np.float64)
    assert pixels.shape == (768, 1024)
    ink = pixels < 128
    assert ink.mean() > 0.002  # text and links, not a blank page
    assert ink[:200].any()  # the offline page list sits at the top


def test_dvc_route_logs_data_reports_to_the_dvc_parent_run(tmp_path, genloop_mlflow_env):
    from mlflow import MlflowClient

    from genloop.io import tracking
    from genloop.cli import main
    from genloop.config import load_params

    paths = ProjectPaths.at(tmp_path)
    write_random(paths, n=200)
    runner = CliRunner()
    cleaned = runner.invoke(main, ["--root", str(tmp_path), "clean"])
    assert cleaned.exit_code == 0, cleaned.output
    assert "validation: checked 200, passed 200, quarantined 0" in cleaned.output
    augmented = runner.invoke(main, ["--root", str(tmp_path), "-S", "augment.preview_images=4", "augment"])
    assert augmented.exit_code == 0, augmented.output

    run_id = tracking.parent_for_dvc(load_params(paths.params).mlflow, paths)  # what `genloop train` nests under
    assert f"MLflow run {run_id}" in cleaned.output and f"MLflow run {run_id}" in augmented.output
    client = MlflowClient()
    names = {a.path for a in client.list_artifacts(run_id, "data")}
    assert names == {"data/validation.json", "data/near_duplicates.csv", "data/data_docs", "data/preview.png"}
    docs = {a.path for a in client.list_artifacts(run_id, "data/data_docs")}
    assert "data/data_docs/index.html" in docs and "data/data_docs/validations" in docs
