"""genloop.core.trust: when an evaluation's figures cannot be trusted, from numbers alone."""
from __future__ import annotations

import pytest

from genloop.config import TrustConfig
from genloop.core import trust

RULES = TrustConfig()  # min 200 held-out images, accuracy above max(1.5 x chance, chance + 0.1), floor ratio 0.9


def balanced(classes: int, per_class: int) -> list[int]:
    return [label for label in range(classes) for _ in range(per_class)]


def test_chance_is_the_most_common_class_share():
    assert trust.chance(balanced(3, 100)) == pytest.approx(1 / 3)
    assert trust.chance([0] * 70 + [1] * 30) == pytest.approx(0.7)


@pytest.mark.parametrize("classes, bar", [(10, 0.2), (3, 0.5), (2, 0.75)])
def test_accuracy_bar_is_well_clear_of_chance(classes, bar):
    assert trust.accuracy_bar(1 / classes, RULES) == pytest.approx(bar)


def test_classifier_below_chance_is_flagged_with_the_class_names():
    """The issue's shapes set: 0.154 on held-out images of 3 named classes (chance 0.33)."""
    reasons = trust.evaluation_doubts(0.154, balanced(3, 100), RULES, {0: "circle", 1: "square", 2: "triangle"})
    assert len(reasons) == 1
    assert "15%" in reasons[0] and "33%" in reasons[0] and "circle, square, triangle" in reasons[0]
    assert "digit" not in reasons[0]


def test_classifier_just_above_chance_is_still_flagged_and_one_well_above_is_not():
    assert trust.evaluation_doubts(0.45, balanced(3, 100), RULES)  # above chance, below 0.5
    assert not trust.evaluation_doubts(0.9, balanced(3, 100), RULES)
    assert not trust.evaluation_doubts(0.21, balanced(10, 30), RULES)  # 10 classes: trusted above 0.2


def test_one_class_has_no_accuracy_to_judge():
    assert not trust.evaluation_doubts(1.0, [4] * 300, RULES)


def test_too_few_held_out_images_is_flagged_naming_the_setting():
    reasons = trust.evaluation_doubts(0.95, balanced(3, 4), RULES)
    assert len(reasons) == 1
    assert "only 12 held-out images" in reasons[0] and "evaluate.trust.min_held_out_images is 200" in reasons[0]
    assert not trust.evaluation_doubts(0.95, balanced(2, 100), RULES)  # 200: enough


def test_a_model_beating_the_real_floor_is_flagged_and_one_near_it_is_not():
    """The issue's figures: FID 1.67 (VAE) and 2.71 (GAN) against a floor of 7.59."""
    assert "below the real-vs-real floor 7.59" in trust.model_doubts("vae", 1.67, 7.59, RULES)[0]
    assert trust.model_doubts("gan", 2.71, 7.59, RULES)
    assert not trust.model_doubts("gan", 7.2, 7.59, RULES)  # within the 0.9 ratio: noise, not a win
    assert not trust.model_doubts("gan", 20.0, 7.59, RULES)
    assert not trust.model_doubts("gan", None, 7.59, RULES) and not trust.model_doubts("gan", 1.0, float("nan"), RULES)


def test_each_model_gets_the_shared_reasons_and_only_its_own():
    by_model = trust.doubts_by_model(["shared"], {"vae": 1.0, "gan": 30.0}, 7.59, RULES)
    assert by_model["vae"][0] == "shared" and len(by_model["vae"]) == 2
    assert by_model["gan"] == ["shared"]
    assert trust.unique_reasons(by_model) == ["shared", by_model["vae"][1]]
    assert trust.trusted_metric([]) == {trust.TRUSTED: 1.0}
    assert trust.trusted_metric(["shared"]) == {trust.TRUSTED: 0.0}
    assert trust.reasons_tag([]) == {trust.TRUSTED: "true", trust.REASONS_TAG: "none"}


def test_budget_of_hundreds_of_epochs_on_a_tiny_set_warns_naming_the_setting():
    """The issue's run: 1,000,000 VAE images on 47 training images."""
    warning = trust.budget_warning("vae", 1_000_000, 47, 200)
    assert warning is not None
    assert "train.vae.images" in warning and "21,277 epochs" in warning and "train.vae.images=9400" in warning
    assert trust.budget_warning("gan", 400_000, 2_000, 200) is None  # exactly 200 epochs
    assert trust.budget_warning("gan", 400_001, 2_000, 200) is not None


def test_the_shipped_budgets_on_the_bundled_digits_do_not_warn_but_a_forty_seven_image_set_does():
    from genloop.config import Params

    train = Params().train
    digits_train = 1_254  # the bundled digits' training split, and as many augmented copies for the GAN
    assert trust.budget_warning("vae", train.vae.images, digits_train, train.warn_epochs) is None
    assert trust.budget_warning("gan", train.gan.images, 2 * digits_train, train.warn_epochs) is None
    assert trust.budget_warning("vae", train.vae.images, 47, train.warn_epochs) is not None
