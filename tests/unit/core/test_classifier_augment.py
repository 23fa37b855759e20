"""evaluate.classifier_augment: the feature networks may train on mirrored and shifted batches (small colour
sets); off, training is what it was, so the digits' classifier and figures do not move."""
from __future__ import annotations

import torch

from genloop.core.models.classifier import flip_and_shift, train_classifier
from tests.colour_data import coloured_squares
from genloop.io.datasets import to_tensor


def test_flip_and_shift_mirrors_some_images_and_moves_the_batch_within_its_edges():
    x = torch.zeros(64, 3, 12, 12)
    x[:, :, :, :3] = 1.0  # a bar on the left edge
    out = flip_and_shift(x, torch.Generator().manual_seed(0))
    assert out.shape == x.shape and float(out.min()) >= 0.0 and float(out.max()) <= 1.0
    on_right = out[:, 0, 6, -1] == 1.0
    assert 0 < int(on_right.sum()) < 64  # some mirrored, some not


def test_augmented_training_differs_and_plain_training_is_unchanged_by_the_option():
    images, labels = coloured_squares(64, side=12)
    x, y = to_tensor(images), torch.as_tensor(labels)
    plain = train_classifier(x, y, 8, 3, 2, 0, batch_size=16)
    again = train_classifier(x, y, 8, 3, 2, 0, batch_size=16, augment=False)
    mirrored = train_classifier(x, y, 8, 3, 2, 0, batch_size=16, augment=True)
    for a, b in zip(plain.state_dict().values(), again.state_dict().values()):
        assert torch.equal(a, b)
    assert any(not torch.equal(a, b) for a, b in zip(plain.state_dict().values(), mirrored.state_dict().values()))
