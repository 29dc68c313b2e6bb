"""socket(): inet_create's errno rules, and SOCK_STREAM's socket-layer half waiting for its transport."""
import errno

import pytest

from nodes.memnet import host_router_host
from nodes.socket import (
    AF_INET,
    AF_INET6,
    IPPROTO_ICMPV6,
    IPPROTO_RAW,
    POLLIN,
    SO_ACCEPTCONN,
    SO_DOMAIN,
    SO_PROTOCOL,
    SO_TYPE,
    SOCK_CLOEXEC,
    SOCK_DGRAM,
    SOCK_NONBLOCK,
    SOCK_RAW,
    SOCK_SEQPACKET,
    SOCK_STREAM,
    SOL_SOCKET,
    TCP_CLOSE,
    TCP_ESTABLISHED,
    TCP_LISTEN,
    StreamProtocol,
)
from nodes.wire.ipv4 import IPPROTO_ICMP, IPPROTO_TCP, IPPROTO_UDP


def errno_of(call, *args, **kwargs):
    with pytest.raises(OSError) as error:
        call(*args, **kwargs)
    return error.value.errno


@pytest.fixture
def layer():
    net, h1, r1, h2 = host_router_host()
    return h1.sockets


def test_an_unknown_family_is_eafnosupport(layer):
    assert errno_of(layer.socket, 1, SOCK_DGRAM, 0) == errno.EAFNOSUPPORT  # AF_UNIX is not the node's


def test_a_type_out_of_range_is_einval(layer):
    assert errno_of(layer.socket, AF_INET, 11, 0) == errno.EINVAL


def test_a_type_without_protocols_is_esocktnosupport(layer):
    assert errno_of(layer.socket, AF_INET, SOCK_SEQPACKET, 0) == errno.ESOCKTNOSUPPORT


def test_a_protocol_foreign_to_the_type_is_eprotonosupport(layer):
    assert errno_of(layer.socket, AF_INET, SOCK_DGRAM, IPPROTO_TCP) == errno.EPROTONOSUPPORT


def test_a_protocol_out_of_range_is_einval(layer):
    assert errno_of(layer.socket, AF_INET, SOCK_DGRAM, 263) == errno.EINVAL


def test_raw_with_protocol_zero_is_eprotonosupport(layer):
    assert errno_of(layer.socket, AF_INET, SOCK_RAW, 0) == errno.EPROTONOSUPPORT


def test_raw_needs_cap_net_raw(layer):
    assert errno_of(layer.socket, AF_INET, SOCK_RAW, IPPROTO_ICMP, privileged=False) == errno.EPERM


def test_protocol_zero_picks_the_types_default_and_flags_are_accepted(layer):
    sock = layer.socket(AF_INET, SOCK_DGRAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0)
    assert (sock.getsockopt(SOL_SOCKET, SO_TYPE), sock.getsockopt(SOL_SOCKET, SO_PROTOCOL),
            sock.getsockopt(SOL_SOCKET, SO_DOMAIN)) == (SOCK_DGRAM, IPPROTO_UDP, AF_INET)


def test_ping_and_raw_sockets_are_offered(layer):
    assert layer.socket(AF_INET, SOCK_DGRAM, IPPROTO_ICMP).kind == "icmp"
    assert layer.socket(AF_INET, SOCK_RAW, IPPROTO_RAW).kind == "raw"


def test_ipv6_offers_udp_only_icmpv6_is_eprotonosupport(layer):
    assert layer.socket(AF_INET6, SOCK_DGRAM, 0).kind == "udp"
    assert errno_of(layer.socket, AF_INET6, SOCK_DGRAM, IPPROTO_ICMPV6) == errno.EPROTONOSUPPORT


def test_stream_without_a_transport_is_esocktnosupport(layer):
    # inet_create over an empty inetsw[SOCK_STREAM] (a layer TCP has not registered with)
    layer.stream.clear()
    assert errno_of(layer.socket, AF_INET, SOCK_STREAM, 0) == errno.ESOCKTNOSUPPORT


def test_a_stack_registers_tcp_as_its_stream_transport(layer):
    sock = layer.socket(AF_INET, SOCK_STREAM, 0)
    assert sock.protocol == IPPROTO_TCP and sock.kind == "tcp"
    assert errno_of(layer.socket, AF_INET, SOCK_STREAM, IPPROTO_UDP) == errno.EPROTONOSUPPORT


class _Ports(StreamProtocol):
    """A stand-in for TCP's port table only: the socket layer's half is what is under test."""

    def __init__(self):
        self.listening = []
        self.next_port = 40000

    def get_port(self, sock, address, port):
        if not port:
            self.next_port += 1
            port = self.next_port
        return port

    def listen(self, sock):
        self.listening.append(sock)

    def shutdown(self, sock, how, now):
        pass

    def close(self, sock, now):
        if sock in self.listening:
            self.listening.remove(sock)

    def connect(self, sock, address, port, now):
        raise OSError(errno.ECONNREFUSED, "refused")


def stream_layer():
    net, h1, r1, h2 = host_router_host()
    ports = _Ports()
    h2.sockets.register_protosw(SOCK_STREAM, IPPROTO_TCP, ports)
    return h2.sockets, ports


def test_a_registered_transport_makes_stream_sockets():
    layer, ports = stream_layer()
    sock = layer.socket(AF_INET, SOCK_STREAM, 0)
    assert sock.protocol == IPPROTO_TCP and sock.state == TCP_CLOSE


def test_listen_autobinds_and_sets_the_state():
    layer, ports = stream_layer()
    sock = layer.socket(AF_INET, SOCK_STREAM, 0)
    sock.listen(5)
    assert sock.state == TCP_LISTEN and sock.getsockname() == ("0.0.0.0", 40001)
    assert sock.getsockopt(SOL_SOCKET, SO_ACCEPTCONN) == 1
    assert ports.listening == [sock]


def test_accept_before_listen_is_einval_and_on_an_empty_queue_eagain():
    layer, ports = stream_layer()
    sock = layer.socket(AF_INET, SOCK_STREAM, 0)
    assert errno_of(sock.accept) == errno.EINVAL
    sock.listen(1)
    with pytest.raises(BlockingIOError):
        sock.accept()


def test_the_accept_queue_holds_backlog_plus_one_then_refuses():
    layer, ports = stream_layer()
    listener = layer.socket(AF_INET, SOCK_STREAM, 0)
    listener.listen(1)
    children = [layer.socket(AF_INET, SOCK_STREAM, 0) for _ in range(3)]
    assert [listener.enqueue_accept(child) for child in children] == [True, True, False]  # sk_acceptq_is_full
    assert listener.poll() & POLLIN
    assert listener.accept() is children[0]


def test_listen_backlog_is_capped_at_somaxconn():
    layer, ports = stream_layer()
    sock = layer.socket(AF_INET, SOCK_STREAM, 0)
    sock.listen(10**6)
    assert sock.backlog == 4096


def test_shutdown_rd_stops_a_listener():
    layer, ports = stream_layer()
    sock = layer.socket(AF_INET, SOCK_STREAM, 0)
    sock.listen(1)
    sock.shutdown(0, 0.0)
    assert sock.state == TCP_CLOSE


def test_connect_on_a_listener_is_einval_and_the_transport_errno_passes_through():
    layer, ports = stream_layer()
    listener = layer.socket(AF_INET, SOCK_STREAM, 0)
    listener.listen(1)
    assert errno_of(listener.connect, ("10.0.1.10", 80), 0.0) == errno.EINVAL
    assert errno_of(layer.socket(AF_INET, SOCK_STREAM, 0).connect, ("10.0.1.10", 80), 0.0) == errno.ECONNREFUSED


def test_close_of_a_listener_closes_what_waits_to_be_accepted():
    layer, ports = stream_layer()
    listener = layer.socket(AF_INET, SOCK_STREAM, 0)
    listener.listen(1)
    child = layer.socket(AF_INET, SOCK_STREAM, 0)
    child.state = TCP_ESTABLISHED
    listener.enqueue_accept(child)
    listener.close(0.0)
    assert child.closed and ports.listening == []


def test_the_socket_table_lists_sockets_and_the_kernels_own_endpoints():
    net, h1, r1, h2 = host_router_host()
    sock = h1.sockets.socket(AF_INET, SOCK_DGRAM, 0)
    sock.bind(("10.0.1.10", 5000))
    h1.sockets.socket(AF_INET, SOCK_RAW, IPPROTO_ICMP)
    h1.udp.bind(0, 6000)  # a control op's endpoint
    rows = sorted((row["proto"], row["local"], row["state"]) for row in h1.sockets.table())
    assert rows == [("raw", "0.0.0.0:1", "UNCONN"), ("udp", "0.0.0.0:6000", "UNCONN"), ("udp", "10.0.1.10:5000", "UNCONN")]
