"""Open Inference Protocol (KServe V2) inference requests and responses, JSON and binary tensors.

A request body is a JSON object, optionally followed by raw tensor bytes (the ``binary_tensor_data``
extension): the ``Inference-Header-Content-Length`` header then says how long the JSON part is and
each binary input says its ``binary_data_size``. Outputs come back as JSON ``data`` unless the
request asks for binary (``binary_data_output`` on the request, or ``binary_data`` on an output).
Every problem with a request is an ``ApiError`` whose message says what to change.
"""
from __future__ import annotations

import json
import math
import zlib
from dataclasses import dataclass

import numpy as np

from genloop.serving.sessions import INT64_MAX, INT64_MIN, LABEL_INPUT, V2_TO_NUMPY, ServedModel, TensorSpec

HEADER_LENGTH = "Inference-Header-Content-Length"
FP32_MAX = float(np.finfo(np.float32).max)
MAX_NESTING = 32

try:  # orjson writes numpy arrays directly (shortest round-trip FP32 text); json is the fallback
    import orjson

    def dumps(obj) -> bytes:
        return orjson.dumps(obj, option=orjson.OPT_SERIALIZE_NUMPY)
except ImportError:  # pragma: no cover - orjson comes with prefect and mlflow
    orjson = None

    def dumps(obj) -> bytes:
        return json.dumps(obj, default=lambda a: a.tolist(), separators=(",", ":")).encode()


class ApiError(Exception):
    """A request the server refuses: HTTP ``status`` and a message for ``{"error": message}``."""

    def __init__(self, status: int, message: str, headers: dict[str, str] | None = None):
        super().__init__(message)
        self.status, self.message, self.headers = status, message, headers


def _reject_constant(name: str):
    raise ApiError(400, f"{name} is not a JSON number: tensor data must be finite numbers (no NaN or Infinity)")


def parse_json(raw: bytes) -> object:
    try:
        return json.loads(raw, parse_constant=_reject_constant)
    except ApiError:
        raise
    except (UnicodeDecodeError, ValueError) as exc:
        raise ApiError(400, f"malformed JSON in the request body: {exc}") from None
    except RecursionError:
        raise ApiError(400, "malformed JSON in the request body: nested too deeply") from None


def decompress(body: bytes, encoding: str, limit: int) -> bytes:
    """Undo ``Content-Encoding: gzip|deflate`` (as tritonclient sends them), never past ``limit`` bytes."""
    encoding = encoding.strip().lower()
    if encoding in ("", "identity"):
        return body
    if encoding not in ("gzip", "deflate"):
        raise ApiError(415, f"Content-Encoding {encoding!r} is not supported; use gzip, deflate or none")
    inflater = zlib.decompressobj(wbits=47)  # 32 + 15: zlib or gzip header, detected
    try:
        out = inflater.decompress(body, limit + 1)
    except zlib.error as exc:
        raise ApiError(400, f"request body is not valid {encoding} data: {exc}") from None
    if len(out) > limit or inflater.unconsumed_tail:
        raise ApiError(413, f"request body is larger than {limit} bytes once decompressed")
    if not inflater.eof:
        raise ApiError(400, f"request body is truncated {encoding} data")
    return out


@dataclass(frozen=True)
class InferRequest:
    id: str | None
    feeds: dict[str, np.ndarray]
    rows: int
    outputs: tuple[tuple[str, bool], ...]  # (output name, as binary)


def _is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _flatten(data: list, out: list, depth: int = 0) -> None:
    if depth > MAX_NESTING:
        raise ApiError(400, "tensor data nested too deeply")
    for item in data:
        if isinstance(item, list):
            _flatten(item, out, depth + 1)
        else:
            out.append(item)


def _json_tensor(name: str, data, count: int, datatype: str) -> np.ndarray:
    if not isinstance(data, list):
        raise ApiError(400, f"input {name!r}: 'data' must be a list of numbers (row-major)")
    flat = data
    if any(isinstance(item, list) for item in data):
        flat = []
        _flatten(data, flat)
    if len(flat) != count:
        raise ApiError(400, f"input {name!r}: 'data' has {len(flat)} values but 'shape' needs {count}")
    if datatype == "INT64":
        return _json_int64(name, flat)
    if not all(type(v) is float or type(v) is int for v in flat):
        bad = next(v for v in flat if not (type(v) is float or type(v) is int))
        raise ApiError(400, f"input {name!r}: 'data' must hold only numbers for FP32, found {_json_text(bad)}")
    try:
        values = np.asarray(flat, dtype=np.float64)
    except OverflowError:
        raise ApiError(400, f"input {name!r}: a value is too large for FP32") from None
    if values.size and np.abs(values).max() > FP32_MAX:
        raise ApiError(400, f"input {name!r}: a value is too large for FP32 (|x| > {FP32_MAX:.4g})")
    return values.astype(np.float32)


def _json_int64(name: str, flat: list) -> np.ndarray:
    bad = [v for v in flat if type(v) is not int][:1]  # a list: JSON null (None) is a bad value too
    if bad:
        raise ApiError(400, f"input {name!r}: 'data' must hold only integers for INT64, found {_json_text(bad[0])}")
    if flat and not INT64_MIN <= min(flat) <= max(flat) <= INT64_MAX:
        raise ApiError(400, f"input {name!r}: a value is outside the INT64 range")
    return np.asarray(flat, dtype=np.int64)


def _json_text(value) -> str:
    """A value as the client wrote it (``null``, ``true``, ``"7"``), cut short."""
    text = json.dumps(value) if isinstance(value, (str, bool, type(None), int, float)) else type(value).__name__
    return text if len(text) <= 40 else text[:37] + "..."


def _shown(values: list[int], most: int = 10) -> str:
    """A list of offending values, cut short so a huge bad request gives a short message."""
    if len(values) <= most:
        return str(values)
    return "[" + ", ".join(map(str, values[:most])) + f", ... ({len(values) - most} more)]"


def parse_infer_request(body: bytes, header_length: str | None, model: ServedModel, max_rows: int) -> InferRequest:
    """Check a V2 inference request against ``model``'s inputs and outputs; the tensors as numpy arrays."""
    body, binary = _split_binary(body, header_length)
    payload = parse_json(body)
    if not isinstance(payload, dict):
        raise ApiError(400, "the request body must be a JSON object with an 'inputs' list")
    request_id, binary_default = _request_options(payload)
    feeds, rows = _parse_inputs(payload.get("inputs"), binary, model, max_rows)
    wanted = _parse_outputs(payload.get("outputs"), model, binary_default)
    return InferRequest(request_id, feeds, rows, wanted)


def _split_binary(body: bytes, header_length: str | None) -> tuple[bytes, bytes]:
    """(JSON part, binary tensor section) of a body, as ``Inference-Header-Content-Length`` divides it."""
    if header_length is None:
        return body, b""
    # int() would also take "2_00", "+200", " 200 " and non-ASCII digits: a length is plain ASCII digits.
    if not (header_length.isascii() and header_length.isdigit()):
        raise ApiError(400, f"{HEADER_LENGTH} must be an integer (ASCII digits only), got {header_length!r}")
    json_size = int(header_length)
    if not 0 <= json_size <= len(body):
        raise ApiError(400, f"{HEADER_LENGTH} {json_size} is outside the body of {len(body)} bytes")
    return body[:json_size], body[json_size:]


def _request_options(payload: dict) -> tuple[str | None, bool]:
    """The request's ``id`` and whether outputs are binary unless an output says otherwise."""
    request_id = payload.get("id")
    if request_id is not None and not isinstance(request_id, str):
        raise ApiError(400, "'id' must be a string")
    parameters = payload.get("parameters") or {}
    if not isinstance(parameters, dict):
        raise ApiError(400, "'parameters' must be an object")
    binary_default = parameters.get("binary_data_output", False)
    if not isinstance(binary_default, bool):
        raise ApiError(400, "parameters.binary_data_output must be true or false")
    return request_id, binary_default


def _parse_inputs(inputs, binary: bytes, model: ServedModel, max_rows: int) -> tuple[dict[str, np.ndarray], int]:
    """Every input of ``model`` as an array, all with the same batch size; the binary section used up exactly."""
    if not isinstance(inputs, list) or not inputs:
        raise ApiError(400, "'inputs' must be a non-empty list of tensors {name, shape, datatype, data}")
    specs = {s.name: s for s in model.inputs}
    feeds: dict[str, np.ndarray] = {}
    rows: int | None = None
    first: str | None = None  # the input that set `rows`
    offset = 0
    for tensor in inputs:
        name, spec = _input_spec(tensor, specs, feeds, model)
        shape = _input_shape(name, tensor, spec, max_rows)
        if rows is not None and shape[0] != rows:
            raise ApiError(400, f"input {name!r}: batch size {shape[0]} (shape[0]) differs from input {first!r}'s "
                                f"{rows}; every input needs one row per sample")
        rows, first = shape[0], first or name
        array, offset = _input_values(name, tensor, spec, math.prod(shape), binary, offset)
        _check_values(name, array, model)
        feeds[name] = array.reshape(shape)
    if offset != len(binary):
        raise ApiError(400, f"the binary section has {len(binary)} bytes but the inputs use {offset}")
    missing = [n for n in specs if n not in feeds]
    if missing:
        raise ApiError(400, f"missing input(s) {missing} for model {model.name!r}")
    return feeds, int(rows)


def _input_spec(tensor, specs: dict[str, TensorSpec], feeds: dict, model: ServedModel) -> tuple[str, TensorSpec]:
    """The name of one entry of 'inputs' and the model input it names (given once, with its datatype)."""
    if not isinstance(tensor, dict):
        raise ApiError(400, "each entry of 'inputs' must be an object {name, shape, datatype, data}")
    name = tensor.get("name")
    if not isinstance(name, str):
        raise ApiError(400, "each input needs a string 'name'")
    spec = specs.get(name)
    if spec is None:
        raise ApiError(400, f"model {model.name!r} has no input {name!r}; its inputs are {list(specs)}")
    if name in feeds:
        raise ApiError(400, f"input {name!r} is given twice")
    datatype = tensor.get("datatype")
    if datatype != spec.datatype:
        raise ApiError(400, f"input {name!r}: datatype {datatype!r} is not supported; expected {spec.datatype!r}")
    return name, spec


def _input_shape(name: str, tensor: dict, spec: TensorSpec, max_rows: int) -> list[int]:
    """The input's shape: the model's, with a batch size from 1 to ``max_rows`` first."""
    shape = tensor.get("shape")
    if not isinstance(shape, list) or not all(_is_int(d) for d in shape):
        raise ApiError(400, f"input {name!r}: 'shape' must be a list of integers, e.g. {[2, *spec.shape[1:]]}")
    if len(shape) != len(spec.shape) or any(d != want for d, want in zip(shape[1:], spec.shape[1:])):
        raise ApiError(400, f"input {name!r}: shape {shape} does not match the model's {list(spec.shape)} "
                            "(-1 is the batch size)")
    n = shape[0]
    if n < 1:
        raise ApiError(400, f"input {name!r}: the batch size (shape[0]) must be at least 1, got {n}")
    if n > max_rows:
        raise ApiError(413, f"input {name!r}: {n} rows is more than the {max_rows} a request may hold; "
                            "split the request")
    return shape


def _input_values(name: str, tensor: dict, spec: TensorSpec, count: int, binary: bytes,
                  offset: int) -> tuple[np.ndarray, int]:
    """The input's ``count`` values, from its JSON 'data' or from the binary section at ``offset``;
    and the offset after them."""
    tparams = tensor.get("parameters") or {}
    if not isinstance(tparams, dict):
        raise ApiError(400, f"input {name!r}: 'parameters' must be an object")
    size = tparams.get("binary_data_size")
    if size is None:
        if "data" not in tensor:
            raise ApiError(400, f"input {name!r}: no 'data' (and no parameters.binary_data_size)")
        return _json_tensor(name, tensor["data"], count, spec.datatype), offset
    if "data" in tensor:
        raise ApiError(400, f"input {name!r}: give either 'data' or parameters.binary_data_size, not both")
    dtype = V2_TO_NUMPY[spec.datatype]
    if not _is_int(size) or size != count * dtype.itemsize:
        raise ApiError(400, f"input {name!r}: binary_data_size {size!r} should be {count * dtype.itemsize} "
                            f"({count} {spec.datatype} values)")
    if offset + size > len(binary):
        raise ApiError(400, f"input {name!r}: the binary section holds {len(binary) - offset} more bytes, "
                            f"not {size}; is {HEADER_LENGTH} right?")
    array = np.frombuffer(binary, dtype=dtype, count=count, offset=offset).astype(dtype.newbyteorder("="))
    return array, offset + size


def _check_values(name: str, array: np.ndarray, model: ServedModel) -> None:
    """Finite floats; labels among the classes the model was trained on."""
    if array.dtype.kind == "f" and not np.isfinite(array).all():
        raise ApiError(400, f"input {name!r}: NaN or infinite values are not accepted")
    if name == LABEL_INPUT:
        unknown = model.unknown_labels(array)
        if unknown:
            raise ApiError(400, f"input {name!r}: label(s) {_shown(unknown)} not among the classes model "
                                f"{model.name!r} was trained on {list(model.labels)}")


def _parse_outputs(outputs, model: ServedModel, binary_default: bool) -> tuple[tuple[str, bool], ...]:
    """(output name, as binary) of each requested output; every output of the model when none is named."""
    if outputs is None:
        return tuple((name, binary_default) for name in model.output_names)
    if not isinstance(outputs, list):
        raise ApiError(400, "'outputs' must be a list of {name, parameters}")
    wanted: list[tuple[str, bool]] = []
    for out in outputs:
        if not isinstance(out, dict) or not isinstance(out.get("name"), str):
            raise ApiError(400, "each entry of 'outputs' must be an object with a string 'name'")
        name = out["name"]
        if name not in model.output_names:
            raise ApiError(400, f"model {model.name!r} has no output {name!r}; its outputs are {list(model.output_names)}")
        if any(name == w for w, _ in wanted):
            raise ApiError(400, f"output {name!r} is requested twice")
        wanted.append((name, _output_binary(name, out.get("parameters") or {}, binary_default)))
    if not wanted:
        wanted = [(name, binary_default) for name in model.output_names]
    return tuple(wanted)


def _output_binary(name: str, oparams, binary_default: bool) -> bool:
    """Whether output ``name`` is sent binary; refuses the extensions this server lacks."""
    if not isinstance(oparams, dict):
        raise ApiError(400, f"output {name!r}: 'parameters' must be an object")
    if oparams.get("classification"):
        raise ApiError(400, f"output {name!r}: the classification extension is not supported")
    if "shared_memory_region" in oparams:
        raise ApiError(400, f"output {name!r}: shared memory is not supported over this server")
    as_binary = oparams.get("binary_data", binary_default)
    if not isinstance(as_binary, bool):
        raise ApiError(400, f"output {name!r}: parameters.binary_data must be true or false")
    return as_binary


def encode_infer_response(model: ServedModel, request: InferRequest,
                          results: dict[str, np.ndarray]) -> tuple[bytes, dict[str, str], str]:
    """(body, extra headers, media type) of a V2 inference response."""
    datatypes = {s.name: s.datatype for s in model.outputs}
    response: dict = {"model_name": model.name, "model_version": model.version}
    if request.id is not None:
        response["id"] = request.id
    entries, blobs = [], []
    for name, as_binary in request.outputs:
        datatype = datatypes[name]
        array = np.ascontiguousarray(results[name], dtype=V2_TO_NUMPY[datatype])
        entry = {"name": name, "datatype": datatype, "shape": list(array.shape)}
        if as_binary:
            raw = array.tobytes()
            entry["parameters"] = {"binary_data_size": len(raw)}
            blobs.append(raw)
        else:
            entry["data"] = array.reshape(-1)
        entries.append(entry)
    response["outputs"] = entries
    head = dumps(response)
    if not blobs:
        return head, {}, "application/json"
    return b"".join([head, *blobs]), {HEADER_LENGTH: str(len(head))}, "application/octet-stream"
