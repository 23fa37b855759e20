"""The error every source reader raises (``genloop.sources`` and the IDX parser ``genloop.idx``),
in a module of its own so that the readers do not import each other for it."""
from __future__ import annotations


class SourceError(ValueError):
    """A source that names nothing or holds unusable data; the message says which."""
