"""Martian addresses and reverse-path filtering of received datagrams.

Before changing this file, read RFC 1812 section 5.3.7 (martian address
filtering), RFC 3704 section 2 (strict and loose reverse-path forwarding),
Linux net/ipv4/route.c `ip_route_input_slow` and `ip_handle_martian_source`,
net/ipv4/fib_frontend.c `fib_validate_source`/`__fib_validate_source`, and the
`rp_filter`, `log_martians` and `route_localnet` entries of
Documentation/networking/ip-sysctl.rst.

What is dropped, in `ip_route_input_slow`'s order, for a datagram that did
not arrive on `lo` (multicast destinations never get here: the IPv4 layer
handles them first, as `ip_route_input_rcu` does):

* source multicast or 255.255.255.255 -> martian source;
* destination 255.255.255.255 (or 0.0.0.0 from 0.0.0.0): accepted, its
  source validated unless 0.0.0.0 (a DHCP client's);
* source 0.0.0.0/8 -> martian source; destination 0.0.0.0/8 -> martian
  destination;
* destination 127/8 -> martian destination, else source 127/8 -> martian
  source (both allowed by `route_localnet`);
* a datagram for us (local or broadcast) or to be forwarded has its source
  validated (`fib_validate_source`): with `rp_filter` 0 (the kernel's
  default) only one of our own addresses is refused; with 1 (strict) the
  best route back to the source must leave by the interface the datagram
  came in on; with 2 (loose) some unicast route back must exist. A source
  whose route is local or broadcast is martian in both modes.

Counted as Linux does: `in_martian_src`/`in_martian_dst` (/proc/net/stat/rt_cache)
and `IPReversePathFilter` (TcpExt) for an rp_filter failure, which is a martian
source as well. With `log_martians` each drop is logged with Linux's wording,
rate-limited as net_ratelimit (10 messages, then one per 5 s).

Not modelled: per-device `conf.<dev>` knobs (conf.all applies to every
interface), `accept_local`, and the full check Linux makes with rp_filter 0
when a datagram is forwarded out of the interface it came in on
(`IN_DEV_TX_REDIRECTS`).
"""
from __future__ import annotations

import logging
from dataclasses import asdict, dataclass
from typing import Collection

from .route import Fib, RouteType
from .sysctl import Sysctl

log = logging.getLogger("netemu.ipv4")

LIMITED_BROADCAST = 0xFFFFFFFF
ACCEPT = 0
MARTIAN_SOURCE = 1
MARTIAN_DESTINATION = 2
REVERSE_PATH = 3  # fib_validate_source's -EXDEV: a martian source counted as IPReversePathFilter too

_LOCAL_OR_BROADCAST = (RouteType.LOCAL, RouteType.BROADCAST)
_RATELIMIT_INTERVAL = 5.0  # net_ratelimit: DEFAULT_RATELIMIT_INTERVAL (5 * HZ)
_RATELIMIT_BURST = 10  # DEFAULT_RATELIMIT_BURST


@dataclass(slots=True)
class MartianStats:
    """Linux's names: /proc/net/stat/rt_cache `in_martian_*` and TcpExt `IPReversePathFilter`."""

    in_martian_src: int = 0
    in_martian_dst: int = 0
    IPReversePathFilter: int = 0

    def as_dict(self) -> dict[str, int]:
        return asdict(self)


def _dotted(address: int) -> str:
    return ".".join(str((address >> shift) & 0xFF) for shift in (24, 16, 8, 0))


class InputFilter:
    """The address checks of `ip_route_input_slow` for one node, with their counters and log."""

    def __init__(self, sysctl: Sysctl, fib: Fib) -> None:
        self.sysctl = sysctl
        self.fib = fib
        self.stats = MartianStats()
        self._log_window_start = float("-inf")
        self._log_window_count = 0

    def rejects(self, src: int, dst: int, dev: str, local_addresses: Collection[int],
                broadcast_addresses: Collection[int], forwarding: bool, now: float) -> bool:
        """True when the datagram from `src` to `dst` that arrived on `dev` is dropped (counted, maybe logged)."""
        verdict = self.classify(src, dst, dev, local_addresses, broadcast_addresses, forwarding)
        if verdict == ACCEPT:
            return False
        stats = self.stats
        if verdict == MARTIAN_DESTINATION:
            stats.in_martian_dst += 1
            message = f"martian destination {_dotted(dst)} from {_dotted(src)}, dev {dev}"
        else:
            stats.in_martian_src += 1
            if verdict == REVERSE_PATH:
                stats.IPReversePathFilter += 1
            message = f"martian source {_dotted(dst)} from {_dotted(src)}, on dev {dev}"
        if self.sysctl["net.ipv4.conf.all.log_martians"] and self._ratelimit(now):
            log.warning("%s", message)
        return True

    def classify(self, src: int, dst: int, dev: str, local_addresses: Collection[int],
                 broadcast_addresses: Collection[int], forwarding: bool) -> int:
        """ip_route_input_slow's verdict on the addresses alone: ACCEPT or why not."""
        if src >> 28 == 0xE or src == LIMITED_BROADCAST:
            return MARTIAN_SOURCE
        if dst == LIMITED_BROADCAST or (src == 0 and dst == 0):
            return ACCEPT if src == 0 else self.validate_source(src, dev, local_addresses)  # brd_input
        if src >> 24 == 0:
            return MARTIAN_SOURCE  # "Accept zero addresses only to limited broadcast"
        if dst >> 24 == 0:
            return MARTIAN_DESTINATION
        if not self.sysctl["net.ipv4.conf.all.route_localnet"]:
            if dst >> 24 == 127:
                return MARTIAN_DESTINATION
            if src >> 24 == 127:
                return MARTIAN_SOURCE
        if (dst in local_addresses or dst in broadcast_addresses or forwarding
                or self.fib.address_type(dst) in _LOCAL_OR_BROADCAST):
            # local_input, brd_input and __mkroute_input all validate the source.
            return self.validate_source(src, dev, local_addresses)
        return ACCEPT

    def validate_source(self, src: int, dev: str, local_addresses: Collection[int]) -> int:
        """fib_validate_source: is `src` a believable source for a datagram that came in on `dev`?"""
        rp_filter = self.sysctl["net.ipv4.conf.all.rp_filter"]
        if not rp_filter:
            # The shortcut without a route lookup: only our own addresses are refused.
            return MARTIAN_SOURCE if src in local_addresses else ACCEPT
        route = self.fib.lookup(src)
        if route is None:
            return REVERSE_PATH  # last_resort with rp_filter on
        if route.type is not RouteType.UNICAST:
            return MARTIAN_SOURCE  # our own address, a broadcast address, an unreachable route: -EINVAL
        if route.dev == dev:
            return ACCEPT
        if rp_filter == 1 or not any(device == dev for device, _, _ in self.fib.addresses()):
            return REVERSE_PATH  # strict mode, or an interface without an address (no_addr)
        return ACCEPT  # loose mode: a unicast route back exists, by whichever interface

    def _ratelimit(self, now: float) -> bool:
        """net_ratelimit: a burst of 10 messages per 5 s window."""
        if now - self._log_window_start >= _RATELIMIT_INTERVAL:
            self._log_window_start = now
            self._log_window_count = 0
        self._log_window_count += 1
        return self._log_window_count <= _RATELIMIT_BURST
