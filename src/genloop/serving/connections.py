"""HTTP/1.1 connections that cannot be held open for free.

uvicorn arms its keep-alive timer only after a response, so a client that connects and sends
nothing, or dribbles a request head byte by byte, holds its socket forever (2,000 of them were held
for 30 s+ in a test). This protocol also closes a connection whose next request head has not
arrived ``timeout_keep_alive`` seconds after it opened or after the last response; one whose body
has not all arrived ``body_timeout`` seconds after its head (a 408 when no response has started);
and refuses (503, then close) a connection from a client address that already holds
``max_connections_per_client``, so one client cannot take every slot of ``limit_concurrency``.
"""
from __future__ import annotations

import asyncio
import json
import logging

import h11
from uvicorn.protocols.http.h11_impl import H11Protocol

log = logging.getLogger("genloop.serving")


def _raw_response(status: int, reason: str, message: str, extra: str = "") -> bytes:
    """A whole HTTP/1.1 response with a ``{"error": ...}`` body that closes the connection."""
    body = json.dumps({"error": message}).encode()
    head = (f"HTTP/1.1 {status} {reason}\r\ncontent-type: application/json\r\ncontent-length: {len(body)}\r\n"
            f"connection: close\r\n{extra}\r\n")
    return head.encode("ascii") + body


class IdleClosingH11Protocol(H11Protocol):
    body_timeout: float | None = None  # set by guarded_protocol
    max_connections_per_client: int | None = None
    _head_deadline: asyncio.TimerHandle | None = None
    _body_deadline: asyncio.TimerHandle | None = None
    _body_cycle: object = None  # the request whose body the deadline watches

    def connection_made(self, transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        if self._over_client_cap():
            return
        self._arm_head_deadline()

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        self._watch_body()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        if not self.transport.is_closing():
            self._arm_head_deadline()
            self._watch_body()  # a pipelined request may have started

    def connection_lost(self, exc: Exception | None) -> None:
        for handle in (self._head_deadline, self._body_deadline):
            if handle is not None:
                handle.cancel()
        self._head_deadline = self._body_deadline = None
        super().connection_lost(exc)

    # ---- one client may not hold every connection -------------------------------------------
    def _over_client_cap(self) -> bool:
        cap, host = self.max_connections_per_client, self.client[0] if self.client else None
        if cap is None or host is None:
            return False
        held = sum(1 for c in self.connections if getattr(c, "client", None) and c.client[0] == host)
        if held <= cap:
            return False
        log.warning("refused a connection from %s: it holds %d already (serve.max_connections_per_client)",
                    host, held - 1)
        self.transport.write(_raw_response(
            503, "Service Unavailable", f"too many connections from {host} (at most {cap}); reuse a connection "
            "or close idle ones", extra="retry-after: 1\r\n"))
        self.transport.close()
        return True

    # ---- a request head must arrive ----------------------------------------------------------
    def _arm_head_deadline(self) -> None:
        if self._head_deadline is not None:
            self._head_deadline.cancel()
        self._head_deadline = self.loop.call_later(self.timeout_keep_alive, self._head_deadline_passed, self.cycle)

    def _head_deadline_passed(self, cycle) -> None:
        """Close unless a new request head arrived (a new cycle) or the current request still runs."""
        self._head_deadline = None
        waiting = self.cycle is cycle and (cycle is None or cycle.response_complete)
        if not waiting or self.transport.is_closing():
            return
        try:
            self.conn.send(h11.ConnectionClosed())
        except h11.LocalProtocolError:
            pass
        self.transport.close()

    # ---- and then its body ---------------------------------------------------------------------
    def _watch_body(self) -> None:
        """Arm the body deadline once per request whose body is still coming; disarm it once it is all in."""
        cycle = self.cycle
        if self.body_timeout is None or cycle is None or self.transport.is_closing():
            return
        if cycle.more_body and not cycle.response_complete:
            if self._body_cycle is not cycle:
                if self._body_deadline is not None:
                    self._body_deadline.cancel()
                self._body_cycle = cycle
                self._body_deadline = self.loop.call_later(self.body_timeout, self._body_deadline_passed, cycle)
        elif self._body_cycle is cycle and self._body_deadline is not None:
            self._body_deadline.cancel()
            self._body_deadline = None

    def _body_deadline_passed(self, cycle) -> None:
        """Close a connection whose request body stalled: 408 when no response has started."""
        self._body_deadline = None
        if self.cycle is not cycle or not cycle.more_body or cycle.response_complete or self.transport.is_closing():
            return
        if not cycle.response_started:
            self.transport.write(_raw_response(
                408, "Request Timeout", f"the request body did not arrive within {self.body_timeout:g} s of its "
                "head (serve.body_timeout)"))
        cycle.disconnected = True  # the app's receive() sees a disconnect; its response is dropped
        cycle.message_event.set()
        self.transport.close()


def guarded_protocol(body_timeout: float | None, max_connections_per_client: int | None) -> type[H11Protocol]:
    """IdleClosingH11Protocol with these limits (uvicorn builds one per connection from the class)."""
    return type("GuardedH11Protocol", (IdleClosingH11Protocol,), {
        "body_timeout": body_timeout, "max_connections_per_client": max_connections_per_client})
