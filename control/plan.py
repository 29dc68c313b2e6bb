"""The process plan: one config dict per bus device and per node kernel.

Before changing this file, read docs/design.md "Processes and their configs"
(the config contract this module produces, key for key), docs/topology.md
(how link parameters merge: built-in < defaults.link < segment < interface)
and `nodes/sysctl.py` (the known sysctl knobs the topology is checked against).

`build_plan` is a pure function of the topology and its arguments: the same
inputs give the same plan, byte for byte once serialised, so a restarted
process gets the config it had. The supervisor starts `plan.devices` first
(nodes connect to their data endpoints), then `plan.nodes`.
"""
from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from bus.shaping import LinkParams
from bus.tap import tap_port_name
from nodes.sysctl import KNOBS, SysctlError
from nodes.sysctl import check as _check_knob

if TYPE_CHECKING:
    from .topology_model import Segment, Topology

__all__ = ["KNOWN_SYSCTLS", "Plan", "PlanError", "ProcessPlan", "SysctlError", "build_plan", "check_sysctl"]

# The sysctl names a topology may set: the node kernel's registry, so the
# validator and the kernel can never disagree about what exists.
KNOWN_SYSCTLS = KNOBS

DEVICE_TARGETS = {"switch": "bus.switch:run", "hub": "bus.hub:run", "p2p": "bus.p2p:run"}
NODE_TARGET = "nodes.kernel:run"
MAX_SOCKET_PATH = 107         # sun_path is 108 bytes including the NUL


def check_sysctl(name: str, value: Any) -> int:
    """The canonical value of a known sysctl, or `SysctlError` (with a did-you-mean)."""
    return _check_knob(name, value)


class PlanError(ValueError):
    """The plan cannot be built as asked (e.g. the run directory makes socket paths too long)."""


@dataclass(frozen=True, slots=True)
class ProcessPlan:
    """One process to start: `target` is ``module:function`` taking `config`."""

    name: str
    kind: str                  # switch | hub | p2p | host | router
    target: str
    config: dict[str, Any] = field(compare=True)

    @property
    def control(self) -> str:
        return self.config["control"]


@dataclass(slots=True)
class Plan:
    """Every process of an emulation, devices before nodes; `hosts` goes to the file `hosts_file`."""

    name: str
    run_dir: str
    devices: list[ProcessPlan]
    nodes: list[ProcessPlan]
    hosts: dict[str, str] = field(default_factory=dict)
    hosts_file: str = ""

    def write_hosts_file(self) -> None:
        """Write the emulation's /etc/hosts into the run directory (before any node starts)."""
        with open(self.hosts_file, "w", encoding="utf-8") as handle:
            handle.write(hosts_file_text(self.hosts))

    @property
    def processes(self) -> list[ProcessPlan]:
        """Start order: devices first, since NICs connect to their data endpoints."""
        return self.devices + self.nodes

    def __getitem__(self, name: str) -> ProcessPlan:
        for process in self.processes:
            if process.name == name:
                return process
        raise KeyError(name)

    def as_dict(self) -> dict[str, Any]:
        """Plain data (JSON/msgpack-able), e.g. for a detached emulation's state file."""
        return {"name": self.name, "run_dir": self.run_dir,
                "processes": [{"name": p.name, "kind": p.kind, "target": p.target, "config": p.config}
                              for p in self.processes]}


def data_endpoint(run_dir: str, name: str) -> str:
    return f"ipc://{run_dir}/{name}.data"


def control_endpoint(run_dir: str, name: str) -> str:
    return f"ipc://{run_dir}/{name}.ctl"


def syscall_path(run_dir: str, name: str) -> str:
    return f"{run_dir}/{name}.sys"


def hosts_file_text(hosts: dict[str, str]) -> str:
    """/etc/hosts format: localhost, then every topology name with its address."""
    lines = ["127.0.0.1\tlocalhost"] + [f"{address}\t{name}" for name, address in hosts.items()]
    return "\n".join(lines) + "\n"


def derive_seed(seed: int, name: str) -> int:
    """A per-device seed: stable for (seed, name), different between devices."""
    digest = hashlib.sha256(f"{seed}/{name}".encode()).digest()
    return int.from_bytes(digest[:4], "big")


def build_plan(topology: "Topology", run_dir: str | os.PathLike[str], seed: int = 0,
               parent_pid: int | None = None, log_level: str = "info",
               base_dir: str | os.PathLike[str] | None = None) -> Plan:
    """The process configs of docs/design.md for a validated topology.

    Relative capture paths are resolved against `base_dir` (default: the
    current directory, like `tcpdump -w`). Raises `PlanError` when `run_dir`
    is so long that a socket path would pass the 107-byte limit.
    """
    run_dir = os.path.abspath(os.fspath(run_dir))
    base = os.path.abspath(os.fspath(base_dir)) if base_dir is not None else os.getcwd()
    _check_path_lengths(topology, run_dir)
    common = {"parent_pid": parent_pid, "log_level": log_level}

    uplinks: dict[str, list[dict[str, Any]]] = {}
    uplink_ports: dict[str, dict[str, dict[str, Any]]] = {}
    for link in topology.links:
        uplinks.setdefault(link.a, []).append(
            {"endpoint": data_endpoint(run_dir, link.b), "attachment": link.attachment, **topology.uplink_params(link)})
        # The far device sees the uplink as an ordinary port of its segment.
        uplink_ports.setdefault(link.b, {})[link.attachment] = _segment_defaults(topology, topology.segments[link.b])

    devices = []
    for segment in topology.segments.values():
        config: dict[str, Any] = {
            "name": segment.name, "kind": segment.kind,
            "data": data_endpoint(run_dir, segment.name), "control": control_endpoint(run_dir, segment.name),
        }
        if segment.kind == "switch":
            config["aging_time"] = float(segment.aging)
            config["max_entries"] = int(segment.max_entries)
        config["seed"] = derive_seed(seed, segment.name)
        config["capture"] = os.path.join(base, segment.capture) if segment.capture else None
        config["defaults"] = _segment_defaults(topology, segment)
        config["ports"] = {i.attachment: topology.link_params(i) for i in segment.attachments}
        config["ports"].update(uplink_ports.get(segment.name, {}))
        config["uplinks"] = uplinks.get(segment.name, [])
        if segment.tap is not None:
            # bus/tap.py: one more port of the segment's device, its far end a Linux TAP device.
            port = tap_port_name(segment.tap.device)
            config["ports"][port] = _segment_defaults(topology, segment)
            config["tap"] = {"device": segment.tap.device, "netns": segment.tap.netns, "port": port}
        config.update(common)
        devices.append(ProcessPlan(segment.name, segment.kind, DEVICE_TARGETS[segment.kind], config))

    # Names resolve through a hosts file in the run directory, read at each
    # lookup as glibc reads /etc/hosts: no node keeps a copy of the table
    # (at 500 nodes it was 18 KB of every config and ~150 KB of every node).
    hosts_file = os.path.join(run_dir, "hosts")
    nodes = []
    for node in topology.nodes.values():
        config = {
            "name": node.name, "kind": node.kind,
            "control": control_endpoint(run_dir, node.name), "syscall": syscall_path(run_dir, node.name),
            "interfaces": [
                {"name": i.name, "mac": i.mac, "ip": i.ip, "mtu": i.mtu,
                 "endpoint": data_endpoint(run_dir, i.device), "attachment": i.attachment}
                for i in node.interfaces.values()
            ],
            "routes": [route.as_dict() for route in node.routes],
            "arp": [entry.as_dict() for entry in node.arp],
            "sysctl": dict(node.sysctl),
            "hosts_file": hosts_file,
            **common,
        }
        nodes.append(ProcessPlan(node.name, node.kind, NODE_TARGET, config))
    return Plan(topology.name, run_dir, devices, nodes, dict(topology.hosts), hosts_file)


def _segment_defaults(topology: "Topology", segment: "Segment") -> dict[str, Any]:
    """Every canonical link parameter a port of `segment` starts with: built-in < defaults < segment."""
    merged = LinkParams().to_canonical()
    merged.update(topology.defaults_link)
    merged.update(segment.params)
    return merged


def _check_path_lengths(topology: "Topology", run_dir: str) -> None:
    names = list(topology.segments) + list(topology.nodes)
    if not names:
        return
    longest = max(names, key=len)
    path = f"{run_dir}/{longest}.data"
    if len(path.encode()) > MAX_SOCKET_PATH:
        raise PlanError(f"socket path {path!r} is {len(path.encode())} bytes, over the {MAX_SOCKET_PATH}-byte "
                        f"limit of ipc sockets: use a shorter run directory (NETEMU_RUN_DIR) or shorter names")
