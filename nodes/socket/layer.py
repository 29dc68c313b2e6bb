"""`SocketLayer`: one node's INET socket layer: inet_create (`socket`), inetsw for SOCK_STREAM
(`register_protosw`), the ping and raw tables, IP_PKTINFO's in_pktinfo, the `ss` table.

The top of nodes/socket/: imports every other submodule."""
from __future__ import annotations

import errno
import struct
from random import Random
from typing import Callable, Iterable, Mapping

from ..icmp import IcmpLayer
from ..ipv4 import Datagram, IPv4Layer
from ..nic import NetDevice
from ..sysctl import Sysctl
from ..udp import UdpLayer
from ..wire.icmp import IcmpMessage, QuotedDatagram
from ..wire.ipv4 import IPPROTO_ICMP, IPPROTO_UDP
from .constants import (
    AF_INET, AF_INET6, IPPROTO_IP, IPPROTO_MAX, SOCK_CLOEXEC, SOCK_DGRAM, SOCK_MAX, SOCK_NONBLOCK, SOCK_RAW,
    SOCK_STREAM, SOCK_TYPE_MASK, _error,
)
from .inet import InetSocket
from .ping import PingSocket, _PingIdentifier
from .raw import RawSocket
from .stream import StreamProtocol, StreamSocket
from .udp import UdpSocket


# ---------------------------------------------------------------------------- the layer

StreamFactory = Callable[[], StreamProtocol]


class SocketLayer:
    """One node's INET socket layer (`struct net`'s sockets): inet_create, the ping and raw tables."""

    def __init__(self, ipv4: IPv4Layer, icmp: IcmpLayer, udp: UdpLayer, sysctl: Sysctl, rng: Random,
                 devices: "Mapping[str, NetDevice] | None" = None) -> None:
        self.ipv4 = ipv4
        self.devices = devices if devices is not None else {}
        self.icmp = icmp
        self.udp = udp
        self.sysctl = sysctl
        self.rng = rng
        self.sockets: set[InetSocket] = set()
        self.stream: dict[int, StreamProtocol] = {}  # inetsw[SOCK_STREAM] by protocol
        self.raw: dict[int, list[RawSocket]] = {}  # raw_v4_hashinfo by protocol
        self._ping_rover = 0  # ping_port_rover
        # the wall clock minus the stack's time: SO_TIMESTAMP is CLOCK_REALTIME (set by the node's kernel)
        self.wall_offset = 0.0
        ipv4.raw_deliver = self._raw_deliver
        icmp.raw_error = self._raw_error

    def register_protosw(self, type_: int, protocol: int, implementation: StreamProtocol) -> None:
        """inet_register_protosw: the transport for SOCK_STREAM (TCP) plugs in here."""
        if type_ != SOCK_STREAM:
            raise ValueError("only SOCK_STREAM transports register; datagram protocols are built in")
        self.stream[protocol] = implementation

    # -------------------------------------------------------------- inet_create

    def _protosw(self, family: int, type_: int) -> list[int]:
        """inetsw[type]: the protocols of a type, IPPROTO_IP standing for the raw wildcard."""
        if type_ == SOCK_STREAM:
            return list(self.stream)
        if type_ == SOCK_DGRAM:
            return [IPPROTO_UDP, IPPROTO_ICMP] if family == AF_INET else [IPPROTO_UDP]
        if type_ == SOCK_RAW and family == AF_INET:
            return [IPPROTO_IP]
        return []

    def socket(self, family: int, type_: int, protocol: int = 0, *, privileged: bool = True, uid: int = 0,
               groups: Iterable[int] = (0,)) -> InetSocket:
        """__sock_create + inet_create / inet6_create, errno for errno.

        `privileged`: the caller has CAP_NET_RAW/CAP_NET_BIND_SERVICE/CAP_NET_ADMIN (root);
        `uid`: its user, which SO_REUSEPORT groups must share; `groups`: its gid and
        supplementary groups, which ping_init_sock checks against ping_group_range."""
        if family not in (AF_INET, AF_INET6):
            raise _error(errno.EAFNOSUPPORT)
        if type_ & ~(SOCK_TYPE_MASK | SOCK_NONBLOCK | SOCK_CLOEXEC):
            raise _error(errno.EINVAL)  # __sys_socket_create: unknown flags
        type_ &= SOCK_TYPE_MASK
        if type_ < 0 or type_ >= SOCK_MAX:
            raise _error(errno.EINVAL)
        if protocol < 0 or protocol >= IPPROTO_MAX:
            raise _error(errno.EINVAL)
        # inet_create's lookup: ESOCKTNOSUPPORT for a type without protocols, EPROTONOSUPPORT
        # when none matches; IPPROTO_IP picks the type's first; SOCK_RAW takes any but 0.
        answers = self._protosw(family, type_)
        if not answers:
            raise _error(errno.ESOCKTNOSUPPORT)
        chosen = None
        for answer in answers:
            if protocol == answer:
                if protocol != IPPROTO_IP:
                    chosen = protocol
                    break
            elif protocol == IPPROTO_IP:
                chosen = answer
                break
            elif answer == IPPROTO_IP:
                chosen = protocol
                break
        if chosen is None:
            raise _error(errno.EPROTONOSUPPORT)
        if type_ == SOCK_RAW and not privileged:
            raise _error(errno.EPERM)  # CAP_NET_RAW
        sock: InetSocket
        if type_ == SOCK_STREAM:
            sock = StreamSocket(self, family, type_, chosen, self.stream[chosen])
        elif type_ == SOCK_DGRAM and chosen == IPPROTO_UDP:
            sock = UdpSocket(self, family, type_, chosen)
        elif type_ == SOCK_DGRAM:
            low, high = self.sysctl["net.ipv4.ping_group_range"]
            if not any(low <= group <= high for group in groups):
                raise _error(errno.EACCES)  # ping_init_sock: no group in net.ipv4.ping_group_range
            sock = PingSocket(self, family, type_, chosen)
        else:
            sock = RawSocket(self, family, type_, chosen)
            self.raw.setdefault(chosen, []).insert(0, sock)
            self.ipv4.raw_protocols = frozenset(self.raw)
        sock.privileged = privileged
        sock.uid = uid
        if isinstance(sock, UdpSocket):
            sock.endpoint.owner = uid
        self.sockets.add(sock)
        return sock

    # -------------------------------------------------------------- ping table

    def ping_get_port(self, sock: PingSocket, identifier: int) -> None:
        """ping_get_port: a given identifier, or the next free one after the rover; EADDRINUSE when taken."""
        listeners = self.icmp.echo_listeners
        if identifier == 0:
            candidate = self._ping_rover
            for _ in range(0x10000):
                candidate = (candidate + 1) & 0xFFFF
                if candidate and candidate not in listeners:
                    break
            else:
                raise _error(errno.EADDRINUSE)
            identifier = self._ping_rover = candidate
        group = listeners.get(identifier)
        if group is None:
            group = listeners[identifier] = _PingIdentifier()
        elif not isinstance(group, _PingIdentifier):
            raise _error(errno.EADDRINUSE)  # the kernel's own ping session holds it
        elif any(not (other.reuseaddr and sock.reuseaddr) for other in group.sockets):
            raise _error(errno.EADDRINUSE)  # ping_get_port compares identifiers only
        group.sockets.insert(0, sock)
        sock.identifier = identifier

    def ping_unhash(self, sock: PingSocket) -> None:
        group = self.icmp.echo_listeners.get(sock.identifier)
        if isinstance(group, _PingIdentifier) and sock in group.sockets:
            group.sockets.remove(sock)
            if not group.sockets:
                del self.icmp.echo_listeners[sock.identifier]
        sock.identifier = 0

    # -------------------------------------------------------------- raw sockets

    def raw_unhash(self, sock: RawSocket) -> None:
        sockets = self.raw.get(sock.protocol)
        if sockets is not None and sock in sockets:
            sockets.remove(sock)
            if not sockets:
                del self.raw[sock.protocol]
        self.ipv4.raw_protocols = frozenset(self.raw)

    def _raw_deliver(self, datagram: Datagram, now: float) -> bool:
        """raw_local_deliver: a copy to every matching raw socket of the protocol; True when any matched."""
        delivered = False
        for sock in self.raw.get(datagram.protocol, ()):
            if sock.matches(datagram):
                delivered = True
                sock._receive(datagram)
        return delivered

    def _raw_error(self, message: IcmpMessage, quoted: QuotedDatagram, datagram: Datagram, now: float) -> None:
        """raw_icmp_error: the raw sockets of the quoted protocol that sent to its destination."""
        for sock in list(self.raw.get(quoted.header.protocol, ())):
            if sock.address and sock.address != quoted.header.src:
                continue
            if sock.peer is not None and sock.peer[0] != quoted.header.dst:
                continue
            sock._error(message, quoted, datagram, now)

    def pktinfo(self, dev: str, dst: int) -> bytes:
        """struct in_pktinfo (ip_cmsg_recv_pktinfo): ifindex, the local address an answer should come
        from (fib_compute_spec_dst: the destination when ours, else the device's address), the destination."""
        device = self.devices.get(dev)
        ifindex = device.ifindex if device is not None else 0
        spec_dst = dst
        if self.ipv4.address_type(dst) != "local" and device is not None and device.addresses:
            spec_dst = int(device.addresses[0].address)
        return struct.pack("=i4s4s", ifindex, spec_dst.to_bytes(4, "big"), dst.to_bytes(4, "big"))

    # -------------------------------------------------------------- tables

    def table(self) -> list[dict]:
        """Every open socket, described as `ss -uanp` would (without the process column), and the
        kernel's own UDP endpoints (traceroute probes, the control ops') after them."""
        owned = {id(sock.endpoint) for sock in self.sockets if isinstance(sock, UdpSocket)}
        kernel = [endpoint.describe() for endpoints in self.udp.hash.values() for endpoint in endpoints
                  if id(endpoint) not in owned]
        orphans = [row for proto in self.stream.values() for row in getattr(proto, "table", lambda: [])()]
        return [sock.describe() for sock in self.sockets] + kernel + orphans
