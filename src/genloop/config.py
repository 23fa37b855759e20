"""One typed configuration for every stage, loaded from ``params.yaml``.

Strict models (``extra="forbid"``) so a typo in ``params.yaml`` is an error naming the field,
not a silently ignored knob.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class CollectConfig(Strict):
    source: str = "digits"


class SplitConfig(Strict):
    val: float = Field(0.15, ge=0.0, lt=1.0)
    test: float = Field(0.15, ge=0.0, lt=1.0)

    @model_validator(mode="after")
    def _leaves_training_data(self) -> "SplitConfig":
        if self.val + self.test >= 0.9:
            raise ValueError("split.val + split.test must leave at least 10% for training")
        return self


class CleanConfig(Strict):
    min_rows: int = Field(100, ge=1)
    max_rows: int = Field(5_000_000, ge=1)
    labels: list[int] = Field(default_factory=lambda: list(range(10)))
    pixel_min: int = 0
    pixel_max: int = 255
    min_pixel_std: float = Field(1.0, ge=0.0, description="below this an image counts as blank")
    max_quarantine_share: float = Field(0.05, ge=0.0, le=1.0)
    split: SplitConfig = SplitConfig()


class AugmentConfig(Strict):
    copies: int = Field(1, ge=0, description="augmented copies added per training image")
    rotation_degrees: float = Field(10.0, ge=0.0, le=180.0)
    scale_min: float = Field(0.9, gt=0.0)
    scale_max: float = Field(1.1, gt=0.0)
    crop_min: float = Field(0.85, gt=0.0, le=1.0, description="smallest side fraction kept by a crop")
    batch_size: int = Field(4096, ge=1)

    @model_validator(mode="after")
    def _ordered(self) -> "AugmentConfig":
        if self.scale_min > self.scale_max:
            raise ValueError("augment.scale_min must not exceed augment.scale_max")
        return self


class VAEConfig(Strict):
    epochs: int = Field(60, ge=1)
    batch_size: int = Field(128, ge=1)
    lr: float = Field(1e-3, gt=0.0)
    latent_dim: int = Field(16, ge=1)
    beta: float = Field(1.0, ge=0.0)
    channels: int = Field(32, ge=1)


class GANConfig(Strict):
    epochs: int = Field(60, ge=1)
    batch_size: int = Field(128, ge=1)
    lr_g: float = Field(2e-4, gt=0.0)
    lr_d: float = Field(2e-4, gt=0.0)
    beta1: float = Field(0.5, ge=0.0, lt=1.0)
    latent_dim: int = Field(32, ge=1)
    channels: int = Field(64, ge=1)


class TrainConfig(Strict):
    device: Literal["auto", "cpu", "cuda"] = "auto"
    threads: int = Field(0, ge=0, description="torch intra-op threads; 0 means one per core")
    sample_grid: int = Field(64, ge=1)
    vae: VAEConfig = VAEConfig()
    gan: GANConfig = GANConfig()


class EvaluateConfig(Strict):
    classifier_epochs: int = Field(15, ge=1)
    feature_dim: int = Field(64, ge=2)
    kid_subset_size: int = Field(100, ge=2)
    kid_subsets: int = Field(50, ge=1)


class ExportConfig(Strict):
    parity_tolerance: float = Field(1e-4, gt=0.0)
    parity_batch_sizes: list[int] = Field(default_factory=lambda: [1, 64])
    register_models: bool = True
    vae_model_name: str = "genloop-vae"
    gan_model_name: str = "genloop-gan"


class MlflowConfig(Strict):
    tracking_uri: str = "sqlite:///mlflow/mlflow.db"
    artifact_root: str = "mlflow/artifacts"
    experiment: str = "genloop"


class Params(Strict):
    seed: int = 42
    collect: CollectConfig = CollectConfig()
    clean: CleanConfig = CleanConfig()
    augment: AugmentConfig = AugmentConfig()
    train: TrainConfig = TrainConfig()
    evaluate: EvaluateConfig = EvaluateConfig()
    export: ExportConfig = ExportConfig()
    mlflow: MlflowConfig = MlflowConfig()


class ConfigError(ValueError):
    """A params file that cannot be used; the message names the file and field."""


def _merge(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = _merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def dotted_to_nested(overrides: dict[str, Any]) -> dict[str, Any]:
    """``{"train.vae.epochs": 2}`` -> ``{"train": {"vae": {"epochs": 2}}}`` (as ``dvc exp -S`` spells them)."""
    nested: dict[str, Any] = {}
    for dotted, value in overrides.items():
        node = nested
        *parents, leaf = dotted.split(".")
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = value
    return nested


def params_from_dict(raw: dict[str, Any], origin: str = "<params>") -> Params:
    try:
        return Params.model_validate(raw)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in err['loc']) or '<root>'}: {err['msg']}" for err in exc.errors()
        )
        raise ConfigError(f"{origin}: invalid parameters: {problems}") from None


def load_params(path: str | Path = "params.yaml", overrides: dict[str, Any] | None = None) -> Params:
    """Read ``params.yaml``; ``overrides`` (nested or dotted keys) win over the file."""
    path = Path(path)
    raw: dict[str, Any] = {}
    if path.exists():
        try:
            raw = yaml.safe_load(path.read_text()) or {}
        except yaml.YAMLError as exc:
            raise ConfigError(f"{path}: not valid YAML: {exc}") from None
        if not isinstance(raw, dict):
            raise ConfigError(f"{path}: expected a mapping at the top level")
    if overrides:
        flat = {k: v for k, v in overrides.items() if "." in k}
        nested = {k: v for k, v in overrides.items() if "." not in k}
        raw = _merge(_merge(raw, nested), dotted_to_nested(flat))
    return params_from_dict(raw, origin=str(path))
