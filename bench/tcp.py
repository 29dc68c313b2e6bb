"""`python -m bench tcp [--quick] [--seconds S] [--rounds N] [--only KINDS]`: TCP through the emulator (issue 13).

Rows, each measured twice: in-process (scenario API sockets, `net[node].socket(AF_INET,
SOCK_STREAM)`: real `socket.socket`s whose bytes move natively through the node's stream
pump; sender and receiver in two threads of this process) and with programs run on the
nodes through `node.exec` (iperf3 for goodput, a small Python client/server for the
connection rate), the latter rows named with ` (iperf3)` appended:

* `TCP goodput across a switch`: h1 -> h2 on one switch, MTU 1500. Target >= 150 Mbit/s.
* `TCP goodput across a router`: h1 - lan1 - r1 - lan2 - h2. Target >= 100 Mbit/s.
* `TCP goodput 1% loss`: one switch, `loss: 1%` on h2's port (a port's parameters act in
  both directions: 1 % of the data and 1 % of the ACKs). Target >= 30 Mbit/s.
* `TCP goodput MTU 9000`: one switch, every interface at MTU 9000. Target >= 500 Mbit/s.
* `TCP connections/s`: across the switch, connect + 1 KB + close by CLIENTS (8) concurrent
  clients, as a load generator (`ab -c 8`) runs them: each client connects, sends 1024
  bytes, reads until the server (which closes once it has the 1024 bytes) closes, closes,
  and starts over. Target >= 500 connections/s.

* `TCP 50 MB through 5% loss and 20 ms delay` (bench/tcp_impaired.py; `--quick`: 5 MB): the
  router path with 5% loss and 20 ms delay on r1's port toward h2, sha256 equal at both ends,
  beside Mathis et al.'s bound for that RTT and loss. It takes minutes; `--only` without
  `impaired` skips it.

Goodput is bytes the receiver got over the time from the first byte sent to the receiver's
EOF (in-process: the sender writes for S seconds, then closes); iperf3's is the server's
`end.sum_received` (`iperf3 -s -1 --json` on h2, `iperf3 -c H2 -t S --json` on h1).

Baseline, measured in the same run right before each round (bench/baseline.py): the bare
ZeroMQ relay hop (DEALER -> ROUTER relay process -> DEALER over ipc, no netemu code) at one
frame per message, as Mbit/s of 1514 B frames (9014 B for the MTU 9000 rows); h1 -> switch
-> h2 crosses exactly one such hop (the router path three). The connection rows sit beside
the bare relay's round trips per second (1 / median RTT of a 64 B message to an echo).

Each goodput row's note adds what h1's TCP and the data plane counted during its
measurements: segments sent and retransmitted, and frames dropped in the nodes' NIC queues
and at the bus ports (a loss on a path with no `loss` configured is a queue that overflowed).

Each row's target says `met` or `missed`; the JSON (bench/out/tcp.json) has the numeric
`minimum` and a `met` boolean beside the harness's fields. `--quick`: 1 s measurements and
smaller baselines; `--rounds N`: N rounds of every measurement, the median reported (each
round's figure in the target's note); `--only switch,router,loss,jumbo,connections`: a
subset. The stack's cost per segment (fake clock, no processes, cProfile) is `python -m
bench tcp_profile` (bench/tcp_profile.py). Needs root (the programs' trap) and iperf3.
Figures on 2 shared vCPUs are noisy: run alone on an idle machine (the load average is
printed at the start and the end).
"""
from __future__ import annotations

import argparse
import contextlib
import os
import socket
import statistics
import sys
import textwrap
import threading
import time
from dataclasses import dataclass
from typing import Any, Callable

from control.emulation import Emulation
from control.topology import parse_topology
from control.topology_model import Topology

from . import baseline
from .harness import Row
from .programs import Program, node_listening, on_node
from .tcp_impaired import impaired_row

PY = sys.executable
MSG = 1024                  # bytes per connection, the connection-rate rows
CHUNK = 1 << 16             # bytes per send(), the in-process sender
GOODPUT_PORT = 5001
IPERF_PORT = 5201
CONN_PORT = 6001
CONN_PROGRAM_PORT = 6002
MARGIN = 30.0               # s beyond a measurement's length before it counts as hung
CLIENTS = 8                 # concurrent clients of the connection-rate rows
STALL = 0.5                 # s: a connection this slow waited for a retransmission (the SYN RTO is 1 s)

SWITCH, ROUTER, LOSS, JUMBO = "switch", "router", "loss", "jumbo"

_TWO_HOSTS = """\
name: bench-tcp-{kind}
{defaults}segments:
  lan1: {{kind: switch}}
nodes:
  h1:
    kind: host
    interfaces:
      eth0: {{segment: lan1, ip: 10.0.0.1/24}}
  h2:
    kind: host
    interfaces:
      eth0: {{segment: lan1, ip: 10.0.0.2/24{h2_params}}}
"""

_ROUTED = """\
name: bench-tcp-router
segments:
  lan1: {kind: switch}
  lan2: {kind: switch}
nodes:
  h1:
    kind: host
    interfaces:
      eth0: {segment: lan1, ip: 10.0.1.10/24}
    routes: [default via 10.0.1.1]
  r1:
    kind: router
    interfaces:
      eth0: {segment: lan1, ip: 10.0.1.1/24}
      eth1: {segment: lan2, ip: 10.0.2.1/24}
  h2:
    kind: host
    interfaces:
      eth0: {segment: lan2, ip: 10.0.2.10/24}
    routes: [default via 10.0.2.1]
"""

TOPOLOGIES = {
    SWITCH: _TWO_HOSTS.format(kind=SWITCH, defaults="", h2_params=""),
    ROUTER: _ROUTED,
    LOSS: _TWO_HOSTS.format(kind=LOSS, defaults="", h2_params=", loss: 1%"),
    JUMBO: _TWO_HOSTS.format(kind=JUMBO, defaults="defaults:\n  link: {mtu: 9000}\n", h2_params=""),
}

# metric, topology, minimum (Mbit/s), what the path is
GOODPUT = (
    ("TCP goodput across a switch", SWITCH, 150.0, "h1 -> switch -> h2, MTU 1500"),
    ("TCP goodput across a router", ROUTER, 100.0, "h1 -> lan1 -> r1 -> lan2 -> h2, MTU 1500"),
    ("TCP goodput 1% loss", LOSS, 30.0, "h1 -> switch -> h2, loss 1% on h2's port"),
    ("TCP goodput MTU 9000", JUMBO, 500.0, "h1 -> switch -> h2, MTU 9000"),
)
CONNECTIONS = "TCP connections/s"
CONNECTIONS_MINIMUM = 500.0
IPERF = " (iperf3)"


@dataclass
class TargetRow(Row):
    """A Row with its numeric target: `minimum` (the figure must reach it) and whether it did."""

    minimum: float = 0.0
    met: bool = False


def topology(kind: str) -> Topology:
    return parse_topology(TOPOLOGIES[kind], f"<bench tcp {kind}>")


# ------------------------------------------------------------------ in-process (API sockets)

def _listener(net: Emulation, node: str, port: int) -> socket.socket:
    listener = net[node].socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind(("0.0.0.0", port))
    listener.listen(128)
    return listener


def _thread(target: Callable[[], None], errors: list[BaseException]) -> threading.Thread:
    def guarded() -> None:
        try:
            target()
        except BaseException as error:  # reported by the caller, never lost in a thread
            errors.append(error)
    thread = threading.Thread(target=guarded, daemon=True)
    thread.start()
    return thread


def _join(thread: threading.Thread, errors: list[BaseException], timeout: float, what: str) -> None:
    thread.join(timeout)
    if errors:
        raise RuntimeError(f"{what}: {errors[0]!r}") from errors[0]
    if thread.is_alive():
        raise RuntimeError(f"{what}: no end within {timeout:g} s")


def send_for(sender: socket.socket, address: str, port: int, seconds: float) -> float:
    """Connect `sender` and write CHUNKs for `seconds`; the perf_counter time the writing began."""
    sender.settimeout(MARGIN)
    sender.connect((address, port))
    chunk, sendall, clock = bytes(CHUNK), sender.sendall, time.perf_counter
    start = clock()
    end = start + seconds
    while clock() < end:
        sendall(chunk)
    return start


def api_goodput(net: Emulation, address: str, seconds: float, port: int = GOODPUT_PORT) -> tuple[float, int]:
    """(bit/s, bytes received): h1 writes for `seconds` then closes; h2 reads until EOF, in a thread."""
    listener = _listener(net, "h2", port)
    result: dict[str, Any] = {}
    errors: list[BaseException] = []

    def receive() -> None:
        conn, _ = listener.accept()
        with conn:
            conn.settimeout(MARGIN)
            received, recv = 0, conn.recv
            while True:
                data = recv(1 << 20)
                if not data:
                    break
                received += len(data)
            result["end"], result["bytes"] = time.perf_counter(), received

    try:
        listener.settimeout(MARGIN)
        receiver = _thread(receive, errors)
        with net["h1"].socket(socket.AF_INET, socket.SOCK_STREAM) as sender:
            start = send_for(sender, address, port, seconds)
        _join(receiver, errors, seconds + MARGIN, "in-process goodput receiver")
    finally:
        listener.close()
    return result["bytes"] * 8 / (result["end"] - start), result["bytes"]


def _serve_connections(listener: socket.socket, stop: threading.Event, errors: list[BaseException]) -> None:
    """Accept until `stop` (checked between accepts); each connection in its own thread: read MSG bytes, close."""
    def serve(conn: socket.socket) -> None:
        with conn:
            conn.settimeout(MARGIN)
            got = 0
            while got < MSG:
                data = conn.recv(MSG - got)
                if not data:
                    break
                got += len(data)

    listener.settimeout(0.2)
    while not stop.is_set():
        try:
            conn, _ = listener.accept()
        except TimeoutError:
            continue
        _thread(lambda conn=conn: serve(conn), errors)


def api_connection_rate(net: Emulation, address: str, seconds: float,
                        port: int = CONN_PORT) -> tuple[float, int, int]:
    """(connections/s, connections, of them slower than STALL s): CLIENTS threads each connect, send MSG
    bytes, read until the server's close, close, and start over, for `seconds`."""
    listener = _listener(net, "h2", port)
    stop = threading.Event()
    errors: list[BaseException] = []
    payload, node = bytes(MSG), net["h1"]
    counts, stalls = [0] * CLIENTS, [0] * CLIENTS
    clock = time.perf_counter
    start = clock()
    end = start + seconds

    def client(index: int) -> None:
        now = clock()
        while now < end and not errors:
            began = now
            with node.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
                sock.settimeout(MARGIN)
                sock.connect((address, port))
                sock.sendall(payload)
                while sock.recv(4096):     # until the server's close
                    pass
            counts[index] += 1
            now = clock()
            stalls[index] += now - began > STALL

    try:
        server = _thread(lambda: _serve_connections(listener, stop, errors), errors)
        clients = [_thread(lambda index=index: client(index), errors) for index in range(CLIENTS)]
        for index, thread in enumerate(clients):
            _join(thread, errors, seconds + MARGIN, f"in-process connection client {index}")
        elapsed = clock() - start
        stop.set()
        _join(server, errors, MARGIN, "in-process connection server")
    finally:
        stop.set()
        listener.close()
    return sum(counts) / elapsed, sum(counts), sum(stalls)


# ------------------------------------------------------------------ programs (node.exec)

CONN_SERVER = textwrap.dedent("""
    import socket, sys, threading
    srv = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    srv.bind(("0.0.0.0", int(sys.argv[1])))
    srv.listen(128)
    size = int(sys.argv[2])
    def serve(conn):
        with conn:
            got = 0
            while got < size:
                data = conn.recv(size - got)
                if not data:
                    break
                got += len(data)
    print("ready", flush=True)
    while True:
        conn, _ = srv.accept()
        threading.Thread(target=serve, args=(conn,), daemon=True).start()
""")

CONN_CLIENT = textwrap.dedent("""
    import socket, sys, threading, time
    address, port, size = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    seconds, stall, clients = float(sys.argv[4]), float(sys.argv[5]), int(sys.argv[6])
    payload = bytes(size)
    counts, stalls, errors = [0] * clients, [0] * clients, []
    start = time.perf_counter()
    end = start + seconds
    def client(index):
        try:
            now = time.perf_counter()
            while now < end:
                began = now
                with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
                    sock.settimeout(30)
                    sock.connect((address, port))
                    sock.sendall(payload)
                    while sock.recv(4096):
                        pass
                counts[index] += 1
                now = time.perf_counter()
                stalls[index] += now - began > stall
        except Exception as error:
            errors.append(error)
    threads = [threading.Thread(target=client, args=(i,)) for i in range(clients)]
    [thread.start() for thread in threads]
    [thread.join() for thread in threads]
    if errors:
        sys.exit(f"client failed: {errors[0]!r}")
    print(sum(counts) / (time.perf_counter() - start), sum(counts), sum(stalls))
""")


def iperf_goodput(net: Emulation, address: str, seconds: int, port: int = IPERF_PORT) -> tuple[float, float, int]:
    """(server's end.sum_received bit/s, client's end.sum_sent bit/s, server's bytes) of one iperf3 test h1 -> h2."""
    with contextlib.ExitStack() as stack:
        server = Program(on_node(net, "h2"), "h2", ["iperf3", "-s", "-1", "--json", "-p", str(port)], stack)
        server.wait_listening(node_listening(net, "h2", port))
        client = Program(on_node(net, "h1"), "h1",
                         ["iperf3", "-c", address, "-p", str(port), "-t", str(seconds), "--json"], stack)
        sent = client.report(seconds + MARGIN)["end"]["sum_sent"]
        received = server.report(MARGIN)["end"]["sum_received"]
        return float(received["bits_per_second"]), float(sent["bits_per_second"]), int(received["bytes"])


def program_connection_rate(net: Emulation, address: str, seconds: float,
                            port: int = CONN_PROGRAM_PORT) -> tuple[float, int, int]:
    """(connections/s, connections, of them slower than STALL s) of CONN_CLIENT on h1 against CONN_SERVER on h2."""
    with contextlib.ExitStack() as stack:
        server = Program(on_node(net, "h2"), "h2", [PY, "-u", "-c", CONN_SERVER, str(port), str(MSG)], stack)
        server.wait_listening(node_listening(net, "h2", port))
        client = Program(on_node(net, "h1"), "h1", [PY, "-c", CONN_CLIENT, address, str(port), str(MSG), str(seconds),
                                                    str(STALL), str(CLIENTS)], stack)
        client.wait(seconds + MARGIN, "connection client")
        if client.process.returncode:
            raise client.failure("failed")
        rate, count, stalls = client.output().split()
        return float(rate), int(count), int(stalls)


# ------------------------------------------------------------------ the run

IMPAIRED = "impaired"
CHOICES = (SWITCH, ROUTER, LOSS, JUMBO, "connections", IMPAIRED)


@dataclass
class Options:
    seconds: int
    rounds: int
    relay_frames: int
    rtt_samples: int
    only: tuple[str, ...]
    quick: bool = False


def parse(argv: list[str] | None) -> Options:
    parser = argparse.ArgumentParser(prog="python -m bench tcp", description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="1 s measurements, smaller baselines")
    parser.add_argument("--seconds", type=int, default=None, help="length of each measurement (default 3, --quick 1)")
    parser.add_argument("--rounds", type=int, default=1, help="rounds of every measurement, the median reported")
    parser.add_argument("--only", default=",".join(CHOICES),
                        help=f"comma-separated subset of {','.join(CHOICES)} (default: all)")
    args = parser.parse_args(argv or [])
    seconds = args.seconds if args.seconds is not None else 1 if args.quick else 3
    only = tuple(name.strip() for name in args.only.split(",") if name.strip())
    if seconds < 1 or args.rounds < 1:
        parser.error("--seconds and --rounds must be >= 1")
    if not only or set(only) - set(CHOICES):
        parser.error(f"--only: choose from {','.join(CHOICES)}")
    return Options(seconds, args.rounds, 20_000 if args.quick else 60_000, 500 if args.quick else 2000, only,
                   args.quick)


def relay_mbits(size: int, frames: int) -> float:
    """Mbit/s of `size`-byte frames through the bare relay hop, one frame per message."""
    return baseline.relay_frame_rate(size, frames) * size * 8 / 1e6


def relay_round_trips(samples: int) -> float:
    """Round trips per second of a 64 B message through the bare relay to an echo (1 / median RTT)."""
    return 1 / statistics.median(baseline.relay_rtt(64, samples))


def _row(metric: str, values: list[float], unit: str, bases: list[float], base_name: str, minimum: float,
         note: str) -> TargetRow:
    value, base = statistics.median(values), statistics.median(bases)
    met = value >= minimum
    spread = f"; rounds {', '.join(f'{v:.1f}' for v in values)}" if len(values) > 1 else ""
    target = f">= {minimum:g} {unit}: {'met' if met else 'missed'} ({note}{spread})"
    return TargetRow(metric, value, unit, base, base_name, target, minimum, met)


def _address(net: Emulation) -> str:
    return net["h2"].addresses[0].split("/")[0]


class _Segments:
    """What h1's TCP and the data plane counted over measurements: segments h1 sent and retransmitted,
    the goodput bytes they carried, frames dropped in the nodes' NIC queues (tx_dropped, rx_dropped,
    rx_missed_errors: a full transmit queue or receive ring) and at the bus ports (dropped_queue:
    a full port queue; dropped_loss: the `loss` the topology asks)."""

    NIC = ("tx_dropped", "rx_dropped", "rx_missed_errors")
    PORT = ("dropped_queue", "dropped_loss")

    def __init__(self, net: Emulation) -> None:
        self.net = net
        self.counts = dict.fromkeys(("out", "retransmitted", "bytes") + self.NIC + self.PORT, 0)

    def _snapshot(self) -> dict[str, int]:
        net = self.net
        tcp = net["h1"].counters()["Tcp"]
        found = {"out": tcp["OutSegs"], "retransmitted": tcp["RetransSegs"], **dict.fromkeys(self.NIC + self.PORT, 0)}
        for node in net.topology.nodes:
            for interface in net[node].interfaces():
                for key in self.NIC:
                    found[key] += interface["stats"].get(key, 0)
        for interface in net.topology.interfaces():
            stats = net.link(interface.node, interface.name).stats()
            for key in self.PORT:
                found[key] += stats.get(key, 0)
        return found

    def measure(self, function: Callable[[], tuple[Any, ...]], received: Callable[[tuple[Any, ...]], int]) -> tuple:
        before = self._snapshot()
        result = function()
        after = self._snapshot()
        for key, value in after.items():
            self.counts[key] += value - before[key]
        self.counts["bytes"] += received(result)
        return result

    def note(self) -> str:
        c = self.counts
        per = f" (~{c['bytes'] / c['out']:.0f} B of goodput each)" if c["out"] else ""
        return (f"h1 sent {c['out']} segments{per}, {c['retransmitted']} retransmitted; frames dropped: NIC "
                + ", ".join(f"{key} {c[key]}" for key in self.NIC) + "; ports "
                + ", ".join(f"{key} {c[key]}" for key in self.PORT))


def _check_mtu(net: Emulation, mtu: int) -> None:
    for node in ("h1", "h2"):
        found = {row["name"]: row["mtu"] for row in net[node].interfaces()}.get("eth0")
        if found != mtu:
            raise RuntimeError(f"bench tcp: {node} eth0 has MTU {found}, the topology asks {mtu}")


def goodput_rows(kind: str, metric: str, minimum: float, path: str, options: Options) -> tuple[Row, Row]:
    """(in-process row, iperf3 row) of one topology; every round measures its own relay baseline first."""
    seconds, mtu = options.seconds, 9000 if kind == JUMBO else 1500
    bases: list[float] = []
    api: list[float] = []
    iperf: list[float] = []
    sent: list[float] = []
    with Emulation(topology(kind), name=f"bench-tcp-{kind}") as net:
        _check_mtu(net, mtu)
        address = _address(net)
        api_segments, iperf_segments = _Segments(net), _Segments(net)
        for _ in range(options.rounds):
            frames = options.relay_frames if mtu == 1500 else options.relay_frames // 3
            bases.append(relay_mbits(mtu + 14, frames))
            bps, _ = api_segments.measure(lambda: api_goodput(net, address, seconds), lambda result: result[1])
            api.append(bps / 1e6)
            server_bps, client_bps, _ = iperf_segments.measure(lambda: iperf_goodput(net, address, seconds),
                                                               lambda result: result[2])
            iperf.append(server_bps / 1e6)
            sent.append(client_bps / 1e6)
    print(f"  {metric}: {statistics.median(api):.1f} Mbit/s in-process, {statistics.median(iperf):.1f} iperf3 "
          f"(relay {statistics.median(bases):.0f})", flush=True)
    base_name = f"bare relay hop, {mtu + 14} B frames 1/msg"
    note = f"{path}; {seconds} s x {options.rounds}"
    return (_row(metric, api, "Mbit/s", bases, base_name, minimum, f"{note}; API sockets; {api_segments.note()}"),
            _row(metric + IPERF, iperf, "Mbit/s", bases, base_name, minimum,
                 f"{note}; server's sum_received, client sent {statistics.median(sent):.1f}; "
                 f"{iperf_segments.note()}"))


def connection_rows(options: Options) -> tuple[Row, Row]:
    """(in-process row, programs row) across the switch; each round measures its relay baseline first."""
    seconds = options.seconds
    bases: list[float] = []
    api: list[tuple[float, int, int]] = []
    program: list[tuple[float, int, int]] = []
    with Emulation(topology(SWITCH), name="bench-tcp-connections") as net:
        address = _address(net)
        api_segments, program_segments = _Segments(net), _Segments(net)
        for _ in range(options.rounds):
            bases.append(relay_round_trips(options.rtt_samples))
            api.append(api_segments.measure(lambda: api_connection_rate(net, address, seconds), lambda _: 0))
            program.append(program_segments.measure(lambda: program_connection_rate(net, address, seconds),
                                                    lambda _: 0))
    print(f"  {CONNECTIONS}: {statistics.median(r[0] for r in api):.0f} in-process, "
          f"{statistics.median(r[0] for r in program):.0f} programs", flush=True)
    note = f"connect + {MSG} B + close across a switch, {CLIENTS} concurrent clients; {seconds} s x {options.rounds}"
    base_name = "bare relay round trips/s (64 B)"

    def counted(results: list[tuple[float, int, int]], segments: _Segments) -> str:
        return (f"{sum(r[1] for r in results)} connections, {sum(r[2] for r in results)} of them over {STALL:g} s; "
                f"h1 sent {segments.counts['out']} segments, {segments.counts['retransmitted']} retransmitted")
    return (_row(CONNECTIONS, [r[0] for r in api], "connections/s", bases, base_name, CONNECTIONS_MINIMUM,
                 f"{note}; API sockets; {counted(api, api_segments)}"),
            _row(CONNECTIONS + IPERF, [r[0] for r in program], "connections/s", bases, base_name,
                 CONNECTIONS_MINIMUM, f"{note}; Python client/server programs; {counted(program, program_segments)}"))


def run(argv: list[str] | None = None) -> list[Row]:
    options = parse(argv)
    load = os.getloadavg()[0]
    print(f"bench tcp: {options.seconds} s per measurement, {options.rounds} round(s), {','.join(options.only)}; "
          f"load average {load:.2f} at the start", flush=True)
    if load > 1.0:
        print("bench tcp: the machine is busy (load > 1 on 2 vCPUs): expect low and noisy figures", flush=True)
    api_rows: list[Row] = []
    program_rows: list[Row] = []
    for metric, kind, minimum, path in GOODPUT:
        if kind in options.only:
            in_process, iperf = goodput_rows(kind, metric, minimum, path, options)
            api_rows.append(in_process)
            program_rows.append(iperf)
    if "connections" in options.only:
        in_process, programs = connection_rows(options)
        api_rows.append(in_process)
        program_rows.append(programs)
    if IMPAIRED in options.only:
        row = impaired_row(topology(ROUTER), options.quick)
        print(f"  {row.metric}: {row.value:.1f} Mbit/s ({row.target})", flush=True)
        api_rows.append(row)
    print(f"bench tcp: load average {os.getloadavg()[0]:.2f} at the end", flush=True)
    return api_rows + program_rows
