"""The forwarding database of a transparent learning bridge (sans-I/O, time passed in).

Before changing this file, read IEEE 802.1D-2004 clauses 7.7-7.9 (forwarding
process, learning process, the filtering database and its ageing) and the
Linux bridge's net/bridge/br_fdb.c (`br_fdb_update`, `has_expired`,
`br_fdb_cleanup`) whose behaviour this follows:

* learn: a frame's *source* MAC is bound to the port it arrived on; group
  (multicast/broadcast) and all-zero sources are never learned;
* MAC move: a station seen on another port rebinds the entry (counted);
* ageing: an entry not refreshed for `aging_time` seconds is invalid
  (`updated + aging_time <= now`, as Linux's `has_expired`); lookups ignore
  it at once, `age()` sweeps it out later;
* forwarding: group and unknown unicast destinations are flooded to every
  port but the ingress; a destination learned on the ingress port is
  filtered (never sent back where it came from);
* size limit: at `max_entries`, learning a new station evicts the oldest.

Ports are opaque to this module (the device's port objects, or strings in
tests): anything hashable with identity semantics.

Order, cheaply: entries live in a dict whose insertion order approximates
"least recently seen first". Refreshing an entry only reorders it when it
was last placed more than `REORDER_GRANULARITY` seconds ago, so the per-frame
cost of a known station is one dict lookup and one attribute store, while
eviction (pop the first key) and the ageing sweep (stop at the first entry
placed too recently to be expired) stay O(1) amortised. Eviction is thus
oldest-first to within that granularity.
"""
from __future__ import annotations

from typing import Any, Hashable

DEFAULT_AGING_TIME = 300.0  # seconds, 802.1D's recommended default and Linux's
DEFAULT_MAX_ENTRIES = 8192
REORDER_GRANULARITY = 1.0

_ZERO_MAC = b"\x00" * 6


class FdbEntry:
    """One learned station: the port behind it, when it was last seen, when it was (re)placed in order."""

    __slots__ = ("port", "updated", "placed")

    def __init__(self, port: Hashable, now: float) -> None:
        self.port = port
        self.updated = now
        self.placed = now


class _Filtered:
    """Sentinel returned by `resolve` for a frame that must not be forwarded at all."""

    __slots__ = ()

    def __repr__(self) -> str:
        return "FILTERED"


FILTERED: Any = _Filtered()
FLOOD = None  # `resolve` returns None: send to every port but the ingress


def format_mac(mac: bytes) -> str:
    return mac.hex(":")


class ForwardingDatabase:
    """MAC address -> port table with learning, ageing, moves, a size limit and counters."""

    def __init__(self, aging_time: float = DEFAULT_AGING_TIME, max_entries: int = DEFAULT_MAX_ENTRIES) -> None:
        if aging_time < 0:
            raise ValueError(f"aging_time must be >= 0 seconds, got {aging_time!r}")
        if max_entries < 1:
            raise ValueError(f"max_entries must be >= 1, got {max_entries!r}")
        self.aging_time = float(aging_time)
        self.max_entries = int(max_entries)
        self.table: dict[bytes, FdbEntry] = {}
        self.counters = {"learned": 0, "aged": 0, "evicted": 0, "moves": 0, "floods": 0, "filtered": 0,
                         "forwarded": 0, "group_sources": 0}

    def __len__(self) -> int:
        return len(self.table)

    def learn(self, mac: bytes, port: Hashable, now: float) -> None:
        """Record that `mac` was seen as a source on `port` at `now` (802.1D 7.8)."""
        entry = self.table.get(mac)
        if entry is not None and entry.port is port:
            entry.updated = now
            if now - entry.placed > REORDER_GRANULARITY:
                self._reorder(mac, entry, now)
            return
        self._learn_slow(mac, port, now, entry)

    def _reorder(self, mac: bytes, entry: FdbEntry, now: float) -> None:
        del self.table[mac]
        self.table[mac] = entry
        entry.placed = now

    def _learn_slow(self, mac: bytes, port: Hashable, now: float, entry: FdbEntry | None) -> None:
        if mac[0] & 1 or mac == _ZERO_MAC:
            self.counters["group_sources"] += 1
            return
        if entry is not None:
            if now - entry.updated >= self.aging_time:
                # Expired but not yet swept: this is a fresh learn, not a move.
                del self.table[mac]
                self.counters["aged"] += 1
            else:
                entry.port = port
                entry.updated = now
                self._reorder(mac, entry, now)
                self.counters["moves"] += 1
                return
        table = self.table
        while len(table) >= self.max_entries:
            oldest = next(iter(table))
            del table[oldest]
            self.counters["evicted"] += 1
        table[mac] = FdbEntry(port, now)
        self.counters["learned"] += 1

    def lookup(self, mac: bytes, now: float) -> Hashable | None:
        """The port `mac` was learned on, or None (unknown, aged out, or a group address)."""
        entry = self.table.get(mac)
        if entry is None or now - entry.updated >= self.aging_time:
            return None
        return entry.port

    def resolve(self, src: bytes, dst: bytes, ingress: Hashable, now: float) -> Any:
        """Learn `src` on `ingress`, then decide: an egress port, `FLOOD` (None) or `FILTERED`."""
        self.learn(src, ingress, now)
        if dst[0] & 1:
            self.counters["floods"] += 1
            return FLOOD
        entry = self.table.get(dst)
        if entry is None or now - entry.updated >= self.aging_time:
            self.counters["floods"] += 1
            return FLOOD
        if entry.port is ingress:
            self.counters["filtered"] += 1
            return FILTERED
        self.counters["forwarded"] += 1
        return entry.port

    def age(self, now: float) -> int:
        """Remove expired entries (Linux `br_fdb_cleanup`); returns how many went."""
        table = self.table
        aging_time = self.aging_time
        expired = []
        for mac, entry in table.items():
            # Entries are ordered by `placed` and `updated >= placed`: once
            # placed too recently to have expired, so has everyone after.
            if now - entry.placed < aging_time:
                break
            if now - entry.updated >= aging_time:
                expired.append(mac)
        for mac in expired:
            del table[mac]
        self.counters["aged"] += len(expired)
        return len(expired)

    def flush_port(self, port: Hashable) -> int:
        """Forget every station behind `port` (port removed or down, like `br_fdb_delete_by_port`)."""
        gone = [mac for mac, entry in self.table.items() if entry.port is port]
        for mac in gone:
            del self.table[mac]
        return len(gone)

    def flush(self) -> int:
        count = len(self.table)
        self.table.clear()
        return count

    def show(self, now: float) -> list[dict[str, Any]]:
        """The live entries like `bridge fdb show`: mac, port, seconds since last seen, state."""
        rows = []
        for mac, entry in self.table.items():
            age = now - entry.updated
            if age >= self.aging_time:
                continue
            port = entry.port if isinstance(entry.port, str) else getattr(entry.port, "name", str(entry.port))
            rows.append({"mac": format_mac(mac), "port": port, "age": round(age, 3), "state": "dynamic"})
        rows.sort(key=lambda row: (row["port"], row["mac"]))
        return rows
