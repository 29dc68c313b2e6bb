"""Device and node kernel processes on tcp://127.0.0.1 with CURVE (config "curve"): the control
channel between processes, refused peers in the device's log, and a p2p link whose far NIC attaches
over its `data_tcp` endpoint (the cross-machine p2p link of a cluster emulation)."""
from __future__ import annotations

import socket

import pytest

from bus import curve
from bus.testing import DeviceProcess, FakeNic, make_frame
from bus.transport import ControlClient, ControlTimeout
from tests.integration.kernels import KernelProcess, interface
from tests.waiting import wait_for

pytestmark = pytest.mark.timeout(60)


def free_tcp_endpoint() -> str:
    """tcp://127.0.0.1:<a port the kernel just gave out> (bound to port 0, then released)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return f"tcp://127.0.0.1:{probe.getsockname()[1]}"


@pytest.fixture
def keys():
    keys = curve.CurveKeys.generate()
    registered: list[str] = []

    def register(*endpoints: str) -> None:
        curve.register(endpoints, keys)
        registered.extend(endpoints)

    yield keys, register
    curve.unregister(registered)


def test_a_device_answers_its_control_channel_over_curve_and_refuses_strangers(run_dir, keys):
    keys, register = keys
    control = free_tcp_endpoint()
    register(control)  # the controller's side: keys by endpoint
    with DeviceProcess("switch", run_dir, name="sw", control=control, curve=keys.as_dict()) as device:
        assert device.call("status")["name"] == "sw"
        assert ControlClient.fan_out([(control, "status", None)] * 2, timeout=5.0)[0]["kind"] == "switch"
        stranger = curve.CurveKeys.generate()
        impostor = curve.CurveKeys(keys.server_public, keys.server_secret, stranger.client_public,
                                   stranger.client_secret)
        with ControlClient(control, timeout=0.5, keys=impostor) as client, pytest.raises(ControlTimeout):
            client.call("status")
        curve.unregister([control])
        with ControlClient(control, timeout=0.5) as plaintext, pytest.raises(ControlTimeout):
            plaintext.call("status")
        register(control)
        wait_for(lambda: f"refused unauthenticated peer 127.0.0.1 on {control} (unknown client key)"
                 in device.log_text(), timeout=5.0)
        # Which side of the greeting fails first is a race: a mechanism mismatch, or the peer hung up.
        wait_for(lambda: f"on {control} (handshake failed: " in device.log_text(), timeout=5.0)
        assert device.call("status")["name"] == "sw"  # still serving the right client
        assert device.stop() == 0  # closing the ZAP handler and monitors let the context terminate


def test_a_p2p_link_carries_frames_to_a_nic_attached_over_tcp_with_curve(run_dir, keys):
    keys, register = keys
    data_tcp = free_tcp_endpoint()
    register(data_tcp)
    with DeviceProcess("p2p", run_dir, name="l1", data_tcp=data_tcp, curve=keys.as_dict()) as link:
        assert link.call("status")["data_tcp"] == data_tcp
        near = FakeNic(link.data, "h1:eth0")  # same machine: ipc, plaintext as ever
        far = FakeNic(data_tcp, "h2:eth0")  # another machine: tcp, CURVE (keys from the registry)
        try:
            link.wait_attached(2)
            there, back = make_frame(2, 1, b"there", size=60), make_frame(1, 2, b"back", size=60)
            near.send(there)
            assert far.recv() == [there]
            far.send(back)
            assert near.recv() == [back]  # the reply went out of the socket h2 spoke on
            burst = [make_frame(1, 2, bytes([n]), size=200) for n in range(200)]
            far.send(*burst)
            assert near.recv(200) == burst
        finally:
            near.close()
            far.close()


def test_a_nic_with_the_wrong_keys_never_attaches_over_tcp(run_dir, keys):
    keys, register = keys
    data_tcp = free_tcp_endpoint()
    with DeviceProcess("p2p", run_dir, name="l1", data_tcp=data_tcp, curve=keys.as_dict()) as link:
        stranger = curve.CurveKeys.generate()
        curve.register([data_tcp], curve.CurveKeys(keys.server_public, keys.server_secret,
                                                   stranger.client_public, stranger.client_secret))
        try:
            intruder = FakeNic(data_tcp, "evil:eth0")
            near = FakeNic(link.data, "h1:eth0")
        finally:
            curve.unregister([data_tcp])
        try:
            wait_for(lambda: "refused unauthenticated peer 127.0.0.1 on" in link.log_text(), timeout=5.0)
            near.send(make_frame("ff:ff:ff:ff:ff:ff", 1, size=60))
            assert intruder.recv_for(0.3) == []
            assert [p["name"] for p in link.call("ports")] == ["h1:eth0"]
        finally:
            intruder.close()
            near.close()


def test_a_node_kernel_on_tcp_with_curve_pings_across_a_p2p_link(run_dir, keys):
    """nodes/kernel.py has no CURVE code: prepare_process, ControlServer, DataPort and EventLoop do it."""
    keys, register = keys
    data_tcp, control = free_tcp_endpoint(), free_tcp_endpoint()
    register(data_tcp, control)
    with DeviceProcess("p2p", run_dir, name="l1", data_tcp=data_tcp, curve=keys.as_dict()) as link:
        near = KernelProcess(run_dir, "h1", [interface("eth0", "02:00:00:00:00:01", "10.0.0.1/24", link.data, "h1")])
        far = KernelProcess(run_dir, "h2", [interface("eth0", "02:00:00:00:00:02", "10.0.0.2/24", data_tcp, "h2")],
                            control=control, curve=keys.as_dict())
        try:
            near.start()
            far.start()
            link.wait_attached(2)
            assert near.ping("10.0.0.2", count=2)["received"] == 2
            assert far.ping("10.0.0.1", count=2)["received"] == 2
            stranger = curve.CurveKeys.generate()
            with ControlClient(control, timeout=0.5, keys=curve.CurveKeys(
                    keys.server_public, keys.server_secret, stranger.client_public, stranger.client_secret)) as client, \
                    pytest.raises(ControlTimeout):
                client.call("status")
            wait_for(lambda: f"refused unauthenticated peer 127.0.0.1 on {control}" in far.log_path.read_text(),
                     timeout=5.0)
        finally:
            near.stop()
            assert far.stop() == 0  # the ZAP handler closed with the control server: the context terminated
