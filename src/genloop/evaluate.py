"""Stage 5, evaluate: score both generators with the same metrics, beside the real-vs-real floor.

Features come from a small classifier trained here on the clean real training split, standing in
for Inception (no download, native resolution).
"""
from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from genloop import atomic, tracking
from genloop.checkpoints import load_sampler
from genloop.clean import load_split
from genloop.config import EvaluateConfig, Params
from genloop.models.classifier import DigitClassifier, FeatureExtractor
from genloop.paths import ProjectPaths
from genloop.train import read_run_id, to_tensor

MODELS = ("vae", "gan")
# The metric names every model run carries, so `mlflow ui` compares them column by column.
EVAL_METRICS = ("fid", "kid_mean", "kid_std", "fid_real_floor", "kid_mean_real_floor",
                "kid_std_real_floor", "classifier_accuracy")


@dataclass(frozen=True)
class EvaluateResult:
    metrics: dict[str, dict[str, float]]
    classifier_accuracy: float
    report: Path


def train_classifier(config: EvaluateConfig, images: torch.Tensor, labels: torch.Tensor,
                     seed: int) -> DigitClassifier:
    torch.manual_seed(seed)
    model = DigitClassifier(images.shape[2], images.shape[3], config.feature_dim)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    gen = torch.Generator().manual_seed(seed)
    model.train()
    for _ in range(config.classifier_epochs):
        for idx in torch.randperm(len(images), generator=gen).split(128):
            loss = F.cross_entropy(model(images[idx]), labels[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
    return model.eval()


@torch.no_grad()
def accuracy(model: DigitClassifier, images: torch.Tensor, labels: torch.Tensor) -> float:
    return float((model(images).argmax(1) == labels).float().mean())


def distribution_scores(extractor: FeatureExtractor, reference: torch.Tensor, candidate: torch.Tensor,
                        config: EvaluateConfig) -> dict[str, float]:
    """FID and KID of ``candidate`` against ``reference`` images, both in [0, 1]."""
    from torchmetrics.image.fid import FrechetInceptionDistance
    from torchmetrics.image.kid import KernelInceptionDistance

    subset = min(config.kid_subset_size, len(reference), len(candidate))
    fid = FrechetInceptionDistance(feature=extractor)
    with warnings.catch_warnings():  # KID warns that it keeps all features; ours are small
        warnings.simplefilter("ignore", UserWarning)
        kid = KernelInceptionDistance(feature=extractor, subsets=config.kid_subsets, subset_size=subset)
    for metric in (fid, kid):
        metric.update(reference, real=True)
        metric.update(candidate, real=False)
    kid_mean, kid_std = kid.compute()
    return {"fid": float(fid.compute()), "kid_mean": float(kid_mean), "kid_std": float(kid_std)}


@torch.no_grad()
def sample(checkpoint: Path, n: int, seed: int) -> torch.Tensor:
    sampler, latent_dim = load_sampler(checkpoint)
    z = torch.randn(n, latent_dim, generator=torch.Generator().manual_seed(seed))
    return sampler(z).clamp(0, 1)


def evaluate(params: Params, paths: ProjectPaths, log_to_mlflow: bool = True) -> EvaluateResult:
    config = params.evaluate
    torch.set_num_threads(params.train.threads or torch.get_num_threads())
    train_images, train_labels = load_split(paths, "train")
    held_out = [load_split(paths, s) for s in ("val", "test")]
    reference = to_tensor(train_images)
    real = to_tensor(np.concatenate([h[0] for h in held_out]))
    real_labels = torch.from_numpy(np.concatenate([h[1] for h in held_out]))
    if len(real) < 2:
        raise ValueError("evaluation needs at least 2 held-out images; lower clean.split or collect more data")

    classifier = train_classifier(config, reference, torch.from_numpy(train_labels), params.seed)
    clf_accuracy = accuracy(classifier, real, real_labels)
    extractor = FeatureExtractor(classifier, config.feature_dim)

    floor = distribution_scores(extractor, reference, real, config)
    floor_named = {f"{k}_real_floor": v for k, v in floor.items()}
    metrics: dict[str, dict[str, float]] = {}
    for kind in MODELS:
        fake = sample(paths.train(kind) / "model.pt", len(real), params.seed + 1)
        metrics[kind] = {**distribution_scores(extractor, reference, fake, config), **floor_named,
                         "classifier_accuracy": clf_accuracy}

    report = {
        **metrics,
        "real_floor": floor,
        "classifier": {"held_out_accuracy": clf_accuracy, "feature_dim": config.feature_dim},
        "samples_per_model": len(real),
    }
    atomic.write_json(paths.metrics, report)

    if log_to_mlflow:
        from mlflow import MlflowClient
        from mlflow.entities import Metric
        import time

        tracking.setup(params.mlflow, paths)
        client = MlflowClient()
        stamp = int(time.time() * 1000)
        for kind in MODELS:
            run_id = read_run_id(paths, kind)
            client.log_batch(run_id, metrics=[Metric(k, v, stamp, 0) for k, v in metrics[kind].items()])
            client.log_artifact(run_id, str(paths.metrics))
    return EvaluateResult(metrics=metrics, classifier_accuracy=clf_accuracy, report=paths.metrics)
