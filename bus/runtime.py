"""Process lifecycle and a minimal event loop for every long-running process (devices, node kernels).

Before changing this file, read docs/design.md ("Processes and their configs"),
prctl(2) on PR_SET_PDEATHSIG, and signal.set_wakeup_fd in the Python docs.

* `prepare_process(config)` makes the process die with its parent (the
  launcher) and turns SIGTERM/SIGINT into a flag the loop sees, instead of an
  exception that could land in the middle of a pcap write; it also sets the
  process's CURVE keys (config "curve", bus/curve.py).
* `EventLoop` polls ZeroMQ sockets and plain fds once per pass, runs the
  callbacks of those that are readable (each drains its socket with NOBLOCK),
  then due timers, then the end-of-pass hooks (where output batches are
  flushed). Signals wake the poll through a self-pipe.
"""
from __future__ import annotations

import ctypes
import heapq
import logging
import math
import os
import signal
import socket
import sys
import time
from typing import Any, Callable

import zmq
from zmq.backend import zmq_poll as _zmq_poll

from . import curve

PR_SET_PDEATHSIG = 1
PARENT_CHECK_INTERVAL = 0.5

log = logging.getLogger("netemu.runtime")


# Resolved at import, which for emulated processes happens once in the zygote
# before it forks: loading the library in each child cost every one of them
# ~140 KiB of pages copied on write.
try:
    _PRCTL: Callable[..., int] | None = ctypes.CDLL(None, use_errno=True).prctl
except (OSError, AttributeError):
    _PRCTL = None


def set_parent_death_signal(signum: int) -> bool:
    """Ask Linux to send `signum` when our parent *thread* dies (prctl PR_SET_PDEATHSIG).

    False where prctl is unavailable. netemu's one prctl wrapper: the zygote
    (control.zygote) arms it for itself and each child it forks, and
    `prepare_process` re-arms it in long-running processes. Check
    `os.getppid()` right after: the parent may already be gone.
    """
    if _PRCTL is None:
        return False
    return _PRCTL(PR_SET_PDEATHSIG, signum, 0, 0, 0) == 0


class Lifecycle:
    """What a process's loop needs to know about its own life: stop requested, parent alive."""

    def __init__(self, name: str, parent_pid: int | None) -> None:
        self.name = name
        self.parent_pid = parent_pid
        self.started = time.monotonic()
        self.stop_requested = False
        self.stop_reason = ""
        self._wakeup_read: socket.socket | None = None
        self._wakeup_write: socket.socket | None = None
        self._previous_handlers: dict[int, Any] = {}
        self._previous_wakeup_fd = -1
        self._on_stop: list[Callable[[], None]] = []

    @property
    def uptime(self) -> float:
        return time.monotonic() - self.started

    def request_stop(self, reason: str) -> None:
        """Ask the loop to finish its pass and shut down cleanly."""
        if not self.stop_requested:
            self.stop_requested = True
            self.stop_reason = reason
            log.info("%s: stopping (%s)", self.name, reason)
        for callback in self._on_stop:
            callback()

    def on_stop(self, callback: Callable[[], None]) -> None:
        """Call `callback` when a stop is requested (an event loop registers its `stop`)."""
        self._on_stop.append(callback)
        if self.stop_requested:
            callback()

    def parent_alive(self) -> bool:
        """False once the parent we were started by has gone (we were re-parented)."""
        return self.parent_pid is None or os.getppid() == self.parent_pid

    def check_parent(self) -> None:
        """Request a stop if the parent has died; the loop calls this every ~0.5 s."""
        if not self.parent_alive():
            self.request_stop(f"parent {self.parent_pid} died")

    def _handle_signal(self, signum: int, frame: object) -> None:
        self.request_stop(signal.Signals(signum).name)

    def install_signal_handlers(self) -> None:
        """SIGTERM/SIGINT set the stop flag; a self-pipe wakes a sleeping poll."""
        self._wakeup_read, self._wakeup_write = socket.socketpair()
        self._wakeup_read.setblocking(False)
        self._wakeup_write.setblocking(False)
        self._previous_wakeup_fd = signal.set_wakeup_fd(self._wakeup_write.fileno(), warn_on_full_buffer=False)
        for signum in (signal.SIGTERM, signal.SIGINT):
            self._previous_handlers[signum] = signal.signal(signum, self._handle_signal)

    @property
    def wakeup_fd(self) -> int | None:
        """Readable when a signal arrived; register it in the poller so the poll returns at once."""
        return self._wakeup_read.fileno() if self._wakeup_read is not None else None

    def drain_wakeup(self) -> None:
        if self._wakeup_read is None:
            return
        try:
            while self._wakeup_read.recv(512):
                pass
        except (BlockingIOError, InterruptedError):
            pass

    def restore(self) -> None:
        """Undo `install_signal_handlers` (tests run several processes' worth in one interpreter)."""
        for signum, handler in self._previous_handlers.items():
            signal.signal(signum, handler)
        self._previous_handlers.clear()
        if self._wakeup_write is not None:
            signal.set_wakeup_fd(self._previous_wakeup_fd)
            self._wakeup_write.close()
            self._wakeup_read.close()  # type: ignore[union-attr]
            self._wakeup_write = self._wakeup_read = None


class _ProcessFormatter(logging.Formatter):
    """``time name[pid] LEVEL logger: message``, the process name set once the config is known."""

    process_name = "?"

    def format(self, record: logging.LogRecord) -> str:
        record.netemu_process = self.process_name
        return super().format(record)


class _StderrHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """Writes to whatever `sys.stderr` is when a record comes (the zygote points fd 2 at the log)."""

    def __init__(self) -> None:
        logging.Handler.__init__(self)

    @property
    def stream(self) -> Any:  # type: ignore[override]
        return sys.stderr


# Built at import, i.e. once in the zygote before it forks: a handler and a
# formatter made in each child (logging.basicConfig) cost every process
# ~400 KiB of pages copied on write, for lines most processes never log.
_FORMATTER = _ProcessFormatter("%(asctime)s %(netemu_process)s[%(process)d] %(levelname)s %(name)s: %(message)s")
_HANDLER = _StderrHandler()
_HANDLER.setFormatter(_FORMATTER)


def configure_logging(config: dict[str, Any]) -> None:
    """Log to stderr at the config's `log_level` (the supervisor collects stderr into the run dir).

    Like `logging.basicConfig`, does nothing if the root logger has handlers already.
    """
    root = logging.getLogger()
    if root.handlers:
        return
    _FORMATTER.process_name = str(config.get("name", "?"))
    root.addHandler(_HANDLER)
    level = getattr(logging, str(config.get("log_level") or "WARNING").upper(), logging.WARNING)
    if root.level != level:  # setLevel clears every logger's cache: pages a child need not copy
        root.setLevel(level)


def prepare_process(config: dict[str, Any]) -> Lifecycle:
    """Set up a long-running process: die with `parent_pid`, SIGTERM/SIGINT become a stop flag.

    PR_SET_PDEATHSIG delivers SIGTERM when the parent dies, but the parent
    may already have died before the prctl, so we compare `os.getppid()`
    right after; a loop should still call `check_parent()` periodically
    (PDEATHSIG follows the parent *thread*, and is reset by exec).
    """
    configure_logging(config)
    curve.use(config.get("curve"))  # the keys of every tcp:// socket this process makes (bus/curve.py)
    curve.add_local_twin(config.get("control"), config.get("control_local"))  # for the node's tools
    lifecycle = Lifecycle(str(config.get("name", "?")), config.get("parent_pid"))
    lifecycle.install_signal_handlers()
    if lifecycle.parent_pid is not None:
        set_parent_death_signal(signal.SIGTERM)
        lifecycle.check_parent()
    return lifecycle


class Timer:
    """A scheduled callback; `cancel()` makes the loop skip it."""

    __slots__ = ("when", "callback", "args", "cancelled")

    def __init__(self, when: float, callback: Callable[..., Any], args: tuple[Any, ...]) -> None:
        self.when = when
        self.callback = callback
        self.args = args
        self.cancelled = False

    def cancel(self) -> None:
        self.cancelled = True


class EventLoop:
    """One poll per pass over ZeroMQ sockets and fds, a timer heap, end-of-pass hooks.

    Readers are called with no arguments when their socket/fd is readable and
    must drain it (NOBLOCK until `zmq.Again`), because the loop polls only
    once per pass. Timers are `(when, callback, args)` on `time.monotonic()`.
    End-of-pass hooks run after every pass: that is where batched output is
    flushed, so a lone frame leaves in the pass that produced it.
    """

    # zmq_poll takes whole milliseconds; never sleep longer than this so
    # periodic chores (parent check) keep running even with no timers.
    MAX_SLEEP = 0.5

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self.clock = clock
        self.poller = zmq.Poller()
        self._readers: dict[Any, Callable[[], Any]] = {}
        self._fd_readers: dict[int, Callable[[], Any]] = {}
        self._timers: list[tuple[float, int, Timer]] = []
        self._sequence = 0
        self._end_of_pass: list[Callable[[], Any]] = []
        self.running = False
        self.passes = 0

    def add_reader(self, source: zmq.Socket | int, callback: Callable[[], Any]) -> None:
        """Call `callback()` whenever `source` (a zmq socket or an fd) is readable.

        A CURVE server socket brings its companions (bus/curve.py): the ZAP
        handler that admits its clients and its handshake monitor, polled by
        this loop too, so no process needs a thread to authenticate.
        """
        self.poller.register(source, zmq.POLLIN)
        if isinstance(source, int):
            self._fd_readers[source] = callback
            return
        self._readers[source] = callback
        for companion, handler in curve.companions(source):
            if companion not in self._readers:
                self.add_reader(companion, handler)

    def remove_reader(self, source: zmq.Socket | int) -> None:
        self.poller.unregister(source)
        if isinstance(source, int):
            self._fd_readers.pop(source, None)
        else:
            self._readers.pop(source, None)

    def call_at(self, when: float, callback: Callable[..., Any], *args: Any) -> Timer:
        timer = Timer(when, callback, args)
        self._sequence += 1
        heapq.heappush(self._timers, (when, self._sequence, timer))
        return timer

    def call_later(self, delay: float, callback: Callable[..., Any], *args: Any) -> Timer:
        return self.call_at(self.clock() + delay, callback, *args)

    def call_every(self, interval: float, callback: Callable[[], Any]) -> None:
        """Run `callback` every `interval` seconds for the life of the loop."""
        def tick() -> None:
            callback()
            self.call_later(interval, tick)
        self.call_later(interval, tick)

    def add_end_of_pass(self, callback: Callable[[], Any]) -> None:
        self._end_of_pass.append(callback)

    def attach_lifecycle(self, lifecycle: Lifecycle) -> None:
        """Stop on SIGTERM/SIGINT (woken by the self-pipe) and when the parent dies."""
        lifecycle.on_stop(self.stop)
        if lifecycle.wakeup_fd is not None:
            self.add_reader(lifecycle.wakeup_fd, lifecycle.drain_wakeup)
        if lifecycle.parent_pid is not None:
            self.call_every(PARENT_CHECK_INTERVAL, lifecycle.check_parent)

    def stop(self) -> None:
        self.running = False

    def next_timeout_ms(self, now: float) -> int:
        """Milliseconds until the earliest live timer (0 if due), capped at MAX_SLEEP."""
        timers = self._timers
        while timers and timers[0][2].cancelled:
            heapq.heappop(timers)
        if not timers:
            return int(self.MAX_SLEEP * 1000)
        delay = timers[0][0] - now
        if delay <= 0:
            return 0
        # Round up: waking a little late is harmless, waking early costs a pass.
        return min(math.ceil(delay * 1000), int(self.MAX_SLEEP * 1000))

    def run_due_timers(self, now: float) -> None:
        timers = self._timers
        while timers and timers[0][0] <= now:
            timer = heapq.heappop(timers)[2]
            if not timer.cancelled:
                timer.callback(*timer.args)

    def run_once(self, timeout_ms: int | None = None) -> None:
        """One pass: poll, readers, due timers, end-of-pass hooks."""
        clock = self.clock
        if timeout_ms is None:
            timeout_ms = self.next_timeout_ms(clock())
        # zmq_poll on the poller's own item list: Poller.poll is only this plus argument checks.
        events = _zmq_poll(self.poller.sockets, int(timeout_ms) if timeout_ms >= 0 else -1)
        readers = self._readers
        for source, _ in events:
            callback = readers.get(source)
            if callback is None and isinstance(source, int):
                callback = self._fd_readers.get(source)
            if callback is not None:
                callback()
        timers = self._timers
        if timers and timers[0][0] <= clock():
            self.run_due_timers(clock())
        for hook in self._end_of_pass:
            hook()
        self.passes += 1

    def run(self) -> None:
        """Run passes until `stop()`."""
        self.running = True
        while self.running:
            self.run_once()
