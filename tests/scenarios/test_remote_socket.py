"""Sockets on a node of another machine (control/remote_socket.py), on real nodes.

A SocketRelay built from a single-machine emulation's run directory, as a cluster's host
agent builds one from its own, holds real `nodes.api` sockets; RemoteSocket reaches it through
a plain `call` that pickles both ways, as the controller does through Ray. What a user sees must
be what `node.socket()` gives on one machine: the emulated addresses and names, TCP byte for
byte, the stdlib's timeouts, the node's errnos (checked against a local node.socket() doing the
same), nothing left once the relay is closed. The last test does it all through Ray: a cluster
emulation's `net["h2"].socket()` for a node placed on another machine.

two_lans: h1 10.0.1.10 on lan1 (a switch) -- r1 -- lan2 (a hub, 2 ms + 5 ms) -- h2 10.0.2.10.
"""
from __future__ import annotations

import errno
import hashlib
import os
import pickle
import socket
import threading
import time
from socket import AF_INET, SOCK_DGRAM, SOCK_STREAM, SOL_IP, SOL_SOCKET, SO_BROADCAST

import pytest

from control.emulation import Emulation
from control.remote_socket import RemoteSocket, SocketRelay
from tests.waiting import wait_for

from .helpers import private_run_base, topology

pytestmark = pytest.mark.timeout(120)

H1, H2 = "10.0.1.10", "10.0.2.10"


@pytest.fixture(scope="module")
def net():
    with private_run_base(), Emulation(topology("two_lans"), name="scn-rsock") as net:
        yield net


class Relayed:
    """A relay on the emulation's run directory and the `call` its RemoteSockets get (pickled both ways)."""

    def __init__(self, net: Emulation, max_wait: float = 1.0) -> None:
        self.relay = SocketRelay(net.plan.run_dir, nodes=list(net.topology.nodes), max_wait=max_wait)
        self.pending = 0

    def call(self, method: str, **kwargs):
        reply = pickle.loads(pickle.dumps(getattr(self.relay, method)(**pickle.loads(pickle.dumps(kwargs)))))
        if isinstance(reply, dict) and reply.get("pending"):
            self.pending += 1
        return reply

    def socket(self, node: str, type_: int = SOCK_DGRAM) -> RemoteSocket:
        return RemoteSocket(self.call, node, AF_INET, type_)


@pytest.fixture
def relayed(net):
    relayed = Relayed(net)
    yield relayed
    relayed.relay.close_all()


def raised(action) -> BaseException:
    with pytest.raises(Exception) as caught:
        action()
    return caught.value


def test_udp_echo_across_the_router_with_the_emulated_names_and_addresses(relayed):
    with relayed.socket("h2") as server, relayed.socket("h1") as client:
        server.bind(("", 5000))
        server.settimeout(10)
        client.settimeout(10)
        assert client.sendto(b"hello", ("h2", 5000)) == 5          # h1's hosts file, on h1's machine
        data, source = server.recvfrom(100)
        assert (data, source) == (b"hello", (H1, client.getsockname()[1]))
        server.sendto(data.upper(), source)
        assert client.recvfrom(100) == (b"HELLO", (H2, 5000))
        client.connect((H2, 9))                                    # nothing listens on h2:9
        client.send(b"anyone?")
        assert type(raised(lambda: client.recvfrom(100))) is ConnectionRefusedError   # ICMP port unreachable


def test_tcp_carries_a_megabyte_byte_exact_between_a_remote_and_a_local_socket(net, relayed):
    payload = os.urandom(1 << 20)
    digest = hashlib.sha256(payload).hexdigest()

    def drain(sock, size: int) -> str:
        received = hashlib.sha256()
        count = 0
        while count < size:
            chunk = sock.recv(1 << 16)
            assert chunk, f"EOF after {count} bytes"
            received.update(chunk)
            count += len(chunk)
        return received.hexdigest()

    # a remote client, a local server
    with net["h2"].socket(AF_INET, SOCK_STREAM) as listener, relayed.socket("h1", SOCK_STREAM) as client:
        listener.bind(("", 8080))
        listener.listen()
        listener.settimeout(30)
        client.settimeout(30)
        client.connect(("h2", 8080))
        conn, peer = listener.accept()
        with conn:
            conn.settimeout(30)
            assert peer == (H1, client.getsockname()[1]) and client.getpeername() == (H2, 8080)
            sender = threading.Thread(target=client.sendall, args=(payload,))
            sender.start()
            assert drain(conn, len(payload)) == digest
            sender.join(30)
    # a remote server, a local client
    with relayed.socket("h2", SOCK_STREAM) as listener, net["h1"].socket(AF_INET, SOCK_STREAM) as client:
        listener.bind(("", 8081))
        listener.listen()
        listener.settimeout(30)
        client.settimeout(30)
        client.connect((H2, 8081))
        conn, peer = listener.accept()
        with conn:
            conn.settimeout(30)
            assert peer == client.getsockname()
            sender = threading.Thread(target=client.sendall, args=(payload,))
            sender.start()
            assert drain(conn, len(payload)) == digest
            sender.join(30)
            conn.sendall(b"done")
            conn.shutdown(socket.SHUT_WR)
            assert client.recv(10) == b"done" and client.recv(10) == b""


def test_timeouts_are_the_stdlibs(relayed):
    with relayed.socket("h1") as udp, relayed.socket("h1", SOCK_STREAM) as listener:
        udp.bind(("", 0))
        udp.settimeout(0.3)
        started = time.monotonic()
        error = raised(lambda: udp.recvfrom(100))
        assert type(error) is socket.timeout and str(error) == "timed out"
        assert 0.3 <= time.monotonic() - started < 10
        udp.setblocking(False)
        assert type(raised(lambda: udp.recvfrom(100))) is BlockingIOError
        listener.bind(("", 8082))
        listener.listen()
        listener.settimeout(0.1)
        assert type(raised(listener.accept)) is socket.timeout


def test_a_blocking_recv_is_served_by_bounded_waits(net):
    relayed = Relayed(net, max_wait=0.05)
    try:
        with relayed.socket("h2") as server, relayed.socket("h1") as client:
            server.bind(("", 5004))
            received = []
            reader = threading.Thread(target=lambda: received.append(server.recvfrom(100)))
            reader.start()
            wait_for(lambda: relayed.pending >= 3, timeout=10)     # the agent's threads are not held
            client.sendto(b"wake up", (H2, 5004))
            reader.join(10)
            assert received == [(b"wake up", (H1, client.getsockname()[1]))]
    finally:
        relayed.relay.close_all()


def test_errnos_are_those_of_a_local_node_socket(net, relayed):
    cases = [
        ("bind to an address of another node", SOCK_DGRAM, lambda s: s.bind((H2, 6000))),
        ("getpeername unconnected", SOCK_DGRAM, lambda s: s.getpeername()),
        ("an unknown option", SOCK_DGRAM, lambda s: s.setsockopt(SOL_IP, 0x7FFF, 1)),
        ("broadcast without SO_BROADCAST", SOCK_DGRAM, lambda s: s.sendto(b"all", ("10.0.1.255", 6001))),
        ("connect to a closed port", SOCK_STREAM, lambda s: s.connect((H2, 9))),
        ("recv unconnected", SOCK_STREAM, lambda s: s.recv(1)),
        ("listen on a datagram socket", SOCK_DGRAM, lambda s: s.listen()),
        ("a port out of range", SOCK_DGRAM, lambda s: s.sendto(b"x", (H2, 70000))),
    ]
    for what, kind, action in cases:
        with net["h1"].socket(AF_INET, kind) as local, relayed.socket("h1", kind) as remote:
            local.settimeout(10)
            remote.settimeout(10)
            expected, got = raised(lambda: action(local)), raised(lambda: action(remote))
            assert (type(got), getattr(got, "errno", None)) == (type(expected), getattr(expected, "errno", None)), what
    assert type(expected) is OverflowError
    with relayed.socket("h1") as first, relayed.socket("h1") as second, net["h1"].socket(AF_INET, SOCK_DGRAM) as local:
        first.bind((H1, 6000))
        assert raised(lambda: second.bind((H1, 6000))).errno == raised(lambda: local.bind((H1, 6000))).errno \
            == errno.EADDRINUSE
        assert second.connect_ex((H2, 9)) == 0                     # UDP: no handshake
        second.setsockopt(SOL_SOCKET, SO_BROADCAST, 1)
        assert second.getsockopt(SOL_SOCKET, SO_BROADCAST) == 1


def test_a_node_without_a_kernel_here_is_enetdown(net):
    relay = SocketRelay(net.plan.run_dir)
    error = raised(lambda: RemoteSocket(lambda method, **kwargs: getattr(relay, method)(**kwargs), "h9"))
    assert error.errno == errno.ENETDOWN and "not running" in str(error)


def test_close_all_leaves_nothing_open(net):
    relayed = Relayed(net)
    sockets = [relayed.socket("h1") for _ in range(3)]
    sockets[0].bind(("", 6100))
    listener = relayed.socket("h2", SOCK_STREAM)
    listener.bind(("", 8090))
    listener.listen()
    assert relayed.relay.close_all() == 4 and len(relayed.relay) == 0
    assert raised(lambda: sockets[0].getsockname()).errno == errno.EBADF

    def rebind(node: str, kind: int, port: int) -> bool:
        with net[node].socket(AF_INET, kind) as sock:
            try:
                sock.bind(("", port))
            except OSError as error:
                assert error.errno == errno.EADDRINUSE
                return False
            return True
    wait_for(lambda: rebind("h1", SOCK_DGRAM, 6100) and rebind("h2", SOCK_STREAM, 8090), timeout=10)


# -- through Ray: a cluster emulation's node.socket() for a node of another machine ---------------

CLUSTER_TOPOLOGY = """\
name: rsock
segments:
  lan1: {kind: switch}
placement:
  h1: m0
  h2: m1
nodes:
  h1: {kind: host, interfaces: {eth0: {segment: lan1, ip: 10.0.0.1/24}}}
  h2: {kind: host, interfaces: {eth0: {segment: lan1, ip: 10.0.0.2/24}}}
"""


@pytest.mark.timeout(300)
def test_node_socket_of_a_node_on_another_machine_goes_through_its_agent(tmp_path):
    from .ray_cluster import ray_cluster

    path = tmp_path / "rsock.yaml"
    path.write_text(CLUSTER_TOPOLOGY, encoding="utf-8")
    payload = os.urandom(1 << 20)
    with private_run_base(), ray_cluster(2) as cluster:
        with Emulation(str(path), name="rsock", cluster=cluster.address) as net:
            assert not net.cluster.is_local("h2") and net.cluster.is_local("h1")
            with net["h2"].socket(AF_INET, SOCK_DGRAM) as server, net["h1"].socket(AF_INET, SOCK_DGRAM) as client:
                assert isinstance(server, RemoteSocket)
                server.bind(("", 5000))
                server.settimeout(20)
                client.settimeout(20)
                client.sendto(b"hello", ("h2", 5000))
                data, source = server.recvfrom(100)
                assert (data, source) == (b"hello", ("10.0.0.1", client.getsockname()[1]))
                server.sendto(b"back", source)
                assert client.recvfrom(100) == (b"back", ("10.0.0.2", 5000))
                server.settimeout(0.2)
                assert type(raised(lambda: server.recvfrom(100))) is socket.timeout
            with net["h2"].socket(AF_INET, SOCK_STREAM) as listener, net["h1"].socket(AF_INET, SOCK_STREAM) as client:
                listener.bind(("", 8080))
                listener.listen()
                listener.settimeout(30)
                client.settimeout(30)
                client.connect(("h2", 8080))
                conn, peer = listener.accept()
                with conn:
                    conn.settimeout(30)
                    assert peer == client.getsockname()
                    sender = threading.Thread(target=client.sendall, args=(payload,))
                    sender.start()
                    received = bytearray()
                    while len(received) < len(payload):
                        chunk = conn.recv(1 << 20)
                        assert chunk
                        received += chunk
                    sender.join(30)
                    assert bytes(received) == payload
                with net["h2"].socket(AF_INET, SOCK_STREAM) as refused:
                    assert type(raised(lambda: refused.connect(("h1", 9)))) is ConnectionRefusedError
            left_open = net["h2"].socket(AF_INET, SOCK_DGRAM)      # the agent closes it at teardown
            left_open.bind(("", 5001))
        assert raised(lambda: left_open.getsockname()).errno == errno.ENETDOWN
        left_open.close()                                          # its machine took it: nothing to do
