"""The in-process front end: `nodes.api` (client) against `nodes.api_server.ApiServer` over a real
SOCK_SEQPACKET socket, with a real EventLoop in a thread and a fake socket layer.

The fake layer keeps the protocol's promises (socketpair ends, `lookup` by inode, Deferreds
from `call.defer()`, never a Deferred for a non-blocking call) and records every call, so
each test pins what crosses the syscall socket and what the client makes of the answer.
"""
from __future__ import annotations

import array
import errno
import os
import socket
import struct
import threading
from pathlib import Path

import msgpack
import pytest

from bus.runtime import EventLoop
from nodes import api
from nodes.api_server import ApiServer
from nodes.nic import NapiScheduler
from nodes.syscall_args import AF_INET, AF_INET6, Call, RecvResult, SockAddr
from tests.waiting import wait_for

SOL_IP, IP_TTL, IP_RECVTTL = 0, 2, 12


class FakeLayer:
    """The SocketLayer protocol over socketpairs, recording calls; blocking calls wait for the test."""

    def __init__(self, loop: EventLoop) -> None:
        self.loop = loop
        self.calls: list[tuple[str, tuple, Call]] = []
        self.by_inode: dict[int, int] = {}
        self.kernel_ends: dict[int, socket.socket] = {}
        self.names: dict[int, tuple] = {}
        self.options: dict[tuple, bytes] = {}
        self.waiting: list = []
        self.cancelled: list[str] = []
        self.deliver_after: float | None = None     # a blocking recvmsg is answered after this long
        self.bug = False
        self.malformed = False

    def _record(self, name: str, call: Call, *arguments) -> None:
        self.calls.append((name, arguments, call))
        if self.bug:
            raise RuntimeError("a bug in the socket layer")

    def last(self, name: str) -> tuple[tuple, Call]:
        return next((arguments, call) for what, arguments, call in reversed(self.calls) if what == name)

    def _open(self) -> tuple[int, int]:
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        sock = len(self.kernel_ends) + 1
        self.kernel_ends[sock] = ours
        self.by_inode[os.fstat(theirs.fileno()).st_ino] = sock
        return sock, theirs.detach()

    def lookup(self, fd: int) -> int | None:
        return self.by_inode.get(os.fstat(fd).st_ino)

    def close(self) -> None:
        for end in self.kernel_ends.values():
            end.close()

    def _wait(self, name: str, call: Call, value) -> object:
        deferred = call.defer()
        deferred.on_cancel(lambda: self.cancelled.append(name))
        self.waiting.append(deferred)
        if self.deliver_after is not None:
            self.loop.call_later(self.deliver_after, deferred.resolve, value)
        return deferred

    # --- the protocol

    def socket(self, family, type_, proto, call):
        self._record("socket", call, family, type_, proto)
        if family not in (AF_INET, AF_INET6):
            raise OSError(errno.EAFNOSUPPORT, "family")
        return self._open()

    def bind(self, sock, address, call):
        self._record("bind", call, sock, address)
        if address.port and address.port < 1024:
            raise OSError(errno.EACCES, "privileged port")
        self.names[sock] = (address.family, address.host, address.port or 40000)

    def connect(self, sock, address, call):
        self._record("connect", call, sock, address)
        if address.port == 9:
            raise OSError(errno.ECONNREFUSED, "refused")
        if address.port == 7:
            if call.nonblock:
                raise OSError(errno.EINPROGRESS, "in progress")
            return self._wait("connect", call, None)
        return None

    def listen(self, sock, backlog, call):
        self._record("listen", call, sock, backlog)

    def accept(self, sock, call):
        self._record("accept", call, sock)
        child, program_end = self._open()
        return child, program_end, (AF_INET, "10.0.2.1", 5555)

    def getsockname(self, sock, call):
        self._record("getsockname", call, sock)
        return self.names.get(sock, (AF_INET, "0.0.0.0", 0))           # a plain tuple, as allowed

    def getpeername(self, sock, call):
        self._record("getpeername", call, sock)
        raise OSError(errno.ENOTCONN, "not connected")

    def setsockopt(self, sock, level, name, value, call):
        self._record("setsockopt", call, sock, level, name, value)
        if level == 99:
            raise OSError(errno.ENOPROTOOPT, "unknown")
        self.options[(sock, level, name)] = value

    def getsockopt(self, sock, level, name, size, call):
        self._record("getsockopt", call, sock, level, name, size)
        return self.options.get((sock, level, name), struct.pack("=i", 64) + b"tail")

    def shutdown(self, sock, how, call):
        self._record("shutdown", call, sock, how)

    def sendmsg(self, sock, data, flags, address, control, call):
        self._record("sendmsg", call, sock, data, flags, address, control)
        if data == b"wake":         # the pending readers get a datagram
            for deferred in self.waiting:
                self.loop.call_later(0, deferred.resolve, RecvResult(b"late", (AF_INET, "10.0.2.1", 1)))
        return len(data)

    def recvmsg(self, sock, size, flags, control_size, call):
        self._record("recvmsg", call, sock, size, flags, control_size)
        result = RecvResult(b"payload", SockAddr(AF_INET, "10.0.2.1", 4242),
                            _cmsg(SOL_IP, IP_TTL, struct.pack("=i", 63)), 0, 7)
        if call.nonblock or flags & socket.MSG_DONTWAIT:
            raise OSError(errno.EAGAIN, "nothing queued")
        if self.malformed:                          # a bug met while finishing a call resolved at once
            deferred = call.defer()
            deferred.resolve(RecvResult(None))
            return deferred
        return self._wait("recvmsg", call, result)


def _cmsg(level: int, kind: int, data: bytes) -> bytes:
    return (struct.pack("@Nii", socket.CMSG_LEN(len(data)), level, kind) + data).ljust(
        socket.CMSG_SPACE(len(data)), b"\0")


class Node:
    """An ApiServer on a real EventLoop run in a thread (what the node kernel's loop does)."""

    def __init__(self, directory: Path) -> None:
        self.path = str(directory / "h1.sys")
        self.loop = EventLoop()
        self.layer = FakeLayer(self.loop)
        self.listeners: list[tuple[int, int]] = []
        self.server = ApiServer(self.path, self.layer, self.loop, lambda fd, pid: self.listeners.append((fd, pid)))
        self.errors: list[BaseException] = []
        self._running = True
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        while self._running:
            try:
                self.loop.run_once(timeout_ms=20)
            except BaseException as error:       # a re-raised bug: recorded, the loop goes on
                self.errors.append(error)

    def stop(self) -> None:
        self._running = False
        self.thread.join(timeout=5)

    def close(self) -> None:
        self.stop()
        self.server.close()
        self.layer.close()
        for fd, _ in self.listeners:
            os.close(fd)


@pytest.fixture
def node(run_dir):
    node = Node(Path(run_dir))
    yield node
    node.close()
    assert node.errors == []


def _raw_request(path: str, message: dict, fds=()) -> tuple[dict, list[int]]:
    """One request as the protocol spells it, without the client."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET) as conn:
        conn.connect(path)
        conn.settimeout(5)
        return _exchange(conn, message, fds)


def _exchange(conn: socket.socket, message: dict, fds=()) -> tuple[dict, list[int]]:
    ancillary = [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", fds))] if fds else []
    conn.sendmsg([msgpack.packb(message)], ancillary)
    data, ancillary, _, _ = conn.recvmsg(1 << 17, socket.CMSG_SPACE(16))
    received = array.array("i")
    for _, _, payload in ancillary:
        received.frombytes(payload)
    return msgpack.unpackb(data), list(received)


# --- creating sockets

def test_socket_passes_the_program_end_of_a_real_socketpair(node):
    sock = api.socket(node.path, socket.AF_INET, socket.SOCK_DGRAM)
    with sock:
        assert isinstance(sock, socket.socket)
        assert (sock.family, sock.type) == (socket.AF_INET, socket.SOCK_DGRAM)
        (family, type_, proto), call = node.layer.last("socket")
        assert (family, type_, proto) == (AF_INET, socket.SOCK_DGRAM, 0)
        assert call.pid == os.getpid()                                 # SO_PEERCRED
        assert node.layer.lookup(sock.fileno()) == 1
        kernel_end = node.layer.kernel_ends[1]
        sock.send(b"native out")                                       # no request: the socketpair
        assert kernel_end.recv(100) == b"native out"
        kernel_end.send(b"native in")
        assert sock.recv(100) == b"native in"
    assert [name for name, _, _ in node.layer.calls] == ["socket"]


def test_socket_with_sock_nonblock_gives_a_non_blocking_socket(node):
    with api.socket(node.path, socket.AF_INET, socket.SOCK_DGRAM | socket.SOCK_NONBLOCK) as sock:
        assert sock.gettimeout() == 0.0 and not os.get_blocking(sock.fileno())
        assert sock.type == socket.SOCK_DGRAM
        assert node.layer.last("socket")[0][1] == socket.SOCK_DGRAM      # flags are the front end's
        with pytest.raises(BlockingIOError):
            sock.recvfrom(100)


def test_socket_of_a_family_the_layer_refuses_raises_its_errno(node):
    with pytest.raises(OSError) as caught:
        api.socket(node.path, socket.AF_PACKET, socket.SOCK_DGRAM)
    assert caught.value.errno == errno.EAFNOSUPPORT


# --- calls that answer at once

def test_bind_then_getsockname_round_trip(node):
    with api.socket(node.path, socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("10.0.1.2", 5000))
        (sock_id, address), call = node.layer.last("bind")
        assert address == SockAddr(AF_INET, "10.0.1.2", 5000)
        assert not call.nonblock
        assert sock.getsockname() == ("10.0.1.2", 5000)


def test_bind_to_the_empty_host_is_the_wildcard_and_names_come_from_the_run_directory(node):
    Path(node.path).with_name("hosts").write_text("127.0.0.1\tlocalhost\n10.0.2.1\th2\n")
    with api.socket(node.path, socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("", 0))
        assert node.layer.last("bind")[0][1] == SockAddr(AF_INET, "0.0.0.0", 0)
        sock.sendto(b"x", ("h2", 53))
        assert node.layer.last("sendmsg")[0][3] == SockAddr(AF_INET, "10.0.2.1", 53)


def test_errnos_become_the_stdlib_exceptions(node):
    with api.socket(node.path, socket.AF_INET, socket.SOCK_DGRAM) as sock:
        with pytest.raises(PermissionError) as caught:
            sock.bind(("0.0.0.0", 80))
        assert caught.value.errno == errno.EACCES and caught.value.strerror == os.strerror(errno.EACCES)
        with pytest.raises(ConnectionRefusedError):
            sock.connect(("10.0.2.1", 9))
        assert sock.connect_ex(("10.0.2.1", 9)) == errno.ECONNREFUSED
        assert sock.connect_ex(("10.0.2.1", 53)) == 0
        with pytest.raises(OSError) as caught:
            sock.getpeername()
        assert caught.value.errno == errno.ENOTCONN
        with pytest.raises(OSError) as caught:
            sock.setsockopt(99, 1, 1)
        assert caught.value.errno == errno.ENOPROTOOPT


def test_addresses_are_checked_as_the_stdlib_checks_them(node):
    with api.socket(node.path, socket.AF_INET, socket.SOCK_DGRAM) as sock:
        with pytest.raises(OverflowError):
            sock.bind(("0.0.0.0", 70000))
        with pytest.raises(TypeError):
            sock.connect("10.0.2.1")
    assert "bind" not in [name for name, _, _ in node.layer.calls]


def test_options_cross_as_bytes_in_both_forms_of_getsockopt(node):
    with api.socket(node.path, socket.AF_INET, socket.SOCK_DGRAM) as sock:
        assert sock.getsockopt(SOL_IP, IP_TTL) == 64
        assert node.layer.last("getsockopt")[0][1:] == (SOL_IP, IP_TTL, 4)
        assert sock.getsockopt(SOL_IP, IP_TTL, 6) == struct.pack("=i", 64) + b"ta"     # truncated to size
        sock.setsockopt(SOL_IP, IP_TTL, 7)
        assert node.layer.last("setsockopt")[0][1:] == (SOL_IP, IP_TTL, struct.pack("=i", 7))
        sock.setsockopt(SOL_IP, IP_TTL, b"\x05\x00\x00\x00")
        assert sock.getsockopt(SOL_IP, IP_TTL) == 5


def test_sendto_and_sendmsg_pass_data_flags_address_and_ancillary_data(node):
    with api.socket(node.path, socket.AF_INET, socket.SOCK_DGRAM) as sock:
        assert sock.sendto(b"hello", ("10.0.2.1", 53)) == 5
        assert node.layer.last("sendmsg")[0][1:] == (b"hello", 0, SockAddr(AF_INET, "10.0.2.1", 53), b"")
        ttl = struct.pack("=i", 3)
        assert sock.sendmsg([b"he", b"llo"], [(SOL_IP, IP_TTL, ttl)], 0, ("10.0.2.1", 53)) == 5
        assert node.layer.last("sendmsg")[0][4] == _cmsg(SOL_IP, IP_TTL, ttl)


def test_recvmsg_gives_the_address_and_control_messages_truncated_to_the_buffer(node):
    node.layer.deliver_after = 0.0
    with api.socket(node.path, socket.AF_INET, socket.SOCK_DGRAM) as sock:
        data, ancillary, flags, address = sock.recvmsg(100, socket.CMSG_SPACE(4))
        assert (data, ancillary, flags, address) == (
            b"payload", [(SOL_IP, IP_TTL, struct.pack("=i", 63))], 0, ("10.0.2.1", 4242))
        assert node.layer.last("recvmsg")[0][1:] == (100, 0, socket.CMSG_SPACE(4))
        _, ancillary, flags, _ = sock.recvmsg(100, 8)
        assert flags & socket.MSG_CTRUNC
        buffer = bytearray(4)
        assert sock.recvfrom_into(buffer) == (7, ("10.0.2.1", 4242))    # the layer's length
        assert buffer == b"payl"


def test_recvmsg_into_scatters_and_recv_of_the_error_queue_asks_the_node(node):
    node.layer.deliver_after = 0.0
    with api.socket(node.path, socket.AF_INET, socket.SOCK_DGRAM) as sock:
        first, second = bytearray(3), bytearray(10)
        length, ancillary, flags, address = sock.recvmsg_into([first, second])
        assert (length, bytes(first), bytes(second[:4]), address) == (7, b"pay", b"load", ("10.0.2.1", 4242))
        assert node.layer.last("recvmsg")[0][1] == 13
        assert sock.recv(100, socket.MSG_ERRQUEUE) == b"payload"
        assert node.layer.last("recvmsg")[0][2] == socket.MSG_ERRQUEUE


def test_sendmsg_without_address_or_ancillary_data_stays_native(node):
    with api.socket(node.path, socket.AF_INET, socket.SOCK_DGRAM) as sock:
        assert sock.sendmsg([b"na", b"tive"]) == 6
        assert node.layer.kernel_ends[1].recv(100) == b"native"
    assert "sendmsg" not in [name for name, _, _ in node.layer.calls]


def test_accept_passes_a_new_socket_with_its_peer(node):
    with api.socket(node.path, socket.AF_INET, socket.SOCK_STREAM) as server:
        server.bind(("0.0.0.0", 8000))
        server.listen()
        assert node.layer.last("listen")[0][1] == min(socket.SOMAXCONN, 128)
        conn, peer = server.accept()
        with conn:
            assert isinstance(conn, api.NodeSocket) and peer == ("10.0.2.1", 5555)
            assert node.layer.lookup(conn.fileno()) == 2
            conn.shutdown(socket.SHUT_WR)
            assert node.layer.last("shutdown")[0] == (2, socket.SHUT_WR)


def test_a_duplicate_names_the_same_socket(node):
    with api.socket(node.path, socket.AF_INET, socket.SOCK_DGRAM) as sock:
        with sock.dup() as copy:
            copy.bind(("10.0.1.2", 5001))
            assert node.layer.last("bind")[0][0] == 1
            assert sock.getsockname() == ("10.0.1.2", 5001)


# --- blocking calls

def test_a_blocking_recvfrom_is_answered_when_the_layer_resolves_it(node):
    node.layer.deliver_after = 0.2
    with api.socket(node.path, socket.AF_INET, socket.SOCK_DGRAM) as sock:
        assert sock.recvfrom(100) == (b"payload", ("10.0.2.1", 4242))
        assert node.server.counters["pending"] == 1
        _, call = node.layer.last("recvmsg")
        assert not call.nonblock and call.file == -1                    # let go once answered


def test_a_timeout_ends_a_blocking_call_with_timeouterror_and_cancels_it(node):
    with api.socket(node.path, socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.settimeout(0.1)
        with pytest.raises(TimeoutError, match="timed out"):
            sock.recvfrom(100)
        assert node.layer.cancelled == ["recvmsg"]
        assert node.server.counters["timed_out"] == 1
        node.layer.deliver_after = 0.0
        assert sock.recvfrom(100)[0] == b"payload"                    # the connection still serves


def test_a_non_blocking_call_never_waits(node):
    with api.socket(node.path, socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.setblocking(False)
        with pytest.raises(BlockingIOError):
            sock.recvfrom(100)
        assert node.layer.last("recvmsg")[1].nonblock
        with pytest.raises(BlockingIOError) as caught:
            sock.connect(("10.0.2.1", 7))
        assert caught.value.errno == errno.EINPROGRESS
        assert node.layer.waiting == []


def test_a_blocking_socket_with_o_nonblock_underneath_still_blocks(node):
    """A timeout sets O_NONBLOCK on the fd (the stdlib's way); the call is blocking all the same."""
    node.layer.deliver_after = 0.05
    with api.socket(node.path, socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.settimeout(5)
        assert not os.get_blocking(sock.fileno())
        assert sock.recvfrom(100)[0] == b"payload"
        assert not node.layer.last("recvmsg")[1].nonblock


def test_calls_of_two_threads_on_one_socket_do_not_wait_for_each_other(node):
    with api.socket(node.path, socket.AF_INET, socket.SOCK_DGRAM) as sock:
        results = []
        reader = threading.Thread(target=lambda: results.append(sock.recvfrom(100)))
        reader.start()
        wait_for(lambda: node.layer.waiting)
        assert sock.sendto(b"wake", ("10.0.2.1", 53)) == 4              # while recvfrom waits
        reader.join(timeout=5)
        assert results == [(b"late", ("10.0.2.1", 1))]


def test_closing_the_connection_cancels_the_pending_call(node):
    with api.socket(node.path, socket.AF_INET, socket.SOCK_DGRAM) as sock:
        conn = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        conn.connect(node.path)
        ancillary = [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", [sock.fileno()]))]
        conn.sendmsg([msgpack.packb({"op": "recvmsg", "size": 10, "flags": 0, "control_size": 0,
                                     "timeout": None})], ancillary)
        wait_for(lambda: node.layer.waiting)
        conn.close()
        wait_for(lambda: node.layer.cancelled == ["recvmsg"])
        assert node.layer.waiting[0].cancelled
        wait_for(lambda: len(node.server.connections) == 1)        # only the socket's own is left


def test_closing_the_socket_in_another_thread_ends_its_blocked_call(node):
    sock = api.socket(node.path, socket.AF_INET, socket.SOCK_DGRAM)
    errors = []

    def blocked() -> None:
        try:
            sock.recvfrom(100)
        except OSError as error:
            errors.append(error.errno)

    reader = threading.Thread(target=blocked)
    reader.start()
    wait_for(lambda: node.layer.waiting)
    sock.close()
    reader.join(timeout=5)
    assert errors == [errno.EBADF]
    wait_for(lambda: node.layer.cancelled == ["recvmsg"])


# --- the protocol's edges

def test_a_socket_the_node_does_not_know_is_ebadf_and_a_non_socket_enotsock(node):
    left, right = socket.socketpair()
    read_end, write_end = os.pipe()
    try:
        reply, _ = _raw_request(node.path, {"op": "getsockname", "timeout": None}, [left.fileno()])
        assert reply == {"ok": False, "errno": errno.EBADF}
        reply, _ = _raw_request(node.path, {"op": "getsockname", "timeout": None}, [read_end])
        assert reply == {"ok": False, "errno": errno.ENOTSOCK}
        reply, _ = _raw_request(node.path, {"op": "getsockname", "timeout": None})
        assert reply == {"ok": False, "errno": errno.EBADF}
    finally:
        for closable in (left, right):
            closable.close()
        os.close(read_end)
        os.close(write_end)


def test_unknown_ops_and_garbage_are_answered_not_fatal(node):
    assert _raw_request(node.path, {"op": "frobnicate"})[0] == {"ok": False, "errno": errno.ENOSYS}
    with socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET) as conn:
        conn.connect(node.path)
        conn.send(b"\xc1 not msgpack")
        assert msgpack.unpackb(conn.recv(100)) == {"ok": False, "errno": errno.EINVAL}
    assert _raw_request(node.path, {"op": "socket", "family": AF_INET, "type": "dgram"})[0]["errno"] == errno.EINVAL


def test_a_bug_in_the_layer_answers_eio_and_the_loop_goes_on(node, monkeypatch):
    monkeypatch.setattr(NapiScheduler, "reraise", False)
    with api.socket(node.path, socket.AF_INET, socket.SOCK_DGRAM) as sock:
        node.layer.bug = True
        with pytest.raises(OSError) as caught:
            sock.getsockname()
        assert caught.value.errno == errno.EIO
        node.layer.bug = False
        assert sock.getsockname() == ("0.0.0.0", 0)
    assert node.server.counters["errors"] == 1


def test_a_bug_in_the_layer_is_reraised_when_the_suite_asks(node):
    with api.socket(node.path, socket.AF_INET, socket.SOCK_DGRAM) as sock:
        node.layer.bug = True
        with pytest.raises(OSError) as caught:
            sock.getsockname()                      # answered before it propagates
        assert caught.value.errno == errno.EIO
    wait_for(lambda: node.errors)
    assert [type(error) for error in node.errors] == [RuntimeError]
    node.errors.clear()


@pytest.mark.parametrize("reraise", [False, True])
def test_a_bug_while_finishing_a_deferred_answers_once(node, monkeypatch, reraise):
    monkeypatch.setattr(NapiScheduler, "reraise", reraise)
    with api.socket(node.path, socket.AF_INET, socket.SOCK_DGRAM) as sock:
        node.layer.malformed = True
        with pytest.raises(OSError) as caught:
            sock.recvfrom(100)
        assert caught.value.errno == errno.EIO
        assert sock.getsockname() == ("0.0.0.0", 0)     # the same connection: no second reply in it
    assert node.server.counters["errors"] == 1
    if reraise:
        wait_for(lambda: node.errors)
        assert [type(error) for error in node.errors] == [TypeError]
        node.errors.clear()


def test_the_listener_op_hands_the_fd_to_the_front_end(node):
    read_end, write_end = os.pipe()
    try:
        api.hand_listener(node.path, read_end, pid=4321)
        wait_for(lambda: node.listeners)
        [(fd, pid)] = node.listeners
        assert pid == 4321 and fd != read_end
        assert os.fstat(fd).st_ino == os.fstat(read_end).st_ino          # the same open file
    finally:
        os.close(read_end)
        os.close(write_end)
    reply, _ = _raw_request(node.path, {"op": "listener", "pid": 1})       # no fd
    assert reply == {"ok": False, "errno": errno.EINVAL}


def test_a_node_that_is_not_there_is_enetdown(run_dir):
    with pytest.raises(OSError) as caught:
        api.socket(str(Path(run_dir) / "absent.sys"), socket.AF_INET, socket.SOCK_DGRAM)
    assert caught.value.errno == errno.ENETDOWN
    with pytest.raises(OSError) as caught:
        api.hand_listener(str(Path(run_dir) / "absent.sys"), 0, 1)
    assert caught.value.errno == errno.ENETDOWN and "absent.sys" in str(caught.value)


def test_a_node_that_goes_away_in_the_middle_of_a_call_is_enetdown(node):
    sock = api.socket(node.path, socket.AF_INET, socket.SOCK_DGRAM)
    errors = []

    def blocked() -> None:
        try:
            sock.recvfrom(100)
        except OSError as error:
            errors.append(error.errno)

    reader = threading.Thread(target=blocked)
    reader.start()
    wait_for(lambda: node.layer.waiting)
    node.stop()
    node.server.close()                             # what the node's death does to its sockets
    reader.join(timeout=5)
    assert errors == [errno.ENETDOWN]
    assert not os.path.exists(node.path)
    with pytest.raises(OSError) as caught:
        sock.getsockname()
    assert caught.value.errno == errno.ENETDOWN
    sock.close()


def test_close_unlinks_the_path_and_a_new_server_replaces_a_stale_one(node, run_dir):
    stale = Path(run_dir) / "h2.sys"
    with socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET) as leftover:
        leftover.bind(str(stale))                   # a crashed node's socket file
    loop = EventLoop()
    server = ApiServer(str(stale), node.layer, loop, lambda fd, pid: None)
    assert stale.is_socket()
    server.close()
    assert not stale.exists()
