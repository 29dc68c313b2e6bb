"""The syscall front end's machinery, without its handlers (`SyscallFrontEnd` in
`nodes/syscalls.py` adds them and the table): listeners and the loop, dispatch and answers,
pending calls, and the helpers the handlers share (the program's fds and memory, sockaddr
in and out, fd injection).

Part of `nodes/syscalls.py` (read its docstring first: the design, the wiring into the node
kernel); import `syscalls`, which names every public name defined here.
"""
from __future__ import annotations

import errno
import os
import select
from dataclasses import dataclass, field
from typing import Any, Callable

from . import trap
from .syscall_args import (
    _INT, SOCK_CLOEXEC, SOCK_NONBLOCK, SOCKADDR_STORAGE, Call, Deferred, SockAddr, SocketLayer, SockId,
    _int, decode_sockaddr, encode_sockaddr,
)

PIDFD_CACHE = 256               # pidfds of calling threads kept open


# ---------------------------------------------------------------------------------------------
# The front end

CONTINUE = object()     # handler result: let the kernel run the call natively
ANSWERED = object()     # handler result: already answered (ADDFD with FLAG_SEND)


@dataclass
class _Pending:
    listener: int
    call: Call
    deferred: Deferred
    finish: Callable[[Any], Any]


@dataclass
class SyscallDispatch:
    """The front end without its handlers: `SyscallFrontEnd` fills `_table` (syscall number ->
    (name, handler)) from `HANDLERS`. Single-threaded, never blocks."""
    layer: SocketLayer
    sync_wakeup: bool = True
    listeners: set[int] = field(default_factory=set)
    pending: dict[int, _Pending] = field(default_factory=dict)
    counters: dict[str, int] = field(default_factory=lambda: {
        "trapped": 0, "continued": 0, "answered": 0, "failed": 0, "pending": 0, "cancelled": 0,
        "vanished": 0, "errors": 0})

    def __post_init__(self) -> None:
        self.arch = trap.current_arch()
        self._table: dict[int, tuple[str, Callable]] = {}     # filled by SyscallFrontEnd
        self._ours: dict[int, SockId] = {}      # inode of the program's end (sockfs) -> sock_id
        self._key_of: dict[SockId, int] = {}
        self._pidfds: dict[int, int] = {}       # tid -> pidfd
        self._pending_by_tid: dict[int, int] = {}

    # --- listeners and the loop

    def add_listener(self, listener: int) -> None:
        """Serve `listener` (we own it from now on: closed by `close()` or at POLLHUP)."""
        if self.sync_wakeup:
            trap.set_sync_wakeup(listener)
        self.listeners.add(listener)

    def on_readable(self, listener: int, events: int = select.POLLIN, budget: int = 16) -> bool:
        """`listener` polled `events`: take up to `budget` waiting notifications (after the
        first, only while another is waiting: one poll(0) each). False once it is finished
        (every program under it exited: POLLHUP with nothing waiting), closed here.

        Measured: looking again right after an answer often finds the program's next call
        already there (it runs on another CPU), and beats going round the loop (getsockname
        round trip 31 us against 42 us with a budget of 1)."""
        for _ in range(max(1, budget)):
            if not events & select.POLLIN:
                waiting, hung_up = trap.listener_state(listener)
                if not waiting:
                    if hung_up or events & (select.POLLHUP | select.POLLERR | select.POLLNVAL):
                        self._drop_listener(listener)
                        return False
                    return True
            events = 0
            notification = trap.recv_notification(listener)
            if notification is None:
                self.counters["vanished"] += 1
                continue
            self.dispatch(listener, notification)
        return True

    def close(self) -> None:
        """Close every listener (trapped calls of the programs then fail with ENOSYS)."""
        for request in list(self.pending.values()):
            self._cancel(request)
        for listener in list(self.listeners):
            self._drop_listener(listener)
        self._close_pidfds()

    def forget(self, sock_id: SockId) -> None:
        """The socket layer released `sock_id` (EOF on its end): its fd is no longer ours."""
        key = self._key_of.pop(sock_id, None)
        if key is not None:
            self._ours.pop(key, None)

    def sweep(self) -> int:
        """Drop pending calls whose task died or was interrupted; how many were dropped."""
        dropped = 0
        for request in list(self.pending.values()):
            if not trap.id_valid(request.listener, request.call.id):
                self._cancel(request)
                dropped += 1
        return dropped

    def _drop_listener(self, listener: int) -> None:
        for request in [r for r in self.pending.values() if r.listener == listener]:
            self._cancel(request)
        self.listeners.discard(listener)
        os.close(listener)

    # --- dispatch

    def dispatch(self, listener: int, notification: trap.Notification) -> None:
        """Handle one trapped call: answer it now, continue it, or leave it pending."""
        self.counters["trapped"] += 1
        old = self._pending_by_tid.get(notification.pid)
        if old is not None and old in self.pending:    # that thread's previous call is gone
            self._cancel(self.pending[old])
        name, handler = self._table.get(notification.nr, (None, None))
        call = Call(notification.id, notification.pid, name or self.arch.name_of(notification.nr),
                    open_file=self._getfd)
        call.replace = lambda our_fd: self._replace_fd(listener, call, our_fd)
        if handler is None:
            self._close_file(call)
            self.counters["continued"] += 1
            trap.respond(listener, call.id, continue_=True)
            return
        self._complete(listener, call, lambda: handler(listener, call, notification.args))

    def _complete(self, listener: int, call: Call, produce: Callable[[], Any]) -> bool:
        """Run `produce` (a handler, or a pending call's finish) and answer with what it gives:
        a value, an errno (OSError), CONTINUE, ANSWERED, or (Deferred, finish) to wait.
        A bug (any other exception) still answers, with EIO, before it propagates: a
        program never hangs on our mistake. True when the call was answered now."""
        try:
            result = produce()
            if isinstance(result, tuple) and result and isinstance(result[0], Deferred):
                self._wait(listener, call, *result)
                return False
            if result is CONTINUE:
                self.counters["continued"] += 1
                return trap.respond(listener, call.id, continue_=True)
            if result is ANSWERED:
                self.counters["answered"] += 1
                return True
            return self._answer(listener, call, value=int(result))
        except _Vanished:
            self.counters["cancelled"] += 1
            return False
        except OSError as error:
            return self._answer(listener, call, error=error.errno or errno.EIO)
        except BaseException:
            self.counters["errors"] += 1
            self._answer(listener, call, error=errno.EIO)
            raise
        finally:
            if call.id not in self.pending:
                self._close_file(call)

    def _answer(self, listener: int, call: Call, value: int = 0, error: int = 0) -> bool:
        self.counters["failed" if error else "answered"] += 1
        return trap.respond(listener, call.id, value=value, error=error)

    def _wait(self, listener: int, call: Call, deferred: Deferred, finish: Callable[[Any], Any]) -> None:
        request = _Pending(listener, call, deferred, finish)
        try:
            call.file                      # held while pending, as Linux holds the struct file
        except OSError:
            pass

        def sink(ok: bool, value: Any) -> bool:
            if self.pending.pop(call.id, None) is None:
                return False
            if self._pending_by_tid.get(call.pid) == call.id:
                del self._pending_by_tid[call.pid]
            if not trap.id_valid(listener, call.id):
                self.counters["cancelled"] += 1
                self._close_file(call)
                return False
            if not ok:
                self._close_file(call)
                return self._answer(listener, call, error=value)
            return self._complete(listener, call, lambda: finish(value))

        if deferred._outcome is not None:         # resolved before it was returned
            self.pending[call.id] = request
            deferred._sink = sink
            sink(*deferred._outcome)
            return
        self.counters["pending"] += 1
        self.pending[call.id] = request
        self._pending_by_tid[call.pid] = call.id
        deferred._sink = sink

    def _cancel(self, request: _Pending) -> None:
        call = request.call
        if self.pending.pop(call.id, None) is None:
            return
        if self._pending_by_tid.get(call.pid) == call.id:
            del self._pending_by_tid[call.pid]
        self.counters["cancelled"] += 1
        self._close_file(call)
        request.deferred._cancelled()

    @staticmethod
    def _close_file(call: Call) -> None:
        call.close()

    # --- helpers for handlers

    def _socket_of(self, call: Call, fd_arg: int) -> SockId | None:
        """The sock_id behind the program's fd, or None (not ours: continue natively).
        `call.file` (our duplicate of the program's file) is taken when first used.

        The link /proc/TID/fd/N names a socket's inode: one syscall, for ours and for the
        common "not ours" answer alike. (That the fd may be replaced by another thread
        right after is the race any syscall has: Linux uses the file it found at entry.)"""
        fd = _int(fd_arg)
        call.fd = fd
        if fd < 0:
            return None
        try:
            link = os.readlink(f"/proc/{call.pid}/fd/{fd}")
        except OSError:
            return None                     # no such fd (the kernel says EBADF) or task gone
        if not link.startswith("socket:["):
            return None
        return self._ours.get(int(link[8:-1]))

    def _getfd(self, tid: int, fd: int) -> int:
        """pidfd_getfd with a pidfd per thread kept open (a pidfd pins its task: a reused
        tid never reaches the wrong process, it fails with ESRCH and is reopened)."""
        pidfd = self._pidfds.get(tid)
        if pidfd is not None:
            try:
                return trap.pidfd_getfd(pidfd, fd)
            except OSError as error:
                if error.errno != errno.ESRCH:
                    raise
                os.close(self._pidfds.pop(tid))
        if len(self._pidfds) >= PIDFD_CACHE:
            self._close_pidfds()
        pidfd = self._pidfds[tid] = trap.pidfd_open(tid)
        return trap.pidfd_getfd(pidfd, fd)

    def _close_pidfds(self) -> None:
        for pidfd in self._pidfds.values():
            os.close(pidfd)
        self._pidfds.clear()

    def _read(self, call: Call, address: int, length: int) -> bytes:
        if length and not address:
            raise OSError(errno.EFAULT, "NULL pointer")
        return trap.read_memory(call.pid, address, length)

    def _write(self, call: Call, address: int, data: bytes) -> None:
        if data and not address:
            raise OSError(errno.EFAULT, "NULL pointer")
        trap.write_memory(call.pid, address, data)

    def _read_sockaddr(self, call: Call, address: int, length: int) -> SockAddr:
        length = _int(length)
        if length < 0 or length > SOCKADDR_STORAGE:
            raise OSError(errno.EINVAL, "bad address length")
        return decode_sockaddr(self._read(call, address, length))

    def _write_sockaddr(self, call: Call, address: int, length_pointer: int, value: SockAddr | None,
                        optional: bool = False) -> None:
        """move_addr_to_user: truncate to the program's length, store the full length.
        `optional`: a NULL address means "not wanted" (accept), else EFAULT as any pointer."""
        if optional and not address:
            return
        length = _INT.unpack(self._read(call, length_pointer, 4))[0]
        if length < 0:
            raise OSError(errno.EINVAL, "negative address length")
        raw = encode_sockaddr(SockAddr(*value)) if value is not None else b""
        if length and raw and not address:
            raise OSError(errno.EFAULT, "NULL pointer")
        trap.write_memory_many(call.pid, [(address, raw[:length]), (length_pointer, _INT.pack(len(raw)))])

    def _replace_fd(self, listener: int, call: Call, our_fd: int) -> None:
        """Put a copy of `our_fd` at the program's `call.fd` (ADDFD_FLAG_SETFD: dup2 into the task,
        FD_CLOEXEC kept) and follow the socket there (sockfs renews a socket's pair this way)."""
        with open(f"/proc/{call.pid}/fdinfo/{call.fd}", encoding="ascii") as info:
            flags = next(int(line.split()[1], 8) for line in info if line.startswith("flags:"))
        old_key = int(os.readlink(f"/proc/{call.pid}/fd/{call.fd}")[8:-1])
        trap.inject_fd(listener, call.id, our_fd, newfd_flags=flags & os.O_CLOEXEC, send=False, newfd=call.fd)
        sock = self._ours.pop(old_key, None)
        if sock is not None:
            key = os.fstat(our_fd).st_ino
            self._ours[key] = sock
            self._key_of[sock] = key

    def _checked(self, listener: int, call: Call) -> None:
        """After reading the task's memory by pid: was that still our task? (seccomp_unotify(2))"""
        if not trap.id_valid(listener, call.id):
            raise _Vanished()

    def _install(self, listener: int, call: Call, sock: SockId, program_end: int, flags: int,
                 send: bool = True) -> int:
        """Inject the program's end of a new socket (closing ours) and remember it as ours."""
        try:
            if flags & SOCK_NONBLOCK:
                os.set_blocking(program_end, False)
            key = os.fstat(program_end).st_ino
            self._ours[key] = sock
            self._key_of[sock] = key
            return trap.inject_fd(listener, call.id, program_end,
                                  newfd_flags=os.O_CLOEXEC if flags & SOCK_CLOEXEC else 0, send=send)
        finally:
            os.close(program_end)            # the socket layer sees EOF if the injection failed


class _Vanished(OSError):
    """The task went away while we read its memory: nothing is answered."""

    def __init__(self) -> None:
        super().__init__(errno.ENOENT, "the trapped call is gone")
