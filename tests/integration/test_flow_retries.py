"""Retries: collect retries a download that fails for a passing reason, and only then.

A real HTTP server on localhost stands in for the data set's mirror; the flow is real Prefect.
"""
from __future__ import annotations

import http.server
import socket
import sqlite3
import threading
from urllib.error import HTTPError, URLError

import pytest

from genloop.io.validation import DataValidationError
from genloop.config import CollectConfig, ConfigError
from genloop.stages.export import ParityError
from flows import pipeline as flows
from genloop.paths import ProjectPaths
from genloop.errors import SourceError
from genloop.pipeline.transient import is_transient

pytestmark = pytest.mark.integration



def _wrapped(cause: BaseException) -> SourceError:
    """A SourceError raised `from None` while handling ``cause``, as sources.py does."""
    try:
        try:
            raise cause
        except BaseException:
            raise SourceError("cannot download ...; to use mnist offline, put the files ...") from None
    except SourceError as exc:
        return exc


@pytest.mark.parametrize("exc, transient", [
    (_wrapped(HTTPError("u", 503, "busy", None, None)), True),
    (_wrapped(HTTPError("u", 429, "slow down", None, None)), True),
    (_wrapped(URLError(TimeoutError("timed out"))), True),
    (_wrapped(ConnectionResetError()), True),
    (_wrapped(HTTPError("u", 404, "not found", None, None)), False),
    (_wrapped(URLError(socket.gaierror(-3, "Temporary failure in name resolution"))), False),  # offline
    (_wrapped(URLError(ConnectionRefusedError())), False),
    (SourceError("unknown source 'mnst'"), False),
    (ConfigError("params.yaml: invalid"), False),
    (DataValidationError("3 rows failed"), False),
    (ParityError("differs by 1e-2"), False),
    (sqlite3.OperationalError("database is locked"), True),  # a busy registry store
    (ImportError("cannot import name 'x'"), False),  # bugs do not pass on a retry
    (RuntimeError("Expected 4D input to conv2d"), False),
])
def test_only_passing_failures_count_as_transient(exc, transient):
    assert is_transient(exc) is transient


class _Mirror(http.server.BaseHTTPRequestHandler):
    status = 503
    hits: list[str] = []

    def do_GET(self):  # noqa: N802
        type(self).hits.append(self.path)
        self.send_error(type(self).status)

    def log_message(self, *args):
        pass


@pytest.fixture
def mirror(monkeypatch, tmp_path):
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Mirror)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    monkeypatch.setenv("GENLOOP_DATASET_URL", f"http://127.0.0.1:{server.server_port}")
    monkeypatch.setenv("GENLOOP_CACHE", str(tmp_path / "cache"))
    _Mirror.hits = []
    try:
        yield _Mirror
    finally:
        server.shutdown()


def _collect_once(tmp_path):
    from prefect import flow


    @flow(name="collect-only")
    def collect_only():
        return flows.collect_task(CollectConfig(source="mnist"), ProjectPaths.at(tmp_path))

    return collect_only(return_state=True)


def test_collect_retries_a_busy_mirror_with_backoff_then_fails(mirror, tmp_path, prefect_harness):
    mirror.status = 503
    state = _collect_once(tmp_path)
    assert state.is_failed()
    assert len(mirror.hits) == 3  # the first try and two retries
    assert len(set(mirror.hits)) == 1  # the same file each time
    assert not (tmp_path / "data").exists()


def test_collect_does_not_retry_a_missing_file(mirror, tmp_path, prefect_harness):
    mirror.status = 404
    state = _collect_once(tmp_path)
    assert state.is_failed()
    assert "404" in state.message or "cannot download" in state.message
    assert len(mirror.hits) == 1


def test_export_retries_with_the_same_condition():
    for task in (flows.collect_task, flows.export_task):
        assert task.retries == 2
        assert task.retry_delay_seconds == [2, 4]
        assert task.retry_condition_fn.__name__ == "retry_if_transient"
