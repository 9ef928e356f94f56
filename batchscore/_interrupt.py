"""SIGTERM and SIGINT that end a run in bounded time, at a point where it is safe to stop.

A signal handler that raises at an arbitrary bytecode can fire while a thread
holds a queue's mutex, and the run deadlocks in its own clean-up. So while the
pipeline streams and commits, the handler only records the signal, and the
pipeline stops at the next batch boundary (:func:`check`); outside such a
section it raises at once. A second signal ends the process at once: the OS
lock is released by the kernel and the next run clears what was left.

The command line installs the handlers (:func:`install`); the Python API leaves
the host program's handlers alone.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
from collections.abc import Iterator
from types import FrameType


class Interrupted(BaseException):
    """A run was stopped by a signal; ``signum`` says which."""

    def __init__(self, signum: int) -> None:
        super().__init__(signum)
        self.signum = signum


_pending: int | None = None
_deferring = 0


def install() -> None:
    """Route SIGTERM and SIGINT through this module (main thread only)."""
    signal.signal(signal.SIGTERM, _handle)
    signal.signal(signal.SIGINT, _handle)


def _handle(signum: int, frame: FrameType | None) -> None:
    global _pending
    if _pending is not None:  # the second signal: stop now
        sys.stderr.write(f"batchscore: signal {signum} again; stopping at once\n")
        os._exit(128 + signum)
    _pending = signum
    if not _deferring:
        raise Interrupted(signum)


def check() -> None:
    """Raise :class:`Interrupted` if a signal came in; called where stopping is safe."""
    if _pending is not None:
        raise Interrupted(_pending)


def pending() -> int | None:
    """The signal that came in and was not acted on yet, if any."""
    return _pending


@contextlib.contextmanager
def deferred() -> Iterator[None]:
    """Within this block a signal is only recorded; :func:`check` acts on it."""
    global _deferring
    _deferring += 1
    try:
        yield
    finally:
        _deferring -= 1


def reset() -> None:
    """Forget a recorded signal (for tests that run several jobs in one process)."""
    global _pending
    _pending = None
