"""A genloop server in a background thread of the test process: one helper for the serving tests."""
from __future__ import annotations

import socket
import threading

from genloop.serving import ServeSettings, create_app
from waiting import wait_until_ready


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

    def __init__(self, settings: ServeSettings, guarded: bool = True):
        import uvicorn

        from genloop.serving.cli import uvicorn_options

        self.app = create_app(settings)
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
