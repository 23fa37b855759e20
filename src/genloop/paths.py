"""Where each stage reads and writes, relative to one project root.

Every stage takes a ``ProjectPaths`` so tests can run the whole loop inside a temporary folder.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


# The ONNX file each model kind is exported to (models/), and so served from.
ONNX_FILES = {"vae": "vae_decoder.onnx", "gan": "gan_generator.onnx"}
ENCODER_FILE = "vae_encoder.onnx"  # the VAE's encoder, exported beside its decoder (genloop.io.encoder_onnx)


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

    def training_state(self, kind: str) -> Path:
        """The per-epoch state of an unfinished training: outside train's DVC outputs, so `dvc repro` keeps it."""
        return self.root / "outputs" / "checkpoints" / kind / "last.pt"

    @property
    def classifier(self) -> Path:
        """The evaluation's feature networks, reused while the training split and settings are unchanged."""
        return self.root / "outputs" / "evaluate" / "classifier.pt"

    @property
    def stamps(self) -> Path:
        """The flow's stage-skipping stamps (genloop.pipeline.caching)."""
        return self.root / "outputs" / ".stamps"

    @property
    def sweeps(self) -> Path:
        """Where sweep trials make their private workspaces by default."""
        return self.root / "outputs" / "sweeps"

    @property
    def validation_report(self) -> Path:
        return self.reports / "validation.json"

    @property
    def near_duplicates(self) -> Path:
        return self.reports / "near_duplicates.csv"

    @property
    def data_docs(self) -> Path:
        return self.reports / "data_docs"
