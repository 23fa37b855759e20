"""Tests for genloop.stages.export: ONNX graphs that check, run at any batch size, match PyTorch and get registered.

Real MLflow registry (a sqlite store in the test's folder), real ONNX Runtime.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch

from genloop.io.checkpoints import load_sampler
from genloop.io import promotion
from genloop.stages.evaluate import evaluate
from genloop.stages import export as export_module
from genloop.stages.export import (
    INPUT_NAME, ONNX_FILES, OUTPUT_NAME, SHA256_TAG, ParityError, evaluation_data_hash, export, onnx_content_sha256,
    read_metadata, session, write_metadata,
)
from genloop.io.datasets import read_run_id
from genloop.stages.train import train_model

pytestmark = pytest.mark.integration

KINDS = tuple(ONNX_FILES)


@pytest.fixture(scope="module")
def exported(genloop_tiny_project):
    project = genloop_tiny_project("export")
    evaluate(project.params, project.paths, log_to_mlflow=False)  # the figures the promotion gate compares
    result = export(project.params, project.paths)
    return project, result


def registered_name(project, kind: str) -> str:
    return project.params.export.vae_model_name if kind == "vae" else project.params.export.gan_model_name


def version_count(project, kind: str) -> int:
    return len(project.client().search_model_versions(f"name='{registered_name(project, kind)}'"))


def test_export_writes_both_onnx_files_into_models(exported):
    project, result = exported
    assert (project.root / "models" / "vae_decoder.onnx").is_file()
    assert (project.root / "models" / "gan_generator.onnx").is_file()
    for kind in KINDS:
        assert result.models[kind].path == project.paths.models / ONNX_FILES[kind]
    assert not list(project.paths.models.glob(".*.staged"))
    assert not list(project.paths.models.glob(".*.tmp"))


@pytest.mark.parametrize("kind", KINDS)
def test_exported_graph_passes_the_onnx_checker(exported, kind):
    project, _ = exported
    path = project.paths.models / ONNX_FILES[kind]
    onnx.checker.check_model(str(path), full_check=True)
    model = onnx.load(str(path))
    assert [i.name for i in model.graph.input] == [INPUT_NAME]
    assert [o.name for o in model.graph.output] == [OUTPUT_NAME]


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("batch", [1, 3, 64])
def test_onnx_runtime_runs_any_batch_size_and_matches_pytorch(exported, kind, batch):
    project, _ = exported
    module, latent_dim = load_sampler(project.paths.train(kind) / "model.pt")
    z = torch.randn(batch, latent_dim, generator=torch.Generator().manual_seed(batch))
    got = session(project.paths.models / ONNX_FILES[kind]).run([OUTPUT_NAME], {INPUT_NAME: z.numpy()})[0]
    with torch.no_grad():
        expected = module(z).numpy()
    assert got.shape == (batch, 1, 8, 8)
    assert float(np.max(np.abs(got - expected))) <= 1e-4


@pytest.mark.parametrize("kind", KINDS)
def test_export_reports_parity_within_tolerance_at_the_configured_batch_sizes(exported, kind):
    project, result = exported
    diffs = result.models[kind].max_abs_diff
    assert set(project.params.export.parity_batch_sizes) <= set(diffs)
    assert max(diffs.values()) <= project.params.export.parity_tolerance
    written = json.loads((project.paths.models / "export.json").read_text())
    assert written[kind]["path"] == f"models/{ONNX_FILES[kind]}"


@pytest.mark.parametrize("kind", KINDS)
def test_registered_model_version_carries_lineage_tags(exported, kind):
    project, result = exported
    exported_model = result.models[kind]
    assert exported_model.registered_name == registered_name(project, kind)
    assert exported_model.registered_name == f"genloop-{kind}"
    version = project.client().get_model_version(exported_model.registered_name, exported_model.registered_version)
    assert version.run_id == read_run_id(project.paths, kind)
    assert "dvc_data_hash" in version.tags and "git_commit" in version.tags
    run_tags = project.client().get_run(version.run_id).data.tags
    assert version.tags["dvc_data_hash"] == run_tags["dvc_data_hash"]
    assert version.tags["git_commit"] == run_tags["git_commit"]
    assert version.tags["run_id"] == version.run_id


@pytest.mark.parametrize("kind", KINDS)
def test_onnx_file_carries_lineage_metadata(exported, kind):
    project, _ = exported
    meta = read_metadata(project.paths.models / ONNX_FILES[kind])
    run_tags = project.client().get_run(read_run_id(project.paths, kind)).data.tags
    assert meta["run_id"] == read_run_id(project.paths, kind)
    assert meta["dvc_data_hash"] == run_tags["dvc_data_hash"] and meta["git_commit"] == run_tags["git_commit"]
    assert meta["model_kind"] == kind
    _, latent_dim = load_sampler(project.paths.train(kind) / "model.pt")
    assert int(meta["latent_dim"]) == latent_dim
    assert json.loads(meta["params"]) == project.params.model_dump(mode="json")
    assert meta[promotion.EVAL_HASH_TAG] == evaluation_data_hash(project.params, project.paths)


@pytest.mark.parametrize("kind", KINDS)
def test_registered_version_carries_metrics_params_and_parity(exported, kind):
    project, result = exported
    m = result.models[kind]
    tags = project.client().get_model_version(m.registered_name, m.registered_version).tags
    report = json.loads(project.paths.metrics.read_text())[kind]
    tagged = promotion.metrics_from_tags(tags)
    # a few tags: the promotion metric and the headline figures; everything else is on the LoggedModel
    assert project.params.export.promotion.metric in tagged
    assert tagged == pytest.approx({k: float(report[k]) for k in tagged})
    assert len(tagged) < len(report) and "params" not in tags
    assert tags[promotion.PARITY_TAG] == "true"
    params_file = project.client().download_artifacts(tags["run_id"], "params.json", str(project.root))
    assert json.loads(Path(params_file).read_text()) == project.params.model_dump(mode="json")
    assert tags[promotion.EVAL_HASH_TAG] == evaluation_data_hash(project.params, project.paths)


@pytest.mark.parametrize("kind", KINDS)
def test_non_private_version_is_tagged_as_not_private(exported, kind):
    from genloop.io.tracking import EPSILON_TAG

    project, result = exported
    m = result.models[kind]
    tags = project.client().get_model_version(m.registered_name, m.registered_version).tags
    assert tags[EPSILON_TAG] == "inf"  # genloop.epsilon: no finite differential-privacy budget
    assert read_metadata(project.paths.models / ONNX_FILES[kind])[EPSILON_TAG] == "inf"
    assert "epsilon" not in json.loads(project.paths.metrics.read_text())[kind]


@pytest.mark.parametrize("kind", KINDS)
def test_first_export_makes_champions_whose_onnx_downloads_with_its_lineage(exported, kind, tmp_path):
    project, result = exported
    m = result.models[kind]
    assert m.promotion is not None and m.promotion.promoted, m.promotion
    client = project.client()
    assert str(promotion.current_champion(client, m.registered_name).version) == m.registered_version
    import mlflow

    mlflow.set_tracking_uri(project.tracking_uri)
    downloaded = promotion.download_onnx(f"models:/{m.registered_name}@champion", tmp_path)
    assert read_metadata(downloaded)["run_id"] == read_run_id(project.paths, kind)
    written = json.loads((project.paths.models / "export.json").read_text())
    assert written[kind]["promotion"]["promotion.decision"] == "promoted"


@pytest.mark.parametrize("kind", KINDS)
def test_registered_version_is_tagged_with_the_hash_of_graph_and_weights(exported, kind):
    project, result = exported
    m = result.models[kind]
    tags = project.client().get_model_version(m.registered_name, m.registered_version).tags
    assert tags[SHA256_TAG] == onnx_content_sha256(project.paths.models / ONNX_FILES[kind])


def test_content_hash_ignores_run_metadata_but_not_weights(exported, tmp_path):
    project, _ = exported
    original = project.paths.models / ONNX_FILES["gan"]
    relabelled = tmp_path / "relabelled.onnx"
    relabelled.write_bytes(original.read_bytes())
    write_metadata(relabelled, {"run_id": "another-run", "git_commit": "another-commit"})
    assert relabelled.read_bytes() != original.read_bytes()
    assert onnx_content_sha256(relabelled) == onnx_content_sha256(original)

    model = onnx.load(str(original))
    weights = model.graph.initializer[0]
    array = onnx.numpy_helper.to_array(weights).copy()
    array.flat[0] += 1.0
    weights.CopyFrom(onnx.numpy_helper.from_array(array, weights.name))
    changed = tmp_path / "changed.onnx"
    onnx.save(model, str(changed))
    assert onnx_content_sha256(changed) != onnx_content_sha256(original)


def test_exporting_unchanged_weights_again_registers_no_new_version(exported):
    project, first = exported
    counts = {kind: version_count(project, kind) for kind in KINDS}
    again = export(project.params, project.paths)
    written = json.loads((project.paths.models / "export.json").read_text())
    for kind in KINDS:
        m, before = again.models[kind], first.models[kind]
        assert version_count(project, kind) == counts[kind], kind
        assert m.unchanged_as == m.registered_version == before.registered_version
        assert m.registration() == f"unchanged, not registered: same bytes as {m.registered_name} v{m.unchanged_as}"
        assert m.promotion is None  # nothing new, nothing to decide
        assert written[kind]["unchanged_as"] == before.registered_version
        champion = promotion.current_champion(project.client(), m.registered_name)
        assert str(champion.version) == before.registered_version


def retrain(project, kind: str, lr: float) -> None:
    """New weights for ``kind`` (another learning rate, from scratch): a graph with other bytes to export."""
    key = {"vae": "train.vae.lr", "gan": "train.gan.lr_g"}[kind]
    train_model(kind, project.params_with({key: lr}), project.paths, parent_run_id=None, resume=False)


def test_champion_scored_on_other_evaluation_data_is_rescored_from_its_onnx(exported):
    project, _ = exported
    champion_fid = json.loads(project.paths.metrics.read_text())["gan"]["fid"]  # evaluate's figure for the champion
    retrain(project, "gan", lr=5e-4)
    # Other evaluation settings make another evaluation (hash); the gate re-scores the champion with
    # genloop.evaluation.scoring.score_samples on samples drawn from its registered ONNX file.
    params = project.params_with({"evaluate.kid_subsets": 5})
    result = export(params, project.paths)
    decision = result.models["gan"].promotion
    assert result.models["gan"].unchanged_as is None and result.models["vae"].unchanged_as is not None
    assert decision.rescored and decision.champion_value is not None, decision
    # The champion's generator, sampled from ONNX with evaluate's latent vectors: evaluate's own FID again.
    assert decision.champion_value == pytest.approx(champion_fid, rel=1e-3)
    champion_tags = project.client().get_model_version("genloop-gan", decision.champion_version).tags
    new_hash = evaluation_data_hash(params, project.paths)
    assert float(champion_tags[f"rescored.{new_hash[:12]}.fid"]) == decision.champion_value


def test_impossible_parity_tolerance_raises_and_keeps_previous_models(exported):
    project, _ = exported
    before = {kind: (project.paths.models / ONNX_FILES[kind]).read_bytes() for kind in KINDS}
    counts = {kind: version_count(project, kind) for kind in KINDS}
    strict = project.params_with({"export.parity_tolerance": 1e-30})

    with pytest.raises(ParityError, match="parity_tolerance"):
        export(strict, project.paths)

    for kind in KINDS:
        assert (project.paths.models / ONNX_FILES[kind]).read_bytes() == before[kind], kind
        assert version_count(project, kind) == counts[kind], kind
    assert not list(project.paths.models.glob(".*.staged"))
    assert not list(project.paths.models.glob(".*.tmp"))


def test_export_retried_after_registering_one_model_registers_it_once_and_gates_it(exported, monkeypatch):
    project, _ = exported
    retrain(project, "vae", lr=5e-4)
    counts = {kind: version_count(project, kind) for kind in KINDS}

    def interrupted(*args, **kwargs):
        raise RuntimeError("interrupted after registering")

    with monkeypatch.context() as patch:  # the first try registers the VAE, then dies before its gate
        patch.setattr(export_module, "promote_if_better", interrupted)
        with pytest.raises(RuntimeError, match="interrupted"):
            export(project.params, project.paths)
    assert version_count(project, "vae") == counts["vae"] + 1

    retried = export(project.params, project.paths)
    vae = retried.models["vae"]
    assert version_count(project, "vae") == counts["vae"] + 1  # not a second copy
    assert vae.unchanged_as == vae.registered_version
    assert vae.promotion is not None, "the retry must still pass the version through the gate"
    tags = project.client().get_model_version(vae.registered_name, vae.registered_version).tags
    assert "promotion.decision" in tags
    assert version_count(project, "gan") == counts["gan"]


def test_a_model_name_holding_the_other_kinds_versions_is_refused_before_anything_is_written(exported):
    project, _ = exported
    before = {kind: (project.paths.models / ONNX_FILES[kind]).read_bytes() for kind in KINDS}
    counts = {kind: version_count(project, kind) for kind in KINDS}
    swapped = project.params_with({"export.vae_model_name": "genloop-gan", "export.gan_model_name": "genloop-vae"})
    with pytest.raises(promotion.PromotionError, match=r"'genloop-gan' holds gan \(inputs z\) versions .*this export "
                                                       r"is a vae \(inputs z\).*export\.vae_model_name"):
        export(swapped, project.paths)
    for kind in KINDS:
        assert (project.paths.models / ONNX_FILES[kind]).read_bytes() == before[kind], kind
        assert version_count(project, kind) == counts[kind], kind


def test_export_without_registering_adds_no_model_version(exported):
    project, _ = exported
    counts = {kind: version_count(project, kind) for kind in KINDS}
    assert all(n >= 1 for n in counts.values())

    result = export(project.params, project.paths, register=False)

    for kind in KINDS:
        assert result.models[kind].registered_name is None
        assert result.models[kind].registered_version is None
        assert (project.paths.models / ONNX_FILES[kind]).is_file()
        assert version_count(project, kind) == counts[kind], kind
    written = json.loads((project.paths.models / "export.json").read_text())
    assert all(written[kind]["registered_version"] is None for kind in KINDS)
