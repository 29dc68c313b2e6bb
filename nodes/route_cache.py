"""The route cache: the pre-3.6 Linux cache of routing decisions, keyed by destination.

Before changing this file, read seed 001's "IP routing" section (the route
cache keyed by destination, LRU order) and RFC 1191 sections 5-6 (path-MTU
updates). Sans-I/O: times are `now` arguments.

`RouteCache` is a bounded LRU of `DstEntry` keyed by destination, emptied
whenever the FIB's generation changes. Learned path MTUs are kept apart from
the entries (like 3.6+ nexthop exceptions), so a routing change does not
forget them; `flush()` forgets everything.
"""
from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

from .route import DEFAULT_MTU, Fib, Route
from .wire.addresses import IPv4Address


@dataclass(slots=True)
class DstEntry:
    """A cached routing decision for one destination (Linux dst_entry / rtable)."""

    dst: IPv4Address
    route: Route
    next_hop: IPv4Address
    dev: str | None
    src: IPv4Address | None
    pmtu: int
    pmtu_expires: float | None  # set while a learned (lowered) PMTU is in force
    last_use: float
    use_count: int = 0
    route_mtu: int = DEFAULT_MTU  # the route's mtu or its device's: what forwarding measures against

    @property
    def type(self) -> str:
        return self.route.type


class RouteCache:
    """Bounded LRU of `DstEntry` by destination in front of a `Fib` (pre-3.6 Linux route cache).

    Knobs (sysctl net.ipv4.route.*): `max_size` (max entries), `mtu_expires` (seconds a learned
    PMTU lasts, Linux ip_rt_mtu_expires), `min_pmtu` (floor for reported MTUs,
    Linux ip_rt_min_pmtu).
    """

    def __init__(self, fib: Fib, max_size: int = 4096, mtu_expires: float = 600.0,
                 min_pmtu: int = 552) -> None:
        if max_size < 1:
            raise ValueError("max_size must be at least 1")
        self.fib = fib
        self.max_size = max_size
        self.mtu_expires = mtu_expires
        self.min_pmtu = min_pmtu
        self._entries: OrderedDict[int, DstEntry] = OrderedDict()
        self._generation = fib.generation
        # Learned PMTUs by destination: (mtu, expires). Kept across FIB changes, dropped by flush().
        self._pmtu: dict[int, tuple[int, float]] = {}
        self.hits = 0
        self.misses = 0
        self.evictions = 0
        self.invalidations = 0

    def __len__(self) -> int:
        return len(self._entries)

    def lookup(self, dst: int, now: float) -> DstEntry | None:
        """The cached route to `dst`, creating the entry from the FIB on a miss; None if unroutable."""
        if self._generation == self.fib.generation:
            entry = self._entries.get(dst)
            if entry is not None:
                self._entries.move_to_end(dst)
                entry.last_use = now
                entry.use_count += 1
                if entry.pmtu_expires is not None and now >= entry.pmtu_expires:
                    self._expire_pmtu(entry, now)
                self.hits += 1
                return entry
        else:
            self._invalidate()
        return self._miss(dst, now)

    def _miss(self, dst: int, now: float) -> DstEntry | None:
        self.misses += 1
        fib = self.fib
        route = fib.lookup(dst)
        if route is None:
            return None
        if type(dst) is not IPv4Address:
            dst = IPv4Address(dst)
        entry = DstEntry(dst, route, route.gateway if route.gateway is not None else dst, route.dev,
                         fib.select_source(route, dst), self._base_mtu(route), None, now, 1)
        entry.route_mtu = entry.pmtu
        learned = self._pmtu.get(dst)
        if learned is not None:
            if now < learned[1]:
                if learned[0] < entry.pmtu:
                    entry.pmtu, entry.pmtu_expires = learned
            else:
                del self._pmtu[dst]
        self._entries[dst] = entry
        if len(self._entries) > self.max_size:
            self._entries.popitem(last=False)
            self.evictions += 1
        return entry

    def _base_mtu(self, route: Route) -> int:
        device = self.fib._devices.get(route.dev)
        device_mtu = device.mtu if device is not None else DEFAULT_MTU
        return min(route.mtu, device_mtu) if route.mtu is not None else device_mtu

    def _expire_pmtu(self, entry: DstEntry, now: float) -> None:
        entry.pmtu = self._base_mtu(entry.route)
        entry.pmtu_expires = None
        learned = self._pmtu.get(entry.dst)
        if learned is not None and now >= learned[1]:
            del self._pmtu[entry.dst]

    def _invalidate(self) -> None:
        self.invalidations += len(self._entries)
        self._entries.clear()
        self._generation = self.fib.generation

    def path_mtu(self, dst: int, now: float) -> int | None:
        """The path MTU to `dst` (None if unroutable); goes through the cache like a send would."""
        entry = self.lookup(dst, now)
        return entry.pmtu if entry is not None else None

    def update_pmtu(self, dst: int, mtu: int, now: float) -> int | None:
        """An ICMP fragmentation-needed said the next hop MTU toward `dst` is `mtu` (RFC 1191 section 6.1).

        Only ever lowers the estimate (RFC 1191 section 6.3: never raise on a
        Too Big message), never below `min_pmtu`; the learned value expires
        after `mtu_expires` seconds. Returns the PMTU now in force.
        """
        entry = self.lookup(dst, now)
        if entry is None:
            return None
        mtu = max(mtu, self.min_pmtu)
        if mtu >= entry.pmtu:
            return entry.pmtu
        expires = now + self.mtu_expires
        entry.pmtu, entry.pmtu_expires = mtu, expires
        self._pmtu.pop(entry.dst, None)
        self._pmtu[entry.dst] = (mtu, expires)
        if len(self._pmtu) > self.max_size:
            del self._pmtu[next(iter(self._pmtu))]
        return mtu

    def flush(self) -> None:
        """`ip route flush cache`: drop every entry and every learned PMTU."""
        self._invalidate()
        self._pmtu.clear()

    def stats(self) -> dict[str, int]:
        return {"entries": len(self._entries), "hits": self.hits, "misses": self.misses,
                "evictions": self.evictions, "invalidations": self.invalidations}

    def show(self, now: float) -> list[dict[str, Any]]:
        """`ip route show cache` as plain dicts, least recently used first."""
        stale = self._generation != self.fib.generation
        rows = []
        for entry in ([] if stale else self._entries.values()):
            expires = entry.pmtu_expires - now if entry.pmtu_expires is not None and entry.pmtu_expires > now else None
            rows.append({
                "dst": str(entry.dst), "type": entry.type,
                "gateway": str(entry.route.gateway) if entry.route.gateway is not None else None,
                "dev": entry.dev, "src": str(entry.src) if entry.src is not None else None,
                "mtu": entry.pmtu, "expires": expires,
                "used": entry.use_count, "age": now - entry.last_use,
            })
        return rows
