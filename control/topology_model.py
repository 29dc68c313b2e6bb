"""The topology model: plain dataclasses with canonical values, no processes.

Before changing this file, read docs/topology.md (the YAML format these
objects come from) and docs/design.md "Units inside the program" (link
parameters are canonical here: bit/s, seconds, probabilities).

Every object remembers where it came from (`Where`: line and key path) so
the cross-object checks can point at the right line, also for objects a
`generate:` entry produced (their `Where` names the generator and carries a
`subject` such as ``h37.eth0``).
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any, Iterator

from bus.shaping import LinkParams
from nodes.wire.addresses import IPv4Address, prefix_mask


@dataclass(frozen=True, slots=True)
class Where:
    """A place in the topology file: 1-based line and dotted key path.

    `subject` names the generated object a problem is about when `path`
    points at the generator that made it.
    """

    line: int
    path: str
    subject: str | None = None

    def child(self, line: int, key: str) -> "Where":
        return Where(line, f"{self.path}.{key}" if self.path else key, self.subject)


@dataclass(frozen=True, slots=True)
class Problem:
    """One thing wrong with a topology, printed as ``FILE:LINE: path.to.key: problem``."""

    file: str
    line: int | None
    path: str
    message: str

    def __str__(self) -> str:
        place = f"{self.file}:{self.line}" if self.line is not None else self.file
        return f"{place}: {self.path}: {self.message}" if self.path else f"{place}: {self.message}"


class TopologyError(ValueError):
    """Every problem found in a topology file, one per line, in file order."""

    def __init__(self, problems: list[Problem]) -> None:
        super().__init__("\n".join(str(p) for p in problems))
        self.problems = problems


def network_of(address: int, prefix_length: int) -> int:
    return address & prefix_mask(prefix_length)


def broadcast_of(address: int, prefix_length: int) -> int:
    return network_of(address, prefix_length) | (~prefix_mask(prefix_length) & 0xFFFFFFFF)


def format_cidr(address: int, prefix_length: int) -> str:
    return f"{IPv4Address(address)}/{prefix_length}"


def contains(network: int, prefix_length: int, address: int) -> bool:
    return (address & prefix_mask(prefix_length)) == network


@dataclass(slots=True)
class Interface:
    """One NIC of a node, attached to a segment (or to a point-to-point link)."""

    node: str
    name: str
    address: IPv4Address
    prefix_length: int
    device: str                      # the segment or p2p link it plugs into
    mac: str = ""                    # canonical lower-case; filled in by the checks
    mac_auto: bool = True
    params: dict[str, Any] = field(default_factory=dict)   # canonical link params set on this interface
    mtu: int = 1500                  # effective (defaults < segment < interface)
    via_link: bool = False           # written as `link: NAME` (p2p) rather than `segment: NAME`
    where: dict[str, Where] = field(default_factory=dict)  # per key; "" = the interface itself

    @property
    def attachment(self) -> str:
        """The device port name (and ZeroMQ routing id) of this interface."""
        return f"{self.node}:{self.name}"

    @property
    def ip(self) -> str:
        """Address with prefix, as written in `ip addr` (``10.0.1.10/24``)."""
        return format_cidr(self.address, self.prefix_length)

    @property
    def network(self) -> int:
        return network_of(self.address, self.prefix_length)

    @property
    def subnet(self) -> str:
        return format_cidr(self.network, self.prefix_length)

    def on_subnet(self, address: int) -> bool:
        return contains(self.network, self.prefix_length, address)

    def at(self, key: str = "") -> Where:
        return self.where.get(key) or self.where[""]


@dataclass(slots=True)
class Route:
    """A static route as `ip route add` takes it; `dst` is a network in CIDR form."""

    dst: str
    gateway: str | None = None
    dev: str | None = None
    metric: int = 0
    src: str | None = None
    where: Where | None = field(default=None, compare=False)

    @property
    def dst_network(self) -> tuple[int, int]:
        address, _, length = self.dst.partition("/")
        return int(IPv4Address(address)), int(length)

    def as_dict(self) -> dict[str, Any]:
        """The canonical dict of a node config (docs/design.md)."""
        return {"dst": self.dst, "gateway": self.gateway, "dev": self.dev, "metric": self.metric, "src": self.src}

    def __str__(self) -> str:
        text = "default" if self.dst == "0.0.0.0/0" else self.dst
        if self.gateway:
            text += f" via {self.gateway}"
        if self.dev:
            text += f" dev {self.dev}"
        if self.metric:
            text += f" metric {self.metric}"
        if self.src:
            text += f" src {self.src}"
        return text


@dataclass(slots=True)
class ArpEntry:
    """A permanent neighbour entry (`ip neigh add ... nud permanent`)."""

    ip: str
    mac: str
    dev: str
    where: Where | None = field(default=None, compare=False)

    def as_dict(self) -> dict[str, Any]:
        return {"ip": self.ip, "mac": self.mac, "dev": self.dev}


@dataclass(slots=True)
class Node:
    """A host or router: one kernel process."""

    name: str
    kind: str                                   # "host" | "router"
    interfaces: dict[str, Interface] = field(default_factory=dict)
    routes: list[Route] = field(default_factory=list)
    arp: list[ArpEntry] = field(default_factory=list)
    sysctl: dict[str, Any] = field(default_factory=dict)   # effective, incl. ip_forward
    where: Where = field(default_factory=lambda: Where(1, ""))
    generated: bool = False

    @property
    def ip_forward(self) -> bool:
        return bool(self.sysctl.get("net.ipv4.ip_forward", 0))

    @property
    def first_interface(self) -> Interface | None:
        return next(iter(self.interfaces.values()), None)


@dataclass(frozen=True, slots=True)
class Tap:
    """A segment's bridge to a Linux TAP device (`tap: {device: NAME, netns: NS}`; bus/tap.py)."""

    device: str                                 # the Linux interface name (<= 15 characters)
    netns: str | None = None                    # `ip netns` name or absolute path; None: the host's
    where: Where = field(default_factory=lambda: Where(1, ""), compare=False)


@dataclass(slots=True)
class Segment:
    """A wire that frames cross: a learning switch, a hub, or a point-to-point link."""

    name: str
    kind: str                                   # "switch" | "hub" | "p2p"
    aging: float | None = None                  # seconds; switch only
    max_entries: int | None = None              # switch only
    capture: str | None = None                  # pcap path as written
    params: dict[str, Any] = field(default_factory=dict)   # canonical, for every port
    attachments: list[Interface] = field(default_factory=list)
    where: Where = field(default_factory=lambda: Where(1, ""))
    implicit: bool = False                      # a p2p link known only from `link:` references
    tap: Tap | None = None                      # bridged to a Linux TAP device


@dataclass(slots=True)
class SegmentLink:
    """A switch-to-switch (or hub) cable between two segments."""

    a: str
    b: str
    params: dict[str, Any] = field(default_factory=dict)   # canonical
    where: Where = field(default_factory=lambda: Where(1, ""))

    @property
    def attachment(self) -> str:
        """Port name of the link on both devices (``lan1~lan2``)."""
        return f"{self.a}~{self.b}"


@dataclass(frozen=True, slots=True)
class PlacementPin:
    """A `placement:` entry: a node or segment pinned to a Ray node (docs/cluster.md).

    `target` is a Ray node's IPv4 address or the name of a custom resource
    a Ray node offers (`ray start --resources '{"rack1": 1}'`).
    """

    target: str
    where: Where = field(default_factory=lambda: Where(1, ""), compare=False)

    @property
    def is_address(self) -> bool:
        """True when `target` is an IPv4 address rather than a resource name."""
        return IPV4_PATTERN.fullmatch(self.target) is not None


IPV4_PATTERN = re.compile(r"\d{1,3}(?:\.\d{1,3}){3}")


@dataclass(frozen=True, slots=True)
class ClusterOptions:
    """The `cluster:` section: options of a run across Ray nodes; single-machine runs ignore it."""

    encrypt: bool = True                        # CURVE on every cross-machine ZeroMQ link
    where: Where | None = field(default=None, compare=False)


@dataclass(slots=True)
class Topology:
    """A whole validated network, ready for `control.plan.build_plan`."""

    name: str
    source: str
    defaults_link: dict[str, Any] = field(default_factory=dict)   # canonical, only keys written
    defaults_sysctl: dict[str, Any] = field(default_factory=dict)
    segments: dict[str, Segment] = field(default_factory=dict)   # incl. p2p links
    nodes: dict[str, Node] = field(default_factory=dict)
    links: list[SegmentLink] = field(default_factory=list)
    placement: dict[str, PlacementPin] = field(default_factory=dict)   # name -> pin, as written
    cluster: ClusterOptions = field(default_factory=ClusterOptions)

    def interfaces(self) -> Iterator[Interface]:
        for node in self.nodes.values():
            yield from node.interfaces.values()

    def link_params(self, interface: Interface) -> dict[str, Any]:
        """Every canonical link parameter of an attachment: built-in < defaults < segment < interface."""
        merged = LinkParams().to_canonical()
        merged.update(self.defaults_link)
        merged.update(self.segments[interface.device].params)
        merged.update(interface.params)
        return merged

    def uplink_params(self, link: SegmentLink) -> dict[str, Any]:
        """Canonical parameters of a segment link's port on segment `a`: defaults < a < link."""
        merged = LinkParams().to_canonical()
        merged.update(self.defaults_link)
        merged.update(self.segments[link.a].params)
        merged.update(link.params)
        return merged

    @property
    def hosts(self) -> dict[str, str]:
        """Names every node resolves: node -> first interface address, ``node-ethN`` -> that interface's."""
        table: dict[str, str] = {}
        for node in self.nodes.values():
            first = node.first_interface
            if first is not None:
                table[node.name] = str(first.address)
            for interface in node.interfaces.values():
                table[f"{node.name}-{interface.name}"] = str(interface.address)
        return table
