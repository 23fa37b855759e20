"""A training that diverged (a loss or metric gone NaN or infinite) must fail at that epoch, not produce a NaN
model that reports "Completed" and breaks evaluate or export later."""
from __future__ import annotations

import math

from genloop.errors import GenloopError


class DivergedError(GenloopError, ArithmeticError):
    """A training's loss went non-finite; the message names the epoch and the settings to lower."""


LR_KEYS = {"vae": "lr", "gan": "lr_g / lr_d"}


def check_finite(kind: str, epoch: int, metrics: dict[str, float]) -> None:
    """Raise DivergedError when any of an epoch's figures is NaN or infinite."""
    bad = {name: value for name, value in metrics.items() if not math.isfinite(value)}
    if bad:
        shown = ", ".join(f"{name} {value}" for name, value in bad.items())
        raise DivergedError(f"train {kind}: the training diverged at epoch {epoch} ({shown}); nothing was saved from "
                            f"this epoch. Lower train.{kind}.{LR_KEYS.get(kind, 'lr')} (or the batch size's "
                            "learning-rate scale) and train again")
