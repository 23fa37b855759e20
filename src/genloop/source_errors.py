"""The error every source reader raises, and the limits they share, (``genloop.sources`` and the IDX parser ``genloop.idx``),
in a module of its own so that the readers do not import each other for it."""
from __future__ import annotations

from genloop.errors import GenloopError


class SourceError(GenloopError, ValueError):
    """A source that names nothing or holds unusable data; the message says which."""


MAX_SIDE = 4096  # largest image side any reader accepts: a header promising more is refused unread
