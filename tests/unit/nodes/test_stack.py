"""A host-router-host network wired in one process: the node stack end to end, no ZeroMQ."""
from __future__ import annotations

import errno
import random

import pytest

from nodes.ip_fragment import FragmentationNeeded
from nodes.neigh import NeighParams
from nodes.probes import PingSession, TracerouteSession
from nodes.wire.addresses import IPv4Address, MacAddress
from nodes.wire.ethernet import EthernetHeader
from nodes.wire.icmp import IcmpMessage
from nodes.wire.ipv4 import IPPROTO_UDP, IPv4Header
from nodes.wire.udp import UdpHeader

from nodes.memnet import Network, host_router_host

H2 = IPv4Address("10.0.2.10")


def ping(net, stack, destination, **options):
    results = []
    PingSession(stack, IPv4Address(destination), results.append, **options).start(net.now)
    net.run(options.get("count", 3) * options.get("interval", 1.0) + options.get("timeout", 2.0) + 4)
    assert len(results) == 1
    return results[0]


def test_ping_across_a_router_decrements_ttl_and_counts_forwarding():
    net, h1, r1, h2 = host_router_host()
    result = ping(net, h1, H2, count=3, interval=0.5)
    assert result["transmitted"] == 3 and result["received"] == 3 and result["loss_percent"] == 0.0
    assert [reply["ttl"] for reply in result["replies"]] == [63, 63, 63]
    assert {reply["from"] for reply in result["replies"]} == {"10.0.2.10"}
    assert r1.counters()["Ip"]["ForwDatagrams"] == 6
    assert h2.counters()["Icmp"]["InEchos"] == 3 and h2.counters()["Icmp"]["OutEchoReps"] == 3
    assert h1.counters()["Icmp"]["InEchoReps"] == 3


def test_first_packet_waits_for_arp_then_neighbours_are_reachable():
    net, h1, r1, h2 = host_router_host()
    ping(net, h1, H2, count=1)
    (entry,) = [e for e in h1.neigh.table(net.now) if e["ip"] == "10.0.1.1"]
    assert entry["state"] == "REACHABLE"
    assert entry["lladdr"] == str(r1.devices["eth0"].mac)
    # r1 learned h1 from its request (Linux creates the entry for a request to us).
    assert any(e["ip"] == "10.0.1.10" for e in r1.neigh.table(net.now))


def test_udp_datagram_is_delivered_to_the_bound_endpoint():
    net, h1, r1, h2 = host_router_host()
    server = h2.udp.bind(0, 5000)
    client = h1.udp.bind(0, 0)
    client.sendto(b"hello over the router", H2, 5000, net.now)
    net.run(1)
    assert server.recvfrom() == (b"hello over the router", ("10.0.1.10", client.port))
    assert h2.counters()["Udp"]["InDatagrams"] == 1 and h1.counters()["Udp"]["OutDatagrams"] == 1


def test_udp_to_a_closed_port_earns_port_unreachable_and_econnrefused_when_connected():
    net, h1, r1, h2 = host_router_host()
    client = h1.udp.bind(0, 0)
    client.peer = (int(H2), 9)
    client.sendto(b"x", H2, 9, net.now)
    net.run(1)
    assert h2.counters()["Udp"]["NoPorts"] == 1
    assert h2.counters()["Icmp"]["OutDestUnreachs"] == 1
    assert client.take_error() == errno.ECONNREFUSED
    assert client.take_error() == 0


def test_binding_rules_follow_linux():
    net, h1, r1, h2 = host_router_host()
    h2.udp.bind(0, 7000)
    with pytest.raises(OSError) as error:
        h2.udp.bind(0, 7000)
    assert error.value.errno == errno.EADDRINUSE
    with pytest.raises(OSError) as error:
        h2.udp.bind(IPv4Address("10.0.2.10"), 7000)
    assert error.value.errno == errno.EADDRINUSE
    with pytest.raises(OSError) as error:
        h2.udp.bind(IPv4Address("10.9.9.9"), 7001)
    assert error.value.errno == errno.EADDRNOTAVAIL
    ephemeral = h2.udp.bind(0, 0)
    assert 32768 <= ephemeral.port <= 60999


def test_4000_byte_datagram_fragments_over_a_1500_576_path_and_reassembles():
    net, h1, r1, h2 = host_router_host(mtu_right=576)
    ping(net, h1, H2, count=1)  # resolve ARP first
    server = h2.udp.bind(0, 6000)
    payload = bytes(random.Random(7).randrange(256) for _ in range(4000))
    lan2_fragments = []
    net.taps.append(lambda segment, frame: segment == "lan2" and frame[12:14] == b"\x08\x00" and lan2_fragments.append(frame))
    h1.udp.bind(0, 0).sendto(payload, H2, 6000, net.now)
    net.run(2)
    data, _ = server.recvfrom()
    assert data == payload
    assert h1.counters()["Ip"]["FragOKs"] == 1 and h1.counters()["Ip"]["FragCreates"] == 3
    assert r1.counters()["Ip"]["FragOKs"] == 3  # each 1500-byte fragment split again
    assert h2.counters()["Ip"]["ReasmOKs"] == 1
    for frame in lan2_fragments:
        header = IPv4Header.parse(frame[14:])
        assert header.total_length <= 576
        assert header.more_fragments or header.fragment_offset + header.total_length - 20 == 4008
        if header.more_fragments:
            assert (header.total_length - header.header_length) % 8 == 0


def test_fragments_beyond_unres_qlen_are_dropped_while_arp_resolves():
    net, h1, r1, h2 = host_router_host(mtu_right=576)
    r1.sysctl.set("net.ipv4.neigh.default.unres_qlen", 3)  # Linux before 3.3: 3 packets (here 3 full frames)
    r1.neigh.params = NeighParams.from_sysctl(r1.sysctl)
    h1.add_neighbour("10.0.1.1", r1.devices["eth0"].mac, None, net.now)
    server = h2.udp.bind(0, 6000)
    h1.udp.bind(0, 0).sendto(bytes(4000), H2, 6000, net.now)
    net.run(2)
    assert server.recvfrom() is None
    # 8 fragments of 376 to 552 data bytes (714 more of truesize each): the newest 5 fit 3 * 2090 bytes.
    assert r1.counters()["arp_cache"]["unresolved_discards"] == 3
    assert h2.counters()["Ip"]["ReasmReqds"] == 5


def test_dont_fragment_over_a_small_mtu_earns_frag_needed_and_lowers_the_path_mtu():
    net, h1, r1, h2 = host_router_host(mtu_right=576)
    result = ping(net, h1, H2, count=1, size=1000, dont_fragment=True)
    assert result["received"] == 0
    assert result["error_replies"][0]["error"] == "Frag needed"
    assert result["error_replies"][0]["from"] == "10.0.1.1"
    assert r1.counters()["Ip"]["FragFails"] == 1
    assert h1.route_cache.path_mtu(H2, net.now) == 576
    with pytest.raises(FragmentationNeeded) as error:
        h1.icmp.send_echo_request(H2, 1, 1, bytes(1000), net.now, dont_fragment=True)
    assert error.value.mtu == 576


def test_ttl_expiry_is_reported_by_the_router():
    net, h1, r1, h2 = host_router_host()
    result = ping(net, h1, H2, count=1, ttl=1)
    assert result["received"] == 0
    assert result["error_replies"] == [
        {"seq": 1, "from": "10.0.1.1", "type": 11, "code": 0, "error": "Time to live exceeded"}
    ]
    assert r1.counters()["Icmp"]["OutTimeExcds"] == 1 and r1.counters()["Ip"]["ForwDatagrams"] == 0


def test_traceroute_lists_each_hop_then_the_destination():
    net, h1, r1, h2 = host_router_host()
    results = []
    TracerouteSession(h1, H2, results.append, probes=3, wait=1.0).start(net.now)
    net.run(10)
    (result,) = results
    assert result["reached"] is True
    assert [hop["address"] for hop in result["hops"]] == ["10.0.1.1", "10.0.2.10"]
    assert all(probe is not None for hop in result["hops"] for probe in hop["probes"])
    assert not h1.udp.bindings  # the probe socket is closed


def _udp_probes(net):
    """(time, ttl, destination port) of every UDP datagram h1 puts on lan1."""
    sent = []

    def tap(segment, frame):
        if segment == "lan1" and frame[12:14] == b"\x08\x00" and frame[23] == 17 and frame[26:30] == bytes([10, 0, 1, 10]):
            sent.append((net.now, frame[22], int.from_bytes(frame[36:38], "big")))

    net.taps.append(tap)
    return sent


def test_traceroute_sends_a_hops_probes_one_after_the_other():
    net, h1, r1, h2 = host_router_host()
    sent = _udp_probes(net)
    results = []
    TracerouteSession(h1, H2, results.append, probes=3, wait=1.0).start(net.now)
    net.run(10)
    assert [ttl for _, ttl, _ in sent] == [1, 1, 1, 2, 2, 2]
    assert [port for _, _, port in sent] == list(range(33434, 33440))
    times = [when for when, _, _ in sent]
    assert all(later > earlier for earlier, later in zip(times, times[1:]))  # each after the previous reply
    assert all(probe["rtt_ms"] > 0 for hop in results[0]["hops"] for probe in hop["probes"])


def test_traceroute_waits_for_each_probe_of_a_silent_hop():
    net, h1, r1, h2 = host_router_host()
    sent = _udp_probes(net)
    # r1 answers nothing with TTL exceeded: hop 1 is "* * *", each probe after the last one's wait.
    net.drop = lambda segment, frame: segment == "lan1" and frame[12:14] == b"\x08\x00" and frame[23] == 1 \
        and frame[34] == 11
    results = []
    began = net.now
    TracerouteSession(h1, H2, results.append, probes=3, wait=1.0).start(net.now)
    net.run(10)
    (result,) = results
    assert result["hops"][0] == {"hop": 1, "address": None, "probes": [None, None, None]}
    first, second, third = (round(when - began, 6) for when, ttl, _ in sent if ttl == 1)
    assert first < 0.001 and (second, third) == (1.0, 2.0)  # the first waited for ARP; then one per wait
    assert result["hops"][1]["address"] == "10.0.2.10" and result["reached"] is True


def test_no_route_on_the_host_is_enetunreach():
    net = Network()
    h1 = net.node("h1")
    net.attach(h1, "eth0", "lan1", "10.0.1.10/24")
    result = ping(net, h1, "192.0.2.1", count=2)
    assert result["send_error"] == "Network is unreachable" and result["transmitted"] == 1
    assert h1.counters()["Ip"]["OutNoRoutes"] == 1


def test_no_route_on_the_router_is_net_unreachable():
    net, h1, r1, h2 = host_router_host()
    result = ping(net, h1, "192.0.2.1", count=1)
    assert result["error_replies"][0]["error"] == "Destination Net Unreachable"
    assert result["error_replies"][0]["from"] == "10.0.1.1"
    assert r1.counters()["Ip"]["InNoRoutes"] == 1


def test_arp_failure_on_the_local_link_reports_host_unreachable_from_ourselves():
    net, h1, r1, h2 = host_router_host()
    result = ping(net, h1, "10.0.1.99", count=1, timeout=5)
    assert result["error_replies"][0]["error"] == "Destination Host Unreachable"
    assert result["error_replies"][0]["from"] == "10.0.1.10"
    assert h1.counters()["arp_cache"]["res_failed"] == 1
    assert h1.counters()["arp_cache"]["mcast_probes_sent"] == 3


def test_arp_failure_behind_the_router_reports_host_unreachable_from_the_router():
    net, h1, r1, h2 = host_router_host()
    result = ping(net, h1, "10.0.2.99", count=1, timeout=5)
    assert result["error_replies"][0]["error"] == "Destination Host Unreachable"
    assert result["error_replies"][0]["from"] == "10.0.1.1"


def test_a_host_never_forwards():
    net = Network()
    h1, h2 = net.node("h1"), net.node("h2")
    net.attach(h1, "eth0", "lan", "10.0.0.1/24")
    net.attach(h2, "eth0", "lan", "10.0.0.2/24")
    h1.add_route({"dst": "10.9.0.0/16", "gateway": "10.0.0.2"})
    result = ping(net, h1, "10.9.0.1", count=1)
    assert result["received"] == 0 and result["errors"] == 0
    assert h2.counters()["Ip"]["InAddrErrors"] == 1 and h2.counters()["Ip"]["ForwDatagrams"] == 0


def test_icmp_errors_are_rate_limited_per_destination_like_linux():
    net, h1, r1, h2 = host_router_host()
    ping(net, h1, H2, count=1)  # resolve ARP first
    sent_before = r1.counters()["Icmp"]["OutTimeExcds"]
    for sequence in range(20):  # 20 expiring datagrams within a millisecond
        h1.icmp.send_echo_request(H2, 99, sequence, b"", net.now, ttl=1)
    net.run(0.01)
    assert r1.counters()["Icmp"]["OutTimeExcds"] - sent_before == 6  # XRLIM burst
    assert r1.counters()["Icmp"]["OutRateLimitHost"] == 14
    net.run(1.0)
    h1.icmp.send_echo_request(H2, 99, 100, b"", net.now, ttl=1)
    net.run(0.01)
    assert r1.counters()["Icmp"]["OutTimeExcds"] - sent_before == 7  # one token a second


def test_icmp_ratelimit_zero_disables_the_limit():
    net, h1, r1, h2 = host_router_host()
    r1.sysctl.set("net.ipv4.icmp_ratelimit", 0)
    ping(net, h1, H2, count=1)
    for sequence in range(20):
        h1.icmp.send_echo_request(H2, 99, sequence, b"", net.now, ttl=1)
    net.run(0.01)
    assert r1.counters()["Icmp"]["OutRateLimitHost"] == 0


def test_ping_loopback_and_own_address():
    net, h1, r1, h2 = host_router_host()
    for destination in ("127.0.0.1", "10.0.1.10"):
        result = ping(net, h1, destination, count=2, interval=0.1)
        assert result["received"] == 2 and result["replies"][0]["ttl"] == 64
    assert h1.devices["lo"].stats.rx_packets >= 8


def test_link_down_stops_traffic_and_up_restores_it():
    net, h1, r1, h2 = host_router_host()
    assert ping(net, h1, H2, count=1)["received"] == 1
    r1.set_link("eth1", False, net.now)
    down = ping(net, h1, H2, count=1)
    assert down["received"] == 0 and down["error_replies"][0]["error"] == "Destination Net Unreachable"
    r1.set_link("eth1", True, net.now)
    assert ping(net, h1, H2, count=1)["received"] == 1


def test_gratuitous_arp_on_link_up_with_arp_notify():
    net, h1, r1, h2 = host_router_host()
    r1.sysctl.set("net.ipv4.conf.all.arp_notify", 1)
    ping(net, h1, H2, count=1)
    frames = []
    net.taps.append(lambda segment, frame: frames.append((segment, frame)))
    r1.set_link("eth0", False, net.now)
    r1.set_link("eth0", True, net.now)
    net.run(0.1)
    arps = [f for s, f in frames if s == "lan1" and f[12:14] == b"\x08\x06"]
    assert len(arps) == 1 and arps[0][0:6] == b"\xff" * 6


def test_reassembly_timeout_sends_time_exceeded_when_fragment_zero_arrived():
    net, h1, r1, h2 = host_router_host()
    ping(net, h1, H2, count=1)
    seen = {"count": 0}

    def drop_last_fragment(segment, frame):
        if segment != "lan2" or frame[12:14] != b"\x08\x00" or frame[23] != IPPROTO_UDP:
            return False
        header = IPv4Header.parse(frame[14:])
        return header.fragment_offset > 0 and not header.more_fragments

    net.drop = drop_last_fragment
    client = h1.udp.bind(0, 0)
    errors = []
    client.on_error = lambda message, quoted, datagram, now: errors.append((message.type, message.code, str(datagram.src)))
    client.sendto(bytes(3000), H2, 6000, net.now)
    net.run(31)
    assert h2.counters()["Ip"]["ReasmTimeout"] == 1
    assert errors == [(11, 1, "10.0.2.10")]


def test_echo_to_a_broadcast_address_is_ignored_by_default():
    net, h1, r1, h2 = host_router_host()
    result = ping(net, r1, "10.0.1.255", count=1)
    assert result["received"] == 0
    assert h1.counters()["Icmp"]["OutEchoReps"] == 0


def _frame_to(stack, payload, ethertype=b"\x08\x00"):
    return bytes(stack.devices["eth0"].mac) + b"\x02\x00\x00\x00\x00\x99" + ethertype + payload


def test_malformed_frames_are_counted_never_raised():
    net, h1, r1, h2 = host_router_host()
    good = IPv4Header(IPv4Address("10.0.2.1"), H2, IPPROTO_UDP).build(UdpHeader(1, 2).build(b"x", IPv4Address("10.0.2.1"), H2))
    bad_checksum = bytearray(good)
    bad_checksum[10] ^= 0xFF
    truncated = good[:30]
    bad_ihl = bytearray(good)
    bad_ihl[0] = 0x43
    rng = random.Random(3)
    frames = [
        b"\x01\x02",  # runt
        _frame_to(h2, bytes(bad_checksum)),
        _frame_to(h2, truncated),
        _frame_to(h2, bytes(bad_ihl)),
        _frame_to(h2, b"\x00" * 10, b"\x08\x06"),  # truncated ARP
        _frame_to(h2, b"\x45" + bytes(19)),  # zero total length
    ] + [_frame_to(h2, bytes(rng.randrange(256) for _ in range(rng.randrange(60)))) for _ in range(200)]
    for frame in frames:
        h2.receive("eth0", frame)
    net.run(1)
    ip = h2.counters()["Ip"]
    assert ip["InHdrErrors"] + ip["InTruncatedPkts"] >= 4
    assert ip["InCsumErrors"] >= 1
    assert h2.counters()["link"]["runt_frames"] == 1 and h2.counters()["link"]["arp_malformed"] >= 1
    assert ping(net, h1, H2, count=1)["received"] == 1  # still working


def test_udp_checksum_errors_are_counted():
    net, h1, r1, h2 = host_router_host()
    h2.udp.bind(0, 2)
    segment = bytearray(UdpHeader(1, 2).build(b"abc", IPv4Address("10.0.2.1"), H2))
    segment[6] ^= 0x55
    datagram = IPv4Header(IPv4Address("10.0.2.1"), H2, IPPROTO_UDP).build(bytes(segment))
    h2.receive("eth0", _frame_to(h2, datagram))
    net.run(0.1)
    assert h2.counters()["Udp"]["InCsumErrors"] == 1


def test_unknown_protocol_earns_protocol_unreachable():
    net, h1, r1, h2 = host_router_host()
    ping(net, h1, H2, count=1)
    errors = []
    h1.ipv4.add_protocol(253, lambda datagram, now: None,
                         lambda message, quoted, datagram, now: errors.append(message.code))
    h1.ipv4.output(H2, 253, b"experimental", net.now)
    net.run(1)
    assert h2.counters()["Ip"]["InUnknownProtos"] == 1
    assert errors == [2]


def test_frames_for_other_macs_are_filtered_like_a_nic():
    net, h1, r1, h2 = host_router_host()
    frame = b"\x02\x00\x00\x00\x00\x77" + b"\x02\x00\x00\x00\x00\x99\x08\x00" + bytes(46)
    h2.receive("eth0", frame)
    net.run(0.1)
    assert h2.counters()["link"]["otherhost_frames"] == 1
    assert h2.counters()["Ip"]["InReceives"] == 0


def test_partition_filter_drops_both_ways_and_heals():
    net, h1, r1, h2 = host_router_host()
    h1.ipv4.blocked = frozenset({int(H2)})
    with pytest.raises(OSError) as error:
        h1.icmp.send_echo_request(H2, 1, 1, b"", net.now)
    assert error.value.errno == errno.EPERM
    h2_ping = ping(net, h2, "10.0.1.10", count=1)
    assert h2_ping["received"] == 0 and h1.counters()["Ip"]["FilterDrops"] == 2
    h1.ipv4.blocked = frozenset()
    assert ping(net, h1, H2, count=1)["received"] == 1
