"""The FastAPI app of ``genloop serve``: the REST part of the Open Inference Protocol (KServe V2).

Endpoints: ``GET /v2`` (server metadata), ``/v2/health/live``, ``/v2/health/ready``,
``/v2/models/{name}[/versions/{v}]`` (model metadata), ``.../ready``, ``POST .../infer`` (JSON
or binary tensors, dynamically batched), ``GET /v2/models/{name}/generate`` (a PNG grid of samples;
``label`` picks the class of a conditional model)
and ``GET /metrics`` (Prometheus); ``/``, ``/docs`` and ``/explore`` are pages for people
(genloop.serving.pages). Every error is ``{"error": "..."}`` with a 4xx/5xx status, as
tritonclient and other V2 clients expect.
"""
# No `from __future__ import annotations`: FastAPI must see the route signatures built in create_app.
import asyncio
import hmac
import logging
from contextlib import asynccontextmanager
from dataclasses import dataclass
from importlib import metadata as importlib_metadata
from typing import Annotated, Any

import numpy as np
from fastapi import Depends, FastAPI, Path, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import BaseModel
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import ClientDisconnect

from genloop.serving.batching import DynamicBatcher, QueueFull, ShuttingDown
from genloop.serving.live import LiveModels, ModelSource, Slot
from genloop.serving.metrics import MetricsMiddleware, ServingMetrics
from genloop.serving.pages import add_page_routes
from genloop.serving.sessions import LABEL_INPUT, ModelHolder, ServedModel
from genloop.serving.protocol import (
    HEADER_LENGTH, ApiError, InferRequest, decompress, encode_infer_response, parse_infer_request,
)
from genloop.serving.registry import FileSource
from genloop.serving.settings import ServeSettings, ServingError

log = logging.getLogger("genloop.serving")

SERVER_NAME = "genloop"
EXTENSIONS = ["binary_tensor_data", "model_repository"]
PARSE_IN_THREAD_BYTES = 64 * 1024  # bodies above this are parsed off the event loop
DRAIN_CAP_BYTES = 16 * 1024 * 1024  # an oversized body up to this is read and dropped, so the 413 arrives


def _version() -> str:
    try:
        return importlib_metadata.version("genloop")
    except importlib_metadata.PackageNotFoundError:  # pragma: no cover - always installed in practice
        return "0+unknown"


# ---- documentation models (responses are built by hand; these only describe them in /openapi.json)
class ErrorBody(BaseModel):
    error: str


class ServerMetadata(BaseModel):
    name: str
    version: str
    extensions: list[str]


class TensorMetadata(BaseModel):
    name: str
    datatype: str
    shape: list[int]


class ModelMetadata(BaseModel):
    name: str
    versions: list[str]
    platform: str
    inputs: list[TensorMetadata]
    outputs: list[TensorMetadata]
    genloop_registry_version: str | None = None
    genloop_labels: list[int] | None = None  # a class-conditional model: what its `label` input accepts
    genloop_class_names: dict[str, str] | None = None  # those classes' names in the data, when it names them


class RepositoryEntry(BaseModel):
    name: str
    version: str
    state: str
    reason: str


class LoadResult(BaseModel):
    name: str
    version: str
    changed: bool
    previous: str | None = None


class Live(BaseModel):
    live: bool


class Ready(BaseModel):
    ready: bool


class ModelReady(BaseModel):
    name: str
    ready: bool


class OutputTensor(BaseModel):
    name: str
    datatype: str
    shape: list[int]
    data: list[float] | None = None
    parameters: dict[str, Any] | None = None


class InferResponse(BaseModel):
    model_name: str
    model_version: str | None = None
    id: str | None = None
    outputs: list[OutputTensor]


_INPUT_SCHEMA = {
    "type": "object", "required": ["name", "shape", "datatype"],
    "properties": {
        "name": {"type": "string", "minLength": 1},
        "shape": {"type": "array", "items": {"type": "integer", "minimum": 1}, "minItems": 1},
        "datatype": {"type": "string", "enum": ["FP32", "INT64"], "description": "INT64 for a conditional model's label"},
        "data": {"type": "array", "items": {"type": "number"}, "minItems": 1, "description": "row-major, flattened"},
        "parameters": {"type": "object", "description": "binary_data_size for the binary tensor extension"},
    },
}
INFER_REQUEST_SCHEMA = {
    "type": "object", "required": ["inputs"],
    "properties": {
        "id": {"type": "string"},
        "inputs": {"type": "array", "items": _INPUT_SCHEMA, "minItems": 1},
        "outputs": {"type": "array", "items": {
            "type": "object", "required": ["name"],
            "properties": {"name": {"type": "string"}, "parameters": {"type": "object"}},
        }},
        "parameters": {"type": "object", "description": "binary_data_output: true for binary outputs"},
    },
}
ERRORS = {status: {"model": ErrorBody} for status in (400, 401, 404, 413, 415, 503)}
INFER_RESPONSES = {
    200: {"description": "JSON outputs, or with binary outputs the JSON header (its length in the "
                         "Inference-Header-Content-Length header) followed by the raw tensors",
          "content": {"application/octet-stream": {"schema": {"type": "string", "format": "binary"}}}},
    **ERRORS,
}


async def read_body(request: Request, limit: int) -> bytes:
    """The whole request body (decompressed), refused with 413 past ``limit`` bytes."""
    declared = request.headers.get("content-length")
    too_large = None
    if declared is not None and declared.isdigit() and int(declared) > limit:
        too_large = f"request body of {int(declared)} bytes is larger than the {limit} bytes allowed"
        if int(declared) > DRAIN_CAP_BYTES:  # not worth reading just to answer politely
            raise ApiError(413, too_large + " (--max-body-bytes); send fewer rows per request")
    chunks: list[bytes] = []
    size = 0
    try:
        async for chunk in request.stream():
            size += len(chunk)
            if too_large is None and size > limit:
                too_large = f"request body is larger than the {limit} bytes allowed"
            if too_large is not None:
                # Read (and drop) a moderately oversized body so the client sees the 413, not a reset.
                if size > DRAIN_CAP_BYTES:
                    break
                continue
            chunks.append(chunk)
    except ClientDisconnect:
        raise ApiError(400, "the client disconnected before sending the whole body") from None
    if too_large is not None:
        raise ApiError(413, too_large + " (--max-body-bytes); send fewer rows per request")
    return decompress(b"".join(chunks), request.headers.get("content-encoding", ""), limit)


def sample_feeds(model: ServedModel, n: int, seed: int | None, cols: int | None,
                 label: int | None) -> tuple[dict[str, np.ndarray], int | None]:
    """The inputs of ``generate``'s grid and its columns: n latents from ``seed`` (the same with or
    without ``label``), all of class ``label`` on a conditional model.

    A conditional model without ``label`` draws one row per trained class, every row from the same
    ceil(n / classes) latents, so a column shows one latent across the classes.
    """
    rng = np.random.default_rng(seed)
    if model.labels is not None and label is None:
        per_class, classes = -(-n // len(model.labels)), len(model.labels)
        feeds = {s.name: np.tile(rng.standard_normal((per_class, *s.shape[1:])).astype(np.float32),
                                 (classes,) + (1,) * len(s.shape[1:]))
                 for s in model.inputs if s.name != LABEL_INPUT}
        feeds[LABEL_INPUT] = np.repeat(np.asarray(model.labels, np.int64), per_class)
        return feeds, cols or per_class
    feeds = {s.name: rng.standard_normal((n, *s.shape[1:])).astype(np.float32)
             for s in model.inputs if s.name != LABEL_INPUT}
    if label is None:
        return feeds, cols
    if model.labels is None:
        raise ApiError(400, f"model {model.name!r} is unconditional (no 'label' input); leave 'label' out")
    if label not in model.labels:
        raise ApiError(400, f"label {label} is not among the classes model {model.name!r} was trained on "
                            f"{list(model.labels)}")
    feeds[LABEL_INPUT] = np.full(n, label, np.int64)
    return feeds, cols


@dataclass
class _Serving:
    """What the routes share: the settings, the loaded models and their live slots, the metrics."""

    settings: ServeSettings
    holder: ModelHolder
    metrics: ServingMetrics
    live: LiveModels
    source: ModelSource

    def served(self, name: str, version: str | None = None) -> Slot:
        """The slot serving ``name`` (at ``version`` when given), or the 503/404 that says why none does."""
        if not self.holder.ready:
            raise ApiError(503, "the server is not ready (models loading, or the server is stopping)")
        slot = self.live.slots.get(name)
        if slot is None:
            if name in self.settings.models:
                raise ApiError(404, f"model {name!r} is unloaded; POST /v2/repository/models/{name}/load serves it")
            raise ApiError(404, f"unknown model {name!r}; this server serves {sorted(self.settings.models)}")
        if version is not None and version != slot.model.version:
            raise ApiError(404, f"model {name!r} has no version {version!r}; it has [{slot.model.version!r}]")
        return slot

    def known(self, name: str) -> str:
        """``name`` when this server may serve it (loaded or not), else a 404."""
        if name not in self.settings.models:
            raise ApiError(404, f"unknown model {name!r}; this server serves {sorted(self.settings.models)}")
        return name

    async def run_batched(self, model: ServedModel, batcher: DynamicBatcher, feeds: dict[str, np.ndarray],
                          rows: int) -> dict[str, np.ndarray]:
        """Through the model's dynamic batcher; a full queue or a stopping server is a 503."""
        self.metrics.request_rows.labels(model.name).observe(rows)
        try:
            return await batcher.infer(feeds, rows)
        except QueueFull as exc:
            raise ApiError(503, str(exc), headers={"Retry-After": "1"}) from None
        except ShuttingDown as exc:
            raise ApiError(503, str(exc)) from None
        except Exception as exc:  # onnxruntime failed on valid input: a server-side problem
            log.exception("inference failed for %s", model.name)
            raise ApiError(500, f"inference failed for model {model.name!r}: {exc}") from None

    async def infer(self, request: Request, name: str, version: str | None = None) -> Response:
        async with self.live.hold(self.served(name, version)) as slot:  # a swap meanwhile: this request stays on slot
            model, batcher = slot.model, slot.batcher
            body = await read_body(request, self.settings.max_body_bytes)
            args = (body, request.headers.get(HEADER_LENGTH), model, self.settings.max_rows_per_request)
            parsed: InferRequest = (await asyncio.to_thread(parse_infer_request, *args)
                                    if len(body) > PARSE_IN_THREAD_BYTES else parse_infer_request(*args))
            results = await self.run_batched(model, batcher, parsed.feeds, parsed.rows)
            content, headers, media_type = encode_infer_response(model, parsed, results)
        return Response(content, media_type=media_type, headers=headers)

    async def generate(self, name: str, n: int, seed: int | None, cols: int | None, label: int | None) -> Response:
        from genloop.io.imaging import grid_image

        async with self.live.hold(self.served(name)) as slot:
            model = slot.model
            feeds, cols = sample_feeds(model, n, seed, cols, label)
            rows = len(feeds[model.latent.name])
            images = (await self.run_batched(model, slot.batcher, feeds, rows))[model.output_names[0]]
        if not (images.ndim == 3 or (images.ndim == 4 and images.shape[1] in (1, 3))):
            raise ApiError(400, f"model {name!r} output has shape {list(images.shape)}, not grey (N, 1, H, W) "
                                "or RGB (N, 3, H, W) images")
        png = await asyncio.to_thread(grid_image, images, cols)
        headers = {"Cache-Control": "no-store"} if seed is None else {}
        return Response(png, media_type="image/png", headers=headers)


def create_app(settings: ServeSettings, holder: ModelHolder | None = None, source: ModelSource | None = None) -> FastAPI:
    """The app; checks model files and providers now, loads and warms up the sessions at start-up.

    ``source`` says where new versions come from (genloop.serving.registry.ChampionSource follows the
    registry's champions; the default re-reads the files); the app closes it at shutdown.
    """
    holder = holder or ModelHolder(settings)
    source = source or FileSource(settings.models, settings.versions, settings.model_version)
    metrics = ServingMetrics()
    serving = _Serving(settings, holder, metrics, LiveModels(settings, holder, metrics, source), source)
    token = settings.token_value()
    guard_docs = token is not None and not settings.public_metrics
    app = FastAPI(  # /docs is genloop.serving.pages' (its assets served locally, not from a CDN)
        title="genloop serve", version=_version(), lifespan=_lifespan(serving), redoc_url=None,
        docs_url=None, openapi_url=None if guard_docs else "/openapi.json",
        description="Open Inference Protocol (KServe V2) REST endpoints for the genloop ONNX generators.",
    )
    app.state.settings, app.state.holder, app.state.metrics, app.state.live = settings, holder, metrics, serving.live
    app.add_middleware(MetricsMiddleware, metrics=metrics)
    _add_error_handlers(app)
    protected = _token_dependencies(token)
    guarded = protected if guard_docs else []  # /, /metrics, /docs and /openapi.json: unless --public-metrics
    _add_server_routes(app, serving, protected)
    _add_model_routes(app, serving, protected)
    _add_inference_routes(app, serving, protected)
    _add_metrics_and_docs(app, serving, guarded, guard_docs)
    _add_repository_routes(app, serving, protected)
    add_page_routes(app, serving, guarded, protected)
    return app


def _lifespan(serving: _Serving):
    """Start-up (load, warm up, start the batchers and the champion poller) and shutdown of the app."""
    holder, metrics, settings = serving.holder, serving.metrics, serving.settings

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        poller = None
        try:
            await asyncio.to_thread(holder.load)
            serving.live.start()
            holder.mark_ready()
            metrics.ready.set(1)
            log.info("ready: %s", ", ".join(f"{n} v{m.version} ({m.path})" for n, m in holder.models.items()))
            if serving.source.registry and settings.poll_seconds > 0:
                poller = asyncio.get_running_loop().create_task(serving.live.poll_forever(settings.poll_seconds),
                                                                name="champion-poller")
            yield
        finally:  # runs on SIGTERM too (uvicorn's graceful shutdown), unlike code after server.run()
            if poller is not None:
                poller.cancel()
            holder.mark_not_ready()
            metrics.ready.set(0)
            await serving.live.stop()
            serving.source.close()

    return lifespan


def _add_error_handlers(app: FastAPI) -> None:
    """Every error is ``{"error": "..."}``."""

    @app.exception_handler(ApiError)
    async def _api_error(request: Request, exc: ApiError):
        return JSONResponse({"error": exc.message}, status_code=exc.status, headers=exc.headers)

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, exc: StarletteHTTPException):
        return JSONResponse({"error": str(exc.detail)}, status_code=exc.status_code, headers=exc.headers)

    @app.exception_handler(RequestValidationError)
    async def _validation_error(request: Request, exc: RequestValidationError):
        problems = "; ".join(f"{'.'.join(str(p) for p in e.get('loc', ()))}: {e.get('msg')}" for e in exc.errors())
        return JSONResponse({"error": f"invalid request: {problems}"}, status_code=400)

    @app.exception_handler(Exception)
    async def _internal_error(request: Request, exc: Exception):
        log.exception("unhandled error on %s %s", request.method, request.url.path)
        return JSONResponse({"error": f"internal server error ({type(exc).__name__})"}, status_code=500)


def _token_dependencies(token: str | None) -> list:
    """The dependencies of a route behind the bearer token: none when the server has no token."""
    if token is None:
        return []
    bearer = HTTPBearer(auto_error=False, description="the token given to `genloop serve --token`")

    async def authorize(credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)]) -> None:
        if credentials is None or not hmac.compare_digest(credentials.credentials.encode(), token.encode()):
            raise ApiError(401, "missing or wrong bearer token: send 'Authorization: Bearer <token>' with the "
                                "token the server was started with (--token / GENLOOP_SERVE_TOKEN)",
                           headers={"WWW-Authenticate": "Bearer"})

    return [Depends(authorize)]


def _path_types(settings: ServeSettings):
    """The documented ``{name}`` and ``{version}`` path parameters (with this server's names as examples)."""
    name = Annotated[str, Path(description="model name", examples=sorted(settings.models))]
    version = Annotated[str, Path(description="model version", examples=[settings.model_version])]
    return name, version


def _add_server_routes(app: FastAPI, serving: _Serving, protected: list) -> None:
    @app.get("/v2", response_model=ServerMetadata, responses=ERRORS, dependencies=protected, tags=["server"])
    async def server_metadata():
        return JSONResponse({"name": SERVER_NAME, "version": _version(), "extensions": EXTENSIONS})

    @app.get("/v2/health/live", response_model=Live, tags=["health"])
    async def live():
        return JSONResponse({"live": True})

    @app.get("/v2/health/ready", response_model=Ready, responses={503: {"model": Ready}}, tags=["health"])
    async def ready():
        return JSONResponse({"ready": serving.holder.ready}, status_code=200 if serving.holder.ready else 503)


def _add_model_routes(app: FastAPI, serving: _Serving, protected: list) -> None:
    Name, Version = _path_types(serving.settings)

    async def model_metadata(name: str, version: str | None = None):
        return JSONResponse(serving.served(name, version).model.metadata())

    async def model_ready(name: str, version: str | None = None):
        if not serving.holder.ready:
            return JSONResponse({"name": name, "ready": False}, status_code=503)
        serving.served(name, version)
        return JSONResponse({"name": name, "ready": True})

    @app.get("/v2/models/{name}", response_model=ModelMetadata, responses=ERRORS, dependencies=protected, tags=["models"])
    async def get_model(name: Name):
        return await model_metadata(name)

    @app.get("/v2/models/{name}/versions/{version}", response_model=ModelMetadata, responses=ERRORS,
             dependencies=protected, tags=["models"])
    async def get_model_version(name: Name, version: Version):
        return await model_metadata(name, version)

    @app.get("/v2/models/{name}/ready", response_model=ModelReady, responses=ERRORS, dependencies=protected,
             tags=["models"])
    async def get_model_ready(name: Name):
        return await model_ready(name)

    @app.get("/v2/models/{name}/versions/{version}/ready", response_model=ModelReady, responses=ERRORS,
             dependencies=protected, tags=["models"])
    async def get_model_version_ready(name: Name, version: Version):
        return await model_ready(name, version)


def _add_inference_routes(app: FastAPI, serving: _Serving, protected: list) -> None:
    Name, Version = _path_types(serving.settings)
    most = serving.settings.max_generate
    infer_doc = {"requestBody": {"required": True, "content": {"application/json": {"schema": INFER_REQUEST_SCHEMA}}}}

    @app.post("/v2/models/{name}/infer", response_model=InferResponse, responses=INFER_RESPONSES, dependencies=protected,
              openapi_extra=infer_doc, tags=["inference"])
    async def post_infer(request: Request, name: Name):
        return await serving.infer(request, name)

    @app.post("/v2/models/{name}/versions/{version}/infer", response_model=InferResponse, responses=INFER_RESPONSES,
              dependencies=protected, openapi_extra=infer_doc, tags=["inference"])
    async def post_infer_version(request: Request, name: Name, version: Version):
        return await serving.infer(request, name, version)

    @app.get("/v2/models/{name}/generate", response_class=Response, dependencies=protected, tags=["inference"],
             responses={200: {"content": {"image/png": {}}, "description": "a PNG grid of n samples "
                                                                            "(grey, or RGB for colour models)"}, **ERRORS})
    async def generate(
        name: Name,
        n: Annotated[int, Query(ge=1, le=most, description="number of samples")] = 16,
        seed: Annotated[int | None, Query(ge=0, le=2**63 - 1, description="latent seed (random if absent)")] = None,
        cols: Annotated[int | None, Query(ge=1, le=most, description="grid columns")] = None,
        label: Annotated[int | None, Query(description="class to draw (conditional models); absent: one row "
                                                       "per trained class")] = None,
    ):
        return await serving.generate(name, n, seed, cols, label)


def _add_metrics_and_docs(app: FastAPI, serving: _Serving, guarded: list, guard_docs: bool) -> None:
    """/metrics, and /openapi.json behind the token when ``guard_docs`` (FastAPI's own otherwise)."""

    @app.get("/metrics", response_class=Response, tags=["metrics"], dependencies=guarded,
             responses={200: {"content": {"text/plain": {}}, "description": "Prometheus text format"}})
    async def prometheus_metrics():
        return Response(serving.metrics.render(), media_type=serving.metrics.content_type)

    if guard_docs:
        @app.get("/openapi.json", include_in_schema=False, dependencies=guarded)
        async def openapi_schema():
            return JSONResponse(app.openapi())


def _add_repository_routes(app: FastAPI, serving: _Serving, protected: list) -> None:
    """The model repository extension, as Triton and MLServer have it."""
    Name, _ = _path_types(serving.settings)

    @app.post("/v2/repository/index", response_model=list[RepositoryEntry], responses=ERRORS, dependencies=protected,
              tags=["repository"])
    async def repository_index():
        """Every model this server can serve, its version and state (READY or UNAVAILABLE, with why)."""
        return JSONResponse(serving.live.index())

    @app.post("/v2/repository/models/{name}/load", response_model=LoadResult, responses=ERRORS,
              dependencies=protected, tags=["repository"])
    async def repository_load(name: Name):
        """Serve the registry's champion now (the files: re-read them); the old version serves meanwhile."""
        force = not serving.source.registry or name not in serving.live.slots
        try:
            outcome = await serving.live.load(serving.known(name), force=force)
        except ServingError as exc:
            raise ApiError(400, str(exc)) from None
        return JSONResponse({"name": outcome.name, "version": outcome.version, "changed": outcome.changed,
                             "previous": outcome.previous})

    @app.post("/v2/repository/models/{name}/unload", responses=ERRORS, dependencies=protected, tags=["repository"])
    async def repository_unload(name: Name):
        await serving.live.unload(serving.known(name))
        return JSONResponse({})
