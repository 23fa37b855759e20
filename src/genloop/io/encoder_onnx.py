"""The VAE's encoder as an ONNX graph (``models/vae_encoder.onnx``), so a deployment can encode real images
(explore, edit, attribute) with exactly the weights of the decoder it serves.

Inputs: ``image`` (N, C, H, W) float32 in [0, 1], and ``label`` (N,) int64 for a conditional VAE; outputs:
``mean`` and ``logvar`` (N, latent_dim), the posterior q(z | x) whose mean the decoder reads. Checked like
the decoder: ONNX Runtime against PyTorch at several batch sizes (odd ones too).

It is not a registered model of its own: it is logged as an artifact (``encoder/vae_encoder.onnx``) of the
training run behind the decoder's registered version, and that version is tagged with where it lies
(``ENCODER_TAG``). The two halves of one VAE then move together: the ``champion`` alias that picks a
decoder also picks its encoder, and no second alias can point at an encoder of other weights.
"""
from __future__ import annotations

import json
import logging
import warnings
from pathlib import Path

import numpy as np
import torch

from genloop.errors import GenloopError
from genloop.paths import ENCODER_FILE
from genloop.io import atomic, tracking
from genloop.io.checkpoints import checkpoint_shape, load_classes, load_vae
from genloop.io.onnx_runtime import CONDITIONAL_KEY, LABELS_KEY, open_session
from genloop.io.promotion import ENCODER_TAG

IMAGE_NAME, LABEL_NAME, OUTPUT_NAMES = "image", "label", ("mean", "logvar")
ENCODER_ARTIFACT = f"encoder/{ENCODER_FILE}"


class EncoderParityError(GenloopError, RuntimeError):
    pass


class Encoder(torch.nn.Module):
    """``vae.encode`` as a module of its own: (image[, label]) -> (mean, logvar)."""

    def __init__(self, vae: torch.nn.Module, conditional: bool):
        super().__init__()
        self.vae, self.conditional = vae, conditional

    def forward(self, image: torch.Tensor, label: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        return self.vae.encode(image, label) if self.conditional else self.vae.encode(image)


def export_encoder(encoder: Encoder, shape: tuple[int, int, int], target: Path) -> None:
    """Dynamo export with a dynamic batch dimension, as one self-contained file."""
    import onnx

    logging.getLogger("torch.onnx").setLevel(logging.ERROR)
    example: tuple[torch.Tensor, ...] = (torch.rand(8, *shape),)
    names = [IMAGE_NAME]
    if encoder.conditional:
        example, names = (*example, torch.zeros(8, dtype=torch.int64)), [IMAGE_NAME, LABEL_NAME]
    batch = torch.export.Dim("batch", min=1, max=4096)
    with atomic.atomic_path(target) as tmp, warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        torch.onnx.export(encoder, example, str(tmp), dynamo=True, external_data=False, input_names=names,
                          output_names=list(OUTPUT_NAMES), dynamic_shapes={n: {0: batch} for n in names}, verbose=False)
        onnx.checker.check_model(str(tmp), full_check=True)


@torch.no_grad()
def parity(encoder: Encoder, shape: tuple[int, int, int], onnx_path: Path, batch_sizes: list[int], seed: int,
           classes: list[int] | None = None) -> dict[int, float]:
    """Max |ONNX Runtime - PyTorch| over both outputs per batch size, on the same random images (and labels)."""
    session = open_session(onnx_path)
    gen = torch.Generator().manual_seed(seed)
    diffs = {}
    for n in sorted({*batch_sizes, 7}):
        image = torch.rand(n, *shape, generator=gen)
        feeds = {IMAGE_NAME: image.numpy()}
        label = None
        if classes is not None:
            label = torch.tensor(classes)[torch.randint(len(classes), (n,), generator=gen)]
            feeds[LABEL_NAME] = label.numpy()
        expected = [t.numpy() for t in encoder(image, label)]
        got = session.run(list(OUTPUT_NAMES), feeds)
        if any(g.shape != e.shape for g, e in zip(got, expected)):
            raise EncoderParityError(f"{onnx_path}: ONNX output shapes {[g.shape for g in got]} "
                                     f"!= PyTorch's at batch {n}")
        diffs[n] = float(max(np.max(np.abs(g - e)) for g, e in zip(got, expected)))
    return diffs


def stage(checkpoint: Path, staged: Path, batch_sizes: list[int], tolerance: float, seed: int) -> dict[int, float]:
    """Export the encoder of the VAE checkpoint to ``staged`` and check parity; returns the max difference
    per batch size. Raises (and removes ``staged``) when ONNX Runtime differs by more than ``tolerance``."""
    classes = load_classes(checkpoint)
    encoder = Encoder(load_vae(checkpoint), classes is not None).eval()
    shape = checkpoint_shape(checkpoint)
    export_encoder(encoder, shape, staged)
    diffs = parity(encoder, shape, staged, batch_sizes, seed, classes)
    if max(diffs.values()) > tolerance:
        staged.unlink(missing_ok=True)
        raise EncoderParityError(f"vae encoder: ONNX Runtime differs from PyTorch by {max(diffs.values()):.2e} "
                                 f"(> export.parity_tolerance={tolerance:.0e}); per batch size: {diffs}")
    return diffs


def conditioning(checkpoint: Path) -> dict[str, str]:
    """The metadata a conditional encoder carries (as the decoder does): its trained classes."""
    classes = load_classes(checkpoint)
    return {} if classes is None else {LABELS_KEY: json.dumps(classes, separators=(",", ":")),
                                       CONDITIONAL_KEY: "true"}


def log_with_version(run_id: str, encoder_file: Path, name: str, version: str, diffs: dict[int, float]) -> None:
    """Log the encoder on the run behind a registered decoder version; tag the version with its artifact path
    and its parity (max |ONNX Runtime - PyTorch|)."""
    tracking.log_files(run_id, [encoder_file], artifact_path=ENCODER_ARTIFACT.rsplit("/", 1)[0])
    tracking.set_version_tags(name, version, {ENCODER_TAG: ENCODER_ARTIFACT,
                                              ENCODER_TAG + "_max_abs_diff": f"{max(diffs.values()):.3e}"})
