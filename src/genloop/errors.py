"""The failures a user can act on; the CLI prints them as one line instead of a traceback."""
from __future__ import annotations

from genloop.validation import DataValidationError
from genloop.config import ConfigError
from genloop.dvcio import DvcError
from genloop.export import ParityError
from genloop.sources import SourceError

USER_ERRORS: tuple[type[Exception], ...] = (
    ConfigError, SourceError, DataValidationError, DvcError, ParityError, FileNotFoundError, ValueError,
)
