"""Fault injection on running emulations: links, delay and loss, killed/paused/crashed nodes, partitions, capture.

One two_lans emulation serves most tests (each puts back what it changed);
partitions use campus, where the cut runs across routers.
"""
from __future__ import annotations

import os
import signal
import tempfile
import time
from pathlib import Path

import pytest
from scapy.layers.inet import ICMP, IP
from scapy.utils import rdpcap

from bus.transport import ControlTimeout
from control.emulation import Emulation

from .helpers import topology

pytestmark = pytest.mark.timeout(60)


@pytest.fixture(scope="module")
def net():
    with Emulation(topology("two_lans"), name="scn-faults") as emulation:
        yield emulation


@pytest.fixture(scope="module")
def campus():
    with Emulation(topology("campus"), name="scn-faults-campus") as emulation:
        yield emulation


def quick_ping(net, src="h1", dst="h2", count=2):
    return net[src].ping(dst, count=count, interval=0.1, timeout=0.6)


# -- links ------------------------------------------------------------------------------


def test_link_down_stops_pings_and_up_brings_them_back(net):
    link = net.link("h2", "lan2")
    assert quick_ping(net).received == 2
    link.down()
    try:
        assert quick_ping(net).received == 0
        assert link.stats()["dropped_down"] > 0
    finally:
        link.up()
    assert quick_ping(net).received == 2


def test_set_delay_adds_to_the_round_trip_and_setting_it_back_restores(net):
    link = net.link("r1", "eth1")  # 5 ms in the topology, met once each way
    before = quick_ping(net, count=3)
    link.set(delay="30ms")
    try:
        slower = quick_ping(net, count=3)
    finally:
        link.set(delay="5ms")
    after = quick_ping(net, count=3)
    # Physics: each round trip crosses r1's port twice (30 ms each way now) and h2's port
    # on lan2 twice (2 ms each way): none can be quicker than 64 ms; with 5 ms, 14 ms.
    assert min(before.rtts) >= 14.0 and min(after.rtts) >= 14.0, (before.rtts, after.rtts)
    assert min(slower.rtts) >= 64.0, (before.rtts, slower.rtts)
    # Restored: were the 30 ms still there, no round trip could take under 64 ms.
    assert min(after.rtts) < 64.0, (slower.rtts, after.rtts)


def test_loss_of_100_percent_drops_everything_and_0_restores(net):
    link = net.link("h2", "lan2")
    link.set(loss="100%")
    try:
        lost = quick_ping(net, count=3)
        assert (lost.sent, lost.received) == (3, 0)
        assert link.stats()["dropped_loss"] >= 3
    finally:
        link.set(loss=0)
    assert quick_ping(net, count=3).received == 3


# -- nodes ------------------------------------------------------------------------------


def test_killed_router_makes_the_host_report_unreachable_and_restart_recovers(net):
    h1 = net["h1"]
    net["r1"].kill()
    try:
        assert not net.supervisor["r1"].alive
        h1.flush_arp()
        began = time.monotonic()
        # ARP for the gateway fails after 3 probes a second apart, as on Linux; the
        # queued echoes then come back as errors from the host itself.
        result = h1.ping("h2", count=3, interval=0.5, timeout=4.0)
        elapsed = time.monotonic() - began
    finally:
        net["r1"].restart()
    assert result.received == 0
    assert [(e["from"], e["error"]) for e in result.errors] == [("10.0.1.10", "Destination Host Unreachable")] * 3
    # At least the 3 probes a second apart; the upper bound is only "not hung" (bench/ measures).
    assert 2.5 <= elapsed <= 15.0
    assert [e for e in net.crashes if e.name == "r1"] == []  # asked for, so not a crash
    assert net["h1"].ping("h2", count=2, interval=0.2, timeout=2.0).received == 2


def test_paused_node_does_not_answer_and_resume_brings_it_back(net):
    h2 = net["h2"]
    h2.pause()
    try:
        with pytest.raises(ControlTimeout):
            h2.request("status", {}, timeout=0.5)
        assert quick_ping(net).received == 0
    finally:
        h2.resume()
    assert h2.call("status")["name"] == "h2"
    net.wait_for(lambda: quick_ping(net, count=1).received == 1, timeout=5.0)
    assert quick_ping(net).received == 2


def test_sigkill_from_outside_is_reported_as_a_crash_within_a_second(net):
    pid = net["h2"].pid
    os.kill(pid, signal.SIGKILL)
    try:
        events = net.wait_for(lambda: [e for e in net.crashes if e.name == "h2"], timeout=1.0, interval=0.01)
        event = events[0]
        assert (event.pid, event.signal, event.crashed) == (pid, signal.SIGKILL, True)
        assert "h2" in event.describe() and "SIGKILL" in event.describe()
    finally:
        net.wait_for(lambda: not net.supervisor["h2"].alive, timeout=5.0)
        net["h2"].restart()
    assert net["h2"].pid != pid
    assert quick_ping(net).received == 2


# -- partition --------------------------------------------------------------------------


def _reachability(campus, names):
    results = campus.pingall(count=1, timeout=0.5, nodes=names)
    failed = {pair: result for pair, result in results.items() if isinstance(result, Exception)}
    assert failed == {}
    return {pair: result.received for pair, result in results.items()}


def test_partition_cuts_both_ways_across_and_heal_restores(campus):
    left, right = ["a1", "a2"], ["b1", "b2"]
    names = left + right
    campus.partition(left, right)
    try:
        reach = _reachability(campus, names)
        across = {pair: got for pair, got in reach.items() if (pair[0] in left) != (pair[1] in left)}
        within = {pair: got for pair, got in reach.items() if (pair[0] in left) == (pair[1] in left)}
        assert set(across.values()) == {0} and len(across) == 8
        assert set(within.values()) == {1} and len(within) == 4
        assert campus["a3"].ping("b3", count=1, timeout=1.0).received == 1  # outside the groups
        assert campus["b1"].counters()["Ip"]["FilterDrops"] > 0
    finally:
        campus.heal()
    assert set(_reachability(campus, names).values()) == {1}


# -- capture ----------------------------------------------------------------------------


def test_capture_writes_a_pcap_holding_the_echoes_of_a_ping(net):
    with tempfile.TemporaryDirectory(prefix="ne-cap-") as directory:
        path = Path(directory) / "lan2.pcap"
        assert net.capture("lan2", path) == str(path)
        try:
            assert quick_ping(net, count=2).received == 2
        finally:
            stopped = net.stop_capture("lan2")
        packets = rdpcap(str(path))
        assert stopped["frames"] == len(packets)
        echoes = [(p[ICMP].type, p[IP].src, p[IP].dst, p[ICMP].seq) for p in packets if p.haslayer(ICMP)]
        for seq in (1, 2):
            assert (8, "10.0.1.10", "10.0.2.10", seq) in echoes
            assert (0, "10.0.2.10", "10.0.1.10", seq) in echoes
