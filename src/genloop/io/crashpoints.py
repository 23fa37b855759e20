"""Named points where tests can kill or pause a real genloop process, to check what a crash leaves.

``GENLOOP_TEST_KILL_AT=NAME`` sends SIGKILL to this process at point NAME; ``GENLOOP_TEST_PAUSE_AT=NAME``
sleeps ``GENLOOP_TEST_PAUSE_S`` seconds (default 5) there. Unset (always, outside tests) they do nothing.
"""
from __future__ import annotations

import os
import signal
import time

KILL_ENV = "GENLOOP_TEST_KILL_AT"
PAUSE_ENV = "GENLOOP_TEST_PAUSE_AT"
PAUSE_SECONDS_ENV = "GENLOOP_TEST_PAUSE_S"


def reached(point: str) -> None:
    if os.environ.get(PAUSE_ENV) == point:
        time.sleep(float(os.environ.get(PAUSE_SECONDS_ENV, "5")))
    if os.environ.get(KILL_ENV) == point:
        os.kill(os.getpid(), signal.SIGKILL)
