"""Reassembly as current Linux does it (issue 14): duplicates inside held data keep the queue
(inet_frag_queue_insert), and a reassembly timeout quotes as much of fragment 0 as fits (ip_expire)."""
from __future__ import annotations

from nodes.memnet import host_router_host
from nodes.wire.addresses import IPv4Address
from nodes.wire.ethernet import EthernetHeader
from nodes.wire.icmp import TIME_EXCEEDED, IcmpMessage
from nodes.wire.ipv4 import IPPROTO_ICMP, IPv4Header, IPv4View

H1 = IPv4Address("10.0.1.10")
H2 = IPv4Address("10.0.2.10")
ETH_P_IP = 0x0800


def echo_request(data_length: int) -> bytes:
    return IcmpMessage.echo_request(0x4242, 1, bytes(range(256)) * (data_length // 256) +
                                    bytes(range(data_length % 256))).build()


def inject(net, r1, h2, transport: bytes, pieces: list[tuple[int, int, bool]]) -> None:
    """Fragments (start, end, more fragments) of one datagram h1 -> h2, as r1 would put them on lan2."""
    router_mac = r1.devices["eth1"].mac
    host_mac = h2.devices["eth0"].mac
    for start, end, more in pieces:
        header = IPv4Header(H1, H2, IPPROTO_ICMP, ttl=63, identification=0x1234,
                            more_fragments=more, fragment_offset=start)
        frame = EthernetHeader(host_mac, router_mac, ETH_P_IP).build(header.build(transport[start:end]))
        h2.receive("eth0", frame)
        net.run(0.001)
    net.run(0.1)


def outcome(h1, h2) -> tuple[int, int, int, int, int]:
    ip = h2.counters()["Ip"]
    return (ip["ReasmOKs"], ip["ReasmFails"], ip["ReasmOverlaps"], ip["ReasmDuplicates"],
            h1.counters()["Icmp"]["InEchoReps"])


def test_a_fragment_inside_one_held_is_a_duplicate_and_the_datagram_completes():
    net, h1, r1, h2 = host_router_host()
    inject(net, r1, h2, echo_request(16), [(0, 16, True), (8, 16, True), (16, 24, False)])
    assert outcome(h1, h2) == (1, 0, 0, 1, 1)


def test_a_refragmented_copy_of_adjacent_fragments_received_in_order_is_a_duplicate():
    """0-8 then 8-16 arrive in order and form one run: a re-fragmented 0-16 lies inside it."""
    net, h1, r1, h2 = host_router_host()
    inject(net, r1, h2, echo_request(16), [(0, 8, True), (8, 16, True), (0, 16, True), (16, 24, False)])
    assert outcome(h1, h2) == (1, 0, 0, 1, 1)


def test_runs_are_built_in_arrival_order_as_linux_builds_them():
    """8-16 then 0-8: 0-8 lands before the tail and starts a run of its own, so 0-16 spans two runs:
    an overlap for Linux (fragrun_create, not merged with its neighbour), and the datagram dies."""
    net, h1, r1, h2 = host_router_host()
    inject(net, r1, h2, echo_request(16), [(8, 16, True), (0, 8, True), (0, 16, True), (16, 24, False)])
    assert outcome(h1, h2) == (0, 1, 1, 0, 0)


def test_a_true_overlap_with_different_bounds_kills_the_queue():
    net, h1, r1, h2 = host_router_host()
    inject(net, r1, h2, echo_request(24), [(0, 16, True), (8, 24, True), (24, 32, False)])
    assert outcome(h1, h2) == (0, 1, 1, 0, 0)
    assert h2.counters()["Ip"]["ReasmReqds"] == 3  # the last fragment starts a new queue that times out later


def test_reassembly_timeout_quotes_as_much_of_fragment_zero_as_fits_in_576_bytes():
    net, h1, r1, h2 = host_router_host()
    errors: list[IcmpMessage] = []

    def tap(segment: str, frame: bytes) -> None:
        if segment == "lan1" and frame[12:14] == b"\x08\x00":
            view = IPv4View(frame[14:])
            if view.protocol == IPPROTO_ICMP and view.src == IPv4Address("10.0.2.10"):
                errors.append(IcmpMessage.parse(view.payload))

    net.taps.append(tap)
    inject(net, r1, h2, echo_request(1000), [(0, 800, True)])
    net.run(31.0)  # ipfrag_time is 30 s
    [error] = errors
    assert error.type == TIME_EXCEEDED and error.code == 1
    assert len(error.payload) == 576 - 20 - 8  # icmp_send: the error datagram stays within 576 bytes
    quoted = error.payload
    assert int.from_bytes(quoted[2:4], "big") == 820  # fragment 0's own total length, as received
    assert int.from_bytes(quoted[6:8], "big") == 0x2000  # MF set, offset 0
    assert bytes(error.payload[20:]) == echo_request(1000)[:548 - 20]
    assert h2.counters()["Ip"]["ReasmTimeout"] == 1
