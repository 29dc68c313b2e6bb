"""The ARP neighbour table: IPv4 next hop -> MAC, with Linux NUD states.

Before changing this file, read RFC 826 ("Packet Reception"), RFC 1122
section 2.3.2 (ARP cache validation, flooding limits, queueing), seed 001's
arp_table section, and Linux `net/core/neighbour.c` (`neigh_timer_handler`,
`__neigh_event_send`, `neigh_update`, `neigh_periodic_work`) with
`net/ipv4/arp.c` (`arp_process`).

Sans-I/O: no clock, no sockets. Every call that involves time takes `now`
(float seconds from the kernel's clock); calls that make things happen return
a list of *effects* for the kernel to carry out. The API:

* `lookup(ip, dev, now) -> MacAddress | None` -- the per-packet fast path.
  A MAC means "send now" (REACHABLE, DELAY, PROBE, PERMANENT, and STALE, which
  this call moves to DELAY). None means no usable entry: call `enqueue`.
* `enqueue(ip, dev, packet, now) -> effects` -- park a packet (an opaque
  object) until `ip` resolves, starting resolution when needed.
* `arp_input(arp, dev, now, pkt_type) -> effects` -- a parsed `ArpPacket`
  received on `dev`.
* `confirm(ip, now, dev=None)` -- upper-layer proof of reachability (a TCP ACK
  that advanced snd_una), Linux `neigh_confirm`. Takes effect at the next timer.
* `next_timer() -> float | None` and `tick(now) -> effects` -- the kernel
  calls `tick` once `now` reaches the deadline.
* `add(ip, dev, mac, now, state)`, `delete(ip, dev)`, `flush(dev)`
  -- `ip neigh add/replace/del/flush`; `table(now)` -- `ip -s neigh show`.
* `local_addresses` -- a set of our IPv4 addresses (any interface, as Linux
  answers with arp_ignore=0), kept in sync by the kernel.

Effects: `SendArpRequest` (broadcast while INCOMPLETE, unicast while PROBE),
`SendArpReply`, `TransmitQueued` (packets flushed in arrival order once the MAC
is known) and `ResolutionFailed` (packets to turn into ICMP host unreachable
or EHOSTUNREACH). `gratuitous_arp` builds the announcement for an interface
coming up.

States and transitions (Linux NUD; "used" = a `lookup` hit):

    (none) --enqueue--> INCOMPLETE: broadcast request now and every retrans_time
    INCOMPLETE --reply/any ARP from it--> REACHABLE or STALE, queue flushed
    INCOMPLETE --mcast_solicit requests unanswered--> FAILED, queue returned
    REACHABLE --reachable_time after last confirmation, used within
                delay_first_probe_time--> DELAY, else --> STALE
    STALE --used--> DELAY --delay_first_probe_time, confirmed meanwhile--> REACHABLE
    DELAY --not confirmed--> PROBE: unicast request now and every retrans_time
    PROBE --reply--> REACHABLE; --ucast_solicit unanswered--> FAILED
    FAILED --enqueue--> INCOMPLETE (resolution starts again)
    STALE/FAILED unused for gc_stale_time --> removed
    PERMANENT: set by `add`, never aged, evicted or changed by ARP input.

ARP input follows `arp_process`: a reply unicast to us means REACHABLE; any
other ARP from a known sender (request, broadcast reply, gratuitous) means
STALE with the new MAC (a STALE update carrying the MAC we already have leaves
the state alone, as `neigh_update` does). A request for one of our addresses
creates the sender's entry (STALE) and is answered; other requests create
nothing. Not modelled: proxy ARP, `locktime`, `arp_accept`, per-device
parameters, gc_thresh1/2 (only the hard limit gc_thresh3).
"""
from __future__ import annotations

import errno
import heapq
import itertools
import os
import random
from collections import deque
from dataclasses import asdict, dataclass, field
from enum import IntEnum
from typing import Any, Iterable

from .skbuff import PACKET_HOST, PACKET_OTHERHOST
from .wire.addresses import BROADCAST_MAC, IPv4Address, MacAddress
from .wire.arp import ARP_REPLY, ARP_REQUEST, ArpPacket

# How often Linux redraws the randomised reachable_time (neigh_periodic_work).
REACHABLE_TIME_REDRAW_INTERVAL = 300.0


class NudState(IntEnum):
    """Neighbour Unreachability Detection states, with Linux's NUD_* bit values."""

    INCOMPLETE = 0x01
    REACHABLE = 0x02
    STALE = 0x04
    DELAY = 0x08
    PROBE = 0x10
    FAILED = 0x20
    PERMANENT = 0x80


INCOMPLETE, REACHABLE, STALE = NudState.INCOMPLETE, NudState.REACHABLE, NudState.STALE
DELAY, PROBE, FAILED, PERMANENT = NudState.DELAY, NudState.PROBE, NudState.FAILED, NudState.PERMANENT

# A MAC we may send to without asking first (Linux NUD_VALID minus NOARP).
_VALID = frozenset({REACHABLE, STALE, DELAY, PROBE, PERMANENT})
# Valid states a lookup uses as they are (STALE also moves to DELAY).
_SEND_AS_IS = frozenset({REACHABLE, DELAY, PROBE, PERMANENT})


@dataclass(slots=True)
class NeighParams:
    """The knobs of `ip ntable` / `net.ipv4.neigh.default.*`, times in seconds."""

    unres_qlen: int = 3  # packets queued per unresolved entry
    retrans_time: float = 1.0  # between two requests for the same address
    mcast_solicit: int = 3  # broadcast requests before INCOMPLETE gives up
    ucast_solicit: int = 3  # unicast probes before PROBE gives up
    base_reachable_time: float = 30.0  # REACHABLE lifetime before randomisation
    delay_first_probe_time: float = 5.0  # DELAY before the first unicast probe
    gc_stale_time: float = 60.0  # unused STALE/FAILED entries are removed after this
    gc_thresh3: int = 1024  # hard limit on entries

    def __post_init__(self) -> None:
        for name in ("retrans_time", "base_reachable_time", "delay_first_probe_time", "gc_stale_time"):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name} must be positive, got {getattr(self, name)!r}")
        for name in ("unres_qlen", "mcast_solicit", "ucast_solicit"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must not be negative, got {getattr(self, name)!r}")
        if self.gc_thresh3 < 1:
            raise ValueError(f"gc_thresh3 must be at least 1, got {self.gc_thresh3!r}")


@dataclass(slots=True)
class NeighStats:
    """Counters: the first block as in /proc/net/stat/arp_cache, the rest our own."""

    entries: int = 0
    allocs: int = 0
    destroys: int = 0
    lookups: int = 0
    hits: int = 0  # lookups that found an entry in any state
    res_failed: int = 0  # resolutions that ended in FAILED
    rcv_probes_mcast: int = 0  # requests for our address, received broadcast
    rcv_probes_ucast: int = 0  # requests for our address, received unicast
    forced_gc_runs: int = 0  # inserts at gc_thresh3 that had to evict
    unresolved_discards: int = 0  # packets dropped from a full unres queue
    table_fulls: int = 0  # inserts refused: nothing evictable at gc_thresh3
    # ours
    mcast_probes_sent: int = 0  # broadcast requests (INCOMPLETE)
    ucast_probes_sent: int = 0  # unicast requests (PROBE)
    replies_sent: int = 0
    rcv_from_own_address: int = 0  # ARP claiming one of our addresses as sender: dropped
    rcv_invalid: int = 0  # bad operation, multicast sender MAC, multicast/loopback IPs: dropped

    def as_dict(self) -> dict[str, int]:
        return asdict(self)


@dataclass(slots=True, eq=False)
class Neighbour:
    """One entry: Linux struct neighbour, with seed 001's arp_table fields."""

    ip: IPv4Address
    dev: str
    state: NudState
    mac: MacAddress | None
    last_used: float  # last lookup hit or enqueue (Linux n->used)
    last_confirmed: float  # last proof of reachability (n->confirmed)
    last_updated: float  # last change of state or address (n->updated)
    probes: int = 0  # requests sent in the current INCOMPLETE/PROBE round
    queue: deque = field(default_factory=deque)  # packets waiting for the MAC, oldest first
    timer: float | None = None  # deadline of the pending timer, if any
    timer_token: int = 0  # matches the live heap item; 0 = no timer


# -- effects -----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class SendArpRequest:
    """Ask who has `target_ip` on `dev`; `dst_mac` is the Ethernet destination (broadcast or the old MAC)."""

    dev: str
    target_ip: IPv4Address
    dst_mac: MacAddress

    def packet(self, dev_mac: MacAddress, source_ip: IPv4Address) -> ArpPacket:
        """The request from `dev`'s MAC; the kernel picks `source_ip` (an address of `dev`, as inet_select_addr)."""
        return ArpPacket.request(dev_mac, source_ip, self.target_ip)


@dataclass(frozen=True, slots=True)
class SendArpReply:
    """Tell `target_ip` at `target_mac` (the asker) that our `sender_ip` is at `dev`'s MAC."""

    dev: str
    sender_ip: IPv4Address
    target_ip: IPv4Address
    target_mac: MacAddress

    def packet(self, dev_mac: MacAddress) -> ArpPacket:
        return ArpPacket.reply(dev_mac, self.sender_ip, self.target_mac, self.target_ip)


@dataclass(frozen=True, slots=True)
class TransmitQueued:
    """Send `packets` (in this order) to `mac` on `dev`: they waited for resolution."""

    dev: str
    mac: MacAddress
    packets: tuple


@dataclass(frozen=True, slots=True)
class ResolutionFailed:
    """`ip` on `dev` did not resolve (or its entry was removed): these packets cannot be sent."""

    dev: str
    ip: IPv4Address
    packets: tuple


Effect = SendArpRequest | SendArpReply | TransmitQueued | ResolutionFailed


def gratuitous_arp(dev_mac: MacAddress, ip: IPv4Address) -> tuple[MacAddress, ArpPacket]:
    """Ethernet destination and packet announcing `ip` at `dev_mac` (interface up, RFC 5227 3)."""
    return BROADCAST_MAC, ArpPacket.gratuitous(dev_mac, ip)


def _bad_sender_ip(ip: int) -> bool:
    # arp_process drops multicast, and we also refuse loopback and limited broadcast senders.
    return ip >> 28 == 0xE or ip >> 24 == 127 or ip == 0xFFFFFFFF


def _bad_target_ip(ip: int) -> bool:
    return ip >> 28 == 0xE or ip >> 24 == 127


class NeighTable:
    """One node's ARP table (Linux arp_tbl); see the module docstring for the API."""

    def __init__(self, params: NeighParams | None = None, *, local_addresses: Iterable[int] = (),
                 rng: random.Random | None = None) -> None:
        """`rng` randomises reachable_time to 0.5-1.5x base as Linux does; without it the base is used exactly."""
        self.params = params if params is not None else NeighParams()
        self.local_addresses: set[int] = set(local_addresses)
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
            return None
        stats.hits += 1
        entry.last_used = now
        state = entry.state
        if state in _SEND_AS_IS:
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
            if entry is not None and entry.state is not PERMANENT:
                entry.last_confirmed = now

    # -- input path --------------------------------------------------------------

    def arp_input(self, arp: ArpPacket, dev: str, now: float, pkt_type: int = PACKET_HOST) -> list[Effect]:
        """Learn from an ARP packet received on `dev` and answer it if it asks for one of our addresses."""
        effects: list[Effect] = []
        if pkt_type == PACKET_OTHERHOST:
            return effects  # arp_rcv: not addressed to us at the link layer
        stats = self.stats
        operation = arp.operation
        sender_ip, target_ip, sender_mac = arp.sender_ip, arp.target_ip, arp.sender_mac
        if ((operation != ARP_REQUEST and operation != ARP_REPLY) or sender_mac[0] & 0x01
                or _bad_sender_ip(sender_ip) or _bad_target_ip(target_ip)):
            stats.rcv_invalid += 1
            return effects
        local = self.local_addresses
        if sender_ip == 0:
            # RFC 5227 probe (duplicate address detection): answer, learn nothing.
            if operation == ARP_REQUEST and target_ip in local:
                self._reply(dev, target_ip, IPv4Address(0), sender_mac, pkt_type, effects)
            return effects
        if sender_ip in local:
            # Our own address from someone else (a conflict) or our own broadcast looped back.
            stats.rcv_from_own_address += 1
            return effects
        if operation == ARP_REQUEST and target_ip in local:
            # The asker will talk to us next: learn it (neigh_event_ns), then answer.
            entry = self._entries.get((sender_ip, dev))
            if entry is None:
                entry = self._create(IPv4Address(sender_ip), dev, now, effects)
            if entry is not None:
                self._update(entry, sender_mac, STALE, now, effects)
            self._reply(dev, target_ip, sender_ip, sender_mac, pkt_type, effects)
            return effects
        entry = self._entries.get((sender_ip, dev))
        if entry is not None:
            state = REACHABLE if operation == ARP_REPLY and pkt_type == PACKET_HOST else STALE
            self._update(entry, sender_mac, state, now, effects)
        return effects

    def _reply(self, dev: str, our_ip: int, asker_ip: int, asker_mac: MacAddress, pkt_type: int,
               effects: list[Effect]) -> None:
        stats = self.stats
        if pkt_type == PACKET_HOST:
            stats.rcv_probes_ucast += 1
        else:
            stats.rcv_probes_mcast += 1
        stats.replies_sent += 1
        effects.append(SendArpReply(dev, IPv4Address(our_ip), IPv4Address(asker_ip), MacAddress(asker_mac)))

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
        elif state is STALE or state is FAILED:
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
        heapq.heappush(self._timers, (deadline, token, entry))

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

    def _update(self, entry: Neighbour, mac: MacAddress, state: NudState, now: float,
                effects: list[Effect]) -> None:
        """neigh_update from ARP input: new MAC and state, and flush whatever waited for it."""
        old = entry.state
        if old is PERMANENT:
            return  # only the administrator changes those
        if state is STALE and old in _VALID and mac == entry.mac:
            return  # same address, weaker news: keep the state we have
        if state is REACHABLE:
            entry.last_confirmed = now
        entry.mac = MacAddress.from_wire(mac) if not isinstance(mac, MacAddress) else mac
        entry.probes = 0
        self._set_state(entry, state, now)
        if state is REACHABLE:
            self._arm(entry, now + self._reachable_time_at(now))
        else:
            self._arm_gc(entry)
        self._flush_queue(entry, now, effects)

    def _flush_queue(self, entry: Neighbour, now: float, effects: list[Effect]) -> None:
        if entry.queue:
            effects.append(TransmitQueued(entry.dev, entry.mac, tuple(entry.queue)))
            entry.queue.clear()
            if entry.state is STALE:
                # Linux sends the queue through neigh_resolve_output, which uses the entry.
                self._start_delay(entry, now)

    def _create(self, ip: IPv4Address, dev: str, now: float, effects: list[Effect]) -> Neighbour | None:
        """A new INCOMPLETE entry without timer, evicting one first at gc_thresh3; None if the table is full."""
        if len(self._entries) >= self.params.gc_thresh3 and not self._evict(effects):
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

    def _evict(self, effects: list[Effect]) -> bool:
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
        victim = idle if idle is not None else waiting
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
