"""The suite's one fake clock: time moves only when a test says so."""
from __future__ import annotations


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
