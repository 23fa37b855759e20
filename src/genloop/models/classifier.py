"""A small CNN trained on the clean real data; its penultimate layer is the feature space of FID/KID.

Standing in for Inception, which would need a download and 299x299 inputs.
"""
from __future__ import annotations

import torch
from torch import nn

from genloop.models.shapes import base_grid


class DigitClassifier(nn.Module):
    def __init__(self, height: int, width: int, feature_dim: int = 64, num_classes: int = 10):
        super().__init__()
        gh, gw = base_grid(height, width)
        self.features = nn.Sequential(
            nn.Conv2d(1, 32, 3, padding=1), nn.ReLU(),
            nn.Conv2d(32, 32, 4, stride=2, padding=1), nn.ReLU(),
            nn.Conv2d(32, 64, 4, stride=2, padding=1), nn.ReLU(),
            nn.Flatten(),
            nn.Linear(64 * gh * gw, feature_dim), nn.ReLU(),
        )
        self.head = nn.Linear(feature_dim, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


class FeatureExtractor(nn.Module):
    """What torchmetrics calls ``feature``: images in [0, 1] -> features (torchmetrics casts to float64).

    ``num_features`` spares torchmetrics its dummy 299x299 RGB forward at construction.
    """

    def __init__(self, classifier: DigitClassifier, feature_dim: int):
        super().__init__()
        self.classifier = classifier.eval()
        self.num_features = feature_dim

    @torch.no_grad()
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier.features(x.float())
