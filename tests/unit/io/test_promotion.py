"""Tests for genloop.io.promotion: the champion gate, promote by hand, rollback, and their CLI commands.

A real MLflow registry (SQLite in the test's folder); versions are registered from small folders,
each with the tags `genloop export` writes (parity, evaluation data hash, metrics).
"""
from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from click.testing import CliRunner

from genloop.io import promotion
from genloop.cli import main
from genloop.config import PromotionConfig

HASH_TODAY, HASH_BEFORE = "a" * 64, "b" * 64
FID = PromotionConfig()  # fid, minimize, margin 0


@pytest.fixture(scope="module")
def store(tmp_path_factory, genloop_mlflow_env):
    root = tmp_path_factory.mktemp("registry")
    uri = f"sqlite:///{root}/mlflow.db"
    from mlflow import MlflowClient

    return root, uri, MlflowClient(tracking_uri=uri, registry_uri=uri)


class Registry:
    """One registered model of its own per test, so tests never see each other's champions."""

    def __init__(self, root: Path, uri: str, client, name: str):
        self.root, self.uri, self.client, self.name = root, uri, client, name
        client.create_registered_model(name)

    def register(self, fid: float | None, parity: bool = True, eval_hash: str = HASH_TODAY) -> str:
        source = self.root / f"{self.name}-{len(self.versions())}"
        source.mkdir()
        (source / "model.onnx").write_bytes(b"not used here")
        version = self.client.create_model_version(self.name, source=str(source)).version
        tags = {promotion.PARITY_TAG: str(parity).lower(), promotion.EVAL_HASH_TAG: eval_hash}
        if fid is not None:
            tags.update(promotion.metric_tags({"fid": fid, "kid_mean": fid / 100}))
        for key, value in tags.items():
            self.client.set_model_version_tag(self.name, version, key, value)
        return str(version)

    def versions(self):
        return self.client.search_model_versions(f"name='{self.name}'")

    def gate(self, version: str, fid: float | None, config: PromotionConfig = FID, rescore=None,
             eval_hash: str = HASH_TODAY):
        metrics = {} if fid is None else {"fid": fid, "kid_mean": fid / 100}
        return promotion.gate(self.client, self.name, version, config, metrics, eval_hash, rescore)

    def add(self, fid: float, **kwargs):
        """Register a version the way export does, then pass it through the gate."""
        return self.gate(self.register(fid, eval_hash=kwargs.get("eval_hash", HASH_TODAY)), fid, **kwargs)

    def champion(self) -> str | None:
        found = promotion.current_champion(self.client, self.name)
        return str(found.version) if found else None

    def tags(self, version: str) -> dict[str, str]:
        return self.client.get_model_version(self.name, version).tags

    def description(self, version: str) -> str:
        return self.client.get_model_version(self.name, version).description or ""


@pytest.fixture()
def registry(store, request):
    root, uri, client = store
    return Registry(root, uri, client, re.sub(r"[^A-Za-z0-9_]+", "-", request.node.name).strip("-")[:80])


def test_first_version_that_passed_parity_becomes_champion(registry):
    decision = registry.add(30.0)
    assert decision.promoted and registry.champion() == decision.version == "1"
    assert decision.champion_version is None and decision.champion_value is None
    tags = registry.tags("1")
    assert tags["promotion.decision"] == "promoted" and "no champion yet" in registry.description("1")
    assert not {t for t in tags if t.startswith("promotion.") and t != "promotion.decision"}  # the rest: description
    assert promotion.champion_history(registry.client, registry.name) == ["1"]


def test_a_worse_version_keeps_the_champion_and_records_both_figures(registry):
    registry.add(30.0)
    decision = registry.add(31.5)
    assert not decision.promoted and registry.champion() == "1"
    assert (decision.candidate_value, decision.champion_value, decision.champion_version) == (31.5, 30.0, "1")
    tags = registry.tags(decision.version)
    assert tags["promotion.decision"] == "kept"
    described = registry.description(decision.version)
    assert "candidate: fid 31.5" in described and "champion before: v1, fid 30" in described
    assert "does not beat" in described and "31.5" in described


def test_a_better_version_becomes_champion(registry):
    registry.add(30.0)
    decision = registry.add(25.0)
    assert decision.promoted and registry.champion() == "2"
    assert registry.tags("2")["promotion.decision"] == "promoted"
    assert promotion.champion_history(registry.client, registry.name) == ["1", "2"]


def test_an_equal_score_is_not_an_improvement(registry):
    registry.add(30.0)
    assert not registry.add(30.0).promoted
    assert registry.champion() == "1"


def test_figures_equal_but_for_float_noise_do_not_promote(registry):
    registry.add(8.140290)
    decision = registry.add(8.140290 * (1 - 1e-9))  # what re-evaluating unchanged weights can give
    assert not decision.promoted and registry.champion() == "1"
    assert "does not beat" in decision.reason and "tolerance" in decision.reason


def test_a_real_improvement_beyond_the_tolerance_promotes(registry):
    registry.add(8.140290)
    decision = registry.add(8.140290 * (1 - 1e-4))
    assert decision.promoted and registry.champion() == decision.version


@pytest.mark.parametrize("direction, worse_sign", [("minimize", 1), ("maximize", -1)])
def test_tolerance_is_relative_to_the_champion_and_adds_to_the_margin(registry, direction, worse_sign):
    config = PromotionConfig(metric="fid", direction=direction, margin=1.0, tolerance=0.01)  # 1 + 1% of 100
    registry.add(100.0, config=config)
    assert not registry.add(100.0 - worse_sign * 1.9, config=config).promoted  # beats the margin, not margin + 1%
    decision = registry.add(100.0 - worse_sign * 2.1, config=config)
    assert decision.promoted and registry.champion() == decision.version
    assert "tolerance 0.01 (relative)" in registry.description(decision.version)


def test_margin_is_respected(registry):
    config = PromotionConfig(margin=2.0)
    registry.add(30.0, config=config)
    assert not registry.add(28.5, config=config).promoted  # better, but by less than the margin
    assert registry.champion() == "1"
    decision = registry.add(27.5, config=config)
    assert decision.promoted and registry.champion() == decision.version
    assert "margin 2," in registry.description(decision.version)


def test_higher_is_better_metrics_use_the_maximize_direction(registry):
    config = PromotionConfig(metric="kid_mean", direction="maximize", margin=0.01)
    registry.add(30.0, config=config)  # kid_mean 0.30
    assert not registry.add(20.0, config=config).promoted  # 0.20: lower is worse here
    assert registry.add(40.0, config=config).promoted  # 0.40 > 0.30 + 0.01
    assert registry.champion() == "3"


def test_a_version_without_the_metric_does_not_replace_a_champion(registry):
    registry.add(30.0)
    decision = registry.gate(registry.register(None), None)
    assert not decision.promoted and "no 'fid'" in decision.reason
    assert registry.champion() == "1"


def test_disabled_gate_never_moves_the_alias(registry):
    decision = registry.add(30.0, config=PromotionConfig(enabled=False))
    assert not decision.promoted and registry.champion() is None


def test_failed_parity_never_becomes_champion_even_forced(registry):
    bad = registry.register(1.0, parity=False)
    with pytest.raises(promotion.PromotionError, match="parity"):
        registry.gate(bad, 1.0)
    with pytest.raises(promotion.PromotionError, match="parity"):
        promotion.promote(registry.client, registry.name, bad)
    assert registry.champion() is None
    registry.add(30.0)
    with pytest.raises(promotion.PromotionError, match="parity"):
        promotion.promote(registry.client, registry.name, bad)
    assert registry.champion() == "2"


def test_promote_by_hand_moves_the_alias_past_the_gate(registry):
    registry.add(30.0)
    worse = registry.add(50.0).version
    assert registry.champion() == "1"
    assert promotion.promote(registry.client, registry.name, worse) == "1"
    assert registry.champion() == worse
    assert "promotion.forced" in registry.tags(worse)
    assert promotion.champion_history(registry.client, registry.name) == ["1", worse]


def test_rollback_restores_the_previous_champion_step_by_step(registry):
    registry.add(30.0)
    registry.add(20.0)
    registry.add(10.0)
    assert registry.champion() == "3"
    assert promotion.rollback(registry.client, registry.name) == ("3", "2")
    assert registry.champion() == "2"
    assert promotion.rollback(registry.client, registry.name) == ("2", "1")
    assert registry.champion() == "1"
    with pytest.raises(promotion.PromotionError, match="nothing to roll back to"):
        promotion.rollback(registry.client, registry.name)
    assert registry.champion() == "1"
    # A version promoted after a rollback stacks on the restored history.
    assert registry.add(5.0).promoted and registry.champion() == "4"
    assert promotion.rollback(registry.client, registry.name) == ("4", "1")


def test_rollback_without_any_champion_is_a_clear_error(registry):
    registry.register(30.0)
    with pytest.raises(promotion.PromotionError, match="no champion"):
        promotion.rollback(registry.client, registry.name)


def test_unknown_model_or_version_are_clear_errors(registry):
    with pytest.raises(promotion.PromotionError, match="no registered model 'nope'"):
        promotion.rollback(registry.client, "nope")
    registry.register(30.0)
    with pytest.raises(promotion.PromotionError, match=r"has no version '7' \(it has \[1\]\)"):
        promotion.promote(registry.client, registry.name, "7")


def test_champion_scored_on_other_data_is_rescored_before_comparing(registry):
    registry.add(30.0, eval_hash=HASH_BEFORE)  # looked good on yesterday's data
    calls = []

    def rescore(name: str, version: str) -> dict[str, float]:
        calls.append((name, version))
        return {"fid": 35.0}  # on today's data the champion scores worse than its tag says

    decision = registry.add(33.0, rescore=rescore)  # worse than 30 (old data), better than 35 (today's)
    assert calls == [(registry.name, "1")]
    assert decision.promoted and decision.rescored and decision.champion_value == 35.0
    assert "re-scored on this evaluation data" in registry.description(decision.version)
    assert registry.champion() == decision.version


def test_champion_on_the_same_data_is_not_rescored(registry):
    registry.add(30.0)

    def rescore(name: str, version: str) -> dict[str, float]:
        raise AssertionError("the champion was scored on this data; no re-scoring needed")

    decision = registry.add(33.0, rescore=rescore)
    assert not decision.promoted and not decision.rescored and decision.champion_value == 30.0


def test_champion_that_cannot_be_rescored_is_kept_with_the_reason(registry):
    registry.add(30.0, eval_hash=HASH_BEFORE)

    def rescore(name: str, version: str) -> dict[str, float]:
        raise promotion.PromotionError("its images are 8x8, today's are 28x28")

    decision = registry.add(10.0, rescore=rescore)
    assert not decision.promoted and "could not be re-scored" in decision.reason and "28x28" in decision.reason
    assert f"genloop promote {registry.name} {decision.version}" in decision.reason
    assert registry.champion() == "1"
    without = registry.add(10.0)  # and without a re-scorer at all
    assert not without.promoted and "other evaluation data" in without.reason


# ---- the CLI ----------------------------------------------------------------------------------------
def cli(registry, *args: str):
    root = registry.root / "cli-project"
    root.mkdir(exist_ok=True)
    return CliRunner().invoke(main, ["--root", str(root), "-S", f"mlflow.tracking_uri={registry.uri}",
                                     "-S", f"mlflow.artifact_root={registry.root / 'artifacts'}", *args])


def test_cli_promote_and_rollback(registry):
    registry.add(30.0)
    registry.add(40.0)
    result = cli(registry, "promote", registry.name, "2")
    assert result.exit_code == 0, result.output
    assert f"{registry.name}: champion is now v2 (was v1)" in result.output
    assert registry.champion() == "2"
    result = cli(registry, "rollback", registry.name)
    assert result.exit_code == 0, result.output
    assert "rolled back from v2 to v1" in result.output and registry.champion() == "1"


@pytest.mark.parametrize("args, message", [
    (("promote", "no-such-model", "1"), "no registered model 'no-such-model'"),
    (("promote", "{name}", "9"), "has no version '9'"),
    (("promote", "{name}", "2"), "parity check did not pass"),
    (("rollback", "{name}"), "nothing to roll back to"),
    (("rollback", "no-such-model"), "no registered model 'no-such-model'"),
])
def test_cli_errors_are_one_line_and_exit_1(registry, args, message):
    registry.add(30.0)
    registry.register(10.0, parity=False)
    result = cli(registry, *(a.format(name=registry.name) for a in args))
    assert result.exit_code == 1
    assert message in result.output and "Traceback" not in result.output
    assert registry.champion() == "1"


def test_cli_promote_needs_name_and_version(registry):
    result = cli(registry, "promote", registry.name)
    assert result.exit_code == 2 and "Missing argument 'VERSION'" in result.output


def test_history_tag_is_a_json_list(registry):
    registry.add(30.0)
    registry.add(20.0)
    raw = registry.client.get_registered_model(registry.name).tags[promotion.HISTORY_TAG]
    assert json.loads(raw) == ["1", "2"]


# ---- the differential-privacy bound (export.promotion.max_epsilon) ------------------------------------

def tag_epsilon(registry, version: str, epsilon: str) -> str:
    from genloop.io.tracking import EPSILON_TAG

    registry.client.set_model_version_tag(registry.name, version, EPSILON_TAG, epsilon)
    return version


BOUNDED = PromotionConfig(max_epsilon=5.0)


def test_a_version_whose_epsilon_exceeds_the_bound_is_refused_even_as_first(registry):
    version = tag_epsilon(registry, registry.register(20.0), "8.5")
    decision = registry.gate(version, 20.0, BOUNDED)
    assert not decision.promoted and registry.champion() is None
    assert "ε = 8.5 exceeds export.promotion.max_epsilon 5" in decision.reason
    tags = registry.tags(version)
    assert tags["promotion.decision"] == "kept"
    assert "privacy: epsilon 8.5, bound 5" in registry.description(version)


def test_a_non_private_version_is_refused_when_a_bound_is_set(registry):
    untagged = registry.register(20.0)
    infinite = tag_epsilon(registry, registry.register(19.0), "inf")
    for version, fid in ((untagged, 20.0), (infinite, 19.0)):
        decision = registry.gate(version, fid, BOUNDED)
        assert not decision.promoted and "not trained with differential privacy" in decision.reason
    assert registry.champion() is None


def test_a_version_within_the_bound_goes_through_the_metric_gate(registry):
    first = tag_epsilon(registry, registry.register(20.0), "4.0")
    assert registry.gate(first, 20.0, BOUNDED).promoted
    worse = tag_epsilon(registry, registry.register(25.0), "3.0")
    decision = registry.gate(worse, 25.0, BOUNDED)
    assert not decision.promoted and "does not beat" in decision.reason and registry.champion() == first


def test_a_version_within_the_bound_replaces_a_champion_outside_it_whatever_the_metric(registry):
    loose = registry.add(20.0).version  # no bound yet: a non-private champion
    assert registry.champion() == loose
    private = tag_epsilon(registry, registry.register(30.0), "2.0")
    decision = registry.gate(private, 30.0, BOUNDED)
    assert decision.promoted and f"champion v{loose} breaks the privacy bound" in decision.reason


def test_without_a_bound_epsilon_is_not_consulted(registry):
    version = tag_epsilon(registry, registry.register(20.0), "inf")
    decision = registry.gate(version, 20.0)
    assert decision.promoted and decision.epsilon is None and "privacy:" not in registry.description(version)


def _tag_shape(registry: Registry, version: str, shape: str) -> None:
    registry.client.set_model_version_tag(registry.name, version, promotion.IMAGE_SHAPE_TAG, shape)


def test_gate_refuses_a_version_whose_channels_differ_from_the_champions_and_says_why(registry):
    first = registry.register(30.0)
    _tag_shape(registry, first, "1x32x32")
    assert registry.gate(first, 30.0).promoted
    colour = registry.register(10.0)  # better by far, but in colour
    _tag_shape(registry, colour, "3x32x32")
    decision = registry.gate(colour, 10.0)
    assert not decision.promoted and registry.champion() == first
    assert "3x32x32" in decision.reason and "1x32x32" in decision.reason and "promote" in decision.reason
    resized = registry.register(10.0)
    _tag_shape(registry, resized, "1x64x64")
    assert not registry.gate(resized, 10.0).promoted
    same = registry.register(10.0)
    _tag_shape(registry, same, "1x32x32")
    assert registry.gate(same, 10.0).promoted


def test_a_gan_is_refused_under_a_name_holding_vae_versions_naming_both(registry):
    version = registry.register(10.0)
    registry.client.set_model_version_tag(registry.name, version, promotion.KIND_TAG, "vae")
    registry.client.set_model_version_tag(registry.name, version, promotion.CONDITIONAL_TAG, "false")
    with pytest.raises(promotion.PromotionError,
                       match=rf"{registry.name}' holds vae \(inputs z\) versions \(v{version}\); this export is a "
                             r"gan \(inputs z\).*Set export\.gan_model_name to a name of its own"):
        promotion.check_one_interface(registry.client, registry.name, "gan", False, "export.gan_model_name")
    with pytest.raises(promotion.PromotionError, match=r"this export is a vae \(inputs z, label\)"):
        promotion.check_one_interface(registry.client, registry.name, "vae", True, "export.vae_model_name")
    promotion.check_one_interface(registry.client, registry.name, "vae", False, "export.vae_model_name")  # same: fine


def test_versions_registered_without_interface_tags_clash_on_what_they_record(registry):
    untagged = registry.register(10.0)  # registered before the tags existed: nothing to compare
    promotion.check_one_interface(registry.client, registry.name, "gan", True, "export.gan_model_name")
    registry.client.set_model_version_tag(registry.name, untagged, promotion.KIND_TAG, "gan")
    promotion.check_one_interface(registry.client, registry.name, "gan", True, "export.gan_model_name")
    with pytest.raises(promotion.PromotionError, match=r"holds gan \(inputs not recorded\) versions"):
        promotion.check_one_interface(registry.client, registry.name, "vae", False, "export.vae_model_name")
