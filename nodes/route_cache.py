"""The route cache: the pre-3.6 Linux cache of routing decisions, keyed by destination.

Before changing this file, read seed 001's "IP routing" section (the route
cache keyed by destination, LRU order) and RFC 1191 sections 5-6 (path-MTU
updates). Sans-I/O: times are `now` arguments.

`RouteCache` is a bounded LRU of `DstEntry` keyed by destination, emptied
whenever the FIB's generation changes. Learned path MTUs and accepted ICMP
redirects are kept apart from the entries (like 3.6+ nexthop exceptions), so
a routing change does not forget them; `flush()` forgets everything.

Redirects (RFC 1122 3.2.2.2, RFC 1812 5.2.7.2), both sides as Linux's route.c:
`redirect_allowed` is ip_rt_send_redirect's per-source back-off, and
`ip_do_redirect` is __ip_do_redirect's checks before the new gateway is used.
Not modelled: Linux installs a redirect only once the new gateway's neighbour
entry is valid (it probes it and waits for the next redirect); here at once.
"""
from __future__ import annotations

import math
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
    redirect_expires: float | None = None  # set while an ICMP redirect replaced the route's gateway

    @property
    def redirected(self) -> bool:
        return self.redirect_expires is not None

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
        # Accepted redirects by destination: (the route's gateway, the new one, expires); kept likewise.
        self._redirects: dict[int, tuple[int, IPv4Address, float]] = {}
        # ip_rt_send_redirect's inet_peer state by source: [rate_last, n_redirects].
        self._redirect_peers: OrderedDict[int, list[float]] = OrderedDict()
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
                if entry.redirect_expires is not None and now >= entry.redirect_expires:
                    entry.next_hop, entry.redirect_expires = entry.route.gateway, None
                    self._redirects.pop(entry.dst, None)
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
        redirect = self._redirects.get(dst)
        if redirect is not None:
            old_gateway, new_gateway, expires = redirect
            if now >= expires:
                del self._redirects[dst]
            elif route.gateway == old_gateway:  # the exception belongs to this route's next hop
                entry.next_hop, entry.redirect_expires = new_gateway, expires
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

    # ------------------------------------------------------------- redirects

    def redirect_allowed(self, source: int, now: float, *, number: int, load: float, silence: float) -> bool:
        """ip_rt_send_redirect's back-off toward one sender: at most `number` redirects, the n-th
        `load * 2**n` seconds after the previous, the count reset by `silence` seconds without one."""
        peer = self._redirect_peers.get(source)
        if peer is None:
            peer = self._redirect_peers[source] = [-math.inf, 0]
            if len(self._redirect_peers) > self.max_size:
                self._redirect_peers.popitem(last=False)
        if now > peer[0] + silence:
            peer[1] = 0
        if peer[1] >= number:
            peer[0] = now  # a host ignoring our redirects: keep quiet until it is silent for a while
            return False
        if peer[1] == 0 or now > peer[0] + load * (1 << int(peer[1])):
            peer[0] = now
            peer[1] += 1
            return True
        return False

    def ip_do_redirect(self, dst: int, old_gateway: int, new_gateway: int, dev: str | None, now: float, *,
                       shared_media: bool, secure: bool, expires: float) -> bool:
        """__ip_do_redirect: `old_gateway` said to reach `dst` through `new_gateway`; True if accepted.

        Accepted only from the gateway our route to `dst` uses now (RFC 1122 3.2.2.2), toward
        a unicast address; with shared_media off, only toward a gateway on old_gateway's subnet,
        and with secure_redirects also only toward one of our default gateways
        (ip_fib_check_default). The new gateway lasts `expires` seconds (ip_rt_gc_timeout).
        """
        entry = self.lookup(dst, now)
        if entry is None or entry.route.gateway is None or entry.next_hop != old_gateway:
            return False
        if (new_gateway == old_gateway or new_gateway >> 28 == 0xE or new_gateway == 0xFFFFFFFF
                or new_gateway >> 24 == 0):
            return False
        fib = self.fib
        if not shared_media:
            if not self.on_link_together(entry.dev, new_gateway, old_gateway):
                return False
            if secure and not any(route.prefix_length == 0 and route.gateway == new_gateway
                                  and route.dev == entry.dev for route in fib.main):
                return False
        elif fib.address_type(new_gateway) != "unicast":
            return False
        new_gateway = IPv4Address(new_gateway)
        until = now + expires
        self._redirects.pop(entry.dst, None)
        self._redirects[entry.dst] = (entry.route.gateway, new_gateway, until)
        if len(self._redirects) > self.max_size:
            del self._redirects[next(iter(self._redirects))]
        entry.next_hop, entry.redirect_expires = new_gateway, until
        return True

    def on_link_together(self, dev: str | None, first: int, second: int) -> bool:
        """inet_addr_onlink: both addresses inside the subnet of one address of `dev`."""
        if dev is None:
            return False
        for _, address, length in self.fib.addresses(dev):
            mask = (0xFFFFFFFF << (32 - length)) & 0xFFFFFFFF
            if not (first ^ address) & mask and not (second ^ address) & mask:
                return True
        return False

    def sender_on_link(self, source: int, dev: str | None) -> bool:
        """fib_validate_source's answer for redirects: `source` is reached directly through `dev`."""
        route = self.fib.lookup(source)
        return route is not None and route.type == "unicast" and route.gateway is None and route.dev == dev

    def flush(self) -> None:
        """`ip route flush cache`: drop every entry, every learned PMTU and every redirect."""
        self._invalidate()
        self._pmtu.clear()
        self._redirects.clear()

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
                "gateway": str(entry.next_hop) if entry.route.gateway is not None else None,
                "redirected": entry.redirected,
                "dev": entry.dev, "src": str(entry.src) if entry.src is not None else None,
                "mtu": entry.pmtu, "expires": expires,
                "used": entry.use_count, "age": now - entry.last_use,
            })
        return rows
