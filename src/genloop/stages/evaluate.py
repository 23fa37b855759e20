"""Stage 5, evaluate: score both generators with the same metrics, beside the real-vs-real floor,
and write the HTML report.

Features and class probabilities come from a small classifier trained here on the clean real
training split, standing in for Inception (no download, native resolution); a second network of
another architecture and seed gives a second FID (``fid_alt``), so no single feature space decides.
Both are saved in ``outputs/evaluate/classifier.pt`` and reused while the training split and
settings are unchanged. Every metric of ``GENERATOR_METRICS`` is also computed for the held-out real
images (val + test) against the same training images: that is its ``*_real_floor``, what a perfect
generator would score.

A membership-inference audit (``genloop.core.membership``) says how well an attacker tells the training
images from held-out ones, from the nearest generated sample (both models) and the ELBO (the VAE).

``reports/metrics.json`` holds the ``HEADLINE_METRICS`` per model and their floors (what ``dvc
metrics show`` lists); ``reports/metrics_detail.json`` holds everything, per-class shares included.
"""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Iterator

import numpy as np
import torch

from genloop.io import atomic, tracking
from genloop.core import membership, privacy, quality, trust
from genloop.io.checkpoints import load_classes, load_sampler, load_vae, read_checkpoint
from genloop.core.label_fidelity import conditional_samples, draw_blocks, draw_labels, label_fidelity, per_class_labels
from genloop.config import MODELS, EvaluateConfig, Params
from genloop.io.datasets import class_names, read_run_id
from genloop.core.metric_names import (FLOOR_SUFFIX, GENERATOR_METRICS, HEADLINE_METRICS, MIA_METRICS, RUN_METRICS,
                                       TSTR_METRICS, VAE_METRICS, VAE_MIA_METRICS, is_label_fidelity,
                                       label_fidelity_metrics)
from genloop.core.models.classifier import embed
from genloop.core.tstr import tstr
from genloop.paths import ProjectPaths
from genloop.evaluation.scoring import load_evaluation_data, scaled_to_images, score, with_floor
from genloop.config import sampling_seed

log = logging.getLogger(__name__)

if TYPE_CHECKING:
    from genloop.evaluation.report import HtmlReport
    from genloop.evaluation.scoring import EvaluationData


@dataclass(frozen=True)
class EvaluateResult:
    metrics: dict[str, dict[str, float]]  # kind -> RUN_METRICS (+ VAE_METRICS for the VAE)
    classifier_accuracy: float
    report: Path  # reports/metrics.json
    html: Path | None = None  # reports/index.html
    seconds: float = 0.0
    detail: Path | None = None  # reports/metrics_detail.json


@torch.no_grad()
def sample_blocks(checkpoint: Path, n: int, seed: int, train_labels: np.ndarray | None = None,
                  batch_size: int = 1024) -> Iterator[torch.Tensor]:
    """``n`` images from a checkpoint's sampler, ``batch_size`` at a time; z ~ N(0, I) from
    ``torch.Generator().manual_seed(seed)``, drawn at once, so the images do not depend on ``batch_size``.

    A conditional sampler gets labels drawn from ``train_labels`` (their class distribution; uniform over
    its trained classes without them), seeded with ``seed`` as genloop.stages.export.onnx_samples draws them.
    In blocks because the sampler's activations for the audit's 10,000 samples in one pass were most of
    evaluate's peak memory (4 GiB at 28x28, 20 GiB at 64x64x3)."""
    sampler, latent_dim = load_sampler(checkpoint)
    classes = load_classes(checkpoint)
    labels = None if classes is None else draw_labels(
        np.asarray(classes) if train_labels is None else train_labels, n, seed)
    yield from draw_blocks(sampler, latent_dim, n, seed, labels, batch_size)


def sample(checkpoint: Path, n: int, seed: int, train_labels: np.ndarray | None = None,
           batch_size: int = 1024) -> torch.Tensor:
    """``sample_blocks`` as one (n, C, H, W) tensor."""
    return torch.cat(list(sample_blocks(checkpoint, n, seed, train_labels, batch_size)))


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


def tstr_scores(data: EvaluationData, checkpoint: Path, config: EvaluateConfig, seed: int) -> dict[str, float]:
    """Train on synthetic, test on real (genloop.core.tstr): the evaluation classifier's architecture trained on
    min(training images, ``tstr_images``) samples, labels drawn as the training split's, tested on the held-out
    images; the floor is the evaluation classifier itself (trained on the real training split)."""
    n = min(len(data.reference), config.tstr_images)
    if n == 0 or data.held_out_labels is None:
        return {}
    sampler, latent_dim = load_sampler(checkpoint)
    labels = draw_labels(data.reference_labels, n, seed)
    with torch.no_grad():
        images = conditional_samples(sampler, labels, latent_dim, seed, config.batch_size).clamp(0, 1)
    result = tstr(images, labels, data.held_out, torch.as_tensor(data.held_out_labels, dtype=torch.long),
                  data.num_classes, config.classifier_epochs, seed, config.feature_dim, data.classifier.arch,
                  real_classifier=data.classifier)
    return result.as_metrics()


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
    from genloop.core.models.vae import negative_elbo_nats

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


def membership_audit(members: torch.Tensor, non_members: torch.Tensor, checkpoint: Path, kind: str,
                     config: EvaluateConfig, seed: int) -> tuple[dict[str, float], dict[str, list[float]]]:
    """The privacy audit of one model (``genloop.core.membership``): ``members`` the clean training split,
    ``non_members`` held-out images, ``audit_images`` of each; the distance attack searches
    ``audit_samples`` samples, the VAE's ELBO attack needs none. Nothing when ``audit_images`` is 0."""
    if config.audit_images == 0:
        return {}, {}
    # streamed: the distance attack keeps each image's nearest sample so far, never the whole draw
    generated = sample_blocks(checkpoint, config.audit_samples, sampling_seed(seed), batch_size=config.batch_size)
    # a conditional VAE's ELBO is log p(x | y): the attack would need each image's label; its distance attack runs
    vae = load_vae(checkpoint) if kind == "vae" and load_classes(checkpoint) is None else None
    return membership.audit(members, non_members, generated, vae, config.audit_images, seed, config.batch_size)


def _audit_detail(data: EvaluationData, config: EvaluateConfig, curves: dict[str, dict[str, list[float]]]) -> dict:
    n = min(len(data.reference), len(data.held_out), config.audit_images)
    return {"images_per_side": n, "non_members": "val + test", "generated_samples": config.audit_samples,
            "auc_chance_se": membership.standard_error(0.5, n),
            "fpr_grid": [float(f) for f in membership.ROC_GRID], "tpr": curves} if config.audit_images else {}


def evaluate(params: Params, paths: ProjectPaths, log_to_mlflow: bool = True) -> EvaluateResult:
    from genloop.evaluation import explain, report as html_report

    started = time.perf_counter()
    torch.set_num_threads(params.train.torch_threads())
    data = load_evaluation_data(params, paths)
    config = scaled_to_images(params.evaluate, data.image_shape)  # rows per pass: fewer for large images

    floor, held_out_shares = score(data, data.held_out, config, params.seed)
    metrics: dict[str, dict[str, float]] = {}
    shares: dict[str, np.ndarray] = {
        "real_train": quality.label_shares(data.reference_labels, data.num_classes),
        "real_held_out": held_out_shares,
    }
    samples: dict[str, np.ndarray] = {}
    walks: dict[str, np.ndarray] = {}
    curves: dict[str, dict[str, list[float]]] = {}
    per_class: dict[str, tuple[list[int], np.ndarray]] = {}
    fidelity_floor: dict[str, float] = {}
    for kind in MODELS:
        checkpoint = paths.train(kind) / "model.pt"
        fake = sample(checkpoint, len(data.held_out), sampling_seed(params.seed), data.reference_labels,
                      config.batch_size)
        scores, shares[kind] = score(data, fake, config, params.seed)
        metrics[kind] = with_floor(scores, floor, data.classifier_accuracy)
        classes = load_classes(checkpoint)
        if classes is not None:
            fidelity_scores, fidelity_floor, by_class = fidelity(data, checkpoint, config, sampling_seed(params.seed))
            metrics[kind].update({**fidelity_scores, **{k + FLOOR_SUFFIX: v for k, v in fidelity_floor.items()}})
            per_class[kind] = (classes, by_class[:, :max(1, config.report_samples // len(classes))])
            metrics[kind].update(tstr_scores(data, checkpoint, config, sampling_seed(params.seed)))
        if kind == "vae":
            metrics[kind].update(vae_likelihood(checkpoint, data.test, config, params.seed, data.test_labels))
        # non-members: val + test (val only monitors training, it never picks weights)
        audit, curves[kind] = membership_audit(data.reference, data.held_out, checkpoint, kind, config, params.seed)
        metrics[kind].update(audit)
        samples[kind] = fake[:config.report_samples].numpy()
        walks[kind] = interpolate(checkpoint, config.interpolation_rows, config.interpolation_steps,
                                  params.seed + 2).numpy()

    doubts = judge_trust(params, paths, data, metrics, floor)
    # A private training's spent budget (epsilon, delta) beside its scores; absent for a non-private one.
    spent = {kind: privacy.spent(read_checkpoint(paths.train(kind) / "model.pt")) for kind in MODELS}
    detail = _detail(data, config, {kind: {**scores, **spent[kind]} for kind, scores in metrics.items()}, floor,
                     shares, curves, doubts)
    atomic.write_json(detail_file(paths), detail)
    atomic.write_json(paths.metrics, headline({kind: {**scores, **spent[kind]} for kind, scores in metrics.items()},
                                              {**floor, **fidelity_floor}))
    explained = (explain.explain_trained(params.model_copy(update={"evaluate": config}), paths, data)
                 if config.explain else None)
    html = html_report.write_report(params, paths, detail, samples, walks,
                                    data.held_out[:config.report_samples].numpy(), per_class=per_class,
                                    explain=explained.html.name if explained else None)

    if log_to_mlflow:
        _log_to_mlflow(params, paths, metrics, html, doubts)
        if explained is not None:
            explain.log(explained, {kind: read_run_id(paths, kind) for kind in MODELS})
    return EvaluateResult(metrics=metrics, classifier_accuracy=data.classifier_accuracy, report=paths.metrics,
                          html=html.index, seconds=time.perf_counter() - started, detail=detail_file(paths))


def _detail(data: EvaluationData, config: EvaluateConfig, metrics: dict[str, dict[str, float]],
            floor: dict[str, float], shares: dict[str, np.ndarray], curves: dict[str, dict[str, list[float]]],
            doubts: dict[str, list[str]]) -> dict:
    """reports/metrics_detail.json: every figure, the classifier, class shares and the classes' names."""
    return {
        **metrics,
        "real_floor": floor,
        "classifier": {"held_out_accuracy": data.classifier_accuracy, "feature_dim": config.feature_dim,
                       "num_classes": data.num_classes, "reused": data.classifier_reused,
                       "alt_held_out_accuracy": data.alt_classifier_accuracy},
        "class_shares": {name: {str(c): float(s) for c, s in enumerate(v)} for name, v in shares.items()},
        "class_names": {str(c): name for c, name in (data.class_names or {}).items()},
        "samples_per_model": len(data.held_out),
        "test_images": len(data.test),
        "iwae_test_images": min(len(data.test), config.iwae_images),
        "membership": _audit_detail(data, config, curves),
        "trust": doubts,
    }


def judge_trust(params: Params, paths: ProjectPaths, data: EvaluationData, metrics: dict[str, dict[str, float]],
                floor: dict[str, float]) -> dict[str, list[str]]:
    """Why each model's figures cannot be trusted (genloop.core.trust), logged as warnings; sets each
    model's ``evaluation_trusted`` metric (1 or 0), which the promotion gate reads."""
    config = params.evaluate.trust
    shared = trust.evaluation_doubts(data.classifier_accuracy, data.held_out_labels, config, class_names(paths))
    doubts = trust.doubts_by_model(shared, {kind: m.get("fid") for kind, m in metrics.items()}, floor.get("fid"),
                                   config)
    for kind, reasons in doubts.items():
        metrics[kind].update(trust.trusted_metric(reasons))
    for reason in trust.unique_reasons(doubts):
        log.warning("evaluation cannot be trusted: %s", reason)
    return doubts


def detail_file(paths: ProjectPaths) -> Path:
    return paths.reports / "metrics_detail.json"


def headline(metrics: dict[str, dict[str, float]], floor: dict[str, float]) -> dict[str, dict[str, float]]:
    """reports/metrics.json: ``HEADLINE_METRICS`` per model (the VAE's likelihood, the membership audit and a
    conditional model's label fidelity too; ``epsilon`` and ``delta`` for a privately trained model, absent
    otherwise; ``evaluation_trusted`` 1 or 0, see genloop.core.trust) and one floor block.

    Small enough for ``dvc metrics show``/``diff`` to read at a glance; promotion reads
    ``[vae|gan][fid]`` from it.
    """
    keep = {*HEADLINE_METRICS, *VAE_METRICS, *MIA_METRICS, *VAE_MIA_METRICS, *TSTR_METRICS, privacy.EPSILON, privacy.DELTA,
            trust.TRUSTED}
    report = {kind: {k: v for k, v in scores.items() if k in keep or is_label_fidelity(k)}
              for kind, scores in metrics.items()}
    fidelity_floor = {k: v for k, v in floor.items() if is_label_fidelity(k)}  # when a model is conditional
    return {**report, "real_floor": {**{k: floor[k] for k in HEADLINE_METRICS}, **fidelity_floor}}


def _log_to_mlflow(params: Params, paths: ProjectPaths, metrics: dict[str, dict[str, float]],
                   html: HtmlReport, doubts: dict[str, list[str]]) -> None:
    tracking.setup(params.mlflow, paths)
    for kind in MODELS:
        run_id = read_run_id(paths, kind)
        tracking.log_metrics(run_id, metrics[kind])
        tracking.set_tags(run_id, trust.reasons_tag(doubts.get(kind, [])))
        tracking.log_files(run_id, [paths.metrics, detail_file(paths)])
        tracking.log_files(run_id, [html.index], artifact_path="report")
        tracking.log_folder(run_id, html.figures, artifact_path="report/figures")
