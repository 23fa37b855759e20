"""Tests for genloop.evaluate: metrics.json, the metrics logged to MLflow, and FID/KID sanity.

Real MLflow (a sqlite store in the test's folder), both models trained for 2 epochs.
"""
from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from genloop.clean import load_split
from genloop.evaluate import EVAL_METRICS, MODELS, distribution_scores, evaluate, train_classifier
from genloop.models.classifier import FeatureExtractor
from genloop.train import read_run_id, to_tensor


@pytest.fixture(scope="module")
def evaluated(genloop_tiny_project):
    project = genloop_tiny_project("evaluate")
    result = evaluate(project.params, project.paths)
    return project, result


@pytest.fixture(scope="module")
def report(evaluated) -> dict:
    project, _ = evaluated
    return json.loads(project.paths.metrics.read_text())


@pytest.fixture(scope="module")
def features(evaluated):
    """A feature extractor trained as evaluate trains it, and the held-out real images."""
    project, _ = evaluated
    images, labels = load_split(project.paths, "train")
    classifier = train_classifier(project.params.evaluate, to_tensor(images), torch.from_numpy(labels),
                                  project.params.seed)
    held_out = to_tensor(np.concatenate([load_split(project.paths, s)[0] for s in ("val", "test")]))
    return FeatureExtractor(classifier, project.params.evaluate.feature_dim), held_out


def test_evaluate_writes_metrics_json_with_both_models_the_floor_and_the_classifier(evaluated, report):
    project, result = evaluated
    assert result.report == project.paths.metrics == project.root / "reports" / "metrics.json"
    assert {"vae", "gan", "real_floor", "classifier"} <= set(report)
    assert set(report["real_floor"]) == {"fid", "kid_mean", "kid_std"}
    assert report["classifier"]["feature_dim"] == project.params.evaluate.feature_dim
    assert 0.0 <= report["classifier"]["held_out_accuracy"] <= 1.0
    assert report["classifier"]["held_out_accuracy"] == pytest.approx(result.classifier_accuracy)


@pytest.mark.parametrize("kind", MODELS)
def test_each_model_carries_exactly_the_eval_metric_names(report, kind):
    assert sorted(report[kind]) == sorted(EVAL_METRICS)


@pytest.mark.parametrize("kind", MODELS)
def test_the_same_metrics_are_logged_to_the_models_child_run(evaluated, report, kind):
    project, _ = evaluated
    run_id = json.loads((project.paths.train(kind) / "run.json").read_text())["run_id"]
    assert run_id == read_run_id(project.paths, kind) == project.results[kind].run_id
    run = project.client().get_run(run_id)
    logged = {k: v for k, v in run.data.metrics.items() if k in EVAL_METRICS}
    assert sorted(logged) == sorted(EVAL_METRICS)
    for key in EVAL_METRICS:
        assert logged[key] == pytest.approx(report[kind][key], rel=1e-6, abs=1e-12), key
    artifacts = {a.path for a in project.client().list_artifacts(run_id)}
    assert "metrics.json" in artifacts


def test_both_child_runs_carry_the_same_metric_names(evaluated):
    project, _ = evaluated
    client = project.client()
    names = [set(client.get_run(project.results[k].run_id).data.metrics) & set(EVAL_METRICS) for k in MODELS]
    assert names[0] == names[1] == set(EVAL_METRICS)


@pytest.mark.parametrize("kind", MODELS)
def test_fid_is_finite_and_not_negative(report, kind):
    for key in ("fid", "fid_real_floor"):
        assert math.isfinite(report[kind][key]) and report[kind][key] >= 0.0, key
    assert math.isfinite(report["real_floor"]["fid"]) and report["real_floor"]["fid"] >= 0.0


def test_real_vs_real_floor_is_below_both_models_after_two_epochs(report):
    floor = report["real_floor"]["fid"]
    for kind in MODELS:
        assert report[kind]["fid_real_floor"] == pytest.approx(floor)
        assert floor < report[kind]["fid"], kind


def test_floor_and_classifier_accuracy_are_shared_by_both_models(report):
    for key in ("fid_real_floor", "kid_mean_real_floor", "kid_std_real_floor", "classifier_accuracy"):
        assert report["vae"][key] == report["gan"][key], key


def test_distribution_scores_of_a_set_against_itself_is_near_zero(evaluated, features):
    project, _ = evaluated
    extractor, real = features
    scores = distribution_scores(extractor, real, real, project.params.evaluate)
    assert set(scores) == {"fid", "kid_mean", "kid_std"}
    assert abs(scores["fid"]) < 1.0
    assert abs(scores["kid_mean"]) < 0.01


def test_distribution_scores_against_noise_is_much_larger(evaluated, features):
    project, _ = evaluated
    extractor, real = features
    noise = torch.rand(len(real), 1, 8, 8, generator=torch.Generator().manual_seed(0))
    itself = distribution_scores(extractor, real, real, project.params.evaluate)
    against_noise = distribution_scores(extractor, real, noise, project.params.evaluate)
    assert math.isfinite(against_noise["fid"])
    assert against_noise["fid"] > 10.0 * max(itself["fid"], 0.1)
    assert against_noise["kid_mean"] > itself["kid_mean"]
