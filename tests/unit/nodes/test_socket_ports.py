"""The port tables of the INET socket layer (inet_bind, udp_lib_get_port), errno for errno.

Issue 14 items 2 (bind half: every 127.x.y.z is local) and 4 (a second bind
with SO_REUSEADDR/SO_REUSEPORT keeps both sockets) live here.
"""
import errno

import pytest

from nodes.memnet import host_router_host
from nodes.socket import (
    AF_INET,
    SO_BROADCAST,
    SO_REUSEADDR,
    SO_REUSEPORT,
    SOCK_DGRAM,
    SOL_SOCKET,
)


def udp(stack, **options):
    sock = stack.sockets.socket(AF_INET, SOCK_DGRAM, 0)
    for name, value in options.items():
        sock.setsockopt(SOL_SOCKET, {"reuseaddr": SO_REUSEADDR, "reuseport": SO_REUSEPORT,
                                     "broadcast": SO_BROADCAST}[name], value)
    return sock


def errno_of(call, *args):
    with pytest.raises(OSError) as error:
        call(*args)
    return error.value.errno


def resolve(net, h1):
    """One datagram across first, so no datagram waits for ARP afterwards."""
    udp(h1).sendto(b"arp", ("10.0.2.10", 9), net.now)
    net.run(1)


def drain(sock, now):
    received = []
    while sock.recv_ready():
        received.append(sock.recvfrom(65535, now))
    return received


def test_bind_to_a_port_in_use_is_eaddrinuse():
    net, h1, r1, h2 = host_router_host()
    udp(h2).bind(("0.0.0.0", 7000))
    assert errno_of(udp(h2).bind, ("0.0.0.0", 7000)) == errno.EADDRINUSE


def test_a_specific_bind_conflicts_with_a_wildcard_one():
    net, h1, r1, h2 = host_router_host()
    udp(h2).bind(("0.0.0.0", 7000))
    assert errno_of(udp(h2).bind, ("10.0.2.10", 7000)) == errno.EADDRINUSE


def test_two_different_specific_addresses_share_a_port():
    net, h1, r1, h2 = host_router_host()
    udp(h2).bind(("10.0.2.10", 7000))
    second = udp(h2)
    second.bind(("127.0.0.1", 7000))
    assert second.getsockname() == ("127.0.0.1", 7000)


def test_an_address_not_ours_is_eaddrnotavail():
    net, h1, r1, h2 = host_router_host()
    assert errno_of(udp(h2).bind, ("10.0.1.10", 7000)) == errno.EADDRNOTAVAIL


def test_every_127_address_is_local_by_the_local_table():
    net, h1, r1, h2 = host_router_host()
    sock = udp(h2)
    sock.bind(("127.0.0.2", 7000))
    assert sock.getsockname() == ("127.0.0.2", 7000)


def test_a_subnet_broadcast_address_can_be_bound():
    net, h1, r1, h2 = host_router_host()
    sock = udp(h2)
    sock.bind(("10.0.2.255", 7000))
    assert sock.getsockname() == ("10.0.2.255", 7000)


def test_binding_twice_is_einval():
    net, h1, r1, h2 = host_router_host()
    sock = udp(h2)
    sock.bind(("0.0.0.0", 7000))
    assert errno_of(sock.bind, ("0.0.0.0", 7001)) == errno.EINVAL


def test_a_low_port_needs_privilege_eacces_for_others():
    net, h1, r1, h2 = host_router_host()
    unprivileged = h2.sockets.socket(AF_INET, SOCK_DGRAM, 0, privileged=False)
    assert errno_of(unprivileged.bind, ("0.0.0.0", 53)) == errno.EACCES
    root = udp(h2)
    root.bind(("0.0.0.0", 53))
    assert root.getsockname() == ("0.0.0.0", 53)


def test_port_zero_picks_from_ip_local_port_range():
    net, h1, r1, h2 = host_router_host()
    h2.sysctl.set("net.ipv4.ip_local_port_range", "40000 40001")
    ports = set()
    for _ in range(2):
        sock = udp(h2)
        sock.bind(("0.0.0.0", 0))
        ports.add(sock.getsockname()[1])
    assert ports == {40000, 40001}
    assert errno_of(udp(h2).bind, ("0.0.0.0", 0)) == errno.EADDRINUSE


def test_autobind_without_a_free_port_is_eagain():
    net, h1, r1, h2 = host_router_host()
    h2.sysctl.set("net.ipv4.ip_local_port_range", "40000 40000")
    udp(h2).bind(("0.0.0.0", 40000))
    assert errno_of(udp(h2).sendto, b"x", ("10.0.1.10", 9), net.now) == errno.EAGAIN


def test_close_releases_the_port():
    net, h1, r1, h2 = host_router_host()
    first = udp(h2)
    first.bind(("0.0.0.0", 7000))
    first.close(net.now)
    second = udp(h2)
    second.bind(("0.0.0.0", 7000))
    assert second.getsockname() == ("0.0.0.0", 7000)


def test_a_closed_socket_is_ebadf():
    net, h1, r1, h2 = host_router_host()
    sock = udp(h2)
    sock.close(net.now)
    assert errno_of(sock.getsockname) == errno.EBADF


def test_reuseaddr_on_both_lets_a_second_bind_succeed_and_keeps_both():
    net, h1, r1, h2 = host_router_host()
    first, second = udp(h2, reuseaddr=1), udp(h2, reuseaddr=1)
    first.bind(("0.0.0.0", 7000))
    second.bind(("0.0.0.0", 7000))
    assert len(h2.udp.hash[7000]) == 2


def test_reuseaddr_on_one_side_only_is_eaddrinuse():
    net, h1, r1, h2 = host_router_host()
    udp(h2).bind(("0.0.0.0", 7000))
    assert errno_of(udp(h2, reuseaddr=1).bind, ("0.0.0.0", 7000)) == errno.EADDRINUSE


def test_reuseaddr_unicast_goes_to_the_last_bound():
    net, h1, r1, h2 = host_router_host()
    first, second = udp(h2, reuseaddr=1), udp(h2, reuseaddr=1)
    first.bind(("0.0.0.0", 7000))
    second.bind(("0.0.0.0", 7000))
    udp(h1).sendto(b"one", ("10.0.2.10", 7000), net.now)
    net.run(1)
    assert [data for data, _ in drain(second, net.now)] == [b"one"]
    assert drain(first, net.now) == []


def test_closing_the_last_bound_leaves_the_first_reachable():
    net, h1, r1, h2 = host_router_host()
    first, second = udp(h2, reuseaddr=1), udp(h2, reuseaddr=1)
    first.bind(("0.0.0.0", 7000))
    second.bind(("0.0.0.0", 7000))
    second.close(net.now)
    udp(h1).sendto(b"still here", ("10.0.2.10", 7000), net.now)
    net.run(1)
    assert [data for data, _ in drain(first, net.now)] == [b"still here"]
    assert h2.counters()["Udp"]["NoPorts"] == 0
    assert h2.counters()["Icmp"]["OutDestUnreachs"] == 0


def test_reuseport_spreads_flows_by_hash_and_keeps_each_flow_on_one_socket():
    net, h1, r1, h2 = host_router_host()
    group = [udp(h2, reuseport=1) for _ in range(4)]
    for sock in group:
        sock.bind(("0.0.0.0", 7000))
    resolve(net, h1)
    clients = [udp(h1) for _ in range(16)]
    for client in clients:
        for _ in range(2):
            client.sendto(b"x", ("10.0.2.10", 7000), net.now)
    net.run(1)
    seen = {}
    for index, sock in enumerate(group):
        for _, (host, port) in drain(sock, net.now):
            seen.setdefault(port, set()).add(index)
    assert len(seen) == 16 and all(len(indexes) == 1 for indexes in seen.values())
    assert len({index for indexes in seen.values() for index in indexes}) > 1


def test_broadcast_reaches_every_matching_socket():
    net, h1, r1, h2 = host_router_host()
    first, second = udp(h2, reuseaddr=1), udp(h2, reuseaddr=1)
    first.bind(("0.0.0.0", 7000))
    second.bind(("0.0.0.0", 7000))
    specific = udp(h2)
    specific.bind(("10.0.2.10", 7000 + 1))
    sender = udp(r1, broadcast=1)
    sender.sendto(b"all", ("10.0.2.255", 7000), net.now)
    net.run(1)
    assert [d for d, _ in drain(first, net.now)] == [b"all"]
    assert [d for d, _ in drain(second, net.now)] == [b"all"]
    assert h2.counters()["Udp"]["InDatagrams"] == 2


def test_a_broadcast_nobody_listens_to_counts_ignoredmulti_and_earns_no_icmp():
    net, h1, r1, h2 = host_router_host()
    udp(r1, broadcast=1).sendto(b"anyone?", ("10.0.2.255", 7000), net.now)
    net.run(1)
    assert h2.counters()["Udp"]["IgnoredMulti"] == 1
    assert h2.counters()["Udp"]["NoPorts"] == 0
    assert h2.counters()["Icmp"]["OutDestUnreachs"] == 0


def test_a_socket_bound_to_the_unicast_address_gets_no_broadcast():
    net, h1, r1, h2 = host_router_host()
    specific = udp(h2)
    specific.bind(("10.0.2.10", 7000))
    udp(r1, broadcast=1).sendto(b"all", ("10.0.2.255", 7000), net.now)
    net.run(1)
    assert drain(specific, net.now) == []
    assert h2.counters()["Udp"]["IgnoredMulti"] == 1


def test_the_specific_binding_wins_over_the_wildcard():
    net, h1, r1, h2 = host_router_host()
    wildcard, specific = udp(h2, reuseaddr=1), udp(h2, reuseaddr=1)
    specific.bind(("10.0.2.10", 7000))
    wildcard.bind(("0.0.0.0", 7000))  # bound last, yet the exact address scores higher
    udp(h1).sendto(b"exact", ("10.0.2.10", 7000), net.now)
    net.run(1)
    assert [d for d, _ in drain(specific, net.now)] == [b"exact"]
    assert drain(wildcard, net.now) == []


def test_reuseport_across_users_is_eaddrinuse():
    net, h1, r1, h2 = host_router_host()
    mine = h2.sockets.socket(AF_INET, SOCK_DGRAM, 0, uid=1000)
    theirs = h2.sockets.socket(AF_INET, SOCK_DGRAM, 0, uid=1001)
    for sock in (mine, theirs):
        sock.setsockopt(SOL_SOCKET, SO_REUSEPORT, 1)
    mine.bind(("0.0.0.0", 7000))
    assert errno_of(theirs.bind, ("0.0.0.0", 7000)) == errno.EADDRINUSE
