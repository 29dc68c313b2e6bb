"""Reading the sections of a topology file into model objects, one key at a time.

Before changing this file, read docs/topology.md (every key and its meaning)
and `ip-route(8)` for the route grammar. This stage checks what one key can
tell on its own (types, unknown keys, CIDR syntax, link parameters, sysctl
names); what needs the whole topology (references, duplicates, subnets,
loops) is `control/topology_check.py`'s job. Problems are collected, never
raised, so a file with ten mistakes gets ten lines back.
"""
from __future__ import annotations

import re
from typing import Any, Iterable

from bus.shaping import LINK_PARAM_KEYS, LinkParamError, parse_link_params
from bus.text import did_you_mean
from nodes.wire.addresses import IPv4Address, MacAddress, prefix_mask
from nodes.wire.errors import WireError

from .topology_model import (
    ArpEntry, ClusterOptions, Interface, Node, PlacementPin, Problem, Route, Segment, SegmentLink, Tap, Where, format_cidr,
)
from .topology_yaml import LocatedList, LocatedMap

NAME_PATTERN = re.compile(r"[a-z](?:[a-z0-9-]*[a-z0-9])?")
MAX_NAME_LENGTH = 24        # keeps ipc://RUN_DIR/NAME.data well under the 107-byte sun_path
MAX_TOPOLOGY_NAME_LENGTH = 32
MAX_INTERFACE_NAME_LENGTH = 15   # Linux IFNAMSIZ - 1
RESERVED_NAMES = frozenset({"localhost", "default", "all"})

DEFAULT_AGING = 300.0       # IEEE 802.1D default, as Linux bridge ageing_time
DEFAULT_MAX_ENTRIES = 8192

# Words people write for keys we spell otherwise: suggested, never accepted.
KEY_HINTS = {
    "address": "ip", "addr": "ip", "ipv4": "ip", "cidr": "ip", "hwaddr": "mac", "ether": "mac",
    "lladdr": "mac", "type": "kind", "switch": "segment", "lan": "segment", "net": "segment",
    "network": "segment", "wire": "link", "p2p": "link", "route": "routes", "neigh": "arp",
    "neighbours": "arp", "neighbors": "arp", "sysctls": "sysctl", "interface": "interfaces",
    "ifaces": "interfaces", "hosts": "nodes", "switches": "segments", "lans": "segments",
    "ageing": "aging", "ageing_time": "aging", "aging_time": "aging", "pcap": "capture",
    # tc, Mininet and iproute2 spellings of link parameters
    "bw": "rate", "bandwidth": "rate", "speed": "rate", "latency": "delay", "lat": "delay",
    "drop": "loss", "limit": "queue", "qlen": "queue", "txqueuelen": "queue", "state": "up",
    "correlation": "loss_correlation", "gw": "gateway", "pool": "ip_pool", "subnet": "ip_pool",
}


class Report:
    """Problems of one file; generated objects' repeats are folded into one line."""

    def __init__(self, file: str) -> None:
        self.file = file
        # Segments/nodes whose entry was unusable: references to them would only repeat that problem.
        self.broken_names: set[str] = set()
        self._items: list[tuple[int, str, str, str | None]] = []

    def add(self, where: Where, message: str) -> None:
        self._items.append((where.line, where.path, message, where.subject))

    def __bool__(self) -> bool:
        return bool(self._items)

    def problems(self) -> list[Problem]:
        """In file order; the same problem of many generated objects is one line."""
        folded: dict[tuple[int, str, str], list[str]] = {}
        order: list[tuple[int, str, str]] = []
        for line, path, message, subject in self._items:
            key = (line, path, message)
            if key not in folded:
                folded[key] = []
                order.append(key)
            if subject is not None and subject not in folded[key]:
                folded[key].append(subject)
        result = []
        for line, path, message in sorted(order, key=lambda k: k[0]):
            subjects = folded[(line, path, message)]
            if len(subjects) == 1:
                message = f"{subjects[0]}: {message}"
            elif subjects:
                message = f"{subjects[0]} (and {len(subjects) - 1} more): {message}"
            result.append(Problem(self.file, line, path, message))
        return result


def type_name(value: Any) -> str:
    if value is None:
        return "nothing"
    if isinstance(value, bool):
        return "a boolean"
    return {dict: "a mapping", LocatedMap: "a mapping", list: "a list", LocatedList: "a list",
            str: "a string", int: "an integer", float: "a number"}.get(type(value), type(value).__name__)


def expect_map(report: Report, value: Any, where: Where, empty_ok: bool = True) -> LocatedMap | None:
    """`value` as a mapping (an empty one for a bare key when `empty_ok`), else a problem."""
    if value is None and empty_ok:
        return LocatedMap(where.line)
    if not isinstance(value, LocatedMap):
        report.add(where, f"expected a mapping, got {type_name(value)}")
        return None
    for key, line, first in value.duplicates:
        report.add(where.child(line, str(key)), f"duplicate key (first at line {first}; YAML would keep only the last)")
    return value


def check_keys(report: Report, mapping: LocatedMap, where: Where, allowed: Iterable[str],
               required: Iterable[str] = (), required_hint: dict[str, str] | None = None) -> None:
    """Unknown keys (with a did-you-mean) and missing required ones."""
    allowed = list(allowed)
    for key in mapping:
        if key not in allowed:
            report.add(where.child(mapping.line_of(key), str(key)),
                       f"unknown key{did_you_mean(key, allowed, KEY_HINTS)}")
    for key in required:
        if key not in mapping:
            hint = (required_hint or {}).get(key, "")
            report.add(where.child(mapping.line, key), f"missing (required){hint}")


def check_name(report: Report, name: Any, where: Where, what: str,
               limit: int = MAX_NAME_LENGTH) -> bool:
    """Node, segment and link names double as host names and process/socket file names."""
    if name is None:
        report.add(where, f"missing {what} name")
        return False
    if not isinstance(name, str):
        report.add(where, f"{what} name must be a string, got {type_name(name)} {name!r} (quote it)")
        return False
    if not NAME_PATTERN.fullmatch(name):
        hint = " (use lower case)" if NAME_PATTERN.fullmatch(name.lower()) else ""
        report.add(where, f"invalid {what} name {name!r}: use lower-case letters, digits and '-', "
                          f"starting with a letter and not ending with '-'{hint}")
        return False
    if len(name) > limit:
        report.add(where, f"{what} name {name!r} is longer than {limit} characters (ipc socket paths must stay short)")
        return False
    if name in RESERVED_NAMES:
        report.add(where, f"{what} name {name!r} is reserved")
        return False
    return True


def parse_link_values(report: Report, mapping: LocatedMap, where: Where, keys: Iterable[str] | None = None) -> dict[str, Any]:
    """Canonical values of the link parameters in `mapping` (each key checked on its own)."""
    canonical: dict[str, Any] = {}
    for key in keys if keys is not None else [k for k in mapping if k in LINK_PARAM_KEYS]:
        try:
            canonical.update(parse_link_params({key: mapping[key]}))
        except LinkParamError as error:
            report.add(where.child(mapping.line_of(key), str(key)), error.message)
    return canonical


def parse_address(text: Any) -> tuple[IPv4Address | None, str]:
    """(address, "") or (None, problem) for a dotted quad."""
    if not isinstance(text, str):
        return None, f"expected an IPv4 address, got {type_name(text)} {text!r}"
    try:
        return IPv4Address(text), ""
    except WireError:
        return None, f"{text!r} is not an IPv4 address"


def parse_interface_cidr(text: Any) -> tuple[IPv4Address | None, int, str]:
    """(address, prefix length, "") or (None, 0, problem) for an interface's ``ip``."""
    if not isinstance(text, str):
        return None, 0, f"expected an address with prefix length like 10.0.1.10/24, got {type_name(text)} {text!r}"
    address_text, slash, prefix_text = text.strip().partition("/")
    if not slash:
        return None, 0, f"{text!r} needs a prefix length, e.g. {text.strip()}/24"
    address, problem = parse_address(address_text)
    if address is None:
        return None, 0, problem
    if not prefix_text.isdigit() or not 1 <= int(prefix_text) <= 32:
        return None, 0, f"{text!r}: prefix length must be 1..32"
    if address.is_unspecified or address.is_loopback or address.is_multicast or address >> 28 == 0xF:
        return None, 0, f"{text!r} is not a unicast address an interface can hold"
    return address, int(prefix_text), ""


def parse_network(text: Any, what: str = "network") -> tuple[int, int, str]:
    """(network, prefix length, "") for ``10.2.0.0/16``; host bits must be zero (as `ip route`)."""
    if not isinstance(text, str):
        return 0, 0, f"expected a {what} like 10.2.0.0/16, got {type_name(text)} {text!r}"
    address_text, slash, prefix_text = text.strip().partition("/")
    address, problem = parse_address(address_text)
    if address is None:
        return 0, 0, problem
    if slash and (not prefix_text.isdigit() or int(prefix_text) > 32):
        return 0, 0, f"{text!r}: prefix length must be 0..32"
    length = int(prefix_text) if slash else 32
    network = address & prefix_mask(length)
    if network != address:
        return 0, 0, f"{text!r} has host bits set (did you mean {format_cidr(network, length)}?)"
    return network, length, ""


ROUTE_KEYWORDS = ("via", "dev", "metric", "src")


def parse_route(text: Any, require_nexthop: bool = True) -> tuple[Route | None, str]:
    """One route of `ip route add|del|replace`: ``DST [via GW] [dev IF] [metric N] [src ADDR]``.

    The one grammar of a route, for topology files and the CLI alike.
    `require_nexthop=False` is for `ip route del`, which may name the
    destination alone (Linux then deletes the first route to it).
    """
    if not isinstance(text, str):
        return None, f"expected a route like 'default via 10.0.1.1', got {type_name(text)} {text!r}"
    words = text.split()
    if not words:
        return None, "empty route"
    if words[0] == "default":
        dst = "0.0.0.0/0"
    else:
        network, length, problem = parse_network(words[0], "destination")
        if problem:
            return None, problem
        dst = format_cidr(network, length)
    route = Route(dst)
    seen: set[str] = set()
    rest = words[1:]
    for index in range(0, len(rest), 2):
        keyword = rest[index]
        if keyword not in ROUTE_KEYWORDS:
            return None, f"unknown word {keyword!r} in route{did_you_mean(keyword, ROUTE_KEYWORDS, {'gw': 'via', 'gateway': 'via'})}"
        if keyword in seen:
            return None, f"{keyword!r} given twice"
        seen.add(keyword)
        if index + 1 >= len(rest):
            return None, f"{keyword!r} needs a value"
        value = rest[index + 1]
        if keyword in ("via", "src"):
            address, problem = parse_address(value)
            if address is None:
                return None, f"{keyword}: {problem}"
            if keyword == "via":
                route.gateway = str(address)
            else:
                route.src = str(address)
        elif keyword == "dev":
            route.dev = value
        elif not value.isdigit():
            return None, f"metric {value!r} is not a non-negative integer"
        else:
            route.metric = int(value)
    if require_nexthop and route.gateway is None and route.dev is None:
        return None, "a route needs 'via GATEWAY' or 'dev INTERFACE'"
    return route, ""


def parse_segment(report: Report, name: str, value: Any, where: Where) -> Segment | None:
    """A `segments:` entry."""
    if value in ("switch", "hub"):
        report.add(where, f"expected a mapping, got a string (write {name}: {{kind: {value}}})")
        return None
    spec = expect_map(report, value, where)
    if spec is None:
        return None
    check_keys(report, spec, where, ("kind", "aging", "max_entries", "capture", "tap", *LINK_PARAM_KEYS))
    kind = spec.get("kind", "switch")
    if kind not in ("switch", "hub"):
        hint = " (point-to-point links are written 'link: NAME' on the two interfaces)" if kind == "p2p" else ""
        report.add(where.child(spec.line_of("kind"), "kind"), f"kind must be switch or hub, got {kind!r}{hint}")
        kind = "switch"
    segment = Segment(name, kind, where=where, params=parse_link_values(report, spec, where))
    if kind == "switch":
        segment.aging, segment.max_entries = DEFAULT_AGING, DEFAULT_MAX_ENTRIES
    for key in ("aging", "max_entries"):
        if key not in spec:
            continue
        at = where.child(spec.line_of(key), key)
        value = spec[key]
        if kind != "switch":
            report.add(at, f"{key} applies to switches only (a hub learns nothing)")
        elif key == "aging":
            if isinstance(value, bool) or not isinstance(value, (int, float)) or value <= 0:
                report.add(at, f"aging must be a positive number of seconds, got {value!r}")
            else:
                segment.aging = float(value)
        elif isinstance(value, bool) or not isinstance(value, int) or value < 1:
            report.add(at, f"max_entries must be a positive integer, got {value!r}")
        else:
            segment.max_entries = value
    if "capture" in spec:
        capture = spec["capture"]
        if not isinstance(capture, str) or not capture.strip():
            report.add(where.child(spec.line_of("capture"), "capture"), f"capture must be a pcap file path, got {capture!r}")
        else:
            segment.capture = capture
    if "tap" in spec:
        segment.tap = parse_tap(report, spec["tap"], where.child(spec.line_of("tap"), "tap"))
    return segment


TAP_KEYS = ("device", "netns")
# Linux dev_valid_name: 1..15 bytes, not . or .., no '/', ':' or white space.
TAP_DEVICE_PATTERN = re.compile(r"[^/:\s]{1,15}")


def parse_tap(report: Report, value: Any, where: Where) -> Tap | None:
    """A segment's `tap: {device: NAME, netns: NS}` (netns optional: the host's namespace)."""
    if isinstance(value, str):
        report.add(where, f"expected a mapping, got a string (write tap: {{device: {value}}})")
        return None
    spec = expect_map(report, value, where, empty_ok=False)
    if spec is None:
        return None
    check_keys(report, spec, where, TAP_KEYS, required=("device",))
    device, netns = spec.get("device"), spec.get("netns")
    ok = True
    if "device" in spec:
        at = where.child(spec.line_of("device"), "device")
        if not isinstance(device, str):
            report.add(at, f"device must be an interface name, got {type_name(device)} {device!r} (quote it)")
            ok = False
        elif len(device.encode()) > MAX_INTERFACE_NAME_LENGTH:
            report.add(at, f"device name {device!r} is {len(device.encode())} characters; Linux allows at most "
                           f"{MAX_INTERFACE_NAME_LENGTH} (IFNAMSIZ)")
            ok = False
        elif not TAP_DEVICE_PATTERN.fullmatch(device) or device in (".", ".."):
            report.add(at, f"invalid device name {device!r}: no '/', ':' or spaces, not '.' or '..'")
            ok = False
    if netns is not None or "netns" in spec:
        at = where.child(spec.line_of("netns"), "netns")
        if not isinstance(netns, str) or not netns.strip():
            report.add(at, f"netns must be a network namespace name (ip netns list), got {type_name(netns)} {netns!r}")
            ok = False
        elif not netns.startswith("/") and ("/" in netns or netns in (".", "..")):
            report.add(at, f"invalid netns {netns!r}: a name as `ip netns add` takes it, or an absolute path "
                           f"such as /proc/PID/ns/net")
            ok = False
    if not ok or not isinstance(device, str):
        return None
    return Tap(device, netns, where)


INTERFACE_KEYS = ("segment", "link", "ip", "mac", *LINK_PARAM_KEYS)


def parse_interface(report: Report, node: str, name: Any, value: Any, where: Where) -> Interface | None:
    """A `nodes.N.interfaces:` entry; MACs are only checked for syntax here."""
    if not isinstance(name, str) or not NAME_PATTERN.fullmatch(name) or len(name) > MAX_INTERFACE_NAME_LENGTH:
        report.add(where, f"invalid interface name {name!r}: lower-case letters, digits and '-', "
                          f"starting with a letter, at most {MAX_INTERFACE_NAME_LENGTH} characters")
        return None
    spec = expect_map(report, value, where, empty_ok=False)
    if spec is None:
        return None
    check_keys(report, spec, where, INTERFACE_KEYS, required=("ip",))
    has_segment, has_link = "segment" in spec, "link" in spec
    if has_segment == has_link:
        report.add(where, "give exactly one of 'segment: NAME' (a switch or hub) or 'link: NAME' (a point-to-point wire)"
                   if has_segment else "missing 'segment: NAME' (or 'link: NAME' for a point-to-point wire)")
        return None
    key = "segment" if has_segment else "link"
    device = spec[key]
    if not isinstance(device, str):
        report.add(where.child(spec.line_of(key), key), f"expected a {key} name, got {type_name(device)} {device!r}")
        return None
    if "ip" not in spec:
        return None
    ip_where = where.child(spec.line_of("ip"), "ip")
    address, length, problem = parse_interface_cidr(spec["ip"])
    if address is None:
        report.add(ip_where, problem)
        return None
    interface = Interface(node, name, address, length, device, via_link=has_link,
                          params=parse_link_values(report, spec, where),
                          where={"": where, "ip": ip_where, key: where.child(spec.line_of(key), key)})
    for param in spec:
        if param in LINK_PARAM_KEYS:
            interface.where[param] = where.child(spec.line_of(param), param)
    if "mac" in spec:
        mac_where = where.child(spec.line_of("mac"), "mac")
        interface.where["mac"] = mac_where
        mac = parse_mac(report, spec["mac"], mac_where)
        if mac is not None:
            interface.mac, interface.mac_auto = mac, False
    return interface


def parse_mac(report: Report, value: Any, where: Where) -> str | None:
    """A station's unicast MAC as canonical text."""
    if not isinstance(value, str):
        report.add(where, f"expected a MAC address like \"02:00:00:00:00:01\" (quoted), got {type_name(value)} {value!r}")
        return None
    try:
        mac = MacAddress(value)
    except WireError:
        report.add(where, f"{value!r} is not a MAC address (six hex bytes like 02:00:00:00:00:01)")
        return None
    if mac.is_multicast or mac == bytes(6):
        report.add(where, f"{value} is not a unicast station address (group bit set, or all zeros)")
        return None
    return str(mac)


def parse_node(report: Report, name: str, value: Any, where: Where,
               defaults_sysctl: dict[str, Any]) -> Node | None:
    """A `nodes:` entry: kind, interfaces, routes, arp and sysctl as written."""
    spec = expect_map(report, value, where, empty_ok=False)
    if spec is None:
        return None
    check_keys(report, spec, where, ("kind", "interfaces", "routes", "arp", "sysctl"),
               required=("kind", "interfaces"), required_hint={"kind": ": host or router"})
    kind = spec.get("kind")
    if "kind" in spec and kind not in ("host", "router"):
        report.add(where.child(spec.line_of("kind"), "kind"), f"kind must be host or router, got {kind!r}"
                   f"{did_you_mean(kind, ('host', 'router'))}")
    node = Node(name, kind if kind in ("host", "router") else "host", where=where)
    if "interfaces" in spec:
        interfaces_where = where.child(spec.line_of("interfaces"), "interfaces")
        interfaces = expect_map(report, spec["interfaces"], interfaces_where, empty_ok=False)
        if interfaces is not None and not interfaces:
            report.add(interfaces_where, "a node needs at least one interface")
        for interface_name, interface_spec in (interfaces or {}).items():
            interface = parse_interface(report, name, interface_name, interface_spec,
                                        interfaces_where.child(interfaces.line_of(interface_name), str(interface_name)))
            if interface is not None:
                node.interfaces[interface.name] = interface
    if "routes" in spec:
        node.routes = parse_routes(report, spec["routes"], where.child(spec.line_of("routes"), "routes"))
    if "arp" in spec:
        arp_where = where.child(spec.line_of("arp"), "arp")
        table = expect_map(report, spec["arp"], arp_where)
        for ip, mac in (table or {}).items():
            entry_where = arp_where.child(table.line_of(ip), str(ip))
            address, problem = parse_address(ip)
            if address is None:
                report.add(entry_where, problem)
                continue
            canonical = parse_mac(report, mac, entry_where)
            if canonical is not None:
                node.arp.append(ArpEntry(str(address), canonical, "", where=entry_where))
    node.sysctl = {"net.ipv4.ip_forward": 1 if node.kind == "router" else 0, **defaults_sysctl}
    if "sysctl" in spec:
        node.sysctl.update(parse_sysctl(report, spec["sysctl"], where.child(spec.line_of("sysctl"), "sysctl")))
    return node


def parse_routes(report: Report, value: Any, where: Where) -> list[Route]:
    """A list of route strings."""
    if not isinstance(value, LocatedList):
        report.add(where, f"expected a list of routes like [default via 10.0.1.1], got {type_name(value)}")
        return []
    routes = []
    for index, text in enumerate(value):
        item_where = Where(value.line_of(index), f"{where.path}[{index}]", where.subject)
        route, problem = parse_route(text)
        if route is None:
            report.add(item_where, problem)
        else:
            route.where = item_where
            routes.append(route)
    return routes


def parse_sysctl(report: Report, value: Any, where: Where) -> dict[str, Any]:
    """Canonical values of a `sysctl:` mapping, checked against the known knobs."""
    from .plan import SysctlError, check_sysctl

    table = expect_map(report, value, where)
    values: dict[str, Any] = {}
    for name, setting in (table or {}).items():
        try:
            values[name] = check_sysctl(str(name), setting)
        except SysctlError as error:
            report.add(where.child(table.line_of(name), str(name)), error.message)
    return values


def parse_segment_link(report: Report, value: Any, where: Where) -> SegmentLink | None:
    """A `links:` item: ``[lan1, lan2]`` or ``{between: [lan1, lan2], delay: 1ms, ...}``."""
    params: dict[str, Any] = {}
    ends = value
    if isinstance(value, LocatedMap):
        expect_map(report, value, where)
        check_keys(report, value, where, ("between", *LINK_PARAM_KEYS), required=("between",))
        if "between" not in value:
            return None
        params = parse_link_values(report, value, where)
        ends = value["between"]
        where = where.child(value.line_of("between"), "between")
    if not isinstance(ends, list) or len(ends) != 2:
        report.add(where, f"a segment link names two segments, like [lan1, lan2] or {{between: [lan1, lan2]}}; got {ends!r}")
        return None
    if not all(isinstance(end, str) for end in ends):
        report.add(where, f"segment names must be strings, got {ends!r}")
        return None
    return SegmentLink(ends[0], ends[1], params, where)


# Resources every Ray node has: pinning to one of them would pin to nothing in particular.
RAY_BUILTIN_RESOURCES = ("CPU", "GPU", "memory", "object_store_memory")


def parse_placement(report: Report, value: Any, where: Where) -> dict[str, PlacementPin]:
    """`placement:`: name -> a Ray node's IPv4 address or a custom resource name (docs/cluster.md).

    Whether each name exists is checked with the whole topology (`topology_check.check_placement`),
    whether each target exists only against a running cluster (`control.placement`).
    """
    table = expect_map(report, value, where)
    pins: dict[str, PlacementPin] = {}
    for name, target in (table or {}).items():
        at = where.child(table.line_of(name), str(name))
        if not isinstance(name, str):
            report.add(at, f"expected a node or segment name, got {type_name(name)} {name!r}")
            continue
        if not isinstance(target, str) or not target.strip():
            report.add(at, f"expected a Ray node's IP address or the name of a custom resource it offers, "
                           f"got {type_name(target)} {target!r}")
            continue
        pin = PlacementPin(target.strip(), at)
        if pin.is_address:
            address, problem = parse_address(pin.target)
            if address is None:
                report.add(at, problem)
                continue
        elif any(c.isspace() for c in pin.target):
            report.add(at, f"resource name {target!r} contains white space")
            continue
        elif pin.target in RAY_BUILTIN_RESOURCES or pin.target.startswith("node:"):
            report.add(at, f"{pin.target!r} is a resource every Ray node has; give a Ray node's IP address or a "
                           f"custom resource (ray start --resources '{{\"rack1\": 1}}')")
            continue
        pins[name] = pin
    return pins


def parse_cluster(report: Report, value: Any, where: Where) -> ClusterOptions:
    """`cluster:`: options of a run across Ray nodes (`encrypt`, default true)."""
    spec = expect_map(report, value, where)
    if spec is None:
        return ClusterOptions(where=where)
    check_keys(report, spec, where, ("encrypt",))
    encrypt = spec.get("encrypt", True)
    if not isinstance(encrypt, bool):
        report.add(where.child(spec.line_of("encrypt"), "encrypt"), f"encrypt must be true or false, got {encrypt!r}")
        encrypt = True
    return ClusterOptions(encrypt, where)
