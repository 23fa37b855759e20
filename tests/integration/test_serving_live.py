"""`genloop serve` in production conditions: tokens, idle sockets, SIGTERM, and live deployment.

Real servers (uvicorn in a thread, or `genloop serve` subprocesses on a tiny MLflow registry), real
sockets and signals, real clients; the champion moves through genloop.io.promotion as it does in
`genloop promote` / `rollback` and in the loop's gate. Nothing is mocked.
"""
from __future__ import annotations

import json
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import numpy as np
import pytest
from click.testing import CliRunner
from pydantic import ValidationError

from genloop.io import promotion
from genloop.config import DeployConfig
from genloop.io.deploy import notify_servers
from genloop.serving import ServeSettings
from genloop.serving.command import serve_command
from servers import (
    GAN, LATENT, SIDE, TOKEN, VAE, ThreadServer, free_port, infer_body, latents, metric_samples, settings_for, wait_ready,
)

AUTH = {"Authorization": f"Bearer {TOKEN}"}
POLL_SECONDS = 1.0
FOLLOW_WITHIN_S = 15.0  # documented: a moved champion serves within poll_seconds + download + warm-up


# ---- fixtures -----------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def models_dir(tmp_path_factory) -> Path:
    import torch

    from genloop.stages.export import export_onnx
    from genloop.core.models.gan import Generator
    from genloop.core.models.vae import Decoder

    folder = tmp_path_factory.mktemp("live-models")
    torch.manual_seed(0)
    export_onnx(Decoder(LATENT, 8, SIDE, SIDE).eval(), LATENT, folder / "vae_decoder.onnx")
    export_onnx(Generator(LATENT, 8, SIDE, SIDE).eval(), LATENT, folder / "gan_generator.onnx")
    export_onnx(Generator(LATENT + 1, 8, SIDE, SIDE).eval(), LATENT + 1, folder / "wider.onnx")
    return folder


@pytest.fixture(scope="module")
def reference(models_dir):
    import onnxruntime as ort

    sessions = {file: ort.InferenceSession(str(models_dir / file), providers=["CPUExecutionProvider"])
                for file in ("vae_decoder.onnx", "gan_generator.onnx")}
    return lambda file, z: sessions[file].run(["image"], {"z": np.asarray(z, np.float32)})[0]


# ---- A. tokens, protected metrics, idle connections, SIGTERM ---------------------------------------
def test_empty_token_is_an_error_at_start(models_dir, monkeypatch):
    gan = f"x={models_dir / 'gan_generator.onnx'}"
    monkeypatch.setenv("GENLOOP_SERVE_TOKEN", "")
    result = CliRunner().invoke(serve_command, ["--model", gan, "--port", "0"])
    assert result.exit_code == 1 and "empty token" in result.output, result.output
    monkeypatch.delenv("GENLOOP_SERVE_TOKEN")
    result = CliRunner().invoke(serve_command, ["--model", gan, "--token", "  ", "--port", "0"])
    assert result.exit_code == 1 and "empty token" in result.output, result.output
    with pytest.raises(ValidationError, match="empty token"):
        ServeSettings(token="")


@pytest.mark.parametrize("public", [False, True], ids=["protected", "public"])
def test_metrics_docs_and_openapi_follow_the_token_unless_public(models_dir, public):
    with ThreadServer(settings_for(models_dir, token=TOKEN, public_metrics=public)) as live:
        for path in ("/metrics", "/docs", "/openapi.json"):
            anonymous = httpx.get(live.url + path)
            assert anonymous.status_code == (200 if public else 401), (path, anonymous.text)
            assert httpx.get(live.url + path, headers=AUTH).status_code == 200, path
        assert "genloop_serve_requests" in httpx.get(live.url + "/metrics", headers=AUTH).text
        for probe in ("/v2/health/live", "/v2/health/ready"):  # always open, for orchestrators' probes
            assert httpx.get(live.url + probe).status_code == 200
        assert httpx.get(f"{live.url}/v2/models/{VAE}").status_code == 401  # /v2 stays protected either way


def test_idle_and_half_sent_connections_are_closed_after_the_keep_alive_timeout(models_dir):
    with ThreadServer(settings_for(models_dir, timeout_keep_alive=1.0)) as live:
        silent = [socket.create_connection(("127.0.0.1", live.port)) for _ in range(20)]
        slow = socket.create_connection(("127.0.0.1", live.port))
        slow.sendall(b"GET /v2/health/live HTTP/1.1\r\nHost: x\r\n")  # a request head never finished
        served = socket.create_connection(("127.0.0.1", live.port))
        served.sendall(b"GET /v2/health/live HTTP/1.1\r\nHost: x\r\n\r\n")
        opened = time.monotonic()
        response = b""
        while b'{"live":true}' not in response:
            response += served.recv(4096)
        assert b"200 OK" in response
        for sock in [*silent, slow, served]:
            sock.settimeout(5.0)
            try:
                data = sock.recv(4096)
            except ConnectionResetError:
                data = b""
            assert data == b"", data  # the server hung up
            sock.close()
        elapsed = time.monotonic() - opened
        assert 0.8 <= elapsed < 8.0, f"connections closed after {elapsed:.1f} s, keep-alive timeout 1 s"
        assert httpx.get(f"{live.url}/v2/health/live").status_code == 200  # and it still serves


def test_connections_beyond_the_cap_get_503_until_idle_ones_are_dropped(models_dir):
    with ThreadServer(settings_for(models_dir, timeout_keep_alive=1.0, limit_concurrency=4)) as live:
        held = [socket.create_connection(("127.0.0.1", live.port)) for _ in range(4)]
        time.sleep(0.2)
        assert httpx.get(f"{live.url}/v2/health/live").status_code == 503
        deadline = time.monotonic() + 8  # the held ones are closed by the keep-alive timeout (1 s)
        while httpx.get(f"{live.url}/v2/health/live").status_code == 503 and time.monotonic() < deadline:
            time.sleep(0.2)
        assert httpx.get(f"{live.url}/v2/health/live").status_code == 200
        for sock in held:
            sock.close()


ATTACKER = "127.0.0.2"  # loopback has every 127.x address: another client address on this machine


def stalled_infer(port: int) -> socket.socket:
    """A connection from ATTACKER that sends an infer head promising 100 bytes of body, and one byte of it."""
    sock = socket.create_connection(("127.0.0.1", port), source_address=(ATTACKER, 0))
    sock.sendall(f"POST /v2/models/{VAE}/infer HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                 "Content-Length: 100\r\n\r\n{".encode())
    return sock


def answer_before_close(sock: socket.socket, within: float) -> bytes:
    """What the server sends before it hangs up; fails when it keeps the connection open past ``within`` s."""
    sock.settimeout(within)
    received = b""
    try:
        while chunk := sock.recv(4096):
            received += chunk
    except ConnectionResetError:
        pass
    except TimeoutError:
        raise AssertionError(f"the connection is still open after {within} s (received {received!r})") from None
    return received


def test_stalled_request_bodies_are_closed_after_the_body_timeout(models_dir):
    # uvicorn answers 503 to a request arriving while `limit_concurrency` connections are open: the 20 stalled
    # ones fit, a 21st (a normal client) does not until they are closed
    settings = settings_for(models_dir, timeout_keep_alive=1.0, body_timeout=1.0, limit_concurrency=21)
    with ThreadServer(settings) as live:
        time.sleep(1.5)  # the readiness probes' keep-alive connections are closed by now
        held = [stalled_infer(live.port) for _ in range(20)]
        opened = time.monotonic()
        answers = [answer_before_close(sock, 8.0) for sock in held]
        for sock in held:
            sock.close()
        assert all(a.startswith(b"HTTP/1.1 408") and b"serve.body_timeout" in a for a in answers), answers
        elapsed = time.monotonic() - opened
        assert 0.8 <= elapsed < 8.0, f"stalled bodies closed after {elapsed:.1f} s, body timeout 1 s"
        response = httpx.post(f"{live.url}/v2/models/{VAE}/infer", json=infer_body(latents(2, 3)))
        assert response.status_code == 200, response.text  # a normal client is served again


def test_a_slow_but_complete_body_is_served(models_dir):
    settings = settings_for(models_dir, timeout_keep_alive=1.0, body_timeout=3.0)
    body = json.dumps(infer_body(latents(1, 4))).encode()
    with ThreadServer(settings) as live:
        sock = socket.create_connection(("127.0.0.1", live.port))
        sock.sendall(f"POST /v2/models/{VAE}/infer HTTP/1.1\r\nHost: x\r\nContent-Length: {len(body)}\r\n"
                     "Connection: close\r\n\r\n".encode())
        for part in (body[:10], body[10:]):  # past the keep-alive timeout, within the body timeout
            time.sleep(1.2)
            sock.sendall(part)
        assert answer_before_close(sock, 10.0).startswith(b"HTTP/1.1 200")
        sock.close()


def test_connections_per_client_are_capped(models_dir):
    settings = settings_for(models_dir, max_connections_per_client=5, limit_concurrency=50)
    with ThreadServer(settings) as live:
        held = [socket.create_connection(("127.0.0.1", live.port), source_address=(ATTACKER, 0)) for _ in range(5)]
        extra = socket.create_connection(("127.0.0.1", live.port), source_address=(ATTACKER, 0))
        answer = answer_before_close(extra, 5.0)
        assert answer.startswith(b"HTTP/1.1 503") and f"too many connections from {ATTACKER}".encode() in answer
        assert httpx.get(f"{live.url}/v2/health/live").status_code == 200  # another address is served
        held[0].sendall(b"GET /v2/health/live HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        assert answer_before_close(held[0], 5.0).startswith(b"HTTP/1.1 200")  # the first five still serve
        for sock in [*held, extra]:
            sock.close()


# ---- a tiny registry whose champion moves ---------------------------------------------------------
@pytest.fixture()
def registry(models_dir, tmp_path):
    """genloop-vae v1 (decoder, champion), v2 (generator), v3 (another interface), v4 (parity failed);
    genloop-gan v1 (champion). Which file answers shows in the outputs."""
    from mlflow import MlflowClient

    root = tmp_path / "project"
    (root / "mlflow").mkdir(parents=True)
    uri = f"sqlite:///{root}/mlflow/mlflow.db"
    client = MlflowClient(tracking_uri=uri, registry_uri=uri)
    files = {VAE: ["vae_decoder.onnx", "gan_generator.onnx", "wider.onnx", "gan_generator.onnx"],
             GAN: ["gan_generator.onnx"]}
    for name, versions in files.items():
        client.create_registered_model(name)
        for i, file in enumerate(versions, start=1):
            source = root / "sources" / f"{name}-{i}"
            source.mkdir(parents=True)
            shutil.copy(models_dir / file, source / "model.onnx")
            version = client.create_model_version(name, source=str(source)).version
            client.set_model_version_tag(name, version, promotion.PARITY_TAG, "false" if i == 4 else "true")
        promotion.set_champion(client, name, "1")
    return root, uri, client


def genloop_serve(root: Path, uri: str, port: int, *args: str, env: dict | None = None) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "genloop.cli", "--root", str(root), "-S", f"mlflow.tracking_uri={uri}", "serve",
           "--threads", "1", "--log-level", "warning", "--port", str(port), *args]
    return subprocess.Popen(cmd, cwd=root, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            env={**os.environ, **(env or {})}, start_new_session=True)


def stop(proc: subprocess.Popen, sig=signal.SIGINT) -> str:
    if proc.poll() is None:
        proc.send_signal(sig)
    try:
        out, _ = proc.communicate(timeout=30)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, _ = proc.communicate()
    return out


def served_version(url: str, headers: dict | None = None) -> str:
    return httpx.get(f"{url}/v2/models/{VAE}", headers=headers, timeout=5).json()["versions"][0]


def wait_for_version(url: str, version: str, within: float, headers: dict | None = None) -> float:
    started = time.monotonic()
    while time.monotonic() - started < within:
        if served_version(url, headers) == version:
            return time.monotonic() - started
        time.sleep(0.1)
    raise AssertionError(f"still serving v{served_version(url, headers)}, not v{version}, after {within} s")


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGHUP], ids=["SIGTERM", "SIGHUP"])
def test_sigterm_and_sighup_remove_the_champions_download_folder(registry, tmp_path, sig):
    root, uri, _ = registry
    tmp = tmp_path / "tmpdir"
    tmp.mkdir()
    port = free_port()
    proc = genloop_serve(root, uri, port, env={"TMPDIR": str(tmp)})
    try:
        wait_ready(f"http://127.0.0.1:{port}", lambda: proc.poll() is None)
        assert len(list(tmp.glob("genloop-champions-*"))) == 1
    finally:
        out = stop(proc, sig)
    assert proc.returncode in (143, -signal.SIGTERM), out
    assert not list(tmp.glob("genloop-champions-*")), out


class SteadyLoad(threading.Thread):
    """~rate requests/s to genloop-vae from its own thread; records (status, served version, output)."""

    def __init__(self, url: str, rate: float, z: np.ndarray, headers: dict | None = None):
        super().__init__(daemon=True)
        self.url, self.period, self.z, self.headers = url, 1.0 / rate, z, headers or {}
        self.results: list[tuple[int, str | None, np.ndarray | None, str]] = []
        self.stopping = threading.Event()

    def run(self) -> None:
        body = infer_body(self.z)
        with httpx.Client(base_url=self.url, timeout=10, headers=self.headers) as client:
            next_at = time.monotonic()
            while not self.stopping.is_set():
                try:
                    r = client.post(f"/v2/models/{VAE}/infer", json=body)
                    if r.status_code == 200:
                        out = r.json()
                        data = np.reshape(out["outputs"][0]["data"], out["outputs"][0]["shape"])
                        self.results.append((200, out["model_version"], data, ""))
                    else:
                        self.results.append((r.status_code, None, None, r.text[:200]))
                except httpx.HTTPError as exc:
                    self.results.append((-1, None, None, repr(exc)))
                next_at += self.period
                time.sleep(max(0.0, next_at - time.monotonic()))


@pytest.mark.integration  # several seconds: two genloop processes, or a live server under load
def test_server_follows_the_champion_under_load_without_failing_a_request(registry, reference):
    root, uri, client = registry
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    proc = genloop_serve(root, uri, port, "--poll-seconds", str(POLL_SECONDS), env={"GENLOOP_SERVE_TOKEN": TOKEN})
    z = latents(2, 5)
    expected = {"1": reference("vae_decoder.onnx", z), "2": reference("gan_generator.onnx", z)}
    load = SteadyLoad(url, rate=50, z=z, headers=AUTH)
    try:
        wait_ready(url, lambda: proc.poll() is None)
        assert served_version(url, AUTH) == "1"
        load.start()
        time.sleep(2)
        promotion.promote(client, VAE, "2")  # as `genloop promote genloop-vae 2` does
        to_v2 = wait_for_version(url, "2", FOLLOW_WITHIN_S, AUTH)
        time.sleep(2)
        assert promotion.rollback(client, VAE) == ("2", "1")  # as `genloop rollback genloop-vae`
        to_v1 = wait_for_version(url, "1", FOLLOW_WITHIN_S, AUTH)
        time.sleep(2)
    finally:
        load.stopping.set()
        load.join(timeout=15)
        metrics = httpx.get(f"{url}/metrics", headers=AUTH).text if proc.poll() is None else ""
        out = stop(proc)
    failures = [r for r in load.results if r[0] != 200]
    assert not failures, f"{len(failures)} of {len(load.results)} requests failed: {failures[:3]}\n{out}"
    assert len(load.results) > 200, f"only {len(load.results)} requests in the run"
    for _, version, data, _ in load.results:  # each answer came wholly from the version it names
        np.testing.assert_allclose(data, expected[version], atol=1e-5)
    versions = [r[1] for r in load.results]
    changes = [v for i, v in enumerate(versions) if i == 0 or v != versions[i - 1]]
    assert changes == ["1", "2", "1"], changes  # no flapping: one swap each way
    assert to_v2 < FOLLOW_WITHIN_S and to_v1 < FOLLOW_WITHIN_S
    assert f'genloop_serve_model_reloads_total{{model="{VAE}"}} 2.0' in metrics
    assert f'genloop_serve_model_version{{model="{VAE}"}} 1.0' in metrics
    print(f"followed the champion in {to_v2:.1f} s and {to_v1:.1f} s; {len(load.results)} requests, none failed")


@pytest.mark.integration  # several seconds: two genloop processes, or a live server under load
def test_repository_endpoints_load_unload_and_keep_the_old_model_on_a_failed_load(registry, reference):
    root, uri, client = registry
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    proc = genloop_serve(root, uri, port, "--poll-seconds", "0", env={"GENLOOP_SERVE_TOKEN": TOKEN})
    load_url = f"{url}/v2/repository/models/{VAE}/load"
    z = latents(1, 9)

    def infer() -> httpx.Response:
        return httpx.post(f"{url}/v2/models/{VAE}/infer", json=infer_body(z), headers=AUTH)

    try:
        wait_ready(url, lambda: proc.poll() is None)
        assert httpx.post(load_url).status_code == 401  # the token guards the repository too
        promotion.promote(client, VAE, "2")
        time.sleep(1.5)
        assert served_version(url, AUTH) == "1"  # polling is off: only a load request swaps
        r = httpx.post(load_url, headers=AUTH, timeout=60)
        assert r.status_code == 200 and r.json() == {"name": VAE, "version": "2", "changed": True, "previous": "1"}
        meta = httpx.get(f"{url}/v2/models/{VAE}", headers=AUTH).json()
        assert meta["versions"] == ["2"] and meta["genloop_registry_version"] == "2"
        assert httpx.post(load_url, headers=AUTH).json()["changed"] is False  # already serving it

        for bad, why in [("3", "unlike the served v2"), ("4", "parity check did not pass")]:
            client.set_registered_model_alias(VAE, promotion.CHAMPION, bad)  # moved by hand, past the gate
            r = httpx.post(load_url, headers=AUTH, timeout=60)
            assert r.status_code == 400 and why in r.json()["error"] and "v2 keeps serving" in r.json()["error"]
            ok = infer()
            assert ok.status_code == 200 and ok.json()["model_version"] == "2"
            np.testing.assert_allclose(np.reshape(ok.json()["outputs"][0]["data"], (1, 1, SIDE, SIDE)),
                                       reference("gan_generator.onnx", z), atol=1e-5)
        index = {e["name"]: e for e in httpx.post(f"{url}/v2/repository/index", headers=AUTH).json()}
        assert index[VAE]["state"] == "READY" and index[VAE]["version"] == "2"
        assert "parity" in index[VAE]["reason"] and index[GAN] == {"name": GAN, "version": "1", "state": "READY",
                                                                   "reason": ""}
        samples = metric_samples_auth(url)
        assert samples[("genloop_serve_model_reload_failures_total", (("model", VAE),))] == 2
        assert samples[("genloop_serve_model_reloads_total", (("model", VAE),))] == 1

        assert httpx.post(f"{url}/v2/repository/models/{VAE}/unload", headers=AUTH).status_code == 200
        gone = infer()
        assert gone.status_code == 404 and "unloaded" in gone.json()["error"]
        client.set_registered_model_alias(VAE, promotion.CHAMPION, "1")
        r = httpx.post(load_url, headers=AUTH, timeout=60)
        assert r.status_code == 200 and r.json()["version"] == "1"
        assert infer().json()["model_version"] == "1"
        assert httpx.post(f"{url}/v2/repository/models/nope/load", headers=AUTH).status_code == 404
    finally:
        out = stop(proc)
    assert proc.returncode == 0, out


def with_kind(source: Path, target: Path, kind: str | None) -> Path:
    """``source`` copied to ``target`` with the ``model_kind`` metadata `genloop export` writes (None: without)."""
    from genloop.stages.export import write_metadata

    shutil.copy(source, target)
    if kind is not None:
        write_metadata(target, {"model_kind": kind})
    return target


def test_a_load_keeps_the_kind_and_interface_of_the_name_even_after_an_unload(models_dir, tmp_path):
    """A GAN file (same shapes) or another interface under genloop-vae: refused while served and after an unload."""
    path = with_kind(models_dir / "vae_decoder.onnx", tmp_path / "served.onnx", "vae")
    with ThreadServer(ServeSettings(models={VAE: path}, intra_op_threads=1, warmup_rows=[1])) as live:
        load, unload = (f"{live.url}/v2/repository/models/{VAE}/{action}" for action in ("load", "unload"))
        with_kind(models_dir / "gan_generator.onnx", path, "gan")
        for unloaded in (False, True):
            if unloaded:
                assert httpx.post(unload).status_code == 200
            refused = httpx.post(load, timeout=60)
            assert refused.status_code == 400, refused.text
            error = refused.json()["error"]
            assert "a gan model" in error and "a vae model" in error and "model_kind" in error, error
        for index in [httpx.post(f"{live.url}/v2/repository/index").json()]:
            assert index[0]["state"] == "UNAVAILABLE" and "gan" in index[0]["reason"], index
        with_kind(models_dir / "wider.onnx", path, None)  # no kind recorded, another latent width
        refused = httpx.post(load, timeout=60)
        assert refused.status_code == 400 and "inputs" in refused.json()["error"], refused.text
        assert "restart the server" in refused.json()["error"]
        with_kind(models_dir / "vae_decoder.onnx", path, "vae")
        loaded = httpx.post(load, timeout=60)
        assert loaded.status_code == 200 and loaded.json()["changed"] is True, loaded.text
        z = latents(1, 5)
        assert httpx.post(f"{live.url}/v2/models/{VAE}/infer", json=infer_body(z)).status_code == 200


def metric_samples_auth(url: str) -> dict:
    from prometheus_client.parser import text_string_to_metric_families

    text = httpx.get(f"{url}/metrics", headers=AUTH).text
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


# ---- deploy: export tells servers to load a promoted champion ------------------------------------------
def test_notify_loads_on_reachable_servers_and_warns_about_the_rest(models_dir, monkeypatch, caplog):
    dead = f"http://127.0.0.1:{free_port()}"
    monkeypatch.setenv("GENLOOP_SERVE_TOKEN", TOKEN)
    with ThreadServer(settings_for(models_dir, token=TOKEN)) as live, caplog.at_level(logging.WARNING, "genloop.io.deploy"):
        notices = notify_servers(DeployConfig(servers=[live.url + "/", dead], timeout_seconds=5), [VAE])
        reloads = metric_samples_auth(live.url)[("genloop_serve_model_reloads_total", (("model", VAE),))]
    assert [(n.server, n.ok) for n in notices] == [(live.url + "/", True), (dead, False)]
    assert reloads == 1  # the file was re-read and swapped in
    assert "unreachable" in notices[1].detail and dead in caplog.text and "NOT loaded" in caplog.text
    monkeypatch.delenv("GENLOOP_SERVE_TOKEN")
    with ThreadServer(settings_for(models_dir, token=TOKEN)) as live:
        (refused,) = notify_servers(DeployConfig(servers=[live.url]), [VAE])
    assert not refused.ok and "HTTP 401" in refused.detail
    assert notify_servers(DeployConfig(servers=[dead]), []) == []  # nothing moved: nobody is called


@pytest.mark.integration  # several seconds: two genloop processes, or a live server under load
def test_export_writes_the_triton_repository_and_notifies_servers_after_a_promotion(genloop_tiny_project,
                                                                                    models_dir, tmp_path):
    from genloop.stages.export import export

    dead = f"http://127.0.0.1:{free_port()}"
    project = genloop_tiny_project("deploy", train=("vae", "gan"))
    with ThreadServer(settings_for(models_dir)) as live:
        params = project.params_with({"deploy.servers": [live.url, dead]})
        result = export(params, project.paths)  # first export: both versions become champion
        reloads = metric_samples(live.url)
    assert all(m.promotion.promoted for m in result.models.values())
    for name in (VAE, GAN):
        assert reloads[("genloop_serve_model_reloads_total", (("model", name),))] == 1
        assert (project.paths.models / "triton" / name / "config.pbtxt").is_file()
        assert (project.paths.models / "triton" / name / "1" / "model.onnx").is_file()
