"""A labelled synthetic data set from a registered conditional model: what a private generator is for.

``genloop synthesize --version N --images M`` runs version N's ONNX graph (the exact artifact that was
registered, gated and served) on seeded z and labels, and writes ``synthetic/<name>-v<N>/data.npz``
(``images`` uint8 (M, H, W) or (M, H, W, 3), ``labels`` (M,)), the layout ``genloop collect --source
npz:PATH`` reads, beside ``manifest.json`` (model, version, ε, δ, seed, counts); versions the folder with
DVC (``dvc add``, as collect versions ``data/``) in a DVC project, and logs the release (params and
files) as a run nested under the version's MLflow run. The labels are drawn
uniformly over the model's trained classes: the real class shares are data, and a private model's
release must not lean on them. Sampling is post-processing, so the set carries the model's (ε, δ).
"""
from __future__ import annotations

import json
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from genloop.config import Params
from genloop.core.promotion import EPSILON_TAG, PromotionError
from genloop.io import atomic, dvcio, promotion, tracking
from genloop.io.arrays import save_npz
from genloop.io.onnx_runtime import LABEL_INPUT, LABELS_KEY, open_session
from genloop.paths import ProjectPaths


@dataclass(frozen=True)
class SynthesizeResult:
    folder: Path
    data: Path  # data.npz
    manifest: dict
    dvc_hash: str | None = None  # the md5 of the folder's .dvc file; None outside a DVC project
    run_id: str | None = None  # the MLflow run of the release, nested under the version's run


def _draw(session, classes: list[int], n: int, seed: int, batch_size: int = 1000) -> tuple[np.ndarray, np.ndarray]:
    """``n`` images (N, C, H, W) in [0, 1] and their labels, uniform over ``classes``, seeded."""
    rng = np.random.default_rng(seed)
    z_input = next(i for i in session.get_inputs() if i.name != LABEL_INPUT)
    labels = np.asarray(classes, dtype=np.int64)[rng.integers(len(classes), size=n)]
    z = rng.standard_normal((n, int(z_input.shape[1]))).astype(np.float32)
    out = [session.run(None, {z_input.name: z[i:i + batch_size], LABEL_INPUT: labels[i:i + batch_size]})[0]
           for i in range(0, n, batch_size)]
    return np.concatenate(out), labels


def to_uint8(images: np.ndarray) -> np.ndarray:
    """(N, C, H, W) floats in [0, 1] -> the data layout: uint8 (N, H, W) grey, (N, H, W, 3) colour."""
    pixels = np.rint(np.clip(images, 0.0, 1.0) * 255).astype(np.uint8)
    return pixels[:, 0] if pixels.shape[1] == 1 else pixels.transpose(0, 2, 3, 1)


def synthesize(params: Params, paths: ProjectPaths, version: int, images: int, model: str | None = None,
               seed: int | None = None, version_with_dvc: bool | None = None) -> SynthesizeResult:
    """Write ``images`` labelled samples of registered ``model`` (default: export.gan_model_name) ``version``;
    ``version_with_dvc`` (default: when the project is a DVC repository) runs ``dvc add`` on the folder."""
    if images < 1:
        raise PromotionError(f"--images must be at least 1 (got {images})")
    name, seed = model or params.export.gan_model_name, params.seed if seed is None else seed
    client = tracking.registry_client(params.mlflow, paths)
    found = promotion.registered_version(client, name, str(version))
    with tempfile.TemporaryDirectory() as tmp:
        session = open_session(promotion.download_onnx(f"models:/{name}/{version}", Path(tmp)))
    meta = session.get_modelmeta().custom_metadata_map
    if LABEL_INPUT not in {i.name for i in session.get_inputs()} or LABELS_KEY not in meta:
        raise PromotionError(f"{name} v{version} has no {LABEL_INPUT!r} input: synthesize needs a class-conditional "
                             "model (train.<model>.conditional: true) to label what it writes")
    pixels, labels = _draw(session, json.loads(meta[LABELS_KEY]), images, seed)
    epsilon, delta = found.tags.get(EPSILON_TAG, "inf"), found.tags.get(tracking.DELTA_TAG)
    manifest = {"model": name, "version": int(version), "run_id": found.run_id, "epsilon": float(epsilon),
                "delta": None if delta is None else float(delta), "seed": seed, "images": images,
                "classes": sorted({int(c) for c in labels}), "labels": "uniform over the trained classes"}
    folder = paths.root / "synthetic" / f"{name}-v{version}"
    with atomic.atomic_dir(folder) as tmp_folder:
        save_npz(tmp_folder / "data.npz", images=to_uint8(pixels), labels=labels)
        atomic.write_json(tmp_folder / "manifest.json", manifest)
    if version_with_dvc is None:
        version_with_dvc = dvcio.is_dvc_repo(paths.root)
    dvc_hash = dvcio.dvc_add(paths.root, folder) if version_with_dvc else None
    run_id = tracking.log_release(found.run_id, f"{name}-v{version}-seed{seed}-n{images}",
                                  [folder / "data.npz", folder / "manifest.json"],
                                  {**{k: manifest[k] for k in ("model", "version", "epsilon", "delta", "seed", "images")},
                                   "dvc_md5": dvc_hash or "untracked"}, paths)
    return SynthesizeResult(folder, folder / "data.npz", manifest, dvc_hash, run_id)
