"""Steps that a signal must not cut in half: a claim taken but not yet held by a ``try``, a
temporary file made but not yet owned, a file renamed into place but not yet recorded. Within
:func:`uninterrupted`, the handler of :func:`cogsample.jobs.batch.signals_raise` only notes
SIGINT/SIGTERM (:func:`defer`); at the step's end the signal is delivered again and acts then."""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager

__all__ = ["defer", "deferring", "uninterrupted"]

_state = threading.local()  # signal handlers run in the main thread: its own steps decide


def deferring() -> bool:
    """Whether this thread is inside an :func:`uninterrupted` step."""
    return getattr(_state, "depth", 0) > 0


def defer(signum: int) -> None:
    """Note ``signum`` for delivery at the end of the current step."""
    _state.pending = signum


@contextmanager
def uninterrupted() -> Iterator[None]:
    """Run a short step whole: a signal that arrives meanwhile is delivered again after it."""
    _state.depth = getattr(_state, "depth", 0) + 1
    try:
        yield
    finally:
        _state.depth -= 1
        pending = getattr(_state, "pending", None)
        if _state.depth == 0 and pending is not None:
            _state.pending = None
            os.kill(os.getpid(), pending)
