"""The VAE's encoder follows its decoder's champion: when the champion moves to a version that carries
no encoder, the encoder served so far (another training's weights) is unloaded, never kept beside the
new decoder. Real onnxruntime sessions and batchers on the explorer's tiny models."""
from __future__ import annotations

import asyncio

import pytest

from explorer_models import ENCODER, make_models
from genloop.serving.live import LiveModels
from genloop.serving.metrics import ServingMetrics
from genloop.serving.sessions import ModelHolder
from genloop.serving.settings import CompanionGone, ServeSettings, ServingError

pytestmark = pytest.mark.integration


class MovedChampion:
    """A registry whose champion moved to v2, exported without an encoder (as ChampionSource says it)."""

    registry = True

    def __init__(self, models):
        self.models = models

    def latest(self, name: str) -> str:
        return "2"

    def fetch(self, name: str, version: str):
        if name == ENCODER:
            raise CompanionGone(f"genloop-vae v{version} carries no encoder")
        return self.models[name]

    def close(self) -> None:
        pass


def test_an_encoder_whose_decoder_moved_to_a_version_without_one_is_unloaded(tmp_path):
    models = make_models(tmp_path)
    settings = ServeSettings(models=models, versions={name: "1" for name in models}, intra_op_threads=1,
                             warmup_rows=[1])
    holder = ModelHolder(settings)
    holder.load()

    async def poll_once() -> tuple[set[str], dict[str, str]]:
        live = LiveModels(settings, holder, ServingMetrics(), MovedChampion(models))
        live.start()
        try:
            for name in models:
                try:
                    await live.load(name, polled=True)
                except ServingError:
                    pass
            return set(live.slots), dict(live.errors)
        finally:
            await live.stop()

    served, errors = asyncio.run(poll_once())
    assert served == set(models) - {ENCODER}, "the decoder and the GAN swapped in; the encoder gone"
    assert ENCODER not in holder.models
    assert "carries no encoder" in errors[ENCODER]
