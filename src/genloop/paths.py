"""Where each stage reads and writes, relative to one project root.

Every stage takes a ``ProjectPaths`` so tests can run the whole loop inside a temporary folder.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


# The ONNX file each model kind is exported to (models/), and so served from.
ONNX_FILES = {"vae": "vae_decoder.onnx", "gan": "gan_generator.onnx"}


@dataclass(frozen=True)
class ProjectPaths:
    root: Path

    @classmethod
    def at(cls, root: str | Path = ".") -> "ProjectPaths":
        return cls(Path(root).resolve())

    @property
    def params(self) -> Path:
        return self.root / "params.yaml"

    @property
    def data(self) -> Path:
        return self.root / "data"

    @property
    def images(self) -> Path:
        return self.data / "images.npy"

    @property
    def manifest(self) -> Path:
        return self.data / "manifest.csv"

    @property
    def data_dvc(self) -> Path:
        return self.root / "data.dvc"

    @property
    def clean(self) -> Path:
        return self.root / "outputs" / "clean"

    @property
    def augment(self) -> Path:
        return self.root / "outputs" / "augment"

    def train(self, model: str) -> Path:
        return self.root / "outputs" / "train" / model

    @property
    def models(self) -> Path:
        return self.root / "models"

    def onnx(self, kind: str) -> Path:
        return self.models / ONNX_FILES[kind]

    @property
    def reports(self) -> Path:
        return self.root / "reports"

    @property
    def metrics(self) -> Path:
        return self.reports / "metrics.json"

    @property
    def mlflow_dir(self) -> Path:
        return self.root / "mlflow"
