"""The ARP neighbour table: IPv4 next hop -> MAC, with Linux NUD states.

Before changing this file, read RFC 826 ("Packet Reception"), RFC 1122
section 2.3.2 (ARP cache validation, flooding limits, queueing), seed 001's
arp_table section, and Linux `net/core/neighbour.c` (`neigh_timer_handler`,
`__neigh_event_send`, `neigh_update`, `neigh_periodic_work`) with
`net/ipv4/arp.c` (`arp_process`, `arp_constructor`).

Four modules, as Linux splits neighbour.h / neighbour.c / arp.c:
`nodes/neigh_entry.py` (states, entry, knobs, counters), `nodes/neigh_nud.py`
(the NUD state machine: neigh_update, timers), this one (the table: lookup,
queueing, creation, eviction, administration) and `nodes/arp.py` (effects,
addresses that need no ARP, the rules for received ARP). Every name is
importable from here.

Sans-I/O: no clock, no sockets. Every call that involves time takes `now`
(float seconds from the kernel's clock); calls that make things happen return
a list of *effects* for the kernel to carry out. The API:

* `lookup(ip, dev, now) -> MacAddress | None` -- the per-packet fast path.
  A MAC means "send now" (REACHABLE, DELAY, PROBE, PERMANENT, NOARP, and
  STALE, which this call moves to DELAY). None means no usable entry: call
  `enqueue`.
* `enqueue(ip, dev, packet, now) -> effects` -- park a packet (an opaque
  object) until `ip` resolves, starting resolution when needed.
* `arp_input(arp, dev, now, pkt_type) -> effects` -- a parsed `ArpPacket`
  received on `dev` (rules in `nodes/arp.py`).
* `confirm(ip, now, dev=None)` -- upper-layer proof of reachability (a TCP ACK
  that advanced snd_una), Linux `neigh_confirm`. Takes effect at the next timer.
* `next_timer() -> float | None` and `tick(now) -> effects` -- the kernel
  calls `tick` once `now` reaches the deadline.
* `add(ip, dev, mac, now, state)`, `delete(ip, dev)`, `flush(dev)`
  -- `ip neigh add/replace/del/flush`; `table(now)` -- `ip -s neigh show`.
* `ifdown(dev)` -- the device went down (neigh_ifdown): all its entries go,
  permanent ones too, and what waited is dropped silently.
* `local_addresses` -- a set of our IPv4 addresses (any interface, as Linux
  answers with arp_ignore=0), kept in sync by the kernel.
* `broadcast_addresses` -- a set of the subnet broadcast addresses of our
  interfaces (Linux's RTN_BROADCAST routes, which `inet_addr_type` sees for
  the whole namespace), kept in sync by the kernel. 255.255.255.255 and
  224.0.0.0/4 are known without it.
* `params` -- `NeighParams`; `NeighParams.from_sysctl(sysctl)` builds them from
  a node's `net.ipv4.neigh.default.*` knobs, whose table owns every default.

Effects: `SendArpRequest` (broadcast while INCOMPLETE, unicast while PROBE),
`SendArpReply`, `TransmitQueued` (packets flushed in arrival order once the MAC
is known) and `ResolutionFailed` (packets to turn into ICMP host unreachable
or EHOSTUNREACH). `gratuitous_arp` builds the announcement for an interface
coming up.

States, transitions and timers: `nodes/neigh_nud.py`.

ARP input (`nodes/arp.py`) follows `arp_process` with default sysctls: a
request for one of our addresses creates or overrides the sender's entry
(STALE) and is answered; a reply unicast to us means REACHABLE; any other ARP
(request for someone else, broadcast reply, gratuitous) only updates an entry
we already have, to STALE. An update that would change the MAC of a valid
entry is ignored within `locktime` of the entry's last change, unless it is
a gratuitous ARP; a STALE update carrying the MAC we have changes nothing,
not even the time the locktime window counts from (`neigh_update`). Senders
that are broadcast, multicast, loopback or ours are refused; 0.0.0.0 (an
RFC 5227 probe) is answered but not learnt. When the table cannot hold a new
asker, its request goes unanswered, as in Linux. Not modelled: proxy ARP,
arp_accept and the other per-device conf knobs, rp_filter (Linux's default 0
lets an off-link sender be learnt), per-device parameters, gc_thresh1/2: at
the hard limit gc_thresh3 the least recently used entry is evicted (Linux's
forced gc only takes entries not updated for 5 s).
"""
from __future__ import annotations

import errno
import os
import random
from typing import Any, Iterable

from .arp import (
    Effect,
    ResolutionFailed,
    SendArpReply,
    SendArpRequest,
    TransmitQueued,
    arp_process,
    gratuitous_arp,
    noarp_mac,
)
from .neigh_entry import (
    ADMIN_ONLY,
    DELAY,
    FAILED,
    INCOMPLETE,
    NOARP,
    PERMANENT,
    PROBE,
    REACHABLE,
    SEND_AS_IS,
    STALE,
    NeighParams,
    NeighStats,
    Neighbour,
    NudState,
)
from .neigh_nud import REACHABLE_TIME_REDRAW_INTERVAL, NudStateMachine
from .skbuff import PACKET_HOST
from .sysctl import ETH_FRAME_TRUESIZE
from .wire.addresses import IPv4Address, MacAddress
from .wire.arp import ArpPacket

__all__ = [
    "DELAY", "FAILED", "INCOMPLETE", "NOARP", "PERMANENT", "PROBE", "REACHABLE", "STALE",
    "REACHABLE_TIME_REDRAW_INTERVAL", "Effect", "NeighParams", "NeighStats", "NeighTable", "Neighbour",
    "NudState", "ResolutionFailed", "SendArpReply", "SendArpRequest", "TransmitQueued", "gratuitous_arp",
]


def _truesize(packet: Any) -> int:
    return getattr(packet, "truesize", ETH_FRAME_TRUESIZE)


class NeighTable(NudStateMachine):
    """One node's ARP table (Linux arp_tbl); see the module docstring for the API."""

    def __init__(self, params: NeighParams | None = None, *, local_addresses: Iterable[int] = (),
                 broadcast_addresses: Iterable[int] = (), rng: random.Random | None = None) -> None:
        """`rng` randomises reachable_time to 0.5-1.5x base as Linux does; without it the base is used exactly."""
        self.params = params if params is not None else NeighParams()
        self.local_addresses: set[int] = set(local_addresses)
        self.broadcast_addresses: set[int] = set(broadcast_addresses)
        self.stats = NeighStats()
        self._entries: dict[tuple[int, str], Neighbour] = {}
        self._devs: set[str] = set()
        self._init_timers(rng)

    # -- output path -----------------------------------------------------------

    def lookup(self, ip: int, dev: str, now: float) -> MacAddress | None:
        """The MAC to send to `ip` via `dev` now, or None if the packet must wait (`enqueue`)."""
        stats = self.stats
        stats.lookups += 1
        entry = self._entries.get((ip, dev))
        if entry is None:
            mac = noarp_mac(ip, self.broadcast_addresses)
            if mac is not None:
                self._create_noarp(ip, dev, mac, now)
            return mac
        stats.hits += 1
        entry.last_used = now
        state = entry.state
        if state in SEND_AS_IS:
            return entry.mac
        if state is STALE:
            self._start_delay(entry, now)
            return entry.mac
        return None

    def enqueue(self, ip: int, dev: str, packet: Any, now: float) -> list[Effect]:
        """Hold `packet` until `ip` resolves on `dev`, starting resolution if none is running."""
        effects: list[Effect] = []
        entry = self._entries.get((ip, dev))
        if entry is None:
            mac = noarp_mac(ip, self.broadcast_addresses)
            if mac is not None:
                self._create_noarp(ip, dev, mac, now)
                effects.append(TransmitQueued(dev, mac, (packet,)))
                return effects
            entry = self._create(IPv4Address(ip), dev, now, effects)
            if entry is None:
                effects.append(ResolutionFailed(dev, IPv4Address(ip), (packet,)))
                return effects
            start = True
        else:
            # A FAILED entry gets another chance (__neigh_event_send).
            start = entry.state is FAILED
        entry.last_used = now
        if start:
            entry.mac = None
            entry.probes = 0
            self._set_state(entry, INCOMPLETE, now)
            self._queue(entry, packet)
            self._solicit(entry, now, effects)
        elif entry.state is INCOMPLETE:
            self._queue(entry, packet)  # a request is already on its way
        else:
            # Resolved meanwhile (the caller's lookup was stale): send at once.
            if entry.state is STALE:
                self._start_delay(entry, now)
            effects.append(TransmitQueued(dev, entry.mac, (packet,)))
        return effects

    def confirm(self, ip: int, now: float, dev: str | None = None) -> None:
        """Record that `ip` proved reachable (e.g. it ACKed new data); on every device if `dev` is None."""
        for device in (dev,) if dev is not None else self._devs:
            entry = self._entries.get((ip, device))
            if entry is not None and entry.state not in ADMIN_ONLY:
                entry.last_confirmed = now

    # -- input path --------------------------------------------------------------

    def arp_input(self, arp: ArpPacket, dev: str, now: float, pkt_type: int = PACKET_HOST) -> list[Effect]:
        """Learn from an ARP packet received on `dev` and answer it if it asks for one of our addresses."""
        return arp_process(self, arp, dev, now, pkt_type)

    def event_ns(self, ip: int, dev: str, mac: MacAddress, now: float, effects: list[Effect]) -> Neighbour | None:
        """neigh_event_ns: `ip` asked for us from `mac`: create its entry if needed and set the MAC (STALE).

        None when the table is full (nothing evictable)."""
        entry = self._entries.get((ip, dev))
        if entry is None:
            entry = self._create(IPv4Address(ip), dev, now, effects)
            if entry is None:
                return None
        self.neigh_update(entry, mac, STALE, now, effects, override=True)
        return entry

    # -- entry life cycle ------------------------------------------------------------

    def _queue(self, entry: Neighbour, packet: Any) -> None:
        """__neigh_event_send: append to the unres queue, the oldest packets going while the queue's
        truesize would pass unres_qlen_bytes (RFC 1122 2.3.2.2: SHOULD keep the latest).

        The newest packet always waits, even alone over the limit, as in Linux. A packet without
        `truesize` (an opaque test object) costs one full frame, so unres_qlen counts it."""
        queue = entry.queue
        size = _truesize(packet)
        limit = self.params.unres_qlen_bytes
        while queue and entry.queue_bytes + size > limit:
            entry.queue_bytes -= _truesize(queue.popleft())
            self.stats.unresolved_discards += 1
        queue.append(packet)
        entry.queue_bytes += size

    def _create(self, ip: IPv4Address, dev: str, now: float, effects: list[Effect],
                evict_waiting: bool = True) -> Neighbour | None:
        """A new INCOMPLETE entry without timer, evicting one first at gc_thresh3; None if the table is full."""
        if len(self._entries) >= self.params.gc_thresh3 and not self._evict(effects, evict_waiting):
            self.stats.table_fulls += 1
            return None
        # Linux dates `confirmed` far in the past so that a new entry never counts as confirmed.
        never_confirmed = now - 2 * self.params.base_reachable_time
        entry = Neighbour(ip, dev, INCOMPLETE, None, now, never_confirmed, now)
        self._entries[(ip, dev)] = entry
        self._devs.add(dev)
        self.stats.allocs += 1
        self.stats.entries += 1
        return entry

    def _create_noarp(self, ip: int, dev: str, mac: MacAddress, now: float) -> None:
        """arp_constructor for a broadcast/multicast address: a NOARP entry holding its computed MAC.

        Only an idle entry is evicted for it (a lookup returns no effects); when none is, the MAC
        is still used, just not remembered."""
        entry = self._create(IPv4Address(ip), dev, now, [], evict_waiting=False)
        if entry is not None:
            entry.state = NOARP
            entry.mac = mac
            entry.last_confirmed = now
            self._arm_gc(entry)

    def _evict(self, effects: list[Effect], evict_waiting: bool = True) -> bool:
        """Forced gc: remove the least recently used non-permanent entry, sparing those with queued packets."""
        self.stats.forced_gc_runs += 1
        idle: Neighbour | None = None
        waiting: Neighbour | None = None
        for entry in self._entries.values():
            if entry.state is PERMANENT:
                continue
            if entry.queue:
                if waiting is None or entry.last_used < waiting.last_used:
                    waiting = entry
            elif idle is None or entry.last_used < idle.last_used:
                idle = entry
        victim = idle if idle is not None else waiting if evict_waiting else None
        if victim is None:
            return False
        self._drop_entry(victim, effects)
        return True

    def _drop_entry(self, entry: Neighbour, effects: list[Effect]) -> None:
        if entry.queue:
            effects.append(ResolutionFailed(entry.dev, entry.ip, tuple(entry.queue)))
            entry.queue.clear()
            entry.queue_bytes = 0
        self._remove(entry)

    def _remove(self, entry: Neighbour) -> None:
        del self._entries[(entry.ip, entry.dev)]
        self._disarm(entry)
        self.stats.destroys += 1
        self.stats.entries -= 1

    # -- administration (ip neigh) ------------------------------------------------------

    def add(self, ip: int | str, dev: str, mac: MacAddress | str | bytes, now: float,
            state: NudState = PERMANENT) -> list[Effect]:
        """`ip neigh replace IP lladdr MAC dev DEV nud STATE`: create or overwrite an entry."""
        if state not in (PERMANENT, REACHABLE, STALE):
            raise ValueError(f"cannot add a neighbour in state {state.name}")
        ip, mac = IPv4Address(ip), MacAddress(mac)
        effects: list[Effect] = []
        entry = self._entries.get((ip, dev))
        if entry is None:
            entry = self._create(ip, dev, now, effects)
            if entry is None:
                raise OSError(errno.ENOBUFS, f"{os.strerror(errno.ENOBUFS)}: neighbour table full")
        entry.mac = mac
        entry.probes = 0
        if state is not STALE:
            entry.last_confirmed = now
        self._set_state(entry, state, now)
        if state is PERMANENT:
            self._disarm(entry)
        elif state is REACHABLE:
            self._arm(entry, now + self._reachable_time_at(now))
        else:
            self._arm_gc(entry)
        self._flush_queue(entry, now, effects)
        return effects

    def delete(self, ip: int | str, dev: str) -> list[Effect]:
        """`ip neigh del IP dev DEV`; packets still waiting are returned as failed."""
        entry = self._entries.get((IPv4Address(ip), dev))
        if entry is None:
            raise FileNotFoundError(errno.ENOENT, f"no neighbour {IPv4Address(ip)} on {dev}")
        effects: list[Effect] = []
        self._drop_entry(entry, effects)
        return effects

    def flush(self, dev: str | None = None) -> list[Effect]:
        """`ip neigh flush [dev DEV]`: remove every non-permanent entry (of `dev`)."""
        effects: list[Effect] = []
        for entry in list(self._entries.values()):
            if entry.state is not PERMANENT and (dev is None or entry.dev == dev):
                self._drop_entry(entry, effects)
        return effects

    def ifdown(self, dev: str) -> None:
        """neigh_ifdown: `dev` went down: every entry of it goes, permanent ones too, and the
        packets that waited are dropped without a word (neigh_flush_dev purges the arp_queue;
        no arp_error_report, so no host unreachable)."""
        for entry in list(self._entries.values()):
            if entry.dev == dev:
                entry.queue.clear()
                entry.queue_bytes = 0
                self._remove(entry)

    # -- inspection ------------------------------------------------------------------------

    def get(self, ip: int, dev: str) -> Neighbour | None:
        """The entry itself, for the kernel and tests; treat it as read-only."""
        return self._entries.get((ip, dev))

    def __len__(self) -> int:
        return len(self._entries)

    def table(self, now: float) -> list[dict[str, Any]]:
        """Rows like `ip -s neigh show`: ages in seconds since last used/confirmed/updated."""
        rows = []
        for entry in sorted(self._entries.values(), key=lambda e: (e.dev, e.ip)):
            rows.append({
                "ip": str(entry.ip),
                "dev": entry.dev,
                "lladdr": str(entry.mac) if entry.mac is not None else None,
                "state": entry.state.name,
                "used": now - entry.last_used,
                "confirmed": now - entry.last_confirmed,
                "updated": now - entry.last_updated,
                "probes": entry.probes,
                "queue_len": len(entry.queue),
            })
        return rows
