"""A genloop server in a background thread of the test process: one helper for the serving tests."""
from __future__ import annotations

import socket
import threading

from pathlib import Path

import numpy as np

from genloop.serving import ServeSettings, create_app
from waiting import wait_until_ready

# The tiny generators of the serving tests (tests/integration/test_serving.py exports them) and their limits.
LATENT, CHANNELS, SIDE = 4, 8, 8
VAE, GAN = "genloop-vae", "genloop-gan"
TOKEN = "s3cret-token"
MAX_ROWS, MAX_BATCH_ROWS, MAX_BODY = 128, 32, 64 * 1024
TOL = 1e-5


def settings_for(models_dir: Path, **overrides) -> ServeSettings:
    """Both tiny models of ``models_dir`` under their served names, with small limits."""
    return ServeSettings(
        models={VAE: models_dir / "vae_decoder.onnx", GAN: models_dir / "gan_generator.onnx"},
        intra_op_threads=1, max_body_bytes=MAX_BODY, max_rows_per_request=MAX_ROWS,
        max_batch_rows=MAX_BATCH_ROWS, max_batch_delay_ms=25.0, warmup_rows=[1, MAX_BATCH_ROWS], **overrides,
    )


def latents(rows: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((rows, LATENT)).astype(np.float32)


def infer_body(z: np.ndarray, **extra) -> dict:
    return {"inputs": [{"name": "z", "shape": list(z.shape), "datatype": "FP32", "data": z.ravel().tolist()}], **extra}


def metric_samples(url: str) -> dict[tuple[str, tuple], float]:
    import httpx
    from prometheus_client.parser import text_string_to_metric_families

    text = httpx.get(f"{url}/metrics").text
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}




def free_socket() -> socket.socket:
    # IPPROTO_TCP explicitly: asyncio sets TCP_NODELAY on accepted connections only when the listening
    # socket says proto=6; with proto=0 every response pays Nagle's + delayed-ACK ~40 ms.
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    return sock


def free_port() -> int:
    sock = free_socket()
    port = sock.getsockname()[1]
    sock.close()
    return port


def wait_ready(url: str, alive, timeout: float = 90) -> None:
    wait_until_ready(f"{url}/v2/health/ready", timeout=timeout, alive=alive)


class ThreadServer:
    """create_app(settings) under a real uvicorn server in a background thread, with the options `genloop serve`
    uses (connection guards included) unless not ``guarded``."""

    def __init__(self, settings: ServeSettings, guarded: bool = True, source=None):
        import uvicorn

        from genloop.serving.command import uvicorn_options

        self.app = create_app(settings, source=source)
        self.sock = free_socket()
        self.port = self.sock.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        options = {**(uvicorn_options(settings) if guarded else {}), "timeout_graceful_shutdown": 5}
        self.server = uvicorn.Server(uvicorn.Config(self.app, log_level="warning", lifespan="on", **options))
        self.thread = threading.Thread(target=self.server.run, kwargs={"sockets": [self.sock]}, daemon=True)

    def __enter__(self) -> "ThreadServer":
        self.thread.start()
        wait_ready(self.url, lambda: self.thread.is_alive())
        return self

    def __exit__(self, *exc) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=15)
        self.sock.close()


def run_schemathesis(url: str, cwd, seed: int, *extra: str):
    """schemathesis' `st run` against ``url``'s OpenAPI schema, every check but positive-data acceptance;
    skips when schemathesis or its `st` command is missing. Returns the finished process."""
    import os
    import shutil
    import subprocess
    import sys
    from pathlib import Path

    import pytest

    pytest.importorskip("schemathesis")
    st = shutil.which("st", path=str(Path(sys.executable).parent))
    if st is None:
        pytest.skip("schemathesis' `st` command is not installed beside this Python")
    return subprocess.run(
        [st, "run", f"{url}/openapi.json", "--checks", "all", "--exclude-checks", "positive_data_acceptance",
         *extra, "--phases", "examples,coverage,fuzzing", "--max-examples", "25", "--workers", "1",
         "--request-timeout", "10", "--seed", str(seed)],
        cwd=cwd, capture_output=True, text=True, timeout=120, env={**os.environ, "NO_COLOR": "1"},
    )
