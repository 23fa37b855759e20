"""Stage 6, deploy (export): the VAE decoder and GAN generator as ONNX graphs, checked and registered.

A graph whose ONNX Runtime output differs from PyTorch by more than the tolerance is never
published: the stage fails and ``models/`` keeps what it had.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from genloop import atomic, tracking
from genloop.checkpoints import load_sampler
from genloop.config import ExportConfig, Params
from genloop.paths import ProjectPaths
from genloop.train import read_run_id

INPUT_NAME, OUTPUT_NAME = "z", "image"
ONNX_FILES = {"vae": "vae_decoder.onnx", "gan": "gan_generator.onnx"}


class ParityError(RuntimeError):
    pass


@dataclass(frozen=True)
class ExportedModel:
    kind: str
    path: Path
    max_abs_diff: dict[int, float]
    registered_name: str | None
    registered_version: str | None


@dataclass(frozen=True)
class ExportResult:
    models: dict[str, ExportedModel]


def export_onnx(module: torch.nn.Module, latent_dim: int, target: Path) -> None:
    """Dynamo export with a dynamic batch dimension, as one self-contained file."""
    import logging
    import warnings

    import onnx

    # The exporter warns about torchvision ops it cannot register; genloop uses none of them.
    logging.getLogger("torch.onnx").setLevel(logging.ERROR)
    example = torch.randn(8, latent_dim)
    batch = torch.export.Dim("batch", min=1, max=4096)
    with atomic.atomic_path(target) as tmp, warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        torch.onnx.export(
            module, (example,), str(tmp), dynamo=True, external_data=False,
            input_names=[INPUT_NAME], output_names=[OUTPUT_NAME],
            dynamic_shapes={INPUT_NAME: {0: batch}}, verbose=False,
        )
        onnx.checker.check_model(str(tmp), full_check=True)


def session(path: Path, providers: list[str] | None = None, threads: int = 0):
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.log_severity_level = 3
    return ort.InferenceSession(str(path), options, providers=providers or ["CPUExecutionProvider"])


@torch.no_grad()
def parity(module: torch.nn.Module, latent_dim: int, onnx_path: Path, batch_sizes: list[int], seed: int) -> dict[int, float]:
    """Max |ONNX Runtime - PyTorch| per batch size, on the same latent vectors."""
    sess = session(onnx_path)
    gen = torch.Generator().manual_seed(seed)
    diffs = {}
    for n in sorted({*batch_sizes, 7}):
        z = torch.randn(n, latent_dim, generator=gen)
        expected = module(z).numpy()
        got = sess.run([OUTPUT_NAME], {INPUT_NAME: z.numpy()})[0]
        if got.shape != expected.shape:
            raise ParityError(f"{onnx_path}: ONNX output shape {got.shape} != PyTorch {expected.shape} at batch {n}")
        diffs[n] = float(np.max(np.abs(got - expected)))
    return diffs


@dataclass(frozen=True)
class _Staged:
    kind: str
    module: torch.nn.Module
    latent_dim: int
    staged: Path
    target: Path
    diffs: dict[int, float]


def stage_model(kind: str, params: Params, paths: ProjectPaths) -> _Staged:
    """Export beside the target and check parity; nothing is published yet."""
    config: ExportConfig = params.export
    module, latent_dim = load_sampler(paths.train(kind) / "model.pt")
    staged = paths.models / f".{ONNX_FILES[kind]}.staged"
    export_onnx(module, latent_dim, staged)
    diffs = parity(module, latent_dim, staged, config.parity_batch_sizes, params.seed)
    worst = max(diffs.values())
    if worst > config.parity_tolerance:
        raise ParityError(
            f"{kind}: ONNX Runtime differs from PyTorch by {worst:.2e} "
            f"(> export.parity_tolerance={config.parity_tolerance:.0e}); per batch size: {diffs}"
        )
    return _Staged(kind, module, latent_dim, staged, paths.models / ONNX_FILES[kind], diffs)


def _log_and_register(kind: str, name: str, onnx_path: Path, module: torch.nn.Module, latent_dim: int,
                      diffs: dict[int, float], params: Params, paths: ProjectPaths) -> str:
    import mlflow
    import onnx
    from mlflow import MlflowClient
    from mlflow.models import infer_signature

    tracking.setup(params.mlflow, paths)
    run_id = read_run_id(paths, kind)
    z = np.random.default_rng(params.seed).standard_normal((2, latent_dim)).astype(np.float32)
    with torch.no_grad():
        out = module(torch.from_numpy(z)).numpy()
    lineage = tracking.lineage_tags(paths)
    with mlflow.start_run(run_id=run_id):
        mlflow.log_metric("onnx_max_abs_diff", max(diffs.values()))
        info = mlflow.onnx.log_model(
            onnx.load(str(onnx_path)), name="onnx", registered_model_name=name,
            signature=infer_signature(z, out), input_example=None,
            onnx_execution_providers=["CPUExecutionProvider"], save_as_external_data=False,
        )
    version = str(info.registered_model_version)
    client = MlflowClient()
    for key, value in {**lineage, "run_id": run_id, "onnx_max_abs_diff": f"{max(diffs.values()):.3e}"}.items():
        client.set_model_version_tag(name, version, key, value)
    return version


def export(params: Params, paths: ProjectPaths, register: bool | None = None) -> ExportResult:
    """Publish both graphs only once both passed parity, so models/ never mixes old and new."""
    register = params.export.register_models if register is None else register
    staged: list[_Staged] = []
    try:
        for kind in ONNX_FILES:
            staged.append(stage_model(kind, params, paths))
        for item in staged:
            item.staged.replace(item.target)
    finally:  # covers a model that failed before it was staged, too
        for kind in ONNX_FILES:
            (paths.models / f".{ONNX_FILES[kind]}.staged").unlink(missing_ok=True)

    models: dict[str, ExportedModel] = {}
    for item in staged:
        name = version = None
        if register:
            name = params.export.vae_model_name if item.kind == "vae" else params.export.gan_model_name
            version = _log_and_register(item.kind, name, item.target, item.module, item.latent_dim,
                                        item.diffs, params, paths)
        models[item.kind] = ExportedModel(item.kind, item.target, item.diffs, name, version)
    atomic.write_json(paths.models / "export.json", {
        kind: {"path": str(m.path.relative_to(paths.root)), "max_abs_diff": {str(k): v for k, v in m.max_abs_diff.items()},
               "registered_name": m.registered_name, "registered_version": m.registered_version}
        for kind, m in models.items()
    })
    return ExportResult(models)
