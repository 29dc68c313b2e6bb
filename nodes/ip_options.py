"""IP options of a received datagram, as Linux acts on them (`net/ipv4/ip_options.c`).

Before changing this file, read RFC 791 section 3.1 (the options and their
pointers), RFC 1122 section 3.2.1.8, RFC 1812 sections 4.2.2.1 and 5.2.4
(source routes, record route and timestamp at a router), and Linux
`ip_options_compile`, `ip_rcv_options`, `ip_options_rcv_srr` and
`ip_forward_options`.

What happens, in Linux's order (ip_rcv_finish: after the route lookup and the
martian checks, before local delivery or forwarding):

* The options are walked once (`compile_options`). A malformed one (a length
  below 2 or past the header, a pointer below its minimum, a second record
  route, timestamp or source route, a full timestamp's overflow count at 15)
  drops the datagram, counts `InHdrErrors` and answers Parameter Problem
  whose pointer is the offset of the bad octet in the header.
* Record route gets this host's address in the next free slot, timestamp a
  stamp (and an address, for flags 1; for flags 3 only when the listed address
  is ours); a full timestamp option counts its overflow instead. The address
  is the destination for a datagram to us, the address toward the sender
  otherwise (fib_compute_spec_dst); a forwarded datagram's record route slot
  is then rewritten with the egress address (ip_forward_options).
* A loose or strict source route is dropped unless
  `net.ipv4.conf.all.accept_source_route` is 1 (Linux's default is 0: conf.all
  is 0 and the interface needs both). Accepted, a source route addressed to us
  takes the next hop from the list (hops that are ours are consumed on the
  spot), records our egress address in its place and forwards toward it; a
  strict route whose next hop is not on a connected network earns
  destination unreachable, source route failed. A strict route through us
  that is not addressed to us earns Parameter Problem pointing at the
  destination address.

Not modelled: the router alert chain, CIPSO/security labels (accepted as
they come), options echoed into replies (`ip_options_echo`: an echo reply
carries no options), a timestamp of real time: the stamp is `now` in
milliseconds modulo a day (Linux reads the wall clock, RFC 791: ms since
midnight UT). The record route slot of a forwarded datagram is filled when it
arrives, so an error about it (time exceeded) already quotes the egress
address where Linux's quotes the ingress one; likewise a failed strict route
is found before the TTL check, where Linux's ip_forward looks at the TTL first.

Offsets here are the options' own (type, length, pointer, slots), as RFC 791
defines them; the fixed header is left to `wire.ipv4`.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

from .route import RouteType
from .route_cache import DstEntry
from .skbuff import PACKET_HOST, SkBuff
from .sysctl import Sysctl
from .wire.icmp import DEST_UNREACH, PARAMETER_PROBLEM, POINTER_INDICATES_ERROR, SR_FAILED
from .wire.ipv4 import (
    IPOPT_END,
    IPOPT_LSRR,
    IPOPT_NOOP,
    IPOPT_RA,
    IPOPT_RR,
    IPOPT_SSRR,
    IPOPT_TS,
    MIN_HEADER_LENGTH,
    refresh_header_checksum,
    set_destination,
)

IPOPT_TS_TSONLY = 0
IPOPT_TS_TSANDADDR = 1
IPOPT_TS_PRESPEC = 3
MS_PER_DAY = 86_400_000
DESTINATION_POINTER = 16  # the destination address field: what a strict route through us points at


class OptionError(Exception):
    """A malformed option: `pointer` is the offset of the offending octet in the header."""

    def __init__(self, pointer: int) -> None:
        super().__init__(f"bad IP option at octet {pointer}")
        self.pointer = pointer


@dataclass(slots=True)
class CompiledOptions:
    """Where the options Linux acts on sit in the header (offsets of their type octet; 0 = absent)."""

    srr: int = 0
    strict_route: bool = False
    rr: int = 0
    rr_needaddr: bool = False
    ts: int = 0
    ts_needaddr: bool = False
    changed: bool = False


def _put_address(header: memoryview, at: int, address: int) -> None:
    header[at:at + 4] = address.to_bytes(4, "big")


def _address(header: memoryview, at: int) -> int:
    return int.from_bytes(header[at:at + 4], "big")


def compile_options(header: memoryview, spec_dst: int, timestamp: int,
                    is_local: Callable[[int], bool]) -> CompiledOptions:
    """ip_options_compile for a received datagram: check the options of `header` (the whole IP header,
    writable) and fill record route and timestamp slots in place; raises OptionError."""
    compiled = CompiledOptions()
    index = MIN_HEADER_LENGTH
    end = len(header)
    while index < end:
        kind = header[index]
        if kind == IPOPT_END:
            for rest in range(index + 1, end):  # Linux rewrites whatever follows End of List as End
                if header[rest] != IPOPT_END:
                    header[rest] = IPOPT_END
                    compiled.changed = True
            break
        if kind == IPOPT_NOOP:
            index += 1
            continue
        remaining = end - index
        if remaining < 2:
            raise OptionError(index)
        length = header[index + 1]
        if length < 2 or length > remaining:
            raise OptionError(index)
        if kind in (IPOPT_LSRR, IPOPT_SSRR):
            if length < 3:
                raise OptionError(index + 1)
            if header[index + 2] < 4:
                raise OptionError(index + 2)
            if compiled.srr:
                raise OptionError(index)  # RFC 1812 5.2.4.1: one source route only
            compiled.srr = index
            compiled.strict_route = kind == IPOPT_SSRR
        elif kind == IPOPT_RR:
            if compiled.rr:
                raise OptionError(index)
            if length < 3:
                raise OptionError(index + 1)
            pointer = header[index + 2]
            if pointer < 4:
                raise OptionError(index + 2)
            if pointer <= length:  # room left (a full option is passed on unchanged)
                if pointer + 3 > length:
                    raise OptionError(index + 2)
                _put_address(header, index + pointer - 1, spec_dst)
                header[index + 2] = pointer + 4
                compiled.rr_needaddr = compiled.changed = True
            compiled.rr = index
        elif kind == IPOPT_TS:
            _timestamp(header, index, length, compiled, spec_dst, timestamp, is_local)
        elif kind == IPOPT_RA:
            if length < 4:
                raise OptionError(index + 1)
        index += length
    return compiled


def _timestamp(header: memoryview, index: int, length: int, compiled: CompiledOptions, spec_dst: int,
               timestamp: int, is_local: Callable[[int], bool]) -> None:
    """The IPOPT_TIMESTAMP case of ip_options_compile."""
    if compiled.ts:
        raise OptionError(index)
    if length < 4:
        raise OptionError(index + 1)
    pointer = header[index + 2]
    if pointer < 5:
        raise OptionError(index + 2)
    flags = header[index + 3]
    mode = flags & 0x0F
    if pointer <= length:
        if pointer + 3 > length:
            raise OptionError(index + 2)
        stamp_at = 0
        if mode == IPOPT_TS_TSONLY:
            stamp_at = index + pointer - 1
            header[index + 2] = pointer + 4
        elif mode in (IPOPT_TS_TSANDADDR, IPOPT_TS_PRESPEC):
            if pointer + 7 > length:
                raise OptionError(index + 2)
            slot = index + pointer - 1
            if mode == IPOPT_TS_TSANDADDR:
                _put_address(header, slot, spec_dst)
                compiled.ts_needaddr = True
            elif not is_local(_address(header, slot)):
                compiled.ts = index  # prespecified for another host: not our turn
                return
            stamp_at = slot + 4
            header[index + 2] = pointer + 8
        if stamp_at:
            _put_address(header, stamp_at, timestamp)
            compiled.changed = True
    elif mode != IPOPT_TS_PRESPEC:
        overflow = flags >> 4
        if overflow == 15:
            raise OptionError(index + 3)
        header[index + 3] = mode | (overflow + 1) << 4
        compiled.changed = True
    compiled.ts = index


class OptionsProcessor:
    """ip_rcv_options for one node: compile, source routes, and the forwarding rewrites."""

    def __init__(self, sysctl: Sysctl, route_lookup: Callable[[int, float], DstEntry | None],
                 address_type: Callable[[int], str], send_error: Callable[..., bool], ip_stats: Any) -> None:
        self.sysctl = sysctl
        self._route_lookup = route_lookup
        self._address_type = address_type
        self._send_error = send_error  # the IPv4 layer's icmp_send
        self._ip_stats = ip_stats  # the IPv4 layer's IpStats: a bad option is one of its InHdrErrors
        self.counters = {"SourceRouteDrops": 0}  # ours: Linux drops them without a counter

    def _is_local(self, address: int) -> bool:
        return self._address_type(address) == RouteType.LOCAL

    def _source_toward(self, address: int, fallback: int, now: float) -> int:
        """The preferred source of our route toward `address` (fib_result_prefsrc, ip_rt_get_source)."""
        entry = self._route_lookup(address, now)
        return int(entry.src) if entry is not None and entry.src is not None else fallback

    def receive(self, skb: SkBuff, header_length: int, src: int, dst: int, now: float) -> int | None:
        """Process the options of the datagram in `skb`; returns the destination to go on with
        (a source route may change it), or None when the datagram was dropped."""
        skb.make_writable()  # ip_rcv_options: skb_cow, options are rewritten in place
        start = skb.data_offset
        header = memoryview(skb.buffer)[start:start + header_length]
        local = self._is_local(dst)
        # fib_compute_spec_dst: our address the sender reached, or our address toward the sender.
        spec_dst = dst if local else self._source_toward(src, 0, now)
        try:
            compiled = compile_options(header, spec_dst, int(now * 1000) % MS_PER_DAY, self._is_local)
        except OptionError as error:
            self._ip_stats.InHdrErrors += 1
            self._send_error(PARAMETER_PROBLEM, POINTER_INDICATES_ERROR, skb.data, now, next_hop_mtu=error.pointer)
            return None
        next_hop = None
        if compiled.srr:
            if not self.sysctl["net.ipv4.conf.all.accept_source_route"]:
                self.counters["SourceRouteDrops"] += 1
                return None
            verdict = self._source_route(skb, header, compiled, dst, local, now)
            if verdict is None:
                return None
            dst, next_hop = verdict
            local = next_hop is None and local
        if not local and self._address_type(dst) == RouteType.UNICAST:
            self._forward_options(header, compiled, dst, next_hop, spec_dst, now)
        if compiled.changed:
            refresh_header_checksum(header)
        return dst

    def _source_route(self, skb: SkBuff, header: memoryview, compiled: CompiledOptions, dst: int, local: bool,
                      now: float) -> tuple[int, int | None] | None:
        """ip_options_rcv_srr: (destination, next hop taken from the route or None), or None if dropped."""
        if skb.pkt_type != PACKET_HOST:
            return None
        if not local:
            if self._address_type(dst) != RouteType.UNICAST:
                return None
            if compiled.strict_route:  # a strict route may not pass through a router it does not name
                self._send_error(PARAMETER_PROBLEM, POINTER_INDICATES_ERROR, skb.data, now,
                                 next_hop_mtu=DESTINATION_POINTER)
                return None
            return dst, None
        option = compiled.srr
        pointer, length = header[option + 2], header[option + 1]
        while pointer <= length:
            if pointer + 3 > length:
                self._send_error(PARAMETER_PROBLEM, POINTER_INDICATES_ERROR, skb.data, now,
                                 next_hop_mtu=option + 2)
                return None
            next_hop = _address(header, option + pointer - 1)
            kind = self._address_type(next_hop)
            if kind != RouteType.LOCAL:
                entry = self._route_lookup(next_hop, now)  # ip_route_input toward the next hop
                if kind != RouteType.UNICAST or entry is None or entry.route.type != RouteType.UNICAST:
                    return None
                break
            set_destination(header, next_hop)  # "superfast loopback forward": a hop that is ours
            dst = next_hop
            compiled.changed = True
            pointer += 4
        else:
            return dst, None  # the route is used up: the datagram is ours
        if compiled.strict_route and entry.next_hop != next_hop:
            self._send_error(DEST_UNREACH, SR_FAILED, skb.data, now)  # ip_forward: sr_failed
            return None
        header[option + 2] = pointer  # ip_forward_options advances it past our slot
        return next_hop, next_hop

    def _forward_options(self, header: memoryview, compiled: CompiledOptions, dst: int, next_hop: int | None,
                         spec_dst: int, now: float) -> None:
        """ip_forward_options: our egress address into record route and the source route."""
        egress = self._source_toward(dst, spec_dst, now)
        if compiled.rr_needaddr:
            _put_address(header, compiled.rr + header[compiled.rr + 2] - 5, egress)
            compiled.changed = True
        if next_hop is not None:
            option = compiled.srr
            pointer = header[option + 2]
            _put_address(header, option + pointer - 1, egress)
            header[option + 2] = pointer + 4
            set_destination(header, next_hop)
            if compiled.ts_needaddr:
                _put_address(header, compiled.ts + header[compiled.ts + 2] - 9, egress)
            compiled.changed = True


__all__ = ["CompiledOptions", "OptionError", "OptionsProcessor", "compile_options"]
