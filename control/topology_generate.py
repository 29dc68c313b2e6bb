"""The `generate:` section: many nodes, or a tree of switches, in a few lines.

Before changing this file, read docs/topology.md "Generated parts". Each
generator expands into the same model objects an explicit entry would give;
their `Where` points at the generator's keys (with the generated object's
name as `subject`), so a problem in a generated host is reported at the line
that made it, once, however many hosts share it.
"""
from __future__ import annotations

from typing import Any

from bus.shaping import LINK_PARAM_KEYS
from bus.text import did_you_mean
from nodes.wire.addresses import IPv4Address

from .topology_model import Interface, Node, Route, Segment, SegmentLink, Topology, Where, broadcast_of
from .topology_parse import (
    DEFAULT_AGING, DEFAULT_MAX_ENTRIES, KEY_HINTS, MAX_INTERFACE_NAME_LENGTH, NAME_PATTERN, Report, check_keys,
    check_name, expect_map, parse_address, parse_link_values, parse_network, parse_routes,
    parse_sysctl, type_name,
)
from .topology_yaml import LocatedList, LocatedMap

MAX_GENERATED = 5000          # a typo like count: 50000 should not eat the machine
GENERATORS = ("hosts", "switch_tree")
HOSTS_KEYS = ("count", "name", "start", "segment", "segments", "ip_pool", "first", "gateway",
              "routes", "kind", "interface", "sysctl", *LINK_PARAM_KEYS)
TREE_KEYS = ("name", "start", "depth", "fanout", "kind", "aging", "max_entries", "uplink", "hosts", *LINK_PARAM_KEYS)


def expand_generators(topology: Topology, value: Any, where: Where, report: Report) -> None:
    """Add what each `generate:` entry describes to `topology`, in order."""
    if not isinstance(value, LocatedList):
        report.add(where, f"expected a list of generators (- hosts: ... / - switch_tree: ...), got {type_name(value)}")
        return
    used = {int(i.address) for i in topology.interfaces()}
    for index, entry in enumerate(value):
        entry_where = Where(value.line_of(index), f"{where.path}[{index}]")
        spec = expect_map(report, entry, entry_where, empty_ok=False)
        if spec is None:
            continue
        for key in spec:
            if key not in GENERATORS:
                report.add(entry_where.child(spec.line_of(key), str(key)),
                           f"unknown generator{did_you_mean(key, GENERATORS, KEY_HINTS)} (known: {', '.join(GENERATORS)})")
        kinds = [k for k in GENERATORS if k in spec]
        if len(kinds) != 1:
            if kinds or not spec:
                report.add(entry_where, f"each generator entry has exactly one of: {', '.join(GENERATORS)}")
            continue
        kind = kinds[0]
        body_where = entry_where.child(spec.line_of(kind), kind)
        body = expect_map(report, spec[kind], body_where, empty_ok=False)
        if body is None:
            continue
        if kind == "hosts":
            generate_hosts(topology, body, body_where, report, used)
        else:
            generate_switch_tree(topology, body, body_where, report, used)


def _names(report: Report, body: LocatedMap, where: Where, count: int) -> list[str] | None:
    """`count` names from the ``name`` pattern (``h{n}``, ``h{n:03d}``) and ``start``."""
    pattern, start = body.get("name"), body.get("start", 1)
    name_where = where.child(body.line_of("name"), "name")
    if not isinstance(pattern, str) or "{n" not in pattern:
        report.add(name_where, f"name must be a pattern containing {{n}}, like \"h{{n}}\", got {pattern!r}")
        return None
    if isinstance(start, bool) or not isinstance(start, int) or start < 0:
        report.add(where.child(body.line_of("start"), "start"), f"start must be a non-negative integer, got {start!r}")
        return None
    try:
        names = [pattern.format(n=n) for n in range(start, start + count)]
    except (KeyError, IndexError, ValueError) as error:
        report.add(name_where, f"bad name pattern {pattern!r}: {error}")
        return None
    # All names share the pattern: the first and the last tell whether any is bad (longest, too).
    if not check_name(report, names[0], name_where, "generated"):
        return None
    return names if check_name(report, names[-1], name_where, "generated") else None


def _count(report: Report, body: LocatedMap, key: str, where: Where, low: int, high: int) -> int | None:
    value = body.get(key)
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        report.add(where.child(body.line_of(key), key), f"{key} must be an integer {low}..{high}, got {value!r}")
        return None
    return value


def generate_hosts(topology: Topology, body: LocatedMap, where: Where, report: Report, used: set[int],
                   leaves: list[str] | None = None) -> None:
    """``hosts: {count, name, segment|segments, ip_pool, [first], [gateway], ...}``.

    Hosts are spread over the segments in blocks (the first count/len hosts on
    the first segment, ...), addresses taken in order from the pool, skipping
    any address already used in the topology.
    """
    keys = [k for k in HOSTS_KEYS if leaves is None or k not in ("segment", "segments")]
    check_keys(report, body, where, keys, required=("count", "name", "ip_pool"))
    if leaves is None and ("segment" in body) == ("segments" in body):
        report.add(where, "give exactly one of 'segment: NAME' or 'segments: [NAME, ...]'")
        return
    count = _count(report, body, "count", where, 1, MAX_GENERATED) if "count" in body else None
    if count is None or "name" not in body or "ip_pool" not in body:
        return
    names = _names(report, body, where, count)
    segments, segment_where = _segments(report, body, where, leaves)
    pool = _pool(report, body, where)
    kind = body.get("kind", "host")
    if kind not in ("host", "router"):
        report.add(where.child(body.line_of("kind"), "kind"), f"kind must be host or router, got {kind!r}")
        return
    interface_name = body.get("interface", "eth0")
    if (not isinstance(interface_name, str) or not NAME_PATTERN.fullmatch(interface_name)
            or len(interface_name) > MAX_INTERFACE_NAME_LENGTH):
        report.add(where.child(body.line_of("interface"), "interface"),
                   f"invalid interface name {interface_name!r}: lower-case letters, digits and '-', "
                   f"starting with a letter, at most {MAX_INTERFACE_NAME_LENGTH} characters")
        return
    params = parse_link_values(report, body, where)
    sysctl = parse_sysctl(report, body["sysctl"], where.child(body.line_of("sysctl"), "sysctl")) if "sysctl" in body else {}
    routes = parse_routes(report, body["routes"], where.child(body.line_of("routes"), "routes")) if "routes" in body else []
    gateway = None
    if "gateway" in body:
        address, problem = parse_address(body["gateway"])
        if address is None:
            report.add(where.child(body.line_of("gateway"), "gateway"), problem)
            return
        gateway = Route("0.0.0.0/0", str(address), where=where.child(body.line_of("gateway"), "gateway"))
    if names is None or segments is None or pool is None:
        return
    addresses = _allocate(report, body, where, pool, count, used | ({int(IPv4Address(gateway.gateway))} if gateway else set()))
    if addresses is None:
        return
    ip_where = where.child(body.line_of("ip_pool"), "ip_pool")
    for index, (name, address) in enumerate(zip(names, addresses)):
        if name in topology.nodes:
            other = topology.nodes[name]
            report.add(Where(where.line, where.path, name),
                       f"generated node name is already taken (line {other.where.line})")
            continue
        used.add(address)
        subject = f"{name}.{interface_name}"
        interface = Interface(
            name, interface_name, IPv4Address(address), pool[1], segments[index * len(segments) // count],
            params=dict(params),
            where={"": Where(where.line, where.path, subject), "ip": Where(ip_where.line, ip_where.path, subject),
                   "segment": Where(segment_where.line, segment_where.path, subject),
                   **{k: Where(body.line_of(k), f"{where.path}.{k}", subject) for k in body if k in LINK_PARAM_KEYS}},
        )
        node = Node(name, kind, {interface_name: interface}, where=Where(where.line, where.path, name), generated=True)
        node.routes = [_relocate(route, name) for route in ([gateway] if gateway else []) + routes]
        node.sysctl = {"net.ipv4.ip_forward": 1 if kind == "router" else 0, **topology.defaults_sysctl, **sysctl}
        topology.nodes[name] = node


def _relocate(route: Route, subject: str) -> Route:
    where = Where(route.where.line, route.where.path, subject)
    return Route(route.dst, route.gateway, route.dev, route.metric, route.src, where)


def _segments(report: Report, body: LocatedMap, where: Where, leaves: list[str] | None) -> tuple[list[str] | None, Where]:
    if leaves is not None:
        return leaves, where
    key = "segment" if "segment" in body else "segments"
    segment_where = where.child(body.line_of(key), key)
    value = body[key]
    names = [value] if key == "segment" else value
    if not isinstance(names, list) or not names or not all(isinstance(n, str) for n in names):
        report.add(segment_where, f"expected a segment name{' list' if key == 'segments' else ''}, got {value!r}")
        return None, segment_where
    return list(names), segment_where


def _pool(report: Report, body: LocatedMap, where: Where) -> tuple[int, int] | None:
    network, length, problem = parse_network(body["ip_pool"], "pool")
    if problem or length > 30:
        report.add(where.child(body.line_of("ip_pool"), "ip_pool"),
                   problem or f"pool {body['ip_pool']!r} is too small: use a prefix of /30 or shorter")
        return None
    return network, length


def _allocate(report: Report, body: LocatedMap, where: Where, pool: tuple[int, int],
              count: int, used: set[int]) -> list[int] | None:
    """The next `count` free host addresses of the pool, from `first` on."""
    network, length = pool
    broadcast = broadcast_of(network, length)
    address = network + 1
    if "first" in body:
        first, problem = parse_address(body["first"])
        first_where = where.child(body.line_of("first"), "first")
        if first is None:
            report.add(first_where, problem)
            return None
        if not network < first < broadcast:
            report.add(first_where, f"first address {first} is not a host address of the pool")
            return None
        address = int(first)
    start = address
    found: list[int] = []
    while address < broadcast and len(found) < count:
        if address not in used:
            found.append(address)
        address += 1
    if len(found) < count:
        report.add(where.child(body.line_of("ip_pool"), "ip_pool"),
                   f"pool {body['ip_pool']} has {len(found)} free host addresses"
                   f"{f' from {IPv4Address(start)}' if 'first' in body else ''}, not enough for count {count}")
        return None
    return found


def generate_switch_tree(topology: Topology, body: LocatedMap, where: Where, report: Report, used: set[int]) -> None:
    """``switch_tree: {name, depth, fanout, [uplink: {params}], [hosts: {...}]}``.

    Switches are named breadth-first from the root (``s{n}``: s1 is the
    root); each parent is linked to its children; ``hosts`` attach to the
    leaves.
    """
    check_keys(report, body, where, TREE_KEYS, required=("name", "depth", "fanout"))
    depth = _count(report, body, "depth", where, 0, 8) if "depth" in body else None
    fanout = _count(report, body, "fanout", where, 1, 64) if "fanout" in body else None
    if depth is None or fanout is None or "name" not in body:
        return
    total = sum(fanout ** level for level in range(depth + 1))
    if total > MAX_GENERATED:
        report.add(where, f"a tree of depth {depth} and fanout {fanout} has {total} switches (limit {MAX_GENERATED})")
        return
    names = _names(report, body, where, total)
    kind = body.get("kind", "switch")
    if kind not in ("switch", "hub"):
        report.add(where.child(body.line_of("kind"), "kind"), f"kind must be switch or hub, got {kind!r}")
        return
    params = parse_link_values(report, body, where)
    uplink: dict[str, Any] = {}
    uplink_where = where.child(body.line_of("uplink"), "uplink")
    if "uplink" in body:
        spec = expect_map(report, body["uplink"], uplink_where)
        if spec is not None:
            check_keys(report, spec, uplink_where, LINK_PARAM_KEYS)
            uplink = parse_link_values(report, spec, uplink_where)
    if names is None:
        return
    for key in ("aging", "max_entries"):
        if key in body and kind != "switch":
            report.add(where.child(body.line_of(key), key), f"{key} applies to switches only")
    aging, max_entries = body.get("aging", DEFAULT_AGING), body.get("max_entries", DEFAULT_MAX_ENTRIES)
    if isinstance(aging, bool) or not isinstance(aging, (int, float)) or aging <= 0:
        report.add(where.child(body.line_of("aging"), "aging"), f"aging must be a positive number of seconds, got {aging!r}")
        return
    if isinstance(max_entries, bool) or not isinstance(max_entries, int) or max_entries < 1:
        report.add(where.child(body.line_of("max_entries"), "max_entries"), f"max_entries must be a positive integer, got {max_entries!r}")
        return
    for index, name in enumerate(names):
        if name in topology.segments or name in topology.nodes:
            report.add(Where(where.line, where.path, name), "generated switch name is already taken")
            return
        segment = Segment(name, kind, params=dict(params), where=Where(where.line, where.path, name))
        if kind == "switch":
            segment.aging, segment.max_entries = float(aging), max_entries
        topology.segments[name] = segment
        if index:
            parent = names[(index - 1) // fanout]
            topology.links.append(SegmentLink(parent, name, dict(uplink),
                                              Where(uplink_where.line, uplink_where.path, f"{parent}~{name}")))
    if "hosts" in body:
        hosts_where = where.child(body.line_of("hosts"), "hosts")
        hosts = expect_map(report, body["hosts"], hosts_where, empty_ok=False)
        if hosts is not None:
            first_leaf = total - fanout ** depth
            generate_hosts(topology, hosts, hosts_where, report, used, leaves=names[first_leaf:])
