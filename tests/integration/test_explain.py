"""The latent atlas end to end: the evaluate stage writes reports/explain.html (linked from the report)
and logs the scores on each model's run; `genloop explain` explains a registered version from its run's
checkpoint, or from its ONNX graph when the run holds none, saying what it skipped.

Real MLflow (a sqlite store in the test's folder), both tiny models trained, evaluated and exported.
"""
from __future__ import annotations

import json
from pathlib import Path
from urllib.parse import urlparse

import pytest
import yaml
from click.testing import CliRunner

from genloop.cli import main
from genloop.evaluation.atlas import EXPLAIN_METRICS
from genloop.io.datasets import read_run_id
from genloop.stages.evaluate import evaluate
from genloop.stages.export import export

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def project(genloop_tiny_project):
    project = genloop_tiny_project("explain", overrides={"evaluate.audit_images": 100, "evaluate.audit_samples": 300})
    evaluate(project.params, project.paths)
    export(project.params, project.paths)
    # the CLI reads params.yaml: the same (tiny) settings, so the classifier is reused
    (project.root / "params.yaml").write_text(yaml.safe_dump(project.params.model_dump(mode="json")))
    return project


def explain_cli(project, *args: str):
    return CliRunner().invoke(main, ["--root", str(project.root), "explain", *args])


def artifacts(project, run_id: str, folder: str) -> set[str]:
    return {Path(f.path).name for f in project.client().list_artifacts(run_id, folder)}


def test_evaluate_writes_the_atlas_beside_the_report_and_links_it(project):
    reports = project.root / "reports"
    assert '<a href="explain.html">' in (reports / "index.html").read_text()
    page = (reports / "explain.html").read_text()
    for name in ("vae_traversal_dimensions.png", "vae_pca_map.png", "gan_traversal_directions.png",
                 "vae_attribution.png"):
        assert f'src="explain/{name}"' in page and (reports / "explain" / name).is_file()
    scores = json.loads((reports / "explain.json").read_text())
    assert set(EXPLAIN_METRICS) <= set(scores["vae"])
    assert "mig" in scores["gan"] and "active_units" not in scores["gan"]


def test_evaluate_logs_the_atlas_scores_and_page_on_each_training_run(project):
    client = project.client()
    for kind, expected in (("vae", set(EXPLAIN_METRICS)), ("gan", {"mig", "dci_disentanglement"})):
        run_id = read_run_id(project.paths, kind)
        assert expected <= set(client.get_run(run_id).data.metrics)
        assert {"explain.html", "explain.json", "explain_detail.json"} <= artifacts(project, run_id, "explain")


def test_explain_a_registered_version_from_its_runs_checkpoint(project):
    result = explain_cli(project, "--model", "vae", "--version", "1")
    assert result.exit_code == 0, result.output
    assert "active_units" in result.output and "skipped" not in result.output
    page = project.root / "reports" / "explain-genloop-vae-v1.html"
    assert page.is_file() and "genloop-vae v1" in page.read_text()
    run_id = read_run_id(project.paths, "vae")
    assert "explain-genloop-vae-v1.html" in artifacts(project, run_id, "explain")
    assert len(project.client().get_metric_history(run_id, "mig")) == 2  # evaluate's, then explain's


def test_explain_names_the_versions_when_asked_for_a_missing_one(project):
    result = explain_cli(project, "--model", "gan", "--version", "9")
    assert result.exit_code == 1
    assert "error:" in result.output and "no version '9'" in result.output and "[1]" in result.output


def test_export_ships_the_vae_encoder_matching_pytorch_at_odd_batch_sizes(project):
    import numpy as np
    import torch

    from genloop.io.checkpoints import load_vae
    from genloop.io.onnx_runtime import open_session

    session = open_session(project.paths.models / "vae_encoder.onnx")
    assert [i.name for i in session.get_inputs()] == ["image"]
    assert [o.name for o in session.get_outputs()] == ["mean", "logvar"]
    vae = load_vae(project.paths.train("vae") / "model.pt")
    for n in (1, 64, 7):
        images = torch.rand(n, 1, 8, 8, generator=torch.Generator().manual_seed(n))
        mean, logvar = session.run(None, {"image": images.numpy()})
        with torch.no_grad():
            expected = vae.encode(images)
        np.testing.assert_allclose(mean, expected[0].numpy(), atol=1e-4)
        np.testing.assert_allclose(logvar, expected[1].numpy(), atol=1e-4)


def test_the_encoder_travels_with_its_decoders_registered_version_and_into_triton(project):
    version = project.client().get_model_version("genloop-vae", "1")
    assert version.tags["genloop.encoder"] == "encoder/vae_encoder.onnx"
    assert float(version.tags["genloop.encoder_max_abs_diff"]) <= project.params.export.parity_tolerance
    assert "vae_encoder.onnx" in artifacts(project, version.run_id, "encoder")
    config = (project.paths.models / "triton" / "genloop-vae-encoder" / "config.pbtxt").read_text()
    assert 'name: "image"' in config and 'name: "mean"' in config and 'name: "logvar"' in config
    assert (project.paths.models / "triton" / "genloop-vae-encoder" / "1" / "model.onnx").is_file()


def remove_checkpoint(project, kind: str) -> None:
    """As for a version registered before training logged its checkpoint."""
    run = project.client().get_run(read_run_id(project.paths, kind))
    (Path(urlparse(run.info.artifact_uri).path) / "checkpoint" / "model.pt").unlink()


def test_a_vae_version_without_its_checkpoint_explains_what_it_can_and_says_what_it_skipped(project):
    remove_checkpoint(project, "vae")
    result = explain_cli(project, "--model", "vae", "--no-mlflow")
    assert result.exit_code == 0, result.output
    assert "skipped: no encoder" in result.output
    detail = json.loads((project.root / "reports" / "explain-genloop-vae-v1_detail.json").read_text())
    assert detail["vae"]["gaps"] and any("ONNX graph" in n for n in detail["vae"]["notes"])


def test_a_gan_version_without_its_checkpoint_gets_ganspace_directions_from_its_onnx_graph(project):
    remove_checkpoint(project, "gan")
    result = explain_cli(project, "--model", "gan", "--no-mlflow")
    assert result.exit_code == 0, result.output
    assert "gan: mig" in result.output
    assert (project.root / "reports" / "explain-genloop-gan-v1" / "gan_traversal_directions.png").is_file()


def test_serving_the_champions_serves_the_encoder_its_vae_champion_carries(project):
    from genloop.io.onnx_runtime import open_session
    from genloop.serving.registry import ChampionSource
    from genloop.serving.settings import CompanionGone, encoder_name

    export, client = project.params.export, project.client()
    name = encoder_name(export)
    source = ChampionSource(project.params.mlflow, project.root, list(export.served_files()),
                            encoders={name: export.vae_model_name})
    try:
        found = source.champions()
        assert found[name].version == found[export.vae_model_name].version
        assert [o.name for o in open_session(found[name].path).get_outputs()] == ["mean", "logvar"]
        version = found[name].version
        client.delete_model_version_tag(export.vae_model_name, version, "genloop.encoder")
        try:  # a champion exported without an encoder: none served, and a served one is dropped (CompanionGone)
            assert name not in source.champions()
            with pytest.raises(CompanionGone):
                source.fetch(name, version)
        finally:
            client.set_model_version_tag(export.vae_model_name, version, "genloop.encoder", "encoder/vae_encoder.onnx")
    finally:
        source.close()
