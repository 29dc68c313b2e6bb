"""One emulation on a Ray cluster: what `Emulation(cluster=...)` adds to a single-machine run.

Before changing this file, read docs/cluster.md, control/cluster.py (Ray, agents,
`ClusterZygote`), control/cluster_plan.py (the plan across machines) and
control/placement.py (who goes where).

`ClusterRun.prepare()` runs before the supervisor starts: attach to Ray, place the
topology on the cluster's nodes, start an agent on each machine used, reserve the
TCP ports of the tcp:// endpoints, build the plan, generate the emulation's CURVE
keys (unless `cluster: {encrypt: false}`) and register them for the controller's
own control requests. The supervisor then drives the agents through `ClusterZygote`
as it drives a local zygote, and everything else of `Emulation` (readiness, ping,
link set, kill/restart, partition, status) works over the tcp:// control endpoints.

What differs for the user, and is done here:
* captures: each device of a spread segment writes its own pcap on its machine;
  `capture_stop` (or the teardown, for a segment's `capture:` in the topology) fetches
  them through the agents and merges them by timestamp into the one file asked for;
* programs: a node on the controller's own Ray node runs them as on one machine; a node
  of another machine runs them through its agent (control/remote_exec.py), and
  `exec` gives a `RemoteProcess`, with Popen's interface.
"""
from __future__ import annotations

import contextlib
import heapq
import logging
import os
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

from bus import curve
from bus.pcap import PcapWriter, read_pcap

from .cluster import ClusterError, ClusterSession, ClusterZygote
from .cluster_plan import ClusterPlan, Machine, build_cluster_plan, endpoints_of, ports_needed
from .placement import place
from .plan import hosts_file_text
from .supervisor import DEFAULT_TARGET_MODULES

if TYPE_CHECKING:
    from .emulation import Emulation

log = logging.getLogger(__name__)


class ClusterRun:
    """The cluster side of one running `Emulation`."""

    def __init__(self, address: str, *, insecure: bool = False, encrypt: bool | None = None,
                 detached: bool = False) -> None:
        self.address = address
        self.insecure = insecure
        self.encrypt_override = encrypt
        self.detached = detached
        self.session: ClusterSession | None = None
        self.plan: ClusterPlan | None = None
        self.keys: curve.CurveKeys | None = None
        self.endpoints: list[str] = []
        self.local_machine: int | None = None
        self.zygote: ClusterZygote | None = None
        self._captures: dict[str, tuple[str, dict[str, str]]] = {}  # segment -> (path, {device: pcap there})

    @property
    def encrypted(self) -> bool:
        return self.keys is not None

    def prepare(self, emulation: "Emulation") -> ClusterPlan:
        """Attach, place, start the agents, build the plan. Undone by `close()` on failure."""
        topology = emulation.topology
        self.session = session = ClusterSession(self.address, insecure=self.insecure).connect()
        try:
            nodes = session.nodes()
            placement = place(topology, nodes)
            used = sorted(set(placement.machine_of.values())
                          | {m for where in placement.segment_machines.values() for m in where})
            agents = session.start_agents(emulation.name, {m: nodes[m] for m in used}, detached=self.detached,
                                          preload=list(DEFAULT_TARGET_MODULES), hosts=hosts_file_text(topology.hosts))
            session.verify_authentication()  # the token probe ran while the agents started
            machines = [Machine(i, a.started["ip"], a.started["run_dir"], a.started.get("hostname", ""),
                                a.info.node_id) for i, a in sorted(agents.items())]
            ports = reserve_ports(session, machines, ports_needed(topology, placement))
            encrypt = topology.cluster.encrypt if self.encrypt_override is None else self.encrypt_override
            self.keys = curve.CurveKeys.generate() if encrypt else None
            self.plan = build_cluster_plan(topology, placement, machines, ports, seed=emulation.seed,
                                           curve=self.keys.as_dict() if self.keys else None)
            self.endpoints = endpoints_of(self.plan)
            if self.keys is not None:
                curve.register(self.endpoints, self.keys)
            emulation.supervisor.extra_state["cluster"] = self.state_record(emulation.name)
            here = session.ray.get_runtime_context().get_node_id()
            self.local_machine = next((m.index for m in machines if m.node_id == here), None)
        except BaseException:
            self.close()
            raise
        return self.plan

    def state_record(self, emulation: str) -> dict[str, Any]:
        """What the state file keeps, so that `netemu status/exec/attach/capture/down` of another
        process reach the machines: the Ray address, the agents' names, and the CURVE keys (the run
        directory is private, mode 0700, as an ssh key's file would be)."""
        from .cluster_agent import AGENT_NAMESPACE, agent_name
        from .cluster_plan import describe_machines

        assert self.plan is not None
        return {"address": self.address, "insecure": self.insecure, "namespace": AGENT_NAMESPACE,
                "agents": {str(m.index): agent_name(emulation, m.index) for m in self.plan.machines},
                "machines": describe_machines(self.plan), "segments": self.plan.segment_devices,
                "keys": self.keys.as_dict() if self.keys else None}

    def zygote_factory(self, on_exit: Any, on_lost: Any) -> ClusterZygote:
        assert self.session is not None
        self.zygote = ClusterZygote(self.session, on_exit, on_lost)
        return self.zygote

    def close(self) -> None:
        """After the supervisor stopped: forget the keys, detach from Ray."""
        if self.endpoints:
            curve.unregister(self.endpoints)
            self.endpoints = []
        if self.session is not None:
            if any(ref.lost is None for ref in self.session.agents.values()) and self.zygote is None:
                self.session.stop_agents()  # a failed start: agents exist, the supervisor never ran
            self.session.close()

    # -- where things are -------------------------------------------------------------------

    def machine_of(self, process: str) -> int:
        assert self.plan is not None
        return self.plan.machine_of[process]

    def is_local(self, process: str) -> bool:
        return self.local_machine is not None and self.machine_of(process) == self.local_machine

    def machine_run_dir(self, process: str) -> str:
        assert self.plan is not None
        return self.plan.machines[[m.index for m in self.plan.machines].index(self.machine_of(process))].run_dir

    def describe(self) -> dict[str, Any]:
        """Status: each machine's address and what it holds."""
        from .cluster_plan import describe_machines

        assert self.plan is not None and self.session is not None
        machines = describe_machines(self.plan)
        for index, ref in self.session.agents.items():
            machines[str(index)]["lost"] = ref.lost
        return {"address": self.address, "encrypted": self.encrypted, "machines": machines}

    # -- programs --------------------------------------------------------------------------

    def relay_caller(self, node: str, relay: str) -> Any:
        """The `call(method, **kwargs)` of a RemoteProcess (`relay` "exec_call") or a RemoteSocket
        ("socket_call") of `node`: that relay of its machine's agent."""
        assert self.session is not None
        machine = self.machine_of(node)
        session = self.session

        def call(method: str, **kwargs: Any) -> Any:
            return session.call(machine, relay, method, kwargs)
        return call

    def rehand(self, node: str, restart: Any) -> None:
        """Restart a node of another machine; its agent hands the node's programs to the new kernel."""
        assert self.session is not None
        machine = self.machine_of(node)
        self.session.call(machine, "rehand_begin", node)
        try:
            restart()
        finally:
            self.session.call(machine, "rehand_end", node)

    # -- captures --------------------------------------------------------------------------

    def capture_start(self, emulation: "Emulation", segment: str, path: str) -> str:
        assert self.plan is not None
        if segment in self._captures:
            raise ClusterError(f"{segment}: already capturing")
        parts = self._parts(segment)
        for device, remote in parts.items():
            emulation.supervisor.call(device, "capture_start", path=remote)
        self._captures[segment] = (path, parts)
        return path

    def _parts(self, segment: str) -> dict[str, str]:
        """Where each device of `segment` writes its part of a capture: its machine's run directory
        (the same file a topology's `capture:` names in the device's config)."""
        assert self.plan is not None
        return {device: f"{self.machine_run_dir(device)}/{device}.pcap" for device in self.plan.segment_devices[segment]}

    def capture_stop(self, emulation: "Emulation", segment: str) -> dict[str, Any] | None:
        if segment not in self._captures:
            return None
        path, parts = self._captures.pop(segment)
        for device in parts:
            with contextlib.suppress(Exception):
                emulation.supervisor.call(device, "capture_stop")
        frames = self.merge_from_machines(parts, path)
        return {"path": path, "frames": frames}

    def finish_topology_captures(self, emulation: "Emulation") -> None:
        """Teardown: the segments' `capture:` files, each merged from its devices' pcaps."""
        assert self.plan is not None
        for segment, path in self.plan.captures.items():
            self._captures.setdefault(segment, (path, self._parts(segment)))
        for segment in list(self._captures):
            try:
                self.capture_stop(emulation, segment)
            except Exception as exc:  # noqa: BLE001 - the teardown goes on; the reason is logged
                log.warning("%s: the capture of %s could not be gathered: %s", emulation.name, segment, exc)

    def merge_from_machines(self, parts: dict[str, str], path: str) -> int:
        """Fetch each device's pcap from its machine; merge them into `path`; the frame count."""
        assert self.session is not None
        blobs = []
        for device, remote in parts.items():
            data = self.session.call(self.machine_of(device), "read_file", remote, True)
            if data is not None:
                blobs.append(data)
        return merge_pcaps(blobs, path)


def reserve_ports(session: ClusterSession, machines: list[Machine], wanted: dict[int, int]) -> dict[int, list[int]]:
    """Free TCP ports for each machine's endpoints. Machines that share an address (several Ray
    nodes on one host) get theirs from one reservation, so no two of them bind the same port."""
    by_ip: dict[str, list[Machine]] = {}
    for machine in machines:
        by_ip.setdefault(machine.ip, []).append(machine)
    ports: dict[int, list[int]] = {}
    for group in by_ip.values():
        counts = [wanted.get(m.index, 0) for m in group]
        pool = iter(session.call(group[0].index, "reserve_ports", sum(counts)))
        for machine, count in zip(group, counts):
            ports[machine.index] = [next(pool) for _ in range(count)]
    return ports


def merge_pcaps(blobs: list[bytes], path: str | os.PathLike[str]) -> int:
    """One pcap of several, records in timestamp order (mergecap's default): the frame count."""
    with tempfile.TemporaryDirectory(prefix="netemu-merge-") as scratch:
        files = []
        for index, data in enumerate(blobs):
            part = Path(scratch, f"{index}.pcap")
            part.write_bytes(data)
            files.append(part)
        streams = [read_pcap(part, allow_truncated_tail=True) for part in files]
        count = 0
        with PcapWriter(path) as writer:
            for timestamp, frame in heapq.merge(*streams, key=lambda record: record[0]):
                writer.write(frame, timestamp)
                count += 1
        return count
