"""A Triton Inference Server model repository from the exported ONNX graphs.

``models/triton/<name>/1/model.onnx`` and ``models/triton/<name>/config.pbtxt``: the inputs and
outputs (names, types, dims without the batch dimension) read from the graph itself, the batch
dimension given to Triton as ``max_batch_size``, dynamic batching on, and an instance group of
``KIND_AUTO`` (on the GPUs when Triton has them, else on the CPU). Serve it with
``tritonserver --model-repository models/triton``.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from genloop.io import atomic
from genloop.config import TritonConfig

PLATFORM = "onnxruntime_onnx"
VERSION = "1"  # Triton's version folder; the registry version is in the config's parameters

# onnx.TensorProto element types -> Triton DataType names
ONNX_TO_TRITON = {
    1: "TYPE_FP32", 2: "TYPE_UINT8", 3: "TYPE_INT8", 4: "TYPE_UINT16", 5: "TYPE_INT16", 6: "TYPE_INT32",
    7: "TYPE_INT64", 9: "TYPE_BOOL", 10: "TYPE_FP16", 11: "TYPE_FP64", 12: "TYPE_UINT32", 13: "TYPE_UINT64",
    16: "TYPE_BF16",
}


class TritonExportError(ValueError):
    pass


@dataclass(frozen=True)
class TritonTensor:
    name: str
    data_type: str
    dims: tuple[int, ...]  # without the batch dimension; -1 for a variable one


def graph_tensors(onnx_path: Path) -> tuple[list[TritonTensor], list[TritonTensor]]:
    """The graph's inputs and outputs in Triton terms; the first dimension of each must be the batch."""
    import onnx

    graph = onnx.load(str(onnx_path), load_external_data=False).graph
    initializers = {i.name for i in graph.initializer}

    def convert(value) -> TritonTensor:
        tensor = value.type.tensor_type
        data_type = ONNX_TO_TRITON.get(tensor.elem_type)
        if data_type is None:
            raise TritonExportError(f"{onnx_path}: {value.name!r} has ONNX element type {tensor.elem_type}, "
                                    "which Triton does not take")
        dims = [d.dim_value if d.HasField("dim_value") else -1 for d in tensor.shape.dim]
        if not dims or dims[0] != -1:
            raise TritonExportError(f"{onnx_path}: {value.name!r} has shape {dims}; a dynamic batch dimension "
                                    "must come first (as `genloop export` writes)")
        return TritonTensor(value.name, data_type, tuple(dims[1:]))

    inputs = [convert(v) for v in graph.input if v.name not in initializers]
    outputs = [convert(v) for v in graph.output]
    return inputs, outputs


def model_config(name: str, inputs: list[TritonTensor], outputs: list[TritonTensor], config: TritonConfig,
                 parameters: dict[str, str] | None = None) -> str:
    """config.pbtxt text (protobuf text format of Triton's inference.ModelConfig)."""
    def tensor(t: TritonTensor) -> str:
        # A per-row scalar ([-1] in the graph, e.g. a class label) has no dims left once the batch
        # dimension is taken off; Triton wants it as [ 1 ] reshaped to a scalar.
        dims = ", ".join(str(d) for d in t.dims) if t.dims else "1"
        reshape = "" if t.dims else "\n    reshape: { shape: [ ] }"
        return (f'  {{\n    name: {json.dumps(t.name)}\n    data_type: {t.data_type}\n'
                f'    dims: [ {dims} ]{reshape}\n  }}')

    def tensors(items: list[TritonTensor]) -> str:
        return ",\n".join(tensor(t) for t in items)

    params = "".join(f'parameters {{\n  key: {json.dumps(k)}\n  value: {{ string_value: {json.dumps(v)} }}\n}}\n'
                     for k, v in sorted((parameters or {}).items()))
    return (
        f"name: {json.dumps(name)}\n"
        f'platform: "{PLATFORM}"\n'
        f"max_batch_size: {config.max_batch_size}\n"
        f"input [\n{tensors(inputs)}\n]\n"
        f"output [\n{tensors(outputs)}\n]\n"
        f"dynamic_batching {{\n  max_queue_delay_microseconds: {config.max_queue_delay_microseconds}\n}}\n"
        f"instance_group [\n  {{\n    count: {config.instance_count}\n    kind: {config.instance_kind}\n  }}\n]\n"
        f"{params}"
    )


def write_model(repository: Path, name: str, onnx_path: Path, config: TritonConfig,
                parameters: dict[str, str] | None = None) -> Path:
    """``repository/name`` (config.pbtxt and 1/model.onnx), replaced as a whole; returns that folder."""
    if not name or "/" in name or name.startswith("."):
        raise TritonExportError(f"model name {name!r} cannot be a Triton model folder")
    inputs, outputs = graph_tensors(onnx_path)
    with atomic.atomic_dir(repository / name) as tmp:
        (tmp / VERSION).mkdir()
        (tmp / VERSION / "model.onnx").write_bytes(Path(onnx_path).read_bytes())
        (tmp / "config.pbtxt").write_text(model_config(name, inputs, outputs, config, parameters))
    return repository / name


def write_repository(repository: Path, models: dict[str, Path], config: TritonConfig,
                     parameters: dict[str, dict[str, str]] | None = None) -> dict[str, Path]:
    """One Triton model per ``name -> ONNX file``; models of other names already there are left alone."""
    return {name: write_model(repository, name, path, config, (parameters or {}).get(name))
            for name, path in models.items()}


def write_exported(params, paths, exported: dict) -> dict[str, Path]:
    """The repository for `genloop export`'s models (``kind -> ExportedModel``) under their registry names."""
    config: TritonConfig = params.deploy.triton
    if not config.write:
        return {}
    models = {params.export.model_name(kind): m.path for kind, m in exported.items()}
    parameters = {params.export.model_name(kind): {"genloop_registry_version": m.registered_version}
                  for kind, m in exported.items() if m.registered_version is not None}
    return write_repository(paths.models / "triton", models, config, parameters)


ENCODER_SUFFIX = "-encoder"  # the VAE encoder's Triton model: "<the VAE's registered name>-encoder"


def write_encoder(params, paths, encoder: Path, registered_version: str | None) -> Path | None:
    """The VAE encoder (models/vae_encoder.onnx) as one more Triton model beside its decoder."""
    config: TritonConfig = params.deploy.triton
    if not config.write or not Path(encoder).exists():
        return None
    name = params.export.model_name("vae") + ENCODER_SUFFIX
    parameters = {"genloop_registry_version": registered_version} if registered_version is not None else None
    return write_model(paths.models / "triton", name, encoder, config, parameters)
