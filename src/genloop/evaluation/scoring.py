"""Scoring generated images against the real ones: the classifier features (trained on the clean
training split, or reused while it and the settings are unchanged), the reference side computed once,
and every generator metric beside its real-vs-real floor.

Shared logic below the stages: the evaluate stage scores the trained models with it and export's
promotion gate re-scores a registered champion with it, so both measure the same thing.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from genloop.core import quality
from genloop.config import EvaluateConfig, Params
from genloop.io.datasets import class_names, load_split, to_tensor
from genloop.core.metric_names import FLOOR_SUFFIX, GENERATOR_METRICS
from genloop.core.models.classifier import (DigitClassifier, classifier_key, embed, normalise_features,
                                            train_classifier)
from genloop.io.checkpoints import load_classifier, save_classifiers
from genloop.paths import ProjectPaths


@dataclass(frozen=True)
class EvaluationData:
    """The real images samples are scored against, their classifier and what is computed from them once."""

    reference: torch.Tensor  # clean training split, (N, C, H, W) in [0, 1]
    reference_labels: np.ndarray
    held_out: torch.Tensor  # val + test: the real-vs-real floor, and as many samples are drawn per model
    test: torch.Tensor  # the VAE's likelihood is scored on this split
    classifier: DigitClassifier
    classifier_reused: bool
    classifier_accuracy: float  # on the held-out images
    num_classes: int
    reference_features: torch.Tensor  # normalised (kernel and k-NN metrics)
    reference_raw: torch.Tensor  # raw penultimate features (FID)
    manifold_reference: torch.Tensor  # a seeded subset of reference_features for the k-NN metrics
    manifold_radii: torch.Tensor  # its k-NN radii (nearest_k), the same for every candidate set
    held_out_nn: np.ndarray  # RMS pixel distance of each held-out image to its nearest training image
    alt_classifier: DigitClassifier  # the second feature network (fid_alt)
    reference_alt_raw: torch.Tensor  # its raw penultimate features of the training split
    alt_classifier_accuracy: float  # on the held-out images
    held_out_labels: np.ndarray | None = None  # true labels of held_out (label fidelity's floor)
    held_out_predicted: np.ndarray | None = None  # the classifier's argmax on held_out
    test_labels: np.ndarray | None = None  # true labels of test (a conditional VAE's likelihood is p(x | y))
    class_names: dict[int, str] | None = None  # label -> name from the manifest (the label itself if unnamed)

    @property
    def image_shape(self) -> tuple[int, int, int]:
        """(C, H, W) of the real images, which samples must match."""
        c, h, w = (int(d) for d in self.reference.shape[1:])
        return c, h, w


# The second feature network trains with this offset to the project seed (and another architecture).
ALT_SEED_OFFSET = 1000
# evaluate.batch_size counts rows of 28x28 grey images; larger images pass proportionally fewer rows.
PIXELS_PER_ROW = 28 * 28


def pass_rows(batch_size: int, image_shape: tuple[int, int, int]) -> int:
    """Rows per forward pass for images of ``image_shape`` (C, H, W): ``batch_size`` up to 28x28x1 (the
    digits and MNIST unchanged), fewer for larger images (at least 16), so a pass's activations hold
    about as many pixels whatever the image size (1,024 rows of 64x64x3 took gigabytes)."""
    c, h, w = image_shape
    return min(batch_size, max(16, batch_size * PIXELS_PER_ROW // (c * h * w)))


def scaled_to_images(config: EvaluateConfig, image_shape: tuple[int, int, int]) -> EvaluateConfig:
    """``config`` with ``batch_size`` as ``pass_rows`` gives it for these images (apply once)."""
    return config.model_copy(update={"batch_size": pass_rows(config.batch_size, image_shape)})


def class_count(*label_sets: np.ndarray) -> int:
    """The classifier's outputs: one per label up to the largest the clean splits hold (what clean kept),
    not what clean.labels lists, which may be all."""
    return max((int(a.max()) for a in label_sets if len(a)), default=-1) + 1


def load_evaluation_data(params: Params, paths: ProjectPaths) -> EvaluationData:
    """Read the clean splits, load (or train and save) the classifier, precompute the reference side."""
    train_images, train_labels = load_split(paths, "train")
    splits = {s: load_split(paths, s) for s in ("val", "test")}
    reference = to_tensor(train_images)
    config = scaled_to_images(params.evaluate, tuple(int(d) for d in reference.shape[1:]))
    held_out = to_tensor(np.concatenate([splits[s][0] for s in ("val", "test")]))
    held_out_labels = torch.from_numpy(np.concatenate([splits[s][1] for s in ("val", "test")]))
    test = to_tensor(splits["test"][0])
    if len(held_out) < 2 or len(test) < 1 or len(reference) < 2:
        raise ValueError(f"evaluation needs at least 2 training, 2 held-out and 1 test image in {paths.clean} "
                         f"(got {len(reference)}, {len(held_out)}, {len(test)}); "
                         "lower clean.split or collect more data")

    num_classes = class_count(train_labels, held_out_labels.numpy())
    labels = torch.from_numpy(train_labels.astype(np.int64))
    file = paths.classifier
    networks: dict[str, tuple[DigitClassifier, str]] = {}
    reused = True
    for name, arch, seed in (("classifier", "cnn", params.seed), ("alt", "mlp", params.seed + ALT_SEED_OFFSET)):
        settings = {"feature_dim": config.feature_dim, "epochs": config.classifier_epochs, "seed": seed,
                    "num_classes": num_classes, "arch": arch, "augment": config.classifier_augment}
        key = classifier_key(reference, labels, settings)
        network = load_classifier(file, key, name)
        if network is None:
            reused = False
            network = train_classifier(reference, labels, config.feature_dim, num_classes,
                                       config.classifier_epochs, seed, arch=arch, augment=config.classifier_augment)
        networks[name] = (network, key)
    if not reused:
        save_classifiers(file, networks)
    classifier, alt = networks["classifier"][0], networks["alt"][0]

    reference_raw, _ = embed(classifier, reference, config.batch_size)
    reference_features = normalise_features(reference_raw)
    reference_alt_raw, _ = embed(alt, reference, config.batch_size)
    _, held_out_logits = embed(classifier, held_out, config.batch_size)
    _, held_out_alt_logits = embed(alt, held_out, config.batch_size)
    accuracy = float((held_out_logits.argmax(1) == held_out_labels).float().mean())
    pick = torch.randperm(len(reference), generator=torch.Generator().manual_seed(params.seed))
    manifold_reference = reference_features[pick[:config.manifold_max_reference]]
    return EvaluationData(
        reference=reference, reference_labels=train_labels, held_out=held_out, test=test,
        classifier=classifier, classifier_reused=reused, classifier_accuracy=accuracy, num_classes=num_classes,
        reference_features=reference_features, reference_raw=reference_raw, manifold_reference=manifold_reference,
        manifold_radii=quality.knn_radii(manifold_reference, config.nearest_k),
        held_out_nn=quality.nearest_distances(held_out, reference, config.batch_size),
        alt_classifier=alt, reference_alt_raw=reference_alt_raw,
        alt_classifier_accuracy=float((held_out_alt_logits.argmax(1) == held_out_labels).float().mean()),
        held_out_labels=held_out_labels.numpy(), held_out_predicted=held_out_logits.argmax(1).numpy(),
        test_labels=np.asarray(splits["test"][1], dtype=np.int64), class_names=class_names(paths),
    )


def _as_images(images: np.ndarray | torch.Tensor, shape: tuple[int, int, int]) -> torch.Tensor:
    images = torch.as_tensor(np.asarray(images) if not isinstance(images, torch.Tensor) else images).float()
    if images.ndim == 3 and shape[0] == 1:
        images = images.unsqueeze(1)
    if images.ndim != 4 or tuple(images.shape[1:]) != shape:
        raise ValueError(f"samples shaped {tuple(images.shape)}; expected (N, {shape[0]}, {shape[1]}, {shape[2]}) "
                         "like the evaluation data")
    if len(images) < 2:
        raise ValueError("scoring needs at least 2 samples")
    if not torch.isfinite(images).all():
        raise ValueError("samples contain NaN or infinite pixels")
    return images.clamp(0, 1)


def score(data: EvaluationData, images: np.ndarray | torch.Tensor, config: EvaluateConfig,
          seed: int) -> tuple[dict[str, float], np.ndarray]:
    """``GENERATOR_METRICS`` of ``images`` in [0, 1] (N, C, H, W) against the training images, and
    the share of samples the classifier puts in each class."""
    images_are_held_out = images is data.held_out  # the floor: its pixel distances are precomputed
    images = _as_images(images, data.image_shape)
    raw, logits = embed(data.classifier, images, config.batch_size)
    alt_raw, _ = embed(data.alt_classifier, images, config.batch_size)
    features = normalise_features(raw)
    kid_mean, kid_std = quality.kid(data.reference_features, features, config.kid_subsets,
                                    config.kid_subset_size, seed)
    is_mean, is_std = quality.inception_score(logits, config.is_splits, seed)
    shares = quality.class_shares(logits, data.num_classes)
    metrics = {
        "fid": quality.fid(data.reference_raw, raw),
        "fid_alt": quality.fid(data.reference_alt_raw, alt_raw),
        "recognisable_share": quality.recognisable_share(logits, config.recognisable_confidence),
        "kid_mean": kid_mean, "kid_std": kid_std, "is_mean": is_mean, "is_std": is_std,
        **quality.manifold(data.manifold_reference, features, config.nearest_k, data.manifold_radii),
        "class_tvd": quality.total_variation(shares, quality.label_shares(data.reference_labels, data.num_classes)),
        **quality.memorisation(data.held_out_nn if images_are_held_out
                               else quality.nearest_distances(images, data.reference, config.batch_size),
                               data.held_out_nn, config.copy_percentile),
    }
    return {k: metrics[k] for k in GENERATOR_METRICS}, shares


def score_samples(params: Params, paths: ProjectPaths, images: np.ndarray | torch.Tensor) -> dict[str, float]:
    """Score generated images in [0, 1] shaped (N, C, H, W) (numpy or torch) on today's evaluation data.

    Returns the ``RUN_METRICS`` names (every generator metric, ``fid_alt`` included, and its floor), a
    superset of what ``reports/metrics.json`` carries per model, so a registered model can be
    re-scored and compared with a new one (the promotion gate); a candidate that wins under ``fid``
    but not ``fid_alt`` has not won. Draw as many
    samples as evaluate does (the held-out count) for comparable numbers. Reuses the saved
    classifier when the training split and settings are unchanged.
    """
    torch.set_num_threads(params.train.torch_threads())
    data = load_evaluation_data(params, paths)
    config = scaled_to_images(params.evaluate, data.image_shape)
    floor, _ = score(data, data.held_out, config, params.seed)
    scores, _ = score(data, images, config, params.seed)
    return with_floor(scores, floor, data.classifier_accuracy)


def with_floor(scores: dict[str, float], floor: dict[str, float], accuracy: float) -> dict[str, float]:
    return {**scores, **{k + FLOOR_SUFFIX: v for k, v in floor.items()}, "classifier_accuracy": accuracy}
