"""Test doubles shared by the node unit tests: the manual clock (tests/fakes.py) and a timer driver.

Any sans-I/O core with `next_timer() -> float | None` and `tick(now) -> list`
can be driven with `run_timers` (neighbour table, TCP, reassembly, ...).
"""
from __future__ import annotations

from typing import Any, Protocol

from tests.fakes import FakeClock

__all__ = ["FakeClock", "TimerDriven", "run_timers"]


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
