"""The promotion gate and an evaluation that cannot be trusted (reports/metrics.json evaluation_trusted 0):
refused while export.promotion.require_trusted_evaluation is true, the reason recorded on the version.
A real MLflow registry (SQLite in the test's folder)."""
from __future__ import annotations

import re

import pytest

from genloop.config import PromotionConfig
from genloop.core.trust import TRUSTED
from genloop.io import promotion

HASH = "a" * 64


@pytest.fixture(scope="module")
def client(tmp_path_factory, genloop_mlflow_env):
    from mlflow import MlflowClient

    root = tmp_path_factory.mktemp("registry")
    return root, MlflowClient(tracking_uri=f"sqlite:///{root}/mlflow.db", registry_uri=f"sqlite:///{root}/mlflow.db")


@pytest.fixture()
def model(client, request):
    root, mlflow_client = client
    name = re.sub(r"[^A-Za-z0-9_]+", "-", request.node.name).strip("-")[:80]
    mlflow_client.create_registered_model(name)
    return root, mlflow_client, name


def register_and_gate(model, fid: float, trusted: float | None, config: PromotionConfig = PromotionConfig()):
    root, client, name = model
    source = root / f"{name}-{fid}"
    source.mkdir()
    version = str(client.create_model_version(name, source=str(source)).version)
    metrics = {"fid": fid, **({} if trusted is None else {TRUSTED: trusted})}
    for key, value in {promotion.PARITY_TAG: "true", promotion.EVAL_HASH_TAG: HASH,
                       **promotion.metric_tags(metrics)}.items():
        client.set_model_version_tag(name, version, key, value)
    return promotion.gate(client, name, version, config, metrics, HASH)


def champion(model) -> str | None:
    found = promotion.current_champion(model[1], model[2])
    return str(found.version) if found else None


def test_first_version_with_an_untrusted_evaluation_does_not_become_champion(model):
    decision = register_and_gate(model, 1.67, trusted=0.0)
    assert not decision.promoted and champion(model) is None
    version = model[1].get_model_version(model[2], decision.version)
    assert version.tags["promotion.decision"] == "kept"
    assert "evaluation cannot be trusted" in version.description
    assert "require_trusted_evaluation" in version.description


def test_an_untrusted_better_score_keeps_the_trusted_champion(model):
    assert register_and_gate(model, 30.0, trusted=1.0).promoted
    decision = register_and_gate(model, 1.0, trusted=0.0)
    assert not decision.promoted and champion(model) == "1"


def test_the_setting_off_lets_the_gate_compare_an_untrusted_evaluation(model):
    lenient = PromotionConfig(require_trusted_evaluation=False)
    assert register_and_gate(model, 30.0, trusted=0.0, config=lenient).promoted
    assert register_and_gate(model, 20.0, trusted=0.0, config=lenient).promoted and champion(model) == "2"


def test_an_evaluation_from_before_the_trust_figure_is_compared_as_before(model):
    assert register_and_gate(model, 30.0, trusted=None).promoted
