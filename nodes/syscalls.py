"""The syscall front end: trapped socket calls of programs, answered by the node's socket layer.

Before changing this file, read issue 12's design section, seccomp_unotify(2) and
`nodes/trap.py` (how calls are trapped; every kernel layout is named there).

A `SyscallFrontEnd` owns seccomp listener fds (one per program started on the
node, see `trap.spawn_trapped`). The node's event loop registers each listener
for POLLIN and calls `on_readable(fd, events)`; nothing here blocks. A trapped
call is decoded the way Linux's `net/socket.c` does it (`move_addr_to_kernel`,
`copy_msghdr_from_user`, `move_addr_to_user`: the same EINVAL/EFAULT checks),
passed to the socket layer (`SocketLayer`, implemented by the package `nodes/socket`),
and its result written back into the program's memory before the call is
answered. `HANDLERS` is the one table from syscall to handler.

Three modules, each importing only the ones below it; `syscalls.NAME` names every
public name of the two below (import this module, not them):

    syscalls          `SyscallFrontEnd`: one handler per trapped syscall (`sys_NAME`, Linux's
                      argument order) and `HANDLERS`, the table from syscall to handler
    syscall_dispatch  its machinery (`SyscallDispatch`): listeners and the loop, dispatch and
                      answers, pending calls, the program's fds and memory, sockaddr in and out
    syscall_args      what the socket layer sees (`SockAddr`, `RecvResult`, `Call`, `Deferred`,
                      the `SocketLayer` protocol), the sockaddr codec, the argument constants
                      and layouts (msghdr, iovec, mmsghdr), `_int`/`_uint`

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
import struct
from dataclasses import dataclass
from typing import Any, Callable

from . import trap
from .syscall_args import (
    _INT, _IOVEC, _MMSGHDR_SIZE, _MSGHDR, _UINT, AF_INET, AF_INET6, AF_UNSPEC, EMULATED_FAMILIES,
    MAX_OPTLEN, MAX_TRANSFER, MSG_CTRUNC, MSG_DONTWAIT, MSG_ERRQUEUE, MSG_WAITFORONE, OPTMEM_MAX,
    SOCK_CLOEXEC, SOCK_NONBLOCK, SOCKADDR_STORAGE, UIO_MAXIOV, Call, Deferred, RecvResult, SockAddr,
    SocketLayer, SockId, _int, _maybe_deferred, _uint, decode_sockaddr, encode_sockaddr,
)
from .syscall_dispatch import ANSWERED, CONTINUE, PIDFD_CACHE, SyscallDispatch

__all__ = [   # every public name of the front end, wherever it is defined (see the module docstring)
    # syscall_args
    "AF_INET", "AF_INET6", "AF_UNSPEC", "EMULATED_FAMILIES", "MAX_OPTLEN", "MAX_TRANSFER", "MSG_CTRUNC",
    "MSG_DONTWAIT", "MSG_ERRQUEUE", "MSG_WAITFORONE", "OPTMEM_MAX", "SOCK_CLOEXEC", "SOCK_NONBLOCK",
    "SOCKADDR_STORAGE", "UIO_MAXIOV", "Call", "Deferred", "RecvResult", "SockAddr", "SocketLayer", "SockId",
    "decode_sockaddr", "encode_sockaddr",
    # syscall_dispatch
    "ANSWERED", "CONTINUE", "PIDFD_CACHE", "SyscallDispatch",
    # here
    "HANDLERS", "SyscallFrontEnd",
]


@dataclass
class SyscallFrontEnd(SyscallDispatch):
    """Trapped calls of the node's programs, dispatched to `layer`. Single-threaded, never blocks.

    The fields, the loop and the dispatch are `SyscallDispatch`'s (nodes/syscall_dispatch.py);
    here are the handlers, one per entry of `HANDLERS`."""

    def __post_init__(self) -> None:
        super().__post_init__()
        self._table = {self.arch.numbers[name]: (name, getattr(self, method))
                       for name, method in HANDLERS.items()}

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
