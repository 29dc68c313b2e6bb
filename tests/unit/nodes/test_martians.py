"""Martian addresses and rp_filter on input (ip_route_input_slow, fib_validate_source), and the
output rules that go with them (__mkroute_output, a send to 0.0.0.0)."""
from __future__ import annotations

import errno
import logging

import pytest

from nodes.memnet import host_router_host
from nodes.wire.addresses import BROADCAST_MAC, IPv4Address
from nodes.wire.ethernet import ETH_P_IP, EthernetHeader
from nodes.wire.icmp import IcmpMessage
from nodes.wire.ipv4 import IPPROTO_ICMP, IPPROTO_UDP, IPv4Header

H1 = IPv4Address("10.0.1.10")
R1_LAN1 = IPv4Address("10.0.1.1")
H2 = IPv4Address("10.0.2.10")


def _echo(src: str | int, dst: str | int) -> bytes:
    return IPv4Header(IPv4Address(src), IPv4Address(dst), IPPROTO_ICMP, ttl=64).build(
        IcmpMessage.echo_request(0x4242, 1, b"martian?").build())


def _inject(net, stack, dev: str, datagram: bytes, *, dst_mac: bytes | None = None) -> None:
    """`datagram` arrives on `dev` of `stack` in a frame from another station of the segment."""
    device = stack.devices[dev]
    frame = EthernetHeader(dst_mac or device.mac, b"\x02\x00\x00\x00\xee\xee", ETH_P_IP).build(datagram)
    stack.receive(dev, frame)
    net.run(0.1)


def _answered(stack) -> int:
    return stack.icmp.stats.OutEchoReps


@pytest.mark.parametrize("source", ["127.0.0.1", "0.0.0.0", "224.0.0.5", "255.255.255.255", "10.0.1.10"])
def test_echo_request_from_a_martian_source_is_dropped_and_counted(source):
    net, h1, r1, h2 = host_router_host()
    _inject(net, h1, "eth0", _echo(source, H1))
    assert _answered(h1) == 0 and h1.icmp.stats.InEchos == 0
    ip = h1.counters()["Ip"]
    assert ip["in_martian_src"] == 1 and ip["in_martian_dst"] == 0 and ip["InDelivers"] == 0


@pytest.mark.parametrize("destination", ["127.0.0.1", "127.0.0.2", "0.0.0.0"])
def test_datagram_to_a_loopback_or_zero_destination_from_the_wire_is_a_martian_destination(destination):
    net, h1, r1, h2 = host_router_host()
    _inject(net, r1, "eth0", _echo(H1, destination))
    ip = r1.counters()["Ip"]
    assert _answered(r1) == 0 and ip["in_martian_dst"] == 1 and ip["ForwDatagrams"] == 0


def test_zero_source_is_accepted_only_toward_the_limited_broadcast():
    net, h1, r1, h2 = host_router_host()
    udp = IPv4Header(IPv4Address(0), IPv4Address(0xFFFFFFFF), IPPROTO_UDP).build(bytes(8))
    _inject(net, h1, "eth0", udp, dst_mac=bytes(BROADCAST_MAC))  # a DHCP client's DHCPDISCOVER, say
    assert h1.counters()["Ip"]["in_martian_src"] == 0 and h1.counters()["Ip"]["InBcastPkts"] == 1


def test_a_forwarded_datagram_from_a_martian_source_is_not_forwarded():
    net, h1, r1, h2 = host_router_host()
    _inject(net, r1, "eth0", _echo("127.0.0.1", H2))
    _inject(net, r1, "eth0", _echo(R1_LAN1, H2))  # the router's own address, spoofed by a neighbour
    ip = r1.counters()["Ip"]
    assert ip["in_martian_src"] == 2 and ip["ForwDatagrams"] == 0 and _answered(h2) == 0


def test_a_good_source_still_gets_its_answer():
    net, h1, r1, h2 = host_router_host()
    _inject(net, h1, "eth0", _echo("10.0.1.77", H1))
    assert h1.icmp.stats.InEchos == 1 and h1.counters()["Ip"]["in_martian_src"] == 0


# ------------------------------------------------------------------ rp_filter


@pytest.mark.parametrize("rp_filter, source, accepted", [
    (0, H2, True),                # the kernel's default: no reverse-path check
    (1, H2, False),               # strict: the route back to 10.0.2.10 leaves by eth1, not eth0
    (2, H2, True),                # loose: some unicast route back exists
    (1, "10.0.1.77", True),       # strict and right: the route back leaves by eth0
    (0, "10.9.9.9", True),        # no route back at all
    (2, "10.9.9.9", False),
    (0, "10.0.2.255", True),      # a broadcast source passes without the check (current Linux's shortcut)
    (2, "10.0.2.255", False),     # with it, a broadcast route back is martian
])
def test_rp_filter_follows_fib_validate_source(rp_filter, source, accepted):
    net, h1, r1, h2 = host_router_host()
    r1.sysctl.set("net.ipv4.conf.all.rp_filter", rp_filter)
    _inject(net, r1, "eth0", _echo(source, R1_LAN1))
    ip = r1.counters()["Ip"]
    assert (r1.icmp.stats.InEchos == 1) is accepted
    assert ip["in_martian_src"] == (0 if accepted else 1)
    assert ip["IPReversePathFilter"] == (1 if not accepted and source != "10.0.2.255" else 0)


def test_strict_rp_filter_drops_a_spoofed_datagram_the_router_would_forward():
    net, h1, r1, h2 = host_router_host()
    r1.sysctl.set("net.ipv4.conf.all.rp_filter", 1)
    _inject(net, r1, "eth0", _echo("10.0.2.99", H2))  # claims to come from lan2, arrives from lan1
    assert r1.counters()["Ip"]["ForwDatagrams"] == 0 and r1.counters()["Ip"]["IPReversePathFilter"] == 1


def test_rp_filter_defaults_to_zero_as_the_kernel():
    net, h1, r1, h2 = host_router_host()
    assert r1.sysctl["net.ipv4.conf.all.rp_filter"] == 0 and r1.sysctl["net.ipv4.conf.all.log_martians"] == 0


# ---------------------------------------------------------------- log_martians


def test_log_martians_logs_in_linux_words_and_is_rate_limited(caplog):
    net, h1, r1, h2 = host_router_host()
    _inject(net, h1, "eth0", _echo("127.0.0.1", H1))
    assert not [r for r in caplog.records if "martian" in r.getMessage()]  # off by default
    h1.sysctl.set("net.ipv4.conf.all.log_martians", 1)
    with caplog.at_level(logging.WARNING, logger="netemu.ipv4"):
        _inject(net, h1, "eth0", _echo("127.0.0.1", H1))
        _inject(net, h1, "eth0", _echo(H1, "0.0.0.0"))
        for _ in range(20):
            h1.receive("eth0", EthernetHeader(h1.devices["eth0"].mac, b"\x02\x00\x00\x00\xee\xee", ETH_P_IP)
                       .build(_echo("224.0.0.5", H1)))
        net.run(0.01)
    messages = [r.getMessage() for r in caplog.records if "martian" in r.getMessage()]
    assert messages[:2] == ["martian source 10.0.1.10 from 127.0.0.1, on dev eth0",
                            "martian destination 0.0.0.0 from 10.0.1.10, dev eth0"]
    assert len(messages) == 10  # net_ratelimit: a burst of 10 per 5 s
    assert h1.counters()["Ip"]["in_martian_src"] == 22


# ---------------------------------------------------------------------- output


def test_a_loopback_source_never_leaves_by_a_real_device():
    net, h1, r1, h2 = host_router_host()
    with pytest.raises(OSError) as raised:
        h1.ipv4.output(int(H2), IPPROTO_UDP, bytes(8), net.now, src=int(IPv4Address("127.0.0.1")))
    assert raised.value.errno == errno.EINVAL
    assert h1.devices["eth0"].tx_queue == type(h1.devices["eth0"].tx_queue)() or not h1.devices["eth0"].tx_queue


def test_a_send_to_0_0_0_0_is_delivered_to_this_host():
    net, h1, r1, h2 = host_router_host()
    before = h1.devices["eth0"].stats.tx_packets
    endpoint = h1.udp.bind(0, 9)
    client = h1.udp.bind(0, 0)
    client.sendto(b"here", 0, 9, net.now)
    net.run(0.1)
    message = endpoint.recvfrom()
    assert message is not None and bytes(message[0]) == b"here"
    assert h1.devices["eth0"].stats.tx_packets == before  # nothing went out on the wire
