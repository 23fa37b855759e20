"""Tiny models for the explorer's tests: a VAE's decoder and encoder (one untrained ConvVAE, so encoding a
real image and decoding it is one model's round trip), a GAN, a few real images and a latent atlas."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch

from servers import CHANNELS, GAN, LATENT, SIDE, VAE

ENCODER = "genloop-vae-encoder"
MNIST_VAE = "mnist-sized-vae"  # a decoder of MNIST's size, for the explorer's latency at 28x28
REAL_IMAGES = 5
ATLAS_VAE = [{"dimension": 2, "kl_nats": 1.2}, {"dimension": 0, "kl_nats": 0.4}, {"dimension": 3, "kl_nats": 0.002},
             {"dimension": 1, "kl_nats": 0.001}]  # dimensions 3 and 1: inactive (KL <= 0.01 nats)


class EncoderGraph(torch.nn.Module):
    """images (N, C, H, W) in [0, 1] -> (mean, logvar), as models/vae_encoder.onnx is exported."""

    def __init__(self, vae):
        super().__init__()
        self.vae = vae

    def forward(self, images: torch.Tensor):
        return self.vae.encode(images)


def export_encoder(vae, target: Path) -> None:
    batch = torch.export.Dim("batch", min=1, max=4096)
    torch.onnx.export(EncoderGraph(vae).eval(), (torch.rand(2, 1, SIDE, SIDE),), str(target), dynamo=True,
                      external_data=False, input_names=["images"], output_names=["mean", "logvar"],
                      dynamic_shapes={"images": {0: batch}}, verbose=False)


def make_models(folder: Path) -> dict[str, Path]:
    """The served files (decoder, encoder, GAN) of ``folder``, by served name."""
    from genloop.core.models.gan import Generator
    from genloop.core.models.vae import ConvVAE
    from genloop.stages.export import export_onnx

    torch.manual_seed(0)
    vae = ConvVAE(LATENT, CHANNELS, SIDE, SIDE).eval()
    export_onnx(vae.decoder, LATENT, folder / "vae_decoder.onnx")
    export_encoder(vae, folder / "vae_encoder.onnx")
    export_onnx(Generator(LATENT, CHANNELS, SIDE, SIDE).eval(), LATENT, folder / "gan_generator.onnx")
    return {VAE: folder / "vae_decoder.onnx", ENCODER: folder / "vae_encoder.onnx", GAN: folder / "gan_generator.onnx"}


def make_mnist_sized_decoder(folder: Path) -> Path:
    """The decoder the shipped ``train.vae`` builds for 28x28 grey images (weights untrained: a forward
    pass costs what a trained one's does), exported as the loop exports it."""
    from genloop.config import VAEConfig
    from genloop.io.checkpoints import build_vae
    from genloop.stages.export import export_onnx

    torch.manual_seed(0)
    cfg = VAEConfig()
    vae = build_vae(cfg.model_dump(), (1, 28, 28)).eval()
    export_onnx(vae.decoder, cfg.latent_dim, folder / "vae_decoder_28x28.onnx")
    return folder / "vae_decoder_28x28.onnx"


def write_images(target: Path) -> Path:
    """A clean split's .npz: uint8 (N, H, W) grey images, distinct from each other."""
    rng = np.random.default_rng(3)
    np.savez(target, images=rng.integers(0, 256, (REAL_IMAGES, SIDE, SIDE), dtype=np.uint8),
             labels=np.arange(REAL_IMAGES))
    return target


def gan_direction(k: int) -> list[float]:
    vector = np.zeros(LATENT)
    vector[k], vector[(k + 1) % LATENT] = 0.6, 0.8
    return vector.tolist()


def write_atlas(folder: Path, gan_vectors: bool = True) -> Path:
    """explain.json and explain_detail.json as the latent atlas writes them (scores; directions)."""
    gan = [{"direction": k, "explained_variance": 0.3 - 0.1 * k, "moves": "slant" if k == 0 else "-",
            **({"vector": gan_direction(k), "sd": 1.5} if gan_vectors else {})} for k in range(2)]
    (folder / "explain.json").write_text(json.dumps({"vae": {"active_units": 2.0}, "gan": {"mig": 0.1}}))
    (folder / "explain_detail.json").write_text(json.dumps({"vae": {"directions": ATLAS_VAE},
                                                            "gan": {"directions": gan}, "meta": {}}))
    return folder / "explain.json"
