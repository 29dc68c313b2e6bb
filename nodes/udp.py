"""UDP: port table, demultiplexing, ICMP port unreachable, error delivery.

Before changing this file, read RFC 768, RFC 1122 section 4.1.3 (what a UDP
receiver must do: checksums, port unreachable, ICMP errors to the
application) and seed 001's INET socket section. Linux equivalents:
`udp_rcv`/`__udp4_lib_lookup` (exact binding first, then wildcard),
`udp_err`, `udp_lib_get_port` (ephemeral range `ip_local_port_range`).

The kernel-side half of a UDP socket is a `UdpEndpoint`: its binding, its
receive queue bounded in bytes like `SO_RCVBUF`, and the pending error
(`sk_err`). The socket API arrives later and sits on these endpoints; the
kernel's traceroute already uses one through callbacks.
"""
from __future__ import annotations

import errno
from collections import deque
from dataclasses import asdict, dataclass
from random import Random
from typing import Callable

from .ipv4 import Datagram, IPv4Layer
from .skbuff import PACKET_HOST, SKB_TRUESIZE_OVERHEAD
from .wire.addresses import IPv4Address
from .wire.errors import WireError
from .wire.icmp import DEST_UNREACH, FRAG_NEEDED, PORT_UNREACH, IcmpMessage, QuotedDatagram
from .wire.ipv4 import IPPROTO_UDP
from .wire.udp import UdpHeader, checksum_ok, quoted_ports

EPHEMERAL_LOW, EPHEMERAL_HIGH = 32768, 60999  # Linux net.ipv4.ip_local_port_range
DEFAULT_RCVBUF = 212992  # Linux net.core.rmem_default

# RFC 1122 4.1.3.3 with Linux's icmp_err_convert: ICMP unreachable codes -> errno.
_UNREACH_ERRNO = {
    0: errno.ENETUNREACH,
    1: errno.EHOSTUNREACH,
    2: errno.ENOPROTOOPT,
    3: errno.ECONNREFUSED,
    4: errno.EMSGSIZE,
    5: errno.EOPNOTSUPP,
    6: errno.ENETUNREACH,
    7: errno.EHOSTDOWN,
    9: errno.ENETUNREACH,
    10: errno.EHOSTUNREACH,
    13: errno.EHOSTUNREACH,
}


def icmp_errno(message: IcmpMessage) -> int:
    """The errno an ICMP error means to a socket (Linux icmp_err_convert)."""
    if message.type == DEST_UNREACH:
        return _UNREACH_ERRNO.get(message.code, errno.EHOSTUNREACH)
    if message.type == 11:
        return errno.EHOSTUNREACH
    return errno.EPROTO


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

    def as_dict(self) -> dict[str, int]:
        return asdict(self)


class UdpEndpoint:
    """The kernel side of one UDP socket (struct udp_sock, reduced)."""

    def __init__(self, layer: "UdpLayer", address: int, port: int, rcvbuf: int = DEFAULT_RCVBUF) -> None:
        self.layer = layer
        self.address = IPv4Address.from_wire(address)
        self.port = port
        self.rcvbuf = rcvbuf
        self.queued_bytes = 0  # truesize of what waits in the receive queue (sk_rmem_alloc)
        self.receive_queue: deque[tuple[bytes, tuple[str, int]]] = deque()
        self.peer: tuple[int, int] | None = None  # connect()ed destination
        self.error = 0  # sk_err: reported once, on the next call
        self.drops = 0
        self.on_receive: Callable[[bytes, tuple[str, int], Datagram], None] | None = None
        self.on_error: Callable[[IcmpMessage, QuotedDatagram, Datagram, float], None] | None = None
        self.closed = False

    def deliver(self, data: bytes, source: tuple[str, int], datagram: Datagram) -> bool:
        """Queue a datagram for the application; False (dropped) when SO_RCVBUF is full."""
        if self.on_receive is not None:
            self.on_receive(data, source, datagram)
            return True
        cost = len(data) + SKB_TRUESIZE_OVERHEAD
        if self.queued_bytes + cost > self.rcvbuf:
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
        return data, source

    def take_error(self) -> int:
        """SO_ERROR: the pending error, cleared by reading it."""
        error, self.error = self.error, 0
        return error

    def sendto(self, data: bytes, address: int, port: int, now: float, *, ttl: int | None = None) -> None:
        self.layer.sendto(self, data, address, port, now, ttl=ttl)

    def close(self) -> None:
        self.layer.unbind(self)

    def describe(self) -> dict:
        return {
            "proto": "udp",
            "local": f"{self.address}:{self.port}",
            "peer": f"{IPv4Address.from_wire(self.peer[0])}:{self.peer[1]}" if self.peer else "*:*",
            "state": "ESTAB" if self.peer else "UNCONN",
            "recv_q": self.queued_bytes,
            "drops": self.drops,
        }


class UdpLayer:
    """One node's UDP: registered with IPv4 as protocol 17."""

    def __init__(self, ipv4: IPv4Layer, rng: Random) -> None:
        self.ipv4 = ipv4
        self.stats = UdpStats()
        self.bindings: dict[tuple[int, int], UdpEndpoint] = {}
        self._next_ephemeral = EPHEMERAL_LOW + rng.randrange(EPHEMERAL_HIGH - EPHEMERAL_LOW)
        ipv4.add_protocol(IPPROTO_UDP, self.receive, self.error)

    # --------------------------------------------------------------- binding

    def bind(self, address: int = 0, port: int = 0, *, reuse: bool = False) -> UdpEndpoint:
        """inet_bind + udp_lib_get_port; OSError EADDRINUSE / EADDRNOTAVAIL like Linux."""
        ipv4 = self.ipv4
        if address and address not in ipv4.local_addresses and address not in ipv4.broadcast_addresses:
            raise OSError(errno.EADDRNOTAVAIL, "Cannot assign requested address")
        if port == 0:
            port = self._ephemeral(address)
        elif self._conflicts(address, port) and not reuse:
            raise OSError(errno.EADDRINUSE, "Address already in use")
        endpoint = UdpEndpoint(self, address, port)
        self.bindings[(address, port)] = endpoint
        return endpoint

    def _conflicts(self, address: int, port: int) -> bool:
        if (address, port) in self.bindings:
            return True
        if address == 0:
            return any(bound_port == port for _, bound_port in self.bindings)
        return (0, port) in self.bindings

    def _ephemeral(self, address: int) -> int:
        span = EPHEMERAL_HIGH - EPHEMERAL_LOW + 1
        for _ in range(span):
            port = self._next_ephemeral
            self._next_ephemeral = EPHEMERAL_LOW + (port + 1 - EPHEMERAL_LOW) % span
            if not self._conflicts(address, port):
                return port
        raise OSError(errno.EAGAIN, "Resource temporarily unavailable (no free ephemeral port)")

    def unbind(self, endpoint: UdpEndpoint) -> None:
        if self.bindings.get((endpoint.address, endpoint.port)) is endpoint:
            del self.bindings[(endpoint.address, endpoint.port)]
        endpoint.closed = True

    def lookup(self, address: int, port: int) -> UdpEndpoint | None:
        """__udp4_lib_lookup: the exact binding, else the wildcard one."""
        bindings = self.bindings
        return bindings.get((address, port)) or bindings.get((0, port))

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
        endpoint = self.lookup(datagram.dst, header.dst_port)
        if endpoint is None or (endpoint.peer is not None and endpoint.peer != (datagram.src, header.src_port)):
            stats.NoPorts += 1
            if datagram.pkt_type == PACKET_HOST and datagram.dst not in self.ipv4.broadcast_addresses:
                self.ipv4.icmp_send(DEST_UNREACH, PORT_UNREACH, datagram.packet, now)
            return
        data = bytes(payload[8:header.length])
        if endpoint.deliver(data, (str(datagram.src), header.src_port), datagram):
            stats.InDatagrams += 1
        else:
            stats.RcvbufErrors += 1
            stats.InErrors += 1

    def error(self, message: IcmpMessage, quoted: QuotedDatagram, datagram: Datagram, now: float) -> None:
        """udp_err: an ICMP error about a datagram we sent goes to the socket that sent it."""
        ports = quoted_ports(quoted.transport_bytes)
        if ports is None:
            return
        endpoint = self.lookup(quoted.header.src, ports[0])
        if endpoint is None:
            return
        if endpoint.on_error is not None:
            endpoint.on_error(message, quoted, datagram, now)
            return
        if message.type == DEST_UNREACH and message.code == FRAG_NEEDED:
            return  # PMTU already updated by ICMP; not an error for the socket
        # Linux reports ICMP errors only to connected UDP sockets (without IP_RECVERR).
        if endpoint.peer is not None:
            endpoint.error = icmp_errno(message)

    # ---------------------------------------------------------------- output

    def sendto(self, endpoint: UdpEndpoint, data: bytes, address: int, port: int, now: float, *,
               ttl: int | None = None) -> None:
        """udp_sendmsg: build the datagram (checksum over the pseudo-header) and hand it to IPv4."""
        if not 0 < port <= 0xFFFF:
            raise OSError(errno.EINVAL, "Invalid argument")
        if len(data) > 0xFFFF - 8 - 20:
            raise OSError(errno.EMSGSIZE, "Message too long")
        ipv4 = self.ipv4
        source = endpoint.address
        if not source:
            entry = ipv4.route_output(address, now)
            source = entry.src if entry.src is not None else IPv4Address.from_wire(address)
        segment = UdpHeader(endpoint.port, port).build(data, source, address)
        ipv4.output(address, IPPROTO_UDP, segment, now, src=source, ttl=ttl)
        self.stats.OutDatagrams += 1

    def counters(self) -> dict[str, int]:
        return self.stats.as_dict()

    def table(self) -> list[dict]:
        return [endpoint.describe() for endpoint in self.bindings.values()]
