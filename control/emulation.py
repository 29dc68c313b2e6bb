"""The scenario API: `Emulation` (start, faults, waiting, crashes, status); the handles it gives
out (`NodeHandle`, `LinkHandle`, `PingResult`, `Hop`) are in control.handles.

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
import sys
import time
from pathlib import Path
from typing import Any, Callable, Iterable, TypeVar

import psutil
import zmq

from bus.tap import preflight_problems, tap_port_name
from bus.transport import ControlClient

from .handles import Hop, LinkHandle, NodeHandle, PingResult  # noqa: F401 - Hop re-exported
from .plan import Plan, build_plan
from .supervisor import ExitEvent, ProcessExited, Supervisor
from .topology import load_topology
from .topology_model import Topology
from .waiting import wait_for

T = TypeVar("T")

# Every wait scales with the size of the emulation: 500 nodes are slower than 5.
BASE_READY_TIMEOUT = 15.0
READY_TIMEOUT_PER_PROCESS = 0.05


class EmulationError(RuntimeError):
    """The emulation could not start, or a request to it failed."""


def tap_problems(topology: Topology) -> list[str]:
    """What stops the topology's TAP devices from being made by this process (no root/CAP_NET_ADMIN,
    no /dev/net/tun, a network namespace that does not exist); empty without TAPs."""
    return preflight_problems([(s.name, s.tap.device, s.tap.netns) for s in topology.segments.values()
                               if s.tap is not None])


def call_concurrently(requests: list[tuple[str, str, dict[str, Any]]], timeout: float,
                      context: zmq.Context | None = None) -> list[Any]:
    """Send every (endpoint, op, args) at once and wait for all replies; results in order.

    A failed request yields its ControlError (not raised), so one dead node
    does not hide the answers of the others. (`ControlClient.fan_out`.)
    """
    return ControlClient.fan_out(requests, timeout, context=context)


class Emulation:
    """A running topology: starts on `start()`/`with`, tears down on `stop()`/exit."""

    def __init__(self, topology: str | os.PathLike[str] | Topology, *, name: str | None = None,
                 seed: int = 0, keep_logs: bool = False, ready_timeout: float | None = None,
                 progress: Callable[[str, int, int], None] | None = None,
                 on_crash: Callable[[ExitEvent], None] | None = None, handle_signals: bool = True,
                 run_dir: str | os.PathLike[str] | None = None, strict: bool | None = None,
                 cluster: str | None = None, insecure: bool = False, encrypt: bool | None = None,
                 detached: bool = False) -> None:
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
        # Across machines (docs/cluster.md): `cluster` is a Ray address or "auto".
        self.cluster: Any = None
        if cluster is not None:
            from .cluster_run import ClusterRun

            self.cluster = ClusterRun(cluster, insecure=insecure, encrypt=encrypt, detached=detached)
        self.nodes: dict[str, NodeHandle] = {}
        self._partitioned: set[str] = set()
        self._started = False
        # strict: leaving the `with` block fails (EmulationError) when a node's exception
        # barrier caught anything (softnet rx_exceptions/timer_exceptions): each is a bug.
        # The test suite turns it on for every emulation through NETEMU_STRICT=1.
        self.strict = os.environ.get("NETEMU_STRICT") == "1" if strict is None else strict

    # -- life cycle -----------------------------------------------------------

    def start(self) -> "Emulation":
        problems = tap_problems(self.topology)
        if problems:  # refused before anything starts
            raise EmulationError("; ".join(problems))
        supervisor = self.supervisor
        if self.cluster is not None:
            self.plan = self.cluster.prepare(self)  # agents write each machine's hosts file
            supervisor.zygote_factory = self.cluster.zygote_factory
        try:
            supervisor.__enter__()
        except BaseException:
            if self.cluster is not None:
                self.cluster.close()
            raise
        try:
            assert supervisor.run_dir is not None
            if self.cluster is not None:
                self.plan.run_dir = str(supervisor.run_dir.path)
            else:
                self.plan = build_plan(self.topology, str(supervisor.run_dir.path), seed=self.seed)
                self.plan.write_hosts_file()
            self._start_group("segments", self.plan.devices)
            self._start_group("nodes", self.plan.nodes)
            self._wait_attached([i.attachment for i in self.topology.interfaces()]
                                + [link.attachment for link in self.topology.links])
        except BaseException:
            supervisor.__exit__(None, None, None)
            if self.cluster is not None:
                self.cluster.close()
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
        owner = getattr(self.plan, "port_owner", None)
        if owner:  # across machines: the device of the port's own machine
            return owner[attachment]
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
        """Tear everything down: processes, socket files, the run directory.

        With `strict`, first asks every node for the frames and timers its
        exception barrier caught, and raises EmulationError after the teardown
        if any did.
        """
        caught = self.barrier_exceptions() if self.strict and self._started else {}
        try:
            self._stop_programs()
            if self.cluster is not None and self._started:
                self.cluster.finish_topology_captures(self)
        finally:
            try:
                self.supervisor.__exit__(None, None, None)
            finally:
                if self.cluster is not None:
                    self.cluster.close()
        self._started = False
        if caught:
            listed = ", ".join(f"{name}: {count}" for name, count in sorted(caught.items()))
            raise EmulationError(f"{self.name}: the exception barrier of nodes caught what a node must never "
                                 f"raise ({listed}); their logs have the tracebacks (keep_logs=True keeps them)")

    def _stop_programs(self) -> None:
        """Programs on nodes (ours, and `netemu exec`'s of other processes, recorded in the run
        directory) and all their processes: SIGTERM, then SIGKILL (control/program_guard.py)."""
        from .program_guard import stop_registered

        programs = self.__dict__.get("programs")
        if programs is not None:
            programs.stop_all()
        if self.plan is not None:
            stop_registered(self.plan.run_dir)

    def barrier_exceptions(self) -> dict[str, int]:
        """Nodes whose exception barriers caught anything: name -> rx_exceptions + timer_exceptions + the
        exceptions of programs' calls (trapped, in-process) and of servicing their sockets."""
        handles = self.supervisor.processes
        live = [name for name in self.topology.nodes if name in handles and handles[name].alive]
        replies = call_concurrently([(handles[name].control, "counters", {}) for name in live], 5.0)
        caught = {}
        for name, reply in zip(live, replies):
            if isinstance(reply, Exception):
                continue
            softnet = reply.get("softnet") or {}
            count = int(softnet.get("rx_exceptions", 0)) + int(softnet.get("timer_exceptions", 0))
            programs = reply.get("programs") or {}     # the barriers around programs' calls (nodes/programs.py)
            count += int(programs.get("exceptions", 0)) + int((programs.get("syscalls") or {}).get("errors", 0))
            count += int((programs.get("api") or {}).get("errors", 0))
            if count:
                caught[name] = count
        return caught

    def __enter__(self) -> "Emulation":
        return self.start()

    def __exit__(self, exc_type: object, *exc_info: object) -> None:
        if exc_type is not None:
            self.strict = False  # the block's own exception is the one to see
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
        """The port between `a` and `b`: (node, interface), (node, segment), (segment, segment), or
        (segment, its TAP device)."""
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
        for segment, other in ((a, b), (b, a)):
            tap = topology.segments[segment].tap if segment in topology.segments else None
            if tap is not None and other in (tap.device, tap_port_name(tap.device)):
                return LinkHandle(self, segment, tap_port_name(tap.device))  # (lan0, ntap0): the TAP's port
        for link in topology.links:
            if {link.a, link.b} == {a, b}:
                return LinkHandle(self, link.b, link.attachment)
        raise KeyError(f"no link between {a!r} and {b!r}")

    def links(self) -> list[tuple[str, str, str]]:
        """Who is wired to what: (node:iface or segment link, device, kind)."""
        wiring = [(i.attachment, i.device, self.topology.segments[i.device].kind) for i in self.topology.interfaces()]
        wiring += [(link.attachment, link.b, "uplink") for link in self.topology.links]
        wiring += [(tap_port_name(s.tap.device), s.name, "tap") for s in self.topology.segments.values() if s.tap]
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
        if self.cluster is not None:  # each machine's device writes its own; merged at stop_capture
            return self.cluster.capture_start(self, segment, str(Path(path).resolve()))
        return self.supervisor.call(segment, "capture_start", path=str(Path(path).resolve()))

    def stop_capture(self, segment: str) -> dict[str, Any] | None:
        """Finish `segment`'s capture: {"path", "frames"}, or None when none was running."""
        if self.cluster is not None:
            return self.cluster.capture_stop(self, segment)
        return self.supervisor.call(segment, "capture_stop")

    def wait_for(self, predicate: Callable[[], T], timeout: float = 10.0, interval: float = 0.05) -> T:
        """Poll `predicate` until it returns something truthy; that value, or TimeoutError (control/waiting.py)."""
        return wait_for(predicate, timeout, interval)

    def pingall(self, count: int = 1, timeout: float = 1.0, nodes: Iterable[str] | None = None) -> dict[tuple[str, str], PingResult | Exception]:
        """Ping every ordered pair of hosts (Mininet's pingall); results by (src, dst).

        Rounds of concurrent pings on a rotation (in round k, host i pings host
        i+k), so every destination answers one source at a time: many first
        packets toward one unresolved neighbour would overflow a router's ARP
        queue (`unres_qlen_bytes`, about 100 full frames) just as they would on Linux.
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
        devices = [p.name for p in self.plan.devices] if self.plan is not None else list(self.topology.segments)
        segments = [n for n in devices if n in handles and handles[n].alive]
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
        result = {"name": self.name, "processes": processes,
                  "links": {n: s["ports"] for n, s in zip(segments, stats) if not isinstance(s, Exception)}}
        if self.cluster is not None:
            for name in processes:
                processes[name]["machine"] = self.cluster.machine_of(name)
            result["cluster"] = self.cluster.describe()
        return result


def crash_line(emulation: str, event: ExitEvent, lines: int = 3) -> str:
    """The one line printed for an unexpected exit: who, how, and the last lines of its log."""
    tail = [line.strip() for line in event.log_tail if line.strip()][-lines:]
    said = " | ".join(" ".join(line.split()) for line in tail) if tail else "(its log is empty)"
    return f"*** netemu {emulation}: {event.describe()} unexpectedly; last lines of its log: {said}"

