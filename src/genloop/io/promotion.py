"""The promotion gate: which registered version serves as ``champion``, and its history.

A new version takes the ``champion`` alias only when its primary metric beats the champion's by more
than the margin plus a relative tolerance (so float noise between equal models never flips it), both scored on the same evaluation data (a tag on each version records that data's hash;
a champion scored on other data is re-scored on today's first). A version whose ONNX parity check
failed never becomes champion, not even by hand. Every move is appended to a registered-model tag,
so ``rollback`` can restore the previous champion.
"""
from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

from genloop.config import PromotionConfig
from genloop.core.promotion import (DECISION_PREFIX, EPSILON_TAG, IMAGE_SHAPE_TAG, PromotionDecision, PromotionError,
                                    beats, metric_tags, metrics_from_tags, privacy_refusal, required_gain)
from genloop.core.trust import TRUSTED
from genloop.io import tracking

CHAMPION = "champion"
HISTORY_TAG = "champion_history"  # registered-model tag: JSON list of versions, oldest first, last = champion
PARITY_TAG = "parity_passed"
ENCODER_TAG = "genloop.encoder"  # VAE version tag: its encoder's artifact path on the version's run (io.encoder_onnx)
EVAL_HASH_TAG = "eval_data_hash"

# Re-scores a registered version on today's evaluation data: (name, version) -> {metric: value}.
Rescorer = Callable[[str, str], dict[str, float]]


def version_epsilon(version) -> float:
    """The DP ε a registered version's training spent (tag ``genloop.epsilon``); inf when it was not
    trained privately or carries no such tag (registered before the tag existed)."""
    raw = version.tags.get(EPSILON_TAG)
    try:
        return float(raw) if raw is not None else float("inf")
    except ValueError:
        return float("inf")


def shape_tag(shape: tuple[int, int, int]) -> str:
    """``IMAGE_SHAPE_TAG``'s value: channels x height x width."""
    return "x".join(str(int(d)) for d in shape)


def shape_refusal(candidate, champion) -> str | None:
    """Why ``candidate`` cannot replace ``champion`` automatically: it makes images of other channels or
    size, so clients of the served champion would get another shape. None when both agree, or when either
    predates the tag (then re-scoring the champion on today's data fails with its own reason)."""
    new, old = candidate.tags.get(IMAGE_SHAPE_TAG), champion.tags.get(IMAGE_SHAPE_TAG)
    if new is None or old is None or new == old:
        return None
    return (f"makes {new} images (CxHxW) but champion v{champion.version} makes {old}: a change of channels or "
            f"size is never promoted automatically; `genloop promote {candidate.name} {candidate.version}` "
            "decides by hand")

KIND_TAG = "model_kind"  # version tag: vae or gan (what genloop export registered)
CONDITIONAL_TAG = "genloop.conditional"  # version tag: "true" for a (z, label) graph, "false" for z alone


def interface_of(tags: dict[str, str]) -> str:
    """A version's kind and inputs (from its tags) as a phrase, e.g. ``gan (inputs z)``."""
    inputs = {"true": "inputs z, label", "false": "inputs z"}.get(tags.get(CONDITIONAL_TAG, ""), "inputs not recorded")
    return f"{tags.get(KIND_TAG, '?')} ({inputs})"


def check_one_interface(client, name: str, kind: str, conditional: bool, key: str) -> None:
    """Refuse to register a ``kind`` model under ``name`` when ``name`` already holds versions of another kind
    or other inputs: clients of the name, the promotion gate's comparison and serving all assume one interface.
    ``key`` is the setting that chose ``name`` (said in the message)."""
    wanted = {KIND_TAG: kind, CONDITIONAL_TAG: str(conditional).lower()}
    for version in sorted(client.search_model_versions(f"name='{name}'"), key=lambda v: -int(v.version)):
        clash = [k for k, v in wanted.items() if version.tags.get(k, v) != v]  # a tag not recorded: no clash
        if clash:
            raise PromotionError(
                f"registered model {name!r} holds {interface_of(version.tags)} versions (v{version.version}); this "
                f"export is a {interface_of(wanted)}: a registered model holds one kind and one interface. Set {key} "
                "to a name of its own")


# ---- registry access (MlflowClient) ---------------------------------------------------------------
def registered_version(client, name: str, version: str):
    """``name`` v``version`` from the registry, or a PromotionError listing the versions it has."""
    _registered(client, name)
    try:
        return client.get_model_version(name, str(version))
    except tracking.registry_errors():
        versions = sorted(int(v.version) for v in client.search_model_versions(f"name='{name}'"))
        raise PromotionError(f"{name} has no version {version!r} (it has {versions or 'none'})") from None


def _registered(client, name: str):
    try:
        return client.get_registered_model(name)
    except tracking.registry_errors():
        names = sorted(m.name for m in client.search_registered_models())
        raise PromotionError(f"no registered model {name!r} in this MLflow store (it has {names or 'none'}); "
                             "run `genloop export` first") from None


def download_onnx(model_uri: str, dst: Path) -> Path:
    """The ONNX file of a registered model (``models:/NAME@champion``, ``models:/NAME/3``), downloaded into ``dst``."""
    try:
        local = tracking.download_artifacts(model_uri, dst)
    except tracking.registry_errors() as exc:
        raise PromotionError(f"{model_uri}: cannot download from the MLflow registry "
                             f"({tracking.current_uri()}): {getattr(exc, 'message', exc)}") from None
    found = sorted(local.rglob("*.onnx")) if local.is_dir() else [local]
    if not found or found[0].suffix != ".onnx":
        raise PromotionError(f"{model_uri}: no .onnx file among its artifacts ({local})")
    return found[0]


def current_champion(client, name: str):
    """The version holding the ``champion`` alias, or None."""
    _registered(client, name)
    try:
        return client.get_model_version_by_alias(name, CHAMPION)
    except tracking.registry_errors():
        return None


def champion_history(client, name: str) -> list[str]:
    raw = _registered(client, name).tags.get(HISTORY_TAG)
    return [str(v) for v in json.loads(raw)] if raw else []


def _require_parity(version) -> None:
    if version.tags.get(PARITY_TAG) != "true":
        raise PromotionError(
            f"{version.name} v{version.version} cannot be champion: its ONNX parity check did not pass or was "
            f"not recorded (tag {PARITY_TAG}={version.tags.get(PARITY_TAG, 'missing')!r})")


def set_champion(client, name: str, version: str) -> None:
    """Move the alias and append the version to the history (the one place both change)."""
    client.set_registered_model_alias(name, CHAMPION, str(version))
    history = champion_history(client, name)
    if not history or history[-1] != str(version):
        history.append(str(version))
    client.set_registered_model_tag(name, HISTORY_TAG, json.dumps(history))


def promote(client, name: str, version: str, reason: str = "promoted by hand") -> str | None:
    """Make ``version`` champion regardless of metrics (still refusing a failed parity check).

    Returns the version that was champion before, if any.
    """
    target = registered_version(client, name, version)
    _require_parity(target)
    before = current_champion(client, name)
    set_champion(client, name, str(target.version))
    client.set_model_version_tag(name, str(target.version), f"{DECISION_PREFIX}forced", reason)
    client.update_model_version(name, str(target.version), description=(
        f"{name} v{target.version} made champion by hand ({reason}), skipping the metric gate; "
        f"champion before: {'v' + str(before.version) if before is not None else 'none'}"))
    return str(before.version) if before is not None else None


def rollback(client, name: str) -> tuple[str, str]:
    """Give ``champion`` back to the version that held it before; returns (from, to)."""
    current = current_champion(client, name)
    if current is None:
        raise PromotionError(f"{name} has no champion to roll back from")
    history = champion_history(client, name)
    if history and history[-1] == str(current.version):
        history = history[:-1]
    # Skip earlier champions that were deleted since, or that never passed parity.
    while history:
        candidate = history[-1]
        try:
            previous = registered_version(client, name, candidate)
            _require_parity(previous)
        except PromotionError:
            history.pop()
            continue
        client.set_registered_model_alias(name, CHAMPION, str(previous.version))
        client.set_registered_model_tag(name, HISTORY_TAG, json.dumps(history))
        client.set_model_version_tag(name, str(current.version), f"{DECISION_PREFIX}rolled_back", "true")
        return str(current.version), str(previous.version)
    raise PromotionError(f"{name}: nothing to roll back to; v{current.version} is the only champion on record")


def _decided_before_metrics(candidate, champion, config: PromotionConfig, value: float | None,
                            epsilon: float | None, trusted: float | None = None) -> tuple[bool, str] | None:
    """(promoted, reason) when the gate decides without comparing metrics: off, another image shape, a
    privacy bound, no champion yet, already champion, or no metric; None when the metrics decide."""
    if not config.enabled:
        return False, "export.promotion.enabled is false"
    if config.require_trusted_evaluation and trusted == 0:
        return False, ("its evaluation cannot be trusted (evaluation_trusted 0 in reports/metrics.json; the run "
                       "summary and reports/index.html say why); `genloop promote` decides by hand, or "
                       "export.promotion.require_trusted_evaluation: false lets the gate compare it anyway")
    reshaped = shape_refusal(candidate, champion) if champion is not None else None
    if reshaped is not None:
        return False, reshaped
    refused = privacy_refusal(epsilon, config) if epsilon is not None else None
    if refused is not None:
        return False, refused
    if champion is not None and str(champion.version) != str(candidate.version):
        champion_refused = privacy_refusal(version_epsilon(champion), config)
        if champion_refused is not None:  # a bound set since: a version within it replaces one outside it
            return True, f"champion v{champion.version} breaks the privacy bound: {champion_refused}"
    if champion is None:
        return True, "no champion yet; the first version that passed parity becomes champion"
    if str(champion.version) == str(candidate.version):
        return False, "already champion"
    if value is None:
        return False, f"no {config.metric!r} for this version (run `genloop evaluate` before export)"
    return None


def gate(client, name: str, version: str, config: PromotionConfig, candidate_metrics: dict[str, float],
         eval_hash: str, rescore: Rescorer | None = None) -> PromotionDecision:
    """Decide whether ``version`` (already registered and tagged) replaces the champion; apply and record it.

    ``rescore`` scores the champion on today's evaluation data when its ``eval_data_hash`` differs;
    without one such a champion is kept, since figures from different data do not compare.
    """
    candidate = registered_version(client, name, version)
    _require_parity(candidate)
    value = candidate_metrics.get(config.metric)
    champion = current_champion(client, name)
    epsilon = version_epsilon(candidate) if config.max_epsilon is not None else None

    def decide(promoted: bool, reason: str, champion_value: float | None = None,
               rescored: bool = False) -> PromotionDecision:
        decision = PromotionDecision(
            name, str(candidate.version), promoted, config.metric, config.direction, config.margin,
            None if value is None else float(value), str(champion.version) if champion else None,
            champion_value, rescored, reason, config.tolerance, epsilon, config.max_epsilon)
        if promoted:
            set_champion(client, name, str(candidate.version))
        for key, tag in decision.tags().items():
            client.set_model_version_tag(name, str(candidate.version), key, tag)
        client.update_model_version(name, str(candidate.version), description=decision.description())
        return decision

    early = _decided_before_metrics(candidate, champion, config, value, epsilon, candidate_metrics.get(TRUSTED))
    if early is not None:
        return decide(*early)

    try:
        champion_value, rescored = _champion_value(client, name, champion, config, eval_hash, rescore)
    except PromotionError as exc:
        return decide(False, f"{exc}" if rescore is None else
                      f"{exc}; `genloop promote {name} {candidate.version}` decides by hand")
    if champion_value is None:
        return decide(True, f"champion v{champion.version} has no {config.metric!r} to compare with", None, rescored)

    champion_value = float(champion_value)
    better = "lower" if config.direction == "minimize" else "higher"
    rescored_note = " (re-scored on this evaluation data)" if rescored else ""
    figures = (f"{config.metric} {float(value):.6g} vs champion v{champion.version} {champion_value:.6g}{rescored_note}, "
               f"margin {config.margin:g} + tolerance {config.tolerance:g} (relative), {better} is better")
    if beats(float(value), champion_value, config):
        return decide(True, f"beats the champion: {figures}", champion_value, rescored)
    return decide(False, f"does not beat the champion: {figures}", champion_value, rescored)


def _champion_value(client, name: str, champion, config: PromotionConfig, eval_hash: str,
                    rescore: Rescorer | None) -> tuple[float | None, bool]:
    """The champion's figure on this evaluation data: from its tags when scored on it, else re-scored
    (and the new figure tagged); (value, re-scored). PromotionError says why there is none to compare."""
    if champion.tags.get(EVAL_HASH_TAG) == eval_hash:
        return metrics_from_tags(champion.tags).get(config.metric), False
    if rescore is None:
        raise PromotionError(f"champion v{champion.version} was scored on other evaluation data "
                             f"({champion.tags.get(EVAL_HASH_TAG, 'unknown')} != {eval_hash}) and no re-scorer "
                             "is available")
    try:
        value = rescore(name, str(champion.version)).get(config.metric)
    except PromotionError as exc:
        raise PromotionError(f"champion v{champion.version} was scored on other evaluation data and could not "
                             f"be re-scored ({exc})") from None
    if value is not None:
        client.set_model_version_tag(name, str(champion.version), f"rescored.{eval_hash[:12]}.{config.metric}",
                                     repr(float(value)))
    return value, True
