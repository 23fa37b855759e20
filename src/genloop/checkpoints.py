"""Saving and rebuilding trained models from one self-describing checkpoint file."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn

from genloop.atomic import write_with
from genloop.models.gan import Discriminator, Generator
from genloop.models.vae import ConvVAE

KINDS = ("vae", "gan")


def build_vae(hparams: dict[str, Any], shape: tuple[int, int]) -> ConvVAE:
    return ConvVAE(hparams["latent_dim"], hparams["channels"], *shape)


def build_gan(hparams: dict[str, Any], shape: tuple[int, int]) -> tuple[Generator, Discriminator]:
    return Generator(hparams["latent_dim"], hparams["channels"], *shape), Discriminator(hparams["channels"], *shape)


def save_checkpoint(path: Path, kind: str, hparams: dict[str, Any], shape: tuple[int, int],
                    modules: dict[str, nn.Module], extra: dict[str, Any] | None = None) -> None:
    state = {
        "kind": kind, "hparams": hparams, "shape": list(shape),
        "state_dicts": {name: {k: v.detach().cpu() for k, v in m.state_dict().items()} for name, m in modules.items()},
        **(extra or {}),
    }
    write_with(path, lambda tmp: torch.save(state, tmp))


def read_checkpoint(path: Path) -> dict[str, Any]:
    if not path.exists():
        raise FileNotFoundError(f"{path} is missing; run `genloop train` first")
    state = torch.load(path, map_location="cpu", weights_only=True)
    if state.get("kind") not in KINDS:
        raise ValueError(f"{path}: not a genloop checkpoint (kind={state.get('kind')!r})")
    return state


def load_sampler(path: Path) -> tuple[nn.Module, int]:
    """The part that turns latent vectors into images (VAE decoder or GAN generator), in eval mode."""
    state = read_checkpoint(path)
    shape = tuple(state["shape"])
    if state["kind"] == "vae":
        vae = build_vae(state["hparams"], shape)
        vae.load_state_dict(state["state_dicts"]["vae"])
        sampler: nn.Module = vae.decoder
    else:
        generator, _ = build_gan(state["hparams"], shape)
        generator.load_state_dict(state["state_dicts"]["generator"])
        sampler = generator
    return sampler.eval(), int(state["hparams"]["latent_dim"])
