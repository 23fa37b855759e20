"""The VAE encoder's ONNX graph (genloop.io.encoder_onnx): a conditional VAE's encoder reads the label
too, matches PyTorch at batch sizes 1, 64 and 7, and a tolerance it misses publishes nothing."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from genloop.io import encoder_onnx
from genloop.io.checkpoints import build_vae, save_checkpoint
from genloop.io.onnx_runtime import open_session

HPARAMS = {"latent_dim": 3, "channels": 4, "arch": "conv", "conditional": True, "classes": [0, 2, 5]}


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("encoder") / "model.pt"
    save_checkpoint(path, "vae", HPARAMS, (3, 8, 8), {"vae": build_vae(HPARAMS, (3, 8, 8))})
    return path


def test_a_conditional_encoder_takes_the_image_and_its_label(checkpoint, tmp_path):
    target = tmp_path / "vae_encoder.onnx"
    diffs = encoder_onnx.stage(checkpoint, target, [1, 64], 1e-4, seed=0)
    assert set(diffs) == {1, 7, 64} and max(diffs.values()) <= 1e-4
    session = open_session(target)
    assert [(i.name, i.type) for i in session.get_inputs()] == [("image", "tensor(float)"), ("label", "tensor(int64)")]
    mean, logvar = session.run(None, {"image": np.random.rand(5, 3, 8, 8).astype(np.float32),
                                      "label": np.array([0, 2, 5, 5, 0])})
    assert mean.shape == logvar.shape == (5, 3)
    assert encoder_onnx.conditioning(checkpoint) == {"genloop.labels": "[0,2,5]", "genloop.conditional": "true"}


def test_an_encoder_outside_the_tolerance_is_refused_and_removed(checkpoint, tmp_path):
    target = tmp_path / "vae_encoder.onnx"
    with pytest.raises(encoder_onnx.EncoderParityError, match="parity_tolerance"):
        encoder_onnx.stage(checkpoint, target, [1], tolerance=1e-12, seed=0)
    assert not target.exists()
