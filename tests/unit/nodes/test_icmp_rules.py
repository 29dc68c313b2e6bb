"""RFC 1122 3.2.2: when ICMP errors must not be sent, and the rate limiter's arithmetic."""
from __future__ import annotations

import pytest

from nodes.icmp import GlobalLimiter, TokenBucket
from nodes.wire.addresses import IPv4Address
from nodes.wire.icmp import DEST_UNREACH, HOST_UNREACH, TIME_EXCEEDED, IcmpMessage
from nodes.wire.ipv4 import IPPROTO_ICMP, IPPROTO_UDP, IPv4Header

from nodes.memnet import host_router_host

H1 = IPv4Address("10.0.1.10")
H2 = IPv4Address("10.0.2.10")
NOW = 1000.0  # memnet.Network starts its clock here


@pytest.fixture
def router():
    net, h1, r1, h2 = host_router_host()
    return r1


def datagram(src=H1, dst=H2, protocol=IPPROTO_UDP, payload=bytes(16), **fields):
    return IPv4Header(IPv4Address(src), IPv4Address(dst), protocol, **fields).build(payload)


def test_an_ordinary_datagram_earns_an_error(router):
    assert router.icmp.send_error(DEST_UNREACH, HOST_UNREACH, datagram(), NOW) is True
    assert router.counters()["Icmp"]["OutDestUnreachs"] == 1


@pytest.mark.parametrize("case, original", [
    ("to a broadcast address", datagram(dst="10.0.2.255")),
    ("to the limited broadcast", datagram(dst="255.255.255.255")),
    ("to a multicast group", datagram(dst="224.0.0.1")),
    ("from the unspecified address", datagram(src="0.0.0.0")),
    ("from a multicast source", datagram(src="224.0.0.9")),
    ("about a non-first fragment", datagram(fragment_offset=1480)),
    ("about an ICMP error", datagram(protocol=IPPROTO_ICMP, payload=IcmpMessage.time_exceeded(0, datagram()).build())),
    ("too short to be a datagram", b"\x45\x00\x00"),
])
def test_no_error_is_sent(router, case, original):
    assert router.icmp.send_error(TIME_EXCEEDED, 0, original, NOW) is False, case
    assert router.counters()["Icmp"]["OutMsgs"] == 0


def test_an_error_about_an_echo_request_is_allowed(router):
    echo = IcmpMessage.echo_request(1, 1, b"x").build()
    assert router.icmp.send_error(TIME_EXCEEDED, 0, datagram(protocol=IPPROTO_ICMP, payload=echo), NOW)


def test_the_first_fragment_may_earn_an_error(router):
    assert router.icmp.send_error(TIME_EXCEEDED, 1, datagram(more_fragments=True), NOW)


def test_token_bucket_allows_a_burst_then_one_per_interval():
    bucket = TokenBucket(interval=1.0, burst=6.0, now=0.0)
    assert [bucket.allow(0.0) for _ in range(8)] == [True] * 6 + [False] * 2
    assert bucket.allow(0.5) is False
    assert bucket.allow(1.0) is True
    assert bucket.allow(1.0) is False
    assert [bucket.allow(100.0) for _ in range(7)] == [True] * 6 + [False]


def test_global_limiter_refills_at_the_message_rate():
    limiter = GlobalLimiter(per_sec=10, burst=2, now=0.0)
    assert [limiter.allow(0.0) for _ in range(3)] == [True, True, False]
    assert limiter.allow(0.05) is False
    assert limiter.allow(0.1) is True
    assert GlobalLimiter(per_sec=0, burst=0, now=0.0).allow(0.0) is True
