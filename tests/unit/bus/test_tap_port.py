"""The TAP port of a device (bus/tap.py) without root: a SOCK_SEQPACKET socketpair stands in for the
TAP's fd (one read is one message, one write one message, as a TAP with IFF_NO_PI reads and writes
one Ethernet frame). The real TAP is tests/scenarios/test_tap_basic.py's (root)."""
from __future__ import annotations

import socket

import pytest

from bus.hub import Hub
from bus.switch import Switch
from bus.tap import OpenedTap, attach_tap, tap_port_name
from bus.testing import FakeNic, make_frame, short_run_dir
from bus.transport import ipc_endpoint
from tests.waiting import wait_for

LINUX_MAC, NODE_MAC = "02:4c:00:00:00:01", "02:00:0a:00:00:0a"


@pytest.fixture
def bridged():
    """A switch with a TAP port whose Linux end is `linux` (a socket), and a NIC h1:eth0 on it."""
    with short_run_dir() as run_dir:
        config = {"name": "lan0", "data": ipc_endpoint(run_dir, "lan0.data"),
                  "control": ipc_endpoint(run_dir, "lan0.ctl"), "ports": {"tap@ntap0": {"mtu": 1500}}}
        switch = Switch(config)
        ours, linux = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        ours.setblocking(False)
        opened = []

        def opener(device, netns, mtu):
            opened.append((device, netns, mtu))
            return OpenedTap(ours.detach(), device, netns, True)

        link = attach_tap(switch, {"device": "ntap0", "netns": "blue", "port": "tap@ntap0"}, opener)
        switch.tap = link
        nic = FakeNic(config["data"], "h1:eth0")
        try:
            nic.hello()
            wait_for(lambda: switch.loop.run_once(10) or len(switch.attached) == 2, timeout=5.0, interval=0)
            yield switch, link, linux, nic, opened
        finally:
            nic.close()
            switch.close()
            linux.close()


def _pump(switch, predicate, timeout=5.0):
    return wait_for(lambda: switch.loop.run_once(10) or predicate(), timeout=timeout, interval=0)


def test_the_tap_is_opened_with_the_port_mtu_and_attached(bridged):
    switch, link, _, _, opened = bridged
    assert opened == [("ntap0", "blue", 1500)]
    port = switch.ports[b"tap@ntap0"]
    assert port.attached and port in switch.attached and link.port is port
    assert switch.status()["tap"] == {"device": "ntap0", "netns": "blue", "created": True, "port": "tap@ntap0",
                                      "read_errors": 0, "write_errors": 0}
    assert tap_port_name("ntap0") == "tap@ntap0"


def test_frames_from_linux_reach_the_segment_and_back_one_frame_per_write(bridged):
    switch, _, linux, nic, _ = bridged
    broadcast = make_frame("ff:ff:ff:ff:ff:ff", LINUX_MAC, b"who-has", size=60)
    linux.send(broadcast)
    received = []
    _pump(switch, lambda: received.extend(nic.recv(1, timeout=0.01)) or received)
    assert received == [broadcast]
    # The switch learnt Linux behind the TAP port: unicast replies go only there, each its own write.
    replies = [make_frame(LINUX_MAC, NODE_MAC, bytes([n]) * 100) for n in range(3)]
    nic.send(*replies)
    got = []
    linux.setblocking(False)

    def read_all():
        try:
            while True:
                got.append(linux.recv(65536))
        except BlockingIOError:
            pass
        return len(got) == 3
    _pump(switch, read_all)
    assert got == replies
    stats = switch.stats()["ports"]["tap@ntap0"]
    assert (stats["rx_packets"], stats["tx_packets"]) == (1, 3)


def test_a_frame_from_linux_over_the_port_mtu_is_dropped_and_counted(bridged):
    switch, _, linux, nic, _ = bridged
    linux.send(make_frame("ff:ff:ff:ff:ff:ff", LINUX_MAC, size=1514 + 1))
    linux.send(make_frame("ff:ff:ff:ff:ff:ff", LINUX_MAC, b"ok", size=1514))
    received = []
    _pump(switch, lambda: received.extend(nic.recv(1, timeout=0.01)) or received)
    assert [len(frame) for frame in received] == [1514]
    assert switch.stats()["ports"]["tap@ntap0"]["dropped_mtu"] == 1


def test_writes_that_fail_are_counted_not_raised(bridged):
    switch, link, linux, nic, _ = bridged
    linux.shutdown(socket.SHUT_RD)  # writes to our end now fail (EPIPE), as to a TAP set down (EIO)
    nic.send(make_frame("ff:ff:ff:ff:ff:ff", NODE_MAC, b"x", size=60))
    _pump(switch, lambda: link.write_errors == 1)
    assert switch.stats()["ports"]["tap@ntap0"]["dropped_queue"] == 1


def test_a_tap_gone_stops_being_read(bridged):
    switch, link, linux, _, _ = bridged
    fd = link.tap.fd
    assert fd in switch.loop._fd_readers
    linux.close()  # our end now reads end of file: the device stops reading it, and runs on
    _pump(switch, lambda: fd not in switch.loop._fd_readers)
    switch.loop.run_once(10)


def test_a_hub_bridges_too():
    with short_run_dir() as run_dir:
        hub = Hub({"name": "hub0", "data": ipc_endpoint(run_dir, "hub0.data"),
                   "control": ipc_endpoint(run_dir, "hub0.ctl")})
        ours, linux = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        ours.setblocking(False)
        try:
            hub.tap = attach_tap(hub, {"device": "t0", "netns": None},
                                 lambda device, netns, mtu: OpenedTap(ours.detach(), device, netns, False))
            assert b"tap@t0" in hub.ports and hub.status()["tap"]["created"] is False
        finally:
            hub.close()
            linux.close()
