"""A switch process with fake NICs: learning, filtering, MTU, malformed input, link state, uplinks."""
from __future__ import annotations

import socket
import time

import psutil
import pytest

from bus.testing import DeviceProcess, FakeNic, make_frame
from bus.transport import ControlError
from tests.waiting import wait_for

pytestmark = pytest.mark.timeout(30)

H1, H2, H3 = 1, 2, 3
BROADCAST = "ff:ff:ff:ff:ff:ff"


@pytest.fixture
def switch(run_dir):
    with DeviceProcess("switch", run_dir, name="sw") as device:
        nics = [FakeNic(device.data, f"h{n}:eth0") for n in (1, 2, 3)]
        try:
            device.wait_attached(3)
            yield device, nics
        finally:
            for nic in nics:
                nic.close()


def test_unknown_destination_is_flooded_then_learned_mac_reaches_only_its_port(switch):
    device, (h1, h2, h3) = switch
    first = make_frame(H2, H1, b"first", size=60)
    h1.send(first)
    assert h2.recv() == [first] and h3.recv() == [first]  # h2 unknown yet: flooded
    reply = make_frame(H1, H2, b"reply", size=60)
    h2.send(reply)
    assert h1.recv() == [reply]  # h1 was learned from the first frame
    second = make_frame(H2, H1, b"second", size=60)
    h1.send(second)
    assert h2.recv() == [second]
    assert h3.recv_for(0.2) == []  # h2 is learned now: h3 sees nothing
    assert h1.recv_for(0.05) == []  # never back out of the ingress port
    stats = device.call("stats")
    assert stats["fdb"]["learned"] == 2 and stats["fdb"]["floods"] == 1 and stats["fdb"]["forwarded"] == 2
    assert stats["ports"]["h3:eth0"]["tx_packets"] == 1
    assert stats["ports"]["h1:eth0"]["rx_packets"] == 2
    macs = {row["mac"]: row["port"] for row in device.call("fdb")}
    assert macs == {"02:00:00:00:00:01": "h1:eth0", "02:00:00:00:00:02": "h2:eth0"}


def test_broadcast_goes_to_every_other_port(switch):
    device, (h1, h2, h3) = switch
    frame = make_frame(BROADCAST, H3, size=60)
    h3.send(frame)
    assert h1.recv() == [frame] and h2.recv() == [frame]
    assert h3.recv_for(0.1) == []


def test_destination_learned_on_the_ingress_port_is_filtered_and_counted(switch):
    device, (h1, h2, h3) = switch
    h1.send(make_frame(BROADCAST, 11, size=60))  # station 11 lives behind h1's port
    h2.recv(), h3.recv()
    h1.send(make_frame(11, H1, size=60))
    wait_for(lambda: device.port_stats("h1:eth0")["filtered"] >= 1)  # decided on: filtered
    assert device.port_stats("h1:eth0")["filtered"] == 1
    assert h2.recv_for(0.05) == [] and h3.recv_for(0.01) == [] and h1.recv_for(0.01) == []
    assert device.call("stats")["fdb"]["filtered"] == 1


def test_a_batch_for_several_destinations_is_split_per_port(switch):
    device, (h1, h2, h3) = switch
    h2.send(make_frame(BROADCAST, H2, size=60))
    h3.send(make_frame(BROADCAST, H3, size=60))
    h1.recv(2)
    h2.recv(), h3.recv()
    to2a, to3, to2b = make_frame(H2, H1, b"a", size=60), make_frame(H3, H1, b"b", size=60), make_frame(H2, H1, b"c", size=60)
    h1.send(to2a, to3, to2b)
    assert h2.recv(2) == [to2a, to2b]
    assert h3.recv() == [to3]


def test_mtu_runts_and_malformed_batches_are_dropped_counted_and_harmless(switch):
    device, (h1, h2, h3) = switch
    too_long = make_frame(BROADCAST, H1, size=1515)
    tagged_ok = make_frame(BROADCAST, H1, size=1518, vlan=5)
    tagged_too_long = make_frame(BROADCAST, H1, size=1519, vlan=5)
    exactly_mtu = make_frame(BROADCAST, H1, size=1514)
    h1.send(too_long, tagged_ok, tagged_too_long, b"\x01" * 13, exactly_mtu)
    assert h2.recv(2) == [tagged_ok, exactly_mtu]
    h1.send_raw(b"\x00\x40" + b"short")  # prefix says 64 bytes, 5 follow
    h1.send_raw(b"\xff")
    ok = make_frame(BROADCAST, H1, b"still alive", size=60)
    h1.send(ok)
    assert h3.recv(3)[-1] == ok
    stats = device.port_stats("h1:eth0")
    assert stats["dropped_mtu"] == 2 and stats["dropped_malformed"] == 3
    assert stats["rx_dropped"] == 5 and stats["rx_packets"] == 3
    assert device.call("stats")["device"]["malformed_batches"] == 2


def test_port_mtu_from_config_applies_on_ingress_and_egress(run_dir):
    with DeviceProcess("switch", run_dir, name="sw", defaults={"mtu": 1000}) as device, \
            FakeNic(device.data, "a:eth0") as a, FakeNic(device.data, "b:eth0") as b:
        device.wait_attached(2)
        a.send(make_frame(BROADCAST, 1, size=1015), make_frame(BROADCAST, 1, size=1014))
        assert [len(f) for f in b.recv(2, timeout=0.5)] == [1014]
        assert device.call("set_port", port="a:eth0", mtu=9000)["mtu"] == 9000
        a.send(make_frame(BROADCAST, 1, size=9014), make_frame(BROADCAST, 1, size=900))
        # b's MTU is still 1000: the jumbo frame is dropped on the way out, like Linux's bridge does.
        assert [len(f) for f in b.recv(2, timeout=0.5)] == [900]
        assert device.port_stats("a:eth0")["dropped_mtu"] == 1
        assert device.port_stats("b:eth0")["dropped_mtu"] == 1
        assert device.port_stats("b:eth0")["tx_dropped"] == 1


def test_set_port_refuses_unknown_ports_and_bad_values(switch):
    device, _ = switch
    with pytest.raises(ControlError, match="no port 'nope'"):
        device.call("set_port", port="nope", up=False)
    with pytest.raises(ControlError, match="loss") as caught:
        device.call("set_port", port="h1:eth0", loss=5)  # 5 is not a probability
    assert caught.value.errno == 22
    with pytest.raises(ControlError, match="frobnicate"):
        device.call("set_port", port="h1:eth0", frobnicate=1)


def test_link_down_drops_everything_both_ways_and_up_restores(switch):
    device, (h1, h2, h3) = switch
    device.call("set_port", port="h2:eth0", up=False)
    h2.send(make_frame(BROADCAST, H2, size=60))  # from the down port: dropped
    h1.send(make_frame(BROADCAST, H1, size=60))  # to the down port: dropped, h3 still gets it
    assert len(h3.recv()) == 1
    wait_for(lambda: device.port_stats("h2:eth0")["dropped_down"] >= 2)  # both frames met the down port
    assert h1.recv_for(0.05) == [] and h2.recv_for(0.01) == []
    stats = device.port_stats("h2:eth0")
    assert stats["dropped_down"] == 2 and stats["rx_dropped"] == 1 and stats["tx_dropped"] == 1
    assert [p["up"] for p in device.call("ports") if p["name"] == "h2:eth0"] == [False]
    device.call("set_port", port="h2:eth0", up=True)
    frame = make_frame(BROADCAST, H1, b"again", size=60)
    h1.send(frame)
    assert h2.recv() == [frame]
    h2.send(make_frame(H1, H2, size=60))
    assert len(h1.recv()) == 1


def test_stations_behind_a_port_set_down_are_forgotten(switch):
    device, (h1, h2, h3) = switch
    h2.send(make_frame(BROADCAST, H2, size=60))
    h1.recv(), h3.recv()
    assert [row["port"] for row in device.call("fdb")] == ["h2:eth0"]
    device.call("set_port", port="h2:eth0", up=False)
    assert device.call("fdb") == []


def test_station_moving_ports_is_followed(switch):
    device, (h1, h2, h3) = switch
    h1.send(make_frame(BROADCAST, 42, size=60))
    h2.recv(), h3.recv()
    h3.send(make_frame(BROADCAST, 42, size=60))  # station 42 now behind h3
    h1.recv(), h2.recv()
    frame = make_frame(42, H2, size=60)
    h2.send(frame)
    assert h3.recv() == [frame] and h1.recv_for(0.2) == []
    assert device.call("stats")["fdb"]["moves"] == 1


def test_entries_age_out_with_a_short_aging_time(run_dir):
    with DeviceProcess("switch", run_dir, name="sw", aging_time=0.3) as device, \
            FakeNic(device.data, "a:eth0") as a, FakeNic(device.data, "b:eth0") as b, \
            FakeNic(device.data, "c:eth0") as c:
        device.wait_attached(3)
        b.send(make_frame(BROADCAST, 2, size=60))
        a.recv(), c.recv()
        a.send(make_frame(2, 1, size=60))
        assert len(b.recv()) == 1 and c.recv_for(0.1) == []
        wait_for(lambda: "02:00:00:00:00:02" not in [row["mac"] for row in device.call("fdb")])  # aged out
        a.send(make_frame(2, 1, size=60))
        assert len(c.recv()) == 1  # forgotten: flooded again
        assert [row["mac"] for row in device.call("fdb")] == ["02:00:00:00:00:01"]
        assert device.call("stats")["fdb"]["aged"] >= 1


def test_two_switches_joined_by_an_uplink_forward_and_both_learn(run_dir):
    with DeviceProcess("switch", run_dir, name="lan2") as lan2:
        uplink = {"endpoint": lan2.data, "attachment": "lan1~lan2"}
        with DeviceProcess("switch", run_dir, name="lan1", uplinks=[uplink]) as lan1, \
                FakeNic(lan1.data, "h1:eth0") as h1, FakeNic(lan2.data, "h2:eth0") as h2, \
                FakeNic(lan2.data, "h3:eth0") as h3:
            lan1.wait_attached(2)
            lan2.wait_attached(3)
            hello = make_frame(BROADCAST, H1, b"who is h2", size=60)
            h1.send(hello)
            assert h2.recv() == [hello] and h3.recv() == [hello]
            answer = make_frame(H1, H2, b"h2 here", size=60)
            h2.send(answer)
            assert h1.recv() == [answer]
            assert h3.recv_for(0.2) == []  # lan2 learned h1 behind the uplink
            again = make_frame(H2, H1, b"thanks", size=60)
            h1.send(again)
            assert h2.recv() == [again] and h3.recv_for(0.2) == []
            fdb1 = {row["mac"]: row["port"] for row in lan1.call("fdb")}
            fdb2 = {row["mac"]: row["port"] for row in lan2.call("fdb")}
            assert fdb1 == {"02:00:00:00:00:01": "h1:eth0", "02:00:00:00:00:02": "lan1~lan2"}
            assert fdb2 == {"02:00:00:00:00:01": "lan1~lan2", "02:00:00:00:00:02": "h2:eth0"}
            assert [p["uplink"] for p in lan1.call("ports") if p["name"] == "lan1~lan2"] == [True]


def test_uplink_with_its_own_mtu(run_dir):
    with DeviceProcess("switch", run_dir, name="lan2") as lan2:
        uplink = {"endpoint": lan2.data, "attachment": "lan1~lan2", "mtu": 500}
        with DeviceProcess("switch", run_dir, name="lan1", uplinks=[uplink]) as lan1, \
                FakeNic(lan1.data, "h1:eth0") as h1, FakeNic(lan2.data, "h2:eth0") as h2:
            lan1.wait_attached(2)
            lan2.wait_attached(2)
            h1.send(make_frame(BROADCAST, H1, size=600), make_frame(BROADCAST, H1, size=400))
            assert [len(f) for f in h2.recv(2, timeout=0.5)] == [400]
            assert lan1.port_stats("lan1~lan2")["dropped_mtu"] == 1


def test_a_restarted_nic_with_the_same_name_is_reattached(switch):
    device, (h1, h2, h3) = switch
    h2.send(make_frame(BROADCAST, H2, size=60))
    h1.recv(), h3.recv()
    h2.close()
    frame = make_frame(H2, H1, size=60)

    def detached() -> bool:
        h1.send(frame)  # sends to the gone port fail, detach it and forget its stations
        return device.call("status")["attached"] == 2

    wait_for(detached, timeout=5, interval=0.02)
    assert device.port_stats("h2:eth0")["dropped_unreachable"] >= 1
    assert all(row["port"] != "h2:eth0" for row in device.call("fdb"))
    with FakeNic(device.data, "h2:eth0") as again:
        device.wait_attached(3)
        h1.send(frame)
        assert again.recv() == [frame]


def test_a_port_that_stops_reading_holds_a_bounded_backlog_and_the_rest_is_dropped_and_counted(switch):
    device, (h1, h2, h3) = switch
    h2.send(make_frame(BROADCAST, H2, size=60))  # the switch learns h2
    assert h1.recv() and h3.recv()
    switch_process = psutil.Process(device.process.pid)
    rss_before = switch_process.memory_info().rss
    batch = [make_frame(H2, H1, size=1514)] * 170  # about one 256 KiB message

    def offered_enough() -> bool:
        # ~100 MB toward h2, which reads nothing (a frozen node); h1 backs off when its own queue is full
        if h1.port.send_frames(batch):
            time.sleep(0.002)
        return h1.port.counters["tx_packets"] >= 400 * 170

    wait_for(offered_enough, timeout=10, interval=0)
    offered = h1.port.counters["tx_packets"]
    wait_for(lambda: device.port_stats("h1:eth0")["rx_packets"] >= offered, timeout=10)
    grown = switch_process.memory_info().rss - rss_before
    to_h2 = device.port_stats("h2:eth0")
    assert device.port_stats("h1:eth0")["rx_packets"] == offered
    assert to_h2["dropped_queue"] > 0
    assert to_h2["tx_packets"] + to_h2["dropped_queue"] == offered  # every frame sent or counted
    assert grown < 48 * 1024 * 1024, f"the switch grew by {grown / 2**20:.0f} MiB holding h2's backlog"
    delivered = [0]

    def drained() -> bool:
        delivered[0] += len(h2.recv(1, timeout=0.2))
        return delivered[0] >= to_h2["tx_packets"]

    wait_for(drained, timeout=10, interval=0)
    assert delivered[0] + len(h2.recv_for(0.2)) == to_h2["tx_packets"]  # what the switch counts as sent is what h2 gets


def _free_tcp_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_a_switch_on_a_tcp_endpoint_carries_frames_like_on_ipc(run_dir):
    # tcp:// is how nodes on other machines will attach; here it stays on loopback.
    endpoint = f"tcp://127.0.0.1:{_free_tcp_port()}"
    with DeviceProcess("switch", run_dir, name="tsw", data=endpoint) as device:
        with FakeNic(endpoint, "h1:eth0") as h1, FakeNic(endpoint, "h2:eth0") as h2:
            device.wait_attached(2)
            hello = make_frame(BROADCAST, H1, b"over tcp", size=60)
            h1.send(hello)
            assert h2.recv() == [hello]
            reply = make_frame(H1, H2, b"back", size=1514)
            h2.send(reply)
            assert h1.recv() == [reply]
            assert device.port_stats("h1:eth0")["tx_packets"] == 1
