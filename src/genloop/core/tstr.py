"""Train on synthetic, test on real (TSTR): how useful a released labelled synthetic data set is.

The evaluation classifier's architecture (genloop.core.models.classifier, the same settings) is
trained on labelled generated images and tested on held-out real images; its accuracy beside the
floor, the same classifier trained on the real training split, says how much of the real data's
use a synthetic release keeps (the way private-generation papers judge it: DPDM, DPImageBench).
Pure torch; no I/O.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from genloop.core.models.classifier import Arch, DigitClassifier, train_classifier


@dataclass(frozen=True)
class TstrResult:
    accuracy: float  # classifier trained on the synthetic set, tested on real held-out images
    real_accuracy: float | None  # the floor: the same classifier trained on the real training split

    def as_metrics(self) -> dict[str, float]:
        out = {"tstr_accuracy": self.accuracy}
        if self.real_accuracy is not None:
            out["tstr_real_accuracy"] = self.real_accuracy
        return out


@torch.no_grad()
def accuracy(classifier: DigitClassifier, images: torch.Tensor, labels: torch.Tensor, batch_size: int = 1000) -> float:
    """Share of ``images`` the classifier labels correctly."""
    if len(images) == 0:
        raise ValueError("accuracy needs at least one test image")
    classifier.eval()
    right = sum(int((classifier(x.float()).argmax(1) == y.long()).sum())
                for x, y in zip(images.split(batch_size), labels.split(batch_size)))
    return right / len(images)


def _check(images: torch.Tensor, labels: torch.Tensor, what: str) -> None:
    if images.ndim != 4:
        raise ValueError(f"{what} images must be shaped (N, C, H, W) (got {tuple(images.shape)})")
    if len(images) != len(labels) or len(images) == 0:
        raise ValueError(f"{what}: {len(images)} images and {len(labels)} labels (need as many, at least one)")


def tstr(synthetic: torch.Tensor, synthetic_labels: torch.Tensor, test: torch.Tensor, test_labels: torch.Tensor,
         num_classes: int, epochs: int, seed: int, feature_dim: int = 64, arch: Arch = "cnn",
         real: torch.Tensor | None = None, real_labels: torch.Tensor | None = None,
         real_classifier: DigitClassifier | None = None, batch_size: int = 128) -> TstrResult:
    """TSTR accuracy of a labelled synthetic set on real ``test`` images, with the real-data floor.

    The floor comes from ``real_classifier`` when given (evaluate trains one already: reuse it),
    else from training on ``real``/``real_labels`` when given, else it is None.
    """
    _check(synthetic, synthetic_labels, "synthetic")
    _check(test, test_labels, "test")
    model = train_classifier(synthetic.float(), synthetic_labels.long(), feature_dim, num_classes, epochs, seed,
                             batch_size=batch_size, arch=arch)
    floor = None
    if real_classifier is None and real is not None:
        _check(real, real_labels, "real")
        real_classifier = train_classifier(real.float(), real_labels.long(), feature_dim, num_classes, epochs,
                                           seed, batch_size=batch_size, arch=arch)
    if real_classifier is not None:
        floor = accuracy(real_classifier, test, test_labels)
    return TstrResult(accuracy(model, test, test_labels), floor)
