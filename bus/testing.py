"""Test helpers for the data plane: a fake NIC, a device in a real child process, short run dirs.

Used by tests/integration/test_bus_*.py and by anyone who needs a live
segment in a test (node kernel tests attach real kernels beside fake NICs).
Everything here cleans up after itself: `DeviceProcess` reaps its child and
checks the socket files are gone; `short_run_dir` removes its directory.
"""
from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Iterator

import zmq

from .ether import TPID_8021Q
from .transport import ControlClient, DataPort, ipc_endpoint

REPO_ROOT = Path(__file__).resolve().parent.parent
TEST_ETHERTYPE = 0x88B5  # IEEE 802 "local experimental" ethertype: nobody else parses it


def mac_bytes(value: str | bytes | int) -> bytes:
    """A 6-byte MAC from ``02:00:00:00:00:01``, raw bytes, or an int (``mac_bytes(1)``)."""
    if isinstance(value, int):
        return bytes([2, 0]) + value.to_bytes(4, "big")
    if isinstance(value, str):
        return bytes.fromhex(value.replace(":", ""))
    return bytes(value)


def make_frame(dst: str | bytes | int, src: str | bytes | int, payload: bytes = b"", *,
               ethertype: int = TEST_ETHERTYPE, size: int | None = None, vlan: int | None = None) -> bytes:
    """An Ethernet II frame (optionally 802.1Q tagged) padded with zeros to `size` bytes."""
    header = mac_bytes(dst) + mac_bytes(src)
    if vlan is not None:
        header += TPID_8021Q + vlan.to_bytes(2, "big")
    frame = header + ethertype.to_bytes(2, "big") + payload
    if size is not None:
        frame = frame + bytes(max(0, size - len(frame)))
    return frame


@contextlib.contextmanager
def short_run_dir(prefix: str = "ne-") -> Iterator[Path]:
    """A private directory under /tmp, short enough for ipc paths (pytest's tmp_path may not be)."""
    path = Path(tempfile.mkdtemp(prefix=prefix, dir="/tmp"))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


class FakeNic:
    """A NIC with no stack behind it: sends and receives raw frames through a device port."""

    def __init__(self, endpoint: str, attachment: str, context: zmq.Context | None = None) -> None:
        self._own_context = context is None
        self.context = context if context is not None else zmq.Context()
        self.port = DataPort(self.context, endpoint, attachment)
        self.attachment = attachment

    def hello(self) -> None:
        self.port.hello()

    def send(self, *frames: bytes) -> None:
        """Send frames in one message (as a NIC flushing its queue would)."""
        self.port.send_frames(frames)

    def send_raw(self, message: bytes) -> None:
        """Send a message exactly as given (malformed batches, hellos)."""
        self.port.socket.send(message)

    def recv(self, count: int = 1, timeout: float = 2.0) -> list[bytes]:
        """Frames received until `count` arrived or `timeout` passed (may return fewer)."""
        frames: list[bytes] = []
        deadline = time.monotonic() + timeout
        while len(frames) < count:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            if self.port.socket.poll(max(1, int(remaining * 1000))):
                frames += self.port.receive()
        return frames

    def recv_for(self, duration: float) -> list[bytes]:
        """Every frame received during `duration` seconds (to show that nothing arrives)."""
        frames: list[bytes] = []
        deadline = time.monotonic() + duration
        while (remaining := deadline - time.monotonic()) > 0:
            if self.port.socket.poll(max(1, int(remaining * 1000))):
                frames += self.port.receive()
        return frames

    def close(self) -> None:
        self.port.close()
        if self._own_context:
            self.context.term()

    def __enter__(self) -> "FakeNic":
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


def stop_child(process: subprocess.Popen[bytes] | None, control: ControlClient | None,
               timeout: float = 5.0) -> int | None:
    """Stop a child speaking the control protocol: `shutdown`, then SIGTERM, then SIGKILL; always reaps."""
    if process is None:
        return None
    if process.poll() is None and control is not None:
        with contextlib.suppress(Exception):
            control.request("shutdown", timeout=1.0)
    for escalation in (None, signal.SIGTERM, signal.SIGKILL):
        if escalation is not None and process.poll() is None:
            process.send_signal(escalation)
        try:
            process.wait(timeout)
            break
        except subprocess.TimeoutExpired:
            continue
    if control is not None:
        control.close()
    return process.returncode


class DeviceProcess:
    """A bus device started with `python -m bus.<kind> CONFIG.json` in a child process.

    ``with DeviceProcess("switch", run_dir, name="lan1") as dev:`` waits until
    it answers `status`, and on exit asks it to shut down, escalates to
    SIGTERM then SIGKILL, reaps it, and raises if it left socket files.
    """

    def __init__(self, kind: str, run_dir: str | os.PathLike[str], name: str = "dev", **config: Any) -> None:
        self.kind = kind
        self.run_dir = Path(run_dir)
        self.name = name
        self.config: dict[str, Any] = {
            "name": name, "kind": kind,
            "data": ipc_endpoint(self.run_dir, f"{name}.data"),
            "control": ipc_endpoint(self.run_dir, f"{name}.ctl"),
            "seed": 1, "capture": None, "defaults": {}, "ports": {},
            "parent_pid": os.getpid(),
            **config,
        }
        self.config_path = self.run_dir / f"{name}.json"
        self.log_path = self.run_dir / f"{name}.log"
        self.process: subprocess.Popen[bytes] | None = None
        self.control: ControlClient | None = None

    @property
    def data(self) -> str:
        return self.config["data"]

    @property
    def socket_files(self) -> list[Path]:
        return [Path(self.config[key][len("ipc://"):]) for key in ("data", "control")
                if self.config[key].startswith("ipc://")]

    def start(self, timeout: float = 10.0) -> "DeviceProcess":
        self.config_path.write_text(json.dumps(self.config))
        with open(self.log_path, "wb") as log:
            self.process = subprocess.Popen([sys.executable, "-m", f"bus.{self.kind}", str(self.config_path)],
                                            cwd=REPO_ROOT, stdout=log, stderr=subprocess.STDOUT)
        self.control = ControlClient(self.config["control"], timeout=1.0)
        deadline = time.monotonic() + timeout
        while True:
            try:
                self.control.call("status")
                return self
            except TimeoutError:
                if self.process.poll() is not None or time.monotonic() > deadline:
                    self.stop()
                    raise RuntimeError(f"{self.kind} {self.name} did not start:\n{self.log_text()}") from None

    def call(self, op: str, /, **args: Any) -> Any:
        assert self.control is not None, "device not started"
        return self.control.call(op, **args)

    def wait_attached(self, count: int, timeout: float = 5.0) -> None:
        """Wait until `count` ports are attached (NIC hellos are processed asynchronously)."""
        deadline = time.monotonic() + timeout
        while (attached := self.call("status")["attached"]) < count:
            if time.monotonic() > deadline:
                raise AssertionError(f"{self.name}: {attached} ports attached, expected {count}")
            time.sleep(0.01)

    def port_stats(self, port: str) -> dict[str, Any]:
        return self.call("stats")["ports"][port]

    def log_text(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def signal(self, signum: int) -> None:
        assert self.process is not None
        self.process.send_signal(signum)

    def wait(self, timeout: float = 5.0) -> int:
        assert self.process is not None
        return self.process.wait(timeout)

    def stop(self, timeout: float = 5.0) -> int | None:
        """Ask politely, then SIGTERM, then SIGKILL; always reaps. Returns the exit code."""
        return stop_child(self.process, self.control, timeout)

    def __enter__(self) -> "DeviceProcess":
        return self.start()

    def __exit__(self, exc_type: object, *exc_info: object) -> None:
        self.stop()
        left = [str(path) for path in self.socket_files if path.exists()]
        if left and exc_type is None:
            raise AssertionError(f"{self.kind} {self.name} left socket files behind: {left}")
