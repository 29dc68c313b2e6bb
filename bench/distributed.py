"""`python -m bench distributed [--seconds S] [--rounds N] [--only goodput,startup]`: one emulation
across machines (issue 16), simulated on this one with a 3-node Ray cluster.

The cluster is `ray.cluster_utils.Cluster`: three raylets on this machine, each offering one
custom resource (`m0`, `m1`, `m2`) that `placement:` pins to, with token authentication
(RAY_AUTH_MODE=token and a fresh RAY_AUTH_TOKEN, set before Ray is first imported). Its
start-up is timed and printed, not counted in any row. Rows, each beside its reference
measured in the same run:

* `TCP goodput same-machine` and `TCP goodput cross-machine`: one cluster emulation of a
  switch segment with h1, h2 pinned to m0 and h3 to m1, so lan1 is a switch per machine
  joined by a trunk (tcp://, CURVE-encrypted by default). h1 -> h2 stays on m0; h1 -> h3
  crosses the trunk. The sender is in-process, as bench/tcp.py's api_goodput
  (`net["h1"].socket()`: only nodes on the controller's own Ray node, m0, have one); the
  receiver is the same small Python program run with `node.exec` on h2 (a local
  `subprocess.Popen`) and on h3 (a `RemoteProcess` through m1's agent). Goodput is the bytes
  the receiver counted over the sender's time from the first byte to the receiver's answer
  after EOF (one clock, the sender's: the receiver sends its count back once it read EOF).
  The cross-machine row's baseline is the same-machine figure; target >= 0.5 of it. The
  same-machine row sits beside the bare ZeroMQ relay hop (bench/tcp.py's baseline).
* `TCP goodput cross-machine (no encryption)`: the same with `encrypt=False`, beside that
  emulation's own same-machine figure.
* `RTT cross-machine` (and `(no encryption)`): median `node.ping()` RTT h1 -> h3 beside
  h1 -> h2, in ms. No target: reported.

`--rounds N` (default 3): every measurement N times, the median reported, each round in the note.
* `300 nodes ready over 3 Ray nodes`: `Emulation.start()` until ready (agents started,
  every process answering, every interface attached) of bench/launch.py's 300-host switch
  tree over the 3 Ray nodes (placed by the partitioner, encrypted), beside the same topology
  started on one machine without Ray in the same run. Target <= 1.5x.

Ray starts its workers at RAY_worker_niceness (15 unless set in the environment of the raylets,
here this benchmark's): the agents' zygotes and every process they fork inherit it, while the
single-machine emulation runs at this process's. The notes give both; on a machine that also
runs other work, `RAY_worker_niceness=0 python -m bench distributed` compares like with like.

Rows with a target say `met` or `missed`; the JSON (bench/out/distributed.json) adds `bound`,
`limit` (the ratio the target asks) and `met`. Needs root (programs on nodes: the trap) and
Ray (`pip install 'netemu[cluster]'`). On 2 shared vCPUs three raylets, the emulation and the
benchmark compete for the same cores: figures are noisy (the load average is printed).
"""
from __future__ import annotations

import argparse
import contextlib
import math
import os
import socket
import statistics
import sys
import textwrap
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, Callable

import psutil

from control.emulation import Emulation
from control.topology import parse_topology
from control.topology_model import Topology

from . import launch
from .harness import Row
from .programs import Program, node_listening, on_node
from .tcp import relay_mbits, send_for

PY = sys.executable
MACHINES = 3
PORT = 5001
MARGIN = 30.0               # s beyond a measurement's length before it counts as hung
PINGS = 20
PING_INTERVAL = 0.05
STARTUP_NODES = 300
GOODPUT_MIN_RATIO = 0.5     # issue 16: cross-machine TCP goodput >= 50 % of same-machine
STARTUP_MAX_RATIO = 1.5     # issue 16: 300 nodes over 3 Ray nodes in <= 1.5x the single-machine time

SAME, CROSS = "TCP goodput same-machine", "TCP goodput cross-machine"
RTT = "RTT cross-machine"
STARTUP = f"{STARTUP_NODES} nodes ready over 3 Ray nodes"
NO_ENCRYPTION = " (no encryption)"


TOPOLOGY = """\
name: bench-distributed
segments:
  lan1: {kind: switch}
placement:
  h1: m0
  h2: m0
  h3: m1
nodes:
  h1: {kind: host, interfaces: {eth0: {segment: lan1, ip: 10.0.0.1/24}}}
  h2: {kind: host, interfaces: {eth0: {segment: lan1, ip: 10.0.0.2/24}}}
  h3: {kind: host, interfaces: {eth0: {segment: lan1, ip: 10.0.0.3/24}}}
"""
SENDER, LOCAL_PEER, REMOTE_PEER = "h1", "h2", "h3"

# Reads until EOF, then answers the byte count on the same connection: the sender's clock ends there.
RECEIVER = textwrap.dedent("""
    import socket, sys
    server = socket.create_server(("", int(sys.argv[1])))
    conn, _ = server.accept()
    received, recv = 0, conn.recv
    while data := recv(1 << 20):
        received += len(data)
    conn.sendall(b"%d\\n" % received)
    conn.close()
""")


@dataclass
class RatioRow(Row):
    """A Row whose target bounds its ratio: `bound` ">=" or "<=" `limit`, and whether it was `met`."""

    bound: str = ""
    limit: float = math.nan
    met: bool | None = None


def ratio_row(metric: str, value: float, unit: str, baseline: float, baseline_name: str, note: str,
              bound: str = "", limit: float = math.nan) -> RatioRow:
    """A row; with `bound` and `limit` its target reads e.g. `>= 0.5x: met (note)`."""
    if not bound:
        return RatioRow(metric, value, unit, baseline, baseline_name, note)
    ratio = value / baseline if baseline else math.nan
    met = ratio >= limit if bound == ">=" else ratio <= limit
    return RatioRow(metric, value, unit, baseline, baseline_name,
                    f"{bound} {limit:g}x: {'met' if met else 'missed'} ({note})", bound, limit, met)


def topology() -> Topology:
    return parse_topology(TOPOLOGY, "<bench distributed>")


def goodput_bits(received: int, seconds: float) -> float:
    """bit/s of `received` bytes over `seconds`."""
    if seconds <= 0:
        raise ValueError(f"a goodput over {seconds} s")
    return received * 8 / seconds


def parse_count(answer: bytes) -> int:
    """The receiver's byte count (`b"123\\n"`)."""
    text = answer.decode("ascii", errors="replace").strip()
    if not text.isdigit():
        raise RuntimeError(f"the receiver answered {answer[:60]!r}, not its byte count")
    return int(text)


# ------------------------------------------------------------------ the Ray cluster

@contextlib.contextmanager
def ray_cluster(machines: int = MACHINES) -> Iterator[tuple[str, float]]:
    """(address, seconds the cluster took to start) of `machines` raylets here (control/cluster_local.py)."""
    from control.cluster_local import local_cluster

    with local_cluster(machines, light=False) as running:  # Ray's defaults, as a real `ray start` has
        yield running.address, running.started_in
    if running.leftovers:
        print(f"bench distributed: the Ray cluster left {len(running.leftovers)} processes behind (killed)", flush=True)


# ------------------------------------------------------------------ goodput and RTT

def program_goodput(net: Emulation, receiver: str, address: str, seconds: float, port: int = PORT) -> float:
    """bit/s from the in-process sender on h1 to RECEIVER run with exec on `receiver`."""
    with contextlib.ExitStack() as stack:
        program = Program(on_node(net, receiver), receiver, [PY, "-c", RECEIVER, str(port)], stack)
        program.wait_listening(node_listening(net, receiver, port))
        with net[SENDER].socket(socket.AF_INET, socket.SOCK_STREAM) as sender:
            start = send_for(sender, address, port, seconds)
            sender.shutdown(socket.SHUT_WR)
            answer = b""
            while data := sender.recv(64):
                answer += data
            elapsed = time.perf_counter() - start
        program.wait(MARGIN, "receiver")
        if program.process.returncode:
            raise program.failure("failed")
    return goodput_bits(parse_count(answer), elapsed)


def median_rtt(net: Emulation, destination: str) -> float:
    """Median RTT (ms) of PINGS echoes h1 -> `destination`; every one must come back."""
    result = net[SENDER].ping(destination, count=PINGS, interval=PING_INTERVAL, timeout=2.0)
    if result.received != PINGS:
        raise RuntimeError(f"{SENDER} -> {destination}: {result.received}/{PINGS} echoes answered")
    return statistics.median(result.rtts)


def niceness(net: Emulation, node: str) -> int | None:
    """The nice value of `node`'s process (Ray starts its workers, and so the agents' zygotes and
    every process they fork, at RAY_worker_niceness: 15 unless set when the raylets start)."""
    with contextlib.suppress(psutil.Error, KeyError, TypeError):
        return psutil.Process(net.supervisor.processes[node].pid).nice()
    return None


def _address(net: Emulation, node: str) -> str:
    return net[node].addresses[0].split("/")[0]


def _check_placement(net: Emulation) -> str:
    """The plan is the one the rows claim: h1, h2 on one machine, h3 on another, lan1 split."""
    plan = net.plan
    where = {node: plan.machine_of[node] for node in (SENDER, LOCAL_PEER, REMOTE_PEER)}
    if not where[SENDER] == where[LOCAL_PEER] != where[REMOTE_PEER] or where[SENDER] != net.cluster.local_machine:
        raise RuntimeError(f"bench distributed: unexpected placement {where} (controller on "
                           f"machine {net.cluster.local_machine})")
    devices = plan.segment_devices["lan1"]
    if len(devices) != 2:
        raise RuntimeError(f"bench distributed: lan1 should be a switch per machine, is {devices}")
    return f"h1, h2 on machine {where[SENDER]}, h3 on {where[REMOTE_PEER]}; lan1 = {' + '.join(devices)}"


def path_figures(address: str, encrypt: bool, seconds: float, rounds: int) -> dict[str, Any]:
    """Goodput (Mbit/s) and RTT (ms), same-machine and cross-machine, of one cluster emulation."""
    figures: dict[str, Any] = {"same": [], "cross": [], "rtt_same": [], "rtt_cross": []}
    name = f"bench-dist-{'enc' if encrypt else 'plain'}-{os.getpid()}"
    with Emulation(topology(), name=name, cluster=address, encrypt=encrypt, handle_signals=False) as net:
        if net.cluster.encrypted != encrypt:
            raise RuntimeError(f"bench distributed: asked encrypt={encrypt}, "
                               f"the emulation says {net.cluster.encrypted}")
        figures["where"] = _check_placement(net)
        figures["nice"] = niceness(net, SENDER)
        local, remote = _address(net, LOCAL_PEER), _address(net, REMOTE_PEER)
        median_rtt(net, local), median_rtt(net, remote)     # ARP resolved before anything is timed
        for _ in range(rounds):
            figures["same"].append(program_goodput(net, LOCAL_PEER, local, seconds) / 1e6)
            figures["cross"].append(program_goodput(net, REMOTE_PEER, remote, seconds) / 1e6)
            figures["rtt_same"].append(median_rtt(net, local))
            figures["rtt_cross"].append(median_rtt(net, remote))
    return figures


def _rounds(values: list[float]) -> str:
    return f"; rounds {', '.join(f'{v:.1f}' for v in values)}" if len(values) > 1 else ""


def path_rows(figures: dict[str, Any], encrypt: bool, seconds: float, relay: float | None) -> list[RatioRow]:
    """The goodput and RTT rows of one emulation's figures (the same-machine row only with `relay`)."""
    suffix = "" if encrypt else NO_ENCRYPTION
    same, cross = statistics.median(figures["same"]), statistics.median(figures["cross"])
    rtt_same, rtt_cross = statistics.median(figures["rtt_same"]), statistics.median(figures["rtt_cross"])
    how = (f"{figures['where']}; in-process sender on h1, a Python receiver by exec; {seconds:g} s x "
           f"{len(figures['same'])}; {'CURVE-encrypted trunk' if encrypt else 'plain tcp:// trunk'}; "
           f"nodes at nice {figures.get('nice')}")
    rows = []
    if relay is not None:
        rows.append(ratio_row(SAME, same, "Mbit/s", relay, "bare relay hop, 1514 B frames 1/msg",
                              f"h1 -> lan1 -> h2; {how}{_rounds(figures['same'])}"))
    rows.append(ratio_row(CROSS + suffix, cross, "Mbit/s", same, f"{SAME}{suffix}",
                          f"h1 -> lan1 -> trunk -> lan1 -> h3; {how}{_rounds(figures['cross'])}",
                          ">=", GOODPUT_MIN_RATIO))
    rows.append(ratio_row(RTT + suffix, rtt_cross, "ms", rtt_same, f"RTT same-machine{suffix}",
                          f"median of {PINGS} echoes h1 -> h3 beside h1 -> h2; no target"
                          f"{_rounds(figures['rtt_cross'])}"))
    return rows


# ------------------------------------------------------------------ start-up

def startup_seconds(cluster: str | None, nodes: int = STARTUP_NODES) -> dict[str, Any]:
    """Seconds of `Emulation.start()` of the launch benchmark's `nodes`-host tree (on one machine
    without `cluster`), the cluster's preparation (agents, placement, plan) within it, and a check ping."""
    name = f"bench-dist-{nodes}-{'cluster' if cluster else 'local'}-{os.getpid()}"
    net = Emulation(launch.topology(nodes), name=name, cluster=cluster, handle_signals=False)
    figures: dict[str, Any] = {"prepare": 0.0}
    if net.cluster is not None:
        prepare = net.cluster.prepare

        def timed(emulation: Emulation) -> Any:
            began = time.monotonic()
            try:
                return prepare(emulation)
            finally:
                figures["prepare"] = time.monotonic() - began
        net.cluster.prepare = timed
    began = time.monotonic()
    net.start()
    figures["ready"] = time.monotonic() - began
    try:
        hosts = net.hosts
        result = net[hosts[0]].ping(hosts[-1], count=1, timeout=5.0)
        if result.received != 1:
            raise RuntimeError(f"bench distributed: {hosts[0]} -> {hosts[-1]} unanswered after start-up")
        figures["processes"] = len(net.plan.nodes) + len(net.plan.devices)
        figures["nice"] = niceness(net, hosts[0])
        if net.cluster is not None:
            load: dict[int, int] = {}
            for machine in net.plan.machine_of.values():
                load[machine] = load.get(machine, 0) + 1
            figures["load"] = dict(sorted(load.items()))
    finally:
        began = time.monotonic()
        net.stop()
        figures["teardown"] = time.monotonic() - began
    return figures


def startup_row(local: list[dict[str, Any]], spread: list[dict[str, Any]]) -> RatioRow:
    one = statistics.median(f["ready"] for f in local)
    three = statistics.median(f["ready"] for f in spread)
    prepare = statistics.median(f["prepare"] for f in spread)
    load = ", ".join(f"m{m}: {n}" for m, n in spread[-1]["load"].items())
    note = (f"{spread[-1]['processes']} processes (launch's switch tree), placed {load}; of it the agents, "
            f"placement and plan {prepare:.1f} s; encrypted; nodes at nice {spread[-1].get('nice')} (one machine: "
            f"{local[-1].get('nice')}){_rounds([f['ready'] for f in spread])}")
    return ratio_row(STARTUP, three, "s", one, f"{STARTUP_NODES} nodes on one machine, no Ray", note,
                     "<=", STARTUP_MAX_RATIO)


# ------------------------------------------------------------------ the run

GOODPUT, STARTUP_CHOICE = "goodput", "startup"
CHOICES = (GOODPUT, STARTUP_CHOICE)


@dataclass
class Options:
    seconds: float
    rounds: int
    only: tuple[str, ...]


def parse(argv: list[str] | None) -> Options:
    parser = argparse.ArgumentParser(prog="python -m bench distributed", description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=float, default=3.0, help="length of each goodput measurement (default 3)")
    parser.add_argument("--rounds", type=int, default=3, help="rounds of every measurement, the median reported")
    parser.add_argument("--only", default=",".join(CHOICES), help=f"comma-separated subset of {','.join(CHOICES)}")
    args = parser.parse_args(argv or [])
    only = tuple(name.strip() for name in args.only.split(",") if name.strip())
    if args.seconds <= 0 or args.rounds < 1:
        parser.error("--seconds must be > 0 and --rounds >= 1")
    if not only or set(only) - set(CHOICES):
        parser.error(f"--only: choose from {','.join(CHOICES)}")
    return Options(args.seconds, args.rounds, only)


def _timed(what: str, function: Callable[[], Any]) -> Any:
    began = time.monotonic()
    result = function()
    print(f"  {what}: {time.monotonic() - began:.1f} s", flush=True)
    return result


def run(argv: list[str] | None = None) -> list[Row]:
    options = parse(argv)
    print(f"bench distributed: {options.seconds:g} s per goodput, {options.rounds} round(s), {','.join(options.only)}; "
          f"load average {os.getloadavg()[0]:.2f} at the start", flush=True)
    rows: list[Row] = []
    local: list[dict[str, Any]] = []
    if STARTUP_CHOICE in options.only:    # one machine, no Ray: before the raylets take their share
        for _ in range(options.rounds):
            local.append(_timed(f"{STARTUP_NODES} nodes on one machine", lambda: startup_seconds(None)))
    with ray_cluster() as (address, cluster_seconds):
        print(f"  Ray cluster of {MACHINES} nodes up in {cluster_seconds:.1f} s (not counted)", flush=True)
        if GOODPUT in options.only:
            relay = relay_mbits(1514, 60_000)
            for encrypt in (True, False):
                figures = _timed(f"goodput and RTT, {'encrypted' if encrypt else 'no encryption'}",
                                 lambda: path_figures(address, encrypt, options.seconds, options.rounds))
                print(f"    same-machine {statistics.median(figures['same']):.1f} Mbit/s, cross-machine "
                      f"{statistics.median(figures['cross']):.1f}; RTT {statistics.median(figures['rtt_same']):.2f} "
                      f"/ {statistics.median(figures['rtt_cross']):.2f} ms", flush=True)
                rows += path_rows(figures, encrypt, options.seconds, relay if encrypt else None)
        if STARTUP_CHOICE in options.only:
            spread = [_timed(f"{STARTUP_NODES} nodes over {MACHINES} Ray nodes", lambda: startup_seconds(address))
                      for _ in range(options.rounds)]
            rows.append(startup_row(local, spread))
    print(f"bench distributed: load average {os.getloadavg()[0]:.2f} at the end", flush=True)
    return rows
