"""`python -m bench interop [--quick] [--seconds S] [--rounds N]`: TCP between the Linux kernel and
netemu through a TAP (issue 15), beside Linux to Linux over a veth pair in the same run.

Rows (Mbit/s of goodput: the receiving iperf3's `end.sum_received`, `iperf3 -s -1 --json` at the
receiver, `iperf3 -c ADDRESS -t S --json` at the sender):

* `TCP goodput Linux to netemu`: iperf3 -c in a Linux namespace (`netemu-bench-<random>`) whose
  TAP `nbtap0` (10.0.0.1/24) is on lan0, iperf3 -s on h1 (10.0.0.10/24, `node.exec`).
* `TCP goodput netemu to Linux`: the reverse, iperf3 -c on h1, iperf3 -s in the namespace.
* `TCP goodput Linux to Linux (veth)`: two namespaces joined by a veth pair (10.0.9.1 and
  10.0.9.2/24), both ends the kernel's TCP with its offloads (TSO/GRO): the raw limit of
  the machine for one TCP stream, and the baseline of the two rows above.

Every round measures the veth pair first, then the two TAP directions. `--quick`: 1 s
measurements; `--rounds N`: the median of N rounds (each round's figure in the note). Needs root
(namespaces, the TAP, the programs' trap) and iperf3. Figures on 2 shared vCPUs are noisy.
"""
from __future__ import annotations

import argparse
import contextlib
import os
import secrets
import statistics
import subprocess
from dataclasses import dataclass
from typing import Callable, Iterator

from control.emulation import Emulation
from control.topology import parse_topology

from .harness import Row
from .programs import Program, node_listening, on_node

LINUX_TO_NETEMU = "TCP goodput Linux to netemu"
NETEMU_TO_LINUX = "TCP goodput netemu to Linux"
VETH = "TCP goodput Linux to Linux (veth)"
TAP_DEVICE = "nbtap0"
LINUX_IP, H1_IP = "10.0.0.1", "10.0.0.10"
VETH_A, VETH_B = "10.0.9.1", "10.0.9.2"
PORT = 5211
MARGIN = 30.0           # s beyond a measurement before it counts as hung

_TOPOLOGY = """\
name: bench-interop-{tag}
segments:
  lan0: {{kind: switch, tap: {{device: {device}, netns: {ns}}}}}
nodes:
  h1:
    kind: host
    interfaces:
      eth0: {{segment: lan0, ip: {h1}/24}}
"""


def _ip(*argv: str) -> None:
    subprocess.run(["ip", *argv], check=True, capture_output=True, timeout=10)


@contextlib.contextmanager
def _namespace() -> Iterator[str]:
    """A new network namespace `netemu-bench-<random>` with lo up; deleted afterwards."""
    name = f"netemu-bench-{secrets.token_hex(4)}"
    _ip("netns", "add", name)
    try:
        _ip("-n", name, "link", "set", "lo", "up")
        yield name
    finally:
        subprocess.run(["ip", "netns", "del", name], capture_output=True, timeout=10)


def _in_namespace(ns: str) -> Callable[..., subprocess.Popen]:
    return lambda argv, **kw: subprocess.Popen(["ip", "netns", "exec", ns, *argv], **kw)


def _ns_listening(ns: str) -> Callable[[], bool]:
    def listening() -> bool:
        result = subprocess.run(["ip", "netns", "exec", ns, "ss", "-Htln", f"sport = :{PORT}"],
                                capture_output=True, text=True, timeout=10)
        return bool(result.stdout.strip())
    return listening


def iperf(server: tuple[str, Callable[..., subprocess.Popen], Callable[[], bool]],
          client: tuple[str, Callable[..., subprocess.Popen]], address: str, seconds: int) -> float:
    """Mbit/s the receiving iperf3 counted (`end.sum_received`) of one test client -> server."""
    with contextlib.ExitStack() as stack:
        where, start, listening = server
        receiver = Program(start, where, ["iperf3", "-s", "-1", "--json", "-p", str(PORT)], stack)
        receiver.wait_listening(listening)
        sender = Program(client[1], client[0], ["iperf3", "-c", address, "-p", str(PORT), "-t", str(seconds),
                                                 "--json"], stack)
        sender.report(seconds + MARGIN)
        return float(receiver.report(MARGIN)["end"]["sum_received"]["bits_per_second"]) / 1e6


@dataclass
class Options:
    seconds: int
    rounds: int


def parse(argv: list[str] | None) -> Options:
    parser = argparse.ArgumentParser(prog="python -m bench interop", description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="1 s measurements")
    parser.add_argument("--seconds", type=int, default=None, help="length of each measurement (default 3, --quick 1)")
    parser.add_argument("--rounds", type=int, default=1, help="rounds of every measurement, the median reported")
    args = parser.parse_args(argv or [])
    seconds = args.seconds if args.seconds is not None else 1 if args.quick else 3
    if seconds < 1 or args.rounds < 1:
        parser.error("--seconds and --rounds must be >= 1")
    return Options(seconds, args.rounds)


@contextlib.contextmanager
def veth_pair() -> Iterator[tuple[str, str]]:
    """Two namespaces joined by a veth pair: (namespace of VETH_A, namespace of VETH_B)."""
    with _namespace() as a, _namespace() as b:
        _ip("link", "add", "veth0", "netns", a, "type", "veth", "peer", "name", "veth0", "netns", b)
        for ns, address in ((a, VETH_A), (b, VETH_B)):
            _ip("-n", ns, "addr", "add", f"{address}/24", "dev", "veth0")
            _ip("-n", ns, "link", "set", "veth0", "up")
        yield a, b


@contextlib.contextmanager
def tap_emulation() -> Iterator[tuple[Emulation, str]]:
    """h1 on lan0, bridged to the TAP in a fresh namespace configured as LINUX_IP: (emulation, namespace)."""
    with _namespace() as ns:
        text = _TOPOLOGY.format(tag=ns.rsplit("-", 1)[-1], device=TAP_DEVICE, ns=ns, h1=H1_IP)
        with Emulation(parse_topology(text, "<bench interop>"), name=f"bench-interop-{ns.rsplit('-', 1)[-1]}") as net:
            _ip("-n", ns, "addr", "add", f"{LINUX_IP}/24", "dev", TAP_DEVICE)
            _ip("-n", ns, "link", "set", TAP_DEVICE, "up")
            yield net, ns


def _row(metric: str, values: list[float], bases: list[float], base_name: str, note: str) -> Row:
    spread = f"; rounds {', '.join(f'{v:.1f}' for v in values)}" if len(values) > 1 else ""
    return Row(metric, statistics.median(values), "Mbit/s", statistics.median(bases), base_name, note + spread)


def run(argv: list[str] | None = None) -> list[Row]:
    options = parse(argv)
    seconds = options.seconds
    print(f"bench interop: {seconds} s per measurement, {options.rounds} round(s); "
          f"load average {os.getloadavg()[0]:.2f} at the start", flush=True)
    veth: list[float] = []
    to_netemu: list[float] = []
    to_linux: list[float] = []
    with veth_pair() as (a, b), tap_emulation() as (net, ns):
        for _ in range(options.rounds):
            veth.append(iperf((b, _in_namespace(b), _ns_listening(b)), (a, _in_namespace(a)), VETH_B, seconds))
            to_netemu.append(iperf(("h1", on_node(net, "h1"), node_listening(net, "h1", PORT)),
                                   (ns, _in_namespace(ns)), H1_IP, seconds))
            to_linux.append(iperf((ns, _in_namespace(ns), _ns_listening(ns)), ("h1", on_node(net, "h1")),
                                  LINUX_IP, seconds))
    print(f"  {LINUX_TO_NETEMU}: {statistics.median(to_netemu):.1f} Mbit/s, {NETEMU_TO_LINUX}: "
          f"{statistics.median(to_linux):.1f}, veth {statistics.median(veth):.0f}", flush=True)
    print(f"bench interop: load average {os.getloadavg()[0]:.2f} at the end", flush=True)
    base = "Linux to Linux over veth, same run"
    note = f"iperf3, receiver's sum_received; {seconds} s x {options.rounds}"
    return [
        _row(LINUX_TO_NETEMU, to_netemu, veth, base, f"Linux ns -> TAP -> lan0 -> h1; {note}"),
        _row(NETEMU_TO_LINUX, to_linux, veth, base, f"h1 -> lan0 -> TAP -> Linux ns; {note}"),
        _row(VETH, veth, veth, "itself: the kernel's limit for one stream", f"ns -> veth -> ns, offloads on; {note}"),
    ]
