"""Programs on a node: the trapped front end, sockfs and the syscall socket, in the node's loop.

Before changing this file, read `nodes/syscalls.py` (trapped calls), `nodes/sockfs.py`
(the socket files) and `nodes/api_server.py` (the node's syscall socket).

`ProgramService` is what `nodes/kernel.py` creates when its config names a `syscall`
socket (RUN_DIR/NODE.sys). It wires, into the kernel's `EventLoop`:

* `Sockfs` over the stack's socket layer: every socket's end is a reader; `service()`
  runs at the end of each pass (after NET_RX), so what a pass received reaches the
  programs in the same pass;
* the `SyscallFrontEnd` (trapped calls): each seccomp listener handed over the syscall
  socket (`netemu exec`, `node.exec`) is a reader; pending calls are swept every
  `SWEEP_INTERVAL` while any waits (a program killed in a blocking recvfrom);
* the `ApiServer` on the syscall socket: listeners arrive there, and the in-process
  front end (`node.socket()`) calls the same `Sockfs`.

Like NET_RX, servicing is behind an exception barrier: a bug answers the program's
call with EIO (the front ends do that) and is counted in `counters()["exceptions"]`,
never a dead node, unless `NapiScheduler.reraise` (the test suite) asks to raise.
"""
from __future__ import annotations

import logging
import time
from typing import Any, Callable

from bus.runtime import EventLoop

from .api_server import ApiServer
from .nic import NapiScheduler
from .sockfs import Sockfs
from .stack import Stack
from .syscalls import SyscallFrontEnd

log = logging.getLogger("netemu.programs")

SWEEP_INTERVAL = 0.05      # seconds between NOTIF_ID_VALID sweeps of pending calls


class ProgramService:
    """The node's programs: their trapped calls, their sockets' files, the syscall socket."""

    def __init__(self, stack: Stack, loop: EventLoop, clock: Callable[[], float], syscall_path: str | None) -> None:
        self.loop = loop
        self.exceptions = 0
        stack.sockets.wall_offset = time.time() - clock()
        self.sockfs = Sockfs(stack.sockets, clock, loop.add_reader, loop.remove_reader, loop.call_later,
                             on_release=self._released)
        self.front = SyscallFrontEnd(self.sockfs)
        self.api = ApiServer(syscall_path, self.sockfs, loop, self.add_listener) if syscall_path else None
        self._sweeping = False

    def add_listener(self, listener: int, pid: int = 0) -> None:
        """Serve the trapped calls of the program(s) under `listener` (ours from now on)."""
        self.front.add_listener(listener)
        self.loop.add_reader(listener, lambda: self._listener_ready(listener))
        log.info("serving the trapped calls of pid %s (listener fd %d)", pid, listener)

    def _listener_ready(self, listener: int) -> None:
        try:
            alive = self.front.on_readable(listener, 0)
        except Exception:  # noqa: BLE001 - the barrier: see the module docstring
            self._caught("a trapped call")
            alive = listener in self.front.listeners
        if not alive:
            self.loop.remove_reader(listener)
        if self.front.pending and not self._sweeping:
            self._sweeping = True
            self.loop.call_later(SWEEP_INTERVAL, self._sweep)

    def _sweep(self) -> None:
        self.front.sweep()
        if self.front.pending:
            self.loop.call_later(SWEEP_INTERVAL, self._sweep)
        else:
            self._sweeping = False

    def service(self) -> None:
        """End of a loop pass, after NET_RX (the kernel registers it): what arrived reaches the programs."""
        try:
            self.sockfs.service()
        except Exception:  # noqa: BLE001 - the barrier
            self._caught("servicing sockets")

    def _caught(self, what: str) -> None:
        if NapiScheduler.reraise:
            raise
        self.exceptions += 1
        log.exception("exception while %s (counted; the node goes on)", what)

    def _released(self, sock_id: int) -> None:
        self.front.forget(sock_id)

    def table(self) -> list[dict]:
        return self.sockfs.table()

    def counters(self) -> dict[str, Any]:
        return {"exceptions": self.exceptions, "listeners": len(self.front.listeners),
                "pending": len(self.front.pending), "syscalls": dict(self.front.counters),
                "sockfs": dict(self.sockfs.counters),
                "api": dict(self.api.counters) if self.api is not None else {}}

    def close(self) -> None:
        for listener in list(self.front.listeners):
            try:
                self.loop.remove_reader(listener)
            except (KeyError, ValueError):
                pass
        self.front.close()
        self.sockfs.close()
        if self.api is not None:
            self.api.close()
