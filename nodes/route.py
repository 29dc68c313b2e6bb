"""The FIB: main and local tables, longest-prefix match, interface address hooks.

Before changing this file, read seed 001's "IP routing" section (fib_zone /
fib_node / fib_info, the route cache keyed by destination, LRU order),
iproute2's ip-route(8) for the user-visible semantics, and RFC 1191 sections
5-6 for path-MTU updates.

Sans-I/O: nothing here does I/O or reads a clock; times are `now` arguments.

Semantics (Linux `ip route` unless noted):

* Two tables, consulted in order: `local` (our own addresses, directed
  broadcasts, 127.0.0.0/8 on `lo`; filled by the address hooks) then `main`.
* Within a table: longest prefix wins, then lowest metric, then the route
  added first. `add` of a route with the same table, prefix and metric as an
  existing one is `FileExistsError` (EEXIST), as in Linux without multipath;
  `replace` overwrites it. `delete` of an absent route is `ProcessLookupError`
  (ESRCH, iproute2's "No such process").
* A `via` gateway must be on-link: covered by a scope-link route (a connected
  route or a `dev` route) on the given `dev`; else `OSError(ENETUNREACH)`
  ("Nexthop has invalid gateway"). Without `dev`, the dev of that route is used.
* Link down (`link_down`): the dev's connected and broadcast routes are
  withdrawn and come back on `link_up`. Static routes through the dev stay in
  the table, flagged `linkdown`, and lookup skips them (so a backup route with
  a higher metric or shorter prefix takes over). This differs from Linux,
  which deletes static routes on an administrative down; keeping them means a
  topology survives a link flap. Local (own address) entries stay reachable.
* Removing an address promotes a secondary address of the same subnet
  (`promote_secondaries=1`, the systemd default) and deletes routes whose
  preferred source was that address (Linux fib_sync_down_addr).
* 255.255.255.255 and multicast destinations are not in the FIB; the IPv4
  layer handles them before asking, as Linux's ip_route_input_slow does.

The route cache in front of the FIB is `nodes/route_cache.py`.
"""
from __future__ import annotations

import errno
from dataclasses import dataclass, field
from dataclasses import replace as dataclass_replace
from enum import Enum
from typing import Any, Iterator, Mapping

from .wire.addresses import IPv4Address, parse_cidr, prefix_mask
from .wire.icmp import HOST_UNREACH, PKT_FILTERED



class RouteType(str, Enum):
    """rtm_type: what a route does with a packet (a str, so "unicast" compares equal)."""

    UNICAST = "unicast"
    LOCAL = "local"
    BROADCAST = "broadcast"
    BLACKHOLE = "blackhole"
    UNREACHABLE = "unreachable"
    PROHIBIT = "prohibit"

    def __str__(self) -> str:
        return self.value


ROUTE_TYPES = tuple(kind.value for kind in RouteType)
SCOPES = ("global", "site", "link", "host")
_LOCAL_TABLE_TYPES = (RouteType.LOCAL, RouteType.BROADCAST)
# Types a packet can be sent along; the others only fail.
DELIVERING_TYPES = frozenset((RouteType.UNICAST, RouteType.LOCAL, RouteType.BROADCAST))


@dataclass(frozen=True, slots=True)
class RouteError:
    """What a route that delivers nothing does: the errno a sender gets (Linux fib_props[].error)
    and the ICMP destination-unreachable code a forwarded datagram earns (None: dropped silently,
    as ip_error does for a blackhole)."""

    errno: int
    icmp_code: int | None
    message: str


# The one mapping from a failing route type to its errors.
ROUTE_ERRORS: dict[str, RouteError] = {
    RouteType.BLACKHOLE: RouteError(errno.EINVAL, None, "Invalid argument"),
    RouteType.UNREACHABLE: RouteError(errno.EHOSTUNREACH, HOST_UNREACH, "No route to host"),
    RouteType.PROHIBIT: RouteError(errno.EACCES, PKT_FILTERED, "Permission denied"),
}

DEFAULT_MTU = 1500
LOOPBACK_MTU = 65536
LOOPBACK = "lo"
_MASKS = tuple(prefix_mask(length) for length in range(33))  # prefix_mask without its range check


def _error(code: int, message: str) -> OSError:
    """An OSError of the right subclass (FileExistsError, ProcessLookupError...) for `code`."""
    return OSError(code, message)


@dataclass(frozen=True, slots=True)
class Route:
    """One FIB entry, like a line of `ip route show`.

    `scope` and `table` are derived from the type and gateway when left empty:
    via a gateway -> global, on-link -> link, local -> host; local and
    broadcast routes live in the local table (as iproute2 does).
    """

    network: IPv4Address
    prefix_length: int
    gateway: IPv4Address | None = None
    dev: str | None = None
    metric: int = 0
    src: IPv4Address | None = None
    protocol: str = "boot"
    scope: str = ""
    type: RouteType = RouteType.UNICAST  # a plain string is taken too
    table: str = ""
    mtu: int | None = None
    onlink: bool = False

    def __post_init__(self) -> None:
        set_ = object.__setattr__
        if self.type not in ROUTE_TYPES:
            raise _error(errno.EINVAL, f"unknown route type {self.type!r}")
        set_(self, "type", RouteType(self.type))
        mask = prefix_mask(self.prefix_length)
        network = IPv4Address(self.network)
        if network & ~mask & 0xFFFFFFFF:
            raise _error(errno.EINVAL, f"Invalid prefix for given prefix length: {network}/{self.prefix_length}")
        set_(self, "network", network)
        if self.gateway is not None:
            set_(self, "gateway", IPv4Address(self.gateway))
            if self.type != "unicast":
                raise _error(errno.EINVAL, f"a {self.type} route has no gateway")
        if self.src is not None:
            set_(self, "src", IPv4Address(self.src))
        if self.type in ("unicast", "local", "broadcast") and self.dev is None and self.gateway is None:
            raise _error(errno.EINVAL, "a unicast route needs a gateway or a dev")
        if self.onlink and (self.gateway is None or self.dev is None):
            raise _error(errno.EINVAL, "onlink needs a gateway and a dev")
        if self.metric < 0 or (self.mtu is not None and self.mtu < 68):
            raise _error(errno.EINVAL, "metric must be >= 0 and mtu >= 68")
        if not self.scope:
            if self.type == "local":
                scope = "host"
            elif self.type == "broadcast" or (self.type == "unicast" and self.gateway is None):
                scope = "link"
            else:
                scope = "global"
            set_(self, "scope", scope)
        elif self.scope not in SCOPES:
            raise _error(errno.EINVAL, f"unknown scope {self.scope!r}")
        if not self.table:
            set_(self, "table", "local" if self.type in _LOCAL_TABLE_TYPES else "main")
        elif self.table not in ("main", "local"):
            raise _error(errno.EINVAL, f"unknown table {self.table!r}")

    @classmethod
    def from_config(cls, spec: Mapping[str, Any]) -> "Route":
        """Build from a node-config / control-op dict: {"dst": "10.0.0.0/24" | "default", "gateway", "dev", ...}."""
        dst = spec.get("dst", "default")
        network, length = (IPv4Address(0), 0) if dst == "default" else parse_cidr(dst)
        gateway = spec.get("gateway", spec.get("via"))
        src = spec.get("src")
        return cls(
            network, length,
            gateway=IPv4Address(gateway) if gateway is not None else None,
            dev=spec.get("dev"),
            metric=int(spec.get("metric") or 0),
            src=IPv4Address(src) if src is not None else None,
            protocol=spec.get("protocol") or "boot",
            scope=spec.get("scope") or "",
            type=spec.get("type") or "unicast",
            table=spec.get("table") or "",
            mtu=spec.get("mtu"),
            onlink=bool(spec.get("onlink", False)),
        )

    @property
    def key(self) -> tuple[str, int, int, int]:
        """What makes two routes the same FIB slot: table, prefix, metric (Linux fib_alias)."""
        return (self.table, self.network, self.prefix_length, self.metric)

    @property
    def destination(self) -> str:
        """The destination as ip-route prints it: `default`, `10.0.0.1`, `10.0.0.0/24`."""
        if self.prefix_length == 0 and self.network == 0:
            return "default"
        if self.prefix_length == 32:
            return str(self.network)
        return f"{self.network}/{self.prefix_length}"

    @property
    def error(self) -> int | None:
        """The errno a packet sent along this route fails with (blackhole/unreachable/prohibit)."""
        failure = ROUTE_ERRORS.get(self.type)
        return failure.errno if failure is not None else None

    def format(self, flags: tuple[str, ...] = ()) -> str:
        """One line of `ip route show`."""
        parts = [] if self.type == "unicast" else [self.type]
        parts.append(self.destination)
        if self.gateway is not None:
            parts += ["via", str(self.gateway)]
        if self.dev is not None:
            parts += ["dev", self.dev]
        if self.protocol != "boot":
            parts += ["proto", self.protocol]
        if self.scope != "global":
            parts += ["scope", self.scope]
        if self.src is not None:
            parts += ["src", str(self.src)]
        if self.metric:
            parts += ["metric", str(self.metric)]
        if self.mtu is not None:
            parts += ["mtu", str(self.mtu)]
        parts += list(flags)
        if self.onlink:
            parts.append("onlink")
        return " ".join(parts)

    def __str__(self) -> str:
        return self.format()


class _Table:
    """One routing table: per prefix length, a dict from masked network to routes (best first)."""

    __slots__ = ("by_length", "levels")

    def __init__(self) -> None:
        self.by_length: dict[int, dict[int, list[Route]]] = {}
        # (mask, networks) for every prefix length present, longest first: the lookup walks this.
        self.levels: list[tuple[int, dict[int, list[Route]]]] = []

    def _relevel(self) -> None:
        self.levels = [(prefix_mask(length), self.by_length[length]) for length in sorted(self.by_length, reverse=True)]

    def slot(self, network: int, prefix_length: int) -> list[Route]:
        networks = self.by_length.get(prefix_length)
        return networks.get(network, []) if networks else []

    def insert(self, route: Route) -> None:
        """Insert after every route of lower or equal metric (first added wins ties)."""
        networks = self.by_length.get(route.prefix_length)
        if networks is None:
            networks = self.by_length[route.prefix_length] = {}
            self._relevel()
        routes = networks.setdefault(route.network, [])
        index = len(routes)
        while index and routes[index - 1].metric > route.metric:
            index -= 1
        routes.insert(index, route)

    def remove(self, route: Route) -> None:
        networks = self.by_length[route.prefix_length]
        routes = networks[route.network]
        routes.remove(route)
        if not routes:
            del networks[route.network]
            if not networks:
                del self.by_length[route.prefix_length]
                self._relevel()

    def __iter__(self) -> Iterator[Route]:
        """Every route, in `ip route show` order (by network, then prefix length, then metric)."""
        for length in sorted(self.by_length):
            for network, routes in self.by_length[length].items():
                yield from routes

    def sorted_routes(self) -> list[Route]:
        return sorted(self, key=lambda r: (r.network, r.prefix_length, r.metric))


@dataclass(slots=True)
class _Device:
    name: str
    mtu: int
    up: bool = True
    addresses: list[tuple[IPv4Address, int]] = field(default_factory=list)  # in order added; primaries first


class Fib:
    """The forwarding information base of one node: main and local tables plus the interface view they need.

    `generation` changes on every route, address, link or MTU change; caches compare it.
    """

    def __init__(self, loopback: bool = True) -> None:
        self.main = _Table()
        self.local = _Table()
        self._tables = {"main": self.main, "local": self.local}
        self._devices: dict[str, _Device] = {}
        self._down: set[str] = set()
        self.generation = 0
        if loopback:
            self.add_device(LOOPBACK, mtu=LOOPBACK_MTU)
            self.add_address(LOOPBACK, IPv4Address("127.0.0.1"), 8)

    # ---------------------------------------------------------------- lookup

    def lookup(self, dst: int) -> Route | None:
        """The route for `dst`: local table first, then main; longest prefix, lowest metric, live dev."""
        down = self._down
        for table in (self.local, self.main):
            for mask, networks in table.levels:
                routes = networks.get(dst & mask)
                if routes is not None:
                    if not down:
                        return routes[0]
                    for route in routes:
                        if route.dev not in down or route.type == "local":
                            return route
        return None

    def _lookup_on_link(self, gateway: int, dev: str | None) -> Route | None:
        """The scope-link-or-narrower unicast route covering `gateway` (optionally on `dev`): fib_check_nh."""
        for mask, networks in self.main.levels:
            for route in networks.get(gateway & mask, ()):
                if (route.type == "unicast" and route.scope in ("link", "host") and route.dev not in self._down
                        and (dev is None or route.dev == dev)):
                    return route
        return None

    def address_type(self, address: int) -> str:
        """Like Linux inet_addr_type: "local", "broadcast", "multicast" or "unicast"."""
        if address == 0xFFFFFFFF:
            return "broadcast"
        if address >> 28 == 0xE:
            return "multicast"
        for mask, networks in self.local.levels:
            routes = networks.get(address & mask)
            if routes:
                return routes[0].type
        return "unicast"

    def select_source(self, route: Route, dst: int) -> IPv4Address | None:
        """Source address for a packet to `dst` along `route` (Linux inet_select_addr).

        The route's `src` if set; else the primary address of the egress device
        in the next hop's subnet; else that device's first address; else the
        first address of any other device (an unnumbered interface borrows one).
        """
        if route.src is not None:
            return route.src
        next_hop = route.gateway if route.gateway is not None else dst
        device = self._devices.get(route.dev) if route.dev is not None else None
        if device is not None and device.addresses:
            for address, length in device.addresses:
                if not (next_hop ^ address) & _MASKS[length]:
                    return address
            return device.addresses[0][0]
        for other in self._devices.values():
            if other.name != LOOPBACK and other.addresses:
                return other.addresses[0][0]
        return None

    # ---------------------------------------------------------------- routes

    def add(self, route: Route) -> Route:
        """`ip route add`: returns the stored route (dev filled in); FileExistsError if the slot is taken."""
        route = self._validate(route)
        if any(existing.key == route.key for existing in self._tables[route.table].slot(route.network, route.prefix_length)):
            raise _error(errno.EEXIST, f"File exists: {route}")
        self._tables[route.table].insert(route)
        self.generation += 1
        return route

    def replace(self, route: Route) -> Route:
        """`ip route replace`: overwrite the route in the same slot (table, prefix, metric) or add it."""
        route = self._validate(route)
        table = self._tables[route.table]
        for existing in table.slot(route.network, route.prefix_length):
            if existing.key == route.key:
                table.remove(existing)
                break
        table.insert(route)
        self.generation += 1
        return route

    def delete(self, network: int | str, prefix_length: int | None = None, *, gateway: int | str | None = None,
               dev: str | None = None, metric: int | None = None, type: str | None = None,
               table: str = "main") -> Route:
        """`ip route del`: remove the first route matching every given attribute; ProcessLookupError if none."""
        if isinstance(network, str):
            if network == "default":
                network, parsed_length = IPv4Address(0), 0
            else:
                network, parsed_length = parse_cidr(network)
            prefix_length = parsed_length if prefix_length is None else prefix_length
        elif prefix_length is None:
            prefix_length = 32
        if table not in self._tables:
            raise _error(errno.EINVAL, f"unknown table {table!r}")
        gateway = IPv4Address(gateway) if gateway is not None else None
        for route in self._tables[table].slot(int(network), prefix_length):
            if ((gateway is None or route.gateway == gateway) and (dev is None or route.dev == dev)
                    and (metric is None or route.metric == metric) and (type is None or route.type == type)):
                self._tables[table].remove(route)
                self.generation += 1
                return route
        raise _error(errno.ESRCH, f"No such process: no route to {IPv4Address(network)}/{prefix_length} to delete")

    def _validate(self, route: Route) -> Route:
        """Check the device and next hop like fib_create_info / fib_check_nh; fill in the dev."""
        if route.dev is not None and route.dev not in self._devices:
            raise _error(errno.ENODEV, f"Cannot find device {route.dev!r}")
        if route.gateway is None or route.onlink:
            return route
        on_link = self._lookup_on_link(route.gateway, route.dev)
        if on_link is None:
            raise _error(errno.ENETUNREACH, f"Nexthop has invalid gateway {route.gateway}")
        if route.dev is None:
            route = dataclass_replace(route, dev=on_link.dev)
        return route

    def routes(self, table: str = "main") -> list[dict[str, Any]]:
        """`ip route show [table local|all]` as plain dicts (for the control endpoint)."""
        tables = ("local", "main") if table == "all" else (table,)
        return [self._describe(route) for name in tables for route in self._tables[name].sorted_routes()]

    def show(self, table: str = "main") -> list[str]:
        """`ip route show` as text lines."""
        tables = ("local", "main") if table == "all" else (table,)
        return [route.format(self._flags(route)) for name in tables for route in self._tables[name].sorted_routes()]

    def _flags(self, route: Route) -> tuple[str, ...]:
        return ("linkdown",) if route.dev in self._down and route.type != "local" else ()

    def _describe(self, route: Route) -> dict[str, Any]:
        return {
            "dst": route.destination, "type": route.type, "table": route.table,
            "gateway": str(route.gateway) if route.gateway is not None else None,
            "dev": route.dev, "protocol": route.protocol, "scope": route.scope,
            "prefsrc": str(route.src) if route.src is not None else None,
            "metric": route.metric, "mtu": route.mtu, "flags": list(self._flags(route)) + (["onlink"] if route.onlink else []),
        }

    # ------------------------------------------------------ interface hooks

    def add_device(self, dev: str, mtu: int = DEFAULT_MTU, up: bool = True) -> None:
        """Register an interface (idempotent for an existing one)."""
        if dev not in self._devices:
            self._devices[dev] = _Device(dev, mtu, up)
            if not up:
                self._down.add(dev)
            self.generation += 1

    def device_mtu(self, dev: str | None) -> int:
        device = self._devices.get(dev) if dev is not None else None
        return device.mtu if device is not None else DEFAULT_MTU

    def set_mtu(self, dev: str, mtu: int) -> None:
        """`ip link set DEV mtu N`: cached path MTUs through it must be recomputed."""
        self._device(dev).mtu = mtu
        self.generation += 1

    def addresses(self, dev: str | None = None) -> list[tuple[str, IPv4Address, int]]:
        """(dev, address, prefix length) of every address, or of one device's."""
        devices = [self._device(dev)] if dev is not None else list(self._devices.values())
        return [(d.name, address, length) for d in devices for address, length in d.addresses]

    def is_up(self, dev: str) -> bool:
        return dev in self._devices and dev not in self._down

    def add_address(self, dev: str, address: int | str, prefix_length: int) -> None:
        """`ip addr add ADDRESS/LEN dev DEV`: local entry, and for a primary the connected and broadcast routes."""
        address = IPv4Address(address)
        mask = prefix_mask(prefix_length)
        if dev not in self._devices:
            self.add_device(dev, LOOPBACK_MTU if dev == LOOPBACK else DEFAULT_MTU)
        device = self._devices[dev]
        if any(existing == address for existing, _ in device.addresses):
            raise _error(errno.EEXIST, f"File exists: {address} on {dev}")
        primary = not any(length == prefix_length and not (existing ^ address) & mask
                          for existing, length in device.addresses)
        # Kept in the order added, so the first address of a subnet is its primary.
        device.addresses.append((address, prefix_length))
        self.local.insert(Route(address, 32, dev=dev, src=address, protocol="kernel", type="local"))
        if primary and dev not in self._down:
            for route in self._subnet_routes(dev, address, prefix_length):
                self._tables[route.table].insert(route)
        self.generation += 1

    def remove_address(self, dev: str, address: int | str, prefix_length: int | None = None) -> None:
        """`ip addr del`: drop its routes, promote a secondary, delete routes preferring it as source."""
        address = IPv4Address(address)
        device = self._device(dev)
        for index, (existing, length) in enumerate(device.addresses):
            if existing == address and (prefix_length is None or prefix_length == length):
                break
        else:
            raise _error(errno.EADDRNOTAVAIL, f"Cannot assign requested address: {address} not on {dev}")
        mask = prefix_mask(length)
        was_primary = not any(l == length and not (a ^ address) & mask for a, l in device.addresses[:index])
        del device.addresses[index]
        self._remove_where(self.local, lambda r: r.type == "local" and r.prefix_length == 32
                           and r.network == address and r.dev == dev)
        if was_primary:
            subnet = set(self._subnet_routes(dev, address, length))
            for table in (self.main, self.local):
                self._remove_where(table, lambda r: r in subnet)
            successor = next(((a, l) for a, l in device.addresses if l == length and not (a ^ address) & mask), None)
            if successor is not None and dev not in self._down:
                for route in self._subnet_routes(dev, *successor):
                    self._tables[route.table].insert(route)
        if not any(address == a for d in self._devices.values() for a, _ in d.addresses):
            for table in (self.main, self.local):
                self._remove_where(table, lambda r: r.src == address)
        self.generation += 1

    def link_down(self, dev: str) -> None:
        """Interface down: withdraw its connected/broadcast routes; static routes through it become `linkdown`."""
        self._device(dev)
        if dev in self._down:
            return
        self._down.add(dev)
        for table in (self.main, self.local):
            self._remove_where(table, lambda r: r.dev == dev and r.protocol == "kernel" and r.type != "local")
        self.generation += 1

    def link_up(self, dev: str) -> None:
        """Interface up: restore the connected/broadcast routes of its primary addresses."""
        device = self._device(dev)
        if dev not in self._down:
            return
        self._down.discard(dev)
        seen: list[tuple[int, int]] = []
        for address, length in device.addresses:
            subnet = (address & prefix_mask(length), length)
            if subnet in seen:
                continue
            seen.append(subnet)
            for route in self._subnet_routes(dev, address, length):
                table = self._tables[route.table]
                if route not in table.slot(route.network, route.prefix_length):
                    table.insert(route)
        self.generation += 1

    def _device(self, dev: str) -> _Device:
        try:
            return self._devices[dev]
        except KeyError:
            raise _error(errno.ENODEV, f"Cannot find device {dev!r}") from None

    @staticmethod
    def _subnet_routes(dev: str, address: IPv4Address, prefix_length: int) -> list[Route]:
        """The connected and broadcast routes a primary address brings (Linux fib_add_ifaddr)."""
        mask = prefix_mask(prefix_length)
        network = IPv4Address(address & mask)
        routes = []
        if prefix_length < 32 and network != 0:
            if dev == LOOPBACK:
                routes.append(Route(network, prefix_length, dev=dev, src=address, protocol="kernel", type="local"))
            else:
                routes.append(Route(network, prefix_length, dev=dev, src=address, protocol="kernel"))
        if prefix_length < 31:  # /31 point-to-point links have no broadcast address (RFC 3021)
            broadcast = IPv4Address(network | (~mask & 0xFFFFFFFF))
            routes.append(Route(broadcast, 32, dev=dev, src=address, protocol="kernel", type="broadcast"))
        return routes

    def _remove_where(self, table: _Table, predicate: Any) -> None:
        for route in [r for r in table if predicate(r)]:
            table.remove(route)
