"""Test doubles shared by the node unit tests: a manual clock and a timer driver.

Any sans-I/O core with `next_timer() -> float | None` and `tick(now) -> list`
can be driven with `run_timers` (neighbour table, TCP, reassembly, ...).
"""
from __future__ import annotations

from typing import Any, Protocol


class FakeClock:
    """A clock that moves only when told to; starts away from zero so "0 means unset" bugs show."""

    def __init__(self, start: float = 1000.0) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> float:
        """Move forward by `seconds`; returns the new time."""
        if seconds < 0:
            raise ValueError("a clock does not go backwards")
        self.now += seconds
        return self.now

    def set(self, when: float) -> float:
        """Jump forward to the absolute time `when`."""
        return self.advance(when - self.now)


class TimerDriven(Protocol):
    def next_timer(self) -> float | None: ...

    def tick(self, now: float) -> list: ...


def run_timers(core: TimerDriven, clock: FakeClock, until: float) -> list[tuple[float, Any]]:
    """Fire every deadline of `core` up to `until` at exactly its time, like a kernel loop.

    Returns (time, effect) pairs in order; leaves the clock at `until`.
    """
    fired: list[tuple[float, Any]] = []
    while True:
        deadline = core.next_timer()
        if deadline is None or deadline > until:
            break
        if deadline > clock.now:
            clock.set(deadline)
        fired.extend((clock.now, effect) for effect in core.tick(clock.now))
        after = core.next_timer()
        if after is not None and after <= clock.now:
            # The contract: tick(now) runs everything due at `now`.
            raise AssertionError(f"tick({clock.now}) left a timer due at {after}")
    if until > clock.now:
        clock.set(until)
    return fired
