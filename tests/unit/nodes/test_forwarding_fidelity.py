"""Forwarding as Linux's ip_forward does it: the route before the TTL, and the MTU it measures against.

Issue 14, items 9 (ip_route_input_slow runs before ip_forward's TTL check) and
6 (ip_dst_mtu_maybe_forward: `ip_forward_use_pmtu`, default 0).
"""
from __future__ import annotations

from nodes.memnet import host_router_host
from nodes.probes import TracerouteSession
from nodes.wire.addresses import IPv4Address
from nodes.wire.icmp import DEST_UNREACH, FRAG_NEEDED, NET_UNREACH
from nodes.wire.ipv4 import IPPROTO_UDP

H1 = IPv4Address("10.0.1.10")
H2 = IPv4Address("10.0.2.10")
UNROUTABLE = IPv4Address("10.9.9.9")  # r1 has no default route


def _errors_to(net, host):
    """(type, code, next-hop MTU) of every ICMP error `host` receives."""
    errors = []
    original = host.icmp._dispatch_error

    def spy(message, datagram, now):
        errors.append((message.type, message.code, message.next_hop_mtu))
        original(message, datagram, now)

    host.icmp._dispatch_error = spy
    return errors


def _send(net, stack, dst, size, *, ttl=64, dont_fragment=False):
    """A UDP datagram of `size` bytes (IP header included) to port 0, which nobody listens on."""
    stack.ipv4.output(int(dst), IPPROTO_UDP, bytes(size - 20), net.now, ttl=ttl, dont_fragment=dont_fragment)
    net.run(0.5)


# ---------------------------------------------------------------- item 9

def test_an_unroutable_datagram_with_ttl_1_earns_net_unreachable_not_time_exceeded():
    net, h1, r1, h2 = host_router_host()
    errors = _errors_to(net, h1)
    _send(net, h1, UNROUTABLE, 100, ttl=1)
    assert errors == [(DEST_UNREACH, NET_UNREACH, 0)]
    ip, icmp = r1.counters()["Ip"], r1.counters()["Icmp"]
    assert (ip["InNoRoutes"], ip["InHdrErrors"]) == (1, 0)
    assert (icmp["OutDestUnreachs"], icmp["OutTimeExcds"]) == (1, 0)


def test_a_routable_datagram_with_ttl_1_still_expires():
    net, h1, r1, h2 = host_router_host()
    _send(net, h1, H2, 100, ttl=1)
    ip, icmp = r1.counters()["Ip"], r1.counters()["Icmp"]
    assert (ip["InHdrErrors"], ip["InNoRoutes"], ip["ForwDatagrams"]) == (1, 0, 0)
    assert (icmp["OutTimeExcds"], icmp["OutDestUnreachs"]) == (1, 0)


def test_traceroute_to_an_unroutable_address_stops_at_the_first_router_with_net_unreachable():
    net, h1, r1, h2 = host_router_host()
    results = []
    TracerouteSession(h1, UNROUTABLE, results.append, probes=3, wait=1.0).start(net.now)
    net.run(10)
    (result,) = results
    assert result["reached"] is False
    assert len(result["hops"]) == 1  # `1  10.0.1.1 !N !N !N`, no extra hop
    (hop,) = result["hops"]
    assert hop["address"] == "10.0.1.1"
    assert [probe["mark"] for probe in hop["probes"]] == ["!N", "!N", "!N"]


# ---------------------------------------------------------------- item 6

def _router_learns_pmtu(net, r1, mtu=1000):
    """r1's own traffic toward h2 was told the path MTU is `mtu` (as a frag-needed would)."""
    r1.ipv4.update_pmtu(int(H2), mtu, net.now)
    assert r1.route_cache.path_mtu(int(H2), net.now) == mtu


def test_a_router_forwards_by_the_device_mtu_not_the_pmtu_it_learnt():
    net, h1, r1, h2 = host_router_host()
    _router_learns_pmtu(net, r1)
    errors = _errors_to(net, h1)
    received = h2.counters()["Ip"]["InReceives"]
    _send(net, h1, H2, 1400, dont_fragment=True)
    _send(net, h1, H2, 1400)
    assert errors == []
    assert h2.counters()["Ip"]["InReceives"] == received + 2  # whole, not fragmented
    ip = r1.counters()["Ip"]
    assert (ip["ForwDatagrams"], ip["FragFails"], ip["FragOKs"], ip["FragCreates"]) == (2, 0, 0, 0)
    assert r1.counters()["Icmp"]["OutDestUnreachs"] == 0


def test_ip_forward_use_pmtu_makes_the_learnt_pmtu_a_forwarding_limit():
    net, h1, r1, h2 = host_router_host()
    r1.sysctl.set("net.ipv4.ip_forward_use_pmtu", 1)
    _router_learns_pmtu(net, r1)
    errors = _errors_to(net, h1)
    _send(net, h1, H2, 1400)  # first, before h1 learns the PMTU and fragments itself
    _send(net, h1, H2, 1400, dont_fragment=True)
    assert errors[-1] == (DEST_UNREACH, FRAG_NEEDED, 1000)
    ip = r1.counters()["Ip"]
    assert (ip["FragFails"], ip["FragOKs"], ip["FragCreates"]) == (1, 1, 2)


def test_a_route_mtu_still_limits_forwarding():
    net, h1, r1, h2 = host_router_host()
    r1.add_route({"dst": "10.0.2.10/32", "dev": "eth1", "mtu": 1200})
    errors = _errors_to(net, h1)
    _send(net, h1, H2, 1400, dont_fragment=True)
    assert errors == [(DEST_UNREACH, FRAG_NEEDED, 1200)]
