"""What the supervisor tells about its processes, and how it handles signals.

The value types of `control.supervisor` (a `ProcessHandle` per process, the
`ExitEvent` of each exit, the `StopReport` of a teardown, the errors), and the
signal handling around an emulation: SIGTERM/SIGHUP unwind the main thread
as `Terminated`; a teardown holds them until it is done. All of them are also
importable from `control.supervisor`.
"""
from __future__ import annotations

import signal
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path
from typing import Any


class SupervisorError(RuntimeError):
    """The supervisor could not do what was asked (zygote gone, bad target, ...)."""


class ProcessExited(SupervisorError):
    """A process exited while we were waiting for it to become ready."""

    def __init__(self, event: ExitEvent) -> None:
        tail = "\n".join("    " + line for line in event.log_tail)
        super().__init__(f"{event.describe()} before it was ready; last lines of {event.name}'s log:\n{tail}")
        self.event = event


class Terminated(SystemExit):
    """Raised in the main thread by SIGTERM/SIGHUP, so `with Supervisor(...)` unwinds and tears down."""

    def __init__(self, signum: int) -> None:
        super().__init__(128 + signum)
        self.signum = signum


class ProcessState(str, Enum):
    """Where a supervised process is in its life."""

    STARTING = "starting"  # forked, not yet answering `status`
    READY = "ready"  # answered `status` on its control endpoint
    STOPPING = "stopping"  # asked to stop (shutdown op or signal)
    EXITED = "exited"  # reaped; see returncode / signal


@dataclass(eq=False)
class ProcessHandle:
    """One supervised process. The same object is reused when it is restarted."""

    name: str
    target: str
    config: dict[str, Any]
    log_path: Path
    pid: int | None = None
    state: ProcessState = ProcessState.STARTING
    returncode: int | None = None
    signal: int | None = None
    restarts: int = 0
    started_at: float = 0.0  # time.monotonic() of the fork
    exit_expected: bool = field(default=False, repr=False)

    @property
    def alive(self) -> bool:
        return self.state is not ProcessState.EXITED

    @property
    def control(self) -> str:
        return self.config["control"]


@dataclass(frozen=True, slots=True)
class ExitEvent:
    """A process (or the zygote) exited; `expected` if we asked it to."""

    name: str
    pid: int
    returncode: int | None
    signal: int | None
    log_tail: list[str]
    expected: bool
    at: float  # time.monotonic()

    @property
    def crashed(self) -> bool:
        return not self.expected

    def describe(self) -> str:
        """`h1 (pid 4242) exited with code 3` / `... was killed by SIGKILL`."""
        if self.signal is not None:
            try:
                how = f"was killed by {signal.Signals(self.signal).name}"
            except ValueError:
                how = f"was killed by signal {self.signal}"
        else:
            how = f"exited with code {self.returncode}"
        return f"{self.name} (pid {self.pid}) {how}"


@dataclass(slots=True)
class StopReport:
    """How a teardown went: who needed which step."""

    shutdown: list[str] = field(default_factory=list)  # stopped by the `shutdown` op
    terminated: list[str] = field(default_factory=list)  # needed SIGTERM
    killed: list[str] = field(default_factory=list)  # needed SIGKILL
    leftovers: list[int] = field(default_factory=list)  # pids found after teardown (then killed)
    duration: float = 0.0


def install_signal_handlers(signals: Iterable[int] = (signal.SIGTERM, signal.SIGHUP)) -> Callable[[], None]:
    """Make `signals` raise `Terminated` in the main thread; returns a function that restores the old handlers.

    SIGINT keeps Python's KeyboardInterrupt (the CLI uses it to cancel a
    command); uncaught, both unwind `with Supervisor(...)`, which tears down.
    """
    def raise_terminated(signum: int, frame: object) -> None:
        raise Terminated(signum)

    previous = {signum: signal.signal(signum, raise_terminated) for signum in signals}

    def restore() -> None:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
    return restore



def defer_signals() -> tuple[Callable[[], None], list[int]]:
    """Hold SIGINT/SIGTERM/SIGHUP during teardown so it is not cut half-way; returns (restore, received)."""
    received: list[int] = []
    if threading.current_thread() is not threading.main_thread():
        return (lambda: None), received
    previous = {signum: signal.signal(signum, lambda signum, frame: received.append(signum))
                for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)}

    def restore() -> None:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
    return restore, received
