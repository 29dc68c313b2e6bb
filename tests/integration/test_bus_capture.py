"""Capture on a running device: what the segment carried, readable by scapy (and tshark if present)."""
from __future__ import annotations

import signal
import subprocess

import pytest
from scapy.utils import rdpcap

from bus.pcap import read_pcap
from bus.testing import DeviceProcess, FakeNic, make_frame
from bus.transport import ControlError
from tests.conftest import require_tool

pytestmark = pytest.mark.timeout(30)

BROADCAST = "ff:ff:ff:ff:ff:ff"


def carried_frames() -> list[bytes]:
    return [make_frame(BROADCAST, 1, b"arp-ish", size=60),
            make_frame(1, 2, b"reply", size=60),
            make_frame(2, 1, bytes(range(256)) * 5, size=1514)]


def test_capture_holds_each_carried_frame_once_in_order_and_scapy_reads_it(run_dir):
    path = run_dir / "lan.pcap"
    with DeviceProcess("switch", run_dir, name="sw") as device, \
            FakeNic(device.data, "h1:eth0") as h1, FakeNic(device.data, "h2:eth0") as h2, \
            FakeNic(device.data, "h3:eth0") as h3:
        device.wait_attached(3)
        assert device.call("capture_start", path=str(path)) == str(path)
        first, second, third = carried_frames()
        h1.send(first)  # flooded to two ports: still recorded once
        assert len(h2.recv()) == 1 and len(h3.recv()) == 1
        h2.send(second)
        assert h1.recv() == [second]
        h1.send(third, make_frame(BROADCAST, 1, size=1600))  # the oversize frame never made it onto the segment
        assert h2.recv() == [third]
        assert device.call("status")["capture"] == str(path)
        assert device.call("capture_stop") == {"path": str(path), "frames": 3}
        h1.send(make_frame(BROADCAST, 1, b"after stop", size=60))
        h2.recv()
        assert device.call("capture_stop") is None
    packets = rdpcap(str(path))
    assert [bytes(p) for p in packets] == [first, second, third]
    assert [frame for _, frame in read_pcap(path)] == [first, second, third]
    stamps = [ts for ts, _ in read_pcap(path)]
    assert stamps == sorted(stamps) and stamps[0] > 1_600_000_000 * 10**9  # wall-clock nanoseconds


def test_capture_from_config_survives_sigterm(run_dir):
    path = run_dir / "cfg.pcap"
    device = DeviceProcess("hub", run_dir, name="hub", capture=str(path)).start()
    try:
        with FakeNic(device.data, "h1:eth0") as h1, FakeNic(device.data, "h2:eth0") as h2:
            device.wait_attached(2)
            frames = [make_frame(2, 1, bytes([i]), size=100) for i in range(50)]
            h1.send(*frames)
            assert len(h2.recv(50)) == 50
            device.signal(signal.SIGTERM)
            assert device.wait(5) == 0
        assert [bytes(p) for p in rdpcap(str(path))] == frames
    finally:
        device.stop()


def test_second_capture_start_is_refused_while_one_runs(run_dir):
    with DeviceProcess("switch", run_dir, name="sw") as device:
        device.call("capture_start", path=str(run_dir / "a.pcap"))
        with pytest.raises(ControlError, match="already capturing") as caught:
            device.call("capture_start", path=str(run_dir / "b.pcap"))
        assert caught.value.errno == 16  # EBUSY
        device.call("capture_stop")
        with pytest.raises(ControlError) as missing:
            device.call("capture_start", path=str(run_dir / "no" / "c.pcap"))
        assert missing.value.errno == 2  # ENOENT, and the device keeps running
        assert device.call("status")["capture"] is None


def test_tshark_reads_the_capture(run_dir):
    tshark = require_tool("tshark")
    path = run_dir / "t.pcap"
    with DeviceProcess("hub", run_dir, name="hub", capture=str(path)) as device, \
            FakeNic(device.data, "h1:eth0") as h1, FakeNic(device.data, "h2:eth0") as h2:
        device.wait_attached(2)
        h1.send(*carried_frames())
        assert len(h2.recv(3)) == 3
    result = subprocess.run([tshark, "-r", str(path)], capture_output=True, text=True, timeout=20)
    assert result.returncode == 0 and len(result.stdout.strip().splitlines()) == 3
