"""While a node is down: its programs' socket calls fail with ENETDOWN instead of waiting.

Before changing this file, read issue 12 ("Programs outlive their node's crash and
restart"), seccomp_unotify(2) and control/programs.py (who holds the listeners).

The holder of a program (the `netemu exec` client, the emulation's program table)
keeps a duplicate of its seccomp listener. While the program's node runs, only the
node receives from it. Once the node's process is known to be gone, the holder
answers the calls queued there itself (`answer_calls`), as a host whose network
stack is down would:

* `socket()` of an emulated family (the filter traps no other): ENETDOWN;
* a call on one of the node's sockets (an AF_UNIX end whose node side is closed:
  every socket of a dead node is one): ENETDOWN;
* anything else (a program's own AF_UNIX socket): continues natively.

When the node is restarted, the holder stops answering *before* it hands the
listener to the new kernel, so the two never receive from one listener at once;
calls made in between wait and are served by the new kernel.
"""
from __future__ import annotations

import contextlib
import errno
import select
import socket
import threading
from typing import TYPE_CHECKING, Callable

if TYPE_CHECKING:
    from .programs import Program


def answer_calls(listener: int, budget: int = 64) -> int:
    """Answer the calls waiting on `listener` as a downed node would; how many were answered."""
    from nodes import trap

    numbers = trap.current_arch()
    answered = 0
    poller = select.poll()
    poller.register(listener, select.POLLIN)
    while answered < budget and any(event & select.POLLIN for _, event in poller.poll(0)):
        notification = trap.recv_notification(listener)
        if notification is None:
            continue                  # the caller died meanwhile
        if notification.nr == numbers.socket or _dead_node_socket(notification.pid, notification.args[0]):
            trap.respond(listener, notification.id, error=errno.ENETDOWN)
        else:
            trap.respond(listener, notification.id, continue_=True)
        answered += 1
    return answered


def _dead_node_socket(tid: int, fd: int) -> bool:
    """Is the caller's `fd` an AF_UNIX socket whose other end is closed (a socket of a dead node)?"""
    from nodes import trap

    try:
        duplicate = trap.fd_of_task(tid, fd)
    except OSError:
        return False                  # no such fd: let the kernel say EBADF natively
    try:
        with contextlib.closing(socket.socket(fileno=duplicate)) as sock:
            if sock.family != socket.AF_UNIX:
                return False
            poller = select.poll()
            poller.register(sock.fileno(), select.POLLHUP | select.POLLRDHUP)
            return any(event & (select.POLLHUP | select.POLLRDHUP) for _, event in poller.poll(0))
    except OSError:
        return False


class DownResponder:
    """For the emulation's own programs: a thread answering the calls of programs whose node is down.

    `node_alive(name)` says whether the node's process runs (the supervisor's view).
    `pause(node)` / `resume(node)` bracket a restart's hand-over of that node's listeners.
    """

    INTERVAL = 0.05

    def __init__(self, programs: Callable[[], list["Program"]], node_alive: Callable[[str], bool]) -> None:
        self.programs = programs
        self.node_alive = node_alive
        self._paused: set[str] = set()
        self.lock = threading.Lock()       # held while answering: pause() and releasing a program wait for it
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="programs-node-down", daemon=True)
        self._thread.start()

    def pause(self, node: str) -> None:
        """Stop answering for `node` (its new kernel is about to get the listeners)."""
        with self.lock:
            self._paused.add(node)

    def resume(self, node: str) -> None:
        with self.lock:
            self._paused.discard(node)

    def close(self) -> None:
        self._stop.set()
        self._thread.join(2.0)

    def _run(self) -> None:
        while not self._stop.wait(self.INTERVAL):
            programs = self.programs()         # (before the lock: the table takes its own lock, then ours)
            with self.lock:
                for program in programs:
                    node = program.site.node
                    if node in self._paused or program.released or self.node_alive(node):
                        continue
                    with contextlib.suppress(OSError):
                        answer_calls(program.listener)
