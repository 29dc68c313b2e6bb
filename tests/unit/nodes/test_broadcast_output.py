"""Issue 14 item 5: broadcast output as Linux does it.

A datagram to 255.255.255.255 takes the route's device and leaves as an
Ethernet broadcast whatever route matched (`__mkroute_output` makes it
RTN_BROADCAST, never sent to a gateway); with no route at all, a source that
is one of our addresses picks its device (the "special hack" of
`ip_route_output_key_hash_rcu`), else ENETUNREACH. A broadcast route is
RTCF_BROADCAST | RTCF_LOCAL, so `ip_mc_output` loops a copy back to the
sender's own listeners.
"""
from __future__ import annotations

import errno

import pytest

from nodes.memnet import Network
from nodes.socket import AF_INET, SO_BROADCAST, SOCK_DGRAM, SOL_SOCKET
from nodes.wire.addresses import IPv4Address

LIMITED = IPv4Address("255.255.255.255")
SUBNET = IPv4Address("10.0.0.255")
ETH_BROADCAST = b"\xff" * 6


def lan(count: int = 4, gateway: bool = True):
    """h1..hN on 10.0.0.0/24, each with a default route via 10.0.0.254 (nobody) when `gateway`."""
    net = Network()
    hosts = [net.node(f"h{index}") for index in range(1, count + 1)]
    for index, host in enumerate(hosts, start=1):
        net.attach(host, "eth0", "lan", f"10.0.0.{index}/24")
        if gateway:
            host.add_route({"dst": "default", "gateway": "10.0.0.254"})
    frames: list[bytes] = []
    net.taps.append(lambda segment, frame: frames.append(frame) if frame[12:14] == b"\x08\x00" else None)
    return net, hosts, frames


def udp_socket(stack, port: int | None = None, broadcast: bool = False):
    sock = stack.sockets.socket(AF_INET, SOCK_DGRAM, 0)
    if broadcast:
        sock.setsockopt(SOL_SOCKET, SO_BROADCAST, 1)
    if port is not None:
        sock.bind(("0.0.0.0", port))
    return sock


def received(sock, now) -> list:
    datagrams = []
    while True:
        try:
            datagrams.append(sock.recvfrom(2000, now))
        except BlockingIOError:
            return datagrams


def test_limited_broadcast_leaves_as_an_ethernet_broadcast_not_to_the_gateway():
    net, (h1, h2, h3, h4), frames = lan()
    sender = h1.udp.bind(0, 4000)
    sender.sendto(b"hello all", LIMITED, 9999, net.now)
    net.run(1)
    assert len(frames) == 1 and frames[0][:6] == ETH_BROADCAST
    assert h1.counters()["arp_cache"]["mcast_probes_sent"] == 0  # nobody asked where the gateway is
    assert h1.counters()["Ip"]["OutBcastPkts"] == 1


def test_limited_broadcast_reaches_every_host_and_the_senders_own_listener():
    net, hosts, _ = lan()
    listeners = [host.udp.bind(0, 9999) for host in hosts]
    hosts[0].udp.bind(0, 4000).sendto(b"hello all", LIMITED, 9999, net.now)
    net.run(1)
    assert [listener.recvfrom() for listener in listeners] == [(b"hello all", ("10.0.0.1", 4000))] * 4


def test_subnet_broadcast_is_looped_back_to_our_own_socket_too():
    net, (h1, h2), _ = lan(2)
    own, other = udp_socket(h1, 9999), udp_socket(h2, 9999)
    sender = udp_socket(h1, broadcast=True)
    sender.sendto(b"to the subnet", (str(SUBNET), 9999), net.now)
    net.run(1)
    port = sender.getsockname()[1]
    assert received(own, net.now) == [(b"to the subnet", ("10.0.0.1", port))]
    assert received(other, net.now) == [(b"to the subnet", ("10.0.0.1", port))]
    assert received(sender, net.now) == []  # bound to another port


def test_a_fragmented_broadcast_is_reassembled_everywhere_including_at_home():
    net, (h1, h2), frames = lan(2)
    own, other = h1.udp.bind(0, 9999), h2.udp.bind(0, 9999)
    h1.udp.bind(0, 4000).sendto(bytes(4000), LIMITED, 9999, net.now)
    net.run(1)
    assert len(frames) == 3 and all(frame[:6] == ETH_BROADCAST for frame in frames)
    assert own.recvfrom() == other.recvfrom() == (bytes(4000), ("10.0.0.1", 4000))


def test_without_a_route_limited_broadcast_is_unreachable_unless_the_source_is_ours():
    net, (h1, h2), frames = lan(2, gateway=False)
    listener = udp_socket(h2, 9999)
    unbound = udp_socket(h1, broadcast=True)
    with pytest.raises(OSError) as error:
        unbound.sendto(b"x", (str(LIMITED), 9999), net.now)
    assert error.value.errno == errno.ENETUNREACH
    bound = udp_socket(h1, broadcast=True)
    bound.bind(("10.0.0.1", 0))
    assert bound.sendto(b"from 10.0.0.1", (str(LIMITED), 9999), net.now) == 13
    net.run(1)
    assert len(frames) == 1 and frames[0][:6] == ETH_BROADCAST
    assert received(listener, net.now) == [(b"from 10.0.0.1", ("10.0.0.1", bound.getsockname()[1]))]


def test_a_broadcast_with_nobody_listening_earns_no_port_unreachable():
    net, (h1, h2), frames = lan(2)
    h1.udp.bind(0, 4000).sendto(b"anyone?", LIMITED, 9999, net.now)
    net.run(1)
    assert len(frames) == 1  # no ICMP back from h2, nor from h1 to itself
    assert h1.counters()["Udp"]["IgnoredMulti"] == 1 and h2.counters()["Udp"]["IgnoredMulti"] == 1
    assert h1.counters()["Icmp"]["OutDestUnreachs"] == h2.counters()["Icmp"]["OutDestUnreachs"] == 0
