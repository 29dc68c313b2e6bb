"""A tiny static-route simulator over the topology model (a test oracle, no packets).

It forwards a destination address hop by hop the way the node kernels will:
local delivery if the address is the node's own (Linux's weak host model),
else a longest-prefix match over connected subnets and static routes
(lowest metric on ties), the next hop (gateway, or the destination itself
on a connected route) resolved in the egress interface's broadcast domain
(segments joined by `links` share one), forwarding only on nodes with
ip_forward, within a TTL. A reply goes back to the source address the
first hop would pick (the route's `src`, else the egress interface's).
"""
from __future__ import annotations

from dataclasses import dataclass

from control.topology import Interface, Node, Topology, l2_domains
from nodes.wire.addresses import IPv4Address, prefix_mask


@dataclass(frozen=True, slots=True)
class FibEntry:
    network: int
    prefix_length: int
    metric: int
    gateway: int | None
    dev: str
    src: int | None


@dataclass(frozen=True, slots=True)
class Walk:
    ok: bool
    hops: tuple[str, ...]          # node names after the source
    source: int | None             # address the source node sends from
    reason: str = ""


class RouteSimulator:
    def __init__(self, topology: Topology, ttl: int = 64) -> None:
        self.topology = topology
        self.ttl = ttl
        self.domains = l2_domains(topology)
        self.owner: dict[int, Interface] = {int(i.address): i for i in topology.interfaces()}
        self.local: dict[str, set[int]] = {
            n.name: {int(i.address) for i in n.interfaces.values()} for n in topology.nodes.values()
        }
        self.up = {i.attachment: topology.link_params(i)["up"] for i in topology.interfaces()}
        self.fibs = {node.name: self._fib(node) for node in topology.nodes.values()}
        self._lookups: dict[tuple[str, int], FibEntry | None] = {}
        self._signatures: dict[str, int] = {}
        self._signature_ids: dict[tuple, int] = {}
        self._walks: dict[tuple[int, int], tuple[Walk, str | None, int | None]] = {}
        self.addresses = {n.name: {i.name: int(i.address) for i in n.interfaces.values()}
                          for n in topology.nodes.values()}
        self._forwarded: dict[tuple[str, int], Walk] = {}

    @staticmethod
    def _fib(node: Node) -> dict[int, dict[int, FibEntry]]:
        """prefix length -> network -> best entry (connected routes win ties: metric 0, added first)."""
        entries: list[FibEntry] = []
        for interface in node.interfaces.values():
            entries.append(FibEntry(interface.network, interface.prefix_length, 0, None, interface.name, None))
        for route in node.routes:
            network, length = route.dst_network
            gateway = int(IPv4Address(route.gateway)) if route.gateway else None
            dev = route.dev
            if dev is None:
                dev = next(i.name for i in node.interfaces.values() if i.on_subnet(gateway))
            entries.append(FibEntry(network, length, route.metric, gateway, dev,
                                    int(IPv4Address(route.src)) if route.src else None))
        fib: dict[int, dict[int, FibEntry]] = {}
        for entry in entries:
            table = fib.setdefault(entry.prefix_length, {})
            best = table.get(entry.network)
            if best is None or entry.metric < best.metric:
                table[entry.network] = entry
        return dict(sorted(fib.items(), reverse=True))

    def lookup(self, node: str, destination: int) -> FibEntry | None:
        key = (node, destination)
        if key not in self._lookups:
            found = None
            for length, table in self.fibs[node].items():
                found = table.get(destination & prefix_mask(length))
                if found is not None:
                    break
            self._lookups[key] = found
        return self._lookups[key]

    def walk(self, source: str, destination: int) -> Walk:
        """Follow `destination` from node `source` until delivered or lost."""
        if destination in self.local[source]:
            return Walk(True, (), destination)
        # Nodes with the same signature (all hosts of one generated group) walk alike.
        key = (self._signature(source), destination)
        found = self._walks.get(key)
        if found is None:
            found = self._walks[key] = self._walk_from_source(source, destination)
        result, dev, src = found
        if dev is None:
            return result
        return Walk(result.ok, result.hops, src if src is not None else self.addresses[source][dev], result.reason)

    def _walk_from_source(self, source: str, destination: int) -> tuple[Walk, str | None, int | None]:
        """(walk without its source address, egress device, route's src) for a datagram made at `source`."""
        entry = self.lookup(source, destination)
        first = self._step(source, destination)
        if not first.ok:
            return first, (entry.dev if entry else None), (entry.src if entry else None)
        rest = self._forward(first.hops[0], destination, self.ttl - 1)
        return Walk(rest.ok, first.hops + rest.hops, None, rest.reason), entry.dev, entry.src

    def _signature(self, node: str) -> int:
        """What the first hop from `node` depends on (its FIB, each device's domain and link state), as a small int.

        Generated hosts share one, which makes all-pairs checks of 500 nodes cheap.
        """
        cached = self._signatures.get(node)
        if cached is None:
            interfaces = self.topology.nodes[node].interfaces
            signature = tuple(
                (length, tuple(sorted(
                    (network, entry.gateway, entry.dev, entry.src,
                     self.domains[interfaces[entry.dev].device], self.up[interfaces[entry.dev].attachment])
                    for network, entry in table.items())))
                for length, table in self.fibs[node].items())
            cached = self._signatures[node] = self._signature_ids.setdefault(signature, len(self._signature_ids))
        return cached

    def _step(self, node: str, destination: int) -> Walk:
        """One forwarding decision at `node`: the next node, or why there is none."""
        entry = self.lookup(node, destination)
        if entry is None:
            return Walk(False, (), None, f"{node}: no route to {IPv4Address(destination)}")
        egress = self.topology.nodes[node].interfaces[entry.dev]
        next_hop = entry.gateway if entry.gateway is not None else destination
        target = self.owner.get(next_hop)
        if target is None:
            return Walk(False, (), None, f"{node}: nobody holds next hop {IPv4Address(next_hop)}")
        if self.domains[target.device] != self.domains[egress.device]:
            return Walk(False, (), None, f"{node}: next hop {IPv4Address(next_hop)} is not reachable from {egress.name}")
        if not (self.up[egress.attachment] and self.up[target.attachment]):
            return Walk(False, (), None, f"{node}: link down towards {target.attachment}")
        return Walk(True, (target.node,), None)

    def _forward(self, node: str, destination: int, ttl: int) -> Walk:
        """From a node a datagram arrived at: deliver, or forward on (memoised per node and destination)."""
        key = (node, destination)
        known = self._forwarded.get(key)
        if known is not None:
            return known
        if destination in self.local[node]:
            result = Walk(True, (), None)
        elif not self.topology.nodes[node].ip_forward:
            result = Walk(False, (), None, f"{node}: not forwarding (ip_forward=0)")
        elif ttl <= 0:
            result = Walk(False, (), None, f"TTL exceeded at {node} (a routing loop)")
        else:
            self._forwarded[key] = Walk(False, (), None, f"routing loop through {node}")
            step = self._step(node, destination)
            if not step.ok:
                result = step
            else:
                rest = self._forward(step.hops[0], destination, ttl - 1)
                result = Walk(rest.ok, step.hops + rest.hops, None, rest.reason)
        self._forwarded[key] = result
        return result

    def ping(self, source: str, destination: int) -> str:
        """'' if an echo and its reply both arrive, else why not."""
        there = self.walk(source, destination)
        if not there.ok:
            return f"{source} -> {IPv4Address(destination)}: {there.reason}"
        owner = self.owner[destination].node
        back = self.walk(owner, there.source)
        if not back.ok:
            return f"{source} -> {IPv4Address(destination)}: reply to {IPv4Address(there.source)} lost: {back.reason}"
        return ""


def unreachable_pairs(topology: Topology, sources: list[str] | None = None,
                      destinations: list[int] | None = None) -> list[str]:
    """Every failing (source node, destination address) pair, as text."""
    simulator = RouteSimulator(topology)
    sources = sources if sources is not None else list(topology.nodes)
    if destinations is None:
        destinations = [int(IPv4Address(a)) for a in dict.fromkeys(topology.hosts.values())]
    failures = []
    for source in sources:
        for destination in destinations:
            problem = simulator.ping(source, destination)
            if problem:
                failures.append(problem)
    return failures
