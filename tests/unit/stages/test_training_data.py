"""Which images a model trains on: the augment stage's set, or only its originals (train.<model>.augmented)."""
import numpy as np
import pytest

from genloop.io.arrays import save_npz
from genloop.config import Params
from genloop.errors import MissingInputError
from genloop.paths import ProjectPaths
from genloop.stages.train import load_training_images


def _augment_output(root, originals: int, copies: int) -> ProjectPaths:
    paths = ProjectPaths.at(root)
    paths.augment.mkdir(parents=True)
    images = np.arange(originals + copies, dtype=np.uint8)[:, None, None].repeat(4, 1).repeat(4, 2)
    flags = np.array([False] * originals + [True] * copies)
    save_npz(paths.augment / "train.npz", images=images, labels=np.zeros(len(images), np.int64), augmented=flags)
    return paths


def test_without_augmented_copies_only_the_originals_are_trained_on(tmp_path):
    paths = _augment_output(tmp_path, originals=5, copies=3)
    assert len(load_training_images(paths, augmented=True)) == 8
    originals = load_training_images(paths, augmented=False)
    assert len(originals) == 5
    assert originals[:, 0, 0, 0].mul(255).round().tolist() == [0, 1, 2, 3, 4]


def test_the_vae_skips_augmented_copies_and_the_gan_uses_them_by_default():
    train = Params().train
    assert (train.vae.augmented, train.gan.augmented) == (False, True)


def test_a_missing_augment_output_names_the_command(tmp_path):
    with pytest.raises(MissingInputError, match="run `genloop augment` first"):
        load_training_images(ProjectPaths.at(tmp_path))
