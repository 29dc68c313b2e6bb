"""ICMP errors as Linux sends them (issue 14): which errors escape the rate limit."""
from __future__ import annotations

from nodes.memnet import host_router_host
from nodes.wire.addresses import IPv4Address
from nodes.wire.ipv4 import IPPROTO_UDP

H2 = int(IPv4Address("10.0.2.10"))


def send_df_datagrams(count: int, interval: float, ratemask: int | None = None):
    """h1 sends `count` DF datagrams too big for r1's 1000-byte link to h2, forgetting the learned PMTU
    each time (as a sender ignoring PMTU discovery would), so every one reaches r1."""
    net, h1, r1, h2 = host_router_host(mtu_right=1000)
    if ratemask is not None:
        r1.sysctl.set("net.ipv4.icmp_ratemask", ratemask)
    for _ in range(count):
        h1.route_cache.flush()
        h1.ipv4.output(H2, IPPROTO_UDP, bytes(1200), net.now, dont_fragment=True)
        net.run(interval)
    return h1, r1


def test_fragmentation_needed_is_never_rate_limited():
    h1, r1 = send_df_datagrams(10, 0.010)
    icmp = r1.counters()["Icmp"]
    assert icmp["OutDestUnreachs"] == 10
    assert icmp["OutRateLimitHost"] == 0
    assert h1.counters()["Icmp"]["InDestUnreachs"] == 10


def test_fragmentation_needed_escapes_even_a_mask_of_every_type():
    h1, r1 = send_df_datagrams(10, 0.010, ratemask=2**19 - 1)
    assert r1.counters()["Icmp"]["OutDestUnreachs"] == 10
    assert r1.counters()["Icmp"]["OutRateLimitHost"] == 0


def test_other_unreachables_are_still_limited():
    """The exemption is for code 4 alone: host unreachable keeps the burst of six (icmpv4_xrlim_allow)."""
    net, h1, r1, h2 = host_router_host()
    for _ in range(10):
        h1.ipv4.output(int(IPv4Address("10.9.9.9")), IPPROTO_UDP, bytes(8), net.now)  # r1 has no route: net unreachable
        net.run(0.010)
    icmp = r1.counters()["Icmp"]
    assert icmp["OutDestUnreachs"] == 6
    assert icmp["OutRateLimitHost"] == 4
