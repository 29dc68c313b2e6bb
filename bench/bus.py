"""`python -m bench bus`: frames through a hub and a switch, beside a bare ZeroMQ relay hop.

Every device figure sits beside a bare ROUTER relay process measured in the
same run (`bench/baseline.py`): one frame per message (the raw one-hop limit)
and, for the throughput rows, the same 32-frame batches moved as opaque blobs
(the best any batching relay could do). Two NICs are plain DEALERs speaking
the data-plane framing; the device is the real `bus.hub` / `bus.switch` code
in a forked process. Targets (from the task): switch >= 80% of the raw relay
frame rate at 1514 B, switch RTT <= 1.3x the bare relay RTT. The figures
measured outside this benchmark, to read these against, are in
docs/design.md ("Measured baselines").
"""
from __future__ import annotations

import os
import statistics
import tempfile
import time
from typing import Any

import zmq

from bus.transport import ControlClient, ipc_endpoint, pack_frames, unpack_frames

from . import baseline
from .harness import Row

BATCH = 32
RTT_ROUNDS = 5
RTT_SAMPLES = 1000
MAC_A = bytes.fromhex("020000000001")
MAC_B = bytes.fromhex("020000000002")


def _frame(dst: bytes, src: bytes, size: int) -> bytes:
    return dst + src + b"\x88\xb5" + bytes(size - 14)


def _run_device(kind: str, config: dict[str, Any]) -> None:
    module = __import__(f"bus.{kind}", fromlist=["run"])
    os._exit(module.run(config))


class _Device:
    """A real device in a forked child, on ipc endpoints in a private directory."""

    def __init__(self, kind: str, directory: str) -> None:
        self.config = {"name": kind, "kind": kind, "data": ipc_endpoint(directory, f"{kind}.data"),
                       "control": ipc_endpoint(directory, f"{kind}.ctl"), "seed": 1,
                       "defaults": {}, "ports": {}, "parent_pid": os.getpid()}
        self.process = baseline._fork.Process(target=_run_device, args=(kind, self.config))
        self.process.start()
        self.control = ControlClient(self.config["control"], timeout=2.0)
        deadline = time.monotonic() + 10
        while True:
            try:
                self.control.call("status")
                break
            except TimeoutError:
                if time.monotonic() > deadline:
                    raise

    @property
    def data(self) -> str:
        return self.config["data"]

    def stop(self) -> None:
        try:
            self.control.call("shutdown")
        except Exception:
            self.process.terminate()
        self.process.join(5)
        self.control.close()


def _sender(endpoint: str, message: bytes, messages: int, done: Any) -> None:
    context = zmq.Context()
    dealer = baseline._dealer(context, endpoint, b"a")
    time.sleep(0.1)
    for _ in range(messages):
        dealer.send(message, copy=False)  # blocking: the device's queue pushes back on us
    done.wait(60)
    dealer.close(linger=0)
    context.term()


def device_frame_rate(kind: str, size: int, count: int) -> tuple[float, float]:
    """(frames/s delivered, share delivered) from NIC a to NIC b through a device, 32-frame batches."""
    with tempfile.TemporaryDirectory(prefix="netemu-bench-") as directory:
        device = _Device(kind, directory)
        context = zmq.Context()
        receiver = baseline._dealer(context, device.data, b"b")
        # Teach a switch where b lives, so the run measures forwarding, not flooding.
        receiver.send(pack_frames([_frame(b"\xff" * 6, MAC_B, 60)]))
        time.sleep(0.1)
        messages = max(2, count // BATCH)
        message = pack_frames([_frame(MAC_B, MAC_A, size)] * BATCH)
        done = baseline._fork.Event()
        sender = baseline._fork.Process(target=_sender, args=(device.data, message, messages, done))
        sender.start()
        received = 0
        first = last = 0.0
        while receiver.poll(2000):
            batch = receiver.recv()
            last = time.perf_counter()
            if not received:
                first = last
            received += len(unpack_frames(batch))
            if received >= messages * BATCH:
                break
        done.set()
        sender.join(10)
        receiver.close(linger=0)
        context.term()
        device.stop()
    rate = (received - BATCH) / (last - first) if last > first else float("nan")
    return rate, received / (messages * BATCH)


def _echo_reply(endpoint: str, reply: bytes) -> None:
    context = zmq.Context()
    dealer = baseline._dealer(context, endpoint, b"b")
    try:
        while True:
            message = dealer.recv()
            if message == b"quit":
                return
            dealer.send(reply)
    finally:
        dealer.close(linger=0)
        context.term()


def device_rtt(kind: str, size: int, count: int) -> list[float]:
    """RTT samples (s) of one frame a -> device -> b (echo) -> device -> a."""
    with tempfile.TemporaryDirectory(prefix="netemu-bench-") as directory:
        device = _Device(kind, directory)
        reply = pack_frames([_frame(MAC_A, MAC_B, size)])
        echo = baseline._fork.Process(target=_echo_reply, args=(device.data, reply))
        echo.start()
        time.sleep(0.2)
        samples = baseline.round_trip_times(device.data, _frame(MAC_B, MAC_A, size), count, pack=True)
        echo.terminate()
        echo.join(5)
        device.stop()
    return samples


def _p99(samples: list[float]) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))]


def run() -> list[Row]:
    rows: list[Row] = []
    for size, count in ((1514, 200_000), (64, 400_000)):
        relay_single = baseline.relay_frame_rate(size, count // 4)
        relay_batched = baseline.relay_frame_rate(size, count, BATCH)
        for kind in ("hub", "switch"):
            rate, delivered = device_frame_rate(kind, size, count)
            note = f"{BATCH} frames/msg vs 1/msg; delivered {delivered:.1%}"
            target = ">= 0.8" if (kind, size) == ("switch", 1514) else ""
            rows.append(Row(f"{kind} {size} B frames/s", rate, "frames/s", relay_single, "bare relay, 1 frame/msg",
                            f"{target} ({note})" if target else note))
            rows.append(Row(f"{kind} {size} B frames/s vs batched relay", rate, "frames/s", relay_batched,
                            f"bare relay, {BATCH} frames/msg opaque"))
            if size == 1514:
                rows.append(Row(f"{kind} {size} B Gbit/s", rate * size * 8 / 1e9, "Gbit/s",
                                relay_single * size * 8 / 1e9, "bare relay, 1 frame/msg"))
    # Latency is what a loaded 2-core machine disturbs most: alternate short
    # rounds of relay and switch so both see the same background.
    relay: list[float] = []
    switch: list[float] = []
    relay_medians, switch_medians = [], []
    for _ in range(RTT_ROUNDS):
        relay_round = baseline.relay_rtt(64, RTT_SAMPLES)
        switch_round = device_rtt("switch", 64, RTT_SAMPLES)
        relay += relay_round
        switch += switch_round
        relay_medians.append(statistics.median(relay_round))
        switch_medians.append(statistics.median(switch_round))
    rows.append(Row("switch RTT 64 B median", statistics.median(switch_medians) * 1e6, "us",
                    statistics.median(relay_medians) * 1e6, "bare relay RTT median",
                    f"<= 1.3 (median of {RTT_ROUNDS} alternating rounds)"))
    rows.append(Row("switch RTT 64 B p99", _p99(switch) * 1e6, "us", _p99(relay) * 1e6, "bare relay RTT p99"))
    return rows
