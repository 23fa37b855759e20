"""What ``/explore`` needs beyond the Open Inference Protocol: per served generator, the axes its sliders move,
its classes, the encoder that can place a real image in its latent space, and a few real images.

The axes come from the latent atlas (``reports/explain.json`` and its companion ``explain_detail.json``,
written by ``genloop evaluate`` / ``genloop explain``): the VAE's active dimensions (most KL first) and the
GAN's GANSpace directions. Without the atlas (or for a model it does not fit) the sliders move the first
latent dimensions, and the page says so. Images are drawn by the browser from ``/v2/models/NAME/infer``.
"""
from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from genloop.serving.sessions import LABEL_INPUT, ServedModel

log = logging.getLogger("genloop.serving")

FALLBACK_AXES = 8        # sliders when the atlas names none: the first latent dimensions
ACTIVE_KL_NATS = 0.01    # the atlas' threshold of an active VAE dimension (mean KL above it)
MAX_AXES = 16            # sliders shown at most
EXPLORE_IMAGES = 12      # real images offered to the encoder
ENCODER_OUTPUTS = ("mean", "logvar")


@dataclass(frozen=True)
class Atlas:
    """The parts of the atlas the explorer reads; ``note`` says what was missing or unreadable."""

    detail: dict[str, Any] = field(default_factory=dict)
    note: str = ""


def read_atlas(explain: Path | None) -> Atlas:
    """explain.json's companion ``<stem>_detail.json`` (directions per model), tolerating its absence."""
    if explain is None:
        return Atlas(note="no latent atlas configured (genloop serve --explain PATH)")
    detail_file = explain.with_name(explain.stem + "_detail.json")
    if not explain.is_file():
        return Atlas(note=f"no latent atlas at {explain} (genloop evaluate or genloop explain writes it)")
    if not detail_file.is_file():
        return Atlas(note=f"{explain} has no companion {detail_file.name} with the directions")
    try:
        detail = json.loads(detail_file.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        return Atlas(note=f"{detail_file} is not readable JSON ({exc})")
    if not isinstance(detail, dict):
        return Atlas(note=f"{detail_file} is not a JSON object")
    return Atlas(detail=detail, note=f"axes from {explain.name}")


def model_kind(model: ServedModel) -> str:
    """``encoder`` (images in, mean and logvar out), ``vae`` or ``gan`` (ONNX metadata, else the name)."""
    if set(ENCODER_OUTPUTS) <= set(model.output_names) and len(model.latent.shape) == 4:
        return "encoder"
    if model.kind in ("vae", "gan"):
        return model.kind
    lowered = model.name.lower()
    return "vae" if "vae" in lowered else "gan" if "gan" in lowered else "generator"


def _unit(index: int, dim: int) -> list[float]:
    axis = [0.0] * dim
    axis[index] = 1.0
    return axis


def fallback_axes(dim: int) -> list[dict[str, Any]]:
    return [{"label": f"z{i}", "vector": _unit(i, dim), "sd": 1.0} for i in range(min(FALLBACK_AXES, dim))]


def vae_axes(entries: list, dim: int) -> tuple[list[dict[str, Any]], str]:
    """The active dimensions (KL above ACTIVE_KL_NATS, most first), or why the atlas does not fit."""
    dims = [(int(e["dimension"]), float(e.get("kl_nats") or 0.0)) for e in entries
            if isinstance(e, dict) and isinstance(e.get("dimension"), int)]
    if any(d >= dim or d < 0 for d, _ in dims):
        return [], f"the atlas describes a wider latent space than the served model's {dim} dimensions"
    active = sorted([(d, kl) for d, kl in dims if kl > ACTIVE_KL_NATS], key=lambda p: -p[1])[:MAX_AXES]
    if not active:
        return [], "the atlas lists no active dimension"
    return [{"label": f"z{d} ({kl:.2f} nats)", "vector": _unit(d, dim), "sd": 1.0} for d, kl in active], ""


def gan_axes(entries: list, dim: int) -> tuple[list[dict[str, Any]], str]:
    """GANSpace directions that carry their latent vector (``vector``, with ``sd``), or why none do."""
    axes = []
    for e in entries[:MAX_AXES]:
        vector = e.get("vector") if isinstance(e, dict) else None
        if not isinstance(vector, list) or len(vector) != dim:
            return [], ("the atlas' GAN directions carry no latent vector of the served model's width "
                        f"({dim}); re-run genloop explain")
        moves = e.get("moves") or "-"
        label = f"d{e.get('direction', len(axes))}" + (f" ({moves})" if moves != "-" else "")
        axes.append({"label": label, "vector": [float(v) for v in vector], "sd": float(e.get("sd") or 1.0)})
    return axes, "" if axes else "the atlas lists no GAN direction"


def axes_for(model: ServedModel, kind: str, atlas: Atlas) -> tuple[list[dict[str, Any]], str]:
    """The sliders of one generator, and a sentence saying where they come from."""
    dim = model.latent_dim
    entries = (atlas.detail.get(kind) or {}).get("directions") if kind in ("vae", "gan") else None
    if not atlas.detail or not isinstance(entries, list):
        why = atlas.note if not atlas.detail else f"the atlas has no {kind} directions"
        return fallback_axes(dim), f"{why}: the sliders move the first {min(FALLBACK_AXES, dim)} latent dimensions"
    axes, why = (vae_axes if kind == "vae" else gan_axes)(entries, dim)
    if not axes:
        return fallback_axes(dim), f"{why}: the sliders move the first {min(FALLBACK_AXES, dim)} latent dimensions"
    what = "active dimensions" if kind == "vae" else "GANSpace directions"
    return axes, f"{len(axes)} {what} from the latent atlas ({atlas.note.removeprefix('axes from ')})"


def image_chw(model: ServedModel) -> tuple[int, ...] | None:
    """(C, H, W) of a generator's first output, when its metadata fixes it."""
    shape = model.outputs[0].shape if model.outputs else ()
    return tuple(shape[1:]) if len(shape) == 4 and -1 not in shape[1:] else None


def encoder_for(model: ServedModel, encoders: list[ServedModel]) -> ServedModel | None:
    """The served encoder whose means fit this decoder's latent and whose input fits its images."""
    for enc in encoders:
        mean = next(s for s in enc.outputs if s.name == "mean")
        chw = image_chw(model)
        if (len(mean.shape) == 2 and mean.shape[1] == model.latent_dim and (chw is None or tuple(enc.latent.shape[1:]) == chw)
                and (LABEL_INPUT in enc.input_names) == model.conditional):
            return enc
    return None


def read_images(path: Path | None, chw: tuple[int, ...]) -> tuple[list[list[float]], str]:
    """Up to EXPLORE_IMAGES real images as flat (C, H, W) lists in [0, 1], or why there are none."""
    if path is None:
        return [], "no real images configured (genloop serve --explore-images FILE)"
    if not path.is_file():
        return [], f"no real images at {path} (genloop clean writes it)"
    try:
        with np.load(path, allow_pickle=False) as arrays:
            images = arrays["images"][:EXPLORE_IMAGES] if path.suffix == ".npz" else arrays[:EXPLORE_IMAGES]
    except (OSError, ValueError, KeyError) as exc:
        return [], f"{path} holds no readable 'images' array ({exc})"
    if images.ndim == 3:
        images = images[:, None]
    elif images.ndim == 4:
        images = np.moveaxis(images, -1, 1)
    if tuple(images.shape[1:]) != tuple(chw):
        return [], f"the images in {path} are {list(images.shape[1:])} (C, H, W); the encoder takes {list(chw)}"
    scale = 255.0 if images.dtype == np.uint8 else 1.0
    return [(img.astype(np.float32) / scale).ravel().round(4).tolist() for img in images], ""


def explorer_config(models: dict[str, ServedModel], index: list[dict], atlas: Atlas,
                    images: Path | None) -> dict[str, Any]:
    """What the page builds itself from: every served name (loaded or not) and what it can do."""
    encoders = [m for m in models.values() if model_kind(m) == "encoder"]
    entries, cached = [], {}
    for entry in index:
        model = models.get(entry["name"])
        if model is None:
            entries.append({"name": entry["name"], "loaded": False, "reason": entry.get("reason") or "unloaded"})
            continue
        kind = model_kind(model)
        if kind == "encoder":
            continue
        axes, axes_note = axes_for(model, kind, atlas)
        found = {"name": model.name, "loaded": True, "version": model.version, "kind": kind,
                 "latent": model.latent.name, "latent_dim": model.latent_dim, "output": model.output_names[0],
                 "labels": list(model.labels) if model.labels is not None else None,
                 "class_names": {str(k): v for k, v in model.class_names.items()}, "axes": axes,
                 "axes_note": axes_note, "encoder": None, "images": []}
        enc = encoder_for(model, encoders) if kind == "vae" else None
        if enc is not None:
            chw = tuple(enc.latent.shape[1:])
            if chw not in cached:
                cached[chw] = read_images(images, chw)
            found["encoder"] = {"name": enc.name, "input": enc.latent.name, "shape": list(chw)}
            found["images"], found["images_note"] = cached[chw]
        else:
            found["images_note"] = ("no encoder served for this model (serve models/vae_encoder.onnx beside the "
                                    "decoder to encode and edit real images)" if kind == "vae" else "")
        entries.append(found)
    return {"models": entries, "atlas_note": atlas.note}
