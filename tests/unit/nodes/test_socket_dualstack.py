"""AF_INET6 sockets, dual-stack over IPv4 only (what `iperf3 -s` does: socket(AF_INET6), IPV6_V6ONLY=0, bind(::))."""
import errno

import pytest

from nodes.memnet import host_router_host
from nodes.socket import (
    AF_INET,
    AF_INET6,
    IPV6_V6ONLY,
    SO_REUSEADDR,
    SOCK_DGRAM,
    SOL_IPV6,
    SOL_SOCKET,
    pack_sockaddr,
)

H1, H2 = "10.0.1.10", "10.0.2.10"


def errno_of(call, *args, **kwargs):
    with pytest.raises(OSError) as error:
        call(*args, **kwargs)
    return error.value.errno


def udp6(stack, v6only=None):
    sock = stack.sockets.socket(AF_INET6, SOCK_DGRAM, 0)
    if v6only is not None:
        sock.setsockopt(SOL_IPV6, IPV6_V6ONLY, v6only)
    return sock


def test_an_unbound_inet6_socket_is_named_unspecified():
    net, h1, r1, h2 = host_router_host()
    assert udp6(h2).getsockname() == ("::", 0, 0, 0)


def test_dual_stack_any_takes_ipv4_peers_as_mapped_addresses():
    net, h1, r1, h2 = host_router_host()
    server = udp6(h2, v6only=0)
    server.bind(("::", 5201))
    client = h1.sockets.socket(AF_INET, SOCK_DGRAM, 0)
    client.sendto(b"hi", (H2, 5201), net.now)
    net.run(1)
    assert server.recvfrom(100, net.now) == (b"hi", (f"::ffff:{H1}", client.getsockname()[1], 0, 0))
    assert server.getsockname() == ("::", 5201, 0, 0)


def test_sendto_a_mapped_address_goes_out_over_ipv4():
    net, h1, r1, h2 = host_router_host()
    server = h2.sockets.socket(AF_INET, SOCK_DGRAM, 0)
    server.bind(("0.0.0.0", 5000))
    client = udp6(h1)
    client.sendto(b"mapped", (f"::ffff:{H2}", 5000, 0, 0), net.now)
    net.run(1)
    assert server.recvfrom(100, net.now)[0] == b"mapped"


def test_connect_to_a_mapped_address_names_both_ends_mapped():
    net, h1, r1, h2 = host_router_host()
    client = udp6(h1)
    client.connect((f"::ffff:{H2}", 5000), net.now)
    assert client.getpeername() == (f"::ffff:{H2}", 5000, 0, 0)
    assert client.getsockname()[0] == f"::ffff:{H1}"


def test_a_native_ipv6_destination_is_enetunreach():
    net, h1, r1, h2 = host_router_host()
    assert errno_of(udp6(h1).sendto, b"x", ("2001:db8::1", 5000), net.now) == errno.ENETUNREACH
    assert errno_of(udp6(h1).connect, ("2001:db8::1", 5000), net.now) == errno.ENETUNREACH


def test_an_ipv6_only_socket_cannot_reach_a_mapped_address():
    net, h1, r1, h2 = host_router_host()
    assert errno_of(udp6(h1, v6only=1).sendto, b"x", (f"::ffff:{H2}", 5000), net.now) == errno.ENETUNREACH


def test_an_ipv6_only_any_socket_gets_no_ipv4():
    net, h1, r1, h2 = host_router_host()
    server = udp6(h2, v6only=1)
    server.bind(("::", 5201))
    h1.sockets.socket(AF_INET, SOCK_DGRAM, 0).sendto(b"v4", (H2, 5201), net.now)
    net.run(1)
    assert not server.recv_ready()
    assert h2.counters()["Udp"]["NoPorts"] == 1


def test_an_ipv6_only_socket_and_an_ipv4_socket_share_a_port():
    net, h1, r1, h2 = host_router_host()
    udp6(h2, v6only=1).bind(("::", 5201))
    v4 = h2.sockets.socket(AF_INET, SOCK_DGRAM, 0)
    v4.bind(("0.0.0.0", 5201))
    assert v4.getsockname() == ("0.0.0.0", 5201)


def test_a_dual_stack_any_socket_conflicts_with_an_ipv4_one():
    net, h1, r1, h2 = host_router_host()
    udp6(h2, v6only=0).bind(("::", 5201))
    assert errno_of(h2.sockets.socket(AF_INET, SOCK_DGRAM, 0).bind, ("0.0.0.0", 5201)) == errno.EADDRINUSE


def test_ipv6_v6only_cannot_change_once_bound():
    net, h1, r1, h2 = host_router_host()
    sock = udp6(h2)
    sock.bind(("::", 5201))
    assert errno_of(sock.setsockopt, SOL_IPV6, IPV6_V6ONLY, 1) == errno.EINVAL


def test_a_mapped_address_on_an_ipv6_only_socket_is_einval():
    net, h1, r1, h2 = host_router_host()
    assert errno_of(udp6(h2, v6only=1).bind, (f"::ffff:{H2}", 5201)) == errno.EINVAL


def test_binding_a_native_ipv6_address_is_eaddrnotavail():
    net, h1, r1, h2 = host_router_host()
    assert errno_of(udp6(h2).bind, ("2001:db8::1", 5201)) == errno.EADDRNOTAVAIL


def test_an_ipv4_sockaddr_on_an_inet6_bind_is_eafnosupport():
    net, h1, r1, h2 = host_router_host()
    assert errno_of(udp6(h2).bind, pack_sockaddr(("0.0.0.0", 5201), AF_INET)) == errno.EAFNOSUPPORT


def test_a_short_sockaddr_in6_is_einval():
    net, h1, r1, h2 = host_router_host()
    raw = pack_sockaddr(("::", 5201), AF_INET6)
    assert errno_of(udp6(h2).bind, raw[:20]) == errno.EINVAL


def test_an_ipv4_socket_wins_over_a_dual_stack_one_for_unicast():
    net, h1, r1, h2 = host_router_host()
    v4 = h2.sockets.socket(AF_INET, SOCK_DGRAM, 0)
    v6 = udp6(h2)
    for sock, address in ((v4, ("0.0.0.0", 5201)), (v6, ("::", 5201))):
        sock.setsockopt(SOL_SOCKET, SO_REUSEADDR, 1)
        sock.bind(address)
    h1.sockets.socket(AF_INET, SOCK_DGRAM, 0).sendto(b"x", (H2, 5201), net.now)
    net.run(1)
    assert v4.recv_ready() and not v6.recv_ready()  # compute_score: PF_INET 2, dual-stack 1


def test_ipv6_recvpktinfo_gives_the_mapped_destination_of_an_ipv4_datagram():
    from nodes.socket import IPV6_PKTINFO, IPV6_RECVPKTINFO

    net, h1, r1, h2 = host_router_host()
    server = udp6(h2)
    server.setsockopt(SOL_IPV6, IPV6_RECVPKTINFO, 1)
    server.bind(("::", 53))
    h1.sockets.socket(AF_INET, SOCK_DGRAM, 0).sendto(b"query", (H2, 53), net.now)
    net.run(1)
    ((level, kind, data),) = server.recvmsg(100, net.now).ancillary
    assert (level, kind) == (SOL_IPV6, IPV6_PKTINFO)
    assert data == bytes(10) + b"\xff\xff" + bytes((10, 0, 2, 10)) + h2.devices["eth0"].ifindex.to_bytes(4, "little")


def test_ipv6_options_of_no_effect_on_mapped_traffic_are_held_and_range_checked():
    from nodes.socket import IPV6_TCLASS

    net, h1, r1, h2 = host_router_host()
    sock = udp6(h2)
    assert sock.getsockopt(SOL_IPV6, IPV6_TCLASS) == 0
    sock.setsockopt(SOL_IPV6, IPV6_TCLASS, 0x20)
    assert sock.getsockopt(SOL_IPV6, IPV6_TCLASS) == 0x20
    assert errno_of(sock.setsockopt, SOL_IPV6, IPV6_TCLASS, 256) == errno.EINVAL
