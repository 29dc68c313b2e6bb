"""The local table decides what is ours (Linux `local 127.0.0.0/8 dev lo`): every 127.x.y.z answers
a ping and takes a bind, and a datagram to our unicast address inside a broadcast frame is answered."""
from __future__ import annotations

import pytest

from nodes.memnet import host_router_host
from nodes.probes import PingSession
from nodes.socket import AF_INET, IPPROTO_ICMP, SOCK_DGRAM, SOCK_RAW
from nodes.wire.addresses import BROADCAST_MAC, IPv4Address
from nodes.wire.ethernet import ETH_P_IP, EthernetHeader
from nodes.wire.icmp import IcmpMessage
from nodes.wire.ipv4 import IPv4Header


def _ping(net, stack, destination: str) -> dict:
    results: list[dict] = []
    PingSession(stack, IPv4Address(destination), results.append, count=2, interval=0.1).start(net.now)
    net.run(3.0)
    [result] = results
    return result


@pytest.mark.parametrize("destination", ["127.0.0.1", "127.0.0.2", "127.255.255.254"])
def test_every_loopback_address_answers_a_ping(destination):
    net, h1, r1, h2 = host_router_host()
    result = _ping(net, h1, destination)
    assert result["received"] == 2
    assert h1.devices["eth0"].stats.tx_packets == 0  # all of it over lo


def test_the_reply_from_127_0_0_2_comes_from_127_0_0_2():
    net, h1, r1, h2 = host_router_host()
    sock = h1.sockets.socket(AF_INET, SOCK_DGRAM, IPPROTO_ICMP)
    sock.sendto(IcmpMessage.echo_request(0, 1, b"lo").build(), ("127.0.0.2", 0), net.now)
    net.run(0.1)
    data, (source, _) = sock.recvfrom(100, net.now)
    assert source == "127.0.0.2"


def test_a_local_route_added_to_the_local_table_makes_its_addresses_ours():
    """AnyIP: `ip route add local 10.77.0.0/16 dev lo` (table local), as Linux."""
    net, h1, r1, h2 = host_router_host()
    h1.add_route({"dst": "10.77.0.0/16", "dev": "lo", "type": "local"})
    assert _ping(net, h1, "10.77.3.4")["received"] == 2


@pytest.mark.parametrize("type_, protocol", [(SOCK_DGRAM, 0), (SOCK_DGRAM, IPPROTO_ICMP), (SOCK_RAW, IPPROTO_ICMP)])
def test_bind_to_any_loopback_address_succeeds(type_, protocol):
    net, h1, r1, h2 = host_router_host()
    sock = h1.sockets.socket(AF_INET, type_, protocol)
    sock.bind(("127.0.0.2", 0))
    assert sock.getsockname()[0] == "127.0.0.2"


def test_udp_bound_to_127_0_0_2_receives_what_is_sent_to_it():
    net, h1, r1, h2 = host_router_host()
    server = h1.sockets.socket(AF_INET, SOCK_DGRAM, 0)
    server.bind(("127.0.0.2", 5000))
    client = h1.sockets.socket(AF_INET, SOCK_DGRAM, 0)
    client.sendto(b"over lo", ("127.0.0.2", 5000), net.now)
    net.run(0.1)
    data, (source, _) = server.recvfrom(100, net.now)
    assert data == b"over lo" and source == "127.0.0.1"


def test_a_ping_to_our_unicast_address_inside_a_broadcast_frame_is_answered():
    """Issue 14 item 12: icmp_echo decides by the IP destination (RTCF_BROADCAST), not the frame."""
    net, h1, r1, h2 = host_router_host()
    request = IPv4Header(IPv4Address("10.0.1.1"), IPv4Address("10.0.1.10"), 1).build(
        IcmpMessage.echo_request(7, 1, b"bcast frame").build())
    frame = EthernetHeader(bytes(BROADCAST_MAC), bytes(r1.devices["eth0"].mac), ETH_P_IP).build(request)
    h1.receive("eth0", frame)
    net.run(0.1)
    assert h1.icmp.stats.OutEchoReps == 1


def test_a_ping_to_the_subnet_broadcast_is_still_ignored_by_default():
    net, h1, r1, h2 = host_router_host()
    request = IPv4Header(IPv4Address("10.0.1.1"), IPv4Address("10.0.1.255"), 1).build(
        IcmpMessage.echo_request(7, 1, b"bcast").build())
    h1.receive("eth0", EthernetHeader(bytes(BROADCAST_MAC), bytes(r1.devices["eth0"].mac), ETH_P_IP).build(request))
    net.run(0.1)
    assert h1.icmp.stats.InEchos == 1 and h1.icmp.stats.OutEchoReps == 0  # icmp_echo_ignore_broadcasts = 1
