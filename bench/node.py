"""`python -m bench node`: ping through a switch and forwarding through a router, beside bare relays.

Before changing this file, read bench/bus.py (the model) and
/work/shared/reference/baselines.md.

Ping: two real node kernels (`nodes.kernel.run` in forked processes) on a
real switch; the RTTs are the kernel's own `ping` op (the control channel
starts it, the node's timers send the echoes, the replies are timed by the
stack). Beside it, in alternating rounds so both see the same background
load, a bare ZeroMQ relay with an echo behind it (the same four process
hops: a -> relay -> b -> relay -> a) carrying frames of the ping's size:

* paced like the ping (one round trip per ping interval, so every process
  sleeps between echoes, as the ping's processes do): the like-for-like
  baseline the target is measured against;
* back to back (`baseline.relay_rtt`: each round trip starts when the last
  one ends), which never lets the processes go idle.

On these virtual machines the processes' sleep matters more than any code:
a fixed piece of work runs several times slower after a few milliseconds of
idleness (caches, branch predictors and the vCPU itself are cold again), so
the paced relay is slower than the back-to-back one, and code that does more
per hop (the switch and the kernels) pays more for it.

Forwarding: a traffic generator (a DEALER speaking the data-plane framing,
32 frames per message as a NIC flushing its queue) floods 1514-byte UDP
frames through a p2p link into a router kernel, whose other interface is on
a second p2p link with a counting sink. Loss is offered minus forwarded,
split by where it happened (the link's queue toward the router, the router's
rx ring). A second run offers half the measured rate to show that nothing is
lost below capacity. Baselines: a bare relay hop with one frame per message
and with 32-frame batches moved as opaque blobs.
"""
from __future__ import annotations

import os
import statistics
import tempfile
import time
from typing import Any

import psutil
import zmq

from bus.transport import ControlClient, ipc_endpoint, pack_frames, unpack_frames
from nodes.wire.addresses import IPv4Address
from nodes.wire.icmp import IcmpMessage
from nodes.wire.ipv4 import IPPROTO_UDP, IPv4Header
from nodes.wire.udp import UdpHeader

from . import baseline
from .bus import _Device
from .harness import Row

PING_ROUNDS = 3
PING_COUNT = 600
PING_INTERVAL = 0.002  # s: 500 echoes a second, every process sleeps between them
PING_SIZE = 56  # ping's default: 98-byte frames
PING_FRAME = 14 + 20 + 8 + PING_SIZE

FORWARD_FRAMES = 200_000
FORWARD_SIZE = 1514
BATCH = 32

MAC = {"h1": "02:00:00:00:00:01", "h2": "02:00:00:00:00:02",
       "gen": "02:00:00:00:01:02", "r1a": "02:00:00:00:01:01", "r1b": "02:00:00:00:02:01", "sink": "02:00:00:00:02:02"}


def _mac(name: str) -> bytes:
    return bytes.fromhex(MAC[name].replace(":", ""))


def _p99(samples: list[float]) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))]


# ----------------------------------------------------------------- processes

def _run_kernel(config: dict[str, Any]) -> None:
    from nodes import kernel

    os._exit(kernel.run(config))


class _Kernel:
    """A real node kernel in a forked child; answers `status` when constructed."""

    def __init__(self, config: dict[str, Any]) -> None:
        self.config = config
        self.process = baseline._fork.Process(target=_run_kernel, args=(config,))
        self.process.start()
        self.control = ControlClient(config["control"], timeout=2.0)
        deadline = time.monotonic() + 10
        while True:
            try:
                self.control.call("status")
                break
            except TimeoutError:
                if time.monotonic() > deadline or not self.process.is_alive():
                    self.stop()
                    raise

    def call(self, op: str, timeout: float | None = None, **args: Any) -> Any:
        return self.control.request(op, args, timeout=timeout)

    def stop(self) -> None:
        try:
            self.control.request("shutdown", timeout=1.0)
        except Exception:
            self.process.terminate()
        self.process.join(5)
        if self.process.is_alive():
            self.process.kill()
            self.process.join(5)
        self.control.close()


def _interface(name: str, mac: str, ip: str, endpoint: str, node: str) -> dict[str, Any]:
    return {"name": name, "mac": mac, "ip": ip, "mtu": 1500, "endpoint": endpoint, "attachment": f"{node}:{name}"}


def _kernel_config(directory: str, name: str, kind: str, interfaces: list[dict[str, Any]],
                   **extra: Any) -> dict[str, Any]:
    return {"name": name, "kind": kind, "control": ipc_endpoint(directory, f"{name}.ctl"),
            "interfaces": interfaces, "routes": [], "arp": [], "sysctl": {}, "hosts": {},
            "parent_pid": os.getpid(), **extra}


# ---------------------------------------------------------------------- ping

def ping_rtts(count: int = PING_COUNT, interval: float = PING_INTERVAL) -> list[float]:
    """RTT samples (s) of the kernel's own ping from h1 to h2 across one switch."""
    with tempfile.TemporaryDirectory(prefix="netemu-bench-") as directory:
        switch = _Device("switch", directory)
        hosts = {"h1": "10.0.0.1", "h2": "10.0.0.2"}
        kernels = []
        try:
            for name in ("h1", "h2"):
                interface = _interface("eth0", MAC[name], f"{hosts[name]}/24", switch.data, name)
                kernels.append(_Kernel(_kernel_config(directory, name, "host", [interface], hosts=hosts)))
            h1 = kernels[0]
            # Warm up: ARP resolved, the switch has learnt both stations.
            h1.control.request("ping", {"dst": "h2", "count": 5, "interval": 0.02}, timeout=10)
            result = h1.control.request("ping", {"dst": "h2", "count": count, "interval": interval,
                                                 "size": PING_SIZE, "timeout": 1.0}, timeout=count * interval + 15)
        finally:
            for kernel in kernels:
                kernel.stop()
            switch.stop()
    return [reply["rtt_ms"] / 1000.0 for reply in result["replies"]]


def paced_relay_rtts(size: int, count: int, period: float) -> list[float]:
    """RTT samples (s) through a bare relay to an echo and back, one round trip started every `period`."""
    with tempfile.TemporaryDirectory(prefix="netemu-bench-") as directory:
        endpoint, relay = baseline._start_relay(directory)
        echo = baseline._fork.Process(target=baseline._echo, args=(endpoint, b"b"))
        echo.start()
        time.sleep(0.1)
        context = zmq.Context()
        dealer = baseline._dealer(context, endpoint, b"a")
        frame = bytes(size)
        samples = []
        try:
            for _ in range(20):  # warm-up
                dealer.send(frame)
                dealer.recv()
            next_start = time.perf_counter()
            for _ in range(count):
                next_start += period
                delay = next_start - time.perf_counter()
                if delay > 0:
                    time.sleep(delay)
                start = time.perf_counter()
                dealer.send(frame)
                dealer.recv()
                samples.append(time.perf_counter() - start)
            dealer.send(b"quit")  # to the relay
            relay.join(5)
        finally:
            dealer.close(linger=0)
            context.term()
            echo.terminate()
            echo.join(5)
            if relay.is_alive():
                relay.terminate()
                relay.join(5)
    return samples


def ping_rows() -> list[Row]:
    pings: list[float] = []
    paced: list[float] = []
    back_to_back: list[float] = []
    ping_medians, paced_medians, b2b_medians = [], [], []
    for _ in range(PING_ROUNDS):
        round_ping = ping_rtts()
        round_paced = paced_relay_rtts(PING_FRAME, PING_COUNT, PING_INTERVAL)
        round_b2b = baseline.relay_rtt(PING_FRAME, PING_COUNT)
        pings += round_ping
        paced += round_paced
        back_to_back += round_b2b
        ping_medians.append(statistics.median(round_ping))
        paced_medians.append(statistics.median(round_paced))
        b2b_medians.append(statistics.median(round_b2b))
    ping_median = statistics.median(ping_medians) * 1e6
    note = f"{PING_ROUNDS} alternating rounds of {PING_COUNT} echoes every {PING_INTERVAL * 1e3:g} ms"
    return [
        Row("ping RTT across a switch, median", ping_median, "us", statistics.median(paced_medians) * 1e6,
            "bare relay RTT, same pacing", f"<= 2.0 ({note})"),
        Row("ping RTT across a switch, p99", _p99(pings) * 1e6, "us", _p99(paced) * 1e6,
            "bare relay RTT p99, same pacing"),
        Row("ping RTT across a switch, median (vs back to back)", ping_median, "us",
            statistics.median(b2b_medians) * 1e6, "bare relay RTT, back to back"),
    ]


# ---------------------------------------------------------------- forwarding

def forward_frame(size: int = FORWARD_SIZE) -> bytes:
    """A UDP datagram from the generator (10.0.1.2) to the sink (10.0.2.2), addressed to the router's MAC."""
    source, destination = IPv4Address("10.0.1.2"), IPv4Address("10.0.2.2")
    udp = UdpHeader(4000, 9).build(bytes(size - 14 - 20 - 8), source, destination)
    datagram = IPv4Header(source, destination, IPPROTO_UDP, 64, 1).build(udp)
    return _mac("r1a") + _mac("gen") + b"\x08\x00" + datagram


def _generator(endpoint: str, message: bytes, messages: int, period: float, done: Any) -> None:
    """Offer `messages` batches, as fast as the link takes them (period 0) or one every `period` s."""
    context = zmq.Context()
    dealer = baseline._dealer(context, endpoint, b"gen:eth0")
    time.sleep(0.2)
    next_send = time.perf_counter()
    for _ in range(messages):
        if period:
            next_send += period
            delay = next_send - time.perf_counter()
            if delay > 0:
                time.sleep(delay)
        dealer.send(message, copy=False)  # blocking: the link's queue pushes back on us
    done.wait(60)
    dealer.close(linger=0)
    context.term()


def router_forwarding(count: int = FORWARD_FRAMES, offered_rate: float = 0.0) -> dict[str, Any]:
    """Frames/s through one router kernel (gen -> p2p -> r1 -> p2p -> sink), and where frames were lost."""
    with tempfile.TemporaryDirectory(prefix="netemu-bench-") as directory:
        os.mkdir(os.path.join(directory, "a"))
        os.mkdir(os.path.join(directory, "b"))
        lan1 = _Device("p2p", os.path.join(directory, "a"))
        lan2 = _Device("p2p", os.path.join(directory, "b"))
        router = None
        context = zmq.Context()
        sink = None
        try:
            router = _Kernel(_kernel_config(
                directory, "r1", "router",
                [_interface("eth0", MAC["r1a"], "10.0.1.1/24", lan1.data, "r1"),
                 _interface("eth1", MAC["r1b"], "10.0.2.1/24", lan2.data, "r1")],
                arp=[{"ip": "10.0.2.2", "mac": MAC["sink"], "dev": "eth1"}]))
            sink = baseline._dealer(context, lan2.data, b"sink:eth0")
            time.sleep(0.2)
            messages = max(2, count // BATCH)
            offered = messages * BATCH
            period = BATCH / offered_rate if offered_rate else 0.0
            done = baseline._fork.Event()
            generator = baseline._fork.Process(
                target=_generator, args=(lan1.data, pack_frames([forward_frame()] * BATCH), messages, period, done))
            router_process = psutil.Process(router.process.pid)
            cpu_before = sum(router_process.cpu_times()[:2])
            generator.start()
            received = 0
            first = last = 0.0
            while sink.poll(1000):
                batch = sink.recv()
                last = time.perf_counter()
                if not received:
                    first = last
                received += len(unpack_frames(batch))
                if received >= offered:
                    break
            cpu = sum(router_process.cpu_times()[:2]) - cpu_before
            done.set()
            generator.join(10)
            counters = router.call("counters")
            link = lan1.control.call("stats")["ports"]["r1:eth0"]
        finally:
            if sink is not None:
                sink.close(linger=0)
            context.term()
            if router is not None:
                router.stop()
            lan1.stop()
            lan2.stop()
    eth0 = counters["devices"]["eth0"]
    return {
        "rate": received / (last - first) if last > first else float("nan"),
        "offered": offered,
        "forwarded": received,
        "loss": 1 - received / offered,
        "router_cpu_per_frame": cpu / counters["Ip"]["InReceives"] if counters["Ip"]["InReceives"] else float("nan"),
        "dropped_link_queue": link["dropped_queue"],
        "rx_missed_errors": eth0["rx_missed_errors"],
        "ForwDatagrams": counters["Ip"]["ForwDatagrams"],
        "time_squeeze": counters["softnet"]["time_squeeze"],
    }


def forwarding_rows() -> list[Row]:
    relay_single = baseline.relay_frame_rate(FORWARD_SIZE, FORWARD_FRAMES // 4)
    relay_batched = baseline.relay_frame_rate(FORWARD_SIZE, FORWARD_FRAMES, BATCH)
    flood = router_forwarding()
    paced = router_forwarding(FORWARD_FRAMES // 4, offered_rate=flood["rate"] / 2)
    where = (f"lost {flood['loss']:.1%}: {flood['dropped_link_queue']} in the link queue, "
             f"{flood['rx_missed_errors']} rx_missed_errors")
    return [
        Row(f"router forwarding {FORWARD_SIZE} B frames/s (flood)", flood["rate"], "frames/s", relay_single,
            "bare relay, 1 frame/msg", f">= 0.4 ({where})"),
        Row(f"router forwarding {FORWARD_SIZE} B frames/s vs batched relay", flood["rate"], "frames/s", relay_batched,
            f"bare relay, {BATCH} frames/msg opaque"),
        Row("router forwarding loss under flood", flood["loss"] * 100, "%", float("nan"), "",
            f"offered {flood['offered']} as fast as the link takes them, forwarded {flood['forwarded']}"),
        Row("router forwarding loss at half the flood rate", paced["loss"] * 100, "%", float("nan"), "",
            f"offered {paced['offered']} at {flood['rate'] / 2:,.0f}/s, forwarded {paced['forwarded']}"),
    ]


def run() -> list[Row]:
    return ping_rows() + forwarding_rows()
