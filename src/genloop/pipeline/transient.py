"""Which failures are worth retrying: network hiccups and busy stores, not bad input or bad config.

The flow's ``retry_condition_fn`` asks this, so a typo in params.yaml or a named data set that
cannot be reached offline fails at once instead of after every backoff delay.
"""
from __future__ import annotations

import socket
from http.client import HTTPException
from urllib.error import HTTPError, URLError

RETRY_HTTP_CODES = frozenset({408, 425, 429, 500, 502, 503, 504})


def _network_is_transient(exc: BaseException) -> bool:
    if isinstance(exc, HTTPError):
        return exc.code in RETRY_HTTP_CODES
    if isinstance(exc, URLError):  # offline: no DNS, no route, connection refused; retrying will not help
        return isinstance(exc.reason, (TimeoutError, socket.timeout, ConnectionResetError, ConnectionAbortedError))
    if isinstance(exc, (TimeoutError, ConnectionResetError, ConnectionAbortedError, BrokenPipeError, HTTPException)):
        return True
    return False


BUSY_WORDS = ("database is locked", "database table is locked", "temporarily unavailable", "too many requests")
MLFLOW_BUSY_CODES = frozenset({"TEMPORARILY_UNAVAILABLE", "RESOURCE_EXHAUSTED", "REQUEST_LIMIT_EXCEEDED"})


def _store_is_busy(exc: BaseException) -> bool:
    """A locked SQLite store or a tracking server asking to come back later (MLflow, SQLAlchemy)."""
    if getattr(exc, "error_code", None) in MLFLOW_BUSY_CODES:
        return True
    if type(exc).__name__ in ("OperationalError", "MlflowException", "RestException"):
        return any(word in str(exc).lower() for word in BUSY_WORDS)
    return False


def _chain(exc: BaseException, depth: int = 6):
    """The error and the ones behind it (``raise ... from None`` keeps the original as __context__)."""
    while exc is not None and depth:
        yield exc
        exc, depth = exc.__cause__ or exc.__context__, depth - 1


def is_transient(exc: BaseException) -> bool:
    """True for errors that may pass on a second try: a passing network failure (a 5xx or 429, a
    timeout, a reset connection) or a busy store, also when wrapped (a SourceError around a failed
    download). Everything else, config, validation and parity errors and bugs included, is final,
    as is an offline machine (no DNS, connection refused)."""
    from genloop.io.validation import DataValidationError
    from genloop.config import ConfigError
    from genloop.stages.export import ParityError

    if isinstance(exc, (ConfigError, DataValidationError, ParityError)):
        return False
    return any(_network_is_transient(e) or _store_is_busy(e) for e in _chain(exc))


def retry_if_transient(task, task_run, state) -> bool:
    """Prefect ``retry_condition_fn``: retry a failed task run only for a transient error."""
    try:
        state.result()
    except Exception as exc:  # the failure the task raised
        return is_transient(exc)
    return False
