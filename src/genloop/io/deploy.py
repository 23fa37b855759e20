"""Tell running servers that a champion moved, so they load it now instead of at their next poll.

Each server in ``deploy.servers`` gets ``POST {url}/v2/repository/models/{name}/load`` (the Open
Inference Protocol's model-repository extension, as ``genloop serve``, Triton and MLServer have it),
with ``Authorization: Bearer $GENLOOP_SERVE_TOKEN`` when that variable is set. A server that cannot
be reached or refuses is a warning: the training run that promoted the model has still succeeded.
"""
from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from urllib.parse import quote

from genloop.config import DeployConfig

log = logging.getLogger("genloop.io.deploy")


@dataclass(frozen=True)
class Notice:
    server: str
    model: str
    ok: bool
    detail: str

    def summary(self) -> str:
        return f"{self.server}: {self.model} {'loaded' if self.ok else 'NOT loaded'} ({self.detail})"


def notify_servers(config: DeployConfig, names: list[str]) -> list[Notice]:
    """Ask every configured server to load each of ``names``; never raises for a server's failure."""
    if not config.servers or not names:
        return []
    import httpx

    token = os.environ.get(config.token_env, "").strip()
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    notices = []
    with httpx.Client(timeout=config.timeout_seconds, headers=headers) as client:
        for server in config.servers:
            base = server.rstrip("/")
            for name in names:
                url = f"{base}/v2/repository/models/{quote(name, safe='')}/load"
                try:
                    response = client.post(url)
                except httpx.HTTPError as exc:
                    notices.append(Notice(server, name, False, f"unreachable: {type(exc).__name__}: {exc}"))
                    continue
                if response.status_code == 200:
                    try:
                        body = response.json()
                    except ValueError:
                        body = {}
                    version = body.get("version") if isinstance(body, dict) else None
                    notices.append(Notice(server, name, True, f"serving v{version}" if version else "HTTP 200"))
                else:
                    notices.append(Notice(server, name, False, f"HTTP {response.status_code}: {_error(response)}"))
    for notice in notices:
        (log.info if notice.ok else log.warning)("deploy: %s", notice.summary())
    return notices


def _error(response) -> str:
    try:
        body = response.json()
    except ValueError:
        return response.text[:200]
    return str(body.get("error", body))[:300] if isinstance(body, dict) else str(body)[:300]
