"""Sockets on a node of another machine: `SocketRelay` (the agent's side) and `RemoteSocket` (ours).

Before changing this file, read docs/api-sockets.md (what `node.socket()` is, and its
section "On a node of another machine"), nodes/api.py (the `NodeSocket` the relay holds)
and control/remote_exec.py (the same pattern for programs).

In a cluster emulation (docs/cluster.md) a node may run on a machine whose unix sockets
the controller cannot reach, so `nodes.api.socket()` cannot be called from here. The
host agent of that machine (control/cluster_agent.py) holds a `SocketRelay`: it makes
real `NodeSocket`s on the node's syscall socket (``RUN_DIR/NODE.sys``), keeps them by id
and runs each socket call on them, with plain data in and out (bytes, ints, str, tuples:
what Ray pickles cheaply):

    create(node, family, type, proto)                    -> {"id", "family", "type", "proto"}
    op(id, operation, args, kwargs, blocking, wait, resume) -> {"value": v} | {"pending": True}
    close(id) / close_all()

Expected failures come back as ``{"error": type name, "errno", "message"}`` and are raised
again here as the same exception (`OSError(errno, ...)` gives the stdlib's subclass:
ConnectionRefusedError, BlockingIOError...; TimeoutError is socket.timeout).

No call holds an agent thread longer than `MAX_WAIT`: the relay's sockets are non-blocking
and a call waits for readiness with poll(2) (as asyncio's `sock_*` do on a NodeSocket) at
most `wait` seconds, then answers ``{"pending": True}``. `RemoteSocket` keeps the socket's
timeout itself and calls again until the call is done or its own deadline passes (then
`TimeoutError('timed out')`, as the stdlib's); a blocking socket (timeout None) simply
calls again forever. A connect is started once (non-blocking, EINPROGRESS) and later calls
only wait for it (``resume``): writable, then SO_ERROR, which is what connect(2) says to
do and what CPython does for a socket with a timeout.

`RemoteSocket` speaks to the relay through one function, ``call(method, **kwargs)`` (for a
cluster: a Ray call of the agent's ``socket_call``; in tests: the relay itself).
"""
from __future__ import annotations

import contextlib
import errno
import io
import itertools
import os
import select
import socket as _socket
import sys
import threading
import time
import warnings
from typing import Any, Callable, Iterable

from .plan import syscall_path

Call = Callable[..., Any]
Opener = Callable[[str, int, int, int], _socket.socket]

MAX_WAIT = 1.0              # seconds one op may hold the caller's (the agent's) thread
MAX_CHUNK = 1 << 20         # bytes one recv returns / one send passes (a short read or write, which the API allows)
POLL_SLICE = 0.05           # poll(2) at most this long before trying again: an error the socket holds (ICMP
                            # port unreachable) does not wake poll, nor does close() from another thread
_BUSY_PAUSE = 0.005         # poll said ready but the call would still block: do not spin

_IMMEDIATE = {"bind", "listen", "getsockname", "getpeername", "setsockopt", "getsockopt", "shutdown"}
_READERS = {"recv", "recvfrom", "recvmsg", "accept"}
_WRITERS = {"send", "sendall", "sendto", "sendmsg"}

_ERRORS: dict[str, type[BaseException]] = {
    "gaierror": _socket.gaierror, "herror": _socket.herror, "TypeError": TypeError, "ValueError": ValueError,
    "OverflowError": OverflowError, "LookupError": LookupError, "KeyError": LookupError,
    "UnsupportedOperation": io.UnsupportedOperation,
}


def error_reply(error: BaseException) -> dict[str, Any]:
    """An exception as plain data: its type's name, errno (OSError) and message."""
    if isinstance(error, OSError):
        message = error.strerror if error.strerror is not None else str(error)
        return {"error": type(error).__name__, "errno": error.errno, "message": message}
    return {"error": type(error).__name__, "errno": None, "message": str(error)}


def raise_socket_reply(reply: Any) -> Any:
    """`reply` itself, or the exception an ``{"error": ...}`` reply stands for, raised."""
    if not isinstance(reply, dict) or "error" not in reply:
        return reply
    kind, number, message = reply["error"], reply.get("errno"), reply.get("message", "")
    known = _ERRORS.get(kind)
    if known is not None and not issubclass(known, OSError):
        raise known(message)
    if known is not None:
        raise known(number, message) if number is not None else known(message)
    if number is not None:
        raise OSError(number, message)      # the stdlib's subclass for errno: ConnectionRefusedError...
    if kind in ("TimeoutError", "timeout"):
        raise TimeoutError(message or "timed out")
    if kind == "OSError":
        raise OSError(message)
    raise RuntimeError(f"{kind} on the node's machine: {message}")


def _node_socket(sys_path: str, family: int, type: int, proto: int) -> _socket.socket:  # noqa: A002
    from nodes import api

    return api.socket(sys_path, family, type, proto)


# -------------------------------------------------------------------------------------------------
# The agent's side

class SocketRelay:
    """The sockets of this machine's nodes, held for a controller elsewhere (thread-safe).

    `run_dir`: this machine's run directory (its ``<node>.sys`` syscall sockets and
    ``hosts``: names resolve here, on the node's machine). `nodes`: the node names
    placed here (None: any name; others are refused with LookupError). `opener(sys_path,
    family, type, proto)` makes a socket (default `nodes.api.socket`; tests give the
    stdlib's). `max_wait` caps the seconds one call may wait.
    """

    def __init__(self, run_dir: str, nodes: Iterable[str] | None = None, opener: Opener | None = None,
                 max_wait: float = MAX_WAIT) -> None:
        self.run_dir = str(run_dir)
        self.nodes = None if nodes is None else set(nodes)
        self.max_wait = max_wait
        self._opener = opener or _node_socket
        self._sockets: dict[int, tuple[str, _socket.socket]] = {}
        self._ids = itertools.count(1)
        self._lock = threading.Lock()

    def __len__(self) -> int:
        with self._lock:
            return len(self._sockets)

    def ids(self) -> list[int]:
        with self._lock:
            return sorted(self._sockets)

    # -- the calls ------------------------------------------------------------------------------

    def create(self, node: str, family: int = _socket.AF_INET, type: int = _socket.SOCK_STREAM,  # noqa: A002
               proto: int = 0) -> dict[str, Any]:
        """A new socket on `node`: {"id", "family", "type", "proto"}."""
        try:
            if not isinstance(node, str) or not node or "/" in node or node.startswith(".") or "\0" in node:
                raise ValueError(f"{node!r} is not a node name")
            if self.nodes is not None and node not in self.nodes:
                raise LookupError(f"{node} is not a node of this machine")
            sock = self._opener(syscall_path(self.run_dir, node), int(family), int(type), int(proto))
        except Exception as error:  # noqa: BLE001 - handed to the controller as data
            return error_reply(error)
        return self._register(node, sock)

    def op(self, id: int, operation: str, args: Iterable[Any] = (),  # noqa: A002
           kwargs: dict[str, Any] | None = None, blocking: bool = True, wait: float | None = None,
           resume: bool = False) -> dict[str, Any]:
        """One socket call (`operation`: the socket method's name): {"value": its result} (plain
        data), {"pending": True} when it would still block after `wait` seconds (at most
        max_wait), or an error reply. `blocking` False: one non-blocking try (BlockingIOError as
        the stdlib's). `resume`: a connect started earlier is only waited for."""
        try:
            node, sock = self._get(id)
            wait = self.max_wait if wait is None else max(0.0, min(float(wait), self.max_wait))
            deadline = time.monotonic() + wait
            args, kwargs, method = tuple(args), dict(kwargs or {}), operation
            if method in _IMMEDIATE:
                return {"value": getattr(sock, method)(*args, **kwargs)}
            if method == "connect":
                return self._connect(sock, args, kwargs, blocking, deadline, resume)
            if method in _READERS:
                return self._retry(sock, select.POLLIN, blocking, deadline,
                                   lambda: self._read(node, sock, method, args, kwargs))
            if method == "sendall":
                return self._sendall(sock, bytes(args[0]), *args[1:], blocking=blocking, deadline=deadline)
            if method in _WRITERS:
                return self._retry(sock, select.POLLOUT, blocking, deadline,
                                   lambda: getattr(sock, method)(*args, **kwargs))
            raise ValueError(f"no socket method {method!r}")
        except Exception as error:  # noqa: BLE001 - handed to the controller as data
            return error_reply(error)

    def close(self, id: int) -> dict[str, Any]:  # noqa: A002
        """Close one socket (a closed or unknown id: nothing to do). A call of another thread on it
        ends with EBADF."""
        with self._lock:
            entry = self._sockets.pop(id, None)
        if entry is not None:
            with contextlib.suppress(OSError):
                entry[1].close()
        return {"value": None}

    def close_all(self) -> int:
        """Close every socket (the emulation's teardown); how many there were."""
        with self._lock:
            entries, self._sockets = list(self._sockets.values()), {}
        for _, sock in entries:
            with contextlib.suppress(OSError):
                sock.close()
        return len(entries)

    # -- inside ------------------------------------------------------------------------------------

    def _register(self, node: str, sock: _socket.socket) -> dict[str, Any]:
        sock.setblocking(False)           # never blocks an agent thread: waits are ours, bounded (poll)
        with self._lock:
            id = next(self._ids)  # noqa: A001
            self._sockets[id] = (node, sock)
        return {"id": id, "family": int(sock.family), "type": int(sock.type), "proto": int(sock.proto)}

    def _get(self, id: int) -> tuple[str, _socket.socket]:  # noqa: A002
        with self._lock:
            entry = self._sockets.get(id)
        if entry is None:
            raise OSError(errno.EBADF, os.strerror(errno.EBADF))
        return entry

    def _read(self, node: str, sock: _socket.socket, method: str, args: tuple, kwargs: dict) -> Any:
        if method == "accept":
            child, address = sock.accept()
            reply = self._register(node, child)
            reply["address"] = address
            return reply
        if args:                          # a short read, which recv/recvfrom/recvmsg allow
            args = (min(int(args[0]), MAX_CHUNK), *args[1:])
        value = getattr(sock, method)(*args, **kwargs)
        if method == "recvmsg":
            data, ancillary, flags, address = value
            return bytes(data), [(level, kind, bytes(item)) for level, kind, item in ancillary], flags, address
        return value

    @staticmethod
    def _poll(sock: _socket.socket, events: int, deadline: float) -> bool:
        """Wait until `sock` is ready for `events` (or in error), at most until `deadline`."""
        fd = sock.fileno()
        if fd < 0:
            raise OSError(errno.EBADF, os.strerror(errno.EBADF))
        poller = select.poll()            # not select(): an agent may hold fds past FD_SETSIZE
        poller.register(fd, events)
        remaining = min(deadline - time.monotonic(), POLL_SLICE)
        return bool(poller.poll(max(0, int(remaining * 1000))))

    def _retry(self, sock: _socket.socket, events: int, blocking: bool, deadline: float,
               attempt: Callable[[], Any]) -> dict[str, Any]:
        """`attempt()` until it does not block (readiness by poll), or `deadline`: pending."""
        spurious = 0
        while True:
            try:
                return {"value": attempt()}
            except BlockingIOError:
                if not blocking:
                    raise
            if time.monotonic() >= deadline:
                return {"pending": True}
            if self._poll(sock, events, deadline):
                spurious += 1
                if spurious > 1:
                    time.sleep(_BUSY_PAUSE)
            else:
                spurious = 0

    def _connect(self, sock: _socket.socket, args: tuple, kwargs: dict, blocking: bool, deadline: float,
                 resume: bool) -> dict[str, Any]:
        if not resume:
            try:
                sock.connect(*args, **kwargs)
                return {"value": None}
            except BlockingIOError as error:
                if not blocking or error.errno != errno.EINPROGRESS:
                    raise
        # connect(2), EINPROGRESS: "select(2) for writing; then getsockopt SO_ERROR" (as CPython does)
        while not self._poll(sock, select.POLLOUT, deadline):
            if time.monotonic() >= deadline:
                return {"pending": True}
        failure = sock.getsockopt(_socket.SOL_SOCKET, _socket.SO_ERROR)
        if failure:
            raise OSError(failure, os.strerror(failure))
        return {"value": None}

    def _sendall(self, sock: _socket.socket, data: bytes, flags: int = 0, *, blocking: bool,
                 deadline: float) -> dict[str, Any]:
        """As much of `data` as goes before `deadline`: {"value": bytes sent} (pending when none)."""
        view, sent = memoryview(data), 0
        while sent < len(view):
            reply = self._retry(sock, select.POLLOUT, blocking, deadline, lambda: sock.send(view[sent:], flags))
            if "pending" in reply:
                break
            sent += reply["value"]
        return {"value": sent} if sent or not view else {"pending": True}


# -------------------------------------------------------------------------------------------------
# The controller's side

def _intenum(value: int, kind: type) -> Any:
    with contextlib.suppress(ValueError):
        return kind(value)
    return value


class RemoteSocket:
    """The interface of `socket.socket` for a socket on a node of another machine.

    `call(method, **kwargs)` reaches the machine's `SocketRelay`. What crosses is plain
    data; the socket itself stays with the relay, so there is no local file descriptor:
    `fileno()` raises io.UnsupportedOperation and select/selectors/asyncio cannot watch
    it (use timeouts, or threads). Timeouts are kept here (settimeout, setblocking) and
    honoured as the stdlib's: None blocks, 0.0 is non-blocking, t > 0 ends in
    TimeoutError('timed out').
    """

    def __init__(self, call: Call, node: str, family: int = _socket.AF_INET,
                 type: int = _socket.SOCK_STREAM, proto: int = 0, *,  # noqa: A002
                 _created: dict[str, Any] | None = None) -> None:
        self._call = call
        self.node = node
        self._closed = True               # close() was called (or no socket yet)
        self._released = True             # the relay's socket is closed (or there is none yet)
        self._io_refs = 0                 # makefile() files that hold it open
        self._lock = threading.Lock()
        self._timeout: float | None = _socket.getdefaulttimeout()
        if _created is None:
            if type & _socket.SOCK_NONBLOCK:
                self._timeout = 0.0
            _created = raise_socket_reply(self._transport("create", node=node, family=int(family), type=int(type),
                                                          proto=int(proto)))
        self._id: int = _created["id"]
        self._family, self._type, self._proto = _created["family"], _created["type"], _created["proto"]
        self._type &= ~(_socket.SOCK_NONBLOCK | _socket.SOCK_CLOEXEC)
        self._closed = self._released = False

    def __repr__(self) -> str:
        state = " [closed]" if self._released else ""
        family, kind = (getattr(value, "name", value) for value in (self.family, self.type))
        return f"<RemoteSocket{state} node={self.node} id={getattr(self, '_id', None)} family={family} " \
               f"type={kind} proto={self.proto}>"

    # -- attributes ---------------------------------------------------------------------------------

    @property
    def family(self) -> Any:
        return _intenum(getattr(self, "_family", -1), _socket.AddressFamily)

    @property
    def type(self) -> Any:
        return _intenum(getattr(self, "_type", -1), _socket.SocketKind)

    @property
    def proto(self) -> int:
        return getattr(self, "_proto", -1)

    @property
    def timeout(self) -> float | None:
        return self._timeout

    def gettimeout(self) -> float | None:
        return self._timeout

    def settimeout(self, value: float | None) -> None:
        if value is not None:
            if not isinstance(value, (int, float)):
                raise TypeError(f"'{type(value).__name__}' object cannot be interpreted as an integer or float")
            value = float(value)
            if value < 0 or value != value:
                raise ValueError("Timeout value out of range")
        self._timeout = value

    def setblocking(self, flag: bool) -> None:
        self._timeout = None if flag else 0.0

    def getblocking(self) -> bool:
        return self._timeout != 0.0

    def fileno(self) -> int:
        raise io.UnsupportedOperation(
            f"a socket of {self.node} (another machine) has no local file descriptor: select, selectors and "
            "asyncio cannot watch it; use its timeout (settimeout) or a thread")

    # -- the relay ----------------------------------------------------------------------------------

    def _transport(self, method: str, **kwargs: Any) -> Any:
        try:
            return self._call(method, **kwargs)
        except Exception as error:  # noqa: BLE001 - the agent or its machine is gone (Ray's errors)
            raise OSError(errno.ENETDOWN, f"{os.strerror(errno.ENETDOWN)}: the machine of {self.node} is not "
                                          f"reachable ({type(error).__name__}: {error})") from error

    def _check_open(self) -> None:
        if self._released:
            raise OSError(errno.EBADF, os.strerror(errno.EBADF))

    def _op(self, method: str, *args: Any) -> Any:
        """One call on the relay's socket, as the socket's timeout says."""
        timeout = self._timeout
        return self._until(method, args, timeout != 0.0, None if timeout is None else time.monotonic() + timeout)

    def _until(self, method: str, args: tuple, blocking: bool, deadline: float | None) -> Any:
        """The call, called again while the relay answers pending, until `deadline` (None: for ever)."""
        resume = False
        while True:
            self._check_open()
            wait = MAX_WAIT if deadline is None else max(0.0, min(MAX_WAIT, deadline - time.monotonic()))
            reply = self._transport("op", id=self._id, operation=method, args=args, blocking=blocking, wait=wait,
                                    resume=resume)
            if isinstance(reply, dict) and reply.get("pending"):
                if deadline is not None and time.monotonic() >= deadline:
                    raise TimeoutError("timed out")
                resume = True
                continue
            return raise_socket_reply(reply)["value"]

    # -- the socket API -----------------------------------------------------------------------------

    def bind(self, address: Any) -> None:
        self._op("bind", address)

    def listen(self, backlog: int | None = None) -> None:
        if backlog is None:
            self._op("listen")
        else:
            self._op("listen", int(backlog))

    def accept(self) -> tuple["RemoteSocket", Any]:
        reply = self._op("accept")
        return RemoteSocket(self._call, self.node, _created=reply), reply["address"]

    def connect(self, address: Any) -> None:
        self._op("connect", address)

    def connect_ex(self, address: Any) -> int:
        try:
            self._op("connect", address)
        except TimeoutError as error:
            return error.errno or errno.EAGAIN          # CPython: SOCK_TIMEOUT_ERR (EWOULDBLOCK)
        except OSError as error:
            if error.errno is None:
                raise
            return error.errno
        return 0

    def send(self, data: Any, flags: int = 0) -> int:
        return self._op("send", bytes(memoryview(data)[:MAX_CHUNK]), flags)

    def sendall(self, data: Any, flags: int = 0) -> None:
        """All of `data`; the timeout bounds the whole call (as the stdlib's since 3.5)."""
        view = memoryview(data).cast("B")
        timeout = self._timeout
        deadline = None if timeout is None else time.monotonic() + timeout
        while view:
            sent = self._until("sendall", (bytes(view[:MAX_CHUNK]), flags), timeout != 0.0, deadline)
            view = view[sent:]

    def sendto(self, data: Any, *arguments: Any) -> int:
        if len(arguments) not in (1, 2):
            raise TypeError(f"sendto() takes 2 or 3 arguments ({len(arguments) + 1} given)")
        return self._op("sendto", bytes(memoryview(data)), *arguments)

    def sendmsg(self, buffers: Iterable[Any], ancdata: Iterable[Any] = (), flags: int = 0, address: Any = None) -> int:
        data = [bytes(memoryview(buffer)) for buffer in buffers]
        ancillary = [(level, kind, bytes(memoryview(item))) for level, kind, item in ancdata]
        if address is None:
            return self._op("sendmsg", data, ancillary, flags)
        return self._op("sendmsg", data, ancillary, flags, address)

    def recv(self, bufsize: int, flags: int = 0) -> bytes:
        if bufsize < 0:
            raise ValueError("negative buffersize in recv")
        return self._op("recv", bufsize, flags)

    def recvfrom(self, bufsize: int, flags: int = 0) -> tuple[bytes, Any]:
        if bufsize < 0:
            raise ValueError("negative buffersize in recvfrom")
        data, address = self._op("recvfrom", bufsize, flags)
        return data, address

    def recvmsg(self, bufsize: int, ancbufsize: int = 0, flags: int = 0) -> tuple[bytes, list, int, Any]:
        if bufsize < 0 or ancbufsize < 0:
            raise ValueError("negative buffer size in recvmsg()")
        data, ancillary, msg_flags, address = self._op("recvmsg", bufsize, ancbufsize, flags)
        return data, [tuple(item) for item in ancillary], msg_flags, address

    def recv_into(self, buffer: Any, nbytes: int = 0, flags: int = 0) -> int:
        view = self._target(buffer, nbytes, "recv_into")
        data = self.recv(nbytes or len(view), flags)
        view[:len(data)] = data
        return len(data)

    def recvfrom_into(self, buffer: Any, nbytes: int = 0, flags: int = 0) -> tuple[int, Any]:
        view = self._target(buffer, nbytes, "recvfrom_into")
        data, address = self.recvfrom(nbytes or len(view), flags)
        view[:len(data)] = data
        return len(data), address

    @staticmethod
    def _target(buffer: Any, nbytes: int, caller: str) -> memoryview:
        view = memoryview(buffer).cast("B")
        if nbytes < 0:
            raise ValueError(f"negative buffersize in {caller}")
        if nbytes > len(view):
            raise ValueError("buffer too small for requested bytes" if caller == "recv_into"
                             else "nbytes is greater than the length of the buffer")
        return view

    def getsockname(self) -> Any:
        return self._op("getsockname")

    def getpeername(self) -> Any:
        return self._op("getpeername")

    def setsockopt(self, level: int, optname: int, value: Any, optlen: int | None = None) -> None:
        if value is not None and not isinstance(value, int):
            value = bytes(memoryview(value))
        if optlen is None:
            self._op("setsockopt", level, optname, value)
        else:
            self._op("setsockopt", level, optname, value, optlen)

    def getsockopt(self, level: int, optname: int, buflen: int | None = None) -> Any:
        if buflen is None:
            return self._op("getsockopt", level, optname)
        return self._op("getsockopt", level, optname, buflen)

    def shutdown(self, how: int) -> None:
        self._op("shutdown", how)

    # -- files and closing ------------------------------------------------------------------------

    makefile = _socket.socket.makefile    # socket.SocketIO over recv_into/send: readline, text mode...

    def _decref_socketios(self) -> None:
        if self._io_refs > 0:
            self._io_refs -= 1
        if self._closed:
            self.close()

    def close(self) -> None:
        """Close it (at the relay once no makefile() file holds it); a call of another thread ends with EBADF.
        A machine that cannot be reached any more took the socket with it: nothing to do then."""
        with self._lock:
            self._closed = True
            if self._released or self._io_refs > 0:
                return
            self._released = True
        with contextlib.suppress(OSError):
            self._transport("close", id=self._id)

    def detach(self) -> int:
        raise io.UnsupportedOperation(f"a socket of {self.node} (another machine) has no file descriptor to detach")

    def dup(self) -> "RemoteSocket":
        raise io.UnsupportedOperation(f"a socket of {self.node} (another machine) cannot be duplicated")

    def __enter__(self) -> "RemoteSocket":
        return self

    def __exit__(self, *exc_info: Any) -> None:
        self.close()

    def __del__(self) -> None:
        if getattr(self, "_released", True):
            return
        warnings.warn(f"unclosed {self!r}", ResourceWarning, source=self, stacklevel=2)
        if not sys.is_finalizing():
            with contextlib.suppress(Exception):
                self.close()
