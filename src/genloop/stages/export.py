"""Stage 6, deploy (export): the VAE decoder and GAN generator as ONNX graphs, checked and registered.

A graph whose ONNX Runtime output differs from PyTorch by more than the tolerance is never
published: the stage fails and ``models/`` keeps what it had. Each file carries its lineage in
``metadata_props`` (data hash, commit, run, params); each registered version the same as tags, plus
its evaluation figures, and it becomes ``champion`` only through the gate in genloop.io.promotion.
An export whose graph and weights equal the latest (or champion) version's registers nothing new.
"""
from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from genloop.io import atomic, encoder_onnx, promotion, tracking
from genloop.core import privacy
from genloop.io.checkpoints import checkpoint_shape, load_classes, load_sampler, read_checkpoint
from genloop.config import ExportConfig, Params
from genloop.paths import ONNX_FILES, ProjectPaths
from genloop.io.datasets import class_names, read_run_id
from genloop.errors import GenloopError
from genloop.io.onnx_runtime import (CLASS_NAMES_KEY, CONDITIONAL_KEY, LABEL_INPUT as LABEL_NAME, LABELS_KEY,
                                     open_session, session_options)
from genloop.config import sampling_seed

INPUT_NAME, OUTPUT_NAME = "z", "image"  # a conditional graph's label input and metadata: genloop.io.onnx_runtime
SHA256_TAG = "genloop.onnx_sha256"  # model-version tag: onnx_content_sha256 of its graph

log = logging.getLogger(__name__)


class ParityError(GenloopError, RuntimeError):
    pass


@dataclass(frozen=True)
class ExportedModel:
    kind: str
    path: Path
    max_abs_diff: dict[int, float]
    registered_name: str | None
    registered_version: str | None
    promotion: promotion.PromotionDecision | None = None
    unchanged_as: str | None = None  # the version with the same graph and weights; nothing new was registered

    def registration(self) -> str:
        """One line on what the registry got, for logs and the CLI."""
        if self.registered_name is None:
            return "not registered"
        if self.unchanged_as is not None:
            return f"unchanged, not registered: same bytes as {self.registered_name} v{self.unchanged_as}"
        return f"registered {self.registered_name} v{self.registered_version}"


@dataclass(frozen=True)
class ExportResult:
    models: dict[str, ExportedModel]


def export_onnx(module: torch.nn.Module, latent_dim: int, target: Path, conditional: bool = False) -> None:
    """Dynamo export with a dynamic batch dimension, as one self-contained file; a ``conditional``
    module's ``forward(z, label)`` becomes the inputs ``z`` and ``label`` (int64), batch shared."""
    import logging
    import warnings

    import onnx

    # The exporter warns about torchvision ops it cannot register; genloop uses none of them.
    logging.getLogger("torch.onnx").setLevel(logging.ERROR)
    example: tuple[torch.Tensor, ...] = (torch.randn(8, latent_dim),)
    batch = torch.export.Dim("batch", min=1, max=4096)
    names = [INPUT_NAME]
    if conditional:
        example, names = (*example, torch.zeros(8, dtype=torch.int64)), [INPUT_NAME, LABEL_NAME]
    with atomic.atomic_path(target) as tmp, warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        torch.onnx.export(
            module, example, str(tmp), dynamo=True, external_data=False,
            input_names=names, output_names=[OUTPUT_NAME],
            dynamic_shapes={name: {0: batch} for name in names}, verbose=False,
        )
        onnx.checker.check_model(str(tmp), full_check=True)


def session(path: Path, providers: list[str] | None = None, threads: int = 0):
    return open_session(path, providers, session_options(intra_op_threads=threads))


EVAL_SPLITS = ("train", "val", "test")  # what genloop.stages.evaluate scores against


def evaluation_data_hash(params: Params, paths: ProjectPaths) -> str:
    """What makes two evaluations comparable: the clean splits evaluate reads, its settings and seed."""
    import hashlib

    digest = hashlib.sha256()
    digest.update(json.dumps({"seed": params.seed, "evaluate": params.evaluate.model_dump(mode="json")},
                             sort_keys=True).encode())
    for split in EVAL_SPLITS:
        file = paths.clean / f"{split}.npz"
        digest.update(split.encode())
        digest.update(file.read_bytes() if file.exists() else b"missing")
    return digest.hexdigest()


def evaluation_metrics(paths: ProjectPaths, kind: str) -> dict[str, float]:
    """This model's figures in reports/metrics.json; empty when evaluate has not run."""
    if not paths.metrics.exists():
        return {}
    report = json.loads(paths.metrics.read_text())
    return {k: float(v) for k, v in report.get(kind, {}).items() if isinstance(v, (int, float))}


def lineage_metadata(kind: str, latent_dim: int, params: Params, paths: ProjectPaths) -> dict[str, str]:
    """Written into the ONNX file and onto the registry version, so either one says where it came from."""
    try:
        run_id = read_run_id(paths, kind)
    except FileNotFoundError:
        run_id = "unknown"
    return {
        **tracking.lineage_tags(paths), "run_id": run_id, "model_kind": kind, "latent_dim": str(latent_dim),
        **privacy_tags(paths.train(kind) / "model.pt"),
        promotion.IMAGE_SHAPE_TAG: promotion.shape_tag(checkpoint_shape(paths.train(kind) / "model.pt")),
        promotion.EVAL_HASH_TAG: evaluation_data_hash(params, paths),
        "params": json.dumps(params.model_dump(mode="json"), sort_keys=True, separators=(",", ":")),
    }


def privacy_tags(checkpoint: Path) -> dict[str, str]:
    """``genloop.epsilon`` (and ``genloop.delta``) of the trained model: its spent differential-privacy
    budget, or ``inf`` when it was not trained privately; the promotion gate's max_epsilon reads it."""
    spent = privacy.spent(read_checkpoint(checkpoint))
    if not spent:
        return {tracking.EPSILON_TAG: "inf"}
    return {tracking.EPSILON_TAG: repr(spent[privacy.EPSILON]), tracking.DELTA_TAG: repr(spent[privacy.DELTA])}


def write_metadata(onnx_path: Path, metadata: dict[str, str]) -> None:
    """Set ModelProto.metadata_props (replacing keys already there), atomically."""
    import onnx

    model = onnx.load(str(onnx_path))
    props = {p.key: p.value for p in model.metadata_props} | metadata
    del model.metadata_props[:]
    for key, value in props.items():
        model.metadata_props.add(key=key, value=value)
    atomic.write_bytes(onnx_path, model.SerializeToString())


def onnx_content_sha256(onnx_path: Path) -> str:
    """sha256 of the graph and weights only: without ``metadata_props`` (run id, commit, params) and the
    exporter's per-node stack traces, so re-exporting the same weights gives the same hash."""
    import hashlib

    import onnx

    model = onnx.load(str(onnx_path))
    del model.metadata_props[:]
    for node in model.graph.node:
        del node.metadata_props[:]
    for function in model.functions:
        del function.metadata_props[:]
        for node in function.node:
            del node.metadata_props[:]
    return hashlib.sha256(model.SerializeToString(deterministic=True)).hexdigest()


def read_metadata(onnx_path: Path) -> dict[str, str]:
    import onnx

    return {p.key: p.value for p in onnx.load(str(onnx_path), load_external_data=False).metadata_props}


@torch.no_grad()
def parity(module: torch.nn.Module, latent_dim: int, onnx_path: Path, batch_sizes: list[int], seed: int,
           classes: list[int] | None = None) -> dict[int, float]:
    """Max |ONNX Runtime - PyTorch| per batch size, on the same latent vectors (and, for a conditional
    model, the same labels drawn from ``classes``)."""
    sess = session(onnx_path)
    gen = torch.Generator().manual_seed(seed)
    diffs = {}
    for n in sorted({*batch_sizes, 7}):
        z = torch.randn(n, latent_dim, generator=gen)
        if classes is None:
            expected, feeds = module(z).numpy(), {INPUT_NAME: z.numpy()}
        else:
            label = torch.tensor(classes)[torch.randint(len(classes), (n,), generator=gen)]
            expected, feeds = module(z, label).numpy(), {INPUT_NAME: z.numpy(), LABEL_NAME: label.numpy()}
        got = sess.run([OUTPUT_NAME], feeds)[0]
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


def class_name_metadata(classes: list[int], paths: ProjectPaths) -> dict[str, str]:
    """The trained classes' names from the manifest, so a server and its clients say "faces", not 2;
    nothing when every class is named by its value (the digits)."""
    names = class_names(paths)
    named = {str(c): names.get(c, str(c)) for c in classes}
    if all(name == label for label, name in named.items()):
        return {}
    return {CLASS_NAMES_KEY: json.dumps(named, separators=(",", ":"), ensure_ascii=False)}


def stage_model(kind: str, params: Params, paths: ProjectPaths) -> _Staged:
    """Export beside the target and check parity; nothing is published yet."""
    config: ExportConfig = params.export
    module, latent_dim = load_sampler(paths.train(kind) / "model.pt")
    classes = load_classes(paths.train(kind) / "model.pt")
    staged = paths.onnx(kind).with_name(f".{paths.onnx(kind).name}.staged")
    export_onnx(module, latent_dim, staged, conditional=classes is not None)
    conditioning = {} if classes is None else {LABELS_KEY: json.dumps(classes, separators=(",", ":")),
                                               CONDITIONAL_KEY: "true", **class_name_metadata(classes, paths)}
    # before parity: check what ships
    write_metadata(staged, {**lineage_metadata(kind, latent_dim, params, paths), **conditioning})
    diffs = parity(module, latent_dim, staged, config.parity_batch_sizes, params.seed, classes)
    worst = max(diffs.values())
    if worst > config.parity_tolerance:
        raise ParityError(
            f"{kind}: ONNX Runtime differs from PyTorch by {worst:.2e} "
            f"(> export.parity_tolerance={config.parity_tolerance:.0e}); per batch size: {diffs}"
        )
    return _Staged(kind, module, latent_dim, staged, paths.onnx(kind), diffs)


def same_bytes_version(client, name: str, sha256: str) -> str | None:
    """The latest or the champion version of ``name`` whose graph and weights hash to ``sha256``, if any."""
    versions = client.search_model_versions(f"name='{name}'")
    if not versions:
        return None
    latest = client.get_model_version(name, str(max(int(v.version) for v in versions)))
    for version in (latest, promotion.current_champion(client, name)):
        if version is not None and version.tags.get(SHA256_TAG) == sha256:
            return str(version.version)
    return None


def register_model(kind: str, name: str, item: _Staged, params: Params, paths: ProjectPaths) -> tuple[str, bool]:
    """Register the published graph as a new version of ``name`` and return (version, True); when the latest
    or champion version already holds the same graph and weights, register nothing and return (it, False).

    So an export of unchanged weights, or one retried after it registered a model, adds no duplicate.
    """
    sha256 = onnx_content_sha256(item.target)
    same = same_bytes_version(tracking.registry_client(params.mlflow, paths), name, sha256)
    if same is not None:
        return same, False
    return _log_and_register(kind, name, item.target, item.module, item.latent_dim, item.diffs, params, paths,
                             sha256), True


def _gated(name: str, version: str) -> bool:
    """Whether the promotion gate has already decided on this version (a retried export may not have)."""
    tags = tracking.version_tags_of(name, version)
    return f"{promotion.DECISION_PREFIX}decision" in tags or f"{promotion.DECISION_PREFIX}forced" in tags


def _log_and_register(kind: str, name: str, onnx_path: Path, module: torch.nn.Module, latent_dim: int,
                      diffs: dict[int, float], params: Params, paths: ProjectPaths, sha256: str) -> str:
    tracking.setup(params.mlflow, paths)
    run_id = read_run_id(paths, kind)
    z = np.random.default_rng(params.seed).standard_normal((2, latent_dim)).astype(np.float32)
    lineage = read_metadata(onnx_path)
    label = np.asarray(json.loads(lineage[LABELS_KEY])[:1] * 2, dtype=np.int64) if LABELS_KEY in lineage else None
    with torch.no_grad():
        out = (module(torch.from_numpy(z)) if label is None
               else module(torch.from_numpy(z), torch.from_numpy(label))).numpy()
    version, model_id = tracking.log_onnx_model(run_id, onnx_path, name,
                                                z if label is None else {INPUT_NAME: z, LABEL_NAME: label}, out,
                                                {"onnx_max_abs_diff": max(diffs.values())})
    metrics = evaluation_metrics(paths, kind)
    tags = tracking.version_tags(
        {**lineage, "run_id": run_id, "onnx_max_abs_diff": f"{max(diffs.values()):.3e}",
         promotion.PARITY_TAG: "true", **promotion.metric_tags(metrics)},
        keep_metrics=[params.export.promotion.metric])
    tags[promotion.CONDITIONAL_TAG] = str(label is not None).lower()
    tags[SHA256_TAG] = sha256  # last: a version carrying the hash carries every other tag too
    tracking.log_model_details(run_id, model_id, params.model_dump(mode="json"), metrics)
    tracking.set_version_tags(name, version, tags)
    return version


def champion_rescorer(params: Params, paths: ProjectPaths) -> promotion.Rescorer:
    """Score a registered version on today's evaluation data: samples from its ONNX file, as evaluate draws them."""

    def rescore(name: str, version: str) -> dict[str, float]:
        import tempfile

        from genloop.evaluation.scoring import score_samples

        with tempfile.TemporaryDirectory(prefix="genloop-rescore-") as tmp:
            onnx_file = promotion.download_onnx(f"models:/{name}/{version}", Path(tmp))
            images = onnx_samples(onnx_file, _evaluation_sample_count(paths), sampling_seed(params.seed),
                                  _training_labels(paths))
        try:
            return dict(score_samples(params, paths, images))
        except (ValueError, RuntimeError) as exc:  # e.g. a champion drawing another image size
            raise promotion.PromotionError(f"scoring its samples failed: {exc}") from None

    return rescore


def _evaluation_sample_count(paths: ProjectPaths) -> int:
    """As many samples as evaluate draws: the held-out (val + test) images."""
    from genloop.io.datasets import load_split

    return sum(len(load_split(paths, split)[0]) for split in ("val", "test"))


def _training_labels(paths: ProjectPaths) -> np.ndarray:
    from genloop.io.datasets import load_split

    return load_split(paths, "train")[1]


def onnx_samples(onnx_path: Path, n: int, seed: int, train_labels: np.ndarray | None = None) -> np.ndarray:
    """``n`` images in [0, 1] from the same latent vectors genloop.stages.evaluate.sample draws for ``seed``; a
    conditional graph also gets the labels it draws (from ``train_labels``' class distribution)."""
    from genloop.core.label_fidelity import draw_labels

    sess = session(onnx_path)
    inputs = {i.name: i for i in sess.get_inputs()}
    latent_dim = int(inputs[INPUT_NAME].shape[1])
    z = torch.randn(n, latent_dim, generator=torch.Generator().manual_seed(seed)).numpy()
    feeds = {INPUT_NAME: z}
    if LABEL_NAME in inputs:
        if train_labels is None:
            raise ValueError(f"{onnx_path} is a conditional model: sampling it needs the training labels")
        feeds[LABEL_NAME] = draw_labels(train_labels, n, seed).numpy()
    return np.clip(sess.run([OUTPUT_NAME], feeds)[0], 0.0, 1.0)


def export(params: Params, paths: ProjectPaths, register: bool | None = None) -> ExportResult:
    """Publish both graphs only once both passed parity, so models/ never mixes old and new."""
    register = params.export.register_models if register is None else register
    if register:  # before anything is written: a name holding another kind's versions is refused
        client = tracking.registry_client(params.mlflow, paths)
        for kind in ONNX_FILES:
            conditional = load_classes(paths.train(kind) / "model.pt") is not None
            promotion.check_one_interface(client, params.export.model_name(kind), kind, conditional,
                                          f"export.{kind}_model_name")
    staged: list[_Staged] = []
    encoder = paths.models / encoder_onnx.ENCODER_FILE
    try:
        for kind in ONNX_FILES:
            staged.append(stage_model(kind, params, paths))
        encoder_diffs = stage_encoder(params, paths, _staged_path(encoder))
        for item in staged:
            item.staged.replace(item.target)
        _staged_path(encoder).replace(encoder)
    finally:  # covers a model that failed before it was staged, too
        for kind in ONNX_FILES:
            paths.onnx(kind).with_name(f".{paths.onnx(kind).name}.staged").unlink(missing_ok=True)
        _staged_path(encoder).unlink(missing_ok=True)

    models: dict[str, ExportedModel] = {}
    for item in staged:
        name = version = decision = unchanged_as = None
        if register:
            name = params.export.model_name(item.kind)
            version, new = register_model(item.kind, name, item, params, paths)
            unchanged_as = None if new else version
            if new or not _gated(name, version):
                decision = promote_if_better(item.kind, name, version, params, paths)
        models[item.kind] = ExportedModel(item.kind, item.target, item.diffs, name, version, decision, unchanged_as)
        if register and item.kind == "vae":  # the encoder travels with its decoder's version
            encoder_onnx.log_with_version(read_run_id(paths, "vae"), encoder, name, version, encoder_diffs)
        log.info("%s: %s", item.kind, models[item.kind].registration())
    atomic.write_json(paths.models / "export.json", {
        kind: {"path": str(m.path.relative_to(paths.root)), "max_abs_diff": {str(k): v for k, v in m.max_abs_diff.items()},
               "registered_name": m.registered_name, "registered_version": m.registered_version,
               "unchanged_as": m.unchanged_as,
               "promotion": m.promotion.record() if m.promotion else None}
        for kind, m in models.items()
    })
    from genloop.io import deploy, triton

    triton.write_exported(params, paths, models)  # models/triton: the same graphs as a Triton model repository
    triton.write_encoder(params, paths, encoder, models["vae"].registered_version)
    moved = [m.registered_name for m in models.values() if m.promotion is not None and m.promotion.promoted]
    deploy.notify_servers(params.deploy, moved)  # only servers in deploy.servers; failures are warnings
    return ExportResult(models)


def _staged_path(target: Path) -> Path:
    return target.with_name(f".{target.name}.staged")


def stage_encoder(params: Params, paths: ProjectPaths, staged: Path) -> dict[int, float]:
    """The VAE encoder (genloop.io.encoder_onnx) exported to ``staged``, parity-checked at the decoder's
    batch sizes (and 7) against the same tolerance, with the decoder's lineage metadata."""
    checkpoint = paths.train("vae") / "model.pt"
    diffs = encoder_onnx.stage(checkpoint, staged, params.export.parity_batch_sizes, params.export.parity_tolerance,
                               params.seed)
    latent_dim = int(read_checkpoint(checkpoint)["hparams"]["latent_dim"])
    write_metadata(staged, {**lineage_metadata("vae", latent_dim, params, paths),
                            **encoder_onnx.conditioning(checkpoint)})
    return diffs


def promote_if_better(kind: str, name: str, version: str, params: Params, paths: ProjectPaths
                      ) -> promotion.PromotionDecision:
    """The promotion gate on a freshly registered version (both the Prefect flow and `dvc repro` pass here)."""
    return promotion.gate(tracking.registry_client(params.mlflow, paths), name, version, params.export.promotion,
                          evaluation_metrics(paths, kind), evaluation_data_hash(params, paths),
                          champion_rescorer(params, paths))
