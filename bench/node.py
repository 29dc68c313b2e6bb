"""`python -m bench node`: ping through a switch and forwarding through a router, beside bare relays.

Before changing this file, read bench/bus.py (the model) and docs/design.md
("Measured baselines": round trips direct and through a relay, relay rates).

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

On these virtual machines the pacing matters more than any code: a fixed
piece of work runs several times slower after a few milliseconds of doing
something else (caches, branch predictors and the vCPU itself are cold
again; measured: an md5 of 4 KiB takes 5.7 us back to back, 27 us after 20
ms), so the paced relay is slower than the back-to-back one, and code that
does more per hop (the switch and the kernels) pays more for it. The
responder's CPU time per echo, beside the bare echo's, shows that cost
directly: ~10 us of stack code warm, ~115-135 us as it runs here (150-185
us before issue 11's latency path; the bare echo: 33-50 us). Targets (issue
11, judged on the median of five runs): ping RTT <= 1.5x the paced relay,
responder CPU <= 120 us an echo. The CPU figure comes from cpu_times(), whose
10 ms ticks over 600 echoes make it move in steps of 16.7 us.

Forwarding: a traffic generator (a DEALER speaking the data-plane framing,
32 frames per message as a NIC flushing its queue) sends 1514-byte UDP
frames through a p2p link into a router kernel, whose other interface is on
a second p2p link with a counting sink. The steady figure keeps at most a
ring's worth of frames in flight (the sender waits for the sink, like a
transport's window), so it is the rate the router sustains without loss;
the router's CPU time per frame beside it depends less than the rate on
what else the machine runs. The flood figure lets a forked generator send as fast as it
can: the router then drops what meets a full rx ring (rx_missed_errors) and
the loss is offered minus forwarded. Baselines: a bare relay hop with one
frame per message and with 32-frame batches moved as opaque blobs.
"""
from __future__ import annotations

import gc
import os
import statistics
import tempfile
import time
from typing import Any

import psutil
import zmq

from bus.transport import ControlClient, count_frames, ipc_endpoint, pack_frames
from nodes.wire.addresses import IPv4Address
from nodes.wire.ipv4 import IPPROTO_UDP, IPv4Header
from nodes.wire.udp import UdpHeader

from . import baseline
from .bus import _Device as _BusDevice
from .harness import Row

PING_ROUNDS = 3
PING_COUNT = 600
PING_INTERVAL = 0.002  # s: 500 echoes a second, every process sleeps between them
PING_SIZE = 56  # ping's default: 98-byte frames
PING_FRAME = 14 + 20 + 8 + PING_SIZE

FORWARD_FRAMES = 200_000
FORWARD_SIZE = 1514
BATCH = 32  # frames per message from the generator, as a NIC flushing its queue
FORWARD_WINDOW = 256  # frames in flight at most: the router's rx ring never overflows

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

    gc.freeze()  # as the zygote does before it forks: the benchmark's heap is not the node's
    os._exit(kernel.run(config))


def _run_device(kind: str, config: dict[str, Any]) -> None:
    module = __import__(f"bus.{kind}", fromlist=["run"])
    gc.freeze()
    os._exit(module.run(config))


class _Device(_BusDevice):
    """bench.bus's device in a forked child, started like the zygote starts one (collector frozen)."""

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

def ping_rtts(count: int = PING_COUNT, interval: float = PING_INTERVAL) -> tuple[list[float], float]:
    """RTT samples (s) of the kernel's own ping from h1 to h2 across one switch, and h2's CPU time per echo (s)."""
    with tempfile.TemporaryDirectory(prefix="netemu-bench-") as directory:
        switch = _Device("switch", directory)
        hosts = {"h1": "10.0.0.1", "h2": "10.0.0.2"}
        kernels = []
        try:
            for name in ("h1", "h2"):
                interface = _interface("eth0", MAC[name], f"{hosts[name]}/24", switch.data, name)
                kernels.append(_Kernel(_kernel_config(directory, name, "host", [interface], hosts=hosts)))
            h1, h2 = kernels
            # Warm up: ARP resolved, the switch has learnt both stations.
            h1.control.request("ping", {"dst": "h2", "count": 5, "interval": 0.02}, timeout=10)
            responder = psutil.Process(h2.process.pid)
            cpu_before = sum(responder.cpu_times()[:2])
            result = h1.control.request("ping", {"dst": "h2", "count": count, "interval": interval,
                                                 "size": PING_SIZE, "timeout": 1.0}, timeout=count * interval + 15)
            cpu = sum(responder.cpu_times()[:2]) - cpu_before
        finally:
            for kernel in kernels:
                kernel.stop()
            switch.stop()
    return [reply["rtt_ms"] / 1000.0 for reply in result["replies"]], cpu / max(1, result["received"])


def paced_relay_rtts(size: int, count: int, period: float) -> tuple[list[float], float]:
    """RTT samples (s) through a bare relay to an echo and back, one round trip started every `period`;
    and the echo process's CPU time per round trip (s)."""
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
            responder = psutil.Process(echo.pid)
            cpu_before = sum(responder.cpu_times()[:2])
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
            cpu = sum(responder.cpu_times()[:2]) - cpu_before
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
    return samples, cpu / count


def ping_rows() -> list[Row]:
    pings: list[float] = []
    paced: list[float] = []
    back_to_back: list[float] = []
    ping_medians, paced_medians, b2b_medians, echo_cpu, bare_echo_cpu = [], [], [], [], []
    for _ in range(PING_ROUNDS):
        round_ping, cpu_per_echo = ping_rtts()
        echo_cpu.append(cpu_per_echo)
        round_paced, bare_cpu_per_echo = paced_relay_rtts(PING_FRAME, PING_COUNT, PING_INTERVAL)
        bare_echo_cpu.append(bare_cpu_per_echo)
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
            "bare relay RTT, same pacing", f"<= 1.5 ({note})"),
        Row("ping RTT across a switch, p99", _p99(pings) * 1e6, "us", _p99(paced) * 1e6,
            "bare relay RTT p99, same pacing"),
        Row("ping RTT across a switch, median (vs back to back)", ping_median, "us",
            statistics.median(b2b_medians) * 1e6, "bare relay RTT, back to back"),
        Row("echo responder CPU per echo", statistics.median(echo_cpu) * 1e6, "us",
            statistics.median(bare_echo_cpu) * 1e6, "bare echo process, same pacing",
            "<= 120 us: user+system time of the answering process (its ZeroMQ I/O thread included) per echo"),
    ]


# ---------------------------------------------------------------- forwarding

def forward_frame(size: int = FORWARD_SIZE) -> bytes:
    """A UDP datagram from the generator (10.0.1.2) to the sink (10.0.2.2), addressed to the router's MAC."""
    source, destination = IPv4Address("10.0.1.2"), IPv4Address("10.0.2.2")
    udp = UdpHeader(4000, 9).build(bytes(size - 14 - 20 - 8), source, destination)
    datagram = IPv4Header(source, destination, IPPROTO_UDP, 64, 1).build(udp)
    return _mac("r1a") + _mac("gen") + b"\x08\x00" + datagram


def _flooder(endpoint: str, message: bytes, messages: int, done: Any) -> None:
    """Offer `messages` batches as fast as the link takes them (open loop)."""
    context = zmq.Context()
    dealer = baseline._dealer(context, endpoint, b"gen:eth0")
    time.sleep(0.2)
    for _ in range(messages):
        dealer.send(message, copy=False)
    done.wait(60)
    dealer.close(linger=0)
    context.term()


class _RouterUnderTest:
    """gen -> p2p lan1 -> router r1 -> p2p lan2 -> sink, each process real; `with` tears it all down."""

    def __enter__(self) -> "_RouterUnderTest":
        self._directory = tempfile.TemporaryDirectory(prefix="netemu-bench-")
        directory = self._directory.name
        os.mkdir(os.path.join(directory, "a"))
        os.mkdir(os.path.join(directory, "b"))
        self.lan1 = _Device("p2p", os.path.join(directory, "a"))
        self.lan2 = _Device("p2p", os.path.join(directory, "b"))
        self.context = zmq.Context()
        self.router: _Kernel | None = None
        self.sink: zmq.Socket | None = None
        try:
            self.router = _Kernel(_kernel_config(
                directory, "r1", "router",
                [_interface("eth0", MAC["r1a"], "10.0.1.1/24", self.lan1.data, "r1"),
                 _interface("eth1", MAC["r1b"], "10.0.2.1/24", self.lan2.data, "r1")],
                arp=[{"ip": "10.0.2.2", "mac": MAC["sink"], "dev": "eth1"}]))
            self.sink = baseline._dealer(self.context, self.lan2.data, b"sink:eth0")
            self.process = psutil.Process(self.router.process.pid)
        except BaseException:
            self.__exit__()
            raise
        time.sleep(0.2)
        return self

    def cpu(self) -> float:
        return sum(self.process.cpu_times()[:2])

    def result(self, offered: int, forwarded: int, seconds: float, cpu: float) -> dict[str, Any]:
        assert self.router is not None
        counters = self.router.call("counters")
        link = self.lan1.control.call("stats")["ports"]["r1:eth0"]
        return {
            "rate": forwarded / seconds if seconds > 0 else float("nan"),
            "offered": offered,
            "forwarded": forwarded,
            "loss": 1 - forwarded / offered,
            "router_cpu_per_frame": cpu / forwarded if forwarded else float("nan"),
            "dropped_link_queue": link["dropped_queue"],
            "rx_missed_errors": counters["devices"]["eth0"]["rx_missed_errors"],
            "time_squeeze": counters["softnet"]["time_squeeze"],
        }

    def __exit__(self, *exc_info: object) -> None:
        if self.sink is not None:
            self.sink.close(linger=0)
        self.context.term()
        if self.router is not None:
            self.router.stop()
        self.lan1.stop()
        self.lan2.stop()
        self._directory.cleanup()


def router_forwarding(count: int = FORWARD_FRAMES, window: int = FORWARD_WINDOW) -> dict[str, Any]:
    """Frames/s through one router kernel with at most `window` frames in flight (a sender that never overflows it)."""
    with _RouterUnderTest() as bench:
        assert bench.sink is not None
        generator = baseline._dealer(bench.context, bench.lan1.data, b"gen:eth0")
        message = pack_frames([forward_frame()] * BATCH)
        messages = max(2, count // BATCH)
        sent = received = 0
        sink = bench.sink
        try:
            time.sleep(0.1)
            while sink.poll(0):
                sink.recv()  # the router's gratuitous ARP: not part of the count
            cpu_before = bench.cpu()
            start = time.perf_counter()
            while received < messages * BATCH:
                while sent < messages and (sent + 1) * BATCH - received <= window:
                    generator.send(message)
                    sent += 1
                if not sink.poll(2000):
                    break  # frames lost: the window would never reopen
                while True:
                    try:
                        received += count_frames(sink.recv(zmq.NOBLOCK))
                    except zmq.Again:
                        break
            seconds = time.perf_counter() - start
            cpu = bench.cpu() - cpu_before
        finally:
            generator.close(linger=0)
        return bench.result(messages * BATCH, received, seconds, cpu)


def router_flood(count: int = FORWARD_FRAMES) -> dict[str, Any]:
    """Frames/s a router forwards while a generator offers more than it can take, and where the rest went."""
    with _RouterUnderTest() as bench:
        assert bench.sink is not None
        messages = max(2, count // BATCH)
        done = baseline._fork.Event()
        flooder = baseline._fork.Process(target=_flooder, args=(bench.lan1.data, pack_frames([forward_frame()] * BATCH),
                                                                messages, done))
        while bench.sink.poll(100):
            bench.sink.recv()  # the router's gratuitous ARP: not part of the count
        cpu_before = bench.cpu()
        flooder.start()
        received = 0
        first = last = 0.0
        try:
            while bench.sink.poll(1000):
                received += count_frames(bench.sink.recv())
                last = time.perf_counter()
                if not first:
                    first = last
                if received >= messages * BATCH:
                    break
            cpu = bench.cpu() - cpu_before
        finally:
            done.set()
            flooder.join(10)
        return bench.result(messages * BATCH, received, last - first, cpu)


def forwarding_rows() -> list[Row]:
    relay_single = baseline.relay_frame_rate(FORWARD_SIZE, FORWARD_FRAMES // 4)
    relay_batched = baseline.relay_frame_rate(FORWARD_SIZE, FORWARD_FRAMES, BATCH)
    steady = router_forwarding()
    flood = router_flood()
    return [
        Row(f"router forwarding {FORWARD_SIZE} B frames/s", steady["rate"], "frames/s", relay_single,
            "bare relay, 1 frame/msg",
            f">= 0.4 (at most {FORWARD_WINDOW} frames in flight: offered {steady['offered']}, "
            f"lost {steady['offered'] - steady['forwarded']})"),
        Row(f"router forwarding {FORWARD_SIZE} B frames/s vs batched relay", steady["rate"], "frames/s", relay_batched,
            f"bare relay, {BATCH} frames/msg opaque"),
        Row("router CPU per forwarded frame", steady["router_cpu_per_frame"] * 1e6, "us", float("nan"), "",
            "router process user+system time / frames forwarded"),
        Row(f"router forwarding {FORWARD_SIZE} B frames/s under flood", flood["rate"], "frames/s", relay_single,
            "bare relay, 1 frame/msg",
            f"offered {flood['offered']} as fast as a generator can: lost {flood['loss']:.1%} "
            f"({flood['rx_missed_errors']} rx_missed_errors, {flood['dropped_link_queue']} in the link queue)"),
    ]


def run() -> list[Row]:
    return ping_rows() + forwarding_rows()
