"""Issue 14 items 7 and 14: the unresolved queue in bytes, and what link down and link up do to ARP.

Linux queues packets for an unresolved neighbour up to `unres_qlen_bytes` of
truesize (`__neigh_event_send`; 212992 since 3.3), `unres_qlen` being the same
limit in full frames (`proc_unres_qlen`). An interface going down removes every
neighbour of it, permanent ones too, and drops what waited without an ICMP error
(`neigh_ifdown` -> `neigh_flush_dev`). With the default `arp_notify = 0` no
gratuitous ARP is sent when an interface comes up (`inetdev_event`), and none
ever for an address added.
"""
from __future__ import annotations

import pytest
import zmq

from bus.transport import ipc_endpoint
from nodes.kernel import Kernel
from nodes.memnet import Network, host_router_host
from nodes.neigh import PERMANENT, NeighParams, NeighTable, ResolutionFailed
from nodes.skbuff import SKB_TRUESIZE_OVERHEAD, SkBuff
from nodes.sysctl import ETH_FRAME_TRUESIZE, Sysctl
from nodes.wire.addresses import IPv4Address, MacAddress

from .fakes import FakeClock

DEV = "eth0"
PEER = IPv4Address("10.0.0.2")
UNRES_QLEN = "net.ipv4.neigh.default.unres_qlen"
UNRES_QLEN_BYTES = "net.ipv4.neigh.default.unres_qlen_bytes"
ARP = b"\x08\x06"


def lan(count: int, **sysctl) -> tuple[Network, list]:
    net = Network()
    hosts = [net.node(f"h{index}", **sysctl) for index in range(1, count + 1)]
    for index, host in enumerate(hosts, start=1):
        net.attach(host, "eth0", "lan", f"10.0.0.{index}/24")
    return net, hosts


def arp_frames(net: Network) -> list[bytes]:
    frames: list[bytes] = []
    net.taps.append(lambda segment, frame: frames.append(frame) if frame[12:14] == ARP else None)
    return frames


# -- item 7: unres_qlen_bytes ---------------------------------------------------------------

def test_unres_qlen_bytes_defaults_to_212992_and_unres_qlen_is_its_packet_view():
    sysctl = Sysctl()
    assert ETH_FRAME_TRUESIZE == 1514 + SKB_TRUESIZE_OVERHEAD  # SKB_TRUESIZE(ETH_FRAME_LEN)
    assert (sysctl[UNRES_QLEN_BYTES], sysctl[UNRES_QLEN]) == (212992, 101)
    sysctl.set(UNRES_QLEN, 3)
    assert (sysctl[UNRES_QLEN_BYTES], sysctl[UNRES_QLEN]) == (3 * ETH_FRAME_TRUESIZE, 3)
    sysctl.set(UNRES_QLEN_BYTES, 10000)
    assert sysctl[UNRES_QLEN] == 10000 // ETH_FRAME_TRUESIZE
    assert NeighParams.from_sysctl(sysctl).unres_qlen_bytes == 10000
    assert UNRES_QLEN in set(sysctl) and UNRES_QLEN_BYTES in set(sysctl)


def test_the_queue_is_bounded_by_truesize_not_by_count():
    table = NeighTable(NeighParams(unres_qlen_bytes=4000))
    now = FakeClock().now
    small = [SkBuff.from_payload(bytes(64), 0) for _ in range(6)]  # 640 bytes of truesize each
    for skb in small:
        table.enqueue(PEER, DEV, skb, now)
    entry = table.get(PEER, DEV)
    assert list(entry.queue) == small and entry.queue_bytes == 6 * small[0].truesize
    big = SkBuff.from_payload(bytes(1500), 0)
    table.enqueue(PEER, DEV, big, now)  # the oldest go until the big one fits
    assert list(entry.queue) == small[3:] + [big]
    assert table.stats.unresolved_discards == 3


def test_the_first_fragmented_datagram_to_an_unresolved_neighbour_arrives_whole():
    net, (h1, h2) = lan(2)
    server = h2.udp.bind(0, 7000)
    h1.udp.bind(0, 0).sendto(bytes(60000), IPv4Address("10.0.0.2"), 7000, net.now)  # 41 fragments
    net.run(1)
    assert server.recvfrom() == (bytes(60000), ("10.0.0.1", server_port_of(h1)))
    assert h1.counters()["arp_cache"]["unresolved_discards"] == 0
    assert h1.counters()["Ip"]["FragCreates"] == 41


def server_port_of(stack) -> int:
    (endpoint,) = [e for endpoints in stack.udp.hash.values() for e in endpoints]
    return endpoint.port


# -- item 14: link down ------------------------------------------------------------------------

def test_link_down_flushes_the_devices_permanent_neighbours_and_only_that_devices():
    net, h1, r1, h2 = host_router_host()
    r1.add_neighbour("10.0.1.77", "02:00:00:00:07:07", "eth0", net.now)
    r1.add_neighbour("10.0.2.77", "02:00:00:00:07:08", "eth1", net.now)
    r1.set_link("eth0", False, net.now)
    assert r1.neigh.get(IPv4Address("10.0.1.77"), "eth0") is None
    assert r1.neigh.get(IPv4Address("10.0.2.77"), "eth1").state is PERMANENT
    r1.flush_neighbours("eth1", net.now)  # `ip neigh flush` keeps permanent entries
    assert r1.neigh.get(IPv4Address("10.0.2.77"), "eth1").state is PERMANENT


def test_link_down_drops_queued_packets_without_host_unreachable():
    net, h1, r1, h2 = host_router_host()
    net.drop = lambda segment, frame: segment == "lan2"  # h2 never answers r1's ARP
    client = h1.udp.bind(0, 0)
    client.sendto(b"waits at r1", IPv4Address("10.0.2.10"), 9, net.now)
    net.run(0.5)  # within the first retrans_time: the datagram waits in r1's queue
    assert len(r1.neigh.get(IPv4Address("10.0.2.10"), "eth1").queue) == 1
    r1.set_link("eth1", False, net.now)
    net.run(5)
    assert r1.counters()["Icmp"]["OutDestUnreachs"] == 0
    assert h1.counters()["Icmp"]["InDestUnreachs"] == 0


def test_link_down_drops_our_own_queued_packets_silently_too():
    net, (h1,) = lan(1)
    client = h1.udp.bind(0, 0)
    client.sendto(b"nobody", IPv4Address("10.0.0.9"), 9, net.now)
    h1.set_link("eth0", False, net.now)
    net.run(5)
    assert h1.counters()["Icmp"]["OutDestUnreachs"] == 0 and client.take_error() == 0
    assert h1.neigh.get(IPv4Address("10.0.0.9"), "eth0") is None


def test_ifdown_returns_no_effects_where_a_flush_reports_failed_resolution():
    table = NeighTable()
    table.enqueue(PEER, DEV, "p1", 0.0)
    assert table.flush(DEV) == [ResolutionFailed(DEV, PEER, ("p1",))]
    table.enqueue(PEER, DEV, "p2", 0.0)
    table.add("10.0.0.3", DEV, MacAddress("02:00:00:00:00:03"), 0.0)
    assert table.ifdown(DEV) is None
    assert len(table) == 0 and table.stats.entries == 0


# -- item 14: arp_notify ----------------------------------------------------------------------

def test_no_gratuitous_arp_on_link_up_by_default():
    net, (h1, h2) = lan(2)
    frames = arp_frames(net)
    h1.set_link("eth0", False, net.now)
    h1.set_link("eth0", True, net.now)
    net.run(1)
    assert frames == []


def test_arp_notify_announces_every_address_on_link_up():
    net, (h1, h2) = lan(2, net__ipv4__conf__all__arp_notify=1)
    h1.add_address("eth0", "10.0.0.101", 24)
    frames = arp_frames(net)
    h1.set_link("eth0", False, net.now)
    h1.set_link("eth0", True, net.now)
    net.run(1)
    assert [(frame[:6], frame[28:32], frame[38:42]) for frame in frames] == [
        (b"\xff" * 6, IPv4Address("10.0.0.1").packed, IPv4Address("10.0.0.1").packed),
        (b"\xff" * 6, IPv4Address("10.0.0.101").packed, IPv4Address("10.0.0.101").packed),
    ]


@pytest.mark.parametrize("arp_notify", [0, 1])
def test_the_kernel_sends_no_gratuitous_arp_for_an_address_added(tmp_path, arp_notify):
    context = zmq.Context()
    data = f"inproc://dev.data-{id(context)}"
    device = context.socket(zmq.ROUTER)
    device.setsockopt(zmq.LINGER, 0)
    device.bind(data)
    kernel = Kernel({"name": "h1", "control": ipc_endpoint(tmp_path, "h1.ctl"),
                     "sysctl": {"net.ipv4.conf.all.arp_notify": arp_notify} if arp_notify else {},
                     "interfaces": [{"name": "eth0", "mac": "02:00:00:00:00:01", "ip": "10.0.0.1/24",
                                     "endpoint": data, "attachment": "h1:eth0"}]}, context=context)
    try:
        kernel.op_addr_add("eth0", "10.0.0.5/24")
        eth0 = kernel.stack.devices["eth0"]
        assert not eth0.tx_queue and eth0.stats.tx_packets == 0
    finally:
        kernel.close()
        device.close()
        context.term()
