"""No packet of death: what a received frame makes a node send may fail, and is then counted and
dropped; anything unexpected is stopped by the exception barrier, counted, and logged once."""
from __future__ import annotations

import logging

import pytest

from nodes.memnet import host_router_host
from nodes.nic import NapiScheduler
from nodes.wire.addresses import IPv4Address, MacAddress
from nodes.wire.ethernet import ETH_P_IP, EthernetHeader
from nodes.wire.icmp import IcmpMessage
from nodes.wire.ipv4 import IPPROTO_ICMP, IPv4Header

UNROUTABLE = IPv4Address("192.0.2.7")  # TEST-NET-1: no node here has a route to it
R1_LAN1 = IPv4Address("10.0.1.1")


def frame_to(stack, dev: str, datagram: bytes) -> bytes:
    device = stack.devices[dev]
    return EthernetHeader(device.mac, MacAddress("02:00:00:00:99:99"), ETH_P_IP).build(datagram)


def echo_request(src: IPv4Address, dst: IPv4Address) -> bytes:
    message = IcmpMessage.echo_request(0x1234, 1, b"x" * 56).build()
    return IPv4Header(src, dst, IPPROTO_ICMP).build(message)


def test_an_echo_request_from_a_source_without_a_route_back_is_counted_not_fatal():
    net, h1, r1, h2 = host_router_host()
    r1.receive("eth0", frame_to(r1, "eth0", echo_request(UNROUTABLE, R1_LAN1)))
    net.run(0.1)
    ip, icmp = r1.counters()["Ip"], r1.counters()["Icmp"]
    assert (icmp["InEchos"], icmp["OutEchoReps"], icmp["OutMsgs"], icmp["OutErrors"]) == (1, 0, 0, 1)
    assert ip["OutNoRoutes"] == 1
    assert r1.counters()["softnet"]["rx_exceptions"] == 0


def test_the_router_still_answers_after_it(monkeypatch):
    net, h1, r1, h2 = host_router_host()
    r1.receive("eth0", frame_to(r1, "eth0", echo_request(UNROUTABLE, R1_LAN1)))
    net.run(0.1)
    results = []
    from nodes.probes import PingSession
    PingSession(h1, R1_LAN1, results.append, count=1).start(net.now)
    net.run(3)
    assert results and results[0]["received"] == 1


def test_an_echo_reply_on_a_link_that_went_down_is_counted_as_an_icmp_out_error():
    net, h1, r1, h2 = host_router_host()
    r1.add_route({"dst": "192.0.2.0/24", "dev": "eth1"})
    r1.set_link("eth1", False, net.now)
    r1.fib.link_up("eth1")  # the route still points at the down device: output finds it not running
    r1.receive("eth0", frame_to(r1, "eth0", echo_request(UNROUTABLE, R1_LAN1)))
    net.run(0.1)
    assert r1.counters()["Icmp"]["OutErrors"] == 1
    assert r1.counters()["Ip"]["OutDiscards"] + r1.counters()["Ip"]["OutNoRoutes"] == 1


@pytest.fixture
def barrier(monkeypatch):
    """The barrier as a running node has it (the test suite otherwise re-raises, to fail on any bug)."""
    monkeypatch.setattr(NapiScheduler, "reraise", False)


def test_an_unexpected_exception_drops_the_frame_counts_it_and_logs_once_per_site(barrier, caplog):
    net, h1, r1, h2 = host_router_host()

    def broken(datagram, now):
        raise RuntimeError("a bug in a protocol handler")

    r1.ipv4.add_protocol(253, broken, lambda *error: None)
    datagram = IPv4Header(IPv4Address("10.0.1.10"), R1_LAN1, 253).build(b"payload")
    with caplog.at_level(logging.ERROR, logger="netemu.stack"):
        for _ in range(3):
            r1.receive("eth0", frame_to(r1, "eth0", datagram))
        net.run(0.1)
    softnet = r1.counters()["softnet"]
    assert softnet["rx_exceptions"] == 3
    assert r1.devices["eth0"].stats.rx_dropped == 3
    reports = [record for record in caplog.records if "exception barrier" in record.getMessage()]
    assert len(reports) == 1
    assert "a bug in a protocol handler" in reports[0].getMessage()
    # the node goes on: the next frame is handled as usual
    r1.receive("eth0", frame_to(r1, "eth0", echo_request(IPv4Address("10.0.1.10"), R1_LAN1)))
    net.run(0.5)
    assert r1.counters()["Icmp"]["OutEchoReps"] == 1


def test_a_failing_timer_is_counted_and_the_others_still_run(barrier, caplog):
    net, h1, r1, h2 = host_router_host()
    ran = []

    def broken(now):
        raise ValueError("a bug in a timer")

    r1.call_at(net.now + 0.1, broken)
    r1.call_at(net.now + 0.2, ran.append)
    with caplog.at_level(logging.ERROR, logger="netemu.stack"):
        net.run(1)
    assert r1.counters()["softnet"]["timer_exceptions"] == 1
    assert len(ran) == 1
    assert any("a bug in a timer" in record.getMessage() for record in caplog.records)


def test_the_test_suite_reraises_so_no_bug_hides_behind_the_barrier():
    net, h1, r1, h2 = host_router_host()
    r1.ipv4.add_protocol(253, lambda datagram, now: 1 / 0, lambda *error: None)
    r1.receive("eth0", frame_to(r1, "eth0", IPv4Header(IPv4Address("10.0.1.10"), R1_LAN1, 253).build(b"x")))
    with pytest.raises(ZeroDivisionError):
        net.run(0.1)
