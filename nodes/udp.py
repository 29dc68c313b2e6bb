"""UDP: port table, demultiplexing, ICMP port unreachable, error delivery.

Before changing this file, read RFC 768, RFC 1122 section 4.1.3 (what a UDP
receiver must do: checksums, port unreachable, ICMP errors to the
application) and seed 001's INET socket section. Linux equivalents:
`udp_rcv`/`__udp4_lib_lookup` (exact binding first, then wildcard),
`udp_err`, `udp_lib_get_port` (ephemeral range `ip_local_port_range`).

The kernel-side half of a UDP socket is a `UdpEndpoint` (struct udp_sock,
reduced): its binding, its receive queue bounded in bytes like `SO_RCVBUF`,
and the pending error (`sk_err`). The socket layer (`nodes/socket/`) sits
on these endpoints through two callbacks (`on_receive`, `on_error`); the
kernel's traceroute and the control ops use them directly.

The port table is Linux's `udp_table` by port (`hash`: port -> endpoints,
the most recently bound first, as `hlist_add_head` leaves them):

* bind (`get_port`, udp_lib_lport_inuse): two endpoints conflict when their
  receive addresses overlap (equal, or either a wildcard; an IPv6-only socket
  has no IPv4 part, a dual-stack `::` socket has both) unless both set
  SO_REUSEADDR, or both set SO_REUSEPORT (same owner). Addresses must be
  local, broadcast or multicast by the FIB's local table (inet_addr_type),
  so every 127.x.y.z is bindable.
* unicast input (`lookup4`, __udp4_lib_lookup + compute_score): the best
  score wins (an AF_INET socket 2, a dual-stack one 1, +4 for each of a
  matching bound address, connected peer address and peer port); the first
  at that score wins, i.e. the last bound; a SO_REUSEPORT winner hands the
  datagram to a member of its group chosen by a hash of the 4-tuple.
* broadcast input (`mcast_targets`, __udp4_lib_mcast_deliver): a copy to
  every matching socket; none counts `IgnoredMulti`, never NoPorts or ICMP.
"""
from __future__ import annotations

import errno
from collections import deque
from dataclasses import asdict, dataclass
from random import Random
from typing import Any, Callable
from zlib import crc32

from .ipv4 import LOOPBACK_ADDRESS, Datagram, IPv4Layer
from .skbuff import PACKET_HOST, SKB_TRUESIZE_OVERHEAD
from .wire.addresses import IPv4Address
from .wire.errors import WireError
from .wire.icmp import DEST_UNREACH, FRAG_NEEDED, PORT_UNREACH, IcmpMessage, QuotedDatagram
from .wire.ipv4 import IPPROTO_UDP
from .wire.udp import UdpHeader, checksum_ok, quoted_ports

EPHEMERAL_LOW, EPHEMERAL_HIGH = 32768, 60999  # Linux net.ipv4.ip_local_port_range (the knob's default)
DEFAULT_RCVBUF = 212992  # Linux net.core.rmem_default
_LOCAL_TYPES = ("local", "broadcast", "multicast")  # inet_addr_valid_or_nonlocal

# RFC 1122 4.1.3.3 with Linux's icmp_err_convert (net/ipv4/icmp.c): unreachable code -> (errno, fatal).
_UNREACH = (
    (errno.ENETUNREACH, False),  # 0 net unreachable
    (errno.EHOSTUNREACH, False),  # 1 host unreachable
    (errno.ENOPROTOOPT, True),  # 2 protocol unreachable
    (errno.ECONNREFUSED, True),  # 3 port unreachable
    (errno.EMSGSIZE, False),  # 4 fragmentation needed
    (errno.EOPNOTSUPP, False),  # 5 source route failed
    (errno.ENETUNREACH, True),  # 6 net unknown
    (errno.EHOSTDOWN, True),  # 7 host unknown
    (errno.ENONET, True),  # 8 host isolated
    (errno.ENETUNREACH, True),  # 9 net prohibited
    (errno.EHOSTUNREACH, True),  # 10 host prohibited
    (errno.ENETUNREACH, False),  # 11 net unreachable for TOS
    (errno.EHOSTUNREACH, False),  # 12 host unreachable for TOS
    (errno.EHOSTUNREACH, True),  # 13 administratively filtered
    (errno.EHOSTUNREACH, True),  # 14 precedence violation
    (errno.EHOSTUNREACH, True),  # 15 precedence cut-off
)


def icmp_errno(message: IcmpMessage) -> int:
    """The errno an ICMP error means to a socket (Linux icmp_err_convert)."""
    if message.type == DEST_UNREACH:
        return _UNREACH[message.code][0] if message.code < len(_UNREACH) else errno.EHOSTUNREACH
    if message.type == 11:
        return errno.EHOSTUNREACH
    return errno.EPROTO


def icmp_error_report(message: IcmpMessage, *, ping: bool = False, pmtudisc: bool = True) -> tuple[int, bool] | None:
    """(errno, hard) a socket is told of an ICMP error, or None when it is not an error for it.

    __udp4_lib_err and ping_err (net/ipv4/udp.c, ping.c): time exceeded is a soft
    EHOSTUNREACH, parameter problem a hard EPROTO, frag-needed a hard EMSGSIZE unless
    IP_PMTUDISC_DONT; source quench and redirect are ignored by UDP, a soft
    EREMOTEIO for ping ("ping wants to see it").
    """
    kind = message.type
    if kind == DEST_UNREACH:
        if message.code == FRAG_NEEDED:
            return (errno.EMSGSIZE, True) if pmtudisc else None
        return _UNREACH[message.code] if message.code < len(_UNREACH) else (errno.EHOSTUNREACH, False)
    if kind == 12:
        return errno.EPROTO, True
    if kind in (4, 5):
        return (errno.EREMOTEIO, False) if ping else None
    return errno.EHOSTUNREACH, False


@dataclass(slots=True)
class UdpStats:
    """`/proc/net/snmp` Udp: counters."""

    InDatagrams: int = 0
    NoPorts: int = 0
    InErrors: int = 0
    OutDatagrams: int = 0
    RcvbufErrors: int = 0
    SndbufErrors: int = 0
    InCsumErrors: int = 0
    IgnoredMulti: int = 0

    def as_dict(self) -> dict[str, int]:
        return asdict(self)


class UdpEndpoint:
    """The kernel side of one UDP socket (struct udp_sock, reduced).

    `address` is the IPv4 receive address (inet_rcv_saddr, 0 = any) and
    `source` the address sends come from (inet_saddr, 0 = chosen by the
    route); `v4` is False for an IPv6-only socket, `v6_any` True for an
    AF_INET6 socket bound to `::`; `hashed` while it holds its port.
    """

    def __init__(self, layer: "UdpLayer", address: int = 0, port: int = 0, rcvbuf: int = DEFAULT_RCVBUF, *,
                 family_inet6: bool = False) -> None:
        self.layer = layer
        self.address = IPv4Address.from_wire(address)
        self.source = self.address
        self.port = port
        self.family_inet6 = family_inet6
        self.v4 = True
        self.v6_any = False
        self.reuseaddr = False
        self.reuseport = False
        self.owner = 0  # uid for SO_REUSEPORT groups
        self.hashed = False
        self.rcvbuf = rcvbuf
        self.queued_bytes = 0  # truesize of what waits in the receive queue (sk_rmem_alloc)
        self.receive_queue: deque[tuple[bytes, tuple[str, int]]] = deque()
        self.peer: tuple[int, int] | None = None  # connect()ed destination
        self.error = 0  # sk_err: reported once, on the next call
        self.drops = 0
        # on_receive(data, source, datagram) -> False when dropped (SO_RCVBUF full); anything else: queued
        self.on_receive: Callable[[bytes, tuple[str, int], Datagram], Any] | None = None
        self.on_error: Callable[[IcmpMessage, QuotedDatagram, Datagram, float], None] | None = None
        self.closed = False

    def deliver(self, data: bytes, source: tuple[str, int], datagram: Datagram) -> bool:
        """Queue a datagram for the application; False (dropped) when SO_RCVBUF is full."""
        if self.on_receive is not None:
            return self.on_receive(data, source, datagram) is not False
        cost = len(data) + SKB_TRUESIZE_OVERHEAD
        if self.queued_bytes > self.rcvbuf:  # __udp_enqueue_schedule_skb: over the limit before this one
            self.drops += 1
            return False
        self.queued_bytes += cost
        self.receive_queue.append((data, source))
        return True

    def recvfrom(self) -> tuple[bytes, tuple[str, int]] | None:
        """The oldest queued datagram, or None when the queue is empty."""
        if not self.receive_queue:
            return None
        data, source = self.receive_queue.popleft()
        self.queued_bytes -= len(data) + SKB_TRUESIZE_OVERHEAD
        self.layer.stats.InDatagrams += 1  # udp_recvmsg counts what the application reads
        return data, source

    def take_error(self) -> int:
        """SO_ERROR: the pending error, cleared by reading it."""
        error, self.error = self.error, 0
        return error

    def sendto(self, data: bytes, address: int, port: int, now: float, *, ttl: int | None = None) -> None:
        self.layer.sendto(self, data, address, port, now, ttl=ttl)

    def close(self) -> None:
        self.layer.unbind(self)

    def overlaps(self, other: "UdpEndpoint") -> bool:
        """inet_rcv_saddr_equal(match_wildcard=true) across the IPv4 and dual-stack views."""
        if self.v4 and other.v4 and (not self.address or not other.address or self.address == other.address):
            return True
        return self.v6_any and other.v6_any

    def describe(self) -> dict:
        return {
            "proto": "udp6" if self.family_inet6 else "udp",
            "local": f"{'*' if self.v6_any else self.address}:{self.port}",
            "peer": f"{IPv4Address.from_wire(self.peer[0])}:{self.peer[1]}" if self.peer else "*:*",
            "state": "ESTAB" if self.peer else "UNCONN",
            "recv_q": self.queued_bytes,
            "drops": self.drops,
        }


def _reuseport_hash(saddr: int, sport: int, daddr: int, dport: int) -> int:
    """udp_ehashfn's role: one flow always reaches the same member of a SO_REUSEPORT group."""
    return crc32(saddr.to_bytes(4, "big") + sport.to_bytes(2, "big") + daddr.to_bytes(4, "big") + dport.to_bytes(2, "big"))


class UdpLayer:
    """One node's UDP: registered with IPv4 as protocol 17."""

    def __init__(self, ipv4: IPv4Layer, rng: Random) -> None:
        self.ipv4 = ipv4
        self.rng = rng
        self.stats = UdpStats()
        self.hash: dict[int, list[UdpEndpoint]] = {}  # udp_table by port, most recently bound first
        ipv4.add_protocol(IPPROTO_UDP, self.receive, self.error)

    # --------------------------------------------------------------- binding

    @property
    def bindings(self) -> dict[tuple[int, int], UdpEndpoint]:
        """(address, port) -> the endpoint unicast reaches there (the last bound): a view for tables and ops."""
        view: dict[tuple[int, int], UdpEndpoint] = {}
        for port, endpoints in self.hash.items():
            for endpoint in endpoints:
                view.setdefault((endpoint.address, port), endpoint)
        return view

    def port_range(self) -> tuple[int, int]:
        sysctl = self.ipv4.sysctl
        value = sysctl.get("net.ipv4.ip_local_port_range", (EPHEMERAL_LOW, EPHEMERAL_HIGH))
        return value[0], value[1]

    def bind(self, address: int = 0, port: int = 0, *, reuse: bool = False, reuseport: bool = False) -> UdpEndpoint:
        """inet_bind + udp_lib_get_port for the kernel's own users; OSError EADDRINUSE / EADDRNOTAVAIL like Linux."""
        self.check_address(address)
        endpoint = UdpEndpoint(self, address)
        endpoint.reuseaddr, endpoint.reuseport = reuse, reuseport
        self.get_port(endpoint, port)
        return endpoint

    def check_address(self, address: int) -> None:
        """inet_bind: EADDRNOTAVAIL unless `address` is any, or local/broadcast/multicast in the local table."""
        if address and self.ipv4.address_type(address) not in _LOCAL_TYPES:
            raise OSError(errno.EADDRNOTAVAIL, "Cannot assign requested address")

    def _in_use(self, endpoint: UdpEndpoint, port: int) -> bool:
        """udp_lib_lport_inuse: a conflicting endpoint already holds `port`."""
        for other in self.hash.get(port, ()):
            if other is endpoint or not other.overlaps(endpoint):
                continue
            if other.reuseaddr and endpoint.reuseaddr:
                continue
            if other.reuseport and endpoint.reuseport and other.owner == endpoint.owner:
                continue
            return True
        return False

    def get_port(self, endpoint: UdpEndpoint, port: int = 0) -> int:
        """udp_lib_get_port: hash `endpoint` on `port`, or on a free ephemeral port when 0.

        EADDRINUSE when taken or when no ephemeral port is free (inet_bind's errno;
        an autobind turns the latter into EAGAIN, as inet_autobind does)."""
        if port == 0:
            low, high = self.port_range()
            span = high - low + 1
            first = self.rng.randrange(span)  # udp_lib_get_port starts at a random offset in the range
            for step in range(span):
                candidate = low + (first + step) % span
                if not self._in_use(endpoint, candidate):
                    port = candidate
                    break
            else:
                raise OSError(errno.EADDRINUSE, "Address already in use")
        elif self._in_use(endpoint, port):
            raise OSError(errno.EADDRINUSE, "Address already in use")
        endpoint.port = port
        endpoint.closed = False
        self.hash.setdefault(port, []).insert(0, endpoint)  # hlist_add_head: the last bound is found first
        endpoint.hashed = True
        return port

    def unbind(self, endpoint: UdpEndpoint) -> None:
        """udp_lib_unhash: the port is free again for everyone else (close, or an autobound disconnect)."""
        endpoints = self.hash.get(endpoint.port)
        if endpoints is not None and endpoint in endpoints:
            endpoints.remove(endpoint)
            if not endpoints:
                del self.hash[endpoint.port]
        endpoint.hashed = False
        endpoint.closed = True

    def lookup(self, address: int, port: int) -> UdpEndpoint | None:
        """The endpoint bound to exactly `address`:`port`, else to the wildcard there (the control ops' view)."""
        bindings = self.bindings
        return bindings.get((address, port)) or bindings.get((0, port))

    def lookup4(self, saddr: int, sport: int, daddr: int, dport: int) -> UdpEndpoint | None:
        """__udp4_lib_lookup: the best-scoring endpoint for a unicast datagram (see the module docstring)."""
        best: UdpEndpoint | None = None
        best_score = -1
        for endpoint in self.hash.get(dport, ()):
            if not endpoint.v4:
                continue
            score = 1 if endpoint.family_inet6 else 2  # compute_score: PF_INET sockets first
            if endpoint.address:
                if endpoint.address != daddr:
                    continue
                score += 4
            peer = endpoint.peer
            if peer is not None:
                if peer[0] and peer[0] != saddr:
                    continue
                if peer[1] and peer[1] != sport:
                    continue
                score += 4 * (bool(peer[0]) + bool(peer[1]))
            if score > best_score:
                best, best_score = endpoint, score
        if best is not None and best.reuseport and best.peer is None:
            group = [e for e in reversed(self.hash[dport]) if e.reuseport and e.peer is None and e.v4
                     and e.address == best.address and e.owner == best.owner and e.family_inet6 == best.family_inet6]
            best = group[_reuseport_hash(saddr, sport, daddr, dport) % len(group)]  # reuseport_select_sock
        return best

    def mcast_targets(self, saddr: int, sport: int, daddr: int, dport: int) -> list[UdpEndpoint]:
        """__udp4_lib_mcast_deliver/__udp_is_mcast_sock: every endpoint a broadcast reaches."""
        targets = []
        for endpoint in self.hash.get(dport, ()):
            if not endpoint.v4 or (endpoint.address and endpoint.address != daddr):
                continue
            peer = endpoint.peer
            if peer is not None and ((peer[0] and peer[0] != saddr) or (peer[1] and peer[1] != sport)):
                continue
            targets.append(endpoint)
        return targets

    # ----------------------------------------------------------------- input

    def receive(self, datagram: Datagram, now: float) -> None:
        """udp_rcv: check, demultiplex, deliver or answer port unreachable."""
        stats = self.stats
        payload = datagram.payload
        try:
            header = UdpHeader.parse(payload)
        except WireError:
            stats.InErrors += 1
            return
        if not checksum_ok(payload, datagram.src, datagram.dst):
            stats.InCsumErrors += 1
            stats.InErrors += 1
            return
        data = bytes(payload[8:header.length])
        source = (str(datagram.src), header.src_port)
        dst = datagram.dst
        if dst in self.ipv4.broadcast_addresses or dst >> 28 == 0xE:  # by the IP destination, as RTCF_BROADCAST
            targets = self.mcast_targets(datagram.src, header.src_port, dst, header.dst_port)
            if not targets:
                stats.IgnoredMulti += 1  # __udp4_lib_mcast_deliver: no socket, no ICMP, not NoPorts
            for endpoint in targets:
                self._queue(endpoint, data, source, datagram)
            return
        endpoint = self.lookup4(datagram.src, header.src_port, dst, header.dst_port)
        if endpoint is None:
            stats.NoPorts += 1
            if datagram.pkt_type == PACKET_HOST:  # __icmp_send: no replies to link-layer broadcast
                self.ipv4.icmp_send(DEST_UNREACH, PORT_UNREACH, datagram.packet, now)
            return
        self._queue(endpoint, data, source, datagram)

    def _queue(self, endpoint: UdpEndpoint, data: bytes, source: tuple[str, int], datagram: Datagram) -> None:
        """__udp_queue_rcv_skb: a full receive buffer counts RcvbufErrors and InErrors (InDatagrams when read)."""
        if not endpoint.deliver(data, source, datagram):
            stats = self.stats
            stats.RcvbufErrors += 1
            stats.InErrors += 1

    def error(self, message: IcmpMessage, quoted: QuotedDatagram, datagram: Datagram, now: float) -> None:
        """__udp4_lib_err: an ICMP error about a datagram we sent goes to the socket that sent it."""
        if message.type in (4, 5):
            return  # source quench and redirect: never an error for UDP, even with IP_RECVERR
        ports = quoted_ports(quoted.transport_bytes)
        if ports is None:
            return
        # The lookup of the sender: the quoted datagram's addresses and ports, reversed.
        endpoint = self.lookup4(quoted.header.dst, ports[1], quoted.header.src, ports[0])
        if endpoint is None:
            return
        if endpoint.on_error is not None:
            endpoint.on_error(message, quoted, datagram, now)
            return
        report = icmp_error_report(message, pmtudisc=False)
        # Without IP_RECVERR, Linux reports only hard errors, and only to connected sockets.
        if report is not None and report[1] and endpoint.peer is not None:
            endpoint.error = report[0]

    # ---------------------------------------------------------------- output

    def sendto(self, endpoint: UdpEndpoint, data: bytes, address: int, port: int, now: float, *,
               ttl: int | None = None, tos: int = 0, dont_fragment: bool = False, src: int | None = None) -> None:
        """udp_sendmsg: build the datagram (checksum over the pseudo-header) and hand it to IPv4."""
        if not 0 < port <= 0xFFFF:
            raise OSError(errno.EINVAL, "Invalid argument")
        if len(data) > 0xFFFF - 8 - 20:
            raise OSError(errno.EMSGSIZE, "Message too long")
        ipv4 = self.ipv4
        source = src or endpoint.source
        if not address:
            address = source or LOOPBACK_ADDRESS  # ip_route_output_key_hash_rcu: 0.0.0.0 is this host
        if not source:
            entry = ipv4.route_output(address, now)
            source = entry.src if entry.src is not None else IPv4Address.from_wire(address)
        segment = UdpHeader(endpoint.port, port).build(data, source, address)
        ipv4.output(address, IPPROTO_UDP, segment, now, src=source, ttl=ttl, tos=tos, dont_fragment=dont_fragment)
        self.stats.OutDatagrams += 1

    def counters(self) -> dict[str, int]:
        return self.stats.as_dict()

    def table(self) -> list[dict]:
        return [endpoint.describe() for endpoints in self.hash.values() for endpoint in endpoints]
