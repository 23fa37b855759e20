"""tests/waiting.py: the one wait-until-ready loop the server tests share."""
from __future__ import annotations

import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from waiting import wait_until_ready


class _Health(BaseHTTPRequestHandler):
    ready_after = 3  # answer 503 to the first requests, as a server still loading its models
    calls = 0

    def do_GET(self):  # noqa: N802 (http.server's name)
        type(self).calls += 1
        self.send_response(200 if type(self).calls > self.ready_after else 503)
        self.end_headers()

    def log_message(self, *args):
        pass


@pytest.fixture
def server():
    _Health.calls, _Health.ready_after = 0, 3
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Health)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}/health"
    finally:
        httpd.shutdown()
        httpd.server_close()


def test_returns_once_the_server_answers_200(server):
    wait_until_ready(server, timeout=10, interval=0.01)
    assert _Health.calls == _Health.ready_after + 1


def test_a_server_that_stays_unready_times_out(server):
    _Health.ready_after = 10**6
    with pytest.raises(TimeoutError, match=r"/health did not answer 200 within 0.3 s"):
        wait_until_ready(server, timeout=0.3, interval=0.01)


def test_a_dead_server_fails_at_once_not_at_the_timeout():
    with pytest.raises(RuntimeError, match="stopped during start-up"):
        wait_until_ready("http://127.0.0.1:9/never", timeout=600, alive=lambda: False)
