"""The syscall front end: trapped socket calls of programs, answered by the node's socket layer.

Before changing this file, read issue 12's design section, seccomp_unotify(2) and
`nodes/trap.py` (how calls are trapped; every kernel layout lives there).

A `SyscallFrontEnd` owns seccomp listener fds (one per program started on the
node, see `trap.spawn_trapped`). The node's event loop registers each listener
for POLLIN and calls `on_readable(fd, events)`; nothing here blocks. A trapped
call is decoded the way Linux's `net/socket.c` does it (`move_addr_to_kernel`,
`copy_msghdr_from_user`, `move_addr_to_user`: the same EINVAL/EFAULT checks),
passed to the socket layer (`SocketLayer`, implemented by `nodes/socket.py`),
and its result written back into the program's memory before the call is
answered. `HANDLERS` is the one table from syscall to handler.

* **Our fds and the others.** `socket()` of an emulated family (AF_INET,
  AF_INET6) asks the socket layer for a socket: it returns a sock_id and the
  program's end of a socketpair, which is injected as the call's result
  (ADDFD with FLAG_SEND) and then closed here, so the program holds the only
  copies and the socket layer sees EOF on its end when the last one is closed,
  like a `struct file` refcount. Every later call names an fd: the link
  /proc/TID/fd/N names the open file's socket inode, looked up among the ends we
  injected, so dup(), fork() and fd reuse are followed exactly (one syscall; the
  file itself is taken with pidfd_getfd only when a handler needs it). A call on any
  other fd (AF_UNIX, netlink, a closed fd) continues natively
  (USER_NOTIF_FLAG_CONTINUE), as do socket() of other families.
* **Native when it is the same.** sendmsg/recvmsg/sendmmsg/recvmmsg without
  addresses and without control data are send()/recv() on the socketpair: they
  continue natively, as plain send/recv never trap at all.
* **Blocking calls are pending requests.** A socket-layer method may return a
  `Deferred` instead of its result (a blocking recvmsg, accept, connect...). The
  call waits, the loop goes on; the socket layer calls `deferred.resolve(value)`
  or `deferred.fail(errno)` when the event happens, which writes the result and
  answers the call then. A pending call is dropped (its `on_cancel` callbacks
  run, nothing is answered) when its task dies or a signal interrupts it:
  `sweep()` asks NOTIF_ID_VALID for every pending call (call it on a timer while
  `pending` is non-empty), and a new call from the same thread proves the old
  one is gone at once. `resolve()` returns False when the call was gone: the
  socket layer keeps its datagram/connection for the next caller.
* O_NONBLOCK is per open file and set natively with fcntl(): each call reads it
  from our duplicate of the program's file (`Call.nonblock`).

Wiring into the node kernel (`nodes/kernel.py`): `add_listener(fd)` for each
program started on the node; register every fd of `listeners` in the poller for
POLLIN and call `on_readable(fd, events)` when it fires (False: the listener is
finished and closed, unregister it); call `sweep()` every ~50 ms while `pending`
is non-empty; call `forget(sock_id)` when the socket layer releases a socket (EOF
on its end); `close()` at shutdown. Keep `Call.file` nowhere beyond the call.

Measured on the 2-vCPU VM (tests/integration/test_trap.py prints it): getsockname
trapped and answered ~31 us round trip, trapped and continued (a foreign fd) ~15 us,
native 0.4 us; the floor, a bare NOTIF_RECV + CONTINUE with no work, ~9 us.
SYNC_WAKE_UP is set but changes nothing measurable here.
"""
from __future__ import annotations

import errno
import os
import select
import socket as _socket
import struct
from dataclasses import dataclass, field
from typing import Any, Callable, NamedTuple, Protocol

from . import trap

AF_UNSPEC, AF_INET, AF_INET6 = 0, 2, 10
EMULATED_FAMILIES = (AF_INET, AF_INET6)
SOCK_NONBLOCK, SOCK_CLOEXEC = 0o4000, 0o2000000
MSG_DONTWAIT, MSG_ERRQUEUE, MSG_CTRUNC, MSG_WAITFORONE = 0x40, 0x2000, 0x8, 0x10000
SOCKADDR_STORAGE = 128          # sizeof(struct sockaddr_storage)
UIO_MAXIOV = 1024
OPTMEM_MAX = 20480              # net.core.optmem_max: the biggest control buffer sendmsg takes
MAX_TRANSFER = 4 << 20          # bytes read from a program per send call (more: a short send)
MAX_OPTLEN = 1 << 16
PIDFD_CACHE = 256               # pidfds of calling threads kept open

_MSGHDR = struct.Struct("=QI4xQQQQi4x")   # name, namelen, iov, iovlen, control, controllen, flags
_MMSGHDR_SIZE = _MSGHDR.size + 8          # + unsigned msg_len, padded
_IOVEC = struct.Struct("=QQ")
_INT = struct.Struct("=i")
_UINT = struct.Struct("=I")


# ---------------------------------------------------------------------------------------------
# What the socket layer sees

class SockAddr(NamedTuple):
    """A decoded sockaddr. `host`/`port` (and for AF_INET6 `flowinfo`, `scope_id`) as
    Python's socket module gives them; `raw`: the bytes of any other family (AF_UNSPEC
    included), so the socket layer can check their length as Linux does (inet_bind:
    EINVAL when shorter than a sockaddr_in, before looking at the family). AF_INET and
    AF_INET6 addresses too short for their family never get here (EINVAL)."""
    family: int
    host: str = ""
    port: int = 0
    flowinfo: int = 0
    scope_id: int = 0
    raw: bytes = b""

    def tuple(self) -> tuple:
        if self.family == AF_INET6:
            return (self.host, self.port, self.flowinfo, self.scope_id)
        return (self.host, self.port)


class RecvResult(NamedTuple):
    """A received message: `length` is the call's result (len(data), or more with MSG_TRUNC)."""
    data: bytes
    address: SockAddr | None = None
    control: bytes = b""
    msg_flags: int = 0
    length: int | None = None


class Call:
    """The context of one trapped call: `id`, the calling thread `pid`, the syscall `name`,
    the program's `fd` it names. `file` is our duplicate of the program's open file
    (pidfd_getfd, taken on first use: native recv on it, fcntl flags) and `nonblock` its
    O_NONBLOCK; a pending call holds `file` until answered, as a blocked Linux syscall
    holds its `struct file`."""

    __slots__ = ("id", "pid", "name", "fd", "_file", "_nonblock", "_open")

    def __init__(self, id: int, pid: int, name: str, fd: int = -1, nonblock: bool | None = None,
                 open_file: Callable[[int, int], int] | None = None) -> None:
        self.id, self.pid, self.name, self.fd = id, pid, name, fd
        self._file, self._nonblock, self._open = -1, nonblock, open_file

    @property
    def file(self) -> int:
        if self._file < 0 and self._open is not None and self.fd >= 0:
            self._file = self._open(self.pid, self.fd)
        return self._file

    @property
    def nonblock(self) -> bool:
        if self._nonblock is None:
            self._nonblock = self.file >= 0 and not os.get_blocking(self.file)
        return self._nonblock

    @staticmethod
    def defer() -> "Deferred":
        """A pending result, for a socket layer that may not import this module."""
        return Deferred()

    def close(self) -> None:
        if self._file >= 0:
            os.close(self._file)
            self._file = -1

    def __repr__(self) -> str:
        return f"Call({self.name} id={self.id:#x} pid={self.pid} fd={self.fd})"


class Deferred:
    """A result the socket layer gives later: the call stays pending until `resolve`/`fail`."""

    __slots__ = ("_sink", "_outcome", "_cancel", "cancelled")

    def __init__(self) -> None:
        self._sink: Callable[[bool, Any], bool] | None = None
        self._outcome: tuple[bool, Any] | None = None
        self._cancel: list[Callable[[], None]] = []
        self.cancelled = False

    def resolve(self, value: Any = None) -> bool:
        """Answer the call with `value`; False when the call was gone (died, interrupted)."""
        return self._finish(True, value)

    def fail(self, error: int) -> bool:
        """Fail the call with errno `error`; False when the call was gone."""
        return self._finish(False, error)

    def on_cancel(self, callback: Callable[[], None]) -> None:
        """`callback()` runs if the call goes away unanswered (the socket layer drops its waiter)."""
        self._cancel.append(callback)

    @property
    def done(self) -> bool:
        return self._outcome is not None or self.cancelled

    def _finish(self, ok: bool, value: Any) -> bool:
        if self.done:
            return False
        self._outcome = (ok, value)
        return self._sink(ok, value) if self._sink is not None else True

    def _cancelled(self) -> None:
        if not self.done:
            self.cancelled = True
            for callback in self._cancel:
                callback()


SockId = Any


class SocketLayer(Protocol):
    """What the front end needs of the node's socket layer (nodes/socket.py implements it).

    Every method may raise OSError(errno) — the call fails with that errno — and the
    ones that may block may return a `Deferred` of their result. `call.nonblock` and
    MSG_DONTWAIT say whether blocking is allowed; with them set, never return a Deferred.

    The socket layer sits below this module (pyproject's layers) and imports nothing
    from it: it gets a Deferred from `call.defer()`, and may return plain tuples for
    addresses, (family, host, port[, flowinfo, scope_id]), and for received messages,
    (data, address[, control, msg_flags, length]): `SockAddr` and `RecvResult` are those
    tuples with names. An address it is given is a `SockAddr` (`.tuple()` is the
    stdlib's form; `raw` holds the bytes of a family the front end does not decode).
    """

    def socket(self, family: int, type: int, proto: int, call: Call) -> tuple[SockId, int]:
        """A new socket: (sock_id, fd of the program's end). The front end injects that fd
        and closes it (the program then holds the only copies)."""

    def bind(self, sock: SockId, address: SockAddr, call: Call) -> None: ...

    def connect(self, sock: SockId, address: SockAddr, call: Call) -> None | Deferred: ...

    def listen(self, sock: SockId, backlog: int, call: Call) -> None: ...

    def accept(self, sock: SockId, call: Call) -> tuple[SockId, int, SockAddr] | Deferred:
        """(new sock_id, fd of the program's end, peer address), or a Deferred of it."""

    def getsockname(self, sock: SockId, call: Call) -> SockAddr: ...

    def getpeername(self, sock: SockId, call: Call) -> SockAddr: ...

    def setsockopt(self, sock: SockId, level: int, name: int, value: bytes, call: Call) -> None: ...

    def getsockopt(self, sock: SockId, level: int, name: int, size: int, call: Call) -> bytes | Deferred:
        """The option's bytes (the front end truncates them to `size`)."""

    def shutdown(self, sock: SockId, how: int, call: Call) -> None: ...

    def sendmsg(self, sock: SockId, data: bytes, flags: int, address: SockAddr | None,
                control: bytes, call: Call) -> int | Deferred:
        """sendto/sendmsg/sendmmsg with an address or control data: bytes sent."""

    def recvmsg(self, sock: SockId, size: int, flags: int, control_size: int,
                call: Call) -> RecvResult | Deferred:
        """recvfrom/recvmsg/recvmmsg that want an address, control data or the error queue."""


# ---------------------------------------------------------------------------------------------
# sockaddr codec

def decode_sockaddr(raw: bytes) -> SockAddr:
    """A sockaddr from a program (EINVAL for one too short for its family, as inet_bind)."""
    if len(raw) < 2:
        raise OSError(errno.EINVAL, "address too short")
    family = struct.unpack_from("=H", raw)[0]
    if family == AF_INET:
        if len(raw) < 16:
            raise OSError(errno.EINVAL, "sockaddr_in too short")
        return SockAddr(AF_INET, _socket.inet_ntop(AF_INET, raw[4:8]), struct.unpack_from(">H", raw, 2)[0])
    if family == AF_INET6:
        if len(raw) < 24:           # SIN6_LEN_RFC2133: scope_id optional
            raise OSError(errno.EINVAL, "sockaddr_in6 too short")
        port, flowinfo = struct.unpack_from(">HI", raw, 2)
        scope = struct.unpack_from("=I", raw, 24)[0] if len(raw) >= 28 else 0
        return SockAddr(AF_INET6, _socket.inet_ntop(AF_INET6, raw[8:24]), port, flowinfo, scope)
    return SockAddr(family, raw=bytes(raw))


def encode_sockaddr(address: SockAddr) -> bytes:
    if address.family == AF_INET:
        return (struct.pack("=H", AF_INET) + struct.pack(">H", address.port)
                + _socket.inet_pton(AF_INET, address.host) + bytes(8))
    if address.family == AF_INET6:
        return (struct.pack("=H", AF_INET6) + struct.pack(">HI", address.port, address.flowinfo)
                + _socket.inet_pton(AF_INET6, address.host) + struct.pack("=I", address.scope_id))
    return address.raw or struct.pack("=H", address.family)


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
class SyscallFrontEnd:
    """Trapped calls of the node's programs, dispatched to `layer`. Single-threaded, never blocks."""
    layer: SocketLayer
    sync_wakeup: bool = True
    listeners: set[int] = field(default_factory=set)
    pending: dict[int, _Pending] = field(default_factory=dict)
    counters: dict[str, int] = field(default_factory=lambda: {
        "trapped": 0, "continued": 0, "answered": 0, "failed": 0, "pending": 0, "cancelled": 0,
        "vanished": 0, "errors": 0})

    def __post_init__(self) -> None:
        self.arch = trap.current_arch()
        self._table = {self.arch.numbers[name]: (name, getattr(self, method))
                       for name, method in HANDLERS.items()}
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

    # --- the handlers (Linux's argument order; `a` = the six raw arguments)

    def sys_socket(self, listener: int, call: Call, a: tuple) -> Any:
        family, type_, proto = _int(a[0]), _int(a[1]), _int(a[2])
        if family not in EMULATED_FAMILIES:
            return CONTINUE
        if type_ & ~(0xF | SOCK_NONBLOCK | SOCK_CLOEXEC):
            raise OSError(errno.EINVAL, "bad socket type flags")
        call._nonblock = bool(type_ & SOCK_NONBLOCK)
        sock, program_end = self.layer.socket(family, type_ & 0xF, proto, call)
        try:
            self._install(listener, call, sock, program_end, type_)
        except OSError as error:
            if error.errno == errno.ENOENT:     # the task died or was interrupted
                self.counters["cancelled"] += 1
                return ANSWERED
            raise
        return ANSWERED

    def sys_bind(self, listener: int, call: Call, a: tuple) -> Any:
        sock = self._socket_of(call, a[0])
        if sock is None:
            return CONTINUE
        address = self._read_sockaddr(call, a[1], a[2])
        self._checked(listener, call)
        self.layer.bind(sock, address, call)
        return 0

    def sys_connect(self, listener: int, call: Call, a: tuple) -> Any:
        sock = self._socket_of(call, a[0])
        if sock is None:
            return CONTINUE
        address = self._read_sockaddr(call, a[1], a[2])
        self._checked(listener, call)
        return _maybe_deferred(self.layer.connect(sock, address, call), lambda _: 0)

    def sys_listen(self, listener: int, call: Call, a: tuple) -> Any:
        sock = self._socket_of(call, a[0])
        if sock is None:
            return CONTINUE
        self.layer.listen(sock, _int(a[1]), call)
        return 0

    def sys_accept(self, listener: int, call: Call, a: tuple) -> Any:
        return self.sys_accept4(listener, call, (a[0], a[1], a[2], 0, 0, 0))

    def sys_accept4(self, listener: int, call: Call, a: tuple) -> Any:
        sock = self._socket_of(call, a[0])
        if sock is None:
            return CONTINUE
        flags = _int(a[3])
        if flags & ~(SOCK_NONBLOCK | SOCK_CLOEXEC):
            raise OSError(errno.EINVAL, "bad accept4 flags")
        if a[1]:
            self._read(call, a[2], 4)          # EFAULT before blocking, as Linux checks late but we must not lose a connection

        def finish(accepted: tuple) -> Any:
            new_sock, program_end, peer = accepted
            try:
                self._write_sockaddr(call, a[1], a[2], peer, optional=True)
            except OSError:
                os.close(program_end)
                raise
            self._install(listener, call, new_sock, program_end, flags)
            return ANSWERED

        return _maybe_deferred(self.layer.accept(sock, call), finish)

    def _name(self, listener: int, call: Call, a: tuple, method: Callable) -> Any:
        sock = self._socket_of(call, a[0])
        if sock is None:
            return CONTINUE
        address = method(sock, call)
        self._write_sockaddr(call, a[1], a[2], address)
        return 0

    def sys_getsockname(self, listener: int, call: Call, a: tuple) -> Any:
        return self._name(listener, call, a, self.layer.getsockname)

    def sys_getpeername(self, listener: int, call: Call, a: tuple) -> Any:
        return self._name(listener, call, a, self.layer.getpeername)

    def sys_setsockopt(self, listener: int, call: Call, a: tuple) -> Any:
        sock = self._socket_of(call, a[0])
        if sock is None:
            return CONTINUE
        length = _int(a[4])
        if length < 0:
            raise OSError(errno.EINVAL, "negative optlen")
        value = self._read(call, a[3], min(length, MAX_OPTLEN))
        self._checked(listener, call)
        self.layer.setsockopt(sock, _int(a[1]), _int(a[2]), value, call)
        return 0

    def sys_getsockopt(self, listener: int, call: Call, a: tuple) -> Any:
        sock = self._socket_of(call, a[0])
        if sock is None:
            return CONTINUE
        length = _INT.unpack(self._read(call, a[4], 4))[0]
        if length < 0:
            raise OSError(errno.EINVAL, "negative optlen")

        def finish(value: bytes) -> int:
            value = bytes(value)[:length]
            self._write(call, a[3], value)
            self._write(call, a[4], _INT.pack(len(value)))
            return 0

        return _maybe_deferred(self.layer.getsockopt(sock, _int(a[1]), _int(a[2]), length, call), finish)

    def sys_shutdown(self, listener: int, call: Call, a: tuple) -> Any:
        sock = self._socket_of(call, a[0])
        if sock is None:
            return CONTINUE
        self.layer.shutdown(sock, _int(a[1]), call)
        return 0

    def sys_sendto(self, listener: int, call: Call, a: tuple) -> Any:
        sock = self._socket_of(call, a[0])        # trapped only with an address
        if sock is None:
            return CONTINUE
        data = self._read(call, a[1], min(a[2], MAX_TRANSFER))
        address = self._read_sockaddr(call, a[4], a[5]) if _int(a[5]) else None
        self._checked(listener, call)
        flags = _int(a[3])
        return _maybe_deferred(self.layer.sendmsg(sock, data, flags, address, b"", call), int)

    def sys_recvfrom(self, listener: int, call: Call, a: tuple) -> Any:
        sock = self._socket_of(call, a[0])        # trapped only with an address
        if sock is None:
            return CONTINUE
        size = a[2]

        def finish(result: RecvResult) -> int:
            result = RecvResult(*result)
            self._write(call, a[1], result.data[:size])
            self._write_sockaddr(call, a[4], a[5], result.address)
            return result.length if result.length is not None else len(result.data[:size])

        return _maybe_deferred(self.layer.recvmsg(sock, size, _int(a[3]), 0, call), finish)

    def _read_msghdr(self, call: Call, address: int) -> tuple:
        name, namelen, iov, iovlen, control, controllen, _flags = _MSGHDR.unpack(
            self._read(call, address, _MSGHDR.size))
        if iovlen > UIO_MAXIOV:
            raise OSError(errno.EMSGSIZE, "too many iovecs")
        iovecs = [_IOVEC.unpack_from(raw, i * 16)
                  for raw in [self._read(call, iov, 16 * iovlen)] for i in range(iovlen)]
        return name, namelen, iovecs, control, controllen

    @staticmethod
    def _native_msg(name: int, control: int, controllen: int) -> bool:
        return not name and not (control and controllen)

    def _gather(self, call: Call, iovecs: list) -> bytes:
        parts, total = [], 0
        for base, length in iovecs:
            length = min(length, MAX_TRANSFER - total)
            if length:
                parts.append(self._read(call, base, length))
                total += length
        return b"".join(parts)

    def _one_sendmsg(self, call: Call, sock: SockId, header: tuple, flags: int) -> int | Deferred:
        name, namelen, iovecs, control, controllen = header
        address = self._read_sockaddr(call, name, namelen) if name and namelen else None
        if controllen > OPTMEM_MAX:
            raise OSError(errno.ENOBUFS, "control data too long")
        control_data = self._read(call, control, controllen) if control and controllen else b""
        return self.layer.sendmsg(sock, self._gather(call, iovecs), flags, address, control_data, call)

    def sys_sendmsg(self, listener: int, call: Call, a: tuple) -> Any:
        sock = self._socket_of(call, a[0])
        if sock is None:
            return CONTINUE
        header = self._read_msghdr(call, a[1])
        if self._native_msg(header[0], header[3], header[4]):
            return CONTINUE                         # send() on the socketpair
        result = self._one_sendmsg(call, sock, header, _int(a[2]))
        self._checked(listener, call)
        return _maybe_deferred(result, int)

    def _one_recvmsg_finish(self, call: Call, address: int, header: tuple) -> Callable[[RecvResult], int]:
        name, _namelen, iovecs, control, controllen = header

        def finish(result: RecvResult) -> int:
            result = RecvResult(*result)
            data, offset = result.data, 0
            for base, length in iovecs:
                piece = data[offset:offset + length]
                self._write(call, base, piece)
                offset += len(piece)
                if offset >= len(data):
                    break
            msg_flags = result.msg_flags
            if name:
                self._write_sockaddr(call, name, address + 8, result.address)
            control_data = result.control
            if control and len(control_data) > controllen:
                control_data, msg_flags = control_data[:controllen], msg_flags | MSG_CTRUNC
            if control:
                self._write(call, control, control_data)
            # msg_controllen (offset 40) and msg_flags (offset 48)
            self._write(call, address + 40, struct.pack("=Q", len(control_data) if control else 0))
            self._write(call, address + 48, _INT.pack(msg_flags))
            return result.length if result.length is not None else min(offset, len(data))

        return finish

    def sys_recvmsg(self, listener: int, call: Call, a: tuple) -> Any:
        sock = self._socket_of(call, a[0])
        if sock is None:
            return CONTINUE
        flags = _int(a[2])
        header = self._read_msghdr(call, a[1])
        if self._native_msg(header[0], header[3], header[4]) and not flags & MSG_ERRQUEUE:
            return CONTINUE                         # recv() on the socketpair
        size = sum(length for _, length in header[2])
        controllen = header[4] if header[3] else 0
        result = self.layer.recvmsg(sock, size, flags, controllen, call)
        return _maybe_deferred(result, self._one_recvmsg_finish(call, a[1], header))

    def _mmsg_headers(self, call: Call, address: int, count: int) -> list[tuple]:
        return [self._read_msghdr(call, address + i * _MMSGHDR_SIZE) for i in range(min(count, UIO_MAXIOV))]

    def sys_sendmmsg(self, listener: int, call: Call, a: tuple) -> Any:
        sock = self._socket_of(call, a[0])
        if sock is None:
            return CONTINUE
        headers = self._mmsg_headers(call, a[1], _uint(a[2]))
        if all(self._native_msg(h[0], h[3], h[4]) for h in headers):
            return CONTINUE
        flags, sent = _int(a[3]), 0
        for index, header in enumerate(headers):
            try:
                # only the first message may wait, as Linux returns what was sent so far
                result = self._one_sendmsg(call, sock, header, flags | (MSG_DONTWAIT if index else 0))
            except OSError:
                if sent:
                    break
                raise
            slot = a[1] + index * _MMSGHDR_SIZE + _MSGHDR.size
            if isinstance(result, Deferred):
                return _maybe_deferred(result, lambda n, slot=slot: (self._write(call, slot, _UINT.pack(n)), 1)[1])
            self._write(call, slot, _UINT.pack(result))
            sent += 1
        return sent

    def sys_recvmmsg(self, listener: int, call: Call, a: tuple) -> Any:
        """Simplified as MSG_WAITFORONE: wait for the first message, then take what is there."""
        sock = self._socket_of(call, a[0])
        if sock is None:
            return CONTINUE
        flags = _int(a[3])
        headers = self._mmsg_headers(call, a[1], _uint(a[2]))
        if all(self._native_msg(h[0], h[3], h[4]) for h in headers) and not flags & MSG_ERRQUEUE:
            return CONTINUE
        received = 0

        def store(index: int, result: RecvResult) -> None:
            address = a[1] + index * _MMSGHDR_SIZE
            length = self._one_recvmsg_finish(call, address, headers[index])(result)
            self._write(call, address + _MSGHDR.size, _UINT.pack(length))

        def rest(first: RecvResult) -> int:
            store(0, first)
            count = 1
            for index in range(1, len(headers)):
                header = headers[index]
                size = sum(length for _, length in header[2])
                try:
                    result = self.layer.recvmsg(sock, size, flags | MSG_DONTWAIT,
                                                header[4] if header[3] else 0, call)
                except OSError:
                    break
                store(index, result)
                count += 1
            return count

        if not headers:
            return received
        header = headers[0]
        first = self.layer.recvmsg(sock, sum(length for _, length in header[2]), flags & ~MSG_WAITFORONE,
                                   header[4] if header[3] else 0, call)
        return _maybe_deferred(first, rest)


class _Vanished(OSError):
    """The task went away while we read its memory: nothing is answered."""

    def __init__(self) -> None:
        super().__init__(errno.ENOENT, "the trapped call is gone")


# The one table: syscall name -> handler method (numbers per architecture in nodes/trap.py).
HANDLERS = {
    "socket": "sys_socket",
    "bind": "sys_bind",
    "connect": "sys_connect",
    "listen": "sys_listen",
    "accept": "sys_accept",
    "accept4": "sys_accept4",
    "getsockname": "sys_getsockname",
    "getpeername": "sys_getpeername",
    "setsockopt": "sys_setsockopt",
    "getsockopt": "sys_getsockopt",
    "shutdown": "sys_shutdown",
    "sendto": "sys_sendto",
    "recvfrom": "sys_recvfrom",
    "sendmsg": "sys_sendmsg",
    "recvmsg": "sys_recvmsg",
    "sendmmsg": "sys_sendmmsg",
    "recvmmsg": "sys_recvmmsg",
}
assert set(HANDLERS) == set(trap.TRAPPED)


def _maybe_deferred(result: Any, finish: Callable[[Any], Any]) -> Any:
    """A handler's answer: finish(result) now, or (deferred, finish) to finish later."""
    if isinstance(result, Deferred):
        return (result, finish)
    return finish(result)


def _int(value: int) -> int:
    """An `int` argument: the low 32 bits, signed (the kernel ignores the rest)."""
    value &= 0xFFFFFFFF
    return value - (1 << 32) if value & 0x80000000 else value


def _uint(value: int) -> int:
    return value & 0xFFFFFFFF
