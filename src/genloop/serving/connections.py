"""HTTP/1.1 connections that cannot be held open for free.

uvicorn arms its keep-alive timer only after a response, so a client that connects and sends
nothing, or dribbles a request head byte by byte, holds its socket forever (2,000 of them were held
for 30 s+ in a test). This protocol also closes a connection whose next request head has not
arrived ``timeout_keep_alive`` seconds after it opened or after the last response.
"""
from __future__ import annotations

import asyncio

import h11
from uvicorn.protocols.http.h11_impl import H11Protocol


class IdleClosingH11Protocol(H11Protocol):
    _head_deadline: asyncio.TimerHandle | None = None

    def connection_made(self, transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm_head_deadline()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        if not self.transport.is_closing():
            self._arm_head_deadline()

    def connection_lost(self, exc: Exception | None) -> None:
        if self._head_deadline is not None:
            self._head_deadline.cancel()
            self._head_deadline = None
        super().connection_lost(exc)

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
