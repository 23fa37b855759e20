"""``genloop serve``: the click command (registered on the ``genloop`` group by ``genloop.cli``).

Only click is imported at module level, so ``genloop --help`` stays instant.
"""
from __future__ import annotations

import sys
from pathlib import Path

import click

TOKEN_ENV = "GENLOOP_SERVE_TOKEN"


def _parse_models(values: tuple[str, ...]) -> dict[str, Path]:
    models: dict[str, Path] = {}
    for item in values:
        name, sep, path = item.partition("=")
        if not sep or not name.strip() or not path.strip():
            raise click.BadParameter(f"{item!r}: expected NAME=PATH, e.g. genloop-vae=models/vae_decoder.onnx",
                                     param_hint="--model")
        models[name.strip()] = Path(path.strip())
    return models


def _default_models_dir(ctx: click.Context) -> Path:
    """ROOT/models when run under ``genloop --root ROOT``, else ./models."""
    paths = getattr(ctx.find_root().obj, "paths", None)
    return Path(paths.models) if paths is not None else Path("models")


def _project(ctx: click.Context):
    """(params, project root) of ``genloop --root ROOT [--params F] [-S ...]``, or of ./params.yaml when run alone."""
    from genloop.config import load_params

    obj = ctx.find_root().obj
    if obj is not None and hasattr(obj, "params"):
        return obj.params(), Path(obj.paths.root)
    return load_params(Path("params.yaml")), Path(".").resolve()


def default_explore_images(root: Path) -> Path:
    """The held-out split clean writes: real images the explorer offers to encode."""
    from genloop.paths import ProjectPaths

    return ProjectPaths.at(root).clean / "test.npz"


@click.command(name="serve", context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--models", "models_dir", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Folder with vae_decoder.onnx and gan_generator.onnx (served as genloop-vae and genloop-gan), "
                   "and vae_encoder.onnx when export wrote one (served as genloop-vae-encoder). Default: ROOT/models.")
@click.option("--model", "model_specs", multiple=True, metavar="NAME=PATH",
              help="Serve this ONNX file under NAME instead (repeatable; replaces the --models defaults).")
@click.option("--champions/--files", "champions", default=None,
              help="Serve the registry's champions (models:/genloop-vae@champion, models:/genloop-gan@champion from "
                   "the MLflow store: $MLFLOW_TRACKING_URI, else params), or the ONNX files in --models. Default: "
                   "the champions when the store has both, else the files; --models/--model mean files.")
@click.option("--host", default="127.0.0.1", show_default=True, help="Interface to listen on (0.0.0.0 for all).")
@click.option("--port", type=click.IntRange(0, 65535), default=8000, show_default=True)
@click.option("--token", envvar=TOKEN_ENV, default=None, metavar="TOKEN",
              help=f"Require 'Authorization: Bearer TOKEN' on /v2 (/v2/health/* excepted, for probes), /metrics, "
                   f"/docs and /openapi.json. Prefer the {TOKEN_ENV} environment variable: options show in the "
                   "process list. An empty token is an error.")
@click.option("--public-metrics/--no-public-metrics", default=None,
              help="With a token: leave /metrics, /docs and /openapi.json open (e.g. for a Prometheus without "
                   "credentials). Default: serve.public_metrics (false: protected).")
@click.option("--poll-seconds", type=click.FloatRange(min=0), default=None,
              help="Check the registry's champion alias this often and swap a moved champion in (0: only on "
                   "POST /v2/repository/models/NAME/load). Default: serve.poll_seconds (10).")
@click.option("--device", type=click.Choice(["auto", "cpu", "cuda"]), default="auto", show_default=True,
              help="onnxruntime execution provider: auto takes CUDA when onnxruntime offers it (onnxruntime-gpu, "
                   "`genloop[gpu]`), else the CPU; cuda fails at start without it.")
@click.option("--threads", type=click.IntRange(min=0), default=None,
              help="onnxruntime intra-op threads per model (0: onnxruntime's default, one per core). "
                   "Default: serve.threads in params.yaml.")
@click.option("--max-batch-rows", type=click.IntRange(min=1), default=None,
              help="Rows the dynamic batcher merges into one onnxruntime run. Default: serve.max_batch_rows (256).")
@click.option("--max-batch-delay-ms", type=click.FloatRange(0, 10_000), default=None,
              help="Longest a request waits for others to batch with. Default: serve.max_batch_delay_ms (5).")
@click.option("--max-rows-per-request", type=click.IntRange(min=1), default=None,
              help="Default: serve.max_rows_per_request (1024).")
@click.option("--max-body-bytes", type=click.IntRange(min=1024), default=8 * 1024 * 1024, show_default=True)
@click.option("--explain", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="The latent atlas whose VAE dimensions and GAN directions /explore's sliders move. "
                   "Default: ROOT/reports/explain.json (absent: the first latent dimensions).")
@click.option("--explore-images", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Real images /explore offers the VAE encoder (an .npz with `images`). "
                   "Default: ROOT/outputs/clean/test.npz (the held-out split clean writes).")
@click.option("--log-level", type=click.Choice(["critical", "error", "warning", "info", "debug"]), default="info",
              show_default=True)
@click.pass_context
def serve_command(ctx: click.Context, models_dir: Path | None, model_specs: tuple[str, ...], champions: bool | None,
                  host: str, port: int, token: str | None, public_metrics: bool | None, poll_seconds: float | None,
                  device: str, threads: int | None,
                  max_batch_rows: int | None, max_batch_delay_ms: float | None, max_rows_per_request: int | None,
                  max_body_bytes: int, explain: Path | None, explore_images: Path | None, log_level: str) -> None:
    """Serve the ONNX generators (registry champions, or files) over the Open Inference Protocol (KServe V2 REST).

    \b
    GET  /v2, /v2/health/live, /v2/health/ready, /v2/models/NAME, /v2/models/NAME/ready
    POST /v2/models/NAME/infer            {"inputs": [{"name": "z", "shape": [n, d], "datatype": "FP32", "data": [...]}]}
                                          a conditional model also {"name": "label", "shape": [n], "datatype": "INT64", ...}
    GET  /v2/models/NAME/generate?n=16&seed=1   a PNG grid of samples (&label=7: of one class)
    GET  /metrics                         Prometheus metrics
    GET  /, /explore, /docs               landing page, latent explorer, API docs (all offline)
    POST /v2/repository/index, /v2/repository/models/NAME/load|unload   live (re)loading

    Serving the registry's champions, the server follows the champion alias: a moved champion is
    loaded, warmed up and swapped in without failing a request (see --poll-seconds).
    """
    from genloop.config import ConfigError
    from genloop.serving.settings import served_model_paths

    _check_token(token)
    by_path = bool(model_specs) or models_dir is not None
    if champions and by_path:
        raise click.UsageError("--champions serves the registry; leave out --models/--model (or use --files)")
    try:
        params, root = _project(ctx)
    except ConfigError as exc:
        _fail(str(exc))
    models = (_parse_models(model_specs) if model_specs
              else served_model_paths(models_dir or _default_models_dir(ctx), params.export))
    options = dict(host=host, port=port, token=token, providers=device, max_body_bytes=max_body_bytes,
                   public_metrics=public_metrics, poll_seconds=poll_seconds, intra_op_threads=threads,
                   max_batch_rows=max_batch_rows, max_batch_delay_ms=max_batch_delay_ms,
                   max_rows_per_request=max_rows_per_request,
                   explain=explain or root / "reports" / "explain.json",
                   explore_images=explore_images or default_explore_images(root))
    _serve(params, root, models, False if by_path else champions, options, log_level)


def _serve(params, root: Path, models: dict[str, Path], champions: bool | None, options: dict,
           log_level: str) -> None:
    """Serve ``models``, or the registry's champions (None: when the store has them), until stopped."""
    import signal

    from pydantic import ValidationError

    from genloop.serving.settings import ServingError

    source = None  # the registry's champions: its download folder lives until the server stops
    # SIGTERM before uvicorn takes over (e.g. during downloads) still runs the `finally` below; SIGHUP
    # (the terminal closed) stops the server as SIGTERM does, instead of killing it with the folder left.
    previous_sigterm = signal.signal(signal.SIGTERM, _exit_on_sigterm)
    previous_sighup = signal.signal(signal.SIGHUP, _sigterm_on_sighup)
    try:
        if champions is None:
            from genloop.serving.registry import has_champions

            champions = has_champions(params.mlflow, root, list(params.export.served_files()))
        versions: dict[str, str] = {}
        if champions:
            source, models, versions = _champions(params, root)
        settings = _serve_settings(params.serve, models, versions, options)
        run_server(settings, log_level=log_level, echo=click.echo, source=source)
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors())
        _fail(f"invalid serve settings: {problems}")
    except ServingError as exc:
        _fail(str(exc))
    finally:
        if source is not None:
            source.close()
        signal.signal(signal.SIGTERM, previous_sigterm)
        signal.signal(signal.SIGHUP, previous_sighup)


def _check_token(token: str | None) -> None:
    """click treats an empty environment variable as unset, which would silently serve without a token."""
    import os

    if (token is not None and not token.strip()) or (token is None and TOKEN_ENV in os.environ
                                                      and not os.environ[TOKEN_ENV].strip()):
        _fail(f"empty token: {TOKEN_ENV} (or --token) is set but empty; give a token, or unset {TOKEN_ENV} "
              "to serve without one")


def _champions(params, root: Path):
    """(source, model files, versions) of the registry's champions, downloaded into a temporary folder
    that lives until ``source.close()``."""
    from genloop.serving.registry import ChampionSource
    from genloop.serving.settings import encoder_name

    source = ChampionSource(params.mlflow, root, list(params.export.served_files()),
                            encoders={encoder_name(params.export): params.export.vae_model_name})
    try:
        found = source.champions()
    except BaseException:
        source.close()
        raise
    click.echo("serving the registry champions: "
               + ", ".join(f"{n} v{c.version}" for n, c in found.items()) + " (--files serves models/)")
    return source, {name: c.path for name, c in found.items()}, {name: c.version for name, c in found.items()}


def _serve_settings(config, models: dict[str, Path], versions: dict[str, str], options: dict):
    """ServeSettings from the command's options; an option left out (None) takes params' ``serve`` value."""
    from genloop.serving.settings import ServeSettings

    from_params = {"public_metrics", "poll_seconds", "intra_op_threads", "max_batch_rows", "max_batch_delay_ms",
                   "max_rows_per_request"}
    defaults = {key: getattr(config, "threads" if key == "intra_op_threads" else key) for key in from_params}
    chosen = {key: defaults[key] if key in from_params and value is None else value for key, value in options.items()}
    return ServeSettings(
        models=models, versions=versions, timeout_keep_alive=config.timeout_keep_alive,
        limit_concurrency=config.limit_concurrency, body_timeout=config.body_timeout,
        max_connections_per_client=config.max_connections_per_client,
        h11_max_incomplete_event_size=config.h11_max_incomplete_event_size, **chosen,
    )


def _exit_on_sigterm(signum, frame) -> None:
    sys.exit(128 + signum)


def _sigterm_on_sighup(signum, frame) -> None:
    """SIGTERM to this process: whoever handles SIGTERM now (uvicorn's graceful shutdown, or
    _exit_on_sigterm before it runs) stops the server and the `finally` cleans up."""
    import os
    import signal

    os.kill(os.getpid(), signal.SIGTERM)


def _fail(message: str) -> None:
    click.secho(f"error: {message}", fg="red", err=True)
    sys.exit(1)


def run_server(settings, log_level: str = "info", echo=print, source=None) -> None:
    """Check and load every model (so failures are one clear line), then run uvicorn until stopped."""
    import uvicorn

    from genloop.serving.app import create_app

    app = create_app(settings, source=source)
    app.state.holder.load()
    for name, model in app.state.holder.models.items():
        echo(f"{name}: {model.path} on {model.session.get_providers()[0]} "
             f"(inputs {[s.metadata() for s in model.inputs]})")
    auth = "no token"
    if settings.token is not None:
        auth = "bearer token required" + ("; /metrics and /docs open" if settings.public_metrics else "")
    follow = (f"; following the registry's champions every {settings.poll_seconds:g} s"
              if source is not None and source.registry and settings.poll_seconds > 0 else "")
    echo(f"serving the Open Inference Protocol on http://{settings.host}:{settings.port}/v2 ({auth}{follow})")
    uvicorn.run(app, host=settings.host, port=settings.port, log_level=log_level, **uvicorn_options(settings))


def uvicorn_options(settings) -> dict:
    """How uvicorn guards its connections (params `serve:`): idle, half-sent and stalled ones are closed, their
    number capped in all and per client."""
    from genloop.serving.connections import guarded_protocol

    protocol = guarded_protocol(settings.body_timeout, settings.max_connections_per_client)
    return {"http": protocol, "timeout_keep_alive": settings.timeout_keep_alive,
            "limit_concurrency": settings.limit_concurrency,
            "h11_max_incomplete_event_size": settings.h11_max_incomplete_event_size,
            "server_header": False, "timeout_graceful_shutdown": 10}
