"""Tests for genloop.stages.evaluate: metrics.json (headline) and metrics_detail.json (everything), the
metrics logged to MLflow, and the metrics' sanity (a perfect generator scores near the floor under
both feature networks, noise far from it, copies are flagged, the IWAE bound sits below the
negative ELBO).

Real MLflow (a sqlite store in the test's folder), both models trained for 2 epochs.
"""
from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from genloop.core import quality
from genloop.core.trust import TRUSTED
from genloop.io.checkpoints import load_sampler, load_vae
from genloop.config import MODELS
from genloop.core.metric_names import (EVAL_METRICS, FLOOR_SUFFIX, GENERATOR_METRICS, HEADLINE_METRICS, MIA_METRICS,
                                       RUN_METRICS, VAE_METRICS, VAE_MIA_METRICS)
from genloop.evaluation.scoring import load_evaluation_data, score_samples
from genloop.stages.evaluate import detail_file, evaluate, interpolate, iwae_subset
from genloop.core.models.vae import negative_elbo_nats

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
def detail(evaluated) -> dict:
    project, _ = evaluated
    return json.loads(detail_file(project.paths).read_text())


@pytest.fixture(scope="module")
def data(evaluated):
    project, _ = evaluated
    return load_evaluation_data(project.params, project.paths)


@pytest.fixture(scope="module")
def scored(evaluated, data):
    """score_samples of a perfect generator (unseen real images), noise, and copies of training images."""
    project, _ = evaluated
    n = len(data.test)
    noise = torch.rand(n, *data.image_shape, generator=torch.Generator().manual_seed(0))
    return {
        "real": score_samples(project.params, project.paths, data.test),
        "noise": score_samples(project.params, project.paths, noise),
        "copies": score_samples(project.params, project.paths, data.reference[:n].numpy()),
    }


def test_metrics_json_holds_only_the_headline_per_model_and_one_floor_block(evaluated, report):
    project, result = evaluated
    assert result.report == project.paths.metrics == project.root / "reports" / "metrics.json"
    assert result.html == project.root / "reports" / "index.html" and result.html.exists()
    assert set(report) == {"vae", "gan", "real_floor"}
    assert set(report["gan"]) == set(HEADLINE_METRICS) | set(MIA_METRICS) | {TRUSTED}
    assert set(HEADLINE_METRICS) == set(EVAL_METRICS)
    assert set(report["vae"]) == (set(HEADLINE_METRICS) | set(VAE_METRICS) | set(MIA_METRICS) | set(VAE_MIA_METRICS)
                                  | {TRUSTED})
    assert set(report["real_floor"]) == set(HEADLINE_METRICS)
    assert {"fid", "fid_alt", "recognisable_share"} <= set(HEADLINE_METRICS)
    for block in report.values():
        for key, value in block.items():
            assert isinstance(value, float) and math.isfinite(value), key


def test_metrics_detail_json_holds_every_figure_and_agrees_with_the_headline(evaluated, report, detail):
    project, result = evaluated
    assert result.detail == detail_file(project.paths) == project.root / "reports" / "metrics_detail.json"
    assert {"vae", "gan", "real_floor", "classifier", "class_shares", "samples_per_model"} <= set(detail)
    assert set(detail["real_floor"]) == set(GENERATOR_METRICS)
    assert set(detail["gan"]) == set(RUN_METRICS) | set(MIA_METRICS) | {TRUSTED}
    assert set(detail["vae"]) == (set(RUN_METRICS) | set(VAE_METRICS) | set(MIA_METRICS) | set(VAE_MIA_METRICS)
                                  | {TRUSTED})
    for name in ("vae", "gan", "real_floor"):
        assert report[name] == {k: detail[name][k] for k in report[name]}, name
    classifier = detail["classifier"]
    assert classifier["feature_dim"] == project.params.evaluate.feature_dim
    for key in ("held_out_accuracy", "alt_held_out_accuracy"):
        assert 0.0 <= classifier[key] <= 1.0
    assert classifier["held_out_accuracy"] == pytest.approx(result.classifier_accuracy)


@pytest.mark.parametrize("kind", MODELS)
def test_each_model_carries_every_metric_finite_and_only_the_vae_its_likelihood(detail, kind):
    extra = set(VAE_METRICS) | set(VAE_MIA_METRICS) if kind == "vae" else set()
    assert set(detail[kind]) == set(RUN_METRICS) | set(MIA_METRICS) | extra | {TRUSTED}
    for key, value in detail[kind].items():
        assert math.isfinite(value), (kind, key)


def test_class_shares_are_distributions_and_the_tvd_matches_them(detail):
    shares = detail["class_shares"]
    assert {"real_train", "real_held_out", "vae", "gan"} <= set(shares)
    for name, per_class in shares.items():
        assert sorted(per_class, key=int) == [str(c) for c in range(10)], name
        assert sum(per_class.values()) == pytest.approx(1.0), name
    for kind in MODELS:
        tvd = 0.5 * sum(abs(shares[kind][c] - shares["real_train"][c]) for c in shares[kind])
        assert detail[kind]["class_tvd"] == pytest.approx(tvd)
        assert 0.0 <= tvd <= 1.0


@pytest.mark.parametrize("kind", MODELS)
def test_every_metric_and_its_floor_and_the_report_are_logged_to_the_models_child_run(evaluated, detail, kind):
    project, _ = evaluated
    client = project.client()
    run = client.get_run(project.results[kind].run_id)
    expected = set(RUN_METRICS) | set(MIA_METRICS) | (set(VAE_METRICS) | set(VAE_MIA_METRICS) if kind == "vae" else set())
    assert {"recognisable_share", "recognisable_share_real_floor", "fid_alt", "fid_alt_real_floor"} <= expected
    everything = set(RUN_METRICS) | set(VAE_METRICS) | set(MIA_METRICS) | set(VAE_MIA_METRICS)
    logged = {k: v for k, v in run.data.metrics.items() if k in everything}
    assert set(logged) == expected
    for key in expected:
        assert logged[key] == pytest.approx(detail[kind][key], rel=1e-6, abs=1e-12), key
    run_id = run.info.run_id
    assert {"metrics.json", "metrics_detail.json"} <= {a.path for a in client.list_artifacts(run_id)}
    assert "report/index.html" in {a.path for a in client.list_artifacts(run_id, "report")}
    figures = {a.path for a in client.list_artifacts(run_id, "report/figures")}
    assert {f"report/figures/samples_{k}.png" for k in MODELS} <= figures


def test_floor_and_classifier_accuracy_are_shared_by_both_models(detail):
    for key in [m + FLOOR_SUFFIX for m in GENERATOR_METRICS] + ["classifier_accuracy"]:
        assert detail["vae"][key] == detail["gan"][key], key
        if key != "classifier_accuracy":
            assert detail["vae"][key] == detail["real_floor"][key.removesuffix(FLOOR_SUFFIX)]


def test_real_vs_real_floor_is_below_both_models_under_both_feature_networks(report):
    for kind in MODELS:
        assert 0.0 <= report["real_floor"]["fid"] < report[kind]["fid"], kind
        assert 0.0 <= report["real_floor"]["fid_alt"] < report[kind]["fid_alt"], kind


def test_kid_is_on_the_cosine_scale(detail):
    """Features are rescaled to norm sqrt(d): KID's cubic kernel is (cos + 1)^3, so KID stays in [-14, 14]."""
    for name in ("vae", "gan", "real_floor"):
        assert -14.0 <= detail[name]["kid_mean"] <= 14.0
        assert 0.0 <= detail[name]["kid_std"] <= 14.0


def test_a_perfect_generator_scores_near_the_floor_and_noise_clearly_worse(scored):
    real, noise = scored["real"], scored["noise"]
    floor = {m: real[m + FLOOR_SUFFIX] for m in GENERATOR_METRICS}
    assert set(real) == set(RUN_METRICS)
    for key in ("fid", "fid_alt"):
        assert noise[key + FLOOR_SUFFIX] == real[key + FLOOR_SUFFIX]  # the same data, the same floor
        assert math.isfinite(real[key]) and math.isfinite(noise[key])
        assert real[key] - floor[key] < 0.1 * (noise[key] - floor[key]), key
    assert real["kid_mean"] < noise["kid_mean"]
    for key in ("precision", "coverage", "is_mean"):
        assert real[key] > noise[key] + 0.1 * abs(floor[key]), key
        assert abs(real[key] - floor[key]) < abs(noise[key] - floor[key]), key
    assert real["class_tvd"] < noise["class_tvd"]


def test_real_digits_are_recognisable_and_noise_is_not(scored):
    real, noise = scored["real"], scored["noise"]
    assert real["recognisable_share"] > 0.5  # an 8-epoch classifier: confident on most real digits
    assert real["recognisable_share_real_floor"] > 0.5
    assert noise["recognisable_share"] < 0.5 * real["recognisable_share"]


def test_recognisable_share_counts_images_at_or_above_the_confidence():
    confident = torch.tensor([[10.0, 0.0, 0.0], [0.0, 0.0, 10.0]])  # p(top) ~ 0.9999
    even = torch.zeros(2, 3)  # p = 1/3 each
    assert quality.recognisable_share(confident, 0.9) == 1.0
    assert quality.recognisable_share(even, 0.9) == 0.0
    assert quality.recognisable_share(torch.cat([confident, even]), 0.9) == 0.5
    assert quality.recognisable_share(even, 1 / 3 - 1e-9) == 1.0


def test_manifold_metrics_equal_prdc_with_or_without_precomputed_radii():
    import contextlib
    import io

    from prdc import compute_prdc

    gen = torch.Generator().manual_seed(5)
    real = torch.randn(300, 8, generator=gen)
    fake = torch.randn(200, 8, generator=gen) * 1.3 + 0.4
    with contextlib.redirect_stdout(io.StringIO()):
        expected = compute_prdc(real.numpy(), fake.numpy(), 5)
    for radii in (None, quality.knn_radii(real, 5)):
        got = quality.manifold(real, fake, 5, reference_radii=radii, block_rows=64)
        for key, value in expected.items():
            assert got[key] == pytest.approx(float(value), abs=1.5 / 200), key
    assert 0.0 < got["precision"] < 1.0 and 0.0 < got["coverage"] < 1.0  # a case where they can disagree


def test_manifold_prints_nothing(capsys):
    real, fake = torch.randn(40, 4), torch.randn(30, 4)
    quality.manifold(real, fake, 3)
    assert capsys.readouterr().out == ""


def test_iwae_subset_is_seeded_and_bounded():
    test = torch.arange(20.0).view(20, 1, 1, 1)
    assert torch.equal(iwae_subset(test, 50, 0), test)
    picked = iwae_subset(test, 5, 3)
    assert len(picked) == 5 and len(set(picked.flatten().tolist())) == 5
    assert torch.equal(picked, iwae_subset(test, 5, 3))
    assert not torch.equal(picked, test[:5])


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
    """The sampler is the VAE's decoder, fed through the fitted prior when training fitted one."""
    from genloop.io.checkpoints import read_checkpoint
    from genloop.core.models.vae import LatentAffine

    project, _ = evaluated
    checkpoint = project.paths.train("vae") / "model.pt"
    vae = load_vae(checkpoint)
    decoder, latent_dim = load_sampler(checkpoint)
    prior = LatentAffine(latent_dim)
    prior_state = read_checkpoint(checkpoint)["state_dicts"].get("prior")
    if prior_state is not None:
        prior.load_state_dict(prior_state)
    z = torch.randn(4, latent_dim)
    with torch.no_grad():
        assert torch.allclose(torch.sigmoid(vae.decoder.logits(prior(z))), decoder(z), atol=1e-6)
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


def test_the_two_feature_networks_differ_in_architecture(data):
    assert data.classifier.arch != data.alt_classifier.arch
    assert data.reference_alt_raw.shape == data.reference_raw.shape


def test_the_classifiers_are_saved_and_reused_until_their_settings_change(evaluated, data):
    """Last in this module: it leaves 1-epoch classifiers saved in the project."""
    project, _ = evaluated
    assert project.paths.classifier.exists()
    assert data.classifier_reused  # evaluate trained and saved both; loading again reuses them
    retrained = load_evaluation_data(project.params_with({"evaluate.classifier_epochs": 1}), project.paths)
    assert not retrained.classifier_reused
    assert load_evaluation_data(project.params_with({"evaluate.classifier_epochs": 1}), project.paths).classifier_reused


@pytest.mark.parametrize("kind", MODELS)
def test_the_membership_audit_is_in_both_reports_with_its_roc_curves(report, detail, kind):
    attacks = ("distance", "elbo") if kind == "vae" else ("distance",)
    for attack in attacks:
        assert 0.0 <= report[kind][f"mia_{attack}_auc"] <= 1.0
        assert 0.0 <= report[kind][f"mia_{attack}_tpr_at_1fpr"] <= 1.0
    audit = detail["membership"]
    assert audit["non_members"] == "val + test" and audit["images_per_side"] >= 2
    assert set(audit["tpr"][kind]) == set(attacks)
    for attack in attacks:
        curve = audit["tpr"][kind][attack]
        assert len(curve) == len(audit["fpr_grid"]) and curve[-1] == 1.0
        assert curve == sorted(curve)  # a ROC curve never falls


def test_the_audit_of_a_model_that_memorised_its_training_images_finds_them(evaluated, data):
    """A "generator" that returns the training images: the distance attack tells members apart."""
    from genloop.core import membership

    metrics, _ = membership.audit(data.reference, data.held_out, data.reference, None, 1000, seed=0)
    assert metrics["mia_distance_auc"] > 0.95
    metrics, _ = membership.audit(data.reference, data.held_out, data.held_out, None, 1000, seed=0)
    assert metrics["mia_distance_auc"] < 0.05


def test_no_audit_when_audit_images_is_zero(evaluated, data):
    from genloop.stages.evaluate import membership_audit

    project, _ = evaluated
    config = project.params.evaluate.model_copy(update={"audit_images": 0})
    assert membership_audit(data.reference, data.held_out, project.paths.train("gan") / "model.pt", "gan",
                            config, 0) == ({}, {})
