"""The scenario API: `Emulation`, node/link/segment handles, faults, waiting.

Before changing this file, read ARCHITECTURE.md ("Scenario API"), and
`control/supervisor.py` (processes), `control/plan.py` (their configs),
`nodes/kernel.py` and `bus/device.py` (the control ops called here).

    with Emulation("topologies/two_lans.yaml") as net:
        result = net["h1"].ping("h2", count=3)
        net.link("r1", "eth1").set(loss="5%", delay="5ms")
        net.partition(["h1"], ["h2"]); net.heal()

Starting returns only when every process answers and every interface is
attached to its segment; leaving the `with` block tears everything down, also
when the block raised.
"""
from __future__ import annotations

import itertools
import os
import signal
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, TypeVar

import psutil
import zmq

from bus.shaping import parse_link_params
from bus.transport import ControlClient, ControlError

from .plan import Plan, build_plan
from .supervisor import ExitEvent, ProcessExited, Supervisor
from .topology import load_topology
from .topology_model import Topology

T = TypeVar("T")

# Every wait scales with the size of the emulation: 500 nodes are slower than 5.
BASE_READY_TIMEOUT = 15.0
READY_TIMEOUT_PER_PROCESS = 0.05


class EmulationError(RuntimeError):
    """The emulation could not start, or a request to it failed."""


@dataclass
class PingResult:
    """What `ping -c COUNT` reports: sent, received, round-trip times (ms)."""

    destination: str
    sent: int
    received: int
    rtts: list[float]
    errors: list[dict[str, Any]]
    raw: dict[str, Any] = field(repr=False, default_factory=dict)

    @property
    def loss(self) -> float:
        """Fraction of echo requests without a reply (0.0 .. 1.0)."""
        return (self.sent - self.received) / self.sent if self.sent else 1.0

    @classmethod
    def from_result(cls, result: dict[str, Any]) -> "PingResult":
        return cls(result["destination"], result["transmitted"], result["received"],
                   [reply["rtt_ms"] for reply in result["replies"]], result["error_replies"], result)


@dataclass
class Hop:
    """One line of traceroute: the TTL, who answered, and each probe's RTT (None = `*`)."""

    hop: int
    address: str | None
    rtts: list[float | None]
    marks: list[str] = field(default_factory=list)


def call_concurrently(requests: list[tuple[str, str, dict[str, Any]]], timeout: float,
                      context: zmq.Context | None = None) -> list[Any]:
    """Send every (endpoint, op, args) at once and wait for all replies; results in order.

    A failed request yields its ControlError (not raised), so one dead node
    does not hide the answers of the others. (`ControlClient.fan_out`.)
    """
    return ControlClient.fan_out(requests, timeout, context=context)


class NodeHandle:
    """One host or router of a running emulation."""

    def __init__(self, emulation: "Emulation", name: str) -> None:
        self.emulation = emulation
        self.name = name
        self.model = emulation.topology.nodes[name]

    def __repr__(self) -> str:
        return f"<NodeHandle {self.name} ({self.model.kind}) pid={self.pid}>"

    @property
    def pid(self) -> int | None:
        """The kernel process's pid; None once it has exited (until `restart()`)."""
        handle = self.emulation.supervisor[self.name]
        return handle.pid if handle.alive else None

    @property
    def addresses(self) -> list[str]:
        return [str(interface.address) for interface in self.model.interfaces.values()]

    def call(self, op: str, /, **args: Any) -> Any:
        """One control request to this node's kernel (raises ControlError / ControlTimeout)."""
        return self.request(op, args)

    def request(self, op: str, args: dict[str, Any], timeout: float = 5.0) -> Any:
        """Like `call`, with an explicit reply timeout (for requests that take a while)."""
        with ControlClient(self.emulation.supervisor[self.name].control, timeout) as client:
            return client.request(op, args)

    # -- probes ---------------------------------------------------------------

    def ping(self, destination: str, count: int = 3, size: int = 56, interval: float = 1.0,
             timeout: float = 2.0, ttl: int | None = None, dont_fragment: bool = False) -> PingResult:
        """`ping -c COUNT -s SIZE -i INTERVAL -W TIMEOUT [-t TTL] DESTINATION` from this node."""
        result = self.request("ping", {"dst": destination, "count": count, "size": size, "interval": interval,
                                       "timeout": timeout, "ttl": ttl, "dont_fragment": dont_fragment},
                              timeout=count * interval + timeout + 5.0)
        return PingResult.from_result(result)

    def traceroute(self, destination: str, max_hops: int = 30, probes: int = 3, wait: float = 2.0) -> list[Hop]:
        """`traceroute -m MAX_HOPS -q PROBES -w WAIT DESTINATION`: one Hop per TTL."""
        result = self.request("traceroute", {"dst": destination, "max_hops": max_hops, "probes": probes,
                                             "wait": wait}, timeout=max_hops * probes * (wait + 0.5) + 5.0)
        return [Hop(hop["hop"], hop["address"], [p["rtt_ms"] if p else None for p in hop["probes"]],
                    [p["mark"] for p in hop["probes"] if p and "mark" in p])
                for hop in result["hops"]]

    # -- tables ---------------------------------------------------------------

    def arp(self) -> list[dict[str, Any]]:
        """`ip neigh show` as a list of dicts (ip, dev, lladdr, state, ...)."""
        return self.call("neigh")

    def routes(self, table: str = "main") -> list[dict[str, Any]]:
        """`ip route show [table local|all]`."""
        return self.call("routes", table=table)

    def route_cache(self) -> dict[str, Any]:
        return self.call("route_cache")

    def interfaces(self) -> list[dict[str, Any]]:
        """`ip -s addr show`."""
        return self.call("interfaces")

    def counters(self) -> dict[str, Any]:
        """/proc/net/snmp-style counters: Ip, Icmp, Udp, arp_cache, softnet, devices..."""
        return self.call("counters")

    def sysctl(self, name: str | None = None, value: Any = None) -> Any:
        return self.call("sysctl", name=name, value=value)

    def add_route(self, dst: str, gateway: str | None = None, dev: str | None = None, metric: int = 0) -> None:
        self.call("route_add", dst=dst, gateway=gateway, dev=dev, metric=metric)

    def delete_route(self, dst: str, gateway: str | None = None, dev: str | None = None) -> None:
        self.call("route_del", dst=dst, gateway=gateway, dev=dev)

    def flush_arp(self, dev: str | None = None) -> None:
        """`ip neigh flush dev DEV` (all devices when None)."""
        self.call("neigh_flush", dev=dev)

    def set_link(self, dev: str, up: bool) -> None:
        """`ip link set DEV up|down` inside the node (the NIC side, not the wire)."""
        self.call("link_set", dev=dev, up=up)

    # -- process faults -------------------------------------------------------

    def kill(self, sig: int = signal.SIGKILL) -> None:
        """Kill the node's kernel process (a crash: its neighbours notice only by silence)."""
        self.emulation.supervisor.kill(self.name, sig)
        self.emulation._wait_exit(self.name)

    def restart(self) -> None:
        """Start the node again with its original configuration and wait until it is attached."""
        emulation = self.emulation
        emulation.supervisor.restart(self.name, ready_timeout=emulation.ready_timeout)
        emulation._wait_attached([interface.attachment for interface in self.model.interfaces.values()])

    def pause(self) -> None:
        """Freeze the node (SIGSTOP): its timers stop, frames queue up, control requests time out."""
        os.kill(self._live_pid(), signal.SIGSTOP)

    def resume(self) -> None:
        """Thaw a paused node (SIGCONT)."""
        os.kill(self._live_pid(), signal.SIGCONT)

    def _live_pid(self) -> int:
        handle = self.emulation.supervisor[self.name]
        if not handle.alive or handle.pid is None:
            raise ProcessLookupError(f"{self.name} is not running")
        return handle.pid

    # -- arrive with the sockets issue ----------------------------------------

    def socket(self, *args: Any, **kwargs: Any) -> Any:
        raise NotImplementedError("emulated sockets (node.socket) arrive with the socket-layer issue")

    def exec(self, *args: Any, **kwargs: Any) -> Any:
        raise NotImplementedError("running programs on a node's stack (node.exec) arrives with the socket-layer issue")


class LinkHandle:
    """One port of a bus device (an attachment, or one end of a segment link)."""

    def __init__(self, emulation: "Emulation", device: str, port: str) -> None:
        self.emulation = emulation
        self.device = device
        self.port = port

    def __repr__(self) -> str:
        return f"<LinkHandle {self.device}[{self.port}]>"

    def set(self, **params: Any) -> dict[str, Any]:
        """Change link parameters at run time (`delay="10ms"`, `loss="1%"`, `rate="10Mbit"`...).

        Values take the same units as the topology file (a bare loss is a
        percentage, as in netem); setting a parameter to 0 removes it.
        """
        canonical = parse_link_params(params)
        return self.emulation.supervisor.call(self.device, "set_port", port=self.port, **canonical)

    def up(self) -> None:
        self.set(up=True)

    def down(self) -> None:
        self.set(up=False)

    def stats(self) -> dict[str, Any]:
        return self.emulation.supervisor.call(self.device, "stats")["ports"][self.port]


class Emulation:
    """A running topology: starts on `start()`/`with`, tears down on `stop()`/exit."""

    def __init__(self, topology: str | os.PathLike[str] | Topology, *, name: str | None = None,
                 seed: int = 0, keep_logs: bool = False, ready_timeout: float | None = None,
                 progress: Callable[[str, int, int], None] | None = None,
                 on_crash: Callable[[ExitEvent], None] | None = None, handle_signals: bool = True,
                 run_dir: str | os.PathLike[str] | None = None) -> None:
        if isinstance(topology, Topology):
            self.topology = topology
            self.topology_path: str | None = topology.source
        else:
            self.topology_path = str(Path(topology).resolve())
            self.topology = load_topology(topology)
        self.name = name or self.topology.name
        self.seed = seed
        self.keep_logs = keep_logs
        process_count = len(self.topology.nodes) + len(self.topology.segments)
        self.ready_timeout = ready_timeout or BASE_READY_TIMEOUT + READY_TIMEOUT_PER_PROCESS * process_count
        self.progress = progress
        self.crashes: list[ExitEvent] = []
        self._user_on_crash = on_crash
        self._expected_crashes: set[str] = set()
        self.supervisor = Supervisor(self.name, run_dir, on_crash=self._on_crash, topology=self.topology_path,
                                     keep_logs=keep_logs, handle_signals=handle_signals)
        self.plan: Plan | None = None
        self.nodes: dict[str, NodeHandle] = {}
        self._partitioned: set[str] = set()
        self._started = False

    # -- life cycle -----------------------------------------------------------

    def start(self) -> "Emulation":
        supervisor = self.supervisor
        supervisor.__enter__()
        try:
            assert supervisor.run_dir is not None
            self.plan = build_plan(self.topology, str(supervisor.run_dir.path), seed=self.seed)
            self.plan.write_hosts_file()
            self._start_group("segments", self.plan.devices)
            self._start_group("nodes", self.plan.nodes)
            self._wait_attached([i.attachment for i in self.topology.interfaces()]
                                + [link.attachment for link in self.topology.links])
        except BaseException:
            supervisor.__exit__(None, None, None)
            raise
        self.nodes = {name: NodeHandle(self, name) for name in self.topology.nodes}
        self._started = True
        return self

    def _start_group(self, label: str, processes: list[Any]) -> None:
        if not processes:
            return
        progress = None
        if self.progress is not None:
            progress = lambda ready, total: self.progress(label, ready, total)  # noqa: E731
        self.supervisor.spawn_many([(p.name, p.target, p.config) for p in processes])
        try:
            self.supervisor.wait_ready([p.name for p in processes], timeout=self.ready_timeout, progress=progress)
        except ProcessExited as exc:
            raise EmulationError(str(exc)) from exc

    def _wait_attached(self, attachments: Iterable[str]) -> None:
        """Wait until each attachment (``node:iface``, ``lan1~lan2``) is a live port of its device."""
        wanted: dict[str, set[str]] = {}
        for attachment in attachments:
            wanted.setdefault(self._device_of(attachment), set()).add(attachment)
        deadline = time.monotonic() + self.ready_timeout
        while wanted:
            names = sorted(wanted)
            replies = call_concurrently([(self.supervisor[n].control, "ports", {}) for n in names], 5.0)
            for device, ports in zip(names, replies):
                if isinstance(ports, Exception):
                    continue
                attached = {port["name"] for port in ports if port.get("attached")}
                wanted[device] -= attached
                if not wanted[device]:
                    del wanted[device]
            if not wanted:
                return
            if time.monotonic() > deadline:
                missing = sorted(itertools.chain.from_iterable(wanted.values()))
                raise EmulationError(f"not attached after {self.ready_timeout:g} s: {', '.join(missing[:10])}")
            time.sleep(0.02)

    def _device_of(self, attachment: str) -> str:
        if "~" in attachment:
            return attachment.split("~", 1)[1]  # the port named a~b lives on b (and a's uplink)
        node, _, interface = attachment.partition(":")
        return self.topology.nodes[node].interfaces[interface].device

    def _wait_exit(self, name: str, timeout: float = 5.0) -> None:
        deadline = time.monotonic() + timeout
        while self.supervisor[name].alive:
            if time.monotonic() > deadline:
                raise EmulationError(f"{name} did not exit within {timeout:g} s")
            time.sleep(0.01)

    def stop(self) -> None:
        """Tear everything down: processes, socket files, the run directory."""
        self.supervisor.__exit__(None, None, None)
        self._started = False

    def __enter__(self) -> "Emulation":
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def _on_crash(self, event: ExitEvent) -> None:
        self.crashes.append(event)
        if event.name not in self._expected_crashes:
            print(crash_line(self.name, event), file=sys.stderr, flush=True)
        if self._user_on_crash is not None:
            self._user_on_crash(event)

    def expect_crash(self, name: str) -> None:
        """Say that process `name` (a node or segment) is meant to exit on its own from now on.

        Its exits are still listed in `crashes`, but they print nothing and do
        not fail the pytest fixture's test (`kill()` needs no such call: an exit
        asked for is not a crash).
        """
        if name not in self.supervisor.processes:
            known = ", ".join(sorted(self.supervisor.processes))
            raise KeyError(f"no process {name!r} in emulation {self.name!r} (processes: {known})")
        self._expected_crashes.add(name)

    def unexpected_crashes(self, settle: float = 1.0) -> list[ExitEvent]:
        """The crashes nobody expected (neither `kill()` nor `expect_crash()`).

        First waits up to `settle` seconds until every process that has
        already died is reported, so a crash just before the call counts.
        """
        deadline = time.monotonic() + settle
        while time.monotonic() < deadline and self._unreported_exits():
            time.sleep(0.01)
        self.supervisor.wait_crash_reports(max(0.0, deadline - time.monotonic()))
        return [event for event in self.crashes if event.name not in self._expected_crashes]

    def _unreported_exits(self) -> list[str]:
        """Processes the supervisor still thinks alive that no longer run."""
        gone = []
        for name, handle in self.supervisor.processes.items():
            if not handle.alive or handle.pid is None:
                continue
            try:
                if psutil.Process(handle.pid).status() != psutil.STATUS_ZOMBIE:
                    continue
            except psutil.Error:
                pass
            gone.append(name)
        return gone

    # -- handles --------------------------------------------------------------

    def __getitem__(self, name: str) -> NodeHandle:
        try:
            return self.nodes[name]
        except KeyError:
            raise KeyError(f"no node {name!r} (nodes: {', '.join(self.topology.nodes)})") from None

    @property
    def hosts(self) -> list[str]:
        return [name for name, node in self.topology.nodes.items() if node.kind == "host"]

    def link(self, a: str, b: str) -> LinkHandle:
        """The port between `a` and `b`: (node, interface), (node, segment), or (segment, segment)."""
        topology = self.topology
        if a in topology.nodes:
            node = topology.nodes[a]
            if b in node.interfaces:
                interface = node.interfaces[b]
                return LinkHandle(self, interface.device, interface.attachment)
            for interface in node.interfaces.values():
                if interface.device == b:
                    return LinkHandle(self, b, interface.attachment)
            if b in topology.nodes:
                for interface in node.interfaces.values():
                    segment = topology.segments[interface.device]
                    if segment.kind == "p2p" and any(i.node == b for i in segment.attachments):
                        return LinkHandle(self, segment.name, interface.attachment)
            raise KeyError(f"{a} has no interface or segment {b!r} (a direct p2p link or a segment it is on)")
        if a in topology.nodes or b in topology.nodes:
            return self.link(b, a)
        for link in topology.links:
            if {link.a, link.b} == {a, b}:
                return LinkHandle(self, link.b, link.attachment)
        raise KeyError(f"no link between {a!r} and {b!r}")

    def links(self) -> list[tuple[str, str, str]]:
        """Who is wired to what: (node:iface or segment link, device, kind)."""
        wiring = [(i.attachment, i.device, self.topology.segments[i.device].kind) for i in self.topology.interfaces()]
        wiring += [(link.attachment, link.b, "uplink") for link in self.topology.links]
        return wiring

    # -- faults ---------------------------------------------------------------

    def partition(self, group_a: Iterable[str], group_b: Iterable[str]) -> None:
        """Cut every path between two groups of nodes (like iptables DROP on both sides).

        Each node of one group drops every datagram from or to the other
        group's addresses, wherever it is in the network; `heal()` undoes it.
        """
        group_a, group_b = list(group_a), list(group_b)
        for name in group_a + group_b:
            self[name]  # noqa: B018 - validates the names before anything changes
        if not group_a or not group_b:
            raise ValueError("partition: each group needs at least one node")
        if both := sorted(set(group_a) & set(group_b)):
            # A node on both sides would block its own peers' addresses and be cut off from everyone.
            raise ValueError(f"partition: {', '.join(both)} cannot be on both sides (the groups must not overlap)")
        blocked: dict[str, set[str]] = {}
        for mine, theirs in ((group_a, group_b), (group_b, group_a)):
            addresses = {address for name in theirs for address in self.nodes[name].addresses}
            for name in mine:
                blocked.setdefault(name, set()).update(addresses)
        for name, addresses in blocked.items():
            self.nodes[name].call("filter_set", blocked=sorted(addresses))
            self._partitioned.add(name)

    def heal(self) -> None:
        """Undo every partition."""
        for name in sorted(self._partitioned):
            if self.supervisor[name].alive:
                self.nodes[name].call("filter_set", blocked=[])
        self._partitioned.clear()

    # -- observation ----------------------------------------------------------

    def capture(self, segment: str, path: str | os.PathLike[str]) -> str:
        """Start writing a pcap of everything `segment` carries; returns the absolute path."""
        if segment not in self.topology.segments:
            raise KeyError(f"no segment {segment!r}")
        return self.supervisor.call(segment, "capture_start", path=str(Path(path).resolve()))

    def stop_capture(self, segment: str) -> dict[str, Any] | None:
        """Finish `segment`'s capture: {"path", "frames"}, or None when none was running."""
        return self.supervisor.call(segment, "capture_stop")

    def wait_for(self, predicate: Callable[[], T], timeout: float = 10.0, interval: float = 0.05) -> T:
        """Poll `predicate` until it returns something truthy; that value, or TimeoutError."""
        deadline = time.monotonic() + timeout
        last_error: Exception | None = None
        while True:
            try:
                value = predicate()
                if value:
                    return value
            except (ControlError, KeyError) as exc:
                last_error = exc
            if time.monotonic() > deadline:
                raise TimeoutError(f"condition not met within {timeout:g} s" + (f" (last error: {last_error})" if last_error else ""))
            time.sleep(interval)

    def pingall(self, count: int = 1, timeout: float = 1.0, nodes: Iterable[str] | None = None) -> dict[tuple[str, str], PingResult | Exception]:
        """Ping every ordered pair of hosts (Mininet's pingall); results by (src, dst).

        Rounds of concurrent pings on a rotation (in round k, host i pings host
        i+k), so every destination answers one source at a time: many first
        packets toward one unresolved neighbour would overflow a router's ARP
        queue (`unres_qlen`, 3) just as they would on Linux.
        """
        names = list(nodes) if nodes is not None else self.hosts
        results: dict[tuple[str, str], PingResult | Exception] = {}
        for shift in range(1, len(names)):
            pairs = [(src, names[(index + shift) % len(names)]) for index, src in enumerate(names)]
            requests = [(self.supervisor[src].control, "ping",
                         {"dst": dst, "count": count, "interval": 0.2, "timeout": timeout}) for src, dst in pairs]
            replies = call_concurrently(requests, count * 0.2 + timeout + 10.0)
            for pair, reply in zip(pairs, replies):
                results[pair] = reply if isinstance(reply, Exception) else PingResult.from_result(reply)
        return {(src, dst): results[(src, dst)] for src in names for dst in names if src != dst}

    def status(self) -> dict[str, Any]:
        """Every process (pid, state, exit status, restarts; `rx_exceptions` of nodes), and the
        per-port counters of every segment.

        `pid` is None once a process has exited, `returncode`/`signal` None while it runs.
        `rx_exceptions` is the node kernel's `softnet` counter of frames whose
        processing raised (0 when the kernel does not count them, None when
        the node does not answer).
        """
        handles = self.supervisor.processes
        processes = {name: {"pid": h.pid if h.alive else None, "state": h.state.value, "target": h.target,
                            "restarts": h.restarts, "returncode": h.returncode, "signal": h.signal}
                     for name, h in handles.items()}
        segments = [n for n in self.topology.segments if n in handles and handles[n].alive]
        nodes = [n for n in self.topology.nodes if n in handles]
        for name in nodes:
            processes[name]["rx_exceptions"] = None
        live_nodes = [n for n in nodes if handles[n].alive]
        replies = call_concurrently([(handles[n].control, "stats", {}) for n in segments]
                                    + [(handles[n].control, "counters", {}) for n in live_nodes], 5.0)
        stats, counters = replies[:len(segments)], replies[len(segments):]
        for name, reply in zip(live_nodes, counters):
            if not isinstance(reply, Exception):
                processes[name]["rx_exceptions"] = int((reply.get("softnet") or {}).get("rx_exceptions", 0))
        return {"name": self.name, "processes": processes,
                "links": {n: s["ports"] for n, s in zip(segments, stats) if not isinstance(s, Exception)}}


def crash_line(emulation: str, event: ExitEvent, lines: int = 3) -> str:
    """The one line printed for an unexpected exit: who, how, and the last lines of its log."""
    tail = [line.strip() for line in event.log_tail if line.strip()][-lines:]
    said = " | ".join(" ".join(line.split()) for line in tail) if tail else "(its log is empty)"
    return f"*** netemu {emulation}: {event.describe()} unexpectedly; last lines of its log: {said}"

