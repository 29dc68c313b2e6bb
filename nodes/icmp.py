"""ICMP: echo, error generation with Linux's rate limits, and error dispatch to protocols.

Before changing this file, read RFC 792, RFC 1122 section 3.2.2 (when never
to send an error: in reply to an error, to a broadcast or multicast, to a
non-first fragment, to an invalid source), RFC 1812 section 4.3.2.8 (rate
limiting), RFC 1191 (frag-needed lowers the path MTU), and Linux
`net/ipv4/icmp.c` (`icmp_send`, `icmpv4_xrlim_allow`, `icmp_global_allow`).

Rate limiting follows Linux: error types in `icmp_ratemask` pass a global
token bucket (`icmp_msgs_per_sec`, `icmp_msgs_burst`) and a per-destination
one (`inet_peer_xrlim_allow`: a token every `icmp_ratelimit` ms, burst of
six). Echo replies are not limited, nor is fragmentation needed (type 3
code 4), whatever the mask says: Linux never limits PMTU discovery.

Echo replies and errors quoting our own echo requests go to listeners
registered by identifier (the kernel's ping and traceroute sessions); errors
quoting other protocols go to the err_handler that protocol registered with
IPv4 (`ipv4.inet_protos`), as Linux's icmp_socket_deliver does.

Seams: ICMP registers with IPv4 as protocol 1 and offers `send_error` to
every layer as `ipv4.icmp_send`; it sends through `ipv4.output` only.
An answer that cannot be sent (no route back, link down) is counted as
OutErrors and dropped: a received datagram never raises out of `receive`.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Callable, Protocol

from .ipv4 import Datagram, IPv4Layer
from .skbuff import PACKET_HOST
from .wire.addresses import IPv4Address
from .wire.errors import WireError
from .wire.icmp import (
    DEST_UNREACH,
    ECHO_REPLY,
    ECHO_REQUEST,
    ERROR_TYPES,
    FRAG_NEEDED,
    PARAMETER_PROBLEM,
    REDIRECT,
    SOURCE_QUENCH,
    TIME_EXCEEDED,
    IcmpMessage,
    QuotedDatagram,
    echo_reply_for,
    echo_request_bytes,
    echo_header,
)
from .sysctl import Sysctl
from .wire.ipv4 import IP_OFFSET, IPPROTO_ICMP, unpack_fixed_header

XRLIM_BURST_FACTOR = 6  # Linux: a peer may burst six errors before the rate applies
MAX_PEERS = 4096  # per-destination limiter state kept (oldest forgotten first)


@dataclass(slots=True)
class IcmpStats:
    """`/proc/net/snmp` Icmp: counters (plus Linux's rate-limit counters)."""

    InMsgs: int = 0
    InErrors: int = 0
    InCsumErrors: int = 0
    InDestUnreachs: int = 0
    InTimeExcds: int = 0
    InParmProbs: int = 0
    InSrcQuenchs: int = 0
    InRedirects: int = 0
    InEchos: int = 0
    InEchoReps: int = 0
    OutMsgs: int = 0
    OutErrors: int = 0
    OutRateLimitGlobal: int = 0
    OutRateLimitHost: int = 0
    OutDestUnreachs: int = 0
    OutTimeExcds: int = 0
    OutParmProbs: int = 0
    OutRedirects: int = 0
    OutEchos: int = 0
    OutEchoReps: int = 0

    def as_dict(self) -> dict[str, int]:
        return asdict(self)


_IN_COUNTER = {
    DEST_UNREACH: "InDestUnreachs",
    TIME_EXCEEDED: "InTimeExcds",
    PARAMETER_PROBLEM: "InParmProbs",
    SOURCE_QUENCH: "InSrcQuenchs",
    REDIRECT: "InRedirects",
    ECHO_REQUEST: "InEchos",
    ECHO_REPLY: "InEchoReps",
}
_OUT_COUNTER = {
    DEST_UNREACH: "OutDestUnreachs",
    TIME_EXCEEDED: "OutTimeExcds",
    PARAMETER_PROBLEM: "OutParmProbs",
    REDIRECT: "OutRedirects",
    ECHO_REQUEST: "OutEchos",
    ECHO_REPLY: "OutEchoReps",
}


class EchoListener(Protocol):
    """Who owns an echo identifier: gets replies and the errors quoting its requests."""

    def echo_reply(self, message: IcmpMessage, datagram: Datagram, now: float) -> None: ...

    def echo_error(self, message: IcmpMessage, quoted: QuotedDatagram, datagram: Datagram, now: float) -> None: ...


class TokenBucket:
    """Linux's xrlim bucket: `interval` seconds per token, at most `burst` tokens."""

    __slots__ = ("interval", "burst", "tokens", "last")

    def __init__(self, interval: float, burst: float, now: float) -> None:
        self.interval = interval
        self.burst = burst
        self.tokens = burst  # a new peer may send its whole burst at once
        self.last = now

    def allow(self, now: float) -> bool:
        self.tokens = min(self.burst, self.tokens + (now - self.last))
        self.last = now
        if self.tokens >= self.interval:
            self.tokens -= self.interval
            return True
        return False


class GlobalLimiter:
    """icmp_global_allow: `per_sec` messages a second with a burst allowance."""

    __slots__ = ("per_sec", "burst", "credit", "last")

    def __init__(self, per_sec: int, burst: int, now: float) -> None:
        self.per_sec = per_sec
        self.burst = burst
        self.credit = float(burst)
        self.last = now

    def allow(self, now: float) -> bool:
        if self.per_sec <= 0:
            return True
        self.credit = min(float(self.burst), self.credit + (now - self.last) * self.per_sec)
        self.last = now
        if self.credit >= 1.0:
            self.credit -= 1.0
            return True
        return False


class IcmpLayer:
    """One node's ICMP: registered with IPv4 as protocol 1 and as its error sender."""

    def __init__(self, ipv4: IPv4Layer, sysctl: Sysctl) -> None:
        self.ipv4 = ipv4
        self.sysctl = sysctl
        self.stats = IcmpStats()
        self.echo_listeners: dict[int, EchoListener] = {}  # by identifier: kernel sessions and ping sockets
        # raw_error(message, quoted, datagram, now): installed by the socket layer for raw sockets
        self.raw_error: Callable[[IcmpMessage, QuotedDatagram, Datagram, float], None] | None = None
        self._peers: dict[int, TokenBucket] = {}
        self._global = GlobalLimiter(sysctl["net.ipv4.icmp_msgs_per_sec"], sysctl["net.ipv4.icmp_msgs_burst"], 0.0)
        ipv4.add_protocol(IPPROTO_ICMP, self.receive, self._echo_error)
        ipv4.register_icmp_sender(self.send_error)

    # ------------------------------------------------------------------ input

    def receive(self, datagram: Datagram, now: float) -> None:
        """icmp_rcv: verify, count, answer echoes, dispatch errors."""
        stats = self.stats
        stats.InMsgs += 1
        payload = memoryview(datagram.packet)[datagram.header_length:]  # datagram.payload, without the call
        reply = echo_reply_for(payload)
        if reply is not None:
            # Every valid echo request (right checksum) is answered here, from its own bytes
            # (icmp_echo -> icmp_reply); the general path below never sees one.
            stats.InEchos += 1
            sysctl = self.sysctl
            if sysctl["net.ipv4.icmp_echo_ignore_all"]:
                return
            # icmp_echo's RTCF_BROADCAST|RTCF_MULTICAST: the IP destination decides, not the frame's
            # (our unicast address inside a link-layer broadcast is answered, as Linux does).
            if datagram.dst in self.ipv4.broadcast_addresses or datagram.dst >> 28 == 0xE:
                if sysctl["net.ipv4.icmp_echo_ignore_broadcasts"]:
                    return
                source = None  # answer from the address of the interface, not the broadcast address
            else:
                source = datagram.dst
            try:
                self.ipv4.output(datagram.src, IPPROTO_ICMP, reply, now, src=source, tos=datagram.tos)
            except OSError:
                # A reply that cannot be routed back is counted and dropped, never raised out
                # of the receive path; ipv4.output counted why (OutNoRoutes, OutDiscards...).
                stats.OutErrors += 1
                return
            stats.OutMsgs += 1
            stats.OutEchoReps += 1
            return
        try:
            message = IcmpMessage.parse(payload, verify_checksum=True)
        except WireError as error:
            stats.InErrors += 1
            if error.reason == "bad checksum":
                stats.InCsumErrors += 1
            return
        counter = _IN_COUNTER.get(message.type)
        if counter is not None:
            setattr(stats, counter, getattr(stats, counter) + 1)
        kind = message.type
        if kind == ECHO_REPLY:
            listener = self.echo_listeners.get(message.identifier)
            if listener is not None:
                listener.echo_reply(message, datagram, now)
        elif kind in ERROR_TYPES:
            self._dispatch_error(message, datagram, now)

    def _dispatch_error(self, message: IcmpMessage, datagram: Datagram, now: float) -> None:
        """icmp_unreach and friends: hand the error to the protocol of the quoted datagram."""
        try:
            quoted = message.quoted_header()
        except WireError:
            self.stats.InErrors += 1
            return
        protocol = self.ipv4.inet_protos.get(quoted.header.protocol)
        if message.type == DEST_UNREACH and message.code == FRAG_NEEDED:
            # RFC 1191: the router told us the next-hop MTU toward the quoted destination; a protocol
            # that vets errors first (TCP: tcp_v4_err's sequence check) applies it itself.
            if protocol is None or not protocol.own_pmtu:
                self.ipv4.update_pmtu(quoted.header.dst, message.next_hop_mtu, now)
        elif message.type == REDIRECT:
            self._redirect(message, quoted, datagram, now)
        if quoted.header.protocol in self.ipv4.raw_protocols and self.raw_error is not None:
            self.raw_error(message, quoted, datagram, now)  # icmp_socket_deliver: raw_icmp_error first
        if protocol is not None:
            protocol.err_handler(message, quoted, datagram, now)

    def _redirect(self, message: IcmpMessage, quoted: QuotedDatagram, datagram: Datagram, now: float) -> None:
        """icmp_redirect -> __ip_do_redirect: our gateway names a better first hop toward the quoted
        destination (RFC 1122 3.2.2.2); kept in the route cache.

        Linux applies it from each protocol's err_handler (udp_err, ping_err, tcp_v4_err...), so a
        redirect about a datagram no socket owns any more is lost there; here it always applies.
        """
        sysctl = self.sysctl
        if (message.code & 7) > 3 or message.gateway is None or not sysctl["net.ipv4.conf.all.accept_redirects"]:
            return
        self.ipv4.route_cache.ip_do_redirect(
            quoted.header.dst, datagram.src, message.gateway, datagram.dev, now,
            shared_media=bool(sysctl["net.ipv4.conf.all.shared_media"]),
            secure=bool(sysctl["net.ipv4.conf.all.secure_redirects"]),
            expires=float(sysctl["net.ipv4.route.gc_timeout"]))

    def _echo_error(self, message: IcmpMessage, quoted: QuotedDatagram, datagram: Datagram, now: float) -> None:
        """An error quoting one of our ICMP messages: find the echo session by identifier."""
        echo = echo_header(quoted.transport_bytes)
        if echo is None:
            return
        listener = self.echo_listeners.get(echo[0])
        if listener is not None:
            listener.echo_error(message, quoted, datagram, now)

    # ----------------------------------------------------------------- output

    def send_echo_request(self, dst: int, identifier: int, sequence: int, data: bytes, now: float, *,
                          ttl: int | None = None, src: int | None = None, dont_fragment: bool = False) -> None:
        """Originate an echo request; raises OSError from the output path (e.g. ENETUNREACH)."""
        # `_transmit(IcmpMessage.echo_request(...))` without the message object: every ping's echo.
        self.ipv4.output(dst, IPPROTO_ICMP, echo_request_bytes(identifier, sequence, data), now, ttl=ttl, src=src,
                         dont_fragment=dont_fragment)
        stats = self.stats
        stats.OutMsgs += 1
        stats.OutEchos += 1

    def send_error(self, kind: int, code: int, original: "bytes | memoryview", now: float, *,
                   next_hop_mtu: int = 0, gateway: int = 0) -> bool:
        """icmp_send: an error about `original` (a whole IPv4 datagram) to its source; False if suppressed.

        `gateway` is a redirect's new first hop (ip_rt_send_redirect rate-limits those itself).
        """
        stats = self.stats
        if len(original) < 20:
            return False
        version_ihl, original_tos, _, _, flags, _, protocol, _, src, dst = unpack_fixed_header(original)
        src = IPv4Address.from_wire(src)
        ipv4 = self.ipv4
        # RFC 1122 3.2.2: never about a datagram to a broadcast/multicast address, from an
        # invalid source, about a non-first fragment, or about an ICMP error.
        if dst in ipv4.broadcast_addresses or dst >> 28 == 0xE:
            return False
        if src == 0 or src >> 28 >= 0xE or src in ipv4.broadcast_addresses or src >> 24 == 127 and dst >> 24 != 127:
            return False
        if flags & IP_OFFSET:
            return False
        header_length = (version_ihl & 0x0F) << 2
        if protocol == IPPROTO_ICMP and len(original) > header_length:
            inner_type = original[header_length]
            if inner_type in ERROR_TYPES or inner_type > 18:
                return False
        if not self._rate_allowed(kind, code, src, now):
            return False
        if kind == DEST_UNREACH:
            message = IcmpMessage.destination_unreachable(code, original, next_hop_mtu)
        elif kind == TIME_EXCEEDED:
            message = IcmpMessage.time_exceeded(code, original)
        elif kind == PARAMETER_PROBLEM:
            message = IcmpMessage.parameter_problem(next_hop_mtu, original, code)
        elif kind == REDIRECT:
            message = IcmpMessage.redirect(code, IPv4Address(gateway), original)
        else:
            raise ValueError(f"not an ICMP error type we originate: {kind}")
        # The error comes from the address the datagram was sent to when that is ours
        # (port unreachable), else from our address toward the sender (icmp_send).
        source = dst if dst in ipv4.local_addresses or ipv4.address_type(dst) == "local" else None
        tos = (original_tos & 0x1E) | 0xC0  # IPTOS_PREC_INTERNETCONTROL
        try:
            self._transmit(message, src, now, src=source, tos=tos)
        except OSError:
            stats.OutErrors += 1
            return False
        return True

    def _rate_allowed(self, kind: int, code: int, destination: int, now: float) -> bool:
        sysctl = self.sysctl
        if kind == DEST_UNREACH and code == FRAG_NEEDED:
            return True  # icmpv4_mask_allow: "don't limit PMTU discovery", whatever icmp_ratemask says
        if not (sysctl["net.ipv4.icmp_ratemask"] >> kind) & 1:
            return True
        if destination >> 24 == 127 or destination in self.ipv4.local_addresses:
            return True  # Linux never limits errors to itself (loopback)
        limiter = self._global
        limiter.per_sec = sysctl["net.ipv4.icmp_msgs_per_sec"]
        limiter.burst = sysctl["net.ipv4.icmp_msgs_burst"]
        if not limiter.allow(now):
            self.stats.OutRateLimitGlobal += 1
            return False
        interval = sysctl["net.ipv4.icmp_ratelimit"] / 1000.0
        if interval <= 0:
            return True
        peer = self._peers.get(destination)
        if peer is None:
            if len(self._peers) >= MAX_PEERS:
                self._peers.pop(next(iter(self._peers)))
            peer = self._peers[destination] = TokenBucket(interval, XRLIM_BURST_FACTOR * interval, now)
        else:
            peer.interval, peer.burst = interval, XRLIM_BURST_FACTOR * interval
        if peer.allow(now):
            return True
        self.stats.OutRateLimitHost += 1
        return False

    def _transmit(self, message: IcmpMessage, dst: int, now: float, **output_args: Any) -> None:
        """Out through ipv4.output (which raises OSError); counted once it is on its way (icmp_out_count)."""
        self.ipv4.output(dst, IPPROTO_ICMP, message.build(), now, **output_args)
        stats = self.stats
        stats.OutMsgs += 1
        counter = _OUT_COUNTER.get(message.type)
        if counter is not None:
            setattr(stats, counter, getattr(stats, counter) + 1)

    def out_count(self, kind: int) -> None:
        """icmp_out_count: a message a socket sent (ping and raw sockets build their own)."""
        stats = self.stats
        stats.OutMsgs += 1
        counter = _OUT_COUNTER.get(kind)
        if counter is not None:
            setattr(stats, counter, getattr(stats, counter) + 1)

    def free_identifier(self, preferred: int) -> int:
        """An echo identifier not in use, starting from `preferred` (ping uses its PID)."""
        identifier = preferred & 0xFFFF
        while identifier in self.echo_listeners:
            identifier = (identifier + 1) & 0xFFFF
        return identifier

    def counters(self) -> dict[str, int]:
        return self.stats.as_dict()


__all__ = ["IcmpLayer", "IcmpStats", "EchoListener", "TokenBucket", "GlobalLimiter", "PACKET_HOST"]
