"""ICMP datagram ("ping") sockets (net/ipv4/ping.c) and raw sockets (net/ipv4/raw.c) over memnet."""
import errno
import struct

import pytest

from nodes.memnet import host_router_host
from nodes.probes import PingSession
from nodes.socket import (
    AF_INET,
    ICMP_FILTER,
    IP_HDRINCL,
    IP_RECVERR,
    IP_TTL,
    IPPROTO_RAW,
    MSG_ERRQUEUE,
    SO_REUSEADDR,
    SOCK_DGRAM,
    SOCK_RAW,
    SOL_IP,
    SOL_RAW,
    SOL_SOCKET,
)
from nodes.wire.addresses import IPv4Address
from nodes.wire.icmp import echo_request_bytes
from nodes.wire.ipv4 import IPPROTO_ICMP, IPPROTO_UDP, IPv4Header
from nodes.wire.udp import UdpHeader

H1, H2 = "10.0.1.10", "10.0.2.10"


def errno_of(call, *args, **kwargs):
    with pytest.raises(OSError) as error:
        call(*args, **kwargs)
    return error.value.errno


def ping_socket(stack):
    return stack.sockets.socket(AF_INET, SOCK_DGRAM, IPPROTO_ICMP)


def echo(sequence, data=b"abcdefgh"):
    return echo_request_bytes(0, sequence, data)  # the kernel puts the socket's identifier in


def test_a_ping_socket_gets_the_echo_reply_with_its_identifier():
    net, h1, r1, h2 = host_router_host()
    sock = ping_socket(h1)
    sock.sendto(echo(1), (H2, 0), net.now)
    identifier = sock.getsockname()[1]
    net.run(1)
    data, address = sock.recvfrom(1000, net.now)
    assert address == (H2, 0)
    assert data[0] == 0 and struct.unpack("!HH", data[4:8]) == (identifier, 1) and data[8:] == b"abcdefgh"
    assert h1.counters()["Icmp"]["OutEchos"] == 1 and h1.counters()["Icmp"]["InEchoReps"] == 1
    assert h2.counters()["Icmp"]["InEchos"] == 1


def test_a_ping_socket_refuses_what_is_not_an_echo_request():
    net, h1, r1, h2 = host_router_host()
    sock = ping_socket(h1)
    assert errno_of(sock.sendto, b"\x00\x00\x00\x00\x00\x00\x00\x01", (H2, 0), net.now) == errno.EINVAL
    assert errno_of(sock.sendto, b"\x08\x00", (H2, 0), net.now) == errno.EINVAL


def test_ping_identifiers_conflict_unless_both_reuse():
    net, h1, r1, h2 = host_router_host()
    ping_socket(h1).bind(("0.0.0.0", 77))
    assert errno_of(ping_socket(h1).bind, ("10.0.1.10", 77)) == errno.EADDRINUSE  # identifiers only


def test_a_ping_socket_cannot_take_the_kernels_ping_identifier():
    net, h1, r1, h2 = host_router_host()
    session = PingSession(h1, IPv4Address(H2), lambda result: None, count=1, identifier=500)
    session.start(net.now)
    assert errno_of(ping_socket(h1).bind, ("0.0.0.0", session.identifier)) == errno.EADDRINUSE


def test_ping_sockets_with_so_reuseaddr_share_an_identifier():
    net, h1, r1, h2 = host_router_host()
    first, second = ping_socket(h1), ping_socket(h1)
    for sock in (first, second):
        sock.setsockopt(SOL_SOCKET, SO_REUSEADDR, 1)
        sock.bind(("0.0.0.0", 77))
    assert first.getsockname() == second.getsockname() == ("0.0.0.0", 77)


def test_a_ping_socket_cannot_bind_a_broadcast_address():
    net, h1, r1, h2 = host_router_host()
    assert errno_of(ping_socket(h1).bind, ("10.0.1.255", 0)) == errno.EADDRNOTAVAIL


def test_time_exceeded_reaches_a_ping_sockets_error_queue():
    net, h1, r1, h2 = host_router_host()
    sock = ping_socket(h1)
    sock.setsockopt(SOL_IP, IP_RECVERR, 1)
    sock.setsockopt(SOL_IP, IP_TTL, 1)
    sock.sendto(echo(7), (H2, 0), net.now)
    net.run(1)
    message = sock.recvmsg(1000, net.now, MSG_ERRQUEUE)
    ee_errno, origin, kind, code = struct.unpack_from("=IBBB", message.ancillary[0][2])
    assert (ee_errno, kind, code) == (errno.EHOSTUNREACH, 11, 0)
    assert message.data[0] == 8 and struct.unpack("!H", message.data[6:8]) == (7,)  # the quoted request


def test_closing_a_ping_socket_frees_its_identifier():
    net, h1, r1, h2 = host_router_host()
    sock = ping_socket(h1)
    sock.bind(("0.0.0.0", 77))
    sock.close(net.now)
    assert 77 not in h1.icmp.echo_listeners


def raw_socket(stack, protocol):
    return stack.sockets.socket(AF_INET, SOCK_RAW, protocol)


def test_a_raw_icmp_socket_sees_the_reply_with_its_ip_header():
    net, h1, r1, h2 = host_router_host()
    raw = raw_socket(h1, IPPROTO_ICMP)
    raw.sendto(echo_request_bytes(0x1234, 1, b"raw"), (H2, 0), net.now)
    net.run(1)
    data, address = raw.recvfrom(1000, net.now)
    header = IPv4Header.parse(data)
    assert address == (H2, 0) and str(header.src) == H2 and header.ttl == 63
    assert data[20] == 0 and struct.unpack("!H", data[24:26]) == (0x1234,)
    assert h1.counters()["Icmp"]["OutEchos"] == 1


def test_a_raw_icmp_socket_gets_a_copy_while_the_kernel_still_answers():
    net, h1, r1, h2 = host_router_host()
    raw = raw_socket(h2, IPPROTO_ICMP)
    ping = ping_socket(h1)
    ping.sendto(echo(1), (H2, 0), net.now)
    net.run(1)
    assert raw.recvfrom(1000, net.now)[0][20] == 8
    assert ping.recv_ready()
    assert h2.counters()["Icmp"]["OutEchoReps"] == 1


def test_icmp_filter_drops_filtered_types():
    net, h1, r1, h2 = host_router_host()
    raw = raw_socket(h1, IPPROTO_ICMP)
    raw.setsockopt(SOL_RAW, ICMP_FILTER, 1 << 0)  # no echo replies
    assert raw.getsockopt(SOL_RAW, ICMP_FILTER) == 1
    raw.sendto(echo_request_bytes(9, 1, b""), (H2, 0), net.now)
    net.run(1)
    assert not raw.recv_ready()


def test_icmp_filter_is_eopnotsupp_on_other_raw_sockets():
    net, h1, r1, h2 = host_router_host()
    assert errno_of(raw_socket(h1, IPPROTO_UDP).setsockopt, SOL_RAW, ICMP_FILTER, 1) == errno.EOPNOTSUPP


def test_ip_hdrincl_is_enoprotoopt_outside_raw_sockets():
    net, h1, r1, h2 = host_router_host()
    assert errno_of(ping_socket(h1).setsockopt, SOL_IP, IP_HDRINCL, 1) == errno.ENOPROTOOPT


def test_ip_hdrincl_sends_the_programs_header():
    net, h1, r1, h2 = host_router_host()
    server = h2.sockets.socket(AF_INET, SOCK_DGRAM, 0)
    server.bind(("0.0.0.0", 5000))
    raw = raw_socket(h1, IPPROTO_RAW)  # IPPROTO_RAW implies IP_HDRINCL
    assert raw.getsockopt(SOL_IP, IP_HDRINCL) == 1
    segment = UdpHeader(4242, 5000).build(b"handmade", IPv4Address(H1), IPv4Address(H2))
    packet = IPv4Header(IPv4Address(H1), IPv4Address(H2), IPPROTO_UDP, ttl=30).build(segment)
    raw.sendto(packet, (H2, 0), net.now)
    net.run(1)
    assert server.recvfrom(100, net.now) == (b"handmade", (H1, 4242))


def test_ip_hdrincl_refuses_a_short_header():
    net, h1, r1, h2 = host_router_host()
    assert errno_of(raw_socket(h1, IPPROTO_RAW).sendto, bytes(10), (H2, 0), net.now) == errno.EINVAL


def test_a_raw_socket_takes_an_unknown_protocol_so_no_protocol_unreachable():
    net, h1, r1, h2 = host_router_host()
    listener = raw_socket(h2, 253)
    raw_socket(h1, 253).sendto(b"experiment", (H2, 0), net.now)
    net.run(1)
    assert listener.recvfrom(100, net.now)[0][20:] == b"experiment"
    assert h2.counters()["Ip"]["InUnknownProtos"] == 0
    assert h2.counters()["Ip"]["InDelivers"] == 1
    assert h2.counters()["Icmp"]["OutDestUnreachs"] == 0


def test_without_a_raw_socket_the_protocol_is_unreachable_again():
    net, h1, r1, h2 = host_router_host()
    raw_socket(h2, 253).close(net.now)
    raw_socket(h1, 253).sendto(b"experiment", (H2, 0), net.now)
    net.run(1)
    assert h2.counters()["Ip"]["InUnknownProtos"] == 1


def test_icmp_errors_reach_a_raw_socket_with_ip_recverr():
    net, h1, r1, h2 = host_router_host()
    raw = raw_socket(h1, IPPROTO_UDP)
    raw.setsockopt(SOL_IP, IP_RECVERR, 1)
    raw.sendto(UdpHeader(4242, 9).build(b"x", IPv4Address(H1), IPv4Address(H2)), (H2, 0), net.now)
    net.run(1)
    message = raw.recvmsg(100, net.now, MSG_ERRQUEUE)
    assert struct.unpack_from("=IBBB", message.ancillary[0][2]) == (errno.ECONNREFUSED, 2, 3, 3)
    assert message.data[:4] == struct.pack("!HH", 4242, 9)  # the quoted transport header


def test_a_raw_sockets_name_carries_its_protocol_as_the_port():
    net, h1, r1, h2 = host_router_host()
    assert raw_socket(h1, IPPROTO_ICMP).getsockname() == ("0.0.0.0", IPPROTO_ICMP)


def test_a_ping_error_names_no_address():
    net, h1, r1, h2 = host_router_host()
    sock = ping_socket(h1)
    sock.setsockopt(SOL_IP, IP_RECVERR, 1)
    sock.setsockopt(SOL_IP, IP_TTL, 1)
    sock.sendto(echo(1), (H2, 0), net.now)
    net.run(1)
    assert sock.recvmsg(1000, net.now, MSG_ERRQUEUE).address is None  # ip_recv_error: no port, no msg_name


def test_ping_sockets_follow_ping_group_range():
    net, h1, r1, h2 = host_router_host()
    h1.sysctl.set("net.ipv4.ping_group_range", "1 0")  # the bare kernel's default: nobody
    assert errno_of(ping_socket, h1) == errno.EACCES
    h1.sysctl.set("net.ipv4.ping_group_range", "100 200")
    assert h1.sockets.socket(AF_INET, SOCK_DGRAM, IPPROTO_ICMP, groups=(1000, 150)).kind == "icmp"
