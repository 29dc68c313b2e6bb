"""The node side of the syscall socket: in-process clients (`nodes/api.py`) and the
exec helpers reach the node's socket layer over a Unix SOCK_SEQPACKET socket.

Before changing this file, read `nodes/syscalls.py`'s docstring (the trapped front end:
the same socket layer, the same `Call`/`Deferred` contract) and docs/api-sockets.md
(the protocol, for both sides).

The second front end of issue 12 ("one socket layer, two front ends"). The listening
socket lives at the node config's `"syscall"` path (RUN_DIR/NODE.sys). Each message is
one msgpack map in one SEQPACKET message, fds ride along as SCM_RIGHTS; each request gets
one reply map (+ fds):

    {"op": "listener", "pid": P} + [seccomp listener fd]    -> {"ok": true}
    {"op": "socket", "family", "type", "proto"}              -> {"ok": true} + [program end]
    {"op": NAME, ...arguments, "timeout": s | None} + [socket] -> {"ok": true, "value": V}
                                                             or {"ok": false, "errno": N}

`listener` hands a program's seccomp listener to the trapped front end (`on_listener`
takes ownership). A socket call names its socket by passing the program's end itself:
`layer.lookup(fd)` finds it by inode, so dup() and fork() of the client's socket are
followed as for trapped calls, and the received fd is the call's `file` (native recv of
pushed datagrams, O_NONBLOCK) until it is answered. Addresses cross as lists
`[family, host, port, flowinfo, scope_id, raw]` (`SockAddr`'s fields).

* **Blocking.** A layer method may return a `Deferred`: the reply waits for it, the loop
  goes on. `timeout` > 0 cancels it after that long and answers EAGAIN with
  `"timed_out": true` (the client raises TimeoutError); `timeout` == 0 is a non-blocking
  call (`call.nonblock`), None blocks. One outstanding request per connection (a client
  that wants several at once opens several connections); a connection that closes while
  its call is pending cancels the call, as a signal interrupts a blocked syscall.
* **Never blocks, never dies.** Every socket is non-blocking; an unexpected exception
  answers EIO and is logged (re-raised when `NapiScheduler.reraise` is set, as the test
  suite sets it), so a client never hangs on a node bug and the node's loop goes on.
"""
from __future__ import annotations

import array
import errno
import logging
import os
import socket as _socket
import stat
import struct
import traceback
from dataclasses import dataclass
from typing import Any, Callable

import msgpack

from .nic import NapiScheduler
from .syscall_args import (
    MAX_OPTLEN, MAX_TRANSFER, MSG_CTRUNC, SOCK_CLOEXEC, SOCK_NONBLOCK, Call, Deferred, RecvResult, SockAddr,
)

log = logging.getLogger("netemu.api_server")

MAX_REQUEST = MAX_TRANSFER // 16 + 4096     # bytes of one request: 256 KiB of data + the map
MAX_FDS = 4                                 # fds taken from one request (more are closed)
MAX_RECV = 1 << 16                          # bytes one recvmsg answers (a short read beyond)
BACKLOG = 64
_FD_SPACE = _socket.CMSG_SPACE(MAX_FDS * struct.calcsize("i"))


def address_out(address: Any) -> list | None:
    """A layer's address (SockAddr or plain tuple) as it crosses the socket: a list of SockAddr's fields."""
    return None if address is None else list(SockAddr(*address))


def address_in(value: Any) -> SockAddr:
    """A client's address list, checked (EINVAL for anything else, as a malformed sockaddr)."""
    if not isinstance(value, (list, tuple)) or not 1 <= len(value) <= len(SockAddr._fields):
        raise OSError(errno.EINVAL, "bad address")
    address = SockAddr(*value)
    types = (int, str, int, int, int, bytes)
    if any(not isinstance(field_, kind) or isinstance(field_, bool) for field_, kind in zip(address, types)):
        raise OSError(errno.EINVAL, "bad address")
    return address


def _int_arg(request: dict, name: str, default: int | None = None) -> int:
    value = request.get(name, default)
    if not isinstance(value, int) or isinstance(value, bool):
        raise OSError(errno.EINVAL, f"bad argument {name!r}")
    return value


def _bytes_arg(request: dict, name: str) -> bytes:
    value = request.get(name, b"")
    if not isinstance(value, bytes):
        raise OSError(errno.EINVAL, f"bad argument {name!r}")
    return value


@dataclass(eq=False)
class _Pending:
    call: Call
    deferred: Deferred
    finish: Callable[[Any], tuple[Any, list[int]]]
    timer: Any = None


@dataclass(eq=False)
class Connection:
    """One client connection: its socket, the peer's pid (SO_PEERCRED), its pending call."""
    sock: _socket.socket
    pid: int
    pending: _Pending | None = None
    closed: bool = False
    requests: int = 0               # read from the client
    replies: int = 0                # sent to it

    @property
    def unanswered(self) -> bool:
        """The current request has no reply yet and none is on its way (no pending call)."""
        return not self.closed and self.pending is None and self.replies < self.requests


class ApiServer:
    """The syscall socket of one node: requests of in-process clients, dispatched to `layer`.

    `layer` has the `SocketLayer` protocol (nodes/syscall_args.py) plus `lookup(fd)`; `loop`
    is the node's EventLoop; `on_listener(fd, pid)` takes a program's seccomp listener."""

    def __init__(self, path: str, layer: Any, loop: Any, on_listener: Callable[[int, int], Any]) -> None:
        self.path = path
        self.layer = layer
        self.loop = loop
        self.on_listener = on_listener
        self.connections: dict[int, Connection] = {}
        self.counters = {"connections": 0, "requests": 0, "answered": 0, "failed": 0, "pending": 0,
                         "timed_out": 0, "cancelled": 0, "errors": 0, "listeners": 0}
        self._next_id = 1
        self._buffer = bytearray(MAX_REQUEST)   # one request at a time: read into the same buffer
        self._reported: set[tuple[str, int]] = set()
        self._last_bug: BaseException | None = None
        self._ops: dict[str, Callable[[Connection, dict, list[int]], Any]] = {
            "listener": self._op_listener, "socket": self._op_socket,
            **{name: self._socket_call for name in SOCKET_CALLS},
        }
        if os.path.exists(path) and stat.S_ISSOCK(os.lstat(path).st_mode):
            os.unlink(path)         # a previous incarnation's (the node crashed): ours now
        self.sock = _socket.socket(_socket.AF_UNIX, _socket.SOCK_SEQPACKET | _socket.SOCK_NONBLOCK)
        try:
            self.sock.bind(path)
            self.sock.listen(BACKLOG)
            self._path_inode = os.stat(path).st_ino
        except BaseException:
            self.sock.close()
            raise
        loop.add_reader(self.sock.fileno(), self._on_accept)

    # --- connections

    def _on_accept(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as error:        # EMFILE and the like: the client waits in the backlog
                log.warning("%s: accept: %s", self.path, error)
                return
            conn.setblocking(False)
            creds = conn.getsockopt(_socket.SOL_SOCKET, _socket.SO_PEERCRED, struct.calcsize("3i"))
            connection = Connection(conn, struct.unpack("3i", creds)[0])
            self.connections[conn.fileno()] = connection
            self.counters["connections"] += 1
            self.loop.add_reader(conn.fileno(), lambda connection=connection: self._on_readable(connection))

    def _on_readable(self, connection: Connection) -> None:
        while not connection.closed:
            try:
                length, ancillary, flags, _ = connection.sock.recvmsg_into(
                    [self._buffer], _FD_SPACE, _socket.MSG_CMSG_CLOEXEC)
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                self._drop(connection)
                return
            fds = _fds_of(ancillary)
            if length:
                connection.requests += 1
            if not length:                              # EOF: the client closed (or died)
                _close_all(fds)
                self._drop(connection)
                return
            if connection.pending is not None:          # a second request while one waits
                _close_all(fds)
                log.warning("%s: pid %d sent a request while one was pending: connection closed",
                            self.path, connection.pid)
                self._drop(connection)
                return
            if flags & (_socket.MSG_TRUNC | _socket.MSG_CTRUNC):
                _close_all(fds)
                self._reply(connection, {"ok": False, "errno": errno.EMSGSIZE})
                continue
            self._serve(connection, memoryview(self._buffer)[:length], fds)

    def _drop(self, connection: Connection) -> None:
        """Close a connection; its pending call is cancelled (the client is gone)."""
        if connection.closed:
            return
        connection.closed = True
        pending, connection.pending = connection.pending, None
        if pending is not None:
            self._cancel(pending)
        fd = connection.sock.fileno()
        self.connections.pop(fd, None)
        try:
            self.loop.remove_reader(fd)
        except (KeyError, ValueError):
            pass
        connection.sock.close()

    def close(self) -> None:
        """Close every connection (cancelling their calls) and the listening socket; unlink the path."""
        for connection in list(self.connections.values()):
            self._drop(connection)
        if self.sock.fileno() >= 0:
            try:
                self.loop.remove_reader(self.sock.fileno())
            except (KeyError, ValueError):
                pass
            self.sock.close()
        try:
            if os.stat(self.path).st_ino == self._path_inode:
                os.unlink(self.path)
        except OSError:
            pass

    # --- requests

    def _serve(self, connection: Connection, raw: memoryview, fds: list[int]) -> None:
        """One request, behind the exception barrier: every request is answered."""
        self.counters["requests"] += 1
        try:
            request = msgpack.unpackb(raw, raw=False)
        except Exception as error:
            _close_all(fds)
            log.warning("%s: undecodable request from pid %d: %s", self.path, connection.pid, error)
            self._reply(connection, {"ok": False, "errno": errno.EINVAL})
            return
        try:
            if not isinstance(request, dict):
                raise OSError(errno.EINVAL, "a request is a map")
            op = request.get("op")
            handler = self._ops.get(op) if isinstance(op, str) else None
            if handler is None:
                raise OSError(errno.ENOSYS, f"no such op {op!r}")
            handler(connection, request, fds)
        except OSError as error:
            if connection.unanswered:
                self._reply(connection, {"ok": False, "errno": error.errno or errno.EIO})
        except Exception as error:
            self._bug(connection, "request", error)
            if NapiScheduler.reraise:
                raise
        finally:
            _close_all(fds)

    def _bug(self, connection: Connection, what: str, error: BaseException) -> None:
        """A node bug met while serving: answer EIO (unless the request was answered before the
        bug surfaced, e.g. re-raised through a Deferred resolved at once), log it once per code site."""
        if error is self._last_bug:
            return
        self._last_bug = error
        self.counters["errors"] += 1
        if connection.unanswered:
            self._reply(connection, {"ok": False, "errno": errno.EIO})
        innermost = traceback.extract_tb(error.__traceback__)[-1] if error.__traceback__ else None
        site = (innermost.filename, innermost.lineno or 0) if innermost is not None else ("?", 0)
        if site not in self._reported:
            self._reported.add(site)
            log.error("%s: BUG: %s of pid %d answered EIO\n%s", self.path, what, connection.pid,
                      "".join(traceback.format_exception(error)).rstrip())

    def _reply(self, connection: Connection, reply: dict, fds: list[int] = ()) -> bool:
        """Send one reply (never blocks: a client has one request out, so there is room)."""
        if connection.closed:
            return False
        self.counters["failed" if reply.get("ok") is False else "answered"] += 1
        ancillary = [(_socket.SOL_SOCKET, _socket.SCM_RIGHTS, array.array("i", fds))] if fds else []
        connection.replies += 1
        try:
            connection.sock.sendmsg([msgpack.packb(reply, use_bin_type=True)], ancillary)
        except OSError as error:
            log.warning("%s: reply to pid %d lost: %s", self.path, connection.pid, error)
            self._drop(connection)
            return False
        return True

    def _op_listener(self, connection: Connection, request: dict, fds: list[int]) -> None:
        pid = _int_arg(request, "pid")
        if len(fds) != 1:
            raise OSError(errno.EINVAL, "op listener takes one fd")
        listener = fds.pop()
        self.counters["listeners"] += 1
        self.on_listener(listener, pid)         # it owns the fd from now on
        self._reply(connection, {"ok": True})

    def _op_socket(self, connection: Connection, request: dict, fds: list[int]) -> None:
        family, type_, proto = (_int_arg(request, name, 0) for name in ("family", "type", "proto"))
        if type_ & ~(0xF | SOCK_NONBLOCK | SOCK_CLOEXEC):
            raise OSError(errno.EINVAL, "bad socket type flags")
        call = self._call(connection, "socket", -1, 0.0 if type_ & SOCK_NONBLOCK else None)
        sock, program_end = self.layer.socket(family, type_ & 0xF, proto, call)
        try:
            if type_ & SOCK_NONBLOCK:
                os.set_blocking(program_end, False)
            self._reply(connection, {"ok": True}, [program_end])
        finally:
            os.close(program_end)       # the client holds the only copies (or the layer sees EOF)

    def _call(self, connection: Connection, name: str, file: int, timeout: float | None) -> Call:
        call = Call(self._next_id, connection.pid, name, nonblock=timeout == 0)
        self._next_id += 1
        call._file = file
        return call

    def _socket_call(self, connection: Connection, request: dict, fds: list[int]) -> None:
        name = request["op"]
        timeout = request.get("timeout")
        if timeout is not None and (not isinstance(timeout, (int, float)) or isinstance(timeout, bool)
                                    or timeout < 0):
            raise OSError(errno.EINVAL, "bad timeout")
        if not fds:
            raise OSError(errno.EBADF, "no socket passed")
        call = self._call(connection, name, fds.pop(0), timeout)
        try:
            sock = self.layer.lookup(call.file)
            if sock is None:
                is_socket = stat.S_ISSOCK(os.fstat(call.file).st_mode)
                raise OSError(errno.EBADF if is_socket else errno.ENOTSOCK, "not a socket of this node")
            result, finish = SOCKET_CALLS[name](self.layer, sock, request, call)
        except BaseException:
            call.close()
            raise
        if isinstance(result, Deferred):
            self._wait(connection, call, result, finish, timeout)
            return
        self._finish(connection, call, lambda: finish(result))

    def _finish(self, connection: Connection, call: Call, produce: Callable[[], tuple[Any, list[int]]]) -> bool:
        """Reply with what `produce` gives (value, fds to pass), then let go of the call's file.
        True when the reply went out."""
        try:
            value, fds = produce()
        except OSError as error:
            call.close()
            return self._reply(connection, {"ok": False, "errno": error.errno or errno.EIO})
        except Exception as error:
            call.close()
            self._bug(connection, call.name, error)
            if NapiScheduler.reraise:
                raise
            return False
        call.close()
        try:
            return self._reply(connection, {"ok": True, "value": value}, fds)
        finally:
            _close_all(fds)         # passed (the client holds them now), or lost with the client

    # --- pending calls

    def _wait(self, connection: Connection, call: Call, deferred: Deferred,
              finish: Callable[[Any], tuple[Any, list[int]]], timeout: float | None) -> None:
        pending = _Pending(call, deferred, finish)
        connection.pending = pending

        def sink(ok: bool, value: Any) -> bool:
            if connection.pending is not pending:
                return False                    # cancelled or timed out: the layer keeps its value
            connection.pending = None
            if pending.timer is not None:
                pending.timer.cancel()
            if not ok:
                call.close()
                return self._reply(connection, {"ok": False, "errno": value})
            return self._finish(connection, call, lambda: finish(value))

        deferred._sink = sink
        if deferred._outcome is not None:       # resolved before it was returned
            sink(*deferred._outcome)
            return
        self.counters["pending"] += 1
        if timeout == 0:                        # the layer broke its word: a non-blocking call never waits
            self._time_out(connection, pending, timed_out=False)
        elif timeout is not None:
            pending.timer = self.loop.call_later(timeout, self._time_out, connection, pending)

    def _time_out(self, connection: Connection, pending: _Pending, timed_out: bool = True) -> None:
        if connection.pending is not pending:
            return
        connection.pending = None
        self._cancel(pending)
        if timed_out:
            self.counters["timed_out"] += 1
            self._reply(connection, {"ok": False, "errno": errno.EAGAIN, "timed_out": True})
        else:
            self._reply(connection, {"ok": False, "errno": errno.EAGAIN})

    def _cancel(self, pending: _Pending) -> None:
        if pending.timer is not None:
            pending.timer.cancel()
        self.counters["cancelled"] += 1
        pending.call.close()
        pending.deferred._cancelled()


# ---------------------------------------------------------------------------------------------
# The socket calls: each decodes its arguments, calls the layer, and says how to reply
# (`finish(result) -> (value, fds to pass)`).

def _none(_: Any) -> tuple[None, list[int]]:
    return None, []


def _bind(layer: Any, sock: Any, request: dict, call: Call) -> tuple:
    return layer.bind(sock, address_in(request.get("address")), call), _none


def _connect(layer: Any, sock: Any, request: dict, call: Call) -> tuple:
    return layer.connect(sock, address_in(request.get("address")), call), _none


def _listen(layer: Any, sock: Any, request: dict, call: Call) -> tuple:
    return layer.listen(sock, _int_arg(request, "backlog"), call), _none


def _accepted(accepted: Any) -> tuple[list | None, list[int]]:
    _sock, program_end, peer = accepted
    return address_out(peer), [program_end]


def _accept(layer: Any, sock: Any, request: dict, call: Call) -> tuple:
    return layer.accept(sock, call), _accepted


def _address_reply(address: Any) -> tuple[list | None, list[int]]:
    return address_out(address), []


def _getsockname(layer: Any, sock: Any, request: dict, call: Call) -> tuple:
    return layer.getsockname(sock, call), _address_reply


def _getpeername(layer: Any, sock: Any, request: dict, call: Call) -> tuple:
    return layer.getpeername(sock, call), _address_reply


def _setsockopt(layer: Any, sock: Any, request: dict, call: Call) -> tuple:
    value = _bytes_arg(request, "value")[:MAX_OPTLEN]
    return layer.setsockopt(sock, _int_arg(request, "level"), _int_arg(request, "name"), value, call), _none


def _getsockopt(layer: Any, sock: Any, request: dict, call: Call) -> tuple:
    size = _int_arg(request, "size")
    if size < 0:
        raise OSError(errno.EINVAL, "negative optlen")
    result = layer.getsockopt(sock, _int_arg(request, "level"), _int_arg(request, "name"), size, call)
    return result, lambda value: (bytes(value)[:size], [])


def _shutdown(layer: Any, sock: Any, request: dict, call: Call) -> tuple:
    return layer.shutdown(sock, _int_arg(request, "how"), call), _none


def _sendmsg(layer: Any, sock: Any, request: dict, call: Call) -> tuple:
    address = request.get("address")
    result = layer.sendmsg(sock, _bytes_arg(request, "data")[:MAX_TRANSFER], _int_arg(request, "flags", 0),
                           None if address is None else address_in(address), _bytes_arg(request, "control"), call)
    return result, lambda sent: (int(sent), [])


def _recvmsg(layer: Any, sock: Any, request: dict, call: Call) -> tuple:
    size, control_size = _int_arg(request, "size"), _int_arg(request, "control_size", 0)
    if size < 0 or control_size < 0:
        raise OSError(errno.EINVAL, "negative size")
    size = min(size, MAX_RECV)

    def finish(result: Any) -> tuple[list, list[int]]:
        result = RecvResult(*result)
        data, msg_flags, control = bytes(result.data[:size]), result.msg_flags, bytes(result.control)
        if len(control) > control_size:
            control, msg_flags = control[:control_size], msg_flags | MSG_CTRUNC
        length = result.length if result.length is not None else len(data)
        return [data, address_out(result.address), control, msg_flags, length], []

    return layer.recvmsg(sock, size, _int_arg(request, "flags", 0), control_size, call), finish


SOCKET_CALLS: dict[str, Callable[[Any, Any, dict, Call], tuple]] = {
    "bind": _bind, "connect": _connect, "listen": _listen, "accept": _accept,
    "getsockname": _getsockname, "getpeername": _getpeername, "setsockopt": _setsockopt,
    "getsockopt": _getsockopt, "shutdown": _shutdown, "sendmsg": _sendmsg, "recvmsg": _recvmsg,
}


def _fds_of(ancillary: list) -> list[int]:
    fds: list[int] = []
    for level, kind, data in ancillary:
        if level == _socket.SOL_SOCKET and kind == _socket.SCM_RIGHTS:
            received = array.array("i")
            received.frombytes(data[:len(data) - len(data) % received.itemsize])
            fds.extend(received)
    if len(fds) > MAX_FDS:
        _close_all(fds[MAX_FDS:])
        del fds[MAX_FDS:]
    return fds


def _close_all(fds: list[int]) -> None:
    while fds:
        try:
            os.close(fds.pop())
        except OSError:
            pass
