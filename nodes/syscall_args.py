"""The syscall front end's values: what the socket layer sees of a trapped call (`SockAddr`,
`RecvResult`, `Call`, `Deferred`, the `SocketLayer` protocol), the sockaddr codec, the
argument constants and layouts (msghdr, iovec, mmsghdr), and the integer arguments' decoding.

Part of `nodes/syscalls.py` (read its docstring first: the design); import `syscalls`,
which names every public name defined here.
"""
from __future__ import annotations

import errno
import os
import socket as _socket
import struct
from typing import Any, Callable, NamedTuple, Protocol

AF_UNSPEC, AF_INET, AF_INET6 = 0, 2, 10
EMULATED_FAMILIES = (AF_INET, AF_INET6)
SOCK_NONBLOCK, SOCK_CLOEXEC = 0o4000, 0o2000000
MSG_DONTWAIT, MSG_ERRQUEUE, MSG_CTRUNC, MSG_WAITFORONE = 0x40, 0x2000, 0x8, 0x10000
SOCKADDR_STORAGE = 128          # sizeof(struct sockaddr_storage)
UIO_MAXIOV = 1024
OPTMEM_MAX = 20480              # net.core.optmem_max: the biggest control buffer sendmsg takes
MAX_TRANSFER = 4 << 20          # bytes read from a program per send call (more: a short send)
MAX_OPTLEN = 1 << 16

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

    __slots__ = ("id", "pid", "name", "fd", "_file", "_nonblock", "_open", "replace")

    def __init__(self, id: int, pid: int, name: str, fd: int = -1, nonblock: bool | None = None,
                 open_file: Callable[[int, int], int] | None = None,
                 replace: Callable[[int], None] | None = None) -> None:
        self.id, self.pid, self.name, self.fd = id, pid, name, fd
        self._file, self._nonblock, self._open = -1, nonblock, open_file
        # replace(our_fd): put a copy of our file at the program's `fd` (dup2 into the program,
        # its FD_CLOEXEC kept); trapped calls only (None for the in-process front end)
        self.replace = replace

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

    def adopt(self, fd: int) -> None:
        """From now on `file` is `fd` (ours to close), e.g. after `replace` put a new file there."""
        self.close()
        self._file, self._nonblock = fd, None

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
    """What the front end needs of the node's socket layer (the package nodes/socket implements it).

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
# Handlers' helpers: a result now or later, the integer arguments

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
