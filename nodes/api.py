"""In-process sockets on a node: `socket(sys_path, ...)` gives a `socket.socket` whose stack is
the node's, for scenario scripts and tests (`net["h1"].socket(...)`).

Before changing this file, read docs/api-sockets.md (the protocol on the node's syscall
socket) and `nodes/api_server.py` (its node side).

This is the user side of a node: it imports nothing of the node's stack (checked by
tests/unit/test_layering.py), only the standard library and msgpack, and talks to the
node's kernel over the node's syscall socket (RUN_DIR/NODE.sys, a Unix SOCK_SEQPACKET
socket; fds cross as SCM_RIGHTS).

A `NodeSocket` is a real `socket.socket` whose fd is the program's end of the socketpair
the node made for it (SOCK_SEQPACKET for datagram sockets, SOCK_STREAM for stream ones):
`isinstance(s, socket.socket)`, selectors and asyncio's `loop.sock_*` /
`create_datagram_endpoint(sock=...)` work, and so do natively, without the node in the
way: send/recv/recv_into/sendall/makefile/settimeout/setblocking/fileno (the node writes
received datagrams into its end and sends what the program writes into it). What needs the
stack (an address, an option, a name, ancillary data, connect/bind/listen/accept) is a
request to the node naming the socket by passing its fd, answered as Linux would answer the
syscall, errno for errno (`OSError` subclasses as the stdlib raises them).

Each NodeSocket keeps its own connections to the node: one per request in flight, taken
from a small pool (a thread blocked in recvfrom does not hold up another's sendto). The
socket's timeout travels with each request: None blocks, 0.0 is non-blocking
(BlockingIOError), a positive timeout ends in `TimeoutError('timed out')` as the stdlib's.
The node down (no syscall socket, or gone in the middle of a call) is `OSError(ENETDOWN)`.
"""
from __future__ import annotations

import array
import errno
import os
import socket as _socket
import struct
import threading
from socket import AF_INET, AF_INET6, SOCK_DGRAM, SOCK_RAW, SOCK_STREAM  # noqa: F401  (for callers)
from typing import Any, Iterable

import msgpack

__all__ = ["NodeSocket", "socket", "hand_listener", "AF_INET", "AF_INET6", "SOCK_DGRAM", "SOCK_RAW",
           "SOCK_STREAM"]

MAX_SEND = 1 << 16          # bytes one sendto/sendmsg passes (beyond: more than any datagram;
                            # a stream send is then short, which send() may be)
MAX_RECV = 1 << 16          # bytes one recvfrom/recvmsg asks (the node answers no more)
MAX_ANCILLARY = 1 << 16
MAX_REPLY = MAX_RECV + MAX_ANCILLARY + 4096
MAX_FDS = 4
_FD_SPACE = _socket.CMSG_SPACE(MAX_FDS * struct.calcsize("i"))
_CMSGHDR = struct.Struct("@Nii")            # struct cmsghdr: cmsg_len, cmsg_level, cmsg_type
assert _CMSGHDR.size == _socket.CMSG_LEN(0)
_INT = struct.Struct("=i")
_TYPE_FLAGS = _socket.SOCK_NONBLOCK | _socket.SOCK_CLOEXEC
# One reply buffer per thread: a fresh 132 KiB bytes per call would be an mmap and munmap each.
_buffers = threading.local()


_GONE = (errno.EPIPE, errno.ECONNRESET, errno.ENOTCONN)


class _NodeDown(OSError):
    """ENETDOWN: the node is not there (or went away in the middle of a call)."""


def _node_down(sys_path: str, why: str) -> OSError:
    return _NodeDown(errno.ENETDOWN, f"{os.strerror(errno.ENETDOWN)}: the node is not running ({why}: {sys_path})")


def _connect(sys_path: str, timeout: float | None = None) -> _socket.socket:
    """A new connection to the node's syscall socket (ENETDOWN when nothing listens there)."""
    conn = _socket.socket(_socket.AF_UNIX, _socket.SOCK_SEQPACKET | _socket.SOCK_CLOEXEC)
    conn.settimeout(timeout)
    try:
        conn.connect(sys_path)
    except (FileNotFoundError, ConnectionRefusedError) as error:
        conn.close()
        raise _node_down(sys_path, "no syscall socket" if isinstance(error, FileNotFoundError)
                         else "nothing listens on the syscall socket") from None
    except BaseException:
        conn.close()
        raise
    return conn


def _send(conn: _socket.socket, message: dict, fds: Iterable[int] = ()) -> None:
    fds = list(fds)
    ancillary = [(_socket.SOL_SOCKET, _socket.SCM_RIGHTS, array.array("i", fds))] if fds else []
    conn.sendmsg([msgpack.packb(message, use_bin_type=True)], ancillary)


def _receive(conn: _socket.socket, sys_path: str) -> tuple[dict, list[int]]:
    """One reply and the fds it carries (EOF: the node went away in the middle of the call)."""
    buffer = getattr(_buffers, "reply", None)
    if buffer is None:
        buffer = _buffers.reply = bytearray(MAX_REPLY)
    try:
        length, ancillary, _flags, _ = conn.recvmsg_into([buffer], _FD_SPACE, _socket.MSG_CMSG_CLOEXEC)
    except OSError as error:
        if error.errno not in _GONE:
            raise
        raise _node_down(sys_path, "it went away during the call") from None
    fds: list[int] = []
    for level, kind, payload in ancillary:
        if level == _socket.SOL_SOCKET and kind == _socket.SCM_RIGHTS:
            received = array.array("i")
            received.frombytes(payload[:len(payload) - len(payload) % received.itemsize])
            fds.extend(received)
    if not length:
        _close_all(fds)
        raise _node_down(sys_path, "it went away during the call")
    return msgpack.unpackb(memoryview(buffer)[:length], raw=False), fds


def _close_all(fds: Iterable[int]) -> None:
    for fd in fds:
        try:
            os.close(fd)
        except OSError:
            pass


def _raise_for(reply: dict) -> None:
    if reply.get("ok"):
        return
    if reply.get("timed_out"):
        raise TimeoutError("timed out")
    number = reply.get("errno") or errno.EIO
    raise OSError(number, os.strerror(number))


# ---------------------------------------------------------------------------------------------
# Addresses: the stdlib's tuples <-> the lists that cross the syscall socket
# ([family, host, port, flowinfo, scope_id, raw])

def _hosts_of(sys_path: str) -> dict[str, str]:
    """The emulation's names (the run directory's hosts file, beside the syscall socket)."""
    names: dict[str, str] = {}
    try:
        with open(os.path.join(os.path.dirname(sys_path), "hosts"), encoding="utf-8") as hosts:
            for line in hosts:
                fields = line.split("#", 1)[0].split()
                for name in fields[1:]:
                    names.setdefault(name, fields[0])
    except OSError:
        pass
    return names


def _host_out(host: Any, family: int, sys_path: str, caller: str) -> str:
    """A host as the stdlib takes it: numeric, "" (any), "<broadcast>", or a name (the
    emulation's names first, then the resolver's)."""
    if isinstance(host, (bytes, bytearray)):
        host = bytes(host).decode("idna")
    if not isinstance(host, str):
        raise TypeError(f"{caller}(): AF_INET address must be tuple of (str, int), not {type(host).__name__}")
    if host == "":
        return "0.0.0.0" if family == AF_INET else "::"
    if host == "<broadcast>" and family == AF_INET:
        return "255.255.255.255"
    try:
        return _socket.inet_ntop(family, _socket.inet_pton(family, host))
    except OSError:
        pass
    known = _hosts_of(sys_path).get(host)
    if known is not None:
        if family == AF_INET:
            return known
        if family == AF_INET6 and ":" not in known:
            return "::ffff:" + known
    return _socket.getaddrinfo(host, None, family)[0][4][0]


def _address_out(address: Any, family: int, sys_path: str, caller: str) -> list:
    if family not in (AF_INET, AF_INET6):
        raise OSError(errno.EAFNOSUPPORT, os.strerror(errno.EAFNOSUPPORT))
    name = "AF_INET" if family == AF_INET else "AF_INET6"
    if not isinstance(address, tuple):
        raise TypeError(f"{caller}(): {name} address must be tuple, not {type(address).__name__}")
    if family == AF_INET and len(address) != 2 or family == AF_INET6 and not 2 <= len(address) <= 4:
        raise TypeError(f"{caller}(): {name} address must be a tuple of {2 if family == AF_INET else '2 to 4'} items")
    host, port, flowinfo, scope_id = (tuple(address) + (0, 0))[:4]
    if not isinstance(port, int) or isinstance(port, bool):
        raise TypeError(f"'{type(port).__name__}' object cannot be interpreted as an integer")
    if not 0 <= port <= 0xFFFF:
        raise OverflowError(f"{caller}(): port must be 0-65535.")
    if not 0 <= flowinfo <= 0xFFFFF:
        raise OverflowError(f"{caller}(): flowinfo must be 0-1048575.")
    return [family, _host_out(host, family, sys_path, caller), port, flowinfo, scope_id, b""]


def _address_in(value: Any) -> Any:
    """A node's address list as the stdlib gives addresses: (host, port), or for AF_INET6
    (host, port, flowinfo, scope_id); None when there is none."""
    if value is None:
        return None
    family, host, port, flowinfo, scope_id, raw = (list(value) + [0, "", 0, 0, 0, b""][len(value):])[:6]
    if family == AF_INET:
        return (host, port)
    if family == AF_INET6:
        return (host, port, flowinfo, scope_id)
    return (family, raw)


# ---------------------------------------------------------------------------------------------
# Control messages (struct cmsghdr, as Linux lays them out)

def _pack_ancillary(ancdata: Iterable) -> bytes:
    parts = []
    for level, kind, data in ancdata:
        data = bytes(memoryview(data))
        item = _CMSGHDR.pack(_socket.CMSG_LEN(len(data)), level, kind) + data
        parts.append(item.ljust(_socket.CMSG_SPACE(len(data)), b"\0"))
    return b"".join(parts)


def _unpack_ancillary(control: bytes) -> list[tuple[int, int, bytes]]:
    items, offset = [], 0
    while offset + _CMSGHDR.size <= len(control):
        length, level, kind = _CMSGHDR.unpack_from(control, offset)
        if length < _CMSGHDR.size:
            break
        items.append((level, kind, bytes(control[offset + _CMSGHDR.size:offset + length])))
        offset += _socket.CMSG_SPACE(length - _CMSGHDR.size)
    return items


# ---------------------------------------------------------------------------------------------
# The socket

class NodeSocket(_socket.socket):
    """A `socket.socket` on a node's stack (make one with `nodes.api.socket`).

    Native (the real fd): send, recv, recv_into, sendall, makefile, fileno, settimeout,
    setblocking, and sendmsg without address or ancillary data. Through the node: bind,
    connect, connect_ex, listen, accept, getsockname, getpeername, setsockopt, getsockopt,
    shutdown, sendto, sendmsg, recvfrom, recvfrom_into, recvmsg, recvmsg_into, and recv
    with MSG_ERRQUEUE. A SOCK_STREAM socket receives natively with recvfrom/recvmsg too
    (TCP gives neither an address nor control data: the pair's bytes are the connection's)."""

    def __init__(self, family: int = -1, type: int = -1, proto: int = -1, fileno: int | None = None, *,
                 sys_path: str | None = None, connection: _socket.socket | None = None) -> None:
        if fileno is None or sys_path is None:
            raise TypeError("a NodeSocket is made by nodes.api.socket(sys_path, family, type, proto)")
        super().__init__(family, type, proto, fileno)
        self.sys_path = sys_path
        self._pool_lock = threading.Lock()
        self._idle: list[_socket.socket] = [connection] if connection is not None else []
        self._busy: set[_socket.socket] = set()
        self._pool_pid = os.getpid()

    # --- requests to the node

    def _take(self) -> tuple[_socket.socket, bool]:
        """A connection for one request: an idle one (True: it may be stale) or a new one."""
        with self._pool_lock:
            if self._pool_pid != os.getpid():       # forked: the parent's connections are the parent's
                for conn in self._idle:
                    conn.close()
                self._idle.clear()
                self._busy.clear()
                self._pool_pid = os.getpid()
            if self._idle:
                conn = self._idle.pop()
                self._busy.add(conn)
                return conn, True
        conn = _connect(self.sys_path)
        with self._pool_lock:
            self._busy.add(conn)
        return conn, False

    def _give_back(self, conn: _socket.socket, healthy: bool) -> None:
        with self._pool_lock:
            self._busy.discard(conn)
            if healthy and not self._closed and len(self._idle) < 4:
                self._idle.append(conn)
                return
        conn.close()

    def _request(self, op: str, **arguments: Any) -> tuple[Any, list[int]]:
        """One socket call on the node: its value and the fds it passes (the reply's errno raised)."""
        fd = self.fileno()
        if fd < 0:
            raise OSError(errno.EBADF, os.strerror(errno.EBADF))
        message = {"op": op, **arguments, "timeout": self.gettimeout()}
        conn, stale = self._take()
        healthy = False
        try:
            try:
                _send(conn, message, [fd])
            except OSError as error:
                if error.errno not in _GONE:
                    raise
                if not stale:
                    raise _node_down(self.sys_path, "it went away") from None
                self._give_back(conn, False)        # the node restarted since: a fresh connection
                conn, stale = self._take()
                try:
                    _send(conn, message, [fd])
                except OSError as error:
                    if error.errno not in _GONE:
                        raise
                    raise _node_down(self.sys_path, "it went away") from None
            try:
                reply, fds = _receive(conn, self.sys_path)
            except _NodeDown:
                if self._closed:                    # closed by another thread meanwhile
                    raise OSError(errno.EBADF, os.strerror(errno.EBADF)) from None
                raise
            healthy = True
        finally:
            self._give_back(conn, healthy)
        try:
            _raise_for(reply)
        except BaseException:
            _close_all(fds)
            raise
        return reply.get("value"), fds

    def _call(self, op: str, **arguments: Any) -> Any:
        value, fds = self._request(op, **arguments)
        _close_all(fds)
        return value

    def _address(self, address: Any, caller: str) -> list:
        return _address_out(address, self.family, self.sys_path, caller)

    # --- the socket API

    def bind(self, address: Any) -> None:
        self._call("bind", address=self._address(address, "bind"))

    def connect(self, address: Any) -> None:
        self._call("connect", address=self._address(address, "connect"))

    def connect_ex(self, address: Any) -> int:
        encoded = self._address(address, "connect_ex")
        try:
            self._call("connect", address=encoded)
        except TimeoutError as error:
            return error.errno or errno.EAGAIN
        except OSError as error:
            if error.errno is None:
                raise
            return error.errno
        return 0

    def listen(self, backlog: int | None = None) -> None:
        if backlog is None:
            backlog = min(_socket.SOMAXCONN, 128)
        self._call("listen", backlog=max(0, int(backlog)))

    def accept(self) -> tuple["NodeSocket", Any]:
        value, fds = self._request("accept")
        if len(fds) != 1:
            _close_all(fds)
            raise OSError(errno.EIO, "the node's accept passed no socket")
        sock = NodeSocket(self.family, self.type, self.proto, fileno=fds[0], sys_path=self.sys_path)
        if _socket.getdefaulttimeout() is None and self.gettimeout():
            sock.setblocking(True)
        return sock, _address_in(value)

    def getsockname(self) -> Any:
        return _address_in(self._call("getsockname"))

    def getpeername(self) -> Any:
        return _address_in(self._call("getpeername"))

    def setsockopt(self, level: int, optname: int, value: Any, optlen: int | None = None) -> None:
        if value is None:
            if optlen is None:
                raise TypeError("setsockopt() takes a value, or None and an optlen")
            if optlen:
                raise OSError(errno.EFAULT, os.strerror(errno.EFAULT))
            raw = b""
        elif isinstance(value, int):
            raw = _INT.pack(value)
        else:
            raw = bytes(memoryview(value))
        self._call("setsockopt", level=level, name=optname, value=raw)

    def getsockopt(self, level: int, optname: int, buflen: int | None = None) -> Any:
        if buflen is None:
            raw = self._call("getsockopt", level=level, name=optname, size=_INT.size)
            return _INT.unpack(bytes(raw[:_INT.size]).ljust(_INT.size, b"\0"))[0]
        if not 0 < buflen <= 1024:
            raise OSError("getsockopt buflen out of range")
        return bytes(self._call("getsockopt", level=level, name=optname, size=buflen))

    def shutdown(self, how: int) -> None:
        self._call("shutdown", how=how)

    def sendto(self, data: Any, *arguments: Any) -> int:
        if len(arguments) == 1:
            flags, address = 0, arguments[0]
        elif len(arguments) == 2:
            flags, address = arguments
        else:
            raise TypeError(f"sendto() takes 2 or 3 arguments ({len(arguments) + 1} given)")
        payload = bytes(memoryview(data)[:MAX_SEND])
        return self._call("sendmsg", data=payload, flags=flags, address=self._address(address, "sendto"),
                          control=b"")

    def sendmsg(self, buffers: Iterable, ancdata: Iterable = (), flags: int = 0, address: Any = None) -> int:
        ancdata = list(ancdata)
        if not ancdata and address is None:
            return super().sendmsg(buffers, ancdata, flags)
        payload = b"".join(bytes(memoryview(buffer)) for buffer in buffers)[:MAX_SEND]
        return self._call("sendmsg", data=payload, flags=flags, control=_pack_ancillary(ancdata),
                          address=None if address is None else self._address(address, "sendmsg"))

    def _native_stream(self, flags: int) -> bool:
        """A stream socket's receive is the pair's: TCP fills no address and no control data."""
        return self.type == SOCK_STREAM and not flags & _socket.MSG_ERRQUEUE

    def _recvmsg(self, size: int, ancbufsize: int, flags: int) -> tuple[bytes, list, int, Any, int]:
        data, address, control, msg_flags, length = self._call(
            "recvmsg", size=min(size, MAX_RECV), flags=flags, control_size=min(ancbufsize, MAX_ANCILLARY))
        return bytes(data), _unpack_ancillary(control), msg_flags, _address_in(address), length

    def recvfrom(self, bufsize: int, flags: int = 0) -> tuple[bytes, Any]:
        if bufsize < 0:
            raise ValueError("negative buffersize in recvfrom")
        if self._native_stream(flags):
            return super().recvfrom(bufsize, flags)
        data, _, _, address, _ = self._recvmsg(bufsize, 0, flags)
        return data, address

    def recvfrom_into(self, buffer: Any, nbytes: int = 0, flags: int = 0) -> tuple[int, Any]:
        if self._native_stream(flags):
            return super().recvfrom_into(buffer, nbytes, flags)
        view = memoryview(buffer).cast("B")
        if nbytes < 0:
            raise ValueError("negative buffersize in recvfrom_into")
        if nbytes > len(view):
            raise ValueError("nbytes is greater than the length of the buffer")
        data, _, _, address, length = self._recvmsg(nbytes or len(view), 0, flags)
        view[:len(data)] = data
        return length, address

    def recvmsg(self, bufsize: int, ancbufsize: int = 0, flags: int = 0) -> tuple[bytes, list, int, Any]:
        if bufsize < 0 or ancbufsize < 0:
            raise ValueError("negative buffer size in recvmsg()")
        if self._native_stream(flags):
            return super().recvmsg(bufsize, ancbufsize, flags)
        data, ancillary, msg_flags, address, _ = self._recvmsg(bufsize, ancbufsize, flags)
        return data, ancillary, msg_flags, address

    def recvmsg_into(self, buffers: Iterable, ancbufsize: int = 0, flags: int = 0) -> tuple[int, list, int, Any]:
        if ancbufsize < 0:
            raise ValueError("negative buffer size in recvmsg_into()")
        if self._native_stream(flags):
            return super().recvmsg_into(buffers, ancbufsize, flags)
        views = [memoryview(buffer).cast("B") for buffer in buffers]
        data, ancillary, msg_flags, address, length = self._recvmsg(sum(map(len, views)), ancbufsize, flags)
        offset = 0
        for view in views:
            piece = data[offset:offset + len(view)]
            view[:len(piece)] = piece
            offset += len(piece)
        return length, ancillary, msg_flags, address

    def recv(self, bufsize: int, flags: int = 0) -> bytes:
        if flags & _socket.MSG_ERRQUEUE:
            return self.recvmsg(bufsize, 0, flags)[0]
        return super().recv(bufsize, flags)

    def dup(self) -> "NodeSocket":
        sock = NodeSocket(self.family, self.type, self.proto, fileno=os.dup(self.fileno()), sys_path=self.sys_path)
        sock.settimeout(self.gettimeout())
        return sock

    def detach(self) -> int:
        fd = super().detach()
        self._close_connections()
        return fd

    def _real_close(self, *arguments: Any) -> None:
        self._close_connections()
        super()._real_close(*arguments)

    def _close_connections(self) -> None:
        """Close the idle connections, and shut those in flight: their calls end (EBADF)."""
        with self._pool_lock:
            idle, self._idle = self._idle, []
            busy = list(self._busy)
        for conn in idle:
            conn.close()
        for conn in busy:
            try:
                conn.shutdown(_socket.SHUT_RDWR)
            except OSError:
                pass


def socket(sys_path: str, family: int = AF_INET, type: int = SOCK_STREAM, proto: int = 0) -> NodeSocket:
    """A new socket on the node whose syscall socket is `sys_path` (RUN_DIR/NODE.sys)."""
    conn = _connect(sys_path)
    try:
        _send(conn, {"op": "socket", "family": int(family), "type": int(type), "proto": int(proto)})
        reply, fds = _receive(conn, sys_path)
        try:
            _raise_for(reply)
            if len(fds) != 1:
                raise OSError(errno.EIO, "the node's socket passed no socket")
        except BaseException:
            _close_all(fds)
            raise
    except BaseException:
        conn.close()
        raise
    sock = NodeSocket(family, type & ~_TYPE_FLAGS, proto, fileno=fds[0], sys_path=sys_path, connection=conn)
    if type & _socket.SOCK_NONBLOCK:
        sock.setblocking(False)
    return sock


def hand_listener(sys_path: str, listener_fd: int, pid: int, timeout: float = 5.0) -> None:
    """Hand the seccomp listener of program `pid` to the node (the node gets its own copy of
    the fd; close yours when you keep none). OSError(ENETDOWN) when the node is not running,
    TimeoutError when it does not answer within `timeout` seconds."""
    conn = _connect(sys_path, timeout)
    try:
        try:
            _send(conn, {"op": "listener", "pid": int(pid)}, [listener_fd])
            reply, fds = _receive(conn, sys_path)
        except _socket.timeout:
            raise TimeoutError(f"the node did not take the listener within {timeout:g} s ({sys_path})") from None
        _close_all(fds)
        _raise_for(reply)
    finally:
        conn.close()
