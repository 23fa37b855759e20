"""The promotion rule: when a candidate's figures beat the champion's, and the record of that decision.

Pure: numbers and config in, a decision out. The registry side (aliases, tags, downloads) is
``genloop.io.promotion``."""
from __future__ import annotations

from dataclasses import dataclass

from genloop.config import PromotionConfig
from genloop.errors import GenloopError

EPSILON_TAG = "genloop.epsilon"  # version tag: the DP ε its training spent (inf: not private)
IMAGE_SHAPE_TAG = "genloop.image_shape"  # version tag: CxHxW of the images it makes, e.g. 1x28x28, 3x32x32
METRIC_PREFIX = "metric."
DECISION_PREFIX = "promotion."


class PromotionError(GenloopError, ValueError):
    """A promotion or rollback that cannot happen; the message says why."""


@dataclass(frozen=True)
class PromotionDecision:
    name: str
    version: str
    promoted: bool
    metric: str
    direction: str
    margin: float
    candidate_value: float | None
    champion_version: str | None
    champion_value: float | None
    rescored: bool
    reason: str
    tolerance: float = 0.0
    epsilon: float | None = None  # the candidate's spent DP ε (inf: not private); None: not read
    max_epsilon: float | None = None  # export.promotion.max_epsilon in force, if any

    def tags(self) -> dict[str, str]:
        """The one registry tag (filterable: ``promotion.decision = 'kept'``); the rest is the description."""
        return {f"{DECISION_PREFIX}decision": "promoted" if self.promoted else "kept"}

    def description(self) -> str:
        """The decision in words, for the model version's description (MLflow shows it on the version page)."""
        def fmt(value: float | None) -> str:
            return "none" if value is None else f"{value:.6g}"

        champion = (f"v{self.champion_version}, {self.metric} {fmt(self.champion_value)}"
                    + (" (re-scored on this evaluation data)" if self.rescored else "")) if self.champion_version else "none"
        lines = [self.summary(),
                 f"metric: {self.metric} ({self.direction}), margin {self.margin:g}, tolerance {self.tolerance:g} (relative)",
                 f"candidate: {self.metric} {fmt(self.candidate_value)}",
                 f"champion before: {champion}"]
        if self.max_epsilon is not None:
            lines.append(f"privacy: epsilon {fmt(self.epsilon)}, bound {fmt(self.max_epsilon)}")
        return "\n".join(lines)

    def record(self) -> dict[str, str]:
        """Every figure of the decision, as export.json keeps it."""
        def fmt(value: float | None) -> str:
            return "none" if value is None else repr(value)

        return {f"{DECISION_PREFIX}{k}": v for k, v in {
            "decision": "promoted" if self.promoted else "kept",
            "metric": self.metric, "direction": self.direction, "margin": repr(self.margin),
            "tolerance": repr(self.tolerance),
            "candidate_value": fmt(self.candidate_value), "champion_value": fmt(self.champion_value),
            "champion_version": self.champion_version or "none", "rescored": str(self.rescored).lower(),
            "reason": self.reason,
            **({"epsilon": fmt(self.epsilon), "max_epsilon": fmt(self.max_epsilon)}
               if self.max_epsilon is not None else {}),
        }.items()}

    def summary(self) -> str:
        verb = "promoted to champion" if self.promoted else "not promoted"
        return f"{self.name} v{self.version} {verb}: {self.reason}"


def metric_tags(metrics: dict[str, float]) -> dict[str, str]:
    return {f"{METRIC_PREFIX}{k}": repr(float(v)) for k, v in metrics.items()}


def metrics_from_tags(tags: dict[str, str]) -> dict[str, float]:
    return {k[len(METRIC_PREFIX):]: float(v) for k, v in tags.items() if k.startswith(METRIC_PREFIX)}


def privacy_refusal(epsilon: float, config: PromotionConfig) -> str | None:
    """Why a version with this ε may not serve under ``max_epsilon``; None when it may (or no bound is set)."""
    bound = config.max_epsilon
    if bound is None or epsilon <= bound:
        return None
    if epsilon == float("inf"):
        return (f"not trained with differential privacy (no finite {EPSILON_TAG} tag) while "
                f"export.promotion.max_epsilon is {bound:g}")
    return f"its privacy budget ε = {epsilon:.4g} exceeds export.promotion.max_epsilon {bound:g}"


def required_gain(champion: float, config: PromotionConfig) -> float:
    """How much better than ``champion`` a candidate must score: the margin plus the relative tolerance."""
    return config.margin + config.tolerance * abs(champion)


def beats(candidate: float, champion: float, config: PromotionConfig) -> bool:
    """Better than the champion by more than margin + tolerance, in the configured direction."""
    if config.direction == "minimize":
        return candidate < champion - required_gain(champion, config)
    return candidate > champion + required_gain(champion, config)
