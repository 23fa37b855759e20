"""``genloop explain``: the latent atlas (``genloop.evaluation.atlas``) of any registered version, from the
checkpoint its training run logged (``checkpoint/model.pt``), on today's evaluation data; written as
``reports/explain-<name>-v<N>.html`` and ``.json`` and logged onto that run (metrics ``mig``, ``dci_*``,
``active_units``, ``probe_accuracy``), so versions compare side by side in ``mlflow ui``.

A version whose run holds no checkpoint (registered before it was logged) is explained from its ONNX
graph: samples, morphometric gaps, attribution, and for a GAN the GANSpace directions of its images;
what needs the encoder or the first layer is listed as skipped.
"""
from __future__ import annotations

import json
import tempfile
from pathlib import Path

from genloop.config import Params, sampling_seed
from genloop.errors import GenloopError
from genloop.evaluation.atlas import Generator, build, from_checkpoint
from genloop.evaluation.explain import ExplainReport, explain_images, log, write
from genloop.io import tracking
from genloop.io.onnx_runtime import LABEL_INPUT, LABELS_KEY
from genloop.paths import ProjectPaths

CHECKPOINT_ARTIFACT = "checkpoint/model.pt"  # where train logs model.pt on its run


class ExplainError(GenloopError, ValueError):
    """A version cannot be explained (no such version, nothing downloadable); the message says why."""


def version_of(client, name: str, version: str | None):
    """The registered version (default: the champion, else the latest)."""
    from genloop.io import promotion

    if version is None:
        champion = promotion.current_champion(client, name)
        if champion is not None:
            return champion
        versions = client.search_model_versions(f"name='{name}'")
        if not versions:
            raise ExplainError(f"{name} has no registered version; run `genloop export` first")
        version = str(max(int(v.version) for v in versions))
    try:
        return promotion.registered_version(client, name, str(version))
    except promotion.PromotionError as exc:
        raise ExplainError(str(exc)) from None


def explain_version(params: Params, paths: ProjectPaths, kind: str, version: str | None = None,
                    log_to_mlflow: bool = True) -> ExplainReport:
    """The atlas of a registered version of ``kind``'s model, from its run's checkpoint (or its ONNX graph
    when the run has none), on today's evaluation data; written as reports/explain-<name>-v<N>.*."""
    from genloop.evaluation.scoring import load_evaluation_data

    name = params.export.model_name(kind)
    client = tracking.registry_client(params.mlflow, paths)
    mv = version_of(client, name, version)
    run_id = mv.run_id or mv.tags.get("run_id")
    data = load_evaluation_data(params, paths)
    with tempfile.TemporaryDirectory(prefix="genloop-explain-") as tmp:
        gen, source = _generator(kind, name, str(mv.version), run_id, Path(tmp))
        atlas = build(gen, data, explain_images(params, len(data.held_out)), sampling_seed(params.seed),
                      params.evaluate.batch_size)
    if source != "checkpoint":
        atlas.notes.append(f"explained from the version's ONNX graph: its run {run_id} holds no {CHECKPOINT_ARTIFACT}")
    meta = {"model": f"{name} v{mv.version}", "run": str(run_id), "source": source}
    report = write(paths.reports, f"explain-{name}-v{mv.version}", {kind: atlas}, meta)
    if log_to_mlflow and run_id:
        log(report, {kind: run_id})
    return report


def _generator(kind: str, name: str, version: str, run_id: str | None, tmp: Path) -> tuple[Generator, str]:
    """The checkpoint logged on the version's run when there is one, else the version's ONNX graph."""
    from genloop.io import promotion

    if run_id:
        try:
            local = tracking.download_artifacts(f"runs:/{run_id}/{CHECKPOINT_ARTIFACT}", tmp / "ckpt")
            return from_checkpoint(kind, local), "checkpoint"
        except tracking.registry_errors():
            pass
        except OSError:
            pass
    try:
        onnx_file = promotion.download_onnx(f"models:/{name}/{version}", tmp / "onnx")
    except promotion.PromotionError as exc:
        raise ExplainError(f"{name} v{version}: neither a checkpoint nor an ONNX graph to explain ({exc})") from None
    return from_onnx(kind, onnx_file), "onnx"


def from_onnx(kind: str, onnx_file: Path) -> Generator:
    """A Generator over an ONNX decoder/generator: samples and GANSpace on its images; no encoder."""
    import torch

    from genloop.io.onnx_runtime import open_session

    session = open_session(onnx_file)
    inputs = {i.name: i for i in session.get_inputs()}
    latent_dim = int(inputs["z"].shape[1])
    meta = session.get_modelmeta().custom_metadata_map
    classes = json.loads(meta[LABELS_KEY]) if LABEL_INPUT in inputs and LABELS_KEY in meta else None

    def sampler(z: torch.Tensor, label: torch.Tensor | None = None) -> torch.Tensor:
        feeds = {"z": z.detach().float().numpy()}
        if "label" in inputs:
            feeds["label"] = (label if label is not None else torch.full((len(z),), classes[0])).long().numpy()
        return torch.from_numpy(session.run(None, feeds)[0])

    return Generator(kind, sampler, latent_dim, classes)
