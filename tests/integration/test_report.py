"""Tests for reports/index.html as the evaluate stage writes it: complete, offline, and it renders."""
from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

from genloop.config import MODELS
from genloop.core.metric_names import GENERATOR_METRICS, VAE_METRICS
from genloop.stages.evaluate import evaluate
from genloop.evaluation.report import loss_curve_png, read_history
from genloop.stages.train import epoch_plan, load_training_images

pytestmark = pytest.mark.integration

CHROMIUM = shutil.which("chromium") or ("/usr/bin/chromium" if Path("/usr/bin/chromium").exists() else None)


@pytest.fixture(scope="module")
def evaluated(genloop_tiny_project):
    project = genloop_tiny_project("report")
    result = evaluate(project.params, project.paths, log_to_mlflow=False)
    return project, result


@pytest.fixture(scope="module")
def page(evaluated) -> str:
    _, result = evaluated
    return result.html.read_text()


def test_the_report_references_only_existing_local_pngs(evaluated, page):
    _, result = evaluated
    sources = re.findall(r'<img src="([^"]+)"', page)
    expected = {f"figures/{name}.png" for name in (
        "samples_real", "samples_vae", "samples_gan", "interpolation_vae", "interpolation_gan",
        "classes", "losses_vae", "losses_gan", "privacy_roc")}
    assert expected <= set(sources)
    for src in sources:
        file = result.html.parent / src
        assert file.is_file() and file.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", src
    assert "http://" not in page and "https://" not in page and "<script" not in page  # renders offline


def test_the_metrics_table_lists_every_metric_for_both_models_with_the_floor(page):
    for name in (*GENERATOR_METRICS, *VAE_METRICS):
        assert f"<th>{name}</th>" in page, name
    assert "real vs real" in page
    assert all(f"<th>{title}</th>" in page for title in ("VAE", "GAN"))


def test_the_table_opens_with_the_recognisable_share_then_both_fids(page):
    rows = re.findall(r"<tr><th>([a-z_]+)</th><td>", page)
    assert rows[:3] == ["recognisable_share", "fid", "fid_alt"]
    assert page.index("<th>recognisable_share</th>") < page.index("<h2>Samples</h2>")
    assert "probability &gt;= 0.9" in page  # the reading states the confidence threshold


def test_the_likelihood_heading_names_the_iwae_subset_only_when_smaller():
    from genloop.evaluation.report import _likelihood_images

    assert _likelihood_images({"test_images": 1506, "iwae_test_images": 500}) == "1506 test images; IWAE on a seeded 500"
    assert _likelihood_images({"test_images": 263, "iwae_test_images": 263}) == "263 test images"


def test_interpolation_grid_has_one_row_per_walk(evaluated):
    from PIL import Image

    project, result = evaluated
    cfg = project.params.evaluate
    with Image.open(result.html.parent / "figures" / "interpolation_gan.png") as img:
        width, height = img.size
    # imaging.grid_image: cells of 56 px (8x8 images upscaled 7x) with 2 px padding
    assert width == cfg.interpolation_steps * 58 + 2
    assert height == cfg.interpolation_rows * 58 + 2


def test_history_is_read_as_float_columns_and_plotted(evaluated):
    project, _ = evaluated
    for kind in MODELS:
        history = read_history(project.paths.train(kind) / "history.csv")
        planned = epoch_plan(getattr(project.params.train, kind).images, len(load_training_images(project.paths)))
        assert len(history["epoch"]) == len(planned)
        png = loss_curve_png(history, ("train_loss", "val_loss") if kind == "vae" else ("d_loss", "g_loss"), kind)
        assert png[:4] == b"\x89PNG"
    assert read_history(project.root / "missing.csv") == {}


def test_evaluating_again_replaces_the_figures_whole(evaluated):
    project, result = evaluated
    stray = result.html.parent / "figures" / "stray.png"
    stray.write_bytes(b"old")
    again = evaluate(project.params, project.paths, log_to_mlflow=False)
    assert again.html == result.html and not stray.exists()


@pytest.mark.skipif(CHROMIUM is None, reason="no chromium to render the report")
def test_a_headless_chromium_screenshot_of_the_report_is_not_blank(evaluated, tmp_path):
    from PIL import Image

    _, result = evaluated
    shot = tmp_path / "report.png"
    subprocess.run([CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
                    f"--screenshot={shot}", "--window-size=1280,2000", result.html.resolve().as_uri()],
                   check=True, capture_output=True, timeout=120)
    with Image.open(shot) as img:
        pixels = np.asarray(img.convert("L"), dtype=np.float32)
    assert pixels.shape == (2000, 1280)
    assert pixels.std() > 20.0  # text, tables and sample grids, not a blank page
    dark = (pixels < 128).mean()
    assert 0.01 < dark < 0.6


def test_the_privacy_audit_section_gives_each_attack_for_each_model_and_the_roc_plot(page):
    section = page[page.index("<h2>Privacy audit</h2>"):page.index("<h2>Samples</h2>")]
    assert "ROC AUC 0.5 = no leak" in section
    for row in ("distance: ROC AUC", "distance: TPR at 1% FPR", "elbo: ROC AUC", "elbo: TPR at 1% FPR"):
        assert f"<th>{row}</th>" in section, row
    assert re.search(r"<th>elbo: ROC AUC</th><td>[0-9.]+</td><td>–</td>", section)  # the GAN has no ELBO
    assert 'src="figures/privacy_roc.png"' in section


def test_the_privacy_audit_section_says_when_the_audit_is_off():
    from genloop.evaluation.report import render_html

    page = render_html({"membership": {}}, [], {})
    assert "No membership audit" in page and "evaluate.audit_images" in page
