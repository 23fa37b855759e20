"""Saving and rebuilding trained models from one self-describing checkpoint file, and the
per-epoch training state that lets a killed training resume."""
from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import torch
from torch import nn

from genloop.io.atomic import save_torch
from genloop.config import MODELS
from genloop.core.dp_merf import MerfGenerator
from genloop.core.models.conditional import (ConditionalConvVAE, ConditionalGenerator, ConditionalMLPVAE,
                                        ConditionalPriorDecoder, ConditionalVAE, ProjectionDiscriminator)
from genloop.core.models.classifier import DigitClassifier
from genloop.core.models.gan import Discriminator, Generator
from genloop.core.models.shapes import check_shape
from genloop.core.models.vae import VAE, ConvVAE, LatentAffine, MLPVAE, PriorDecoder

KINDS = MODELS
TRAINING_STATE_FORMAT = 1


def trained_classes(hparams: dict[str, Any]) -> list[int] | None:
    """The classes a conditional model was trained on (sorted), or None for an unconditional one."""
    if not hparams.get("conditional", False):
        return None
    if not hparams.get("classes"):
        raise ValueError("a conditional checkpoint lacks its trained classes (hparams 'classes')")
    return [int(c) for c in hparams["classes"]]


def num_classes(hparams: dict[str, Any]) -> int:
    """Rows of a conditional model's label tables: labels are class values used as indices."""
    return max(trained_classes(hparams) or [0]) + 1


def chw(shape: tuple[int, ...] | list[int]) -> tuple[int, int, int]:
    """A checkpoint's image shape as (C, H, W): checkpoints written before colour hold (H, W), i.e. grey."""
    dims = tuple(int(d) for d in shape)
    if len(dims) == 2:
        return 1, dims[0], dims[1]
    if len(dims) != 3:
        raise ValueError(f"image shape {list(dims)}; expected (C, H, W) or (H, W)")
    check_shape(*dims)
    return dims  # type: ignore[return-value]


def build_vae(hparams: dict[str, Any], shape: tuple[int, ...]) -> VAE | ConditionalVAE:
    """The VAE ``hparams`` describe, for images of ``shape`` (C, H, W), or (H, W) for grey."""
    c, h, w = chw(shape)
    arch = hparams.get("arch", "conv")  # checkpoints written before the MLP existed have no arch
    if hparams.get("conditional", False):
        if arch == "mlp":
            return ConditionalMLPVAE(hparams["latent_dim"], hparams["hidden"], h, w, num_classes(hparams), c)
        return ConditionalConvVAE(hparams["latent_dim"], hparams["channels"], h, w, num_classes(hparams),
                                  hparams.get("decoder_convs", 0), c)
    if arch == "mlp":
        return MLPVAE(hparams["latent_dim"], hparams["hidden"], h, w, c)
    if arch == "conv":
        return ConvVAE(hparams["latent_dim"], hparams["channels"], h, w, hparams.get("decoder_convs", 0), c)
    raise ValueError(f"unknown VAE arch {arch!r}; expected 'conv' or 'mlp'")


def vae_sampler(vae: VAE, hparams: dict[str, Any], prior_state: dict[str, torch.Tensor] | None) -> nn.Module:
    """What a VAE checkpoint exports: with ``prior: fitted_gaussian``, decoder(mean + L z) (a
    ``PriorDecoder`` holding the fitted ``LatentAffine``), else the plain decoder fed z ~ N(0, I)."""
    prior = hparams.get("prior", "standard")  # checkpoints written before the fitted prior have none
    if prior == "standard":
        return vae.decoder
    if prior != "fitted_gaussian":
        raise ValueError(f"unknown VAE prior {prior!r}; expected 'standard' or 'fitted_gaussian'")
    if prior_state is None:
        raise ValueError("a VAE checkpoint with prior 'fitted_gaussian' lacks its fitted prior ('prior' state dict)")
    affine = LatentAffine(int(hparams["latent_dim"]))
    affine.load_state_dict(prior_state)
    if hparams.get("conditional", False):
        return ConditionalPriorDecoder(affine, vae.decoder)
    return PriorDecoder(affine, vae.decoder)


def build_gan(hparams: dict[str, Any], shape: tuple[int, ...]) -> tuple[Generator, Discriminator]:
    """The generator and discriminator ``hparams`` describe, for images of ``shape`` (C, H, W) or (H, W)."""
    c, h, w = chw(shape)
    sn = bool(hparams.get("spectral_norm", False))
    # checkpoints written before these settings existed hold none of their keys
    d_width, d_convs = hparams.get("disc_channels") or hparams["channels"], int(hparams.get("disc_convs", 0))
    upsample = hparams.get("upsample", "transposed")
    if hparams.get("conditional", False):
        k = num_classes(hparams)
        merf = hparams.get("dp_merf") or {}
        if hparams.get("method") == "dp_merf" and merf.get("generator") == "merf":  # trained without a discriminator
            return (MerfGenerator(hparams["latent_dim"], (c, h, w), k, merf.get("hidden", 256), hparams["channels"]),
                    ProjectionDiscriminator(d_width, h, w, k, sn, c, d_convs))
        return (ConditionalGenerator(hparams["latent_dim"], hparams["channels"], h, w, k, c, upsample),
                ProjectionDiscriminator(d_width, h, w, k, sn, c, d_convs))
    return (Generator(hparams["latent_dim"], hparams["channels"], h, w, c, upsample),
            Discriminator(d_width, h, w, spectral_norm=sn, image_channels=c, extra_convs=d_convs))


def _cpu_state(module: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().cpu() for k, v in module.state_dict().items()}


def save_checkpoint(path: Path, kind: str, hparams: dict[str, Any], shape: tuple[int, ...],
                    modules: dict[str, nn.Module], extra: dict[str, Any] | None = None,
                    sampler: str | None = None) -> None:
    """``shape``: the images' (C, H, W) (recorded as such); ``sampler`` names the entry of ``modules``
    that ``load_sampler`` rebuilds (e.g. the EMA generator)."""
    state = {
        "kind": kind, "hparams": hparams, "shape": list(chw(shape)),
        "state_dicts": {name: _cpu_state(m) for name, m in modules.items()},
        **({"sampler": sampler} if sampler else {}),
        **(extra or {}),
    }
    save_torch(path, state)


def read_checkpoint(path: Path) -> dict[str, Any]:
    """A checkpoint's contents, its ``shape`` as (C, H, W) whenever it was written."""
    if not path.exists():
        raise FileNotFoundError(f"{path} is missing; run `genloop train` first")
    state = torch.load(path, map_location="cpu", weights_only=True)
    if state.get("kind") not in KINDS:
        raise ValueError(f"{path}: not a genloop checkpoint (kind={state.get('kind')!r})")
    state["shape"] = list(chw(state["shape"]))
    return state


def checkpoint_shape(path: Path) -> tuple[int, int, int]:
    """The (C, H, W) of the images a checkpoint's model makes."""
    return chw(read_checkpoint(path)["shape"])


def load_sampler(path: Path) -> tuple[nn.Module, int]:
    """The part that turns latent vectors into images (VAE decoder or GAN generator, the EMA one when
    training kept one), in eval mode, with its latent size. A conditional model's sampler takes
    (z, label); ``load_classes`` says which labels it was trained on."""
    state = read_checkpoint(path)
    shape = tuple(state["shape"])
    if state["kind"] == "vae":
        vae = build_vae(state["hparams"], shape)
        vae.load_state_dict(state["state_dicts"]["vae"])
        sampler: nn.Module = vae_sampler(vae, state["hparams"], state["state_dicts"].get("prior"))
    else:
        generator, _ = build_gan(state["hparams"], shape)
        generator.load_state_dict(state["state_dicts"][state.get("sampler", "generator")])
        sampler = generator
    return sampler.eval(), int(state["hparams"]["latent_dim"])


def load_classes(path: Path) -> list[int] | None:
    """The trained classes of a conditional checkpoint (its sampler takes (z, label)); None if unconditional."""
    return trained_classes(read_checkpoint(path)["hparams"])


def save_training_state(path: Path, fingerprint: str, epoch: int, run_id: str, history: list[dict[str, float]],
                        modules: dict[str, nn.Module], optimizers: dict[str, torch.optim.Optimizer],
                        batch_generator: torch.Generator) -> None:
    """Everything needed to continue after ``epoch`` as if never stopped: weights, optimizer moments,
    the global and batch-order RNG states, the history so far and the MLflow run."""
    state = {
        "format": TRAINING_STATE_FORMAT, "fingerprint": fingerprint, "epoch": epoch, "run_id": run_id,
        "history": history,
        "modules": {name: _cpu_state(m) for name, m in modules.items()},
        "optimizers": {name: opt.state_dict() for name, opt in optimizers.items()},
        "torch_rng": torch.get_rng_state(),
        "cuda_rng": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "batch_rng": batch_generator.get_state(),
    }
    save_torch(path, state)


def load_training_state(path: Path, fingerprint: str) -> dict[str, Any] | None:
    """The saved state if it was written by a training with the same ``fingerprint``, else None.

    An unreadable or foreign file is reported and ignored: training then starts fresh.
    """
    for stale in path.parent.glob(f".{path.name}.*.tmp"):  # left by a kill during a write
        stale.unlink(missing_ok=True)
    if not path.exists():
        return None
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # a truncated or foreign file must not block training
        warnings.warn(f"{path}: unreadable training state ({exc}); starting fresh", stacklevel=2)
        return None
    if not isinstance(state, dict) or state.get("format") != TRAINING_STATE_FORMAT:
        return None
    return state if state.get("fingerprint") == fingerprint else None


def restore_training_state(state: dict[str, Any], modules: dict[str, nn.Module],
                           optimizers: dict[str, torch.optim.Optimizer], batch_generator: torch.Generator) -> None:
    for name, module in modules.items():
        module.load_state_dict(state["modules"][name])
    for name, opt in optimizers.items():
        opt.load_state_dict(state["optimizers"][name])
    torch.set_rng_state(state["torch_rng"])
    if state["cuda_rng"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda_rng"])
    batch_generator.set_state(state["batch_rng"])


def load_vae(path: Path) -> VAE | ConditionalVAE:
    """The whole VAE (encoder and decoder) of a VAE checkpoint, in eval mode: likelihood metrics need q(z|x)."""
    state = read_checkpoint(path)
    if state["kind"] != "vae":
        raise ValueError(f"{path}: a {state['kind']} checkpoint, not a VAE")
    vae = build_vae(state["hparams"], tuple(state["shape"]))
    vae.load_state_dict(state["state_dicts"]["vae"])
    return vae.eval()


# ---- the evaluation's feature networks (genloop.core.models.classifier) -------------------------------
def _state(model: DigitClassifier, key: str) -> dict[str, Any]:
    return {"key": key, "shape": [model.height, model.width], "channels": model.channels, "feature_dim": model.feature_dim,
            "num_classes": model.num_classes, "arch": model.arch, "state_dict": model.state_dict()}


def save_classifiers(path: Path, models: dict[str, tuple[DigitClassifier, str]]) -> None:
    """Save named networks with the keys they were trained from, in one file (one DVC output)."""
    save_torch(path, {"networks": {name: _state(model, key) for name, (model, key) in models.items()}})


def load_classifier(path: Path, key: str, name: str = "classifier") -> DigitClassifier | None:
    """Network ``name`` saved at ``path`` if it was trained from ``key``; None if absent, stale or unreadable."""
    if not path.exists():
        return None
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)["networks"][name]
        if state.get("key") != key:
            return None
        model = DigitClassifier(*state["shape"], state["feature_dim"], state["num_classes"], state["arch"],
                                state.get("channels", 1))
        model.load_state_dict(state["state_dict"])
    except Exception:  # a file from another version of this module: retrain rather than fail
        return None
    return model.eval()
