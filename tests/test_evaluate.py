"""Tests for genloop.evaluate: metrics.json, the metrics logged to MLflow, and the metrics' sanity
(a perfect generator scores near the floor, noise far from it, copies are flagged, the IWAE bound
sits below the negative ELBO).

Real MLflow (a sqlite store in the test's folder), both models trained for 2 epochs.
"""
from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from genloop import quality
from genloop.checkpoints import load_sampler, load_vae
from genloop.evaluate import (EVAL_METRICS, FLOOR_SUFFIX, GENERATOR_METRICS, MODELS, VAE_METRICS, classifier_file,
                              evaluate, interpolate, load_evaluation_data, score_samples)
from genloop.models.vae import negative_elbo_nats

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def evaluated(genloop_tiny_project):
    # a classifier trained for 8 epochs (not the tiny 2): the IS analogue needs confident class probabilities
    project = genloop_tiny_project("evaluate", overrides={"evaluate.classifier_epochs": 8})
    result = evaluate(project.params, project.paths)
    return project, result


@pytest.fixture(scope="module")
def report(evaluated) -> dict:
    project, _ = evaluated
    return json.loads(project.paths.metrics.read_text())


@pytest.fixture(scope="module")
def data(evaluated):
    project, _ = evaluated
    return load_evaluation_data(project.params, project.paths)


@pytest.fixture(scope="module")
def scored(evaluated, data):
    """score_samples of a perfect generator (unseen real images), noise, and copies of training images."""
    project, _ = evaluated
    n = len(data.test)
    noise = torch.rand(n, 1, *data.image_shape, generator=torch.Generator().manual_seed(0))
    return {
        "real": score_samples(project.params, project.paths, data.test),
        "noise": score_samples(project.params, project.paths, noise),
        "copies": score_samples(project.params, project.paths, data.reference[:n].numpy()),
    }


def test_evaluate_writes_metrics_json_with_both_models_the_floor_and_the_classifier(evaluated, report):
    project, result = evaluated
    assert result.report == project.paths.metrics == project.root / "reports" / "metrics.json"
    assert result.html == project.root / "reports" / "index.html" and result.html.exists()
    assert {"vae", "gan", "real_floor", "classifier", "class_shares"} <= set(report)
    assert set(report["real_floor"]) == set(GENERATOR_METRICS)
    assert report["classifier"]["feature_dim"] == project.params.evaluate.feature_dim
    assert 0.0 <= report["classifier"]["held_out_accuracy"] <= 1.0
    assert report["classifier"]["held_out_accuracy"] == pytest.approx(result.classifier_accuracy)


@pytest.mark.parametrize("kind", MODELS)
def test_each_model_carries_the_eval_metric_names_and_only_the_vae_its_likelihood(report, kind):
    extra = set(VAE_METRICS) if kind == "vae" else set()
    assert set(report[kind]) == set(EVAL_METRICS) | extra
    for key, value in report[kind].items():
        assert math.isfinite(value), (kind, key)


def test_class_shares_are_distributions_and_the_tvd_matches_them(report):
    shares = report["class_shares"]
    assert {"real_train", "real_held_out", "vae", "gan"} <= set(shares)
    for name, per_class in shares.items():
        assert sorted(per_class, key=int) == [str(c) for c in range(10)], name
        assert sum(per_class.values()) == pytest.approx(1.0), name
    for kind in MODELS:
        tvd = 0.5 * sum(abs(shares[kind][c] - shares["real_train"][c]) for c in shares[kind])
        assert report[kind]["class_tvd"] == pytest.approx(tvd)
        assert 0.0 <= tvd <= 1.0


@pytest.mark.parametrize("kind", MODELS)
def test_the_same_metrics_and_the_report_are_logged_to_the_models_child_run(evaluated, report, kind):
    project, _ = evaluated
    client = project.client()
    run = client.get_run(project.results[kind].run_id)
    expected = set(EVAL_METRICS) | (set(VAE_METRICS) if kind == "vae" else set())
    logged = {k: v for k, v in run.data.metrics.items() if k in set(EVAL_METRICS) | set(VAE_METRICS)}
    assert set(logged) == expected
    for key in expected:
        assert logged[key] == pytest.approx(report[kind][key], rel=1e-6, abs=1e-12), key
    run_id = run.info.run_id
    assert "metrics.json" in {a.path for a in client.list_artifacts(run_id)}
    assert "report/index.html" in {a.path for a in client.list_artifacts(run_id, "report")}
    figures = {a.path for a in client.list_artifacts(run_id, "report/figures")}
    assert {f"report/figures/samples_{k}.png" for k in MODELS} <= figures


def test_floor_and_classifier_accuracy_are_shared_by_both_models(report):
    for key in [m + FLOOR_SUFFIX for m in GENERATOR_METRICS] + ["classifier_accuracy"]:
        assert report["vae"][key] == report["gan"][key], key
        if key != "classifier_accuracy":
            assert report["vae"][key] == report["real_floor"][key.removesuffix(FLOOR_SUFFIX)]


def test_real_vs_real_floor_is_below_both_models_after_two_epochs(report):
    for kind in MODELS:
        assert 0.0 <= report["real_floor"]["fid"] < report[kind]["fid"], kind


def test_kid_is_on_the_cosine_scale(report):
    """Features are rescaled to norm sqrt(d): KID's cubic kernel is (cos + 1)^3, so KID stays in [-14, 14]."""
    for name in ("vae", "gan", "real_floor"):
        assert -14.0 <= report[name]["kid_mean"] <= 14.0
        assert 0.0 <= report[name]["kid_std"] <= 14.0


def test_a_perfect_generator_scores_near_the_floor_and_noise_clearly_worse(scored):
    real, noise = scored["real"], scored["noise"]
    floor = {m: real[m + FLOOR_SUFFIX] for m in GENERATOR_METRICS}
    assert noise["fid_real_floor"] == real["fid_real_floor"]  # the same data, the same floor
    assert real["fid"] - floor["fid"] < 0.1 * (noise["fid"] - floor["fid"])
    assert real["kid_mean"] < noise["kid_mean"]
    for key in ("precision", "coverage", "is_mean"):
        assert real[key] > noise[key] + 0.1 * abs(floor[key]), key
        assert abs(real[key] - floor[key]) < abs(noise[key] - floor[key]), key
    assert real["class_tvd"] < noise["class_tvd"]


def test_memorisation_flags_a_generator_that_returns_training_images(scored):
    copies, real = scored["copies"], scored["real"]
    assert copies["train_copy_share"] > 0.9
    assert copies["nn_train_distance_ratio"] < 0.05
    assert real["train_copy_share"] < 0.1
    assert 0.5 < real["nn_train_distance_ratio"] < 2.0
    assert real["nn_train_distance_ratio_real_floor"] == pytest.approx(1.0)


def test_score_samples_rejects_images_of_another_shape(evaluated):
    project, _ = evaluated
    with pytest.raises(ValueError, match="expected"):
        score_samples(project.params, project.paths, torch.rand(10, 1, 5, 5))


def test_iwae_bound_lies_below_the_negative_elbo_and_ssim_in_unit_range(report):
    vae = report["vae"]
    assert 0.0 < vae["test_nll_iwae"] <= vae["test_neg_elbo"]
    assert 0.0 <= vae["test_recon_ssim"] <= 1.0


def test_iwae_with_one_sample_estimates_the_negative_elbo(evaluated, data):
    """k = 1 is a one-sample negative ELBO: checks the log-densities against the analytic-KL ELBO."""
    project, _ = evaluated
    vae = load_vae(project.paths.train("vae") / "model.pt")
    one = quality.iwae_nll(vae, data.test, samples=1, seed=3)
    elbo = negative_elbo_nats(vae, data.test, seed=3)
    assert one == pytest.approx(elbo, rel=0.03)
    assert quality.iwae_nll(vae, data.test, samples=16, seed=3) < one


def test_load_vae_rebuilds_the_decoder_load_sampler_gives(evaluated):
    project, _ = evaluated
    checkpoint = project.paths.train("vae") / "model.pt"
    vae = load_vae(checkpoint)
    decoder, latent_dim = load_sampler(checkpoint)
    z = torch.randn(4, latent_dim)
    with torch.no_grad():
        assert torch.allclose(torch.sigmoid(vae.decoder.logits(z)), decoder(z))
    with pytest.raises(ValueError, match="not a VAE"):
        load_vae(project.paths.train("gan") / "model.pt")


def test_interpolations_start_and_end_at_their_latent_pair(evaluated):
    project, _ = evaluated
    checkpoint = project.paths.train("gan") / "model.pt"
    walk = interpolate(checkpoint, rows=3, steps=5, seed=7)
    assert walk.shape[0] == 15 and walk.min() >= 0 and walk.max() <= 1
    sampler, latent_dim = load_sampler(checkpoint)
    z0, z1 = torch.randn(2, 3, 1, latent_dim, generator=torch.Generator().manual_seed(7))
    with torch.no_grad():
        ends = sampler(torch.cat([z0[:, 0], z1[:, 0]]))
    assert torch.allclose(walk.view(3, 5, *walk.shape[1:])[:, 0], ends[:3], atol=1e-5)
    assert torch.allclose(walk.view(3, 5, *walk.shape[1:])[:, -1], ends[3:], atol=1e-5)


def test_nearest_distances_are_zero_for_copies_and_rms_scaled():
    ref = torch.rand(50, 1, 4, 4, generator=torch.Generator().manual_seed(1))
    cand = torch.cat([ref[:5], ref[:5] + 0.5])
    d = quality.nearest_distances(cand, ref, batch_size=1)
    assert np.allclose(d[:5], 0.0, atol=1e-3)
    assert np.all(d[5:] <= 0.5 + 1e-5)


def test_the_classifier_is_saved_and_reused_until_its_settings_change(evaluated, data):
    """Last in this module: it leaves a 1-epoch classifier saved in the project."""
    project, _ = evaluated
    assert classifier_file(project.paths).exists()
    assert data.classifier_reused  # evaluate trained and saved it; loading again reuses it
    retrained = load_evaluation_data(project.params_with({"evaluate.classifier_epochs": 1}), project.paths)
    assert not retrained.classifier_reused
    assert load_evaluation_data(project.params_with({"evaluate.classifier_epochs": 1}), project.paths).classifier_reused
