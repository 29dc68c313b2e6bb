"""Socket calls of a script, made on the stack's socket layer (nodes.socket) directly.

Every call is non-blocking underneath. A call on a blocking fd that would block (EAGAIN, a
connect still in SYN-SENT, a write that did not fit) is `Blocked`: the runner retries it after
every step of the stack until it returns, as packetdrill's blocking calls return when the
stack answers. fds are numbered from 3, lowest free first, as a process's would be.

Arguments packetdrill writes as `...` mean what a test means by them: bind() binds
0.0.0.0:8080, connect() connects to the peer 192.0.2.1:8080, write() writes `pattern` bytes.
`peer_port(N) = 0` is ours, not packetdrill's: the segments that follow are the peer's
connection from port N (40000 until then), for scripts with several connections to a listener.
Constants are Linux's names (SOL_SOCKET, TCP_NODELAY, O_NONBLOCK, MSG_PEEK, SHUT_WR, errno
names as values of SO_ERROR...), `A|B` for a union; `{l_onoff=1, l_linger=0}` is a linger.
"""
from __future__ import annotations

import errno
import fcntl
import os
import select
import socket
import struct
from dataclasses import dataclass
from typing import Callable

from nodes.stack import Stack

from .harness import REMOTE_IP
from .segments import LOCAL_PORT, REMOTE_PORT, Numbering, pattern

TCP_SYN_SENT = 2
TCP_ESTABLISHED = 1
Clock = Callable[[], float]  # the stack's time now


@dataclass(slots=True)
class Done:
    value: int
    errno_name: str | None = None
    problem: str = ""  # the call returned, but something about it is wrong (the bytes read)


@dataclass(slots=True)
class Blocked:
    retry: Callable[[], "Done | None"]


class CallError(Exception):
    """A call the runner cannot make as written (an unknown constant, fd or call)."""


@dataclass(slots=True)
class OpenFile:
    sock: object
    nonblocking: bool = False
    read_next: int = 1  # the peer's relative sequence number of the next byte to read
    write_next: int = 1  # ours, of the next byte to write


def constant(text: str) -> int:
    """A number, a Linux constant by name, or a union `A|B`."""
    value = 0
    for part in text.split("|"):
        part = part.strip()
        try:
            value |= int(part, 0)
            continue
        except ValueError:
            pass
        for module in (socket, os, fcntl, select, errno):
            if isinstance(getattr(module, part, None), int):
                value |= getattr(module, part)
                break
        else:
            if part == "SOL_TCP":
                value |= socket.IPPROTO_TCP
            else:
                raise CallError(f"unknown constant {part!r}")
    return value


def _failure(error: OSError) -> Done:
    return Done(-1, errno.errorcode.get(error.errno, str(error.errno)))


class Calls:
    """The fd table and one method per call (`call_NAME(args, now)`)."""

    def __init__(self, stack: "Stack", numbering: Numbering) -> None:
        self.stack = stack
        self.numbering = numbering
        self.files: dict[int, OpenFile] = {}

    def call(self, name: str, args: list[str], now: Clock) -> "Done | Blocked":
        method = getattr(self, "call_" + name, None)
        if method is None:
            raise CallError(f"unsupported call {name}()")
        try:
            return method(args, now)
        except OSError as error:
            return _failure(error)

    def _file(self, text: str) -> OpenFile:
        fd = constant(text)
        if fd not in self.files:
            raise OSError(errno.EBADF, "Bad file descriptor")
        return self.files[fd]

    def _new_fd(self, sock: object) -> int:
        fd = 3
        while fd in self.files:
            fd += 1
        self.files[fd] = OpenFile(sock)
        return fd

    @staticmethod
    def _arity(args: list[str], count: int, name: str) -> None:
        if len(args) != count:
            raise CallError(f"{name}() takes {count} arguments, not {len(args)}")

    # ------------------------------------------------------------- setup

    def call_socket(self, args: list[str], now: Clock) -> "Done | Blocked":
        self._arity(args, 3, "socket")
        family = socket.AF_INET if args[0] == "..." else constant(args[0])
        kind = constant(args[1])
        protocol = 0 if args[2] == "..." else constant(args[2])
        sock = self.stack.sockets.socket(family, kind & ~socket.SOCK_NONBLOCK, protocol)
        fd = self._new_fd(sock)
        self.files[fd].nonblocking = bool(kind & socket.SOCK_NONBLOCK)
        return Done(fd)

    def call_peer_port(self, args: list[str], now: Clock) -> "Done | Blocked":
        self._arity(args, 1, "peer_port")
        self.numbering.switch_peer_port(constant(args[0]))
        return Done(0)

    def call_fcntl(self, args: list[str], now: Clock) -> "Done | Blocked":
        entry = self._file(args[0])
        command = constant(args[1])
        if command == fcntl.F_GETFL:
            return Done(os.O_RDWR | (os.O_NONBLOCK if entry.nonblocking else 0))
        if command == fcntl.F_SETFL:
            entry.nonblocking = bool(constant(args[2]) & os.O_NONBLOCK)
            return Done(0)
        raise CallError(f"fcntl command {args[1]} is not supported")

    def call_bind(self, args: list[str], now: Clock) -> "Done | Blocked":
        self._arity(args, 3, "bind")
        self._file(args[0]).sock.bind(("0.0.0.0", LOCAL_PORT))
        self.numbering.local_port = LOCAL_PORT
        self.numbering.remote_port = REMOTE_PORT
        return Done(0)

    def call_listen(self, args: list[str], now: Clock) -> "Done | Blocked":
        self._arity(args, 2, "listen")
        self._file(args[0]).sock.listen(constant(args[1]))
        return Done(0)

    def call_setsockopt(self, args: list[str], now: Clock) -> "Done | Blocked":
        self._arity(args, 5, "setsockopt")
        sock = self._file(args[0]).sock
        sock.setsockopt(constant(args[1]), constant(args[2]), _option_value(args[3]))
        return Done(0)

    def call_getsockopt(self, args: list[str], now: Clock) -> "Done | Blocked":
        self._arity(args, 5, "getsockopt")
        value = self._file(args[0]).sock.getsockopt(constant(args[1]), constant(args[2]))
        wanted = args[3]
        if wanted != "...":
            expected = _option_value(wanted)
            if value != expected:
                shown = errno.errorcode.get(value, value) if args[2] == "SO_ERROR" and isinstance(value, int) else value
                return Done(0, problem=f"the option's value is {shown}, expected {wanted}")
        return Done(0)

    # ------------------------------------------------------------- connections

    def call_accept(self, args: list[str], now: Clock) -> "Done | Blocked":
        self._arity(args, 3, "accept")
        entry = self._file(args[0])

        def attempt() -> Done | None:
            try:
                child = entry.sock.accept()
            except BlockingIOError:
                return None
            fd = self._new_fd(child)
            self.files[fd].read_next = self.numbering.remote_syn + 1
            return Done(fd)

        return self._maybe_block(entry, attempt, "EAGAIN")

    def call_connect(self, args: list[str], now: Clock) -> "Done | Blocked":
        self._arity(args, 3, "connect")
        entry = self._file(args[0])
        self.numbering.remote_port = LOCAL_PORT
        self.numbering.new_connection()
        entry.sock.connect((str(REMOTE_IP), LOCAL_PORT), now())

        def attempt() -> Done | None:
            state = entry.sock.state
            if state == TCP_SYN_SENT:
                return None
            entry.read_next = self.numbering.remote_syn + 1
            if state == TCP_ESTABLISHED:
                return Done(0)
            code = entry.sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
            return Done(-1, errno.errorcode.get(code, str(code))) if code else Done(0)

        return self._maybe_block(entry, attempt, "EINPROGRESS")

    def _maybe_block(self, entry: OpenFile, attempt: Callable[[], "Done | None"], errno_name: str) -> "Done | Blocked":
        result = attempt()
        if result is not None:
            return result
        if entry.nonblocking:
            return Done(-1, errno_name)
        return Blocked(_guarded(attempt))

    def call_shutdown(self, args: list[str], now: Clock) -> "Done | Blocked":
        self._arity(args, 2, "shutdown")
        self._file(args[0]).sock.shutdown(constant(args[1]), now())
        return Done(0)

    def call_close(self, args: list[str], now: Clock) -> "Done | Blocked":
        self._arity(args, 1, "close")
        fd = constant(args[0])
        entry = self._file(args[0])
        del self.files[fd]
        entry.sock.close(now())
        return Done(0)

    # ------------------------------------------------------------- data

    def call_write(self, args: list[str], now: Clock) -> "Done | Blocked":
        self._arity(args, 3, "write")
        return self._send(self._file(args[0]), constant(args[2]), 0, now)

    def call_send(self, args: list[str], now: Clock) -> "Done | Blocked":
        self._arity(args, 4, "send")
        return self._send(self._file(args[0]), constant(args[2]), constant(args[3]), now)

    def _send(self, entry: OpenFile, length: int, flags: int, now: Clock) -> "Done | Blocked":
        written = 0

        def attempt() -> Done | None:
            nonlocal written
            while written < length:
                data = pattern(entry.write_next, length - written)
                try:
                    taken = entry.sock.sendmsg(data, None, now(), flags)
                except BlockingIOError:
                    taken = 0
                except OSError as error:
                    return Done(written) if written else _failure(error)
                entry.write_next += taken
                written += taken
                if taken == 0 or (entry.nonblocking and written < length):
                    break
            if written == length or (entry.nonblocking and written):
                return Done(written)
            return None

        result = attempt()
        if result is not None:
            return result
        if entry.nonblocking:
            return Done(-1, "EAGAIN")
        return Blocked(_guarded(attempt))

    def call_read(self, args: list[str], now: Clock) -> "Done | Blocked":
        self._arity(args, 3, "read")
        return self._recv(self._file(args[0]), constant(args[2]), 0, now)

    def call_recv(self, args: list[str], now: Clock) -> "Done | Blocked":
        self._arity(args, 4, "recv")
        return self._recv(self._file(args[0]), constant(args[2]), constant(args[3]), now)

    def _recv(self, entry: OpenFile, length: int, flags: int, now: Clock) -> "Done | Blocked":
        def attempt() -> Done | None:
            try:
                data = entry.sock.recvmsg(length, now(), flags).data
            except BlockingIOError:
                return None
            expected = pattern(entry.read_next, len(data))
            if not flags & socket.MSG_PEEK:
                entry.read_next += len(data)
            if data != expected:
                return Done(len(data), problem="the bytes read are not the bytes the script sent there")
            return Done(len(data))

        return self._maybe_block(entry, attempt, "EAGAIN")

    def call_poll(self, args: list[str], now: Clock) -> "Done | Blocked":
        """poll([{fd=N, events=E, revents=R}], 1, 0): one fd, timeout 0 (it never blocks)."""
        self._arity(args, 3, "poll")
        text = args[0].strip()
        if not (text.startswith("[{") and text.endswith("}]")) or constant(args[1]) != 1 or constant(args[2]) != 0:
            raise CallError("poll() takes one {fd=N, events=E, revents=R} and a 0 timeout here")
        fields = dict(part.strip().split("=", 1) for part in text[2:-2].split(","))
        entry = self._file(fields["fd"])
        events = constant(fields["events"]) | select.POLLERR | select.POLLHUP
        revents = entry.sock.poll() & events
        if "revents" in fields and revents != constant(fields["revents"]):
            return Done(1 if revents else 0, problem=f"revents {_poll_names(revents)}, expected {fields['revents']}")
        return Done(1 if revents else 0)


def _guarded(attempt: Callable[[], "Done | None"]) -> Callable[[], "Done | None"]:
    def retry() -> Done | None:
        try:
            return attempt()
        except OSError as error:
            return _failure(error)
    return retry


def _option_value(text: str) -> "int | bytes":
    text = text.strip()
    if text.startswith("[") and text.endswith("]"):
        return constant(text[1:-1])
    if text.startswith("{") and text.endswith("}"):
        fields = dict(part.strip().split("=", 1) for part in text[1:-1].split(","))
        return struct.pack("=ii", constant(fields["l_onoff"]), constant(fields["l_linger"]))
    if text.startswith('"') and text.endswith('"'):
        return text[1:-1].encode()
    return constant(text)


def _poll_names(mask: int) -> str:
    names = [name for name in ("POLLIN", "POLLPRI", "POLLOUT", "POLLERR", "POLLHUP", "POLLRDNORM", "POLLWRNORM",
                               "POLLRDHUP") if mask & getattr(select, name)]
    return "|".join(names) or "0"
