"""`wait_for`: poll a condition until it holds, or fail at a deadline with what was last seen.

The one polling helper of the project: `Emulation.wait_for` is this function,
and the tests below the emulation use it too (`tests/waiting.py`). A caller that
expects a state ("the switch learnt h2", "15 frames were tail-dropped") polls
for exactly what it then asserts, instead of sleeping a fixed time that is too
long on a fast machine and too short on a loaded one.

To show that something does *not* happen, wait for the counter that proves the
frame was processed (dropped, filtered, delivered elsewhere), then assert.
"""
from __future__ import annotations

import inspect
import time
from typing import Callable, TypeVar

from bus.transport import ControlError

T = TypeVar("T")


def _describe(predicate: Callable[[], object]) -> str:
    """The predicate's source line (lambdas) or its name, for the timeout message."""
    try:
        source = inspect.getsource(predicate).strip()
    except (OSError, TypeError):
        return getattr(predicate, "__qualname__", repr(predicate))
    first = source.splitlines()[0].strip()
    return first if len(first) <= 160 else first[:157] + "..."


def wait_for(predicate: Callable[[], T], timeout: float = 10.0, interval: float = 0.05) -> T:
    """Poll `predicate` until it returns something truthy; that value, or TimeoutError.

    A ControlError or KeyError raised by the predicate (a process not answering
    yet, a counter not there yet) counts as "not yet"; it is reported in the
    message if the deadline passes.
    """
    deadline = time.monotonic() + timeout
    last_error: Exception | None = None
    value: T | None = None
    while True:
        try:
            value = predicate()
            if value:
                return value
        except (ControlError, KeyError) as exc:
            last_error = exc
        if time.monotonic() > deadline:
            detail = f"last error: {last_error!r}" if last_error is not None else f"last value: {value!r}"
            raise TimeoutError(f"condition not met within {timeout:g} s: {_describe(predicate)} ({detail})")
        time.sleep(interval)
