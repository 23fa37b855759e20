"""Evaluate marks each model's figures trusted or not (metrics.json evaluation_trusted, the reasons in
metrics_detail.json and MLflow); train warns before a budget of hundreds of epochs on a tiny set."""
from __future__ import annotations

import logging
from types import SimpleNamespace

import numpy as np
import pytest

from genloop.config import load_params
from genloop.core import trust
from genloop.core.metric_names import HEADLINE_METRICS
from genloop.paths import ProjectPaths
from genloop.stages.evaluate import headline, judge_trust
from genloop.stages.train import warn_if_overlong


def test_evaluate_marks_each_model_names_the_classes_and_metrics_json_keeps_the_mark(tmp_path, caplog):
    paths = ProjectPaths.at(tmp_path)
    paths.data.mkdir(parents=True)
    paths.manifest.write_text("id,label,class_name\n0,0,circle\n1,1,square\n2,2,triangle\n")
    data = SimpleNamespace(classifier_accuracy=0.154, held_out_labels=np.array([0, 1, 2] * 100))
    metrics = {"vae": {"fid": 1.67}, "gan": {"fid": 30.0}}
    with caplog.at_level(logging.WARNING, logger="genloop"):
        doubts = judge_trust(load_params(tmp_path / "params.yaml"), paths, data, metrics, {"fid": 7.59})
    assert len(doubts["vae"]) == 2 and len(doubts["gan"]) == 1  # chance for both; the floor for the VAE
    assert "circle, square, triangle" in doubts["gan"][0]
    assert metrics["vae"][trust.TRUSTED] == metrics["gan"][trust.TRUSTED] == 0.0
    records = {id(r): r for r in caplog.records}.values()  # a record seen by two capturing handlers once
    assert sum("evaluation cannot be trusted" in r.getMessage() for r in records) == 2
    written = headline(metrics, {k: 1.0 for k in HEADLINE_METRICS})
    assert written["vae"][trust.TRUSTED] == 0.0 and written["gan"][trust.TRUSTED] == 0.0


def test_a_sound_evaluation_is_marked_trusted(tmp_path):
    data = SimpleNamespace(classifier_accuracy=0.97, held_out_labels=np.arange(500) % 10)
    metrics = {"vae": {"fid": 15.0}, "gan": {"fid": 6.8}}
    doubts = judge_trust(load_params(tmp_path / "params.yaml"), ProjectPaths.at(tmp_path), data, metrics,
                         {"fid": 4.85})
    assert doubts == {"vae": [], "gan": []}
    assert metrics["vae"][trust.TRUSTED] == metrics["gan"][trust.TRUSTED] == 1.0


@pytest.fixture()
def mlflow_run(tmp_path, genloop_mlflow_env):
    import mlflow

    mlflow.set_tracking_uri(f"sqlite:///{tmp_path}/mlflow.db")
    client = mlflow.MlflowClient()
    run = client.create_run(client.create_experiment("budget"))
    return client, run.info.run_id


def test_train_warns_and_tags_the_run_before_hundreds_of_epochs_on_a_tiny_set(mlflow_run, caplog):
    client, run_id = mlflow_run
    with caplog.at_level(logging.WARNING, logger="genloop"):
        warn_if_overlong("gan", 400_000, 94, 200, run_id)
    assert "train.gan.images" in caplog.text and "4,256 epochs" in caplog.text
    assert "train.gan.images" in client.get_run(run_id).data.tags[trust.BUDGET_TAG]


def test_train_on_a_sized_set_gives_no_warning(mlflow_run, caplog):
    client, run_id = mlflow_run
    with caplog.at_level(logging.WARNING, logger="genloop"):
        warn_if_overlong("gan", 400_000, 10_000, 200, run_id)
    assert caplog.text == "" and trust.BUDGET_TAG not in client.get_run(run_id).data.tags
