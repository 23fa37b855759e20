"""The failures a user can act on; the CLI prints them as one line (exit 1) instead of a traceback.

Kept free of heavy imports (no torch, pandas, prefect) so every module can raise these cheaply.
Anything that is not a user error (a plain ``ValueError``, a bug) keeps its traceback.
"""
from __future__ import annotations

import os


def display_path(path: str | os.PathLike) -> str:
    """A path fit for a message: bytes that are not UTF-8 (a non-UTF-8 file name) shown as ``\\xNN``."""
    return printable(os.fspath(path))


def printable(text: str) -> str:
    """``text`` with undecodable bytes (surrogate escapes) as ``\\xNN``, so printing it cannot fail."""
    return text.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")


class GenloopError(Exception):
    """Base of every error caused by the user's input, config or project state, not by a bug."""


class MissingInputError(GenloopError, FileNotFoundError):
    """A stage's input is not there yet; the message says which command makes it."""


class ProjectBusyError(GenloopError):
    """Another genloop command holds the project lock; the message names it."""


def is_user_error(exc: BaseException) -> bool:
    """True for GenloopError; a FileNotFoundError counts only when genloop with a message (``errno`` unset), not when the OS did (that is a bug worth a traceback)."""
    if isinstance(exc, GenloopError):
        return True
    if isinstance(exc, FileNotFoundError) and exc.errno is None:
        return True
    return False


class SourceError(GenloopError, ValueError):
    """A source that names nothing or holds unusable data; the message says which."""


MAX_SIDE = 4096  # largest image side any reader accepts: a header promising more is refused unread
