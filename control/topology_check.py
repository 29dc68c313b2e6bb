"""Checks that need the whole topology: references, duplicates, subnets, routes, loops.

Before changing this file, read docs/topology.md "Validation", `ip-route(8)`
(a gateway must be on a connected subnet: Linux says "Nexthop has invalid
gateway"), RFC 950/RFC 3021 (network and broadcast addresses; /31 and /32
have neither) and IEEE 802.1D clause 7 (why a bridged loop without spanning
tree floods forever: we have no STP, so we refuse loops here).

Each check reports into the shared `Report` and carries on, so one run lists
every problem. Automatic MACs are assigned here, after the explicit ones are
known, so a collision between the two can be reported.
"""
from __future__ import annotations

from collections import deque

from bus.text import did_you_mean
from nodes.wire.addresses import IPv4Address

from .topology_model import Interface, Node, Segment, Topology, broadcast_of, network_of
from .topology_parse import Report, check_name


def auto_mac(address: int) -> str:
    """The automatic MAC of an interface: locally administered ``02:00`` + its IPv4 address.

    Stable across runs, unique because addresses are, and readable in a
    capture (``02:00:0a:00:01:0a`` is 10.0.1.10).
    """
    return "02:00:" + int(address).to_bytes(4, "big").hex(":")


def check_topology(topology: Topology, report: Report) -> None:
    """Every whole-topology check, in an order where each can trust the earlier ones."""
    resolve_devices(topology, report)
    check_namespace(topology, report)
    apply_link_params(topology)
    check_addresses(topology, report)
    assign_macs(topology, report)
    for node in topology.nodes.values():
        check_routes(node, report)
        check_arp(node, report)
    check_segment_links(topology, report)
    check_taps(topology, report)
    check_placement(topology, report)


def check_placement(topology: Topology, report: Report) -> None:
    """`placement:` names existing nodes or segments (incl. point-to-point links)."""
    for name, pin in topology.placement.items():
        if name not in topology.nodes and name not in topology.segments and name not in report.broken_names:
            known = [*topology.nodes, *topology.segments]
            report.add(pin.where, f"no node or segment named {name!r}{did_you_mean(name, known)}")


def check_taps(topology: Topology, report: Report) -> None:
    """One TAP device (name in a namespace) bridges one segment: a second open would get EBUSY."""
    seen: dict[tuple[str, str | None], str] = {}
    for segment in topology.segments.values():
        tap = segment.tap
        if tap is None:
            continue
        key = (tap.device, tap.netns)
        if key in seen:
            where = f"network namespace {tap.netns}" if tap.netns else "the host's network namespace"
            report.add(tap.where, f"TAP {tap.device} in {where} already bridges segment {seen[key]}")
        else:
            seen[key] = segment.name


def resolve_devices(topology: Topology, report: Report) -> None:
    """Attach every interface to its segment; create the p2p links named by `link:`."""
    segments = topology.segments
    p2p: dict[str, list[Interface]] = {}
    unresolved: list[Interface] = []
    for interface in topology.interfaces():
        if interface.via_link:
            if interface.device in segments:
                segment = segments[interface.device]
                report.add(interface.at("link"), f"{interface.device} is a {segment.kind} segment, not a "
                                                 f"point-to-point link: write 'segment: {interface.device}'")
            else:
                p2p.setdefault(interface.device, []).append(interface)
        elif interface.device in segments:
            segments[interface.device].attachments.append(interface)
        else:
            unresolved.append(interface)
    for interface in unresolved:
        if interface.device in report.broken_names:
            continue  # its own problem is reported already
        if interface.device in p2p:
            hint = f" ({interface.device} is a point-to-point link elsewhere: write 'link: {interface.device}')"
        else:
            hint = did_you_mean(interface.device, segments)
        report.add(interface.at("segment"), f"no segment named {interface.device!r}{hint}")
    for name, ends in p2p.items():
        where = ends[0].at("link")
        if not check_name(report, name, where, "link"):
            continue
        segments[name] = Segment(name, "p2p", attachments=ends, where=where, implicit=True)
        if len(ends) == 1:
            report.add(where, f"point-to-point link {name!r} is named by no other interface "
                              f"(a link joins exactly two interfaces; for more use a segment)")
        for extra in ends[2:]:
            report.add(extra.at("link"), f"point-to-point link {name!r} already joins {ends[0].attachment} and "
                                         f"{ends[1].attachment} (a link joins exactly two interfaces; for more use a segment)")


def check_namespace(topology: Topology, report: Report) -> None:
    """Nodes and devices become processes and socket files, and nodes host names: no clashes."""
    for node in topology.nodes.values():
        segment = topology.segments.get(node.name)
        if segment is not None:
            other = "point-to-point link" if segment.implicit else "segment"
            report.add(node.where, f"name also used by a {other} (line {segment.where.line}); "
                                   f"nodes, segments and links share one namespace (process and socket names)")
    aliases: dict[str, Interface] = {}
    for interface in topology.interfaces():
        alias = f"{interface.node}-{interface.name}"
        if alias in topology.nodes:
            report.add(interface.at(), f"host name {alias!r} of this interface is also a node name")
        elif alias in aliases:
            report.add(interface.at(), f"host name {alias!r} of this interface is also the host name of "
                                       f"{aliases[alias].attachment} (line {aliases[alias].at().line})")
        else:
            aliases[alias] = interface


def apply_link_params(topology: Topology) -> None:
    """Effective MTU of each interface: defaults < segment < interface."""
    for interface in topology.interfaces():
        if interface.device in topology.segments:   # a dangling one is reported already
            interface.mtu = topology.link_params(interface)["mtu"]


def check_addresses(topology: Topology, report: Report) -> None:
    """Network/broadcast addresses, duplicates across the topology, overlaps on one node."""
    holders: dict[int, Interface] = {}
    for interface in topology.interfaces():
        address, length = int(interface.address), interface.prefix_length
        if length <= 30:
            if address == network_of(address, length):
                report.add(interface.at("ip"), f"{interface.ip} is the network address of {interface.subnet} "
                                               f"(only /31 and /32 may use it)")
            elif address == broadcast_of(address, length):
                report.add(interface.at("ip"), f"{interface.ip} is the broadcast address of {interface.subnet} "
                                               f"(only /31 and /32 may use it)")
        other = holders.setdefault(address, interface)
        if other is not interface:
            report.add(interface.at("ip"), f"duplicate address {interface.address}: also on "
                                           f"{other.attachment} (line {other.at('ip').line})")
    for node in topology.nodes.values():
        seen: list[Interface] = []
        for interface in node.interfaces.values():
            for other in seen:
                shorter = min(interface.prefix_length, other.prefix_length)
                if network_of(interface.address, shorter) == network_of(other.address, shorter):
                    report.add(interface.at("ip"), f"subnet {interface.subnet} overlaps {other.name}'s "
                                                   f"{other.subnet} on the same node")
                    break
            seen.append(interface)


def assign_macs(topology: Topology, report: Report) -> None:
    """Explicit MACs must be unique, also against the automatic ones assigned here."""
    explicit: dict[str, Interface] = {}
    for interface in topology.interfaces():
        if interface.mac_auto:
            continue
        other = explicit.setdefault(interface.mac, interface)
        if other is not interface:
            report.add(interface.at("mac"), f"duplicate MAC {interface.mac}: also on "
                                            f"{other.attachment} (line {other.at('mac').line})")
    for interface in topology.interfaces():
        if not interface.mac_auto:
            continue
        interface.mac = auto_mac(interface.address)
        other = explicit.get(interface.mac)
        if other is not None:
            report.add(other.at("mac"), f"MAC {interface.mac} is the automatic MAC of {interface.attachment} "
                                        f"(02:00 + its address {interface.address}); choose another")


def check_routes(node: Node, report: Report) -> None:
    """`dev` exists, the gateway is on a connected subnet, `src` is ours, no duplicates."""
    interfaces = node.interfaces
    own = {int(i.address) for i in interfaces.values()}
    seen: dict[tuple[str, int], int] = {}
    for route in node.routes:
        where = route.where
        if route.dev is not None and route.dev not in interfaces:
            report.add(where, f"dev {route.dev}: this node has no such interface"
                              f"{did_you_mean(route.dev, interfaces)}")
            continue
        if route.gateway is not None:
            gateway = int(IPv4Address(route.gateway))
            candidates = [interfaces[route.dev]] if route.dev else list(interfaces.values())
            if gateway in own:
                report.add(where, f"gateway {route.gateway} is this node's own address")
            elif not any(i.on_subnet(gateway) for i in candidates):
                subnets = ", ".join(f"{i.name} {i.subnet}" for i in candidates) or "none"
                report.add(where, f"gateway {route.gateway} is not on a connected subnet ({subnets})")
        if route.src is not None and int(IPv4Address(route.src)) not in own:
            report.add(where, f"src {route.src} is not an address of this node")
        key = (route.dst, route.metric)
        if key in seen:
            report.add(where, f"duplicate route to {route.dst} with metric {route.metric} (first at line {seen[key]})")
        else:
            seen[key] = where.line


def check_arp(node: Node, report: Report) -> None:
    """Static neighbours must sit on a connected subnet; their device is found here."""
    for entry in node.arp:
        address = int(IPv4Address(entry.ip))
        on = [i for i in node.interfaces.values() if i.on_subnet(address)]
        if any(i.address == address for i in node.interfaces.values()):
            report.add(entry.where, f"{entry.ip} is this node's own address")
        elif not on:
            report.add(entry.where, f"{entry.ip} is not on a connected subnet of this node")
        else:
            entry.dev = on[0].name


def check_segment_links(topology: Topology, report: Report) -> None:
    """Links join existing switches/hubs and never close a loop (no STP here)."""
    accepted: dict[str, list[str]] = {}
    for link in topology.links:
        ok = True
        for end in (link.a, link.b):
            segment = topology.segments.get(end)
            if segment is None:
                report.add(link.where, f"no segment named {end!r}{did_you_mean(end, topology.segments)}")
                ok = False
            elif segment.kind == "p2p":
                report.add(link.where, f"{end} is a point-to-point link; only switches and hubs can be linked")
                ok = False
        if not ok:
            continue
        if link.a == link.b:
            report.add(link.where, f"links {link.a} to itself: a switching loop (netemu has no spanning tree protocol)")
            continue
        path = _path_between(accepted, link.a, link.b)
        if path is not None:
            report.add(link.where, f"switching loop: {link.a} and {link.b} are already connected ({' - '.join(path)}); "
                                   f"netemu has no spanning tree protocol, so loops are refused")
            continue
        accepted.setdefault(link.a, []).append(link.b)
        accepted.setdefault(link.b, []).append(link.a)


def _path_between(graph: dict[str, list[str]], start: str, goal: str) -> list[str] | None:
    """Breadth-first path from `start` to `goal` over accepted links, or None."""
    previous: dict[str, str | None] = {start: None}
    queue = deque([start])
    while queue:
        here = queue.popleft()
        if here == goal:
            path = [here]
            while previous[path[-1]] is not None:
                path.append(previous[path[-1]])
            return path[::-1]
        for there in graph.get(here, ()):
            if there not in previous:
                previous[there] = here
                queue.append(there)
    return None


def l2_domains(topology: Topology) -> dict[str, str]:
    """Segment name -> representative of its broadcast domain (segments joined by links share one)."""
    parent = {name: name for name in topology.segments}

    def find(name: str) -> str:
        while parent[name] != name:
            parent[name] = parent[parent[name]]
            name = parent[name]
        return name

    for link in topology.links:
        if link.a in parent and link.b in parent:
            parent[find(link.a)] = find(link.b)
    return {name: find(name) for name in parent}

