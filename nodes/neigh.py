"""The ARP neighbour table: IPv4 next hop -> MAC, with Linux NUD states.

Before changing this file, read RFC 826 ("Packet Reception"), RFC 1122
section 2.3.2 (ARP cache validation, flooding limits, queueing), seed 001's
arp_table section, and Linux `net/core/neighbour.c` (`neigh_timer_handler`,
`__neigh_event_send`, `neigh_update`, `neigh_periodic_work`) with
`net/ipv4/arp.c` (`arp_process`, `arp_constructor`).

Three modules, as Linux splits neighbour.h / neighbour.c / arp.c:
`nodes/neigh_entry.py` (states, entry, knobs, counters), this one (the table:
lookup, queueing, timers, gc, administration) and `nodes/arp.py` (effects,
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

States and transitions (Linux NUD; "used" = a `lookup` hit):

    (none) --enqueue--> INCOMPLETE: broadcast request now and every retrans_time
    (none) --lookup of a broadcast/multicast address--> NOARP with the
           broadcast MAC or 01:00:5e:xx:xx:xx (arp_constructor); ARP never changes it
    INCOMPLETE --reply/any ARP from it--> REACHABLE or STALE, queue flushed
    INCOMPLETE --mcast_solicit requests unanswered--> FAILED, queue returned
    REACHABLE --reachable_time after last confirmation, used within
                delay_first_probe_time--> DELAY, else --> STALE
    STALE --used--> DELAY --delay_first_probe_time, confirmed meanwhile--> REACHABLE
    DELAY --not confirmed--> PROBE: unicast request now and every retrans_time
    PROBE --reply--> REACHABLE; --ucast_solicit unanswered--> FAILED
    FAILED --enqueue--> INCOMPLETE (resolution starts again)
    STALE/FAILED/NOARP unused for gc_stale_time --> removed
    PERMANENT: set by `add`, never aged, evicted or changed by ARP input.

ARP input (`nodes/arp.py`) follows `arp_process` with default sysctls: a
request for one of our addresses creates or overrides the sender's entry
(STALE) and is answered; a reply unicast to us means REACHABLE; any other ARP
(request for someone else, broadcast reply, gratuitous) only updates an entry
we already have, to STALE. An update that would change the MAC of a valid
entry is ignored within `locktime` of the entry's last change, unless it is
a gratuitous ARP; an update carrying the MAC we have changes nothing but
`confirmed` (`neigh_update`). Not modelled: proxy ARP, arp_accept and the
other per-device conf knobs, per-device parameters, gc_thresh1/2 (only the
hard limit gc_thresh3, at which the least recently used entry is evicted).
"""
from __future__ import annotations

import errno
import heapq
import itertools
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
    CONNECTED,
    DELAY,
    FAILED,
    INCOMPLETE,
    NOARP,
    PERMANENT,
    PROBE,
    REACHABLE,
    SEND_AS_IS,
    STALE,
    VALID,
    NeighParams,
    NeighStats,
    Neighbour,
    NudState,
)
from .skbuff import PACKET_HOST
from .wire.addresses import BROADCAST_MAC, IPv4Address, MacAddress
from .wire.arp import ArpPacket

__all__ = [
    "DELAY", "FAILED", "INCOMPLETE", "NOARP", "PERMANENT", "PROBE", "REACHABLE", "STALE",
    "REACHABLE_TIME_REDRAW_INTERVAL", "Effect", "NeighParams", "NeighStats", "NeighTable", "Neighbour",
    "NudState", "ResolutionFailed", "SendArpReply", "SendArpRequest", "TransmitQueued", "gratuitous_arp",
]

# How often Linux redraws the randomised reachable_time (neigh_periodic_work).
REACHABLE_TIME_REDRAW_INTERVAL = 300.0

# The timer heap is rebuilt once it holds more than this many items per entry (plus slack):
# superseded items would otherwise pile up until their deadline under a flood of updates.
_HEAP_SLACK = 64


class NeighTable:
    """One node's ARP table (Linux arp_tbl); see the module docstring for the API."""

    def __init__(self, params: NeighParams | None = None, *, local_addresses: Iterable[int] = (),
                 broadcast_addresses: Iterable[int] = (), rng: random.Random | None = None) -> None:
        """`rng` randomises reachable_time to 0.5-1.5x base as Linux does; without it the base is used exactly."""
        self.params = params if params is not None else NeighParams()
        self.local_addresses: set[int] = set(local_addresses)
        self.broadcast_addresses: set[int] = set(broadcast_addresses)
        self.stats = NeighStats()
        self._rng = rng
        self._entries: dict[tuple[int, str], Neighbour] = {}
        self._devs: set[str] = set()
        self._timers: list[tuple[float, int, Neighbour]] = []
        self._tokens = itertools.count(1)
        self._reachable_time = self.params.base_reachable_time
        self._reachable_time_drawn_at: float | None = None

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

    def _start_delay(self, entry: Neighbour, now: float) -> None:
        """A STALE entry is in use: keep sending to its MAC but verify it shortly (RFC 1122 2.3.2.1)."""
        self._set_state(entry, DELAY, now)
        self._arm(entry, now + self.params.delay_first_probe_time)

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

    def neigh_update(self, entry: Neighbour, mac: MacAddress, state: NudState, now: float,
                     effects: list[Effect], *, override: bool) -> None:
        """neigh_update for ARP input (no NEIGH_UPDATE_F_ADMIN): new MAC and state, flushing what waited.

        Without `override` a valid entry keeps a different MAC it has (the locktime rule)."""
        old = entry.state
        if old in ADMIN_ONLY:
            return  # PERMANENT and NOARP: only the administrator changes those
        if state in CONNECTED:
            entry.last_confirmed = now  # even when the update is then refused, as Linux does
        if not isinstance(mac, MacAddress):
            mac = MacAddress.from_wire(mac)
        # An entry that was not valid takes the MAC as new even if the bytes match (Linux compares
        # only against a valid entry's address).
        changed = old not in VALID or mac != entry.mac
        if old in VALID:
            if changed and not override:
                self.stats.locktime_ignored += 1
                return
            if not changed and state is STALE:
                state = old  # same address, weaker news: keep the state we have
        if state is old and not changed:
            return  # nothing changes, so `updated` (the locktime window) does not move either
        entry.last_updated = now
        if changed:
            entry.mac = mac
            if state not in CONNECTED:
                # A new address is not confirmed (neigh_update dates `confirmed` 2 * base back).
                entry.last_confirmed = now - 2 * self.params.base_reachable_time
        if state is old:
            return
        entry.state = state
        entry.probes = 0
        if state is REACHABLE:
            self._arm(entry, now + self._reachable_time_at(now))
        else:
            self._arm_gc(entry)
        self._flush_queue(entry, now, effects)

    # -- timers --------------------------------------------------------------------

    def next_timer(self) -> float | None:
        """The earliest deadline at which `tick` has work, or None."""
        timers = self._timers
        while timers and timers[0][2].timer_token != timers[0][1]:
            heapq.heappop(timers)  # superseded by a later re-arm or by removal
        return timers[0][0] if timers else None

    def tick(self, now: float) -> list[Effect]:
        """Run every timer due at `now` (retries, ageing, garbage collection)."""
        effects: list[Effect] = []
        timers = self._timers
        while timers and timers[0][0] <= now:
            _, token, entry = heapq.heappop(timers)
            if entry.timer_token != token:
                continue
            entry.timer_token = 0
            entry.timer = None
            self._timer_expired(entry, now, effects)
        return effects

    def _timer_expired(self, entry: Neighbour, now: float, effects: list[Effect]) -> None:
        """neigh_timer_handler: one entry's timer fired at `now`."""
        params = self.params
        state = entry.state
        if state is REACHABLE:
            confirmed_until = entry.last_confirmed + self._reachable_time_at(now)
            if now < confirmed_until:
                self._arm(entry, confirmed_until)  # confirm() kept it fresh
            elif now < entry.last_used + params.delay_first_probe_time:
                self._set_state(entry, DELAY, now)
                self._arm(entry, now + params.delay_first_probe_time)
            else:
                self._set_state(entry, STALE, now)
                self._arm_gc(entry)
        elif state is DELAY:
            if now <= entry.last_confirmed + params.delay_first_probe_time:
                self._set_state(entry, REACHABLE, now)
                self._arm(entry, entry.last_confirmed + self._reachable_time_at(now))
            else:
                self._set_state(entry, PROBE, now)
                entry.probes = 0
                self._solicit(entry, now, effects)
        elif state is PROBE:
            if entry.last_confirmed >= entry.last_updated:
                # confirm() arrived while probing: as good as a reply.
                self._set_state(entry, REACHABLE, now)
                self._arm(entry, entry.last_confirmed + self._reachable_time_at(now))
            else:
                self._solicit(entry, now, effects)
        elif state is INCOMPLETE:
            self._solicit(entry, now, effects)
        elif state is STALE or state is FAILED or state is NOARP:
            # neigh_periodic_work: unreferenced and unused for gc_stale_time.
            if now >= entry.last_used + params.gc_stale_time:
                self._remove(entry)
            else:
                self._arm_gc(entry)

    def _solicit(self, entry: Neighbour, now: float, effects: list[Effect]) -> None:
        """Send the next request of an INCOMPLETE/PROBE round, or give up when the round is spent."""
        params = self.params
        incomplete = entry.state is INCOMPLETE
        if entry.probes >= (params.mcast_solicit if incomplete else params.ucast_solicit):
            self._fail(entry, now, effects)
            return
        entry.probes += 1
        if incomplete:
            self.stats.mcast_probes_sent += 1
            effects.append(SendArpRequest(entry.dev, entry.ip, BROADCAST_MAC))
        else:
            self.stats.ucast_probes_sent += 1
            effects.append(SendArpRequest(entry.dev, entry.ip, entry.mac))
        self._arm(entry, now + params.retrans_time)

    def _fail(self, entry: Neighbour, now: float, effects: list[Effect]) -> None:
        self.stats.res_failed += 1
        self._set_state(entry, FAILED, now)
        entry.mac = None
        packets = tuple(entry.queue)
        entry.queue.clear()
        effects.append(ResolutionFailed(entry.dev, entry.ip, packets))
        self._arm_gc(entry)

    def _reachable_time_at(self, now: float) -> float:
        """The table's current reachable_time, redrawn every 300 s when randomised (neigh_rand_reach_time)."""
        if self._rng is not None and (self._reachable_time_drawn_at is None
                                      or now >= self._reachable_time_drawn_at + REACHABLE_TIME_REDRAW_INTERVAL):
            self._reachable_time = self.params.base_reachable_time * self._rng.uniform(0.5, 1.5)
            self._reachable_time_drawn_at = now
        return self._reachable_time

    def _arm(self, entry: Neighbour, deadline: float) -> None:
        token = next(self._tokens)
        entry.timer = deadline
        entry.timer_token = token
        timers = self._timers
        heapq.heappush(timers, (deadline, token, entry))
        if len(timers) > 2 * len(self._entries) + _HEAP_SLACK:
            # At most one item per entry is live: drop the superseded ones (amortised O(1) per arm).
            timers[:] = [item for item in timers if item[2].timer_token == item[1]]
            heapq.heapify(timers)

    def _arm_gc(self, entry: Neighbour) -> None:
        self._arm(entry, entry.last_used + self.params.gc_stale_time)

    @staticmethod
    def _disarm(entry: Neighbour) -> None:
        entry.timer = None
        entry.timer_token = 0  # the heap item is now stale and skipped

    # -- entry life cycle ------------------------------------------------------------

    def _set_state(self, entry: Neighbour, state: NudState, now: float) -> None:
        entry.state = state
        entry.last_updated = now

    def _queue(self, entry: Neighbour, packet: Any) -> None:
        """Append to the unres queue; when full the oldest packet goes (RFC 1122 2.3.2.2: SHOULD keep the latest)."""
        queue = entry.queue
        if len(queue) >= self.params.unres_qlen:
            self.stats.unresolved_discards += 1
            if not queue:
                return  # unres_qlen 0: nothing may wait
            queue.popleft()
        queue.append(packet)

    def _flush_queue(self, entry: Neighbour, now: float, effects: list[Effect]) -> None:
        if entry.queue:
            effects.append(TransmitQueued(entry.dev, entry.mac, tuple(entry.queue)))
            entry.queue.clear()
            if entry.state is STALE:
                # Linux sends the queue through neigh_resolve_output, which uses the entry.
                self._start_delay(entry, now)

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
