"""The data of the ARP neighbour table: NUD states, one entry, knobs and counters.

Linux `include/net/neighbour.h` (struct neighbour, struct neigh_parms) and
`include/uapi/linux/neighbour.h` (the NUD_* bits). The state machine that
moves entries between these states lives in `nodes/neigh.py`; ARP input rules
in `nodes/arp.py`.
"""
from __future__ import annotations

from collections import deque
from dataclasses import asdict, dataclass, field
from enum import IntEnum
from typing import Mapping

from .sysctl import ETH_FRAME_TRUESIZE, KNOBS
from .wire.addresses import IPv4Address, MacAddress


class NudState(IntEnum):
    """Neighbour Unreachability Detection states, with Linux's NUD_* bit values."""

    INCOMPLETE = 0x01
    REACHABLE = 0x02
    STALE = 0x04
    DELAY = 0x08
    PROBE = 0x10
    FAILED = 0x20
    NOARP = 0x40  # broadcast/multicast: the MAC is computed, never asked for (arp_constructor)
    PERMANENT = 0x80


INCOMPLETE, REACHABLE, STALE = NudState.INCOMPLETE, NudState.REACHABLE, NudState.STALE
DELAY, PROBE, FAILED = NudState.DELAY, NudState.PROBE, NudState.FAILED
NOARP, PERMANENT = NudState.NOARP, NudState.PERMANENT

# Linux NUD_VALID: a MAC we may send to without asking first.
VALID = frozenset({REACHABLE, STALE, DELAY, PROBE, NOARP, PERMANENT})
# Linux NUD_CONNECTED: an update to one of these confirms reachability (neigh_update).
CONNECTED = frozenset({REACHABLE, NOARP, PERMANENT})
# Valid states a lookup uses as they are (STALE also moves to DELAY).
SEND_AS_IS = frozenset({REACHABLE, DELAY, PROBE, NOARP, PERMANENT})
# States ARP input never changes: only the administrator may (neigh_update without F_ADMIN).
ADMIN_ONLY = frozenset({NOARP, PERMANENT})


# -- knobs: the sysctl table is the one source of every default ----------------------

SYSCTL_PREFIX = "net.ipv4.neigh.default."

# NeighParams field -> (sysctl knob under SYSCTL_PREFIX, divisor turning the knob's unit into
# seconds; None for counts). locktime is in USER_HZ (1/100 s) as Linux's
# proc_dointvec_userhz_jiffies shows it.
SYSCTL_FIELDS: dict[str, tuple[str, int | None]] = {
    "unres_qlen_bytes": ("unres_qlen_bytes", None),
    "retrans_time": ("retrans_time_ms", 1000),
    "mcast_solicit": ("mcast_solicit", None),
    "ucast_solicit": ("ucast_solicit", None),
    "base_reachable_time": ("base_reachable_time_ms", 1000),
    "delay_first_probe_time": ("delay_first_probe_time", 1),
    "gc_stale_time": ("gc_stale_time", 1),
    "locktime": ("locktime", 100),
    "gc_thresh3": ("gc_thresh3", None),
}


def _convert(name: str, value: int) -> int | float:
    divisor = SYSCTL_FIELDS[name][1]
    return value if divisor is None else value / divisor


def _default(name: str) -> int | float:
    """The default of field `name`, read from the sysctl table (never repeated here)."""
    return _convert(name, KNOBS[SYSCTL_PREFIX + SYSCTL_FIELDS[name][0]].default)


@dataclass(slots=True)
class NeighParams:
    """The knobs of `ip ntable` / `net.ipv4.neigh.default.*`, times in seconds.

    Defaults come from `nodes.sysctl.KNOBS`; `from_sysctl` reads a node's values.
    """

    # Truesize bytes queued per unresolved entry (Linux QUEUE_LEN_BYTES, since 3.3; before, a count of 3).
    unres_qlen_bytes: int = _default("unres_qlen_bytes")
    retrans_time: float = _default("retrans_time")  # between two requests for the same address
    mcast_solicit: int = _default("mcast_solicit")  # broadcast requests before INCOMPLETE gives up
    ucast_solicit: int = _default("ucast_solicit")  # unicast probes before PROBE gives up
    base_reachable_time: float = _default("base_reachable_time")  # REACHABLE lifetime before randomisation
    delay_first_probe_time: float = _default("delay_first_probe_time")  # DELAY before the first unicast probe
    gc_stale_time: float = _default("gc_stale_time")  # unused STALE/FAILED/NOARP entries go after this
    locktime: float = _default("locktime")  # an ARP update may not change a MAC younger than this
    gc_thresh3: int = _default("gc_thresh3")  # hard limit on entries

    def __post_init__(self) -> None:
        # Zero here would re-arm a timer at the instant it fires (a busy loop); the sysctl
        # minimums match. delay_first_probe_time may be 0 (sysctl allows it): DELAY then
        # probes at the next tick, and the probe's timer is retrans_time away.
        for name in ("retrans_time", "base_reachable_time", "gc_stale_time"):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name} must be positive, got {getattr(self, name)!r}")
        for name in ("unres_qlen_bytes", "mcast_solicit", "ucast_solicit", "delay_first_probe_time", "locktime"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must not be negative, got {getattr(self, name)!r}")
        if self.gc_thresh3 < 1:
            raise ValueError(f"gc_thresh3 must be at least 1, got {self.gc_thresh3!r}")

    @property
    def unres_qlen(self) -> int:
        """unres_qlen_bytes in full Ethernet frames: the packet view Linux's unres_qlen sysctl shows."""
        return self.unres_qlen_bytes // ETH_FRAME_TRUESIZE

    @classmethod
    def from_sysctl(cls, sysctl: Mapping[str, int]) -> "NeighParams":
        """The parameters a node's `net.ipv4.neigh.default.*` values give (a `nodes.sysctl.Sysctl`)."""
        return cls(**{name: _convert(name, sysctl[SYSCTL_PREFIX + knob])
                      for name, (knob, _) in SYSCTL_FIELDS.items()})


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
    rcv_invalid: int = 0  # bad operation, multicast sender MAC, martian sender or target IP: dropped
    locktime_ignored: int = 0  # ARP updates that would have changed a MAC within locktime

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
    queue_bytes: int = 0  # their truesize (Linux arp_queue_len_bytes)
    timer: float | None = None  # deadline of the pending timer, if any
    timer_token: int = 0  # matches the live heap item; 0 = no timer
