"""Tests for genloop.core.membership: the attack statistics (AUC, TPR at a low FPR, ties), the balanced
subsets, and that the distance attack catches a generator that hands back its training images."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from sklearn.metrics import roc_auc_score, roc_curve

from genloop.core import membership


def _images(n: int, seed: int, side: int = 8) -> torch.Tensor:
    return torch.rand(n, 1, side, side, generator=torch.Generator().manual_seed(seed))


def test_perfectly_separable_scores_give_auc_and_low_fpr_tpr_of_one():
    member, non_member = np.arange(100, 200.0), np.arange(0, 100.0)
    assert membership.auc(member, non_member) == 1.0
    assert membership.tpr_at_fpr(member, non_member) == 1.0
    assert membership.auc(non_member, member) == 0.0  # the attack reads the scores the wrong way round


def test_scores_of_one_distribution_give_auc_near_half_and_tpr_near_the_fpr():
    rng = np.random.default_rng(0)
    member, non_member = rng.normal(size=5000), rng.normal(size=5000)
    assert membership.auc(member, non_member) == pytest.approx(0.5, abs=0.02)
    assert membership.tpr_at_fpr(member, non_member) == pytest.approx(0.01, abs=0.01)


def test_identical_scores_are_one_tie_worth_half_and_no_low_fpr_threshold():
    scores = np.full(50, 3.0)
    assert membership.auc(scores, scores) == 0.5
    assert membership.tpr_at_fpr(scores, scores) == 0.0  # calling anyone a member calls every non-member one


def test_tpr_at_one_percent_fpr_by_hand():
    # 100 non-members scored 0..99; members: 30 above every non-member, 20 tied with the top non-member
    # (99), 50 at the bottom. At FPR <= 1% the threshold 99 lets one non-member and 50 members through.
    non_member = np.arange(100.0)
    member = np.r_[np.full(30, 200.0), np.full(20, 99.0), np.full(50, -1.0)]
    assert membership.tpr_at_fpr(member, non_member, 0.01) == pytest.approx(0.5)
    assert membership.tpr_at_fpr(member, non_member, 0.0099) == pytest.approx(0.3)  # the tie is one step
    # AUC: 30 beat all 100, 20 beat 99 and tie 1, 50 beat none
    assert membership.auc(member, non_member) == pytest.approx((30 * 100 + 20 * 99.5) / (100 * 100))


def test_auc_and_roc_agree_with_scikit_learn_on_tied_scores():
    rng = np.random.default_rng(1)
    member, non_member = rng.integers(0, 8, 300).astype(float) + 0.5, rng.integers(0, 8, 200).astype(float)
    member = np.round(member)  # many ties across the two sides
    labels = np.r_[np.ones(300), np.zeros(200)]
    scores = np.r_[member, non_member]
    assert membership.auc(member, non_member) == pytest.approx(roc_auc_score(labels, scores))
    fpr, tpr, _ = roc_curve(labels, scores, drop_intermediate=False)
    ours_fpr, ours_tpr = membership.roc(member, non_member)
    np.testing.assert_allclose(ours_fpr, fpr)
    np.testing.assert_allclose(ours_tpr, tpr)


def test_roc_on_grid_is_the_best_tpr_within_each_fpr():
    rng = np.random.default_rng(2)
    member, non_member = rng.normal(0.5, 1, 400), rng.normal(0, 1, 400)
    grid = np.array([0.0, 0.01, 0.1, 0.5, 1.0])
    on_grid = membership.roc_on_grid(member, non_member, grid)
    assert list(on_grid) == [membership.tpr_at_fpr(member, non_member, f) for f in grid]
    assert on_grid[-1] == 1.0 and np.all(np.diff(on_grid) >= 0)


def test_bad_scores_are_refused():
    with pytest.raises(ValueError, match="members and non-members"):
        membership.auc(np.array([]), np.array([1.0]))
    with pytest.raises(ValueError, match="NaN"):
        membership.auc(np.array([np.nan]), np.array([1.0]))


def test_balanced_subsets_are_equal_sized_seeded_and_capped():
    members, non_members = torch.arange(100), torch.arange(1000, 1030)
    a, b = membership.balanced(members, non_members, 50, seed=3)
    assert len(a) == len(b) == 30 and set(b.tolist()) == set(non_members.tolist())
    again = membership.balanced(members, non_members, 50, seed=3)
    assert torch.equal(a, again[0]) and torch.equal(b, again[1])
    assert not torch.equal(a, membership.balanced(members, non_members, 50, seed=4)[0])
    assert len(membership.balanced(members, non_members, 10, seed=3)[0]) == 10


def test_the_distance_attack_catches_a_generator_that_returns_training_images_and_not_held_out_ones():
    train, held_out, unseen = _images(200, 0), _images(200, 1), _images(200, 2)
    near_copies = (train + 0.02 * torch.randn(train.shape, generator=torch.Generator().manual_seed(3))).clamp(0, 1)
    copies, _ = membership.audit(train, held_out, near_copies, None, limit=1000, seed=0)
    some, _ = membership.audit(train, held_out, torch.cat([train[:50], unseen[:150]]), None, limit=1000, seed=0)
    fresh, _ = membership.audit(train, held_out, unseen, None, limit=1000, seed=0)
    assert copies["mia_distance_auc"] > 0.99 and copies["mia_distance_tpr_at_1fpr"] > 0.9
    # a quarter copied: those members are found at no false positive, the rest are a coin toss
    assert some["mia_distance_auc"] == pytest.approx(0.25 + 0.75 * 0.5, abs=0.06)
    assert some["mia_distance_tpr_at_1fpr"] >= 0.25
    assert fresh["mia_distance_auc"] == pytest.approx(0.5, abs=0.1)
    # a "generator" that returns the held-out images marks them, not the training ones, as members
    backwards, _ = membership.audit(train, held_out, held_out, None, limit=1000, seed=0)
    assert backwards["mia_distance_auc"] < 0.05


def test_distance_scores_are_minus_the_rms_distance_to_the_nearest_sample_whatever_the_blocks():
    from genloop.core.quality import nearest_distances

    images, generated = _images(50, 0), _images(300, 1)
    expected = -nearest_distances(images, generated)
    np.testing.assert_allclose(membership.distance_scores(images, generated), expected, rtol=1e-5)
    np.testing.assert_allclose(membership.distance_scores(images, generated, block_entries=7 * 50), expected, rtol=1e-5)
    assert np.allclose(membership.distance_scores(generated[:5], generated), 0.0, atol=1e-3)


def test_the_distance_attack_searches_samples_streamed_in_blocks_as_it_searches_a_tensor():
    """evaluate hands the audit its samples as they are drawn (an iterable of blocks), never the whole draw."""
    members, non_members, generated = _images(40, 0), _images(30, 2), _images(300, 1)
    whole = membership.nearest_generated([members, non_members], generated)
    drawn: list[int] = []

    def blocks():
        for block in generated.split(64):
            drawn.append(len(block))
            yield block

    streamed = membership.nearest_generated([members, non_members], blocks())
    assert drawn == [64, 64, 64, 64, 44]  # one pass: each sample drawn once for both sets
    for a, b in zip(whole, streamed):
        np.testing.assert_allclose(a, b, rtol=1e-6)
    np.testing.assert_allclose(whole[0], membership.distance_scores(members, generated), rtol=1e-6)
    with pytest.raises(ValueError, match="no generated samples"):
        membership.nearest_generated([members], iter(()))


class _NearestDecoder(torch.nn.Module):
    def __init__(self, train: torch.Tensor):
        super().__init__()
        self.train_images = train.flatten(1)

    def logits(self, z: torch.Tensor) -> torch.Tensor:
        image = self.train_images[(z[:, 0] * 100).round().long()].clamp(0.02, 0.98)
        return torch.log(image / (1 - image))


class _MemorisingVAE(torch.nn.Module):
    """A stand-in VAE that encodes an image as the index of its nearest training image and decodes that
    image: training images get a near-perfect reconstruction, so a high ELBO."""

    def __init__(self, train: torch.Tensor):
        super().__init__()
        self.decoder = _NearestDecoder(train)

    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        nearest = torch.cdist(x.flatten(1), self.decoder.train_images).argmin(1)
        mu = torch.stack([nearest.float() / 100, torch.zeros(len(x))], 1)  # small: KL about constant
        return mu, torch.full_like(mu, -20.0)  # z = mu to float precision


def test_the_elbo_attack_favours_images_the_vae_reconstructs_and_reports_both_attacks():
    train, held_out = _images(100, 0), _images(100, 1)
    vae = _MemorisingVAE(train)
    scores = membership.elbo_scores(vae, torch.cat([train, held_out]), seed=0, batch_size=64)
    assert len(scores) == 200 and scores[:100].min() > scores[100:].max()
    np.testing.assert_allclose(scores, membership.elbo_scores(vae, torch.cat([train, held_out]), seed=0,
                                                              batch_size=7), rtol=1e-5)  # batching changes nothing
    metrics, curves = membership.audit(train, held_out, _images(300, 2), vae, limit=80, seed=0)
    assert set(metrics) == {"mia_distance_auc", "mia_distance_tpr_at_1fpr", "mia_elbo_auc", "mia_elbo_tpr_at_1fpr"}
    assert metrics["mia_elbo_auc"] == 1.0 and metrics["mia_elbo_tpr_at_1fpr"] == 1.0
    assert set(curves) == {"distance", "elbo"} and len(curves["elbo"]) == len(membership.ROC_GRID)
