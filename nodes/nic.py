"""Network devices: rx ring, tx queue, link counters, and NAPI polling.

Before changing this file, read seeds 002 and 003 (NAPI, receive livelock) and
seed 001's section on network devices. The device here is the sans-I/O half
of a NIC: the kernel loop fills the rx ring from the wire ("DMA") and drains
the tx queue onto it; everything in between is pure and testable.

NAPI, as in Linux: a device with frames in its ring is put on the poll list
(`napi_schedule`); each softirq round (`NapiScheduler.run`) polls devices
round-robin, at most `weight` frames each per visit and `netdev_budget`
frames in all, so timers, control and sockets keep their turn under a flood.
With NAPI off every frame is processed to completion as soon as it arrives,
which is what makes the receive-livelock experiment possible.
"""
from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from typing import Callable

from .sysctl import KNOBS
from .wire.addresses import IPv4Address, MacAddress, prefix_mask

# Interface flags as `ip link` prints them.
IFF_UP = "UP"
IFF_LOWER_UP = "LOWER_UP"
IFF_BROADCAST = "BROADCAST"
IFF_MULTICAST = "MULTICAST"
IFF_LOOPBACK = "LOOPBACK"

# Frames a device's rx ring holds (ethtool -g; Linux NICs ship 256-4096). Longer
# than netdev_budget, as on Linux: a round can end with frames left (time_squeeze).
# A burst beyond it is dropped (rx_missed_errors): 1024 absorbs what 500 hosts
# asking one server at once deliver in one pass, ~7 ms of work at the back of it.
DEFAULT_RX_RING_SIZE = 1024
DEFAULT_TXQUEUELEN = 1000
# The sysctl table owns these defaults (net.core.dev_weight, net.core.netdev_budget).
DEFAULT_WEIGHT = KNOBS["net.core.dev_weight"].default
DEFAULT_NETDEV_BUDGET = KNOBS["net.core.netdev_budget"].default


@dataclass(slots=True)
class LinkStats:
    """Per-device counters, named as `ip -s link` and `ethtool -S` name them."""

    rx_packets: int = 0
    rx_bytes: int = 0
    rx_errors: int = 0
    rx_dropped: int = 0
    rx_missed_errors: int = 0  # rx ring full: the frame never reached the stack
    rx_nohandler: int = 0  # no protocol handler for the ethertype
    multicast: int = 0
    tx_packets: int = 0
    tx_bytes: int = 0
    tx_errors: int = 0
    tx_dropped: int = 0  # tx queue full, or link down
    tx_carrier_errors: int = 0

    def as_dict(self) -> dict[str, int]:
        return {name: getattr(self, name) for name in self.__slots__}


@dataclass(slots=True)
class InterfaceAddress:
    """An IPv4 address on a device (Linux `in_ifaddr`)."""

    address: IPv4Address
    prefix_length: int

    @property
    def network(self) -> int:
        return self.address & prefix_mask(self.prefix_length)

    @property
    def broadcast(self) -> IPv4Address:
        return IPv4Address.from_wire(self.network | (~prefix_mask(self.prefix_length) & 0xFFFFFFFF))

    def __str__(self) -> str:
        return f"{self.address}/{self.prefix_length}"


@dataclass(eq=False)
class NetDevice:
    """One interface: identity, addresses, rx ring, tx queue, NAPI state, counters."""

    name: str
    mac: MacAddress
    mtu: int = 1500
    ifindex: int = 0
    loopback: bool = False
    rx_ring_size: int = DEFAULT_RX_RING_SIZE
    txqueuelen: int = DEFAULT_TXQUEUELEN
    weight: int = DEFAULT_WEIGHT
    admin_up: bool = True
    carrier: bool = True
    addresses: list[InterfaceAddress] = field(default_factory=list)
    stats: LinkStats = field(default_factory=LinkStats)
    rx_ring: deque = field(default_factory=deque)
    tx_queue: deque = field(default_factory=deque)
    napi_scheduled: bool = False

    @property
    def running(self) -> bool:
        """Administratively up with carrier: frames flow (Linux IFF_RUNNING)."""
        return self.admin_up and self.carrier

    @property
    def flags(self) -> list[str]:
        flags = [IFF_LOOPBACK] if self.loopback else [IFF_BROADCAST, IFF_MULTICAST]
        if self.admin_up:
            flags.append(IFF_UP)
            if self.carrier:
                flags.append(IFF_LOWER_UP)
        return flags

    # -- receive side --------------------------------------------------------

    def rx_enqueue(self, frame: bytes) -> bool:
        """The wire delivered a frame ("DMA" into the ring); False if dropped."""
        if not (self.admin_up and self.carrier):
            self.stats.rx_dropped += 1
            return False
        if len(self.rx_ring) >= self.rx_ring_size:
            self.stats.rx_missed_errors += 1
            return False
        self.rx_ring.append(frame)
        return True

    def rx_enqueue_many(self, frames: list[bytes]) -> int:
        """Several frames at once, as `rx_enqueue` each in order; returns how many the ring took.

        The kernel loop's path: one message from the wire carries a batch, and
        checking the ring once per batch instead of once per frame matters.
        """
        if not (self.admin_up and self.carrier):
            self.stats.rx_dropped += len(frames)
            return 0
        ring = self.rx_ring
        room = self.rx_ring_size - len(ring)
        if len(frames) <= room:
            ring.extend(frames)
            return len(frames)
        if room > 0:
            ring.extend(frames[:room])
        else:
            room = 0
        self.stats.rx_missed_errors += len(frames) - room
        return room

    # -- transmit side -------------------------------------------------------

    def tx_enqueue(self, frame: bytes) -> bool:
        """Queue a frame for the wire (dev_queue_xmit); False if dropped."""
        stats = self.stats
        if not (self.admin_up and self.carrier):
            stats.tx_dropped += 1
            stats.tx_carrier_errors += not self.carrier
            return False
        queue = self.tx_queue
        if len(queue) >= self.txqueuelen:
            stats.tx_dropped += 1
            return False
        queue.append(frame)
        stats.tx_packets += 1
        stats.tx_bytes += len(frame)
        return True

    def tx_drain(self) -> list[bytes]:
        """Take every queued frame (the driver puts them on the wire in one batch)."""
        frames = list(self.tx_queue)
        self.tx_queue.clear()
        return frames

    def describe(self) -> dict:
        """`ip -s addr show` of this device as a plain dict."""
        return {
            "ifindex": self.ifindex,
            "name": self.name,
            "flags": self.flags,
            "mtu": self.mtu,
            "state": "UNKNOWN" if self.loopback else ("UP" if self.running else "DOWN"),
            "mac": str(self.mac),
            "link_type": "loopback" if self.loopback else "ether",
            "addresses": [
                {"address": str(a.address), "prefix_length": a.prefix_length, "broadcast": str(a.broadcast)}
                for a in self.addresses
            ],
            "txqueuelen": self.txqueuelen,
            "rx_ring_size": self.rx_ring_size,
            "weight": self.weight,
            "stats": self.stats.as_dict(),
        }


@dataclass(slots=True)
class SoftnetStat:
    """`/proc/net/softnet_stat`: rounds run, frames processed, rounds cut short.

    `rx_exceptions`/`timer_exceptions` are ours: frames (timers) whose handling
    raised something unexpected and were dropped by the last line of defence
    (a kernel never panics on a packet). Each is a bug; the tests fail on any.
    """

    processed: int = 0
    time_squeeze: int = 0  # a round ended with work left (budget or time ran out)
    rounds: int = 0
    rx_exceptions: int = 0
    timer_exceptions: int = 0

    def as_dict(self) -> dict[str, int]:
        return {"processed": self.processed, "time_squeeze": self.time_squeeze, "rounds": self.rounds,
                "rx_exceptions": self.rx_exceptions, "timer_exceptions": self.timer_exceptions}


RxHandler = Callable[[NetDevice, bytes, float], object]
ExceptionReport = Callable[[NetDevice, bytes, BaseException], None]


def _ignore(device: NetDevice, frame: bytes, error: BaseException) -> None:
    pass


class NapiScheduler:
    """The NET_RX softirq: round-robin polling of scheduled devices under a budget.

    Every frame's handling runs behind an exception barrier: an unexpected
    exception drops that frame, counts `rx_exceptions` and is reported to
    `on_exception` (the stack logs it once per code site). With `reraise`
    (set by the test suite) it propagates instead, so no test hides a bug.
    """

    reraise = False

    def __init__(self, netdev_budget: int = DEFAULT_NETDEV_BUDGET, enabled: bool = True,
                 on_exception: ExceptionReport = _ignore) -> None:
        self.netdev_budget = netdev_budget
        self.enabled = enabled
        self.poll_list: deque[NetDevice] = deque()
        self.stat = SoftnetStat()
        self.on_exception = on_exception

    def schedule(self, device: NetDevice) -> None:
        """napi_schedule: put a device with frames on the poll list once."""
        if not device.napi_scheduled:
            device.napi_scheduled = True
            self.poll_list.append(device)

    @property
    def pending(self) -> bool:
        return bool(self.poll_list)

    def run(self, handler: RxHandler, now: float) -> int:
        """One softirq round at time `now`; returns frames processed.

        With NAPI off the budget is unbounded: every queued frame is handled
        before anything else gets a turn (the pre-NAPI receive path).
        """
        budget = self.netdev_budget if self.enabled else 1 << 62
        processed = 0
        poll_list = self.poll_list
        self.stat.rounds += 1
        while poll_list and budget > 0:
            device = poll_list.popleft()
            ring = device.rx_ring
            quota = min(device.weight if self.enabled else len(ring), budget)
            stats = device.stats
            pop = ring.popleft
            count = 0
            while ring and count < quota:
                frame = pop()
                # Counted before the handler runs, as the driver does: the
                # handler may look at the counters (or raise).
                stats.rx_packets += 1
                stats.rx_bytes += len(frame)
                count += 1
                try:  # free in CPython 3.11 unless something raises
                    handler(device, frame, now)
                except Exception as error:
                    if self.reraise:
                        raise
                    self.stat.rx_exceptions += 1
                    stats.rx_dropped += 1
                    self.on_exception(device, frame, error)
            processed += count
            budget -= count
            if ring:
                poll_list.append(device)  # used its whole weight: back of the line
            else:
                device.napi_scheduled = False  # napi_complete
        if poll_list:
            self.stat.time_squeeze += 1
        self.stat.processed += processed
        return processed


def make_loopback() -> NetDevice:
    """The `lo` device with 127.0.0.1/8, always present."""
    lo = NetDevice(name="lo", mac=MacAddress(bytes(6)), mtu=65536, ifindex=1, loopback=True, txqueuelen=1000, rx_ring_size=1000)
    lo.addresses.append(InterfaceAddress(IPv4Address("127.0.0.1"), 8))
    return lo
