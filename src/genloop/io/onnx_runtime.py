"""onnxruntime sessions, built one way for export's parity checks, the promotion gate's re-scoring and
serving, so a threading or logging choice is made in one place."""
from __future__ import annotations

from pathlib import Path
from typing import Any

# What a class-conditional graph carries, written by `genloop export` and read by serving, synthesize and
# explain: a second input LABEL_INPUT (INT64, [batch]) of class values, and metadata LABELS_KEY (JSON list of
# the trained classes), CONDITIONAL_KEY ("true") and, when the data names its classes, CLASS_NAMES_KEY
# (JSON {label: name}).
LABEL_INPUT = "label"
LABELS_KEY, CONDITIONAL_KEY, CLASS_NAMES_KEY = "genloop.labels", "genloop.conditional", "genloop.class_names"


def session_options(intra_op_threads: int = 0, inter_op_threads: int = 1, spinning: bool = True) -> Any:
    """``intra_op_threads`` 0 lets onnxruntime use one per core. ``spinning=False`` stops idle worker
    threads from busy-waiting, which a server wants (they would take CPU from the event loop parsing
    requests on the same cores; benchmarks/serve_load.py compares both)."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = intra_op_threads
    options.inter_op_num_threads = inter_op_threads
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.log_severity_level = 3
    if not spinning:
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        options.add_session_config_entry("session.inter_op.allow_spinning", "0")
    return options


def open_session(path: Path, providers: list[str] | None = None, options: Any | None = None) -> Any:
    """An ``InferenceSession`` on ``path`` (CPU unless ``providers`` says otherwise)."""
    import onnxruntime as ort

    return ort.InferenceSession(str(path), options if options is not None else session_options(),
                                providers=providers or ["CPUExecutionProvider"])
