"""The stream pump (nodes/sockfs_stream.py) against a fake TCP: two StreamSockets joined in memory.

`FakeTcp` is a StreamProtocol whose connections are byte queues: what one side sends is
readable on the other, up to `capacity` bytes waiting (its send room), so back-pressure is
real. The program is this test: its end of the pair is a plain socket here; `Sockfs` runs in a
real `bus.runtime.EventLoop` driven pass by pass. The far side is a StreamSocket of h2's layer
used directly.
"""
from __future__ import annotations

import errno
import ipaddress
import os
import select
import socket
import time

import pytest

from bus.runtime import EventLoop
from nodes.memnet import host_router_host
from nodes.socket import AF_INET, SOCK_STREAM, TCP_CLOSE, TCP_ESTABLISHED, TCP_LISTEN, TCP_SYN_SENT
from nodes.socket.constants import RCV_SHUTDOWN, SO_ERROR, SOL_SOCKET
from nodes.sockfs import Sockfs
from nodes.syscall_args import Call, Deferred, SockAddr
from nodes.wire.ipv4 import IPPROTO_TCP

H1, H2 = "10.0.1.10", "10.0.2.10"
MB = 1 << 20


def _ip(text: str) -> int:
    return int(ipaddress.IPv4Address(text))


class _Conn:
    def __init__(self, sock, node_ip: int) -> None:
        self.sock = sock
        self.inbox = bytearray()
        self.peer: _Conn | None = None
        self.node_ip = node_ip


class FakeTcp:
    """A StreamProtocol with in-memory connections (no segments, no timers)."""

    def __init__(self, capacity: int = 65536) -> None:
        self.capacity = capacity
        self.conns: dict[int, _Conn] = {}
        self.listeners: dict[int, object] = {}
        self.next_port = 40000
        self.closed: list = []      # sockets closed with FIN
        self.resets: list = []      # sockets closed with RST
        self.forced = 0             # bytes taken by send_forced
        self.node_ip: dict[int, int] = {}

    # StreamProtocol
    def get_port(self, sock, address, port):
        if not port:
            self.next_port += 1
            port = self.next_port
        return port

    def listen(self, sock):
        self.listeners[sock.port] = sock

    def connect(self, sock, address, port, now):
        if not sock.port:
            sock.port = self.get_port(sock, 0, 0)
        sock.source = self.node_ip[id(sock.layer)]
        sock.state = TCP_SYN_SENT

    def sendmsg(self, sock, data, flags, now):
        taken = min(len(data), self.send_room(sock))
        if not taken:
            raise OSError(errno.EAGAIN, "full")
        self._deliver(sock, data[:taken])
        return taken

    def send_forced(self, sock, data, now):
        self.forced += len(data)
        self._deliver(sock, data)
        return len(data)

    def _deliver(self, sock, data):
        peer = self.conns[id(sock)].peer
        peer.inbox += data
        peer.sock._wake()

    def recvmsg(self, sock, bufsize, flags, now):
        conn = self.conns.get(id(sock))
        if conn is None or not conn.inbox:
            if conn is None or conn.sock.shutdown_mask & RCV_SHUTDOWN:
                return b""
            raise OSError(errno.EAGAIN, "empty")
        data = bytes(conn.inbox[:bufsize])
        if not flags & socket.MSG_PEEK:
            del conn.inbox[:bufsize]
            if conn.peer is not None:
                conn.peer.sock._wake()              # room again
        return data

    def send_room(self, sock):
        conn = self.conns.get(id(sock))
        if conn is None or conn.peer is None:
            return 0
        return max(0, self.capacity - len(conn.peer.inbox))

    def recv_ready(self, sock):
        conn = self.conns.get(id(sock))
        return conn is not None and (bool(conn.inbox) or bool(sock.shutdown_mask & RCV_SHUTDOWN))

    def shutdown(self, sock, how, now):
        conn = self.conns.get(id(sock))
        if conn is not None and how in (socket.SHUT_WR, socket.SHUT_RDWR) and conn.peer is not None:
            self._fin(conn.peer.sock)

    def close(self, sock, now):
        if self.listeners.get(sock.port) is sock:
            del self.listeners[sock.port]
        conn = self.conns.pop(id(sock), None)
        if conn is None or conn.peer is None:
            return
        if conn.inbox or sock.linger_timeout == 0:
            self.resets.append(sock)
            self.reset(conn.peer.sock)
        else:
            self.closed.append(sock)
            self._fin(conn.peer.sock)
        conn.peer.peer = None

    # the test's hands
    def _fin(self, sock):
        sock.shutdown_mask |= RCV_SHUTDOWN
        sock._wake()

    def reset(self, sock):
        """An RST arrives for `sock` (tcp_reset)."""
        sock.sk_err = errno.ECONNRESET
        sock.shutdown_mask = 3
        sock.set_state(TCP_CLOSE)

    def establish(self, client):
        """The handshake of `client` completes: a child in the listener's accept queue."""
        listener = self.listeners[client.peer[1]]
        child = listener.new_child(client.peer[0], client.peer[1], client.source, client.port)
        ours, theirs = _Conn(client, client.source), _Conn(child, client.peer[0])
        ours.peer, theirs.peer = theirs, ours
        self.conns[id(client)], self.conns[id(child)] = ours, theirs
        child.set_state(TCP_ESTABLISHED)
        client.set_state(TCP_ESTABLISHED)
        assert listener.enqueue_accept(child)
        return child

    def refuse(self, client, code=errno.ECONNREFUSED):
        client.sk_err = code
        client.set_state(TCP_CLOSE)


class World:
    def __init__(self, capacity: int = 65536) -> None:
        self.net, self.h1, self.r1, self.h2 = host_router_host()
        self.tcp = FakeTcp(capacity)
        for stack, address in ((self.h1, H1), (self.h2, H2)):
            stack.sockets.register_protosw(SOCK_STREAM, IPPROTO_TCP, self.tcp)
            self.tcp.node_ip[id(stack.sockets)] = _ip(address)
        self.loop = EventLoop()
        self.sockfs = Sockfs(self.h1.sockets, time.monotonic, self.loop.add_reader, self.loop.remove_reader,
                             self.loop.call_later)
        self.loop.add_end_of_pass(self.sockfs.service)
        self.ids = 0
        self.ends: list[socket.socket] = []

    def call(self, end: socket.socket | None = None, nonblock: bool = False) -> Call:
        self.ids += 1
        call = Call(self.ids, os.getpid(), "test", nonblock=nonblock)
        if end is not None:
            call._file = end.fileno()
        return call

    def socket(self) -> tuple[int, socket.socket]:
        sock_id, fd = self.sockfs.socket(AF_INET, SOCK_STREAM, 0, self.call())
        end = socket.socket(fileno=fd)
        self.ends.append(end)
        return sock_id, end

    def sock(self, sock_id: int):
        return self.sockfs.files[sock_id].sock

    def step(self, passes: int = 3) -> None:
        for _ in range(passes):
            self.loop.run_once(0)

    def until(self, condition, what: str, timeout: float = 5.0):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self.loop.run_once(1)
            value = condition()
            if value:
                return value
        raise AssertionError(f"timed out waiting for {what}")

    def remote_listener(self, port: int = 80):
        listener = self.h2.sockets.socket(AF_INET, SOCK_STREAM, 0)
        listener.bind((H2, port))
        listener.listen(8)
        return listener

    def connected(self, port: int = 80):
        """A program socket connected (blocking connect) to a remote listener: (sock_id, end, remote)."""
        listener = self.remote_listener(port)
        sock_id, end = self.socket()
        deferred = self.sockfs.connect(sock_id, SockAddr(AF_INET, H2, port), self.call(end))
        assert isinstance(deferred, Deferred) and not deferred.done
        self.tcp.establish(self.sock(sock_id))
        self.until(lambda: deferred.done, "the connect")
        assert deferred._outcome == (True, None)
        remote = listener.accept()
        return sock_id, end, remote

    def close(self) -> None:
        for end in self.ends:
            end.close()
        self.sockfs.close()


@pytest.fixture
def world():
    world = World()
    yield world
    world.close()


def polled(end: socket.socket) -> int:
    poller = select.poll()
    poller.register(end, select.POLLIN | select.POLLOUT)
    events = poller.poll(0)
    return events[0][1] if events else 0


def remote_read_all(world: World, remote, total: int) -> bytes:
    got = bytearray()

    def more():
        while True:
            try:
                data = remote.recvmsg(65536, 0.0).data
            except BlockingIOError:
                return len(got) >= total
            if not data:
                return True
            got.extend(data)
    world.until(more, f"{total} bytes at the remote")
    return bytes(got)


# ---------------------------------------------------------------------------------------------
# program -> TCP

def test_program_bytes_reach_tcp_and_a_full_send_buffer_pushes_back(world):
    sock_id, end, remote = world.connected()
    end.setblocking(False)
    payload = os.urandom(MB)
    sent = 0
    while True:                                 # the remote reads nothing: everything fills
        try:
            sent += end.send(payload[sent:sent + 65536])
        except BlockingIOError:
            world.step()
            try:
                sent += end.send(payload[sent:sent + 65536])
            except BlockingIOError:
                break
    assert sent < MB                            # the program's write would block
    assert len(world.tcp.conns[id(remote)].inbox) == world.tcp.capacity    # TCP took what its room allowed
    assert world.sockfs.files[sock_id].watch_mask & select.EPOLLIN == 0      # and our end is not read
    got = bytearray()
    while len(got) < MB:
        world.step()
        while True:
            try:
                data = remote.recvmsg(1 << 16, 0.0).data
            except BlockingIOError:
                break
            got.extend(data)
        if sent < MB:
            try:
                sent += end.send(payload[sent:sent + 65536])
            except BlockingIOError:
                pass
    assert bytes(got) == payload


def test_program_close_sends_what_the_pair_holds_beyond_the_send_buffer_then_fin(world):
    sock_id, end, remote = world.connected()
    payload = os.urandom(200_000)               # more than the fake's 64 KiB of room
    end.setblocking(False)
    sent = end.send(payload)
    world.ends.remove(end)
    end.close()
    world.until(lambda: sock_id not in world.sockfs.files, "the release")
    assert len(world.tcp.closed) == 1
    assert world.tcp.forced > 0
    data = remote_read_all(world, remote, sent)
    assert data == payload[:sent]
    assert remote.recvmsg(10, 0.0).data == b""  # then FIN


def test_program_close_with_unread_bytes_resets(world):
    sock_id, end, remote = world.connected()
    remote.sendmsg(b"never read", None, 0.0)
    world.until(lambda: polled(end) & select.POLLIN, "bytes in the pair")
    world.ends.remove(end)
    end.close()
    world.until(lambda: sock_id not in world.sockfs.files, "the release")
    assert world.tcp.resets and remote.sk_err == errno.ECONNRESET


def test_shutdown_wr_sends_every_byte_before_the_fin_and_native_writes_then_fail(world):
    sock_id, end, remote = world.connected()
    payload = os.urandom(150_000)
    end.setblocking(False)
    sent = end.send(payload)
    world.sockfs.shutdown(sock_id, socket.SHUT_WR, world.call(end))
    assert remote_read_all(world, remote, sent) == payload[:sent]
    assert remote.recvmsg(10, 0.0).data == b""
    with pytest.raises(BrokenPipeError):
        end.send(b"late")
    remote.sendmsg(b"still readable", None, 0.0)    # half-close: the other direction goes on
    world.until(lambda: polled(end) & select.POLLIN, "the answer")
    assert end.recv(100) == b"still readable"
    assert sock_id in world.sockfs.files


# ---------------------------------------------------------------------------------------------
# TCP -> program

def test_tcp_bytes_reach_the_program_with_a_full_pair_pushing_back(world):
    world.tcp.capacity = 32768
    sock_id, end, remote = world.connected()
    payload = os.urandom(MB)
    sent = 0
    for _ in range(200):                        # the program reads nothing
        try:
            sent += remote.sendmsg(payload[sent:sent + 65536], None, 0.0)
        except BlockingIOError:
            pass
        world.step(1)
    assert sent < MB and world.tcp.send_room(remote) == 0
    assert world.sockfs.files[sock_id].watch_mask & select.EPOLLOUT    # waiting for the pair
    end.setblocking(False)
    got = bytearray()
    while len(got) < MB:
        try:
            sent += remote.sendmsg(payload[sent:sent + 65536], None, 0.0) if sent < MB else 0
        except BlockingIOError:
            pass
        world.step(1)
        try:
            got.extend(end.recv(1 << 17))
        except BlockingIOError:
            pass
    assert bytes(got) == payload


def test_peer_fin_is_eof_after_the_last_byte_and_peek_and_waitall_are_native(world):
    sock_id, end, remote = world.connected()
    remote.sendmsg(b"hello world", None, 0.0)
    remote.shutdown(socket.SHUT_WR, 0.0)
    world.until(lambda: world.sockfs.files[sock_id].eof_sent, "EOF in the pair")
    assert end.recv(5, socket.MSG_PEEK) == b"hello"
    assert end.recv(11, socket.MSG_WAITALL) == b"hello world"
    assert end.recv(10) == b""
    end.send(b"half-closed reply")              # our direction is still open
    assert remote_read_all(world, remote, 17) == b"half-closed reply"


def test_a_reset_shows_after_the_bytes_as_econnreset_and_so_error(world):
    sock_id, end, remote = world.connected()
    remote.sendmsg(b"last words", None, 0.0)
    world.step()
    world.tcp.reset(world.sock(sock_id))
    world.until(lambda: world.sockfs.files[sock_id].dead, "the error shown")
    assert end.recv(100) == b"last words"
    with pytest.raises(ConnectionResetError):
        end.recv(100)
    with pytest.raises(BrokenPipeError):
        end.send(b"x")
    value = world.sockfs.getsockopt(sock_id, SOL_SOCKET, SO_ERROR, 4, world.call(end))
    assert int.from_bytes(value, "little") == errno.ECONNRESET
    world.ends.remove(end)
    end.close()
    world.until(lambda: sock_id not in world.sockfs.files, "the reaper's release", timeout=5)


def test_the_trapped_recvmsg_and_sendmsg_of_a_stream_use_the_pair(world):
    sock_id, end, remote = world.connected()
    end.send(b"first ")
    assert world.sockfs.sendmsg(sock_id, b"second", 0, SockAddr(AF_INET, "1.2.3.4", 5), b"",
                                world.call(end)) == 6     # tcp_sendmsg ignores the address
    assert remote_read_all(world, remote, 12) == b"first second"
    result = world.sockfs.recvmsg(sock_id, 100, 0, 0, world.call(end))
    assert isinstance(result, Deferred)         # nothing yet: a blocking recvfrom waits
    remote.sendmsg(b"answer", None, 0.0)
    world.until(lambda: result.done, "the pending recvfrom")
    assert result._outcome[1].data == b"answer" and result._outcome[1].address is None
    with pytest.raises(BlockingIOError):
        world.sockfs.recvmsg(sock_id, 100, 0, 0, world.call(end, nonblock=True))


# ---------------------------------------------------------------------------------------------
# connect

def test_nonblocking_connect_is_not_writable_until_established(world):
    world.remote_listener(81)
    sock_id, end = world.socket()
    end.setblocking(False)
    with pytest.raises(BlockingIOError) as raised:
        world.sockfs.connect(sock_id, SockAddr(AF_INET, H2, 81), world.call(end, nonblock=True))
    assert raised.value.errno == errno.EINPROGRESS
    world.step()
    assert not polled(end) & select.POLLOUT     # curl and asyncio wait for POLLOUT
    with pytest.raises(BlockingIOError):
        end.send(b"too early")
    world.tcp.establish(world.sock(sock_id))
    world.until(lambda: polled(end) & select.POLLOUT, "writable")
    assert world.sockfs.getsockopt(sock_id, SOL_SOCKET, SO_ERROR, 4, world.call(end)) == bytes(4)
    assert world.sockfs.getpeername(sock_id, world.call(end)) == (AF_INET, H2, 81)
    assert world.sockfs.getsockname(sock_id, world.call(end))[1] == H1
    end.send(b"after")
    remote = world.tcp.listeners[81].accept()
    assert remote_read_all(world, remote, 5) == b"after"       # the filler never leaks


def test_nonblocking_connect_refused_is_writable_with_so_error(world):
    sock_id, end = world.socket()
    with pytest.raises(BlockingIOError):
        world.sockfs.connect(sock_id, SockAddr(AF_INET, H2, 82), world.call(end, nonblock=True))
    world.tcp.refuse(world.sock(sock_id))
    world.until(lambda: polled(end) & select.POLLOUT, "writable")
    value = world.sockfs.getsockopt(sock_id, SOL_SOCKET, SO_ERROR, 4, world.call(end))
    assert int.from_bytes(value, "little") == errno.ECONNREFUSED
    assert end.getsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF) > 100_000   # restored


def test_blocking_connect_refused_fails_with_the_error(world):
    sock_id, end = world.socket()
    deferred = world.sockfs.connect(sock_id, SockAddr(AF_INET, H2, 83), world.call(end))
    world.tcp.refuse(world.sock(sock_id))
    world.until(lambda: deferred.done, "the connect's answer")
    assert deferred._outcome == (False, errno.ECONNREFUSED)


# ---------------------------------------------------------------------------------------------
# accept

def test_a_listener_polls_readable_while_connections_wait(world):
    sock_id, end = world.socket()
    world.sockfs.bind(sock_id, SockAddr(AF_INET, "0.0.0.0", 8080), world.call(end))
    world.sockfs.listen(sock_id, 5, world.call(end))
    assert world.sock(sock_id).state == TCP_LISTEN
    with pytest.raises(BlockingIOError):
        world.sockfs.accept(sock_id, world.call(end, nonblock=True))
    clients = []
    for _ in range(2):
        client = world.h2.sockets.socket(AF_INET, SOCK_STREAM, 0)
        client.connect((H1, 8080), 0.0)
        world.tcp.establish(client)
        clients.append(client)
    world.until(lambda: polled(end) & select.POLLIN, "the listener readable")
    child_id, child_fd, peer = world.sockfs.accept(sock_id, world.call(end, nonblock=True))
    assert peer == (AF_INET, H2, clients[0].port)
    assert polled(end) & select.POLLIN          # one more waits
    child2_id, child2_fd, _ = world.sockfs.accept(sock_id, world.call(end, nonblock=True))
    assert not polled(end) & select.POLLIN      # the marker is taken back
    child = socket.socket(fileno=child_fd)
    world.ends.extend([child, socket.socket(fileno=child2_fd)])
    clients[0].sendmsg(b"to the child", None, 0.0)
    world.until(lambda: polled(child) & select.POLLIN, "bytes for the child")
    assert child.recv(100) == b"to the child"
    pending = world.sockfs.accept(sock_id, world.call(end))            # blocking: waits
    assert isinstance(pending, Deferred) and not pending.done
    late = world.h2.sockets.socket(AF_INET, SOCK_STREAM, 0)
    late.connect((H1, 8080), 0.0)
    world.tcp.establish(late)
    world.until(lambda: pending.done, "the blocked accept")
    world.ends.append(socket.socket(fileno=pending._outcome[1][1]))
    assert not polled(end) & select.POLLIN


def test_shut_rd_makes_native_reads_return_zero(world):
    sock_id, end, remote = world.connected()
    world.sockfs.shutdown(sock_id, socket.SHUT_RD, world.call(end))
    assert end.recv(10) == b""
    end.send(b"writes go on")
    assert remote_read_all(world, remote, 12) == b"writes go on"


def test_a_blocking_connect_keeps_the_end_unwritable_if_the_call_goes_away(world):
    """Python polls for POLLOUT after a connect interrupted by a signal (bpo-23618): still connecting."""
    world.remote_listener(84)
    sock_id, end = world.socket()
    deferred = world.sockfs.connect(sock_id, SockAddr(AF_INET, H2, 84), world.call(end))
    deferred._cancelled()                       # the signal: the call is gone, the handshake goes on
    world.step()
    assert not polled(end) & select.POLLOUT
    world.tcp.establish(world.sock(sock_id))
    world.until(lambda: polled(end) & select.POLLOUT, "writable once established")


def test_after_shut_wr_and_the_peers_fin_the_programs_close_is_found_by_the_reaper(world):
    sock_id, end, remote = world.connected()
    world.sockfs.shutdown(sock_id, socket.SHUT_WR, world.call(end))
    remote.shutdown(socket.SHUT_WR, 0.0)
    world.until(lambda: world.sockfs.files[sock_id].eof_sent, "the peer's EOF in the pair")
    assert end.recv(10) == b""
    world.step()
    assert sock_id in world.sockfs.files        # both directions shut: not a close
    world.ends.remove(end)
    end.close()
    world.until(lambda: sock_id not in world.sockfs.files, "the release", timeout=5)
    assert world.tcp.closed


def test_closing_a_listener_with_connections_waiting_releases_it(world):
    sock_id, end = world.socket()
    world.sockfs.listen(sock_id, 5, world.call(end))
    port = world.sock(sock_id).port
    client = world.h2.sockets.socket(AF_INET, SOCK_STREAM, 0)
    client.connect((H1, port), 0.0)
    world.tcp.establish(client)
    world.until(lambda: polled(end) & select.POLLIN, "the marker")
    listener = world.sock(sock_id)
    world.ends.remove(end)
    end.close()                                 # the marker unread
    world.until(lambda: sock_id not in world.sockfs.files, "the release")
    assert listener.closed and world.sockfs.counters["stream_resets"] == 0
    assert port not in world.tcp.listeners


def test_shutdown_of_an_unconnected_socket_is_enotconn_and_writes_then_fail(world):
    sock_id, end = world.socket()
    with pytest.raises(OSError) as raised:
        world.sockfs.shutdown(sock_id, socket.SHUT_WR, world.call(end))
    assert raised.value.errno == errno.ENOTCONN
    with pytest.raises(OSError) as raised:      # Linux: EPIPE; the placeholder's unix_stream_sendmsg: ENOTCONN
        end.send(b"x")
    assert raised.value.errno == errno.ENOTCONN


# ---------------------------------------------------------------------------------------------
# before connect()/listen(): the placeholder (nodes/sockfs_file.py Placeholders)

def test_a_new_socket_is_unconnected_until_connect_which_connects_it_in_place(world):
    listener = world.remote_listener(85)
    sock_id, end = world.socket()
    assert polled(end) == select.POLLOUT | select.POLLHUP      # as an unconnected TCP socket (tcp_poll)
    with pytest.raises(OSError) as raised:
        end.recv(1, socket.MSG_DONTWAIT)        # what ssl's SSLSocket._create accepts (not EAGAIN)
    assert raised.value.errno == errno.EINVAL
    with pytest.raises(OSError) as raised:
        world.sockfs.recvmsg(sock_id, 10, 0, 0, world.call(end))
    assert raised.value.errno == errno.ENOTCONN
    inode, copy = os.fstat(end.fileno()).st_ino, end.dup()
    world.ends.append(copy)
    deferred = world.sockfs.connect(sock_id, SockAddr(AF_INET, H2, 85), world.call(end))
    assert os.fstat(end.fileno()).st_ino == inode and world.sockfs.lookup(copy.fileno()) == sock_id
    assert not polled(end) & select.POLLOUT     # connecting
    world.tcp.establish(world.sock(sock_id))
    world.until(lambda: deferred.done, "the connect")
    copy.sendall(b"via a dup made before connect")
    assert remote_read_all(world, listener.accept(), 29) == b"via a dup made before connect"


def test_a_listener_is_a_unix_listener_recv_einval_unwritable(world):
    sock_id, end = world.socket()
    world.sockfs.listen(sock_id, 5, world.call(end))
    assert polled(end) == 0                     # inet_csk_listen_poll: nothing waiting
    with pytest.raises(OSError) as raised:
        end.recv(1, socket.MSG_DONTWAIT)
    assert raised.value.errno == errno.EINVAL
    world.sockfs.listen(sock_id, 16, world.call(end))          # again: the backlog only
    assert world.sock(sock_id).state == TCP_LISTEN


def test_placeholders_and_listeners_closed_unconnected_are_released(world):
    """No EOF: sock_diag says the socket is gone (the port at once on bind's EADDRINUSE: a scenario test)."""
    placeholder, end = world.socket()
    listener, listening_end = world.socket()
    world.sockfs.listen(listener, 5, world.call(listening_end))
    kept, _ = world.socket()
    for closed in (end, listening_end):
        world.ends.remove(closed)
        closed.close()
    world.until(lambda: placeholder not in world.sockfs.files and listener not in world.sockfs.files,
                "the releases", timeout=2)
    assert kept in world.sockfs.files
