"""Tests wait for the thing they check: `wait_for`, the one polling helper (control/waiting.py),
with the signature and contract of `Emulation.wait_for`, for tests below the emulation."""
from control.waiting import wait_for

__all__ = ["wait_for"]
