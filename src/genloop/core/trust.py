"""When an evaluation's figures cannot be trusted, and why: numbers in, reasons out (plain sentences a
user can act on).

Every generator metric is measured with a classifier trained on the real training images, against
held-out real images. A classifier near chance gives features (FID, KID, precision/recall) and class
figures (recognisable_share, class_tvd) that say nothing; a few dozen held-out images make FID's
covariance and every real-vs-real floor noise; and a model scoring well below that floor is copying
training images or is measured in features that cannot tell images apart, since no generator should
look more like the training set than held-out real images do.
"""
from __future__ import annotations

import math
from collections import Counter
from collections.abc import Mapping, Sequence

from genloop.config import TrustConfig, MODEL_TITLES

TRUSTED = "evaluation_trusted"  # per-model metric: 1 when no reason below applies, 0 otherwise
REASONS_TAG = "evaluation_untrusted_reasons"  # MLflow run tag: the reasons, one per line ("none" when trusted)
BUDGET_TAG = "genloop.budget_warning"  # MLflow run tag of a training warned about its epochs


def chance(labels: Sequence[int]) -> float:
    """The accuracy of always guessing the most common class: 1 / classes on a balanced set."""
    counts = Counter(int(label) for label in labels)
    return max(counts.values()) / len(labels) if len(labels) else 1.0


def accuracy_bar(chance_accuracy: float, config: TrustConfig) -> float:
    """The held-out accuracy the evaluation classifier must exceed: well clear of chance, both relatively
    (``chance_factor``) and absolutely (``chance_margin``)."""
    return max(chance_accuracy * config.chance_factor, chance_accuracy + config.chance_margin)


def _classes(labels: Sequence[int], class_names: Mapping[int, str]) -> str:
    present = sorted({int(label) for label in labels})
    names = [class_names.get(label, str(label)) for label in present]
    shown = ", ".join(names[:6]) + (", ..." if len(names) > 6 else "")
    return f"{len(present)} classes: {shown}"


def evaluation_doubts(classifier_accuracy: float, held_out_labels: Sequence[int], config: TrustConfig,
                      class_names: Mapping[int, str] | None = None) -> list[str]:
    """Why no figure of this evaluation can be trusted (both models alike); empty when none applies.

    ``held_out_labels``: the true labels of the held-out images the accuracy was measured on;
    ``class_names``: label -> the name the data gives it. One class gives no accuracy to judge."""
    reasons = []
    labels = [int(label) for label in held_out_labels]
    p = chance(labels)
    bar = accuracy_bar(p, config)
    if len(set(labels)) >= 2 and classifier_accuracy <= bar:
        reasons.append(
            f"the evaluation classifier labels {classifier_accuracy:.0%} of the {len(labels)} held-out images "
            f"correctly, near or below chance ({p:.0%} for {_classes(labels, class_names or {})}; trusted above "
            f"{bar:.0%}), so the FID/KID features and the class figures (recognisable_share, class_tvd) say "
            "little: collect more images per class or check the labels")
    if len(labels) < config.min_held_out_images:
        reasons.append(
            f"only {len(labels)} held-out images (val + test; evaluate.trust.min_held_out_images is "
            f"{config.min_held_out_images}): FID and its real-vs-real floor are noise at this size; collect more "
            "images or raise clean.split.val and clean.split.test")
    return reasons


def model_doubts(kind: str, fid: float | None, fid_floor: float | None, config: TrustConfig) -> list[str]:
    """Why this model's figures cannot be trusted: its FID well below the real-vs-real floor."""
    if fid is None or fid_floor is None or not (math.isfinite(fid) and math.isfinite(fid_floor)):
        return []
    if fid < fid_floor * config.floor_ratio:
        return [f"the {MODEL_TITLES.get(kind, kind)}'s FID {fid:.3g} is below the real-vs-real floor {fid_floor:.3g} "
                f"(held-out real images; flagged under {config.floor_ratio:g}x it): no generator should look more "
                "like the training images than held-out real ones do, so it copies them or the classifier's "
                "features cannot tell images apart"]
    return []


def doubts_by_model(shared: list[str], fids: Mapping[str, float | None], fid_floor: float | None,
                    config: TrustConfig) -> dict[str, list[str]]:
    """Each model's reasons: the shared ones, then its own."""
    return {kind: [*shared, *model_doubts(kind, fid, fid_floor, config)] for kind, fid in fids.items()}


def trusted_metric(reasons: Sequence[str]) -> dict[str, float]:
    return {TRUSTED: 0.0 if reasons else 1.0}


def reasons_tag(reasons: Sequence[str]) -> dict[str, str]:
    """The MLflow tags of one model's run (tag values are capped at 8,000 characters by MLflow)."""
    return {TRUSTED: "false" if reasons else "true", REASONS_TAG: ("\n".join(reasons) or "none")[:8000]}


def unique_reasons(by_model: Mapping[str, Sequence[str]]) -> list[str]:
    """All models' reasons once each, in order (the shared ones appear under every model)."""
    return list(dict.fromkeys(r for reasons in by_model.values() for r in reasons))


def budget_warning(kind: str, images: int, train_images: int, max_epochs: int) -> str | None:
    """A warning when ``train.<kind>.images`` means more than ``max_epochs`` passes over the training set:
    on a tiny set that is hours of memorising it, not learning its kind."""
    epochs = math.ceil(images / max(train_images, 1))
    if epochs <= max_epochs:
        return None
    return (f"train.{kind}.images = {images:,} over {train_images:,} training images means {epochs:,} epochs "
            f"(more than train.warn_epochs = {max_epochs}): a set this small is likely memorised by then "
            f"(watch val_loss in MLflow). Lower it (e.g. -S train.{kind}.images={train_images * max_epochs}) or collect more images")
