"""Seeds derived from ``params.seed``, named so that every stage draws the same streams."""
from __future__ import annotations


def sampling_seed(seed: int) -> int:
    """The z stream a generator is scored on (evaluate, the promotion gate's re-scoring, sweeps); apart
    from ``seed`` itself, which trains, so scoring never replays training's first draws."""
    return seed + 1
