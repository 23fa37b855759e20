"""The served models: one onnxruntime session per ONNX file, described in Open Inference Protocol terms."""
from __future__ import annotations

import json
import logging
import threading
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from genloop.io.onnx_runtime import (CLASS_NAMES_KEY, CONDITIONAL_KEY, LABEL_INPUT, LABELS_KEY, open_session,
                                     session_options)
from genloop.serving.settings import ServeSettings, ServingError

log = logging.getLogger("genloop.serving")

PLATFORM = "onnxruntime_onnx"
CPU, CUDA = "CPUExecutionProvider", "CUDAExecutionProvider"

# ONNX tensor element types -> Open Inference Protocol datatypes and numpy dtypes (little endian).
ORT_TO_V2 = {
    "tensor(float)": "FP32", "tensor(double)": "FP64", "tensor(float16)": "FP16",
    "tensor(int8)": "INT8", "tensor(int16)": "INT16", "tensor(int32)": "INT32", "tensor(int64)": "INT64",
    "tensor(uint8)": "UINT8", "tensor(uint16)": "UINT16", "tensor(uint32)": "UINT32", "tensor(uint64)": "UINT64",
    "tensor(bool)": "BOOL",
}
V2_TO_NUMPY = {
    "FP32": np.dtype("<f4"), "FP64": np.dtype("<f8"), "FP16": np.dtype("<f2"),
    "INT8": np.dtype("i1"), "INT16": np.dtype("<i2"), "INT32": np.dtype("<i4"), "INT64": np.dtype("<i8"),
    "UINT8": np.dtype("u1"), "UINT16": np.dtype("<u2"), "UINT32": np.dtype("<u4"), "UINT64": np.dtype("<u8"),
    "BOOL": np.dtype("?"),
}


# What `genloop export` records as the kind of model in the file ("vae", "gan"); absent in hand-made files.
KIND_KEY = "model_kind"


@dataclass(frozen=True)
class TensorSpec:
    name: str
    datatype: str
    shape: tuple[int, ...]  # -1 for a dynamic dimension; shape[0] is the batch dimension

    def metadata(self) -> dict:
        return {"name": self.name, "datatype": self.datatype, "shape": list(self.shape)}


def _dims(shape) -> tuple[int, ...]:
    return tuple(d if isinstance(d, int) and d >= 0 else -1 for d in shape)


INT64_MIN, INT64_MAX = int(np.iinfo(np.int64).min), int(np.iinfo(np.int64).max)


def _cut(text: str, most: int = 60) -> str:
    """``text`` quoted, cut short: metadata can be long."""
    return repr(text) if len(text) <= most else repr(text[:most]) + f"... ({len(text)} characters)"


def class_names_of(props: dict[str, str]) -> dict[int, str]:
    """The classes' names ``genloop export`` wrote (``genloop.class_names``); empty for graphs without them
    (the digits, older exports) or with unreadable ones, which only cost the names, never the model."""
    try:
        raw = json.loads(props.get(CLASS_NAMES_KEY) or "{}")
        return {int(label): str(name) for label, name in raw.items()}
    except (ValueError, AttributeError):
        log.warning("ignoring unreadable %s metadata: %s", CLASS_NAMES_KEY, _cut(props.get(CLASS_NAMES_KEY, "")))
        return {}


def class_label(label: int, names: dict[int, str]) -> str:
    """``label`` with its name when it has one: "2 faces"."""
    return f"{label} {names[label]}" if label in names else str(label)


def trained_labels(path: Path, input_names: tuple[str, ...], props: dict[str, str]) -> tuple[int, ...] | None:
    """The classes a conditional graph was trained on (``genloop.labels``), None for an unconditional one.

    A ``label`` input and the metadata come together: a label input whose allowed values are unknown
    could only be served by passing any integer to the graph, which fails inside onnxruntime.
    """
    has_input = LABEL_INPUT in input_names
    conditional = props.get(CONDITIONAL_KEY, "").strip().lower() == "true"
    if not has_input and not conditional and LABELS_KEY not in props:
        return None
    if not has_input:
        raise ServingError(f"{path}: metadata says the model is conditional ({CONDITIONAL_KEY}, {LABELS_KEY}) "
                           f"but the graph has no {LABEL_INPUT!r} input (its inputs: {list(input_names)})")
    raw = props.get(LABELS_KEY)
    if raw is None:
        raise ServingError(f"{path}: the graph has a {LABEL_INPUT!r} input but no {LABELS_KEY!r} metadata listing "
                           "the trained classes; re-export it with `genloop export`")
    try:
        labels = json.loads(raw)
    except ValueError:
        labels = None
    if (not isinstance(labels, list) or not labels or len(set(labels)) != len(labels)
            or not all(isinstance(v, int) and not isinstance(v, bool) for v in labels)):
        raise ServingError(f"{path}: metadata {LABELS_KEY}={_cut(raw)} is not a JSON list of distinct integers")
    outside = [v for v in labels if not INT64_MIN <= v <= INT64_MAX]
    if outside:  # the label input is INT64: such a class could never be asked for
        value = str(outside[0]) if len(str(outside[0])) <= 40 else str(outside[0])[:37] + "..."
        raise ServingError(f"{path}: metadata {LABELS_KEY} holds {value}, outside the INT64 range "
                           f"of the {LABEL_INPUT!r} input; re-export the model with `genloop export`")
    return tuple(sorted(labels))


def providers_for(settings: ServeSettings) -> list:
    """The execution providers to ask for: CUDA first when asked (or, with auto, when this onnxruntime has it).

    ``cuda`` fails when onnxruntime offers no CUDA provider; ``auto`` then quietly serves on the CPU.
    """
    import onnxruntime as ort

    if settings.providers == "cpu":
        return [CPU]
    available = ort.get_available_providers()
    if CUDA not in available:
        if settings.providers == "auto":
            return [CPU]
        raise ServingError(
            f"--device cuda: onnxruntime {ort.__version__} offers no {CUDA} here (available: {', '.join(available)}). "
            "Install onnxruntime-gpu built for this machine's CUDA (in place of onnxruntime: see docs/serving.md, "
            "\"Serving on a GPU\"), or serve with --device cpu."
        )
    preload = getattr(ort, "preload_dlls", None)  # onnxruntime-gpu >= 1.21: CUDA/cuDNN from pip's nvidia-* wheels
    if preload is not None:
        try:
            preload()
        except Exception as exc:  # the libraries may be on the system path instead; the session says if not
            log.debug("onnxruntime.preload_dlls() failed: %s", exc)
    return [(CUDA, {"device_id": settings.cuda_device_id}), CPU]


class ServedModel:
    """One ONNX file behind one onnxruntime session; inputs and outputs all batched along axis 0."""

    def __init__(self, name: str, version: str, path: Path, session, registry_version: str | None = None):
        self.name, self.version, self.path, self.session = name, version, path, session
        self.registry_version = registry_version  # the MLflow registry version, when served from the registry
        self.inputs = tuple(TensorSpec(i.name, ORT_TO_V2.get(i.type, i.type), _dims(i.shape)) for i in session.get_inputs())
        self.outputs = tuple(TensorSpec(o.name, ORT_TO_V2.get(o.type, o.type), _dims(o.shape)) for o in session.get_outputs())
        for spec in self.inputs:
            if spec.datatype != "FP32" and (spec.name, spec.datatype) != (LABEL_INPUT, "INT64"):
                raise ServingError(f"{path}: input {spec.name!r} is {spec.datatype}; genloop serve handles FP32 inputs "
                                   f"and an INT64 {LABEL_INPUT!r} only")
            if len(spec.shape) < 1 or spec.shape[0] != -1 or -1 in spec.shape[1:]:
                raise ServingError(
                    f"{path}: input {spec.name!r} has shape {list(spec.shape)}; genloop serve needs a dynamic batch "
                    "dimension first and fixed dimensions after it (as `genloop export` writes)"
                )
        for spec in self.outputs:
            if spec.datatype not in V2_TO_NUMPY:
                raise ServingError(f"{path}: output {spec.name!r} has unsupported type {spec.datatype}")
        self.input_names = tuple(s.name for s in self.inputs)
        self.output_names = tuple(s.name for s in self.outputs)
        props = session.get_modelmeta().custom_metadata_map
        self.labels = trained_labels(path, self.input_names, props)
        self.class_names = class_names_of(props) if self.labels is not None else {}
        self.kind = props.get(KIND_KEY) or None
        if not any(s.datatype == "FP32" for s in self.inputs):
            raise ServingError(f"{path}: no FP32 input; genloop serve needs a latent input (`z`)")

    @property
    def conditional(self) -> bool:
        """True for a class-conditional generator: its ``label`` input takes one of ``labels`` per row."""
        return self.labels is not None

    @property
    def latent(self) -> TensorSpec:
        """The latent input (``z``): the first FP32 input."""
        return next(s for s in self.inputs if s.datatype == "FP32")

    @property
    def latent_dim(self) -> int:
        """Width of the latent input (``z``), for the PNG ``generate`` endpoint."""
        return int(np.prod(self.latent.shape[1:], dtype=np.int64))

    def unknown_labels(self, labels: np.ndarray) -> list[int]:
        """The values of ``labels`` this model was not trained on (none for an unconditional model)."""
        if self.labels is None:
            return []
        return sorted(set(np.unique(labels).tolist()) - set(self.labels))

    def metadata(self) -> dict:
        meta = {
            "name": self.name, "versions": [self.version], "platform": PLATFORM,
            "inputs": [s.metadata() for s in self.inputs], "outputs": [s.metadata() for s in self.outputs],
        }
        if self.registry_version is not None:  # served from the MLflow registry
            meta["genloop_registry_version"] = self.registry_version
        if self.labels is not None:  # what the `label` input accepts
            meta["genloop_labels"] = list(self.labels)
        if self.class_names:  # the data's names of those classes
            meta["genloop_class_names"] = {str(k): v for k, v in sorted(self.class_names.items())}
        return meta

    def run(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """One ``session.run`` (thread-safe in onnxruntime); every output keeps the batch dimension first."""
        values = self.session.run(list(self.output_names), feeds)
        return dict(zip(self.output_names, values))

    def warm_up_feeds(self, rows: int) -> dict[str, np.ndarray]:
        """Zero latents and, for a conditional model, its trained labels in turn (any other label may fail)."""
        feeds = {}
        for spec in self.inputs:
            if spec.name == LABEL_INPUT and self.labels is not None:
                feeds[spec.name] = np.resize(np.asarray(self.labels, np.int64), rows)
            else:
                feeds[spec.name] = np.zeros((rows, *spec.shape[1:]), V2_TO_NUMPY[spec.datatype])
        return feeds

    def warm_up(self, batch_sizes: list[int]) -> None:
        for rows in sorted(set(batch_sizes) | {1}):
            out = self.run(self.warm_up_feeds(rows))
            for spec in self.outputs:
                got = out[spec.name]
                if got.ndim != len(spec.shape) or got.shape[0] != rows:
                    raise ServingError(f"{self.path}: warm-up at batch {rows} gave {spec.name!r} of shape {got.shape}, "
                                       f"expected {list(spec.shape)} with batch {rows} first")


class ModelHolder:
    """Loads and warms up every configured model; ready only once the app says its batchers run."""

    def __init__(self, settings: ServeSettings):
        self.settings = settings
        self.models: dict[str, ServedModel] = {}
        self._ready = threading.Event()
        self._lock = threading.Lock()
        self.check()

    def check(self) -> None:
        """Cheap start-up checks (files present, providers available), before anything is loaded."""
        missing = [f"{name}: {path}" for name, path in self.settings.models.items() if not Path(path).is_file()]
        if missing:
            raise ServingError(f"ONNX model file(s) not found ({'; '.join(missing)}); run `genloop export` first "
                               "or point --models at the folder holding them")
        self.providers = providers_for(self.settings)

    @property
    def ready(self) -> bool:
        return self._ready.is_set()

    def session_options(self):
        return session_options(self.settings.intra_op_threads, self.settings.inter_op_threads, spinning=False)

    def build(self, name: str, path: Path, version: str, registry_version: str | None = None) -> ServedModel:
        """A new session on ``path``, warmed up; what a (re)load swaps in. Raises ServingError."""
        try:
            session = open_session(path, self.providers, self.session_options())
        except Exception as exc:  # onnxruntime raises its own types for unreadable files
            raise ServingError(f"{name}: cannot load {path} with onnxruntime: {exc}") from exc
        if self.settings.providers == "cuda" and session.get_providers()[0] != CUDA:
            raise ServingError(
                f"{name}: --device cuda, but onnxruntime fell back to {session.get_providers()} "
                "(the CUDA/cuDNN libraries did not load; see onnxruntime's CUDA requirements)"
            )
        model = ServedModel(name, version, Path(path), session, registry_version)
        model.warm_up(self.settings.warmup_rows)
        log.info("loaded %s v%s from %s on %s", name, version, path, session.get_providers()[0])
        return model

    def load(self) -> None:
        """Create the sessions and warm them up; idempotent, so the CLI may call it before uvicorn starts."""
        with self._lock:
            if self.models:  # loaded before (by the CLI, ahead of uvicorn)
                return
            models = {}
            for name, path in self.settings.models.items():
                version = self.settings.versions.get(name, self.settings.model_version)
                registry_version = version if name in self.settings.versions else None
                models[name] = self.build(name, Path(path), version, registry_version)
            self.models = models

    def put(self, model: ServedModel) -> None:
        """Serve ``model`` under its name from now on (a new dict, so readers never see it half-changed)."""
        with self._lock:
            self.models = {**self.models, model.name: model}

    def drop(self, name: str) -> None:
        with self._lock:
            self.models = {n: m for n, m in self.models.items() if n != name}

    def mark_ready(self) -> None:
        """Called once the models are loaded, warmed up and their batchers run."""
        if not self.models:
            raise ServingError("mark_ready() before load()")
        self._ready.set()

    def mark_not_ready(self) -> None:
        self._ready.clear()

    def get(self, name: str) -> ServedModel | None:
        return self.models.get(name)
