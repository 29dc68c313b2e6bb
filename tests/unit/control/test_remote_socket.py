"""The socket relay and its proxy (control/remote_socket.py) over this machine's own loopback.

A `SocketRelay` whose opener makes the stdlib's sockets (Linux's stack, 127.0.0.1) instead of a
node's: the relay's machinery (ids, bounded waits, errors as data, connect resumed, close_all) and
`RemoteSocket`'s stdlib interface are checked against Linux itself as the oracle, errno for errno.
Every call crosses `pickle` both ways, as it crosses Ray. The same relay on real nodes is
tests/scenarios/test_remote_socket.py.
"""
from __future__ import annotations

import errno
import hashlib
import io
import os
import pickle
import socket
import threading
import time
from socket import AF_INET, SOCK_DGRAM, SOCK_STREAM

import pytest

from control.remote_socket import RemoteSocket, SocketRelay, error_reply, raise_socket_reply
from tests.waiting import wait_for

pytestmark = pytest.mark.timeout(60)

LOCAL = "127.0.0.1"


class Harness:
    """A relay of stdlib sockets and the `call` a RemoteSocket is given, counting pending replies."""

    def __init__(self, max_wait: float = 0.2) -> None:
        self.opened: list[socket.socket] = []
        self.relay = SocketRelay("/nonexistent", opener=self._open, max_wait=max_wait)
        self.calls: list[str] = []
        self.pending = 0

    def _open(self, path: str, family: int, type_: int, proto: int) -> socket.socket:
        assert path == "/nonexistent/n1.sys"
        sock = socket.socket(family, type_, proto)
        self.opened.append(sock)
        return sock

    def call(self, method: str, **kwargs):
        self.calls.append(method)
        reply = getattr(self.relay, method)(**pickle.loads(pickle.dumps(kwargs)))
        reply = pickle.loads(pickle.dumps(reply))
        if isinstance(reply, dict) and reply.get("pending"):
            self.pending += 1
        return reply

    def socket(self, family: int = AF_INET, type_: int = SOCK_STREAM) -> RemoteSocket:
        return RemoteSocket(self.call, "n1", family, type_)


@pytest.fixture
def harness():
    harness = Harness()
    yield harness
    harness.relay.close_all()


def closed_port() -> int:
    with socket.socket() as probe:
        probe.bind((LOCAL, 0))
        return probe.getsockname()[1]


def raised(action) -> BaseException:
    with pytest.raises(Exception) as caught:
        action()
    return caught.value


def test_udp_echo_between_two_remote_sockets(harness):
    with harness.socket(AF_INET, SOCK_DGRAM) as server, harness.socket(AF_INET, SOCK_DGRAM) as client:
        assert (server.family, server.type, server.proto) == (socket.AF_INET, socket.SOCK_DGRAM, 0)
        server.bind((LOCAL, 0))
        server.settimeout(10)
        client.settimeout(10)
        assert client.sendto(b"hello", server.getsockname()) == 5
        data, source = server.recvfrom(100)
        assert (data, source) == (b"hello", (LOCAL, client.getsockname()[1]))
        assert server.sendto(bytearray(b"back"), 0, source) == 4
        buffer = bytearray(10)
        assert client.recvfrom_into(buffer) == (4, server.getsockname())
        assert bytes(buffer[:4]) == b"back"


def test_tcp_carries_a_megabyte_byte_exact_both_ways(harness):
    payload = os.urandom(1 << 20)
    with harness.socket() as listener, harness.socket() as client:
        listener.bind((LOCAL, 0))
        listener.listen()
        client.settimeout(30)
        client.connect(listener.getsockname())
        conn, peer = listener.accept()
        with conn:
            assert peer == client.getsockname() and conn.getpeername() == peer
            assert conn.gettimeout() is None and isinstance(conn, RemoteSocket)
            sender = threading.Thread(target=client.sendall, args=(memoryview(payload),))
            sender.start()
            received = bytearray()
            while len(received) < len(payload):
                chunk = conn.recv(1 << 18)
                assert chunk
                received += chunk
            sender.join(30)
            assert hashlib.sha256(received).digest() == hashlib.sha256(payload).digest()
            conn.sendall(payload[::-1])
            conn.shutdown(socket.SHUT_WR)
            back, view = bytearray(len(payload)), None
            view, got = memoryview(back), 0
            while got < len(back):
                count = client.recv_into(view[got:])
                assert count
                got += count
            assert back == payload[::-1] and client.recv(10) == b""


def test_makefile_reads_lines_and_text(harness):
    with harness.socket() as listener, harness.socket() as client:
        listener.bind((LOCAL, 0))
        listener.listen(1)
        client.connect(listener.getsockname())
        conn, _ = listener.accept()
        with conn, conn.makefile("rw", encoding="ascii", newline="") as text:
            client.sendall(b"GET / HTTP/1.0\r\nHost: x\r\n\r\n")
            assert text.readline() == "GET / HTTP/1.0\r\n" and text.readline() == "Host: x\r\n"
            text.write("HTTP/1.0 200 OK\r\n")
            text.flush()
            assert client.recv(100) == b"HTTP/1.0 200 OK\r\n"
        # the file held the socket open; closing both releases it at the relay
        wait_for(lambda: len(harness.relay) == 2, timeout=5)


def test_timeouts_are_the_stdlibs(harness):
    with harness.socket(AF_INET, SOCK_DGRAM) as udp, harness.socket() as listener:
        udp.bind((LOCAL, 0))
        udp.settimeout(0.3)
        started = time.monotonic()
        error = raised(lambda: udp.recvfrom(10))
        assert type(error) is socket.timeout and str(error) == "timed out"
        assert 0.3 <= time.monotonic() - started < 5
        assert harness.pending >= 2                  # 0.3 s in waits of at most 0.2 s
        udp.setblocking(False)
        assert udp.getblocking() is False and udp.gettimeout() == 0.0
        assert raised(lambda: udp.recv(10)).errno == errno.EAGAIN
        assert type(raised(lambda: udp.recv(10))) is BlockingIOError
        listener.bind((LOCAL, 0))
        listener.listen()
        listener.settimeout(0.05)
        assert type(raised(listener.accept)) is TimeoutError
        for bad in (-1, float("nan")):
            assert type(raised(lambda: udp.settimeout(bad))) is ValueError
        assert type(raised(lambda: udp.settimeout("1"))) is TypeError


def test_a_blocking_recv_is_served_by_bounded_waits_until_the_datagram_comes():
    harness = Harness(max_wait=0.05)
    try:
        with harness.socket(AF_INET, SOCK_DGRAM) as server, harness.socket(AF_INET, SOCK_DGRAM) as client:
            server.bind((LOCAL, 0))
            assert server.gettimeout() is None
            received = []
            reader = threading.Thread(target=lambda: received.append(server.recvfrom(100)))
            reader.start()
            wait_for(lambda: harness.pending >= 3, timeout=10)   # no agent thread held for ever
            client.sendto(b"at last", server.getsockname())
            reader.join(10)
            assert received == [(b"at last", (LOCAL, client.getsockname()[1]))]
    finally:
        harness.relay.close_all()


def test_errnos_and_exception_types_are_linuxs(harness):
    port = closed_port()
    with socket.socket() as local, harness.socket() as remote:
        expected = raised(lambda: local.connect((LOCAL, port)))
        got = raised(lambda: remote.connect((LOCAL, port)))
        assert type(got) is type(expected) is ConnectionRefusedError and got.errno == errno.ECONNREFUSED
    with socket.socket() as local, harness.socket() as remote:
        assert remote.connect_ex((LOCAL, port)) == local.connect_ex((LOCAL, port)) == errno.ECONNREFUSED
    with socket.socket() as holder, harness.socket() as remote, socket.socket() as local:
        holder.bind((LOCAL, 0))
        holder.listen()
        expected = raised(lambda: local.bind(holder.getsockname()))
        got = raised(lambda: remote.bind(holder.getsockname()))
        assert (type(got), got.errno) == (type(expected), expected.errno) == (OSError, errno.EADDRINUSE)
    with socket.socket() as local, harness.socket() as remote:
        for action in (lambda s: s.getpeername(), lambda s: s.recv(1), lambda s: s.send(b"x"),
                       lambda s: s.shutdown(socket.SHUT_RDWR), lambda s: s.bind(("10.255.255.1", 0)),
                       lambda s: s.getsockopt(socket.SOL_SOCKET, 12345)):
            expected, got = raised(lambda: action(local)), raised(lambda: action(remote))
            assert (type(got), got.errno) == (type(expected), expected.errno), (got, expected)
        assert raised(lambda: remote.getpeername()).errno == errno.ENOTCONN
    with harness.socket(AF_INET, SOCK_DGRAM) as remote:
        assert type(raised(lambda: remote.sendto(b"x", (LOCAL, 70000)))) is OverflowError
        assert type(raised(lambda: remote.sendto(b"x", "nowhere"))) is TypeError
        assert type(raised(lambda: remote.sendto(b"x", ("no.such.name.invalid", 1)))) is socket.gaierror
        remote.setsockopt(socket.SOL_SOCKET, socket.SO_BROADCAST, 1)
        assert remote.getsockopt(socket.SOL_SOCKET, socket.SO_BROADCAST) == 1
        assert len(remote.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4)) == 4


def test_connect_non_blocking_then_resumed(harness):
    with harness.socket() as listener, harness.socket() as client:
        listener.bind((LOCAL, 0))
        listener.listen()
        client.setblocking(False)
        code = client.connect_ex(listener.getsockname())
        assert code in (0, errno.EINPROGRESS)
        client.setblocking(True)
        wait_for(lambda: client.connect_ex(listener.getsockname()) == errno.EISCONN, timeout=10)
        conn, peer = listener.accept()
        with conn:
            assert peer == client.getsockname()


def test_close_from_another_thread_ends_a_blocked_recv_with_ebadf(harness):
    udp = harness.socket(AF_INET, SOCK_DGRAM)
    udp.bind((LOCAL, 0))
    failures = []

    def receive() -> None:
        try:
            udp.recv(10)
        except OSError as error:
            failures.append(error)

    reader = threading.Thread(target=receive)
    reader.start()
    wait_for(lambda: harness.pending >= 1, timeout=10)
    udp.close()
    reader.join(10)
    assert not reader.is_alive() and [error.errno for error in failures] == [errno.EBADF]
    assert raised(lambda: udp.getsockname()).errno == errno.EBADF
    udp.close()                                      # twice: nothing
    assert harness.calls.count("close") == 1


def test_it_has_no_local_descriptor(harness):
    with harness.socket() as sock:
        error = raised(sock.fileno)
        assert isinstance(error, io.UnsupportedOperation) and "no local file descriptor" in str(error)
        assert "asyncio" in str(error)
        assert "node=n1" in repr(sock) and "[closed]" not in repr(sock)
    assert "[closed]" in repr(sock)


def test_close_all_leaves_nothing_open(harness):
    sockets = [harness.socket(AF_INET, SOCK_DGRAM) for _ in range(3)] + [harness.socket()]
    sockets[-1].bind((LOCAL, 0))
    sockets[-1].listen()
    assert len(harness.relay) == 4
    assert harness.relay.close_all() == 4
    assert len(harness.relay) == 0 and all(sock.fileno() == -1 for sock in harness.opened)
    assert raised(lambda: sockets[0].sendto(b"x", (LOCAL, 9))).errno == errno.EBADF
    for sock in sockets:
        sock.close()


def test_an_unreachable_machine_is_enetdown():
    def lost(method: str, **kwargs):
        raise ConnectionError("the actor died")
    error = raised(lambda: RemoteSocket(lost, "n1", AF_INET, SOCK_DGRAM))
    assert error.errno == errno.ENETDOWN and "the machine of n1" in str(error) and "actor died" in str(error)
    harness = Harness()
    sock = harness.socket(AF_INET, SOCK_DGRAM)
    sock._call = lost                                # the agent goes away under an open socket
    assert raised(lambda: sock.getsockname()).errno == errno.ENETDOWN
    sock.close()                                     # its machine took it: nothing to do, no error
    assert "[closed]" in repr(sock)


def test_node_names_are_checked():
    relay = SocketRelay("/run", nodes=["h1"], opener=lambda *a: pytest.fail("opened"))
    for name, kind in (("../etc/x", "ValueError"), (".hidden", "ValueError"), ("h2", "LookupError")):
        assert relay.create(name, AF_INET, SOCK_DGRAM, 0)["error"] == kind
    assert relay.op(99, "recv", (1,))["errno"] == errno.EBADF
    assert relay.op(99, "recv", (1,))["error"] == "OSError"


def test_error_replies_rebuild_the_exception():
    for error in (ConnectionRefusedError(errno.ECONNREFUSED, "Connection refused"), socket.timeout("timed out"),
                  socket.gaierror(socket.EAI_NONAME, "Name or service not known"), OverflowError("port"),
                  OSError(errno.ENETDOWN, "Network is down: the node is not running")):
        with pytest.raises(type(error)) as caught:
            raise_socket_reply(pickle.loads(pickle.dumps(error_reply(error))))
        assert (caught.value.errno if isinstance(error, OSError) else None) == \
            (error.errno if isinstance(error, OSError) else None)
        assert str(caught.value) == str(error)
    with pytest.raises(RuntimeError, match="ZeroDivisionError"):
        raise_socket_reply(error_reply(ZeroDivisionError("x")))
