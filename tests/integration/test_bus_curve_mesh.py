"""One segment as three switch processes (one per "machine") in a full mesh of CURVE trunks over
tcp://127.0.0.1, as a cluster emulation splits a segment: every frame reaches every other host
exactly once (split horizon: no loop, no duplicate), and the three captures together hold each
frame once."""
from __future__ import annotations

import contextlib
import itertools

import pytest

from bus import curve
from bus.pcap import read_pcap
from bus.testing import DeviceProcess, FakeNic, make_frame
from tests.integration.test_bus_curve import free_tcp_endpoint

pytestmark = pytest.mark.timeout(60)
BROADCAST = "ff:ff:ff:ff:ff:ff"
SEGMENT = ("lan1", "lan1.1", "lan1.2")
HOSTS = {"lan1": ["h1:eth0", "h4:eth0"], "lan1.1": ["h2:eth0"], "lan1.2": ["h3:eth0"]}
MACS = {"h1:eth0": 1, "h2:eth0": 2, "h3:eth0": 3, "h4:eth0": 4}


@pytest.fixture
def mesh(run_dir):
    """Three switches: each dials the data_tcp of those after it; yields (devices, nics by attachment)."""
    keys = curve.CurveKeys.generate()
    data_tcp = {name: free_tcp_endpoint() for name in SEGMENT}
    trunks = {name: [] for name in SEGMENT}
    uplinks = {name: [] for name in SEGMENT}
    for near, far in itertools.combinations(SEGMENT, 2):
        attachment = f"{near}~{far}"
        uplinks[near].append({"endpoint": data_tcp[far], "attachment": attachment})
        trunks[near].append(attachment)
        trunks[far].append(attachment)
    with contextlib.ExitStack() as stack:
        devices = {}
        for name in reversed(SEGMENT):  # order does not matter (DEALERs reconnect), but this is the usual one
            devices[name] = stack.enter_context(DeviceProcess(
                "switch", run_dir, name=name, data_tcp=data_tcp[name], trunks=trunks[name],
                uplinks=uplinks[name], curve=keys.as_dict(), capture=str(run_dir / f"{name}.pcap")))
        nics = {}
        for name, attachments in HOSTS.items():
            for attachment in attachments:
                nics[attachment] = stack.enter_context(FakeNic(devices[name].data, attachment))
        for name in SEGMENT:
            devices[name].wait_attached(len(HOSTS[name]) + 2)
        yield devices, nics


def _delivered_exactly(nics, expected):
    """Each NIC receives exactly the frames `expected` gives it (in any order), then nothing more."""
    got = {attachment: sorted(nic.recv(len(expected[attachment]))) for attachment, nic in nics.items()}
    assert got == {attachment: sorted(frames) for attachment, frames in expected.items()}
    extra = {attachment: nic.recv_for(0.1) for attachment, nic in nics.items()}
    assert extra == {attachment: [] for attachment in nics}, "duplicates or a loop"


def test_frames_cross_the_mesh_exactly_once_and_are_captured_once(mesh, run_dir):
    devices, nics = mesh
    broadcasts = {sender: make_frame(BROADCAST, MACS[sender], sender.encode(), size=60) for sender in nics}
    for sender, frame in broadcasts.items():  # every switch learns every host
        nics[sender].send(frame)
    _delivered_exactly(nics, {receiver: [f for s, f in broadcasts.items() if s != receiver] for receiver in nics})
    unicasts = {(sender, receiver): make_frame(MACS[receiver], MACS[sender], f"{sender}>{receiver}".encode(), size=60)
                for sender, receiver in itertools.permutations(nics, 2)}
    for (sender, _), frame in unicasts.items():
        nics[sender].send(frame)
    _delivered_exactly(nics, {receiver: [f for (_, r), f in unicasts.items() if r == receiver] for receiver in nics})
    sent = [*broadcasts.values(), *unicasts.values()]
    stats = {name: device.call("stats")["ports"] for name, device in devices.items()}
    trunk_rx = sum(port["rx_packets"] for ports in stats.values() for name, port in ports.items() if "~" in name)
    # A broadcast crosses two trunks (to each other machine), a unicast between machines one.
    assert trunk_rx == len(nics) * 2 + sum(1 for s, r in itertools.permutations(nics, 2)
                                           if _machine(s) != _machine(r))
    captured = []
    for name, device in devices.items():
        result = device.call("capture_stop")
        captured += [frame for _, frame in read_pcap(result["path"])]
    assert sorted(captured) == sorted(sent)  # each frame once, in the pcap of the switch it entered


def _machine(attachment: str) -> str:
    return next(name for name, attachments in HOSTS.items() if attachment in attachments)
