"""Real programs' TCP sockets under the trap, on an in-memory network (nodes/memnet.py): the
stream pump (nodes/sockfs_stream.py) over the real TCP (nodes/tcp).

As tests/integration/test_sockfs.py: this process plays h1's kernel (Sockfs and the trapped
front end in a real EventLoop), the network advances in step with the loop; h2's stream
sockets are driven here directly.
"""
from __future__ import annotations

import hashlib

import pytest

from nodes.socket import AF_INET, SOCK_STREAM
from tests.conftest import require_trap
from tests.integration.test_sockfs import Node

pytestmark = pytest.mark.timeout(90)


@pytest.fixture
def node():
    require_trap()
    node = Node()
    yield node
    node.close()


def listener(node: Node, port: int):
    sock = node.h2.sockets.socket(AF_INET, SOCK_STREAM, 0)
    sock.bind(("0.0.0.0", port))
    sock.listen(8)
    return sock


class Peer:
    """One accepted connection on h2, read to EOF, answered, closed: driven from `until`."""

    def __init__(self, node: Node, server) -> None:
        self.node, self.server = node, server
        self.conn = None
        self.received = bytearray()
        self.eof = False

    def poll(self) -> bool:
        now = self.node.net.now
        if self.conn is None:
            if not self.server.accept_queue:
                return False
            self.conn = self.server.accept()
        while not self.eof:
            try:
                data = self.conn.recvmsg(1 << 16, now).data
            except BlockingIOError:
                return False
            if not data:
                self.eof = True
            self.received.extend(data)
        return True


def test_a_program_sends_a_megabyte_over_tcp_and_reads_the_answer_to_eof(node):
    server = listener(node, 7000)
    peer = Peer(node, server)
    process = node.start("""
        import hashlib, socket
        data = bytes(range(256)) * 4096
        s = socket.create_connection(("10.0.2.10", 7000), timeout=30)   # non-blocking connect + poll inside
        s.sendall(data)
        s.shutdown(socket.SHUT_WR)
        answer = b"".join(iter(lambda: s.recv(65536), b""))
        print(hashlib.sha256(data).hexdigest() == answer.decode(), s.getpeername()[1])
    """)
    node.until(peer.poll, "the megabyte and its EOF at h2")
    assert bytes(peer.received) == bytes(range(256)) * 4096
    digest = hashlib.sha256(peer.received).hexdigest().encode()
    assert peer.conn.sendmsg(digest, None, node.net.now) == len(digest)
    peer.conn.close(node.net.now)
    out, _ = node.finish(process)
    assert out.split() == ["True", "7000"]


def test_a_program_receives_a_megabyte_byte_exact(node):
    server = listener(node, 7001)
    payload = bytes(range(251)) * 4200          # ~1 MB, not a multiple of any buffer
    process = node.start("""
        import hashlib, socket
        s = socket.create_connection(("10.0.2.10", 7001))
        got = bytearray()
        while True:
            data = s.recv(100000)
            if not data:
                break
            got += data
        print(len(got), hashlib.sha256(got).hexdigest())
    """)
    conn = node.until(lambda: server.accept_queue and server.accept(), "the connection")
    sent = 0

    def push() -> bool:
        nonlocal sent
        while sent < len(payload):
            try:
                sent += conn.sendmsg(payload[sent:sent + 65536], None, node.net.now)
            except BlockingIOError:
                return False
        conn.close(node.net.now)
        return True
    node.until(push, "h2's megabyte taken by TCP")
    out, _ = node.finish(process)
    assert out.split() == [str(len(payload)), hashlib.sha256(payload).hexdigest()]


def test_nonblocking_connect_select_and_so_error_then_a_refused_port(node):
    server = listener(node, 7002)
    peer = Peer(node, server)
    process = node.start("""
        import errno, select, socket
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        s.setblocking(False)
        print(errno.errorcode[s.connect_ex(("10.0.2.10", 7002))])
        _, writable, _ = select.select([], [s], [], 20)
        print(bool(writable), s.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR), s.getpeername()[1])
        s.send(b"after connect")
        s.close()
        r = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        r.setblocking(False)
        r.connect_ex(("10.0.2.10", 7999))
        select.select([], [r], [], 20)
        print(errno.errorcode[r.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)])
        b = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        try:
            b.connect(("10.0.2.10", 7999))
        except ConnectionRefusedError:
            print("refused")
    """)
    out, _ = node.finish(process)
    assert out.split("\n")[:4] == ["EINPROGRESS", "True 0 7002", "ECONNREFUSED", "refused"]
    node.until(peer.poll, "the bytes sent after connect")
    assert bytes(peer.received) == b"after connect"


def test_a_selectors_server_accepts_and_echoes_and_sees_the_peer_close(node):
    process = node.start("""
        import selectors, socket
        server = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        server.bind(("0.0.0.0", 8000))
        server.listen()
        server.setblocking(False)
        print("listening", flush=True)
        selector = selectors.DefaultSelector()
        selector.register(server, selectors.EVENT_READ)
        done = False
        while not done:
            for key, _ in selector.select(20):
                if key.fileobj is server:
                    conn, peer = server.accept()
                    conn.setblocking(False)
                    selector.register(conn, selectors.EVENT_READ)
                    print("from", peer[0], flush=True)
                else:
                    data = key.fileobj.recv(4096)
                    if data:
                        key.fileobj.send(data.upper())
                    else:
                        print("peer closed", flush=True)
                        key.fileobj.close()
                        done = True
    """)
    node.until(lambda: any(s.state == 10 for s in node.h1.sockets.sockets), "the listener")
    client = node.h2.sockets.socket(AF_INET, SOCK_STREAM, 0)
    client.connect(("10.0.1.10", 8000), node.net.now)
    node.until(lambda: client.state == 1, "the handshake")
    client.sendmsg(b"ping", None, node.net.now)

    def answer():
        try:
            return client.recvmsg(100, node.net.now).data
        except BlockingIOError:
            return None
    assert node.until(answer, "the echo") == b"PING"
    client.close(node.net.now)
    out, _ = node.finish(process)
    assert out.split("\n")[:3] == ["listening", "from 10.0.2.10", "peer closed"]


def test_a_reset_reaches_the_program_after_the_last_bytes(node):
    server = listener(node, 7003)
    process = node.start("""
        import socket
        s = socket.create_connection(("10.0.2.10", 7003))
        s.sendall(b"unread by the peer")
        print(s.recv(100).decode(), flush=True)
        try:
            print(s.recv(100))
        except ConnectionResetError:
            print("ECONNRESET", s.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR) in (0, 104))
    """)
    conn = node.until(lambda: server.accept_queue and server.accept(), "the connection")
    node.until(lambda: conn.proto.conn(conn).readable > 0, "the program's bytes at h2")
    conn.sendmsg(b"bye", None, node.net.now)
    node.net.run(0.01)
    conn.close(node.net.now)                     # unread bytes: RST
    out, _ = node.finish(process)
    assert out.split("\n")[:2] == ["bye", "ECONNRESET True"]


def test_a_program_that_closes_right_after_writing_loses_no_byte(node):
    server = listener(node, 7004)
    peer = Peer(node, server)
    process = node.start("""
        import socket
        s = socket.create_connection(("10.0.2.10", 7004))
        s.sendall(bytes(range(256)) * 768)       # 192 KiB: more than TCP takes before h2 reads
        s.close()
        print("closed")
    """)
    out, _ = node.finish(process)
    assert out == "closed\n"
    node.until(peer.poll, "every byte, then EOF, at h2")
    assert bytes(peer.received) == bytes(range(256)) * 768
    assert node.sockfs.counters["stream_out"] == 768 * 256
