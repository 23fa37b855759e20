"""Wait for a server a test started: one loop instead of a copy per test."""
from __future__ import annotations

import time
from collections.abc import Callable


def wait_until_ready(url: str, timeout: float = 60.0, alive: Callable[[], bool] = lambda: True,
                     interval: float = 0.1) -> None:
    """Poll ``GET url`` until it answers 200. Raises ``RuntimeError`` as soon as ``alive()`` is false
    (the server died during start-up) and ``TimeoutError`` after ``timeout`` seconds, so a test never
    goes on against a server that is not there."""
    import httpx

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not alive():
            raise RuntimeError(f"the server behind {url} stopped during start-up")
        try:
            if httpx.get(url, timeout=2).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(interval)
    raise TimeoutError(f"{url} did not answer 200 within {timeout:g} s")
