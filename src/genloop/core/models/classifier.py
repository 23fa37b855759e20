"""Feature networks of the evaluation, trained on the clean real data.

The main one, a small CNN, gives the feature space of the metrics (FID, KID, precision/recall,
density/coverage) from its penultimate layer, and its softmax gives the Inception-Score analogue,
the class distribution and the recognisability of generated images. A second network of another
architecture (an MLP on pixels) trained with another seed gives a second FID, so a generator that
merely suits one feature space cannot look better than it is.

Standing in for Inception, which would need a download and 299x299 inputs. Each network is trained
once per (training split, settings, seed, this file's code) and saved in one file, so re-scoring
samples does not retrain them.
"""
from __future__ import annotations

import hashlib
import json
import math
from pathlib import Path
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import nn

from genloop.core.models.shapes import base_grid, pad

Arch = Literal["cnn", "mlp"]


class DigitClassifier(nn.Module):
    """``features`` (the metrics' feature space) then a linear ``head`` to class logits.

    ``cnn``: three convolutions and a linear layer; ``mlp``: two fully connected layers on the
    flattened pixels, a feature space of a different kind (no spatial weight sharing). Both take
    images of ``channels`` (1 or 3) channels, all of them (colour counts in the features).
    """

    def __init__(self, height: int, width: int, feature_dim: int = 64, num_classes: int = 10, arch: Arch = "cnn",
                 channels: int = 1):
        super().__init__()
        self.height, self.width, self.feature_dim, self.num_classes, self.arch, self.channels = (
            height, width, feature_dim, num_classes, arch, channels)
        if arch == "cnn":
            gh, gw = base_grid(height, width)
            self.features = nn.Sequential(
                nn.Conv2d(channels, 32, 3, padding=1), nn.ReLU(),
                nn.Conv2d(32, 32, 4, stride=2, padding=1), nn.ReLU(),
                nn.Conv2d(32, 64, 4, stride=2, padding=1), nn.ReLU(),
                nn.Flatten(),
                nn.Linear(64 * gh * gw, feature_dim), nn.ReLU(),
            )
        elif arch == "mlp":
            self.features = nn.Sequential(
                nn.Flatten(),
                nn.Linear(channels * height * width, 256), nn.ReLU(),
                nn.Linear(256, feature_dim), nn.ReLU(),
            )
        else:
            raise ValueError(f"unknown classifier arch {arch!r}; expected 'cnn' or 'mlp'")
        self.head = nn.Linear(feature_dim, num_classes)

    def feature_vectors(self, x: torch.Tensor) -> torch.Tensor:
        """The penultimate layer: the metrics' feature space (sides not a multiple of 4 padded first)."""
        return self.features(pad(x, self.height, self.width) if self.arch == "cnn" else x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.feature_vectors(x))


def normalise_features(features: torch.Tensor) -> torch.Tensor:
    """Rescale each feature vector to L2 norm sqrt(d) (RMS 1 per coordinate).

    Raw ReLU activations have whatever scale a training run gave them, which made KID (a cubic
    kernel of x.y/d) large and noisy and FID incomparable across classifier retrains. On this scale
    x.y/d is the cosine similarity, so KID's kernel is (cos + 1)^3 and KID lies in [0, 14].
    """
    return F.normalize(features, dim=1) * math.sqrt(features.shape[1])


class FeatureExtractor(nn.Module):
    """What torchmetrics calls ``feature``: images in [0, 1] -> normalised features.

    ``num_features`` spares torchmetrics its dummy 299x299 RGB forward at construction.
    """

    def __init__(self, classifier: DigitClassifier, feature_dim: int):
        super().__init__()
        self.classifier = classifier.eval()
        self.num_features = feature_dim

    @torch.no_grad()
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return normalise_features(self.classifier.feature_vectors(x.float()))


@torch.no_grad()
def embed(classifier: DigitClassifier, images: torch.Tensor,
          batch_size: int = 1024) -> tuple[torch.Tensor, torch.Tensor]:
    """(raw penultimate features, logits) of images in [0, 1], in batches; one pass gives both.

    Raw, as FID is conventionally computed on Inception's raw pool features (so its figures stay on
    the familiar scale); the kernel and k-NN metrics normalise them with ``normalise_features``.
    """
    classifier.eval()
    feats, logits = [], []
    for x in images.float().split(batch_size):
        h = classifier.feature_vectors(x)
        feats.append(h)
        logits.append(classifier.head(h))
    return torch.cat(feats), torch.cat(logits)


def flip_and_shift(x: torch.Tensor, gen: torch.Generator, shift: int = 2) -> torch.Tensor:
    """A batch mirrored left-right image by image (half of them) and moved by one random offset of up to
    ``shift`` pixels (edges repeated): what a small colour set (icons, emoji) needs to train features that
    generalise; digits are not mirror-symmetric, so it is off unless asked for."""
    flip = torch.rand(len(x), generator=gen) < 0.5
    x = torch.where(flip[:, None, None, None], x.flip(3), x)
    i, j = (int(v) for v in torch.randint(0, 2 * shift + 1, (2,), generator=gen))
    return F.pad(x, (shift,) * 4, mode="replicate")[:, :, i:i + x.shape[2], j:j + x.shape[3]]


def train_classifier(images: torch.Tensor, labels: torch.Tensor, feature_dim: int, num_classes: int,
                     epochs: int, seed: int, batch_size: int = 128, lr: float = 1e-3,
                     arch: Arch = "cnn", augment: bool = False) -> DigitClassifier:
    """Cross-entropy on the clean real training split (images in [0, 1], shaped (N, C, H, W)); with
    ``augment`` each batch is flipped and shifted (``flip_and_shift``) by a generator of its own, so the
    batches drawn are the same either way."""
    torch.manual_seed(seed)
    model = DigitClassifier(images.shape[2], images.shape[3], feature_dim, num_classes, arch, images.shape[1])
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    gen = torch.Generator().manual_seed(seed)
    augment_gen = torch.Generator().manual_seed(seed + 1)
    model.train()
    for _ in range(epochs):
        for idx in torch.randperm(len(images), generator=gen).split(batch_size):
            x = flip_and_shift(images[idx], augment_gen) if augment else images[idx]
            loss = F.cross_entropy(model(x), labels[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
    return model.eval()


def classifier_key(images: torch.Tensor, labels: torch.Tensor, settings: dict[str, Any]) -> str:
    """What a saved classifier was trained from: the training split, the settings and this file's code."""
    h = hashlib.sha256()
    h.update(json.dumps(settings, sort_keys=True).encode())
    h.update(images.numpy().tobytes())
    h.update(labels.numpy().tobytes())
    h.update(Path(__file__).read_bytes())
    return h.hexdigest()
