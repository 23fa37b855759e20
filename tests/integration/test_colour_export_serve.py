"""Colour generators from training to the served PNG: a tiny colour VAE and GAN trained a few steps on
coloured squares, exported to ONNX with (N, 3, H, W) outputs (parity at batches 1, 64 and 7), a Triton
config with dims [3, H, W], and `genloop serve` answering infer with (n, 3, H, W) and /generate with an
RGB PNG. Real onnxruntime, a real server on a free port; nothing is mocked."""
from __future__ import annotations

import io
from pathlib import Path

import httpx
import numpy as np
import onnxruntime as ort
import pytest
import torch
from PIL import Image

from genloop.config import Params, TritonConfig
from genloop.io.datasets import to_tensor
from genloop.io.imaging import grid_image
from genloop.io.triton import graph_tensors, write_model
from genloop.serving import ServeSettings
from genloop.stages.export import export_onnx, parity
from genloop.stages.train import FITTERS, epoch_plan
from servers import ThreadServer
from tests.colour_data import coloured_squares

pytestmark = pytest.mark.integration
SIDE = 16
VAE, GAN = "genloop-vae", "genloop-gan"


def trained_sampler(kind: str) -> tuple[torch.nn.Module, int]:
    """A colour model trained for a few steps on coloured squares; its sampler in eval mode."""
    cfg = getattr(Params().train, kind).model_copy(update={"images": 128, "batch_size": 32})
    torch.manual_seed(0)
    data = to_tensor(coloured_squares(64, side=SIDE)[0])
    trainer = FITTERS[kind](cfg, data, data[:8], torch.device("cpu"), torch.Generator().manual_seed(0))
    for n in epoch_plan(cfg.images, len(data)):
        trainer.run_epoch(n)
    return trainer.sampler.eval(), cfg.latent_dim


@pytest.fixture(scope="module")
def exported(tmp_path_factory) -> dict[str, tuple[Path, int, dict[int, float]]]:
    folder = tmp_path_factory.mktemp("colour-onnx")
    out = {}
    for name, kind, file in ((VAE, "vae", "vae_decoder.onnx"), (GAN, "gan", "gan_generator.onnx")):
        sampler, latent = trained_sampler(kind)
        export_onnx(sampler, latent, folder / file)
        out[name] = (folder / file, latent, parity(sampler, latent, folder / file, [1, 64], seed=0))
    return out


def test_colour_onnx_outputs_are_channels_first_and_match_pytorch(exported):
    for path, latent, diffs in exported.values():
        assert sorted(diffs) == [1, 7, 64] and max(diffs.values()) < 1e-4
        session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        got = session.run(["image"], {"z": np.zeros((5, latent), np.float32)})[0]
        assert got.shape == (5, 3, SIDE, SIDE)


def test_triton_config_dims_are_channels_height_width(exported, tmp_path):
    for name, (path, _, _) in exported.items():
        _, outputs = graph_tensors(path)
        assert outputs[0].dims == (3, SIDE, SIDE)
        config = (write_model(tmp_path, name, path, TritonConfig()) / "config.pbtxt").read_text()
        assert f"dims: [ 3, {SIDE}, {SIDE} ]" in config


@pytest.fixture(scope="module")
def server(exported):
    settings = ServeSettings(models={name: path for name, (path, _, _) in exported.items()}, intra_op_threads=1,
                             max_batch_rows=32, max_batch_delay_ms=5.0, warmup_rows=[1])
    with ThreadServer(settings, guarded=False) as live:
        yield live


@pytest.mark.parametrize("name", [VAE, GAN])
def test_served_colour_model_infers_three_channels_and_generates_an_rgb_png(server, exported, name):
    _, latent, _ = exported[name]
    base = f"http://127.0.0.1:{server.port}/v2/models/{name}"
    z = np.random.default_rng(0).standard_normal((2, latent)).astype(np.float32)
    body = {"inputs": [{"name": "z", "shape": [2, latent], "datatype": "FP32", "data": z.ravel().tolist()}]}
    answer = httpx.post(f"{base}/infer", json=body, timeout=30)
    assert answer.status_code == 200, answer.text
    assert answer.json()["outputs"][0]["shape"] == [2, 3, SIDE, SIDE]
    metadata = httpx.get(base, timeout=30).json()
    assert metadata["outputs"][0]["shape"] == [-1, 3, SIDE, SIDE]
    png = httpx.get(f"{base}/generate", params={"n": 4, "seed": 1}, timeout=30)
    assert png.status_code == 200 and png.headers["content-type"] == "image/png"
    assert Image.open(io.BytesIO(png.content)).mode == "RGB"
    path = exported[name][0]
    expected = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(
        ["image"], {"z": np.random.default_rng(1).standard_normal((4, latent)).astype(np.float32)})[0]
    assert png.content == grid_image(expected)  # the model's three channels, drawn as they are


def test_infer_request_of_the_wrong_shape_is_a_400_naming_the_expected_shape(server, exported):
    _, latent, _ = exported[GAN]
    body = {"inputs": [{"name": "z", "shape": [1, 3, latent], "datatype": "FP32", "data": [0.0] * (3 * latent)}]}
    answer = httpx.post(f"http://127.0.0.1:{server.port}/v2/models/{GAN}/infer", json=body, timeout=30)
    assert answer.status_code == 400
    assert f"[-1, {latent}]" in answer.json()["error"]
