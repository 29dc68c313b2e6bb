"""Device processes start, stop and die cleanly: shutdown op, SIGTERM, parent death, garbage."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap

import msgpack
import psutil
import pytest
import zmq

from bus.testing import DeviceProcess, FakeNic, make_frame
from tests.waiting import wait_for

pytestmark = pytest.mark.timeout(30)


@pytest.mark.parametrize("kind", ["switch", "hub", "p2p"])
def test_status_reports_name_kind_pid_and_uptime(run_dir, kind):
    with DeviceProcess(kind, run_dir, name="seg") as device:
        status = device.call("status")
        assert status["name"] == "seg" and status["kind"] == kind
        assert status["pid"] == device.process.pid and status["uptime"] >= 0


def test_shutdown_op_exits_zero_and_leaves_no_socket_files(run_dir):
    device = DeviceProcess("switch", run_dir, name="sw").start()
    try:
        assert device.call("shutdown") is True
        assert device.wait(5) == 0
        assert not any(path.exists() for path in device.socket_files)
    finally:
        device.stop()


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_sigterm_and_sigint_exit_zero_and_leave_no_socket_files(run_dir, signum):
    device = DeviceProcess("hub", run_dir, name="hub").start()
    try:
        with FakeNic(device.data, "h1:eth0") as nic:
            device.wait_attached(1)
            nic.send(make_frame(1, 2, size=60))
            device.signal(signum)
            assert device.wait(5) == 0
        assert not any(path.exists() for path in device.socket_files)
        assert "Traceback" not in device.log_text()
    finally:
        device.stop()


def test_device_dies_with_its_parent(run_dir):
    # An intermediate parent starts the device with parent_pid = itself, reports the pid, and dies.
    script = textwrap.dedent(f"""
        import os, sys, time
        from bus.testing import DeviceProcess
        device = DeviceProcess("switch", {str(run_dir)!r}, name="orphan", parent_pid=os.getpid()).start()
        print(device.process.pid, flush=True)
        os._exit(0)
    """)
    parent = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=20)
    assert parent.returncode == 0, parent.stderr
    pid = int(parent.stdout.split()[0])

    def gone() -> bool:
        try:
            return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
        except psutil.NoSuchProcess:
            return True

    try:
        wait_for(gone, timeout=5)
    except TimeoutError:
        os.kill(pid, signal.SIGKILL)
        pytest.fail("device outlived its parent")
    assert not (run_dir / "orphan.data").exists() and not (run_dir / "orphan.ctl").exists()


def test_device_whose_parent_is_already_gone_exits_at_once(run_dir):
    with pytest.raises(RuntimeError, match="did not start"):
        DeviceProcess("switch", run_dir, name="late", parent_pid=1).start(timeout=3)
    assert not (run_dir / "late.data").exists() and not (run_dir / "late.ctl").exists()


def test_garbage_on_data_and_control_sockets_does_not_crash_the_device(run_dir):
    with DeviceProcess("switch", run_dir, name="sw") as device:
        context = zmq.Context()
        try:
            raw = context.socket(zmq.DEALER)
            raw.setsockopt(zmq.LINGER, 0)
            raw.setsockopt(zmq.ROUTING_ID, b"\xff\xfe:bad-utf8")
            raw.connect(device.data)
            for garbage in (b"\x00", b"\x00\x0e" + b"x" * 3, b"\xff\xff", b"\x00\x01z"):
                raw.send(garbage)
            raw.send_multipart([b"two", b"parts"])
            control = context.socket(zmq.DEALER)
            control.setsockopt(zmq.LINGER, 0)
            control.connect(device.config["control"])
            control.send_multipart([b"", b"\xc1 not msgpack"])
            assert control.poll(2000)
            assert msgpack.unpackb(control.recv_multipart()[-1])["ok"] is False
            control.send_multipart([b"", msgpack.packb({"op": "set_port", "port": 7})])
            assert control.poll(2000)
            assert msgpack.unpackb(control.recv_multipart()[-1])["ok"] is False
            raw.close()
            control.close()
        finally:
            context.term()
        stats = device.call("stats")["device"]
        assert stats["malformed_batches"] == 4
        assert [p["name"] for p in device.call("ports")] == ["\\xff\\xfe:bad-utf8"]  # one port, however often it spoke
        assert device.process.poll() is None
        with FakeNic(device.data, "a:eth0") as a, FakeNic(device.data, "b:eth0") as b:
            device.wait_attached(3)
            frame = make_frame("ff:ff:ff:ff:ff:ff", 1, size=60)
            a.send(frame)
            assert b.recv() == [frame]


def test_bad_config_exits_nonzero_with_a_message(run_dir):
    device = DeviceProcess("switch", run_dir, name="bad", defaults={"mtu": 10})
    with pytest.raises(RuntimeError, match="did not start"):
        device.start(timeout=3)
    assert device.process.returncode == 1
    assert "mtu" in device.log_text()
    assert not any(path.exists() for path in device.socket_files)
