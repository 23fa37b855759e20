"""A user's folder with more classes than the digits' ten runs end to end under the shipped params.yaml:
clean keeps every class (clean.labels: all) and evaluate sizes its classifier from the data."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

REPO_ROOT = Path(__file__).resolve().parents[3]
CLASSES = 12
TINY = {"train.vae.images": 600, "train.gan.images": 600, "train.threads": 1, "augment.copies": 0,
        "evaluate.classifier_epochs": 2, "evaluate.kid_subsets": 5, "evaluate.kid_subset_size": 20,
        "evaluate.is_splits": 2, "evaluate.audit_images": 0, "evaluate.explain": False,
        "evaluate.tstr_images": 0}


def twelve_class_folder(root: Path, per_class: int = 20, side: int = 12) -> Path:
    """class_00 .. class_11, each a colour of its own with noise, as RGB PNGs."""
    rng = np.random.default_rng(0)
    folder = root / "shapes"
    for c in range(CLASSES):
        (folder / f"class_{c:02d}").mkdir(parents=True)
        colour = rng.integers(0, 256, size=3)
        for i in range(per_class):
            image = np.clip(colour + rng.normal(0, 30, size=(side, side, 3)), 0, 255).astype(np.uint8)
            Image.fromarray(image, "RGB").save(folder / f"class_{c:02d}" / f"{i:03d}.png")
    return folder


@pytest.fixture(scope="module")
def shipped(tmp_path_factory, genloop_mlflow_env):
    from genloop.config import load_params
    from genloop.paths import ProjectPaths

    root = tmp_path_factory.mktemp("twelve")
    params = load_params(REPO_ROOT / "params.yaml", {
        **TINY, "collect.source": f"folder:{twelve_class_folder(root)}",
        "mlflow.tracking_uri": f"sqlite:///{root}/mlflow/mlflow.db",
        "mlflow.artifact_root": str(root / "mlflow" / "artifacts")})
    return params, ProjectPaths.at(root)


def test_a_twelve_class_folder_runs_end_to_end_with_the_shipped_params(shipped):
    from genloop.stages.augment import augment
    from genloop.stages.clean import clean
    from genloop.stages.collect import collect
    from genloop.stages.evaluate import detail_file, evaluate
    from genloop.stages.train import train_model

    params, paths = shipped
    assert params.clean.labels == "all"  # the shipped default, not a list of the digits' labels
    collect(params.collect, paths, version_with_dvc=False)
    result = clean(params.clean, paths)
    assert result.quarantined == 0 and result.passed == CLASSES * 20
    augment(params.augment, paths, params.seed)
    for kind in ("vae", "gan"):
        train_model(kind, params, paths, parent_run_id=None)
    evaluate(params, paths)
    metrics = json.loads(paths.metrics.read_text())
    assert np.isfinite(metrics["gan"]["fid"]) and np.isfinite(metrics["vae"]["fid"])
    detail = json.loads(detail_file(paths).read_text())
    assert detail["classifier"]["num_classes"] == CLASSES
    assert sorted(detail["class_names"].values()) == [f"class_{c:02d}" for c in range(CLASSES)]
    assert len(detail["class_shares"]["real_train"]) == CLASSES


def test_class_count_follows_the_data_not_clean_labels():
    from genloop.evaluation.scoring import class_count

    assert class_count(np.array([0, 3, 11]), np.array([2, 5])) == 12
    assert class_count(np.arange(10), np.array([], dtype=np.int64)) == 10
