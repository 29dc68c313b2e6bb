"""Trunk ports of a device in one process (config "trunks"): split horizon for floods and learned
unicast in a switch and a hub, and captures that skip what came in on a trunk. The trunks here are
fake NICs whose attachment names are listed as trunks; tests/integration/test_bus_curve_mesh.py
joins real devices over tcp."""
from __future__ import annotations

import pytest

from bus.hub import Hub
from bus.pcap import read_pcap
from bus.switch import Switch
from bus.testing import FakeNic, make_frame, short_run_dir
from bus.transport import ipc_endpoint
from tests.waiting import wait_for

pytestmark = pytest.mark.timeout(30)
BROADCAST = "ff:ff:ff:ff:ff:ff"
NAMES = ("h1:eth0", "h2:eth0", "lan0~lan0.1", "lan0~lan0.2")
TRUNKS = ["lan0~lan0.1", "lan0~lan0.2"]


@pytest.fixture(params=[Switch, Hub], ids=["switch", "hub"])
def device(request):
    """A device with two access NICs and two trunk NICs, all attached; yields (device, nics by name, run dir)."""
    with short_run_dir() as run_dir:
        kind = request.param
        config = {"name": "lan0", "data": ipc_endpoint(run_dir, "lan0.data"),
                  "control": ipc_endpoint(run_dir, "lan0.ctl"), "trunks": TRUNKS}
        dev = kind(config)
        nics = {name: FakeNic(config["data"], name) for name in NAMES}
        try:
            _pump(dev, lambda: len(dev.attached) == 4)
            yield dev, nics, run_dir
        finally:
            for nic in nics.values():
                nic.close()
            dev.close()


def _pump(dev, predicate, timeout=5.0):
    return wait_for(lambda: dev.loop.run_once(10) or predicate(), timeout=timeout, interval=0)


def _received(dev, nics):
    """Run the device a few more passes, then what each NIC got (in 0.1 s: nothing more is coming)."""
    for _ in range(5):
        dev.loop.run_once(5)
    return {name: nic.recv_for(0.1) for name, nic in nics.items()}


def test_trunk_ports_are_marked_and_listed(device):
    dev, _, _ = device
    assert {p["name"]: p["trunk"] for p in dev.list_ports()} == {
        "h1:eth0": False, "h2:eth0": False, "lan0~lan0.1": True, "lan0~lan0.2": True}
    assert sorted(p.name for p in dev.access) == ["h1:eth0", "h2:eth0"]  # in the order they said hello


def test_a_flood_from_a_trunk_never_goes_out_of_a_trunk(device):
    dev, nics, _ = device
    frame = make_frame(BROADCAST, 7, size=60)
    nics["lan0~lan0.1"].send(frame)
    _pump(dev, lambda: dev.ports[b"h2:eth0"].out.frames == 1)
    got = _received(dev, nics)
    assert got == {"h1:eth0": [frame], "h2:eth0": [frame], "lan0~lan0.1": [], "lan0~lan0.2": []}


def test_a_flood_from_an_access_port_goes_out_of_every_trunk(device):
    dev, nics, _ = device
    frame = make_frame(BROADCAST, 1, size=60)
    nics["h1:eth0"].send(frame)
    _pump(dev, lambda: dev.ports[b"lan0~lan0.2"].out.frames == 1)
    got = _received(dev, nics)
    assert got == {"h1:eth0": [], "h2:eth0": [frame], "lan0~lan0.1": [frame], "lan0~lan0.2": [frame]}


def test_learned_unicast_from_a_trunk_to_a_trunk_is_filtered():
    with short_run_dir() as run_dir:
        config = {"name": "lan0", "data": ipc_endpoint(run_dir, "lan0.data"),
                  "control": ipc_endpoint(run_dir, "lan0.ctl"), "trunks": TRUNKS}
        dev = Switch(config)
        nics = {name: FakeNic(config["data"], name) for name in NAMES}
        try:
            _pump(dev, lambda: len(dev.attached) == 4)
            nics["lan0~lan0.2"].send(make_frame(BROADCAST, 9, size=60))  # station 9 is behind trunk 2
            _pump(dev, lambda: dev.ports[b"h1:eth0"].out.frames == 1)
            _received(dev, nics)
            nics["lan0~lan0.1"].send(make_frame(9, 8, size=60))  # from trunk 1 to station 9: not relayed
            _pump(dev, lambda: dev.ports[b"lan0~lan0.1"].filtered == 1)
            assert _received(dev, nics) == {name: [] for name in NAMES}
            assert dev.ports[b"lan0~lan0.2"].out.frames == 0
            to_nine = make_frame(9, 1, size=60)
            nics["h1:eth0"].send(to_nine)  # from an access port the learned trunk is used
            _pump(dev, lambda: dev.ports[b"lan0~lan0.2"].out.frames == 1)
            assert _received(dev, nics)["lan0~lan0.2"] == [to_nine]
        finally:
            for nic in nics.values():
                nic.close()
            dev.close()


def test_capture_records_only_frames_that_entered_on_an_access_port(device):
    dev, nics, run_dir = device
    path = str(run_dir / "lan0.pcap")
    dev.capture_start(path)
    local = make_frame(BROADCAST, 1, b"local", size=60)
    relayed = make_frame(BROADCAST, 7, b"relayed", size=60)
    nics["h1:eth0"].send(local)
    nics["lan0~lan0.1"].send(relayed)
    _pump(dev, lambda: dev.ports[b"h2:eth0"].out.frames == 2)
    assert dev.capture_stop() == {"path": path, "frames": 1}
    assert [frame for _, frame in read_pcap(path)] == [local]
