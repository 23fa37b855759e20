"""Tests for genloop.serving: `genloop serve` over the Open Inference Protocol (KServe V2 REST).

Real servers (uvicorn on a free 127.0.0.1 port, in a thread or a subprocess), real clients
(tritonclient.http, httpx, schemathesis), real onnxruntime on tiny ONNX generators exported from
untrained genloop modules. Nothing is mocked.
"""
from __future__ import annotations

import asyncio
import gzip
import io
import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import httpx
import numpy as np
import onnxruntime as ort
import pytest
import torch
from click.testing import CliRunner

from genloop.stages.export import export_onnx
from genloop.core.models.gan import Generator
from genloop.core.models.vae import Decoder
from genloop.serving import ServingError
from genloop.serving.command import serve_command
from genloop.serving.sessions import ModelHolder
from servers import (
    CHANNELS, GAN, LATENT, MAX_BATCH_ROWS, MAX_BODY, MAX_ROWS, SIDE, TOKEN, TOL, VAE, ThreadServer, free_port,
    infer_body, latents, metric_samples, run_schemathesis, settings_for, wait_ready,
)

pytestmark = pytest.mark.integration



# ---- fixtures: tiny ONNX models and live servers ------------------------------------------------
@pytest.fixture(scope="module")
def models_dir(tmp_path_factory) -> Path:
    """vae_decoder.onnx and gan_generator.onnx as `genloop export` names them, from untrained modules."""
    folder = tmp_path_factory.mktemp("serving-models")
    torch.manual_seed(0)
    export_onnx(Decoder(LATENT, CHANNELS, SIDE, SIDE).eval(), LATENT, folder / "vae_decoder.onnx")
    export_onnx(Generator(LATENT, CHANNELS, SIDE, SIDE).eval(), LATENT, folder / "gan_generator.onnx")
    return folder


@pytest.fixture(scope="module")
def reference(models_dir):
    """onnxruntime sessions on the same files, outside the server: the expected answers."""
    sessions = {VAE: ort.InferenceSession(str(models_dir / "vae_decoder.onnx"), providers=["CPUExecutionProvider"]),
                GAN: ort.InferenceSession(str(models_dir / "gan_generator.onnx"), providers=["CPUExecutionProvider"])}
    return lambda model, z: sessions[model].run(["image"], {"z": np.asarray(z, np.float32)})[0]


@pytest.fixture(scope="module")
def server(models_dir):
    with ThreadServer(settings_for(models_dir), guarded=False) as live:
        yield live


@pytest.fixture(scope="module")
def token_server(models_dir):
    with ThreadServer(settings_for(models_dir, token=TOKEN), guarded=False) as live:
        yield live


@pytest.fixture()
def triton(server):
    httpclient = pytest.importorskip("tritonclient.http")
    client = httpclient.InferenceServerClient(url=f"127.0.0.1:{server.port}")
    yield client
    client.close()


# ---- tritonclient: the real V2 client ------------------------------------------------------------
def test_triton_client_sees_a_live_ready_server_with_metadata(triton):
    assert triton.is_server_live()
    assert triton.is_server_ready()
    server_meta = triton.get_server_metadata()
    assert server_meta["name"] == "genloop" and "binary_tensor_data" in server_meta["extensions"]
    assert server_meta["version"]
    for name in (VAE, GAN):
        assert triton.is_model_ready(name)
        meta = triton.get_model_metadata(name)
        assert meta == {
            "name": name, "versions": ["1"], "platform": "onnxruntime_onnx",
            "inputs": [{"name": "z", "datatype": "FP32", "shape": [-1, LATENT]}],
            "outputs": [{"name": "image", "datatype": "FP32", "shape": [-1, 1, SIDE, SIDE]}],
        }
        assert triton.get_model_metadata(name, model_version="1")["name"] == name


@pytest.mark.parametrize("model", [VAE, GAN])
@pytest.mark.parametrize("binary", [False, True], ids=["json", "binary"])
def test_triton_infer_matches_onnxruntime(triton, reference, model, binary):
    from tritonclient.http import InferInput, InferRequestedOutput

    z = latents(5, seed=11)
    tensor = InferInput("z", list(z.shape), "FP32")
    tensor.set_data_from_numpy(z, binary_data=binary)
    # binary: tritonclient's defaults (binary input, no outputs listed -> binary_data_output=true)
    outputs = None if binary else [InferRequestedOutput("image", binary_data=False)]
    result = triton.infer(model, [tensor], outputs=outputs, request_id=f"req-{model}")
    got = result.as_numpy("image")
    assert result.get_response()["id"] == f"req-{model}"
    assert result.get_response()["model_name"] == model
    assert got.dtype == np.float32 and got.shape == (5, 1, SIDE, SIDE)
    np.testing.assert_allclose(got, reference(model, z), rtol=0, atol=TOL)
    assert 0.0 <= got.min() and got.max() <= 1.0


def test_triton_gzip_request_and_versioned_route(triton, reference):
    from tritonclient.http import InferInput

    z = latents(3, seed=12)
    tensor = InferInput("z", list(z.shape), "FP32")
    tensor.set_data_from_numpy(z)
    result = triton.infer(VAE, [tensor], model_version="1", request_compression_algorithm="gzip")
    np.testing.assert_allclose(result.as_numpy("image"), reference(VAE, z), rtol=0, atol=TOL)


def test_triton_unknown_model_is_a_clear_404(triton):
    from tritonclient.http import InferInput
    from tritonclient.utils import InferenceServerException

    tensor = InferInput("z", [1, LATENT], "FP32")
    tensor.set_data_from_numpy(latents(1, 0))
    with pytest.raises(InferenceServerException) as info:
        triton.infer("no-such-model", [tensor])
    assert info.value.status() == "404"
    assert "unknown model 'no-such-model'" in info.value.message() and VAE in info.value.message()
    with pytest.raises(InferenceServerException):
        triton.get_model_metadata("no-such-model")
    assert not triton.is_model_ready("no-such-model")


# ---- bad requests: each a 4xx with {"error": ...}, the server unharmed ----------------------------
def _json(obj) -> bytes:
    return json.dumps(obj).encode()


def _zrow(values) -> bytes:
    return b'{"inputs": [{"name": "z", "shape": [1, 4], "datatype": "FP32", "data": [' + values + b"]}]}"


def _binary_nan() -> tuple[bytes, dict]:
    head = _json({"inputs": [{"name": "z", "shape": [1, LATENT], "datatype": "FP32",
                              "parameters": {"binary_data_size": 4 * LATENT}}]})
    data = np.array([0.0, np.nan, 0.0, 0.0], np.float32).tobytes()
    return head + data, {"Inference-Header-Content-Length": str(len(head))}


def _gzip_bomb() -> tuple[bytes, dict]:
    body = _json(infer_body(latents(1, 0), id="x" * (4 * MAX_BODY)))
    return gzip.compress(body), {"Content-Encoding": "gzip"}


ok_row = infer_body(latents(2, 1))
BAD_REQUESTS = {
    # name: (body, extra headers, status, fragment of the error message)
    "malformed-json": (b'{"inputs": [', {}, 400, "malformed JSON"),
    "not-utf8": (b"\xff\xfe{", {}, 400, "malformed JSON"),
    "not-an-object": (b"[1, 2]", {}, 400, "JSON object"),
    "no-inputs": (b"{}", {}, 400, "'inputs'"),
    "wrong-dtype-fp64": (_json({"inputs": [{**ok_row["inputs"][0], "datatype": "FP64"}]}), {}, 400, "datatype 'FP64'"),
    "wrong-dtype-int32": (_json({"inputs": [{"name": "z", "shape": [1, 4], "datatype": "INT32", "data": [1, 2, 3, 4]}]}),
                          {}, 400, "expected 'FP32'"),
    "wrong-shape": (_json({"inputs": [{"name": "z", "shape": [1, 5], "datatype": "FP32", "data": [0.0] * 5}]}),
                    {}, 400, "does not match the model's [-1, 4]"),
    "wrong-rank": (_json({"inputs": [{"name": "z", "shape": [8], "datatype": "FP32", "data": [0.0] * 8}]}),
                   {}, 400, "does not match"),
    "count-mismatch": (_json({"inputs": [{"name": "z", "shape": [2, 4], "datatype": "FP32", "data": [0.0] * 7}]}),
                       {}, 400, "7 values"),
    "zero-rows": (_json({"inputs": [{"name": "z", "shape": [0, 4], "datatype": "FP32", "data": []}]}), {}, 400, "at least 1"),
    "nan-literal": (_zrow(b"0.1, NaN, 0.3, 0.4"), {}, 400, "NaN"),
    "infinity-literal": (_zrow(b"0.1, -Infinity, 0.3, 0.4"), {}, 400, "Infinity"),
    "fp32-overflow": (_zrow(b"0.1, 1e39, 0.3, 0.4"), {}, 400, "too large for FP32"),
    "nan-binary": (*_binary_nan(), 400, "NaN"),
    "strings": (_zrow(b'"0.1", 0.2, 0.3, 0.4'), {}, 400, "only numbers"),
    "booleans": (_zrow(b"true, 0.2, 0.3, 0.4"), {}, 400, "only numbers"),
    "unknown-input": (_json({"inputs": [{**ok_row["inputs"][0], "name": "x"}]}), {}, 400, "no input 'x'"),
    "unknown-output": (_json({**ok_row, "outputs": [{"name": "logits"}]}), {}, 400, "no output 'logits'"),
    "bad-header-length": (_json(ok_row), {"Inference-Header-Content-Length": "abc"}, 400, "Inference-Header-Content-Length"),
    # int() takes these; a length is plain ASCII digits
    "header-length-underscore": (_json(ok_row), {"Inference-Header-Content-Length": "2_00"}, 400, "ASCII digits only"),
    "header-length-plus": (_json(ok_row), {"Inference-Header-Content-Length": "+200"}, 400, "ASCII digits only"),
    "too-many-rows": (_json(infer_body(np.zeros((MAX_ROWS + 1, LATENT), np.float32))), {}, 413, f"{MAX_ROWS} a request"),
    "too-large-body": (_json(infer_body(latents(1, 0), id="x" * MAX_BODY)), {}, 413, "bytes allowed"),
    "gzip-bomb": (*_gzip_bomb(), 413, "decompressed"),
    "unknown-encoding": (_json(ok_row), {"Content-Encoding": "br"}, 415, "Content-Encoding"),
}


@pytest.mark.parametrize("case", list(BAD_REQUESTS))
def test_bad_infer_request_is_a_4xx_with_an_error_message(server, case):
    body, headers, status, fragment = BAD_REQUESTS[case]
    response = httpx.post(f"{server.url}/v2/models/{VAE}/infer", content=body, headers=headers)
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert isinstance(error, str) and fragment in error, error
    assert httpx.get(f"{server.url}/v2/health/ready").status_code == 200


@pytest.mark.parametrize("value", [" 200 ", "200\t", "\u0662\u0660\u0660", "0x10", "-0"])
def test_header_length_is_plain_ascii_digits(server, value):
    """Values HTTP itself would not carry unchanged (h11 strips surrounding blanks), checked on the parser."""
    from genloop.serving.protocol import ApiError, parse_infer_request

    with pytest.raises(ApiError, match="ASCII digits only") as info:
        parse_infer_request(_json(ok_row), value, server.app.state.holder.get(VAE), MAX_ROWS)
    assert info.value.status == 400


@pytest.mark.parametrize("method,path,status,fragment", [
    ("GET", f"/v2/models/{VAE}/versions/7", 404, "no version '7'"),
    ("POST", f"/v2/models/{VAE}/versions/7/infer", 404, "no version '7'"),
    ("GET", "/v2/models/nope/ready", 404, "unknown model"),
    ("GET", f"/v2/models/{VAE}/infer", 405, "Method Not Allowed"),
    ("GET", "/v3/anything", 404, "Not Found"),
    ("GET", f"/v2/models/{GAN}/generate?n=100000", 400, "n"),
    ("GET", f"/v2/models/{GAN}/generate?seed=-1", 400, "seed"),
])
def test_other_errors_are_json_error_objects(server, method, path, status, fragment):
    response = httpx.request(method, f"{server.url}{path}", content=_json(ok_row) if method == "POST" else None)
    assert response.status_code == status, response.text
    assert fragment in response.json()["error"]


def test_server_still_serves_after_bad_requests(server, reference):
    for body, headers, _, _ in BAD_REQUESTS.values():
        httpx.post(f"{server.url}/v2/models/{GAN}/infer", content=body, headers=headers)
    z = latents(2, seed=3)
    response = httpx.post(f"{server.url}/v2/models/{GAN}/infer", json=infer_body(z, id="after"))
    assert response.status_code == 200 and response.json()["id"] == "after"
    got = np.array(response.json()["outputs"][0]["data"], np.float32).reshape(2, 1, SIDE, SIDE)
    np.testing.assert_allclose(got, reference(GAN, z), rtol=0, atol=TOL)


def test_json_infer_without_content_type_nested_data_and_no_id(server, reference):
    z = latents(3, seed=4)
    body = {"inputs": [{"name": "z", "shape": [3, LATENT], "datatype": "FP32", "data": z.tolist()}],
            "outputs": [{"name": "image"}]}
    response = httpx.post(f"{server.url}/v2/models/{VAE}/infer", content=_json(body))  # no Content-Type at all
    assert response.status_code == 200 and response.headers["content-type"] == "application/json"
    payload = response.json()
    assert "id" not in payload and payload["model_version"] == "1"
    out = payload["outputs"][0]
    assert out["name"] == "image" and out["datatype"] == "FP32" and out["shape"] == [3, 1, SIDE, SIDE]
    np.testing.assert_allclose(np.array(out["data"], np.float32).reshape(out["shape"]), reference(VAE, z), atol=TOL)


def test_binary_tensor_extension_on_the_wire(server, reference):
    """Binary input after the JSON header, binary output asked for: the layout tritonclient relies on."""
    z = latents(2, seed=8)
    head = _json({"id": "bin", "inputs": [{"name": "z", "shape": [2, LATENT], "datatype": "FP32",
                                           "parameters": {"binary_data_size": z.nbytes}}],
                  "parameters": {"binary_data_output": True}})
    response = httpx.post(f"{server.url}/v2/models/{GAN}/infer", content=head + z.tobytes(),
                          headers={"Inference-Header-Content-Length": str(len(head))})
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "application/octet-stream"
    json_size = int(response.headers["inference-header-content-length"])
    payload = json.loads(response.content[:json_size])
    out = payload["outputs"][0]
    assert payload["id"] == "bin" and "data" not in out
    assert out["parameters"]["binary_data_size"] == len(response.content) - json_size == 2 * SIDE * SIDE * 4
    got = np.frombuffer(response.content[json_size:], "<f4").reshape(out["shape"])
    np.testing.assert_allclose(got, reference(GAN, z), rtol=0, atol=TOL)


# ---- dynamic batching ------------------------------------------------------------------------------
def test_concurrent_requests_are_batched_and_each_gets_its_own_rows(server, reference):
    def batch_histogram() -> tuple[float, float]:
        samples = metric_samples(server.url)
        count = samples[("genloop_serve_batch_requests_count", (("model", VAE),))]
        solo = samples[("genloop_serve_batch_requests_bucket", (("le", "1.0"), ("model", VAE)))]
        return count, solo

    count_before, solo_before = batch_histogram()
    batcher = server.app.state.live.slots[VAE].batcher
    largest_before = batcher.stats.largest_batch_requests
    inputs = [latents(1 + i % 3, seed=100 + i) for i in range(16)]

    async def fire() -> list[httpx.Response]:
        async with httpx.AsyncClient(base_url=server.url, timeout=30) as client:
            return await asyncio.gather(*(client.post(f"/v2/models/{VAE}/infer", json=infer_body(z, id=str(i)))
                                          for i, z in enumerate(inputs)))

    responses = asyncio.run(fire())
    for i, (z, response) in enumerate(zip(inputs, responses)):
        assert response.status_code == 200, response.text
        payload = response.json()
        assert payload["id"] == str(i)
        out = payload["outputs"][0]
        assert out["shape"] == [len(z), 1, SIDE, SIDE]
        got = np.array(out["data"], np.float32).reshape(out["shape"])
        np.testing.assert_allclose(got, reference(VAE, z), rtol=0, atol=TOL)  # its own solo result

    count_after, solo_after = batch_histogram()
    batches, solo_batches = count_after - count_before, solo_after - solo_before
    assert batches < 16, f"16 concurrent requests ran as {batches} separate batches"
    assert batches - solo_batches >= 1, "no batch held more than one request"
    assert batcher.stats.largest_batch_requests > 1 or largest_before > 1
    assert batcher.stats.largest_batch_rows <= MAX_BATCH_ROWS


def test_batcher_queue_limit_and_shutdown(models_dir, reference):
    from genloop.serving.batching import DynamicBatcher, QueueFull, ShuttingDown

    holder = ModelHolder(settings_for(models_dir))
    holder.load()
    model = holder.get(VAE)
    zs = [latents(2, seed=200 + i) for i in range(3)]

    async def scenario():
        batcher = DynamicBatcher(model, max_batch_rows=32, max_delay_ms=50, max_queue_rows=4)
        batcher.start()
        results = await asyncio.gather(*(batcher.infer({"z": z}, 2) for z in zs), return_exceptions=True)
        stats = batcher.stats
        await batcher.stop()
        waiting = DynamicBatcher(model, max_batch_rows=32, max_delay_ms=5_000, max_queue_rows=4)
        waiting.start()
        pending = asyncio.ensure_future(waiting.infer({"z": zs[0]}, 2))
        await asyncio.sleep(0.05)
        await waiting.stop()
        return results, stats, await asyncio.gather(pending, return_exceptions=True)

    results, stats, (stopped,) = asyncio.run(scenario())
    for z, result in zip(zs[:2], results[:2]):
        np.testing.assert_allclose(result["image"], reference(VAE, z), rtol=0, atol=TOL)
    assert isinstance(results[2], QueueFull) and "retry later" in str(results[2])
    assert stats.batches == 1 and stats.largest_batch_requests == 2 and stats.largest_batch_rows == 4
    assert isinstance(stopped, ShuttingDown)


def test_a_request_larger_than_max_batch_rows_runs_alone(server, reference):
    z = latents(MAX_BATCH_ROWS + 20, seed=7)
    response = httpx.post(f"{server.url}/v2/models/{GAN}/infer", json=infer_body(z))
    assert response.status_code == 200, response.text
    got = np.array(response.json()["outputs"][0]["data"], np.float32).reshape(len(z), 1, SIDE, SIDE)
    np.testing.assert_allclose(got, reference(GAN, z), rtol=0, atol=TOL)


# ---- PNG samples and metrics -----------------------------------------------------------------------
def test_generate_returns_a_seeded_png_grid(server):
    from PIL import Image

    url = f"{server.url}/v2/models/{GAN}/generate"
    first = httpx.get(url, params={"n": 16, "seed": 1})
    assert first.status_code == 200 and first.headers["content-type"] == "image/png"
    image = Image.open(io.BytesIO(first.content))
    assert image.format == "PNG" and image.mode == "L"
    assert image.size[0] == image.size[1] > 4 * SIDE  # a 4x4 grid of upscaled tiles
    assert httpx.get(url, params={"n": 16, "seed": 1}).content == first.content
    assert httpx.get(url, params={"n": 16, "seed": 2}).content != first.content
    assert httpx.get(f"{server.url}/v2/models/{VAE}/generate").status_code == 200


def test_metrics_count_requests_by_route_and_status(server):
    httpx.get(f"{server.url}/v2/models/nope")
    httpx.post(f"{server.url}/v2/models/{VAE}/infer", json=infer_body(latents(2, 0)))
    samples = metric_samples(server.url)
    key = ("genloop_serve_requests_total", (("method", "GET"), ("route", "/v2/models/{name}"), ("status", "404")))
    assert samples[key] >= 1
    ok = ("genloop_serve_requests_total", (("method", "POST"), ("route", "/v2/models/{name}/infer"), ("status", "200")))
    assert samples[ok] >= 1
    assert samples[("genloop_serve_request_duration_seconds_count",
                    (("method", "POST"), ("route", "/v2/models/{name}/infer")))] >= 1
    assert samples[("genloop_serve_batch_rows_count", (("model", VAE),))] >= 1
    assert samples[("genloop_serve_ready", ())] == 1.0


# ---- bearer token ----------------------------------------------------------------------------------
def test_token_is_required_on_v2_but_not_on_health(token_server, reference):
    url = token_server.url
    assert httpx.get(f"{url}/v2/health/live").status_code == 200
    assert httpx.get(f"{url}/v2/health/ready").status_code == 200
    z = latents(2, 5)
    for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": f"Basic {TOKEN}"}):
        for method, path in (("GET", "/v2"), ("GET", f"/v2/models/{VAE}"), ("POST", f"/v2/models/{VAE}/infer"),
                             ("GET", f"/v2/models/{GAN}/generate")):
            response = httpx.request(method, f"{url}{path}", headers=headers, json=infer_body(z))
            assert response.status_code == 401, (path, headers, response.text)
            assert "bearer token" in response.json()["error"]
            assert response.headers["www-authenticate"] == "Bearer"
    good = {"Authorization": f"Bearer {TOKEN}"}
    response = httpx.post(f"{url}/v2/models/{VAE}/infer", headers=good, json=infer_body(z))
    assert response.status_code == 200
    got = np.array(response.json()["outputs"][0]["data"], np.float32).reshape(2, 1, SIDE, SIDE)
    np.testing.assert_allclose(got, reference(VAE, z), atol=TOL)
    assert httpx.get(f"{url}/v2/health/ready").status_code == 200


def test_triton_client_with_and_without_the_token(token_server):
    httpclient = pytest.importorskip("tritonclient.http")
    from tritonclient.utils import InferenceServerException

    client = httpclient.InferenceServerClient(url=f"127.0.0.1:{token_server.port}")
    try:
        assert client.is_server_ready()
        with pytest.raises(InferenceServerException) as info:
            client.get_model_metadata(VAE)
        assert info.value.status() == "401"
        meta = client.get_model_metadata(VAE, headers={"Authorization": f"Bearer {TOKEN}"})
        assert meta["name"] == VAE
    finally:
        client.close()


# ---- start-up: the CLI, CUDA, missing files --------------------------------------------------------
def test_cuda_requested_without_cuda_fails_at_start_with_a_clear_message(models_dir):
    if "CUDAExecutionProvider" in ort.get_available_providers():
        pytest.skip("this onnxruntime has CUDA; the failure path cannot be shown here")
    result = CliRunner().invoke(serve_command, ["--models", str(models_dir), "--device", "cuda", "--port", "0"])
    assert result.exit_code == 1, result.output
    assert "CUDAExecutionProvider" in result.output and "--device cpu" in result.output
    assert "onnxruntime-gpu" in result.output
    with pytest.raises(ServingError, match="CUDAExecutionProvider"):
        ModelHolder(settings_for(models_dir, providers="cuda"))


def test_missing_model_files_fail_at_start(tmp_path):
    result = CliRunner().invoke(serve_command, ["--models", str(tmp_path)])
    assert result.exit_code == 1
    assert "genloop export" in result.output and "vae_decoder.onnx" in result.output
    result = CliRunner().invoke(serve_command, ["--model", "broken"])
    assert result.exit_code == 2 and "NAME=PATH" in result.output


def test_serve_command_runs_uvicorn_until_interrupted(models_dir, tmp_path):
    port = free_port()
    env = {**os.environ, "GENLOOP_SERVE_TOKEN": TOKEN}
    code = "from genloop.serving.command import serve_command; serve_command()"
    proc = subprocess.Popen(
        [sys.executable, "-c", code, "--model", f"digits={models_dir / 'gan_generator.onnx'}",
         "--port", str(port), "--threads", "1", "--log-level", "warning"],
        cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )
    try:
        wait_ready(f"http://127.0.0.1:{port}", lambda: proc.poll() is None)
        headers = {"Authorization": f"Bearer {TOKEN}"}
        meta = httpx.get(f"http://127.0.0.1:{port}/v2/models/digits", headers=headers)
        assert meta.status_code == 200, meta.text
        assert meta.json()["inputs"][0]["shape"] == [-1, LATENT]
    finally:
        proc.send_signal(signal.SIGINT)
        out, _ = proc.communicate(timeout=30)
    assert proc.returncode == 0, out
    assert "serving the Open Inference Protocol" in out and "bearer token required" in out
    assert TOKEN not in out


# ---- schemathesis: fuzz the OpenAPI schema, never a 5xx ---------------------------------------------
def test_schemathesis_finds_no_server_error(server, tmp_path):
    result = run_schemathesis(server.url, tmp_path, 1)
    assert result.returncode == 0, result.stdout[-6000:] + result.stderr[-2000:]
    assert httpx.get(f"{server.url}/v2/health/ready").status_code == 200


# ---- the registry's champions ------------------------------------------------------------------------
@pytest.fixture(scope="module")
def champion_store(models_dir, tmp_path_factory):
    """A project folder whose MLflow registry has genloop-vae v1 (champion), v2, and genloop-gan v1 (champion).

    genloop-vae v2 holds the GAN file, so which file the server loaded shows in its outputs.
    """
    from mlflow import MlflowClient

    from genloop.io import promotion

    root = tmp_path_factory.mktemp("champions")
    uri = f"sqlite:///{root}/mlflow/mlflow.db"
    (root / "mlflow").mkdir()
    client = MlflowClient(tracking_uri=uri, registry_uri=uri)
    for name, files in {VAE: ["vae_decoder.onnx", "gan_generator.onnx"], GAN: ["gan_generator.onnx"]}.items():
        client.create_registered_model(name)
        for i, file in enumerate(files, start=1):
            source = root / "sources" / f"{name}-{i}"
            source.mkdir(parents=True)
            shutil.copy(models_dir / file, source / "model.onnx")
            version = client.create_model_version(name, source=str(source)).version
            client.set_model_version_tag(name, version, promotion.PARITY_TAG, "true")
        promotion.set_champion(client, name, "1")
    return root, uri, client


def genloop_serve(root: Path, uri: str, *args: str, port: int | None = None) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "genloop.cli", "--root", str(root), "-S", f"mlflow.tracking_uri={uri}", "serve",
           "--threads", "1", "--log-level", "warning", *args]
    if port is not None:
        cmd += ["--port", str(port)]
    return subprocess.Popen(cmd, cwd=root, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def test_serve_loads_the_registry_champions_by_default(champion_store, reference):
    root, uri, client = champion_store
    port = free_port()
    proc = genloop_serve(root, uri, port=port)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_ready(url, lambda: proc.poll() is None)
        meta = httpx.get(f"{url}/v2/models/{VAE}")
        assert meta.status_code == 200, meta.text
        assert meta.json()["versions"] == ["1"]
        z = latents(3, 11)
        got = httpx.post(f"{url}/v2/models/{VAE}/versions/1/infer", json=infer_body(z)).json()
        np.testing.assert_allclose(np.reshape(got["outputs"][0]["data"], (3, 1, SIDE, SIDE)), reference(VAE, z),
                                   atol=TOL)
        assert httpx.post(f"{url}/v2/models/{VAE}/versions/2/infer", json=infer_body(z)).status_code == 404
    finally:
        proc.send_signal(signal.SIGINT)
        out, _ = proc.communicate(timeout=30)
    assert proc.returncode == 0, out
    assert f"serving the registry champions: {VAE} v1, {GAN} v1" in out


def test_champion_with_failed_parity_is_never_served(champion_store, tmp_path):
    from genloop.config import MlflowConfig
    from genloop.serving.registry import download_champions

    root, uri, client = champion_store
    config = MlflowConfig(tracking_uri=uri)
    found = download_champions(config, root, [VAE, GAN], tmp_path / "ok")
    assert {n: c.version for n, c in found.items()} == {VAE: "1", GAN: "1"}
    assert found[VAE].path.read_bytes() == (root / "sources" / f"{VAE}-1" / "model.onnx").read_bytes()
    client.set_model_version_tag(VAE, "2", "parity_passed", "false")
    client.set_registered_model_alias(VAE, "champion", "2")  # moved by hand, past `genloop promote`
    try:
        with pytest.raises(ServingError, match="parity check did not pass"):
            download_champions(config, root, [VAE, GAN], tmp_path / "bad")
    finally:
        client.set_registered_model_alias(VAE, "champion", "1")
        client.set_model_version_tag(VAE, "2", "parity_passed", "true")


def test_champions_flag_errors(tmp_path, models_dir):
    uri = f"sqlite:///{tmp_path}/mlflow/mlflow.db"
    result = CliRunner().invoke(serve_command, ["--champions", "--models", str(models_dir)])
    assert result.exit_code == 2 and "--champions" in result.output
    proc = genloop_serve(tmp_path, uri, "--champions", port=0)
    out, _ = proc.communicate(timeout=60)
    assert proc.returncode == 1, out
    assert "no MLflow store" in out and "--files" in out
    assert not (tmp_path / "mlflow" / "mlflow.db").exists()  # looking did not create a store
    proc = genloop_serve(tmp_path, uri, port=0)  # default: no store, so models/ files, which are missing
    out, _ = proc.communicate(timeout=60)
    assert proc.returncode == 1 and "genloop export" in out, out


def test_serve_section_of_params_is_checked_like_any_other(tmp_path, models_dir):
    from genloop.cli import main

    result = CliRunner().invoke(main, ["--root", str(tmp_path), "-S", "serve.max_batch_rows=0", "serve",
                                       "--models", str(models_dir)])
    assert result.exit_code == 1
    assert "serve.max_batch_rows" in result.output and "Traceback" not in result.output
