"""Hub and point-to-point device processes with fake NICs."""
from __future__ import annotations

import pytest

from bus.testing import DeviceProcess, FakeNic, make_frame
from tests.waiting import wait_for

pytestmark = pytest.mark.timeout(30)


def test_hub_repeats_every_frame_to_every_other_port_even_known_unicast(run_dir):
    with DeviceProcess("hub", run_dir, name="hub") as hub:
        nics = [FakeNic(hub.data, f"h{n}:eth0") for n in range(1, 5)]
        try:
            hub.wait_attached(4)
            h1, h2, h3, h4 = nics
            frames = [make_frame(2, 1, bytes([i]), size=60) for i in range(3)]
            h1.send(*frames)
            for nic in (h2, h3, h4):
                assert nic.recv(3) == frames
            h2.send(make_frame(1, 2, size=60))  # a hub does not learn: h3, h4 see the reply too
            assert len(h1.recv()) == 1 and len(h3.recv()) == 1 and len(h4.recv()) == 1
            assert h1.recv_for(0.1) == [] and h2.recv_for(0.01) == []
            stats = hub.call("stats")
            assert stats["ports"]["h1:eth0"]["rx_packets"] == 3
            assert stats["ports"]["h1:eth0"]["tx_packets"] == 1
            assert stats["ports"]["h3:eth0"]["tx_packets"] == 4
            assert "fdb" not in stats
        finally:
            for nic in nics:
                nic.close()


def test_hub_has_no_fdb_op(run_dir):
    from bus.transport import ControlError

    with DeviceProcess("hub", run_dir, name="hub") as hub:
        with pytest.raises(ControlError, match="unknown op 'fdb'"):
            hub.call("fdb")


def test_p2p_carries_frames_between_its_two_ends(run_dir):
    with DeviceProcess("p2p", run_dir, name="wire") as wire, \
            FakeNic(wire.data, "r1:eth1") as a, FakeNic(wire.data, "r2:eth0") as b:
        wire.wait_attached(2)
        frame = make_frame(2, 1, b"over the wire", size=60)
        a.send(frame)
        assert b.recv() == [frame]
        b.send(frame[::-1][:60])
        assert a.recv() == [frame[::-1][:60]]


def test_p2p_refuses_a_third_port_and_counts_its_frames(run_dir):
    with DeviceProcess("p2p", run_dir, name="wire") as wire, \
            FakeNic(wire.data, "r1:eth1") as a, FakeNic(wire.data, "r2:eth0") as b:
        wire.wait_attached(2)
        with FakeNic(wire.data, "intruder:eth0") as c:
            c.send(make_frame("ff:ff:ff:ff:ff:ff", 3, size=60), make_frame(1, 3, size=60))
            c.hello()
            # the counters prove the device handled the intruder's frames; then nothing was passed on
            device = wait_for(lambda: (d := wire.call("stats")["device"])["dropped_unknown_port"] >= 2
                              and d["refused_ports"] >= 1 and d)
            assert device["refused_ports"] == 1 and device["dropped_unknown_port"] == 2
            assert a.recv_for(0.05) == [] and b.recv_for(0.01) == []
            status = wire.call("status")
            assert status["ports"] == 2 and status["attached"] == 2
            assert sorted(p["name"] for p in wire.call("ports")) == ["r1:eth1", "r2:eth0"]
        frame = make_frame(2, 1, size=60)
        a.send(frame)
        assert b.recv() == [frame]  # the two real ends still work


def test_p2p_with_declared_ports_refuses_anyone_else(run_dir):
    with DeviceProcess("p2p", run_dir, name="wire", ports={"r1:eth1": {}, "r2:eth0": {"mtu": 9000}}) as wire, \
            FakeNic(wire.data, "x:eth0") as x, FakeNic(wire.data, "r1:eth1") as a:
        wire.wait_attached(1)
        x.send(make_frame(1, 2, size=60))
        wait_for(lambda: wire.call("stats")["device"]["refused_ports"] >= 1)
        assert wire.call("stats")["device"]["refused_ports"] == 1
        assert a.recv_for(0.05) == []
        ports = {p["name"]: p for p in wire.call("ports")}
        assert ports["r2:eth0"]["params"]["mtu"] == 9000 and not ports["r2:eth0"]["attached"]
        assert ports["r1:eth1"]["attached"]
