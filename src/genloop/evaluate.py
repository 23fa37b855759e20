"""Stage 5, evaluate: score both generators with the same metrics, beside the real-vs-real floor,
and write the HTML report.

Features and class probabilities come from a small classifier trained here on the clean real
training split, standing in for Inception (no download, native resolution); a second network of
another architecture and seed gives a second FID (``fid_alt``), so no single feature space decides.
Both are saved in ``outputs/evaluate/classifier.pt`` and reused while the training split and
settings are unchanged. Every metric of ``GENERATOR_METRICS`` is also computed for the held-out real
images (val + test) against the same training images: that is its ``*_real_floor``, what a perfect
generator would score.

``reports/metrics.json`` holds the ``HEADLINE_METRICS`` per model and their floors (what ``dvc
metrics show`` lists); ``reports/metrics_detail.json`` holds everything, per-class shares included.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch

from genloop import atomic, quality, tracking
from genloop.checkpoints import load_classes, load_sampler, load_vae
from genloop.label_fidelity import conditional_samples, draw_labels, label_fidelity, per_class_labels
from genloop.config import EvaluateConfig, Params
from genloop.datasets import load_split, read_run_id, to_tensor
from genloop.metric_names import (EVAL_METRICS, FLOOR_SUFFIX, GENERATOR_METRICS, HEADLINE_METRICS,  # re-exported
                                  MODELS, RUN_METRICS, VAE_METRICS, is_label_fidelity, label_fidelity_metrics)
from genloop.models.classifier import (DigitClassifier, classifier_key, embed, load_classifier,
                                       normalise_features, save_classifiers, train_classifier)
from genloop.paths import ProjectPaths
from genloop.seeds import sampling_seed

if TYPE_CHECKING:
    from genloop.report import HtmlReport


@dataclass(frozen=True)
class EvaluateResult:
    metrics: dict[str, dict[str, float]]  # kind -> RUN_METRICS (+ VAE_METRICS for the VAE)
    classifier_accuracy: float
    report: Path  # reports/metrics.json
    html: Path | None = None  # reports/index.html
    seconds: float = 0.0
    detail: Path | None = None  # reports/metrics_detail.json


@dataclass(frozen=True)
class EvaluationData:
    """The real images samples are scored against, their classifier and what is computed from them once."""

    reference: torch.Tensor  # clean training split, (N, 1, H, W) in [0, 1]
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

    @property
    def image_shape(self) -> tuple[int, int]:
        return int(self.reference.shape[2]), int(self.reference.shape[3])


# The second feature network trains with this offset to the project seed (and another architecture).
ALT_SEED_OFFSET = 1000


def classifier_file(paths: ProjectPaths) -> Path:
    return paths.root / "outputs" / "evaluate" / "classifier.pt"


def load_evaluation_data(params: Params, paths: ProjectPaths) -> EvaluationData:
    """Read the clean splits, load (or train and save) the classifier, precompute the reference side."""
    config = params.evaluate
    train_images, train_labels = load_split(paths, "train")
    splits = {s: load_split(paths, s) for s in ("val", "test")}
    reference = to_tensor(train_images)
    held_out = to_tensor(np.concatenate([splits[s][0] for s in ("val", "test")]))
    held_out_labels = torch.from_numpy(np.concatenate([splits[s][1] for s in ("val", "test")]))
    test = to_tensor(splits["test"][0])
    if len(held_out) < 2 or len(test) < 1 or len(reference) < 2:
        raise ValueError(f"evaluation needs at least 2 training, 2 held-out and 1 test image in {paths.clean} "
                         f"(got {len(reference)}, {len(held_out)}, {len(test)}); "
                         "lower clean.split or collect more data")

    num_classes = max(params.clean.labels) + 1
    labels = torch.from_numpy(train_labels.astype(np.int64))
    file = classifier_file(paths)
    networks: dict[str, tuple[DigitClassifier, str]] = {}
    reused = True
    for name, arch, seed in (("classifier", "cnn", params.seed), ("alt", "mlp", params.seed + ALT_SEED_OFFSET)):
        settings = {"feature_dim": config.feature_dim, "epochs": config.classifier_epochs, "seed": seed,
                    "num_classes": num_classes, "arch": arch}
        key = classifier_key(reference, labels, settings)
        network = load_classifier(file, key, name)
        if network is None:
            reused = False
            network = train_classifier(reference, labels, config.feature_dim, num_classes,
                                       config.classifier_epochs, seed, arch=arch)
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
        test_labels=np.asarray(splits["test"][1], dtype=np.int64),
    )


def _as_images(images: np.ndarray | torch.Tensor, shape: tuple[int, int]) -> torch.Tensor:
    images = torch.as_tensor(np.asarray(images) if not isinstance(images, torch.Tensor) else images).float()
    if images.ndim == 3:
        images = images.unsqueeze(1)
    if images.ndim != 4 or images.shape[1] != 1 or tuple(images.shape[2:]) != shape:
        raise ValueError(f"samples shaped {tuple(images.shape)}; expected (N, 1, {shape[0]}, {shape[1]}) "
                         "like the evaluation data")
    if len(images) < 2:
        raise ValueError("scoring needs at least 2 samples")
    if not torch.isfinite(images).all():
        raise ValueError("samples contain NaN or infinite pixels")
    return images.clamp(0, 1)


def score(data: EvaluationData, images: np.ndarray | torch.Tensor, config: EvaluateConfig,
          seed: int) -> tuple[dict[str, float], np.ndarray]:
    """``GENERATOR_METRICS`` of ``images`` in [0, 1] (N, 1, H, W) against the training images, and
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
    """Score generated images in [0, 1] shaped (N, 1, H, W) (numpy or torch) on today's evaluation data.

    Returns the ``RUN_METRICS`` names (every generator metric, ``fid_alt`` included, and its floor), a
    superset of what ``reports/metrics.json`` carries per model, so a registered model can be
    re-scored and compared with a new one (the promotion gate); a candidate that wins under ``fid``
    but not ``fid_alt`` has not won. Draw as many
    samples as evaluate does (the held-out count) for comparable numbers. Reuses the saved
    classifier when the training split and settings are unchanged.
    """
    torch.set_num_threads(params.train.threads or torch.get_num_threads())
    data = load_evaluation_data(params, paths)
    floor, _ = score(data, data.held_out, params.evaluate, params.seed)
    scores, _ = score(data, images, params.evaluate, params.seed)
    return _with_floor(scores, floor, data.classifier_accuracy)


def _with_floor(scores: dict[str, float], floor: dict[str, float], accuracy: float) -> dict[str, float]:
    return {**scores, **{k + FLOOR_SUFFIX: v for k, v in floor.items()}, "classifier_accuracy": accuracy}


@torch.no_grad()
def sample(checkpoint: Path, n: int, seed: int, train_labels: np.ndarray | None = None) -> torch.Tensor:
    """``n`` images from a checkpoint's sampler; z ~ N(0, I) from ``torch.Generator().manual_seed(seed)``.

    A conditional sampler gets labels drawn from ``train_labels`` (their class distribution; uniform over
    its trained classes without them), seeded with ``seed`` as genloop.export.onnx_samples draws them."""
    sampler, latent_dim = load_sampler(checkpoint)
    classes = load_classes(checkpoint)
    if classes is not None:
        labels = draw_labels(np.asarray(classes) if train_labels is None else train_labels, n, seed)
        return conditional_samples(sampler, labels, latent_dim, seed)
    z = torch.randn(n, latent_dim, generator=torch.Generator().manual_seed(seed))
    return sampler(z).clamp(0, 1)


def fidelity(data: EvaluationData, checkpoint: Path, config: EvaluateConfig, seed: int
             ) -> tuple[dict[str, float], dict[str, float], np.ndarray]:
    """A conditional model's label fidelity, its floor (the classifier on held-out real images, per class)
    and the samples: as many per trained class as evaluate draws in all, split evenly (class by class)."""
    sampler, latent_dim = load_sampler(checkpoint)
    classes = load_classes(checkpoint) or []
    per_class = -(-len(data.held_out) // len(classes))
    labels = per_class_labels(classes, per_class)
    images = conditional_samples(sampler, labels, latent_dim, seed, config.batch_size)
    _, logits = embed(data.classifier, images, config.batch_size)
    scores = label_fidelity_metrics(*label_fidelity(logits.argmax(1), labels, classes))
    floor = label_fidelity_metrics(*label_fidelity(data.held_out_predicted, data.held_out_labels, classes))
    return scores, floor, images.numpy().reshape(len(classes), per_class, *images.shape[1:])


@torch.no_grad()
def interpolate(checkpoint: Path, rows: int, steps: int, seed: int) -> torch.Tensor:
    """``rows`` walks of ``steps`` images each between random pairs of latent vectors (row-major).

    Spherical interpolation (slerp), so the path stays where N(0, I) puts its mass instead of
    cutting through the low-norm middle that a straight line crosses.
    """
    sampler, latent_dim = load_sampler(checkpoint)
    classes = load_classes(checkpoint)
    z0, z1 = torch.randn(2, rows, 1, latent_dim, generator=torch.Generator().manual_seed(seed))
    t = torch.linspace(0, 1, steps).view(1, steps, 1)
    cos = torch.nn.functional.cosine_similarity(z0, z1, dim=-1).clamp(-1, 1).unsqueeze(-1)
    omega = torch.arccos(cos)
    sin = torch.sin(omega)
    straight = sin.abs() < 1e-6
    w0 = torch.where(straight, 1 - t, torch.sin((1 - t) * omega) / torch.where(straight, 1.0, sin))
    w1 = torch.where(straight, t, torch.sin(t * omega) / torch.where(straight, 1.0, sin))
    z = (w0 * z0 + w1 * z1).reshape(-1, latent_dim)
    if classes is not None:  # a conditional model walks within one class per row, the classes in turn
        return sampler(z, torch.tensor(classes).repeat(rows)[:rows].repeat_interleave(steps)).clamp(0, 1)
    return sampler(z).clamp(0, 1)


def iwae_subset(test: torch.Tensor, n: int, seed: int) -> torch.Tensor:
    """``n`` test images picked at random (seeded): sources list test images in no promised order."""
    if n >= len(test):
        return test
    return test[torch.randperm(len(test), generator=torch.Generator().manual_seed(seed))[:n]]


def vae_likelihood(checkpoint: Path, test: torch.Tensor, config: EvaluateConfig, seed: int,
                   test_labels: np.ndarray | None = None) -> dict[str, float]:
    """``VAE_METRICS``: test negative ELBO and IWAE NLL (nats per image) and reconstruction SSIM.

    The IWAE bound, the costly one (``iwae_samples`` decoder passes per image), is averaged over a
    seeded subset of ``iwae_images`` test images; the others use them all. A conditional VAE is scored
    on -log p(x | y), given ``test_labels``.
    """
    from genloop.models.vae import negative_elbo_nats

    vae = load_vae(checkpoint)
    labels = None
    if load_classes(checkpoint) is not None:
        if test_labels is None:
            raise ValueError(f"{checkpoint} is a conditional VAE: its likelihood needs the test labels")
        labels = torch.as_tensor(np.asarray(test_labels), dtype=torch.long)
    subset = None if labels is None else iwae_subset(labels, config.iwae_images, seed)  # same draw as the images
    return {
        "test_neg_elbo": negative_elbo_nats(vae, test, seed=seed, batch_size=config.batch_size, labels=labels),
        "test_nll_iwae": quality.iwae_nll(vae, iwae_subset(test, config.iwae_images, seed), config.iwae_samples,
                                          seed, config.batch_size, labels=subset),
        "test_recon_ssim": quality.reconstruction_ssim(vae, test, config.batch_size, labels=labels),
    }


def evaluate(params: Params, paths: ProjectPaths, log_to_mlflow: bool = True) -> EvaluateResult:
    from genloop import report as html_report

    started = time.perf_counter()
    config = params.evaluate
    torch.set_num_threads(params.train.threads or torch.get_num_threads())
    data = load_evaluation_data(params, paths)

    floor, held_out_shares = score(data, data.held_out, config, params.seed)
    metrics: dict[str, dict[str, float]] = {}
    shares: dict[str, np.ndarray] = {
        "real_train": quality.label_shares(data.reference_labels, data.num_classes),
        "real_held_out": held_out_shares,
    }
    samples: dict[str, np.ndarray] = {}
    walks: dict[str, np.ndarray] = {}
    per_class: dict[str, tuple[list[int], np.ndarray]] = {}
    fidelity_floor: dict[str, float] = {}
    for kind in MODELS:
        checkpoint = paths.train(kind) / "model.pt"
        fake = sample(checkpoint, len(data.held_out), sampling_seed(params.seed), data.reference_labels)
        scores, shares[kind] = score(data, fake, config, params.seed)
        metrics[kind] = _with_floor(scores, floor, data.classifier_accuracy)
        classes = load_classes(checkpoint)
        if classes is not None:
            fidelity_scores, fidelity_floor, by_class = fidelity(data, checkpoint, config, sampling_seed(params.seed))
            metrics[kind].update({**fidelity_scores, **{k + FLOOR_SUFFIX: v for k, v in fidelity_floor.items()}})
            per_class[kind] = (classes, by_class[:, :max(1, config.report_samples // len(classes))])
        if kind == "vae":
            metrics[kind].update(vae_likelihood(checkpoint, data.test, config, params.seed, data.test_labels))
        samples[kind] = fake[:config.report_samples].numpy()
        walks[kind] = interpolate(checkpoint, config.interpolation_rows, config.interpolation_steps,
                                  params.seed + 2).numpy()

    detail = {
        **metrics,
        "real_floor": floor,
        "classifier": {"held_out_accuracy": data.classifier_accuracy, "feature_dim": config.feature_dim,
                       "num_classes": data.num_classes, "reused": data.classifier_reused,
                       "alt_held_out_accuracy": data.alt_classifier_accuracy},
        "class_shares": {name: {str(c): float(s) for c, s in enumerate(v)} for name, v in shares.items()},
        "samples_per_model": len(data.held_out),
        "test_images": len(data.test),
        "iwae_test_images": min(len(data.test), config.iwae_images),
    }
    atomic.write_json(detail_file(paths), detail)
    atomic.write_json(paths.metrics, headline(metrics, {**floor, **fidelity_floor}))
    html = html_report.write_report(params, paths, detail, samples, walks,
                                    data.held_out[:config.report_samples].numpy(), per_class=per_class)

    if log_to_mlflow:
        _log_to_mlflow(params, paths, metrics, html)
    return EvaluateResult(metrics=metrics, classifier_accuracy=data.classifier_accuracy, report=paths.metrics,
                          html=html.index, seconds=time.perf_counter() - started, detail=detail_file(paths))


def detail_file(paths: ProjectPaths) -> Path:
    return paths.reports / "metrics_detail.json"


def headline(metrics: dict[str, dict[str, float]], floor: dict[str, float]) -> dict[str, dict[str, float]]:
    """reports/metrics.json: ``HEADLINE_METRICS`` per model (the VAE's likelihood too, a conditional model's
    label fidelity too) and one floor block.

    Small enough for ``dvc metrics show``/``diff`` to read at a glance; promotion reads
    ``[vae|gan][fid]`` from it.
    """
    report = {kind: {k: v for k, v in scores.items() if k in HEADLINE_METRICS or k in VAE_METRICS
                     or is_label_fidelity(k)}
              for kind, scores in metrics.items()}
    fidelity_floor = {k: v for k, v in floor.items() if is_label_fidelity(k)}  # when a model is conditional
    return {**report, "real_floor": {**{k: floor[k] for k in HEADLINE_METRICS}, **fidelity_floor}}


def _log_to_mlflow(params: Params, paths: ProjectPaths, metrics: dict[str, dict[str, float]],
                   html: HtmlReport) -> None:
    from mlflow import MlflowClient
    from mlflow.entities import Metric

    tracking.setup(params.mlflow, paths)
    client = MlflowClient()
    stamp = int(time.time() * 1000)
    for kind in MODELS:
        run_id = read_run_id(paths, kind)
        client.log_batch(run_id, metrics=[Metric(k, v, stamp, 0) for k, v in metrics[kind].items()])
        client.log_artifact(run_id, str(paths.metrics))
        client.log_artifact(run_id, str(detail_file(paths)))
        client.log_artifact(run_id, str(html.index), artifact_path="report")
        client.log_artifacts(run_id, str(html.figures), artifact_path="report/figures")
