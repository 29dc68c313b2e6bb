"""Real node kernels on a real bus: ping across a switch and across a router, faults, garbage."""
from __future__ import annotations

import random
import signal
import time

import msgpack
import pytest
import zmq

from bus.testing import DeviceProcess, FakeNic
from nodes.wire.addresses import IPv4Address
from nodes.wire.ipv4 import IPPROTO_UDP, IPv4Header
from nodes.wire.udp import UdpHeader
from tests.waiting import wait_for

from .kernels import KernelProcess, interface

pytestmark = pytest.mark.timeout(60)

MAC = {name: f"02:00:00:00:00:{index:02x}" for index, name in enumerate(["h1", "h2", "h3", "r1a", "r1b"], start=1)}


@pytest.fixture
def one_lan(run_dir):
    """h1, h2, h3 on one switch (10.0.0.0/24)."""
    with DeviceProcess("switch", run_dir, name="lan") as switch:
        kernels = [
            KernelProcess(run_dir, name, [interface("eth0", MAC[name], f"10.0.0.{index}/24", switch.data, name)],
                          hosts={"h1": "10.0.0.1", "h2": "10.0.0.2", "h3": "10.0.0.3"})
            for index, name in enumerate(["h1", "h2", "h3"], start=1)
        ]
        try:
            for kernel in kernels:
                kernel.start()
            switch.wait_attached(3)
            yield switch, kernels
        finally:
            for kernel in kernels:
                kernel.stop()


def test_ping_across_a_switch_by_name(one_lan):
    switch, (h1, h2, h3) = one_lan
    result = h1.ping("h2", count=3)
    assert result["received"] == 3 and result["replies"][0]["ttl"] == 64
    assert h2.call("counters")["Icmp"]["InEchos"] == 3
    neighbours = {entry["ip"]: entry for entry in h1.call("neigh")}
    assert neighbours["10.0.0.2"]["lladdr"] == MAC["h2"]
    fdb = {entry["mac"]: entry["port"] for entry in switch.call("fdb")}
    assert fdb[MAC["h1"]] == "h1:eth0" and fdb[MAC["h2"]] == "h2:eth0"


def test_control_stays_responsive_while_a_ping_is_outstanding(one_lan):
    switch, (h1, h2, h3) = one_lan
    context = zmq.Context.instance()
    pinger = context.socket(zmq.DEALER)
    pinger.setsockopt(zmq.LINGER, 0)
    pinger.connect(h1.config["control"])
    try:
        pinger.send_multipart([b"", msgpack.packb({"op": "ping", "dst": "h2", "count": 3, "interval": 0.5})])
        started = time.monotonic()
        assert h1.call("status")["name"] == "h1"
        assert not pinger.poll(0)  # answered while the ping is still outstanding
        assert pinger.poll(10_000)
        reply = msgpack.unpackb(pinger.recv_multipart()[-1])
        assert reply["ok"] and reply["result"]["received"] == 3
        assert time.monotonic() - started >= 1.0  # the deferred reply came when the ping ended
    finally:
        pinger.close()


def test_a_killed_node_leaves_the_others_working(one_lan):
    switch, (h1, h2, h3) = one_lan
    assert h1.ping("h3")["received"] == 1
    h3.process.send_signal(signal.SIGKILL)
    h3.process.wait(5)
    assert h1.ping("h2", count=2)["received"] == 2
    lost = h1.ping("h3", count=1, timeout=0.5)
    assert lost["received"] == 0


def test_malformed_frames_are_counted_and_the_node_stays_up(one_lan):
    switch, (h1, h2, h3) = one_lan
    rng = random.Random(5)
    h2_mac = bytes.fromhex(MAC["h2"].replace(":", ""))
    src_mac = bytes.fromhex("020000000099")
    good = IPv4Header(IPv4Address("10.0.0.99"), IPv4Address("10.0.0.2"), IPPROTO_UDP).build(
        UdpHeader(1, 9).build(b"payload", IPv4Address("10.0.0.99"), IPv4Address("10.0.0.2")))
    bad_checksum = bytearray(good)
    bad_checksum[10] ^= 0xFF
    frames = [h2_mac + src_mac + b"\x08\x00" + bytes(bad_checksum),
              h2_mac + src_mac + b"\x08\x00" + good[:25],
              h2_mac + src_mac + b"\x08\x00" + b"\x46" + good[1:],
              h2_mac + src_mac + b"\x08\x06" + bytes(12)]
    frames += [h2_mac + src_mac + b"\x08\x00" + bytes(rng.randrange(256) for _ in range(rng.randrange(1, 80)))
               for _ in range(100)]
    with FakeNic(switch.data, "fuzz:eth0") as nic:
        switch.wait_attached(4)
        nic.send(*frames)
        nic.send_raw(b"\x00\x05abc")  # a malformed batch: the switch drops it
        counters = wait_for(lambda: (c := h2.call("counters"))["Ip"]["InCsumErrors"] >= 1
                            and c["Ip"]["InHdrErrors"] + c["Ip"]["InTruncatedPkts"] >= 3 and c)
    assert counters["Ip"]["InHdrErrors"] + counters["Ip"]["InTruncatedPkts"] >= 3
    assert counters["Ip"]["InCsumErrors"] >= 1
    assert h2.call("status")["name"] == "h2"
    assert h1.ping("h2")["received"] == 1


def test_udp_through_the_control_channel(one_lan):
    switch, (h1, h2, h3) = one_lan
    h2.call("udp_bind", port=5000)
    h1.call("udp_send", dst="h2", port=5000, data=b"datagram")
    received = wait_for(lambda: h2.call("udp_recv", port=5000), timeout=3, interval=0.02)
    assert received == [{"data": b"datagram", "from": "10.0.0.1", "port": received[0]["port"]}]


def test_kernel_exits_cleanly_on_sigterm_and_removes_its_control_socket(one_lan):
    switch, (h1, h2, h3) = one_lan
    assert h3.control_file.exists()
    h3.process.send_signal(signal.SIGTERM)
    assert h3.process.wait(5) == 0
    assert not h3.control_file.exists()


def test_ping_across_a_router_and_traceroute(run_dir):
    with DeviceProcess("switch", run_dir, name="lan1") as lan1, DeviceProcess("hub", run_dir, name="lan2") as lan2:
        hosts = {"h1": "10.0.1.10", "h2": "10.0.2.10", "r1": "10.0.1.1"}
        h1 = KernelProcess(run_dir, "h1", [interface("eth0", MAC["h1"], "10.0.1.10/24", lan1.data, "h1")],
                           routes=[{"dst": "default", "gateway": "10.0.1.1"}], hosts=hosts)
        r1 = KernelProcess(run_dir, "r1", [interface("eth0", MAC["r1a"], "10.0.1.1/24", lan1.data, "r1"),
                                           interface("eth1", MAC["r1b"], "10.0.2.1/24", lan2.data, "r1")],
                           kind="router", hosts=hosts)
        h2 = KernelProcess(run_dir, "h2", [interface("eth0", MAC["h2"], "10.0.2.10/24", lan2.data, "h2")],
                           routes=[{"dst": "default", "gateway": "10.0.2.1"}], hosts=hosts)
        with h1, r1, h2:
            lan1.wait_attached(2)
            lan2.wait_attached(2)
            result = h1.ping("h2", count=3)
            assert result["received"] == 3
            assert {reply["ttl"] for reply in result["replies"]} == {63}
            trace = h1.call("traceroute", timeout=20, dst="h2", wait=1.0)
            assert [hop["address"] for hop in trace["hops"]] == ["10.0.1.1", "10.0.2.10"]
            assert r1.call("counters")["Ip"]["ForwDatagrams"] >= 6
            r1.call("link_set", dev="eth1", up=False)
            down = h1.ping("h2", count=1)
            assert down["received"] == 0 and down["error_replies"][0]["error"] == "Destination Net Unreachable"
            r1.call("link_set", dev="eth1", up=True)
            assert h1.ping("h2", count=2)["received"] >= 1
