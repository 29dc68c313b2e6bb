"""In-process sockets on real nodes (`node.socket()`, nodes/api.py): UDP across a router with the
emulated addresses, asyncio on a NodeSocket, errno paths, timeouts, a node's death.

two_lans: h1 10.0.1.10 on lan1 (a switch) -- r1 -- lan2 (a hub, 2 ms + 5 ms) -- h2 10.0.2.10.
"""
from __future__ import annotations

import asyncio
import errno
import os
import selectors
import socket
import struct
import threading
from socket import AF_INET, IPPROTO_ICMP, SOCK_DGRAM, SOL_IP, SOL_SOCKET, SO_BROADCAST

import pytest

from control.emulation import Emulation
from nodes import api

from tests.waiting import wait_for

from .helpers import private_run_base, topology

IP_TTL, IP_RECVTTL = 2, 12
H1, H2 = "10.0.1.10", "10.0.2.10"


@pytest.fixture(scope="module")
def net():
    with private_run_base(), Emulation(topology("two_lans"), name="scn-api") as net:
        yield net


def _h1_socket(net, type_: int = SOCK_DGRAM) -> api.NodeSocket:
    """h1's socket made from the syscall socket's path (what node.socket() does)."""
    return api.socket(os.path.join(net.plan.run_dir, "h1.sys"), AF_INET, type_)


@pytest.mark.timeout(60)
def test_udp_across_a_router_carries_the_emulated_addresses(net):
    with net["h2"].socket(AF_INET, SOCK_DGRAM) as server, _h1_socket(net) as client:
        server.bind(("", 5000))
        server.settimeout(10)
        client.settimeout(10)
        assert client.sendto(b"hello", ("h2", 5000)) == 5
        data, source = server.recvfrom(100)
        assert data == b"hello"
        assert source == (H1, client.getsockname()[1])
        assert client.getsockname()[0] in ("0.0.0.0", H1)
        server.sendto(b"back", source)
        assert client.recvfrom(100) == (b"back", (H2, 5000))


@pytest.mark.timeout(60)
def test_a_recvfrom_blocked_without_timeout_is_woken_by_the_datagram(net):
    with net["h2"].socket(AF_INET, SOCK_DGRAM) as server, _h1_socket(net) as client:
        server.bind(("", 5003))
        received = []
        reader = threading.Thread(target=lambda: received.append(server.recvfrom(100)))
        reader.start()
        wait_for(lambda: server._busy)                       # its request is with the node
        client.sendto(b"wake up", (H2, 5003))
        reader.join(timeout=10)
        assert received == [(b"wake up", (H1, client.getsockname()[1]))]


@pytest.mark.timeout(60)
def test_a_connected_socket_sends_and_receives_natively(net):
    with net["h2"].socket(AF_INET, SOCK_DGRAM) as server, _h1_socket(net) as client:
        server.bind((H2, 5001))
        server.settimeout(10)
        client.settimeout(10)
        client.connect((H2, 5001))
        assert client.getpeername() == (H2, 5001)
        client.send(b"native")                                  # no request: the socketpair
        data, source = server.recvfrom(100)
        assert (data, source) == (b"native", client.getsockname())
        server.sendto(b"native back", source)
        assert client.recv(100) == b"native back"


@pytest.mark.timeout(60)
def test_a_selector_sees_a_datagram_arrive_on_a_node_socket(net):
    with net["h2"].socket(AF_INET, SOCK_DGRAM) as server, _h1_socket(net) as client, \
            selectors.DefaultSelector() as selector:
        client.bind(("", 0))
        client.setblocking(False)
        selector.register(client, selectors.EVENT_READ)
        server.sendto(b"ready?", (H1, client.getsockname()[1]))
        assert [key.fileobj for key, _ in selector.select(timeout=10)] == [client]
        assert client.recvfrom(100) == (b"ready?", (H2, server.getsockname()[1]))


@pytest.mark.timeout(60)
def test_a_ping_socket_gets_the_echo_reply_of_h2(net):
    with api.socket(os.path.join(net.plan.run_dir, "h1.sys"), AF_INET, SOCK_DGRAM, IPPROTO_ICMP) as ping:
        ping.settimeout(10)
        ping.sendto(struct.pack("!BBHHH", 8, 0, 0, 0, 1) + b"payload", ("h2", 0))
        reply, source = ping.recvfrom(100)
        assert source[0] == H2
        assert reply[0] == 0 and struct.unpack("!H", reply[6:8])[0] == 1 and reply[8:] == b"payload"


@pytest.mark.timeout(60)
def test_the_ttl_across_one_router_shows_in_ip_recvttl(net):
    with net["h2"].socket(AF_INET, SOCK_DGRAM) as server, _h1_socket(net) as client:
        server.bind(("", 5002))
        server.setsockopt(SOL_IP, IP_RECVTTL, 1)
        assert server.getsockopt(SOL_IP, IP_RECVTTL) == 1
        server.settimeout(10)
        client.sendto(b"ttl?", (H2, 5002))
        data, ancillary, _flags, source = server.recvmsg(100, socket.CMSG_SPACE(4))
        assert data == b"ttl?" and source[0] == H1
        assert ancillary == [(SOL_IP, IP_TTL, struct.pack("=i", 63))]


@pytest.mark.timeout(60)
def test_port_unreachable_is_econnrefused_on_a_connected_socket(net):
    with _h1_socket(net) as client:
        client.settimeout(10)
        client.connect((H2, 9))                                 # nothing listens on h2:9
        client.send(b"anyone?")
        with pytest.raises(ConnectionRefusedError):
            client.recvfrom(100)


@pytest.mark.timeout(60)
def test_errnos_of_the_node_reach_the_caller(net):
    with _h1_socket(net) as first, _h1_socket(net) as second:
        with pytest.raises(OSError) as caught:
            first.bind((H2, 6000))                              # not an address of h1
        assert caught.value.errno == errno.EADDRNOTAVAIL
        first.bind((H1, 6000))
        with pytest.raises(OSError) as caught:
            second.bind((H1, 6000))
        assert caught.value.errno == errno.EADDRINUSE
        with pytest.raises(OSError) as caught:
            second.getpeername()
        assert caught.value.errno == errno.ENOTCONN
        with pytest.raises(OSError) as caught:
            second.setsockopt(SOL_IP, 0x7FFF, 1)
        assert caught.value.errno == errno.ENOPROTOOPT
        with pytest.raises(PermissionError):
            second.sendto(b"all", ("10.0.1.255", 6001))        # broadcast without SO_BROADCAST
        second.setsockopt(SOL_SOCKET, SO_BROADCAST, 1)
        assert second.sendto(b"all", ("10.0.1.255", 6001)) == 3


@pytest.mark.timeout(60)
def test_a_blocking_recvfrom_times_out_and_a_non_blocking_one_does_not_wait(net):
    with _h1_socket(net) as sock:
        sock.bind(("", 0))
        sock.settimeout(0.2)
        with pytest.raises(TimeoutError, match="timed out"):
            sock.recvfrom(100)
        sock.setblocking(False)
        with pytest.raises(BlockingIOError):
            sock.recvfrom(100)


@pytest.mark.timeout(60)
def test_an_asyncio_datagram_echo_server_on_a_node_socket(net):
    class Echo(asyncio.DatagramProtocol):
        def connection_made(self, transport):
            self.transport = transport

        def datagram_received(self, data, address):
            self.transport.sendto(data.upper(), address)

    async def scenario():
        loop = asyncio.get_running_loop()
        server_sock = net["h2"].socket(AF_INET, SOCK_DGRAM)
        server_sock.bind(("", 7000))
        transport, _ = await loop.create_datagram_endpoint(Echo, sock=server_sock)
        try:
            assert transport.get_extra_info("sockname") == ("0.0.0.0", 7000)
            with _h1_socket(net) as client:
                client.setblocking(False)
                replies = []
                for word in (b"one", b"two"):
                    await loop.sock_sendto(client, word, (H2, 7000))
                    replies.append(await asyncio.wait_for(loop.sock_recvfrom(client, 100), 10))
                return replies
        finally:
            transport.close()

    assert asyncio.run(scenario()) == [(b"ONE", (H2, 7000)), (b"TWO", (H2, 7000))]


@pytest.mark.timeout(90)
def test_a_dead_node_is_enetdown_and_a_restarted_one_serves_new_sockets():
    with private_run_base(), Emulation(topology("two_lans"), name="scn-api-crash") as net:
        old = net["h2"].socket(AF_INET, SOCK_DGRAM)
        old.bind(("", 5000))
        net["h2"].kill()
        with pytest.raises(OSError) as caught:
            old.getsockname()
        assert caught.value.errno == errno.ENETDOWN
        with pytest.raises(OSError) as caught:
            net["h2"].socket(AF_INET, SOCK_DGRAM)
        assert caught.value.errno == errno.ENETDOWN
        net["h2"].restart()
        with pytest.raises(OSError) as caught:
            old.getsockname()                                   # the old kernel's socket
        assert caught.value.errno == errno.EBADF
        old.close()
        with net["h2"].socket(AF_INET, SOCK_DGRAM) as server, _h1_socket(net) as client:
            server.bind(("", 5000))                             # the port was released with the node
            server.settimeout(10)
            client.sendto(b"again", (H2, 5000))
            assert server.recvfrom(100) == (b"again", (H1, client.getsockname()[1]))
