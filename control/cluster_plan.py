"""The process plan of a cluster emulation: today's plan, cut along the placement.

Before changing this file, read control/plan.py (the single-machine plan, which
this one reuses config for config), docs/cluster.md ("Data plane across machines")
and the SPEC of the device's `data_tcp` and `trunks` (bus/device.py).

Pure, as control/plan.py: the same topology, placement and machines give the same
plan. What changes against one machine:

* every process binds its control endpoint on ``tcp://<its machine's IP>:<port>``
  (the controller reaches them all from wherever it runs);
* a switch or hub segment whose members sit on several machines becomes one device
  per machine: the home machine's keeps the segment's name, the others are named
  ``<segment>.<machine>``. They are joined by a full mesh of trunks (uplinks over
  tcp:// with split horizon), so a frame crosses machines once per segment. Each
  node's port is on its own machine's device, so shaping happens once, there;
* a p2p segment stays one device, on its home machine; the NIC at the far end
  connects to it directly over tcp://;
* a user-defined link between segments on two machines is an uplink over tcp://;
* with encryption (the default), every process gets the emulation's CURVE keys:
  all its tcp:// sockets are encrypted and authenticated (bus/curve.py).
"""
from __future__ import annotations

import itertools
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from bus.shaping import MAX_MTU, LinkParams

from .plan import Plan, ProcessPlan, build_plan

if TYPE_CHECKING:
    from .placement import Placement
    from .topology import Topology

__all__ = ["ClusterPlan", "Machine", "build_cluster_plan", "ports_needed"]

# A trunk carries what the segment's ports already shaped: no shaping of its own, any frame size.
TRUNK_PARAMS = LinkParams(mtu=MAX_MTU, queue=100_000).to_canonical()


@dataclass(slots=True)
class Machine:
    """One Ray node an emulation uses, as its agent described it."""

    index: int
    ip: str
    run_dir: str
    hostname: str = ""
    node_id: str = ""


@dataclass(slots=True)
class ClusterPlan(Plan):
    """A Plan whose processes are spread over machines."""

    machines: list[Machine] = field(default_factory=list)
    machine_of: dict[str, int] = field(default_factory=dict)       # process -> machine index
    port_owner: dict[str, str] = field(default_factory=dict)       # attachment -> device process holding it
    segment_devices: dict[str, list[str]] = field(default_factory=dict)  # segment -> its device processes
    captures: dict[str, str] = field(default_factory=dict)         # segment -> the pcap path the user asked for


def ports_needed(topology: "Topology", placement: "Placement") -> dict[int, int]:
    """How many TCP ports each machine's processes bind: a control endpoint each, and a
    data endpoint per device that a trunk, a far NIC or a far uplink reaches."""
    counts: dict[int, int] = {}
    for machine in placement.machine_of.values():
        counts[machine] = counts.get(machine, 0) + 1
    for segment in topology.segments:
        for machine in _segment_machines(topology, placement, segment):
            counts[machine] = counts.get(machine, 0) + 2  # control, and data_tcp (cheap to reserve)
    return counts


def _segment_machines(topology: "Topology", placement: "Placement", segment: str) -> list[int]:
    machines = list(placement.segment_machines.get(segment) or [])
    if topology.segments[segment].kind == "p2p":
        return machines[:1]  # one device; the far NIC connects over tcp://
    return machines


def build_cluster_plan(topology: "Topology", placement: "Placement", machines: list[Machine],
                       ports: Mapping[int, list[int]], *, seed: int = 0, log_level: str = "info",
                       curve: dict[str, str] | None = None, controller_run_dir: str = "") -> ClusterPlan:
    """Every process's config, on its machine. `ports[m]` are free TCP ports on machine m
    (as many as `ports_needed` said); `curve` the emulation's CURVE keys (None: plaintext)."""
    by_index = {m.index: m for m in machines}
    free: dict[int, Iterator[int]] = {m: iter(list(p)) for m, p in ports.items()}

    def tcp(machine: int) -> str:
        try:
            return f"tcp://{by_index[machine].ip}:{next(free[machine])}"
        except (KeyError, StopIteration):
            raise ValueError(f"machine {machine}: not enough reserved ports") from None

    # One single-machine plan per machine, in that machine's run directory: configs for free.
    local = {m.index: build_plan(topology, m.run_dir, seed=seed, log_level=log_level) for m in machines}
    plan = ClusterPlan(topology.name, controller_run_dir, [], [], dict(topology.hosts), "",
                       machines=list(machines))
    plan.captures = {s.name: local[machines[0].index][s.name].config["capture"]
                     for s in topology.segments.values() if s.capture}
    extra = {"curve": curve} if curve else {}

    seg_machines = {s: _segment_machines(topology, placement, s) for s in topology.segments}
    device_name: dict[tuple[str, int], str] = {}
    for segment, where in seg_machines.items():
        for position, machine in enumerate(where):
            device_name[segment, machine] = segment if position == 0 else f"{segment}.{machine}"
        plan.segment_devices[segment] = [device_name[segment, m] for m in where]
    data_tcp = {name: tcp(machine) for (segment, machine), name in device_name.items()}

    def home(segment: str) -> tuple[str, int]:
        machine = seg_machines[segment][0]
        return device_name[segment, machine], machine

    # Devices: the segment's config on each machine, keeping only the ports that live there.
    devices: dict[str, ProcessPlan] = {}
    for (segment, machine), name in device_name.items():
        base = local[machine][segment]
        config = dict(base.config, name=name, control=tcp(machine), data_tcp=data_tcp[name], machine=machine,
                      control_local=f"ipc://{by_index[machine].run_dir}/{name}.ctl",
                      ports={}, uplinks=[], trunks=[], **extra)
        if base.config.get("tap"):
            raise ValueError(f"segment {segment}: a TAP bridge cannot be part of a cluster emulation yet")
        if segment in plan.captures:
            config["capture"] = f"{by_index[machine].run_dir}/{name}.pcap"
        devices[name] = ProcessPlan(name, base.kind, base.target, config)
        plan.machine_of[name] = machine

    for node in topology.nodes.values():
        for interface in node.interfaces.values():
            segment = interface.device
            machine = placement.machine_of[node.name]
            owner = device_name.get((segment, machine)) or home(segment)[0]
            devices[owner].config["ports"][interface.attachment] = topology.link_params(interface)
            plan.port_owner[interface.attachment] = owner

    for segment, where in seg_machines.items():  # the trunk mesh: i < j, i's uplink to j's data_tcp
        for i, j in itertools.combinations(where, 2):
            near, far = device_name[segment, i], device_name[segment, j]
            attachment = f"{near}~{far}"
            devices[near].config["uplinks"].append({"endpoint": data_tcp[far], "attachment": attachment,
                                                    **TRUNK_PARAMS})
            devices[far].config["ports"][attachment] = dict(TRUNK_PARAMS)
            devices[near].config["trunks"].append(attachment)
            devices[far].config["trunks"].append(attachment)
            plan.port_owner[attachment] = far

    for link in topology.links:  # user-defined segment-to-segment links, home device to home device
        near, near_machine = home(link.a)
        far, far_machine = home(link.b)
        endpoint = (local[far_machine][link.b].config["data"] if near_machine == far_machine else data_tcp[far])
        devices[near].config["uplinks"].append({"endpoint": endpoint, "attachment": link.attachment,
                                                **topology.uplink_params(link)})
        devices[far].config["ports"][link.attachment] = local[far_machine][link.b].config["defaults"]
        plan.port_owner[link.attachment] = far
    plan.devices = [devices[name] for name in sorted(devices, key=lambda n: (plan.machine_of[n], n))]

    for node in topology.nodes.values():
        machine = placement.machine_of[node.name]
        base = local[machine][node.name]
        interfaces = []
        for spec in base.config["interfaces"]:
            owner = plan.port_owner[spec["attachment"]]
            endpoint = spec["endpoint"] if plan.machine_of[owner] == machine else data_tcp[owner]
            interfaces.append(dict(spec, endpoint=endpoint))
        # control_local: the node's tools (ip, ss...) in its programs reach it there, with no keys
        config = dict(base.config, control=tcp(machine), control_local=base.config["control"],
                      interfaces=interfaces, machine=machine, **extra)
        plan.nodes.append(ProcessPlan(node.name, base.kind, base.target, config))
        plan.machine_of[node.name] = machine
    return plan


def endpoints_of(plan: ClusterPlan) -> list[str]:
    """Every tcp:// endpoint of the plan (the controller registers its CURVE keys for them)."""
    found: list[str] = []
    for process in plan.processes:
        for key in ("control", "data_tcp"):
            value = process.config.get(key)
            if isinstance(value, str) and value.startswith("tcp://"):
                found.append(value)
    return found


def describe_machines(plan: ClusterPlan) -> dict[str, Any]:
    """For status: each machine's address and what it holds."""
    held: dict[int, list[str]] = {}
    for process, machine in plan.machine_of.items():
        held.setdefault(machine, []).append(process)
    return {str(m.index): {"ip": m.ip, "hostname": m.hostname, "run_dir": m.run_dir,
                           "processes": sorted(held.get(m.index, []))} for m in plan.machines}
