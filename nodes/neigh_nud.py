"""The NUD state machine of a neighbour entry: Linux `net/core/neighbour.c`.

`neigh_update` (what ARP input and upper layers may do to an entry) and
`neigh_timer_handler` (what time does to it), with the timer heap that drives
them. `NudStateMachine` is a base of `nodes.neigh.NeighTable`, which owns the
entries, their creation and removal, and the packet paths.

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
"""
from __future__ import annotations

import heapq
import itertools
import random

from .arp import Effect, ResolutionFailed, SendArpRequest, TransmitQueued
from .neigh_entry import (
    ADMIN_ONLY,
    CONNECTED,
    DELAY,
    FAILED,
    INCOMPLETE,
    NOARP,
    PROBE,
    REACHABLE,
    STALE,
    VALID,
    NeighParams,
    NeighStats,
    Neighbour,
    NudState,
)
from .wire.addresses import BROADCAST_MAC, MacAddress

# How often Linux redraws the randomised reachable_time (neigh_periodic_work).
REACHABLE_TIME_REDRAW_INTERVAL = 300.0

# The timer heap is rebuilt once it holds more than this many items per entry (plus slack):
# superseded items would otherwise pile up until their deadline under a flood of updates.
_HEAP_SLACK = 64


class NudStateMachine:
    """Entry state changes and their timers; the table subclass provides entries and `_remove`."""

    params: NeighParams
    stats: NeighStats
    _entries: dict[tuple[int, str], Neighbour]

    def _init_timers(self, rng: random.Random | None) -> None:
        """`rng` randomises reachable_time to 0.5-1.5x base as Linux does; without it the base is used exactly."""
        self._rng = rng
        self._timers: list[tuple[float, int, Neighbour]] = []
        self._tokens = itertools.count(1)
        self._reachable_time = self.params.base_reachable_time
        self._reachable_time_drawn_at: float | None = None

    def _remove(self, entry: Neighbour) -> None:
        raise NotImplementedError

    # -- updates -----------------------------------------------------------------------

    def _start_delay(self, entry: Neighbour, now: float) -> None:
        """A STALE entry is in use: keep sending to its MAC but verify it shortly (RFC 1122 2.3.2.1)."""
        self._set_state(entry, DELAY, now)
        self._arm(entry, now + self.params.delay_first_probe_time)

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

    # -- timers ------------------------------------------------------------------------

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
        entry.queue_bytes = 0
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

    def _set_state(self, entry: Neighbour, state: NudState, now: float) -> None:
        entry.state = state
        entry.last_updated = now

    def _flush_queue(self, entry: Neighbour, now: float, effects: list[Effect]) -> None:
        if entry.queue:
            effects.append(TransmitQueued(entry.dev, entry.mac, tuple(entry.queue)))
            entry.queue.clear()
            entry.queue_bytes = 0
            if entry.state is STALE:
                # Linux sends the queue through neigh_resolve_output, which uses the entry.
                self._start_delay(entry, now)
