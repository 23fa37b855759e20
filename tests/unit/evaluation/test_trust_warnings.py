"""An evaluation that cannot be trusted says so where people look: the run summary, `genloop evaluate`'s
output and the report (a warning box), naming the classes as the data names them."""
from __future__ import annotations

import json

from genloop.config import TrustConfig
from genloop.core import trust
from genloop.evaluation.report import render_html, trust_box
from genloop.evaluation.summary import evaluation_warnings, metrics_table, run_summary
from genloop.paths import ProjectPaths

SHAPES = {0: "circle", 1: "square", 2: "triangle"}


def untrusted_detail() -> dict:
    """What evaluate writes for the issue's 60 coloured shapes: 13 held-out images, accuracy 0.154, FIDs
    under the floor."""
    shared = trust.evaluation_doubts(0.154, [0] * 5 + [1] * 4 + [2] * 4, TrustConfig(), SHAPES)
    doubts = trust.doubts_by_model(shared, {"vae": 1.67, "gan": 2.71}, 7.59, TrustConfig())
    return {"vae": {"fid": 1.67, "fid_real_floor": 7.59, **trust.trusted_metric(doubts["vae"])},
            "gan": {"fid": 2.71, "fid_real_floor": 7.59, **trust.trusted_metric(doubts["gan"])},
            "trust": doubts}


def project_with_detail(tmp_path, detail: dict | None) -> ProjectPaths:
    paths = ProjectPaths.at(tmp_path)
    paths.reports.mkdir(parents=True, exist_ok=True)
    if detail is not None:
        (paths.reports / "metrics_detail.json").write_text(json.dumps(detail))
    return paths


def summary_of(paths: ProjectPaths, detail: dict) -> str:
    result = {"seconds": 1.0, "rows": 60, "image_shape": "32x32", "quarantined": 0, "dvc_hash": "abc",
              "metrics": {k: detail[k] for k in ("vae", "gan")}, "classifier_accuracy": 0.154, "onnx": {},
              "parent_run_id": "r1"}
    return run_summary(result, paths)


def test_run_summary_warns_with_every_reason_once_and_names_the_classes(tmp_path):
    detail = untrusted_detail()
    text = summary_of(project_with_detail(tmp_path, detail), detail)
    assert "WARNING: this evaluation of the VAE and GAN cannot be trusted:" in text
    assert text.count("near or below chance") == 1  # shared by both models, said once
    assert "circle, square, triangle" in text and "only 13 held-out images" in text
    assert "VAE's FID 1.67 is below the real-vs-real floor 7.59" in text and "GAN's FID 2.71" in text
    assert "digit" not in text


def test_metrics_table_shows_whether_each_model_is_trusted():
    rows = {line.split()[0]: line.split()[1:] for line in metrics_table(
        {"vae": {"fid": 1.0, "evaluation_trusted": 0.0}, "gan": {"fid": 9.0, "evaluation_trusted": 1.0}}
    ).splitlines()[2:]}
    assert rows["evaluation_trusted"] == ["0", "1", "-"]


def test_a_trusted_or_missing_evaluation_adds_no_warning(tmp_path):
    paths = project_with_detail(tmp_path, {"vae": {}, "gan": {}, "trust": {"vae": [], "gan": []}})
    assert evaluation_warnings(paths) == []
    assert evaluation_warnings(project_with_detail(tmp_path / "none", None)) == []


def test_report_opens_with_a_warning_box_listing_the_reasons():
    detail = untrusted_detail()
    page = render_html(detail, [], {})
    box = trust_box(detail)
    assert box and box in page and page.index(box) < page.index("<h2>Metrics</h2>")
    assert "This evaluation cannot be trusted (VAE, GAN)" in box
    assert "circle, square, triangle" in box and "below the real-vs-real floor" in box
    assert "export.promotion.require_trusted_evaluation" in box
    assert "one digit" not in page


def test_report_of_a_trusted_evaluation_has_no_warning_box():
    page = render_html({"vae": {"fid": 9.0}, "gan": {"fid": 8.0}, "trust": {"vae": [], "gan": []}}, [], {})
    assert "class=warning" not in page and "cannot be trusted" not in page
