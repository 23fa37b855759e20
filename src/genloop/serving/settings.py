"""Settings of ``genloop serve``: where the ONNX files are, how to run them, what a request may be."""
from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator

from genloop.config import ExportConfig
from genloop.paths import ENCODER_FILE


class ServingError(RuntimeError):
    """A server that cannot start: the message says what is wrong and what to do about it."""


class CompanionGone(ServingError):
    """The version a companion model (the VAE's encoder) follows carries none: the one served would no
    longer match its decoder's weights, so it is unloaded rather than kept."""


def default_model_paths(models_dir: str | Path = "models", export: ExportConfig | None = None) -> dict[str, Path]:
    """The names ``export`` registers (``export.vae_model_name``, ``export.gan_model_name``), served from
    the files ``genloop export`` writes into ``models_dir``."""
    return {name: Path(models_dir) / file for name, file in (export or ExportConfig()).served_files().items()}


def encoder_name(export: ExportConfig | None = None) -> str:
    """The name the VAE's encoder is served under: ``<export.vae_model_name>-encoder``."""
    return f"{(export or ExportConfig()).vae_model_name}-encoder"


def served_model_paths(models_dir: str | Path = "models", export: ExportConfig | None = None) -> dict[str, Path]:
    """What ``genloop serve`` serves from files by default: ``default_model_paths``, plus the VAE's encoder
    (``encoder_name``) when export wrote one into ``models_dir`` (/explore encodes real images with it).

    Separate from ``default_model_paths``, which never looks at the disk, so settings built without a
    project do not depend on what the working directory holds."""
    paths = default_model_paths(models_dir, export)
    encoder = Path(models_dir) / ENCODER_FILE
    if encoder.is_file():
        paths[encoder_name(export)] = encoder
    return paths


class ServeSettings(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    host: str = "127.0.0.1"
    port: int = Field(8000, ge=0, le=65535)
    token: SecretStr | None = Field(None, description="bearer token required on /v2 (health excepted) when set")
    public_metrics: bool = Field(False, description="with a token: leave /metrics, /docs and /openapi.json open")
    models: dict[str, Path] = Field(default_factory=default_model_paths, description="model name -> ONNX file")
    model_version: str = "1"
    versions: dict[str, str] = Field(default_factory=dict, description="model name -> version (else model_version)")
    providers: Literal["auto", "cpu", "cuda"] = Field(
        "auto", description="auto: CUDA when this onnxruntime offers it, else CPU; cuda: fail without it")
    cuda_device_id: int = Field(0, ge=0)
    intra_op_threads: int = Field(0, ge=0, description="onnxruntime intra-op threads; 0 lets onnxruntime choose")
    inter_op_threads: int = Field(1, ge=0)
    max_body_bytes: int = Field(8 * 1024 * 1024, ge=1024, description="largest request body, after decompression")
    max_rows_per_request: int = Field(1024, ge=1, description="largest batch dimension of one request")
    max_batch_rows: int = Field(256, ge=1, description="rows the dynamic batcher gathers into one session.run")
    max_batch_delay_ms: float = Field(5.0, ge=0.0, le=10_000.0, description="longest wait for more requests")
    max_queue_rows: int = Field(16_384, ge=1, description="rows waiting per model before requests get 503")
    max_generate: int = Field(256, ge=1, description="largest n of the PNG `generate` endpoint")
    warmup_rows: list[int] = Field(default_factory=lambda: [1, 8], description="batch sizes run once before ready")
    poll_seconds: float = Field(10.0, ge=0.0, description="registry champion check interval; 0: only on load requests")
    timeout_keep_alive: float = Field(5.0, gt=0.0, description="seconds an idle connection (or unfinished headers) "
                                                              "stays open")
    limit_concurrency: int | None = Field(1000, ge=1, description="open connections + tasks before 503s")
    body_timeout: float = Field(30.0, gt=0.0, description="seconds a request body may take to arrive after its head")
    max_connections_per_client: int | None = Field(100, ge=1, description="open connections from one client "
                                                                          "address before new ones get 503")
    h11_max_incomplete_event_size: int = Field(64 * 1024, ge=1024, description="largest request line + headers")
    explain: Path | None = Field(None, description="the latent atlas (reports/explain.json) whose axes /explore "
                                                   "moves; None or absent: the first latent dimensions")
    explore_images: Path | None = Field(None, description="real images /explore offers the encoder (a clean "
                                                          "split's .npz, e.g. outputs/clean/test.npz)")

    @field_validator("models")
    @classmethod
    def _some_models(cls, value: dict[str, Path]) -> dict[str, Path]:
        if not value:
            raise ValueError("at least one model is needed")
        for name in value:
            if not name or "/" in name or name.strip() != name:
                raise ValueError(f"model name {name!r}: must be non-empty, without '/' or surrounding spaces")
        return value

    @field_validator("token")
    @classmethod
    def _no_empty_token(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None and not value.get_secret_value().strip():
            raise ValueError("empty token: give a non-empty token, or leave GENLOOP_SERVE_TOKEN unset and "
                             "--token out to serve without one")
        return value

    def token_value(self) -> str | None:
        return self.token.get_secret_value() if self.token is not None else None
