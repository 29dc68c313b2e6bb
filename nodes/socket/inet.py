"""`InetSocket`: struct socket + struct sock + struct inet_sock, what every INET socket has
(readiness, addresses, recvmsg and the receive queue, the error queue, output helpers, shutdown,
close); its socket options are `SocketOptions` (options.py). `LayerView`: what a socket uses of
its layer.

Imports constants, sockaddr, cmsg and options; the protocol classes (udp, ping, raw, stream)
build on it."""
from __future__ import annotations

import errno
from collections import deque
from typing import Any, Callable, Iterable, Mapping, Protocol

from ..icmp import IcmpLayer
from ..ipv4 import Datagram, IPv4Layer
from ..nic import NetDevice
from ..route_cache import DstEntry
from ..skbuff import SKB_TRUESIZE_OVERHEAD
from ..sysctl import Sysctl
from ..udp import UdpLayer, icmp_error_report
from ..wire.addresses import IPv4Address
from ..wire.icmp import IcmpMessage, QuotedDatagram
from .cmsg import Message, QueuedError, _Queued
from .constants import (
    _EXTENDED_ERR, _INT, _MAPPED_PREFIX, _TIMEVAL, AF_INET, AF_INET6, AF_UNSPEC, IP_PKTINFO, IP_PMTUDISC_DO,
    IP_PMTUDISC_DONT, IP_PMTUDISC_PROBE, IP_PMTUDISC_WANT, IP_RECVERR, IP_TOS, IP_TTL, IPV6_PKTINFO, IPV6_RECVERR,
    MSG_ERRQUEUE, MSG_OOB, MSG_PEEK, MSG_TRUNC, POLLERR, POLLHUP, POLLIN, POLLOUT, POLLRDHUP, POLLRDNORM,
    POLLWRBAND, POLLWRNORM, RCV_SHUTDOWN, SEND_SHUTDOWN, SHUT_RD, SHUT_RDWR, SHUT_WR, SO_EE_ORIGIN_ICMP,
    SO_EE_ORIGIN_LOCAL, SO_TIMESTAMP, SO_TIMESTAMPNS, SOL_IP, SOL_IPV6, SOL_SOCKET, STATE_NAMES, TCP_CLOSE,
    TCP_ESTABLISHED, _error,
)
from .options import SocketOptions
from .sockaddr import SockAddr, _host, pack_sockaddr, parse_sockaddr


class LayerView(Protocol):
    """What a socket uses of its layer; `SocketLayer` (layer.py) has it.

    A typing Protocol, as `StreamProtocol` is for TCP: the socket classes sit below the
    layer that creates them and do not import it. (Its ping and raw methods take the
    socket as `Any`: PingSocket and RawSocket are above this module.)"""

    ipv4: IPv4Layer
    icmp: IcmpLayer
    udp: UdpLayer
    sysctl: Sysctl
    devices: Mapping[str, NetDevice]
    wall_offset: float
    sockets: set[InetSocket]

    def pktinfo(self, dev: str, dst: int) -> bytes: ...

    def ping_get_port(self, sock: Any, identifier: int) -> None: ...

    def ping_unhash(self, sock: Any) -> None: ...

    def raw_unhash(self, sock: Any) -> None: ...


# --------------------------------------------------------------------------------- sockets

class InetSocket(SocketOptions):
    """struct socket + struct sock + struct inet_sock: what every INET socket has.

    The front ends call the public methods; protocol classes below implement
    the `_protocol_*` parts. `on_ready(sock)` is the wake-up (sk_data_ready,
    sk_error_report, sk_state_change) for the front end.
    """

    kind = "inet"

    def __init__(self, layer: LayerView, family: int, type_: int, protocol: int) -> None:
        self.layer = layer
        self.family = family
        self.type = type_
        self.protocol = protocol
        self.state = TCP_CLOSE
        self.closed = False
        sysctl = layer.sysctl
        self.rcvbuf = sysctl["net.core.rmem_default"]
        self.sndbuf = sysctl["net.core.wmem_default"]
        self.rmem = 0  # sk_rmem_alloc: truesize of the receive and error queues
        self.receive_queue: deque[_Queued] = deque()
        self.error_queue: deque[QueuedError] = deque()
        self.sk_err = 0
        self.shutdown_mask = 0
        self.drops = 0
        self.bind_address_locked = False  # SOCK_BINDADDR_LOCK
        self.bind_port_locked = False  # SOCK_BINDPORT_LOCK
        self.peer: tuple[int, int] | None = None  # inet_daddr, inet_dport
        self.dst: DstEntry | None = None  # sk_dst_cache: the route a connect() chose (IP_MTU reads it)
        # options
        self.reuseaddr = False
        self.reuseport = False
        self.broadcast = False
        self.keepalive = False
        self.dontroute = False
        self.priority = 0
        self.timestamp = 0  # 0, SO_TIMESTAMP or SO_TIMESTAMPNS
        self.rcvtimeo = 0.0  # seconds, 0 = forever (the front end's to apply)
        self.sndtimeo = 0.0
        self.rcvlowat = 1
        self.linger: bytes = bytes(8)
        self.uc_ttl = -1
        self.tos = 0
        self.recvttl = False
        self.recvtos = False
        self.recverr = False
        self.recverr6 = False
        self.ip_flags: dict[int, bool] = {}  # IP_RECVOPTS, IP_RETOPTS
        self.pktinfo = False
        self.pmtudisc = IP_PMTUDISC_DONT if sysctl.get("net.ipv4.ip_no_pmtu_disc", 0) else IP_PMTUDISC_WANT
        self.mc_ttl = 1
        self.mc_loop = True
        self.v6only = False
        self.hop_limit = -1
        self.pktinfo6 = False
        self.ipv6_held: dict[int, int] = {}
        self.cmsg_source = 0
        self.on_ready: Callable[["InetSocket"], None] | None = None

    # ------------------------------------------------------------ readiness

    def poll(self) -> int:
        """datagram_poll: the mask select/poll/epoll would report."""
        mask = 0
        if self.sk_err or self.error_queue:
            mask |= POLLERR
        if self.shutdown_mask & RCV_SHUTDOWN:
            mask |= POLLRDHUP | POLLIN | POLLRDNORM
        if self.shutdown_mask == RCV_SHUTDOWN | SEND_SHUTDOWN:
            mask |= POLLHUP
        if self.receive_queue:
            mask |= POLLIN | POLLRDNORM
        if self.send_room() > 0:
            mask |= POLLOUT | POLLWRNORM | POLLWRBAND
        return mask

    def recv_ready(self) -> bool:
        return bool(self.receive_queue)

    def send_room(self) -> int:
        """Bytes the kernel accepts now (sock_writeable: a datagram leaves at once, so all of SO_SNDBUF)."""
        if self.closed:
            return 0
        return self.sndbuf

    @property
    def eof(self) -> bool:
        """RCV_SHUTDOWN: a blocking recv on an empty queue returns 0 bytes instead of waiting."""
        return bool(self.shutdown_mask & RCV_SHUTDOWN)

    def _wake(self) -> None:
        if self.on_ready is not None:
            self.on_ready(self)

    def _check_open(self) -> None:
        if self.closed:
            raise _error(errno.EBADF)

    # ------------------------------------------------------------ addresses

    def _addr(self, raw: Any) -> SockAddr:
        return parse_sockaddr(raw, self.family)

    def _sockaddr(self, address: int, port: int, v6_any: bool = False) -> tuple:
        if self.family == AF_INET6:
            return (_host(AF_INET6, address, v6_any), port, 0, 0)
        return (str(IPv4Address.from_wire(address)), port)

    def _local(self) -> tuple[int, int, bool]:
        """(receive address, port, bound to ::) for getsockname."""
        raise NotImplementedError

    def getsockname(self) -> tuple:
        self._check_open()
        address, port, v6_any = self._local()
        if self.family == AF_INET6 and not address and not v6_any:
            v6_any = True  # an unbound AF_INET6 socket reports ::
        return self._sockaddr(address, port, v6_any)

    def getpeername(self) -> tuple:
        """inet_getname(peer=1): ENOTCONN unless connected."""
        self._check_open()
        if self.peer is None or self.state != TCP_ESTABLISHED:
            raise _error(errno.ENOTCONN)
        return self._sockaddr(*self.peer)

    # ------------------------------------------------------------ generic calls

    def bind(self, address: Any) -> None:
        raise _error(errno.EOPNOTSUPP)

    def connect(self, address: Any, now: float) -> None:
        raise _error(errno.EOPNOTSUPP)

    def listen(self, backlog: int) -> None:
        """inet_listen on a datagram socket: EOPNOTSUPP (sock_no_listen)."""
        self._check_open()
        raise _error(errno.EOPNOTSUPP)

    def accept(self) -> "InetSocket":
        self._check_open()
        raise _error(errno.EOPNOTSUPP)

    def sendto(self, data: bytes, address: Any, now: float, flags: int = 0) -> int:
        return self.sendmsg(data, address, now, flags)

    def sendmsg(self, data: bytes, address: Any, now: float, flags: int = 0,
                ancillary: Iterable[tuple[int, int, bytes]] = ()) -> int:
        raise _error(errno.EOPNOTSUPP)

    def _connect_raw(self, destination: int, now: float) -> None:
        """ip4_datagram_connect for sockets without ports (ping, raw): the route, the source it
        picks unless one was bound, the peer, ESTABLISHED."""
        self.dst = entry = self._route_checks(destination, now)
        if not self.source:
            self.source = int(entry.src) if entry.src is not None else destination
        if not self.address:
            self.address = self.source
        self.peer = (destination, 0)
        self.state = TCP_ESTABLISHED

    def _send_checks(self, data: bytes, flags: int) -> bytes:
        """What every datagram sendmsg checks first: an open socket, at most 64 KiB (EMSGSIZE),
        no MSG_OOB (EOPNOTSUPP)."""
        self._check_open()
        data = bytes(data)
        if len(data) > 0xFFFF:
            raise _error(errno.EMSGSIZE)
        if flags & MSG_OOB:
            raise _error(errno.EOPNOTSUPP)
        return data

    def recvfrom(self, bufsize: int, now: float, flags: int = 0) -> tuple[bytes, tuple | None]:
        message = self.recvmsg(bufsize, now, flags)
        return message.data, message.address

    def recvmsg(self, bufsize: int, now: float, flags: int = 0) -> Message:
        """Dequeue (or MSG_PEEK) the next datagram; EAGAIN when none waits (never blocks)."""
        self._check_open()
        if bufsize < 0:
            raise _error(errno.EINVAL)
        if flags & MSG_ERRQUEUE:
            return self._recv_error(bufsize, flags)
        if flags & MSG_OOB:
            raise _error(errno.EOPNOTSUPP)
        if self.sk_err:  # __skb_recv_udp: sock_error() before the queue
            raise _error(self._take_error())
        if not self.receive_queue:
            raise _error(errno.EAGAIN)
        item = self.receive_queue[0]
        if not flags & MSG_PEEK:
            self.receive_queue.popleft()
            self.rmem -= item.truesize
            self._counted_read()
        data = item.data[:bufsize]
        msg_flags = MSG_TRUNC if len(item.data) > bufsize else 0
        length = len(item.data) if flags & MSG_TRUNC else len(data)
        return Message(data, self._sockaddr(item.source, item.port), msg_flags, self._cmsgs(item), length)

    def _counted_read(self) -> None:
        """A datagram handed to the program (UDP counts InDatagrams here, as udp_recvmsg)."""

    def _cmsgs(self, item: _Queued) -> list[tuple[int, int, bytes]]:
        """sock_recv_timestamp + ip_cmsg_recv, in Linux's order."""
        ancillary = []
        stamp = item.stamp + self.layer.wall_offset  # CLOCK_REALTIME, as programs compare it with gettimeofday
        if self.timestamp == SO_TIMESTAMP:
            seconds = int(stamp)
            ancillary.append((SOL_SOCKET, SO_TIMESTAMP, _TIMEVAL.pack(seconds, int((stamp - seconds) * 1e6))))
        elif self.timestamp == SO_TIMESTAMPNS:
            seconds = int(stamp)
            ancillary.append((SOL_SOCKET, SO_TIMESTAMPNS, _TIMEVAL.pack(seconds, int((stamp - seconds) * 1e9))))
        # udpv6_recvmsg: ip6_datagram_recv_common_ctl (IPV6_PKTINFO, the v4-mapped destination) first
        if self.pktinfo6 and item.dev:
            device = self.layer.devices.get(item.dev)
            mapped = _MAPPED_PREFIX + item.dst.to_bytes(4, "big")
            ancillary.append((SOL_IPV6, IPV6_PKTINFO, mapped + _INT.pack(device.ifindex if device is not None else 0)))
        # ip_cmsg_recv_offset's order: IP_PKTINFO, IP_TTL, IP_TOS
        if self.pktinfo and item.dev:
            ancillary.append((SOL_IP, IP_PKTINFO, self.layer.pktinfo(item.dev, item.dst)))
        if self.recvttl:
            ancillary.append((SOL_IP, IP_TTL, _INT.pack(item.ttl)))
        if self.recvtos:
            ancillary.append((SOL_IP, IP_TOS, bytes((item.tos,))))
        return ancillary

    def _queue(self, item: _Queued, *, udp_rule: bool) -> bool:
        """Queue for the program; False when SO_RCVBUF is exhausted (counted by the caller).

        __udp_enqueue_schedule_skb drops when the memory in use already exceeds
        sk_rcvbuf; sock_queue_rcv_skb (ping, raw) when it reaches it."""
        if self.closed or (self.rmem > self.rcvbuf if udp_rule else self.rmem >= self.rcvbuf):
            self.drops += 1
            return False
        self.rmem += item.truesize
        self.receive_queue.append(item)
        self._wake()
        return True

    # ------------------------------------------------------------ errors

    def _take_error(self) -> int:
        error, self.sk_err = self.sk_err, 0
        return error

    def _icmp_error(self, message: IcmpMessage, quoted: QuotedDatagram, datagram: Datagram, now: float, *,
                    port: int, payload: bytes, ping: bool = False) -> None:
        """The end of __udp4_lib_err / ping_err / raw_err: sk_err, and with IP_RECVERR the error queue."""
        report = icmp_error_report(message, ping=ping, pmtudisc=self.pmtudisc != IP_PMTUDISC_DONT)
        if report is None:
            return
        code, hard = report
        if not self.recverr:
            if not hard or self.state != TCP_ESTABLISHED:
                return
        else:
            self._queue_error(QueuedError(code, SO_EE_ORIGIN_ICMP, message.type, message.code,
                                          # icmp_unreach's info: the next-hop MTU, or parameter problem's pointer
                                          message.next_hop_mtu if message.type == 3 and message.code == 4
                                          else message.pointer if message.type == 12 else 0,
                                          int(datagram.src), int(quoted.header.dst), port, payload, now,
                                          datagram.ttl, datagram.tos))
        self.sk_err = code
        self._wake()

    def _local_error(self, code: int, destination: int, port: int, info: int, now: float) -> None:
        """ip_local_error: with IP_RECVERR, a local error (SO_EE_ORIGIN_LOCAL, ee_info the MTU) on the
        error queue, without payload or offender; sk_err is left alone."""
        if self.recverr:
            self._queue_error(QueuedError(code, SO_EE_ORIGIN_LOCAL, 0, 0, info, 0, destination, port, b"", now))
            self._wake()

    def _queue_error(self, entry: QueuedError) -> None:
        """ip_icmp_error -> sock_queue_err_skb: charged to the receive buffer, dropped when it is full."""
        entry.truesize = len(entry.payload) + SKB_TRUESIZE_OVERHEAD
        if self.rmem + entry.truesize >= self.rcvbuf:
            return
        self.rmem += entry.truesize
        self.error_queue.append(entry)

    def _recv_error(self, bufsize: int, flags: int) -> Message:
        """ip_recv_error (ipv6_recv_error for AF_INET6): one entry of the error queue; EAGAIN when empty."""
        if not self.error_queue:
            raise _error(errno.EAGAIN)
        entry = self.error_queue[0]
        if not flags & MSG_PEEK:
            self.error_queue.popleft()
            self.rmem -= entry.truesize
            # sock_dequeue_err_skb: sk_err becomes the next ICMP error's, or is cleared after an ICMP one
            following = self.error_queue[0] if self.error_queue else None
            if following is not None and following.ee_origin == SO_EE_ORIGIN_ICMP:
                self.sk_err = following.ee_errno
            elif entry.ee_origin == SO_EE_ORIGIN_ICMP:
                self.sk_err = 0
        data = entry.payload[:bufsize]
        msg_flags = MSG_ERRQUEUE | (MSG_TRUNC if len(entry.payload) > bufsize else 0)
        # sock_recv_timestamp, then (ICMP origin, AF_INET) ip_cmsg_recv of the ICMP datagram, then IP_RECVERR
        ancillary = self._cmsgs(_Queued(b"", 0, 0, entry.ttl, entry.tos, entry.stamp, 0))
        if self.family == AF_INET6:
            ancillary = [cmsg for cmsg in ancillary if cmsg[0] == SOL_SOCKET]
        header = _EXTENDED_ERR.pack(entry.ee_errno, entry.ee_origin, entry.ee_type, entry.ee_code, 0, entry.ee_info, 0)
        if entry.ee_origin != SO_EE_ORIGIN_ICMP:
            ancillary = [cmsg for cmsg in ancillary if cmsg[0] == SOL_SOCKET]  # ipv4_datagram_support_cmsg
            level, kind = (SOL_IPV6, IPV6_RECVERR) if self.family == AF_INET6 else (SOL_IP, IP_RECVERR)
            ancillary.append((level, kind, header + bytes(16 if self.family == AF_INET else 28)))
        elif self.family == AF_INET6:
            offender = pack_sockaddr((_host(AF_INET6, entry.offender), 0), AF_INET6)
            ancillary.append((SOL_IPV6, IPV6_RECVERR, header + offender))
        else:
            offender = pack_sockaddr((str(IPv4Address.from_wire(entry.offender)), 0), AF_INET)
            ancillary.append((SOL_IP, IP_RECVERR, header + offender))
        length = len(entry.payload) if flags & MSG_TRUNC else len(data)
        # msg_name only when the error names a port (UDP); ping and raw errors leave it empty
        address = self._sockaddr(entry.address, entry.port) if entry.port else None
        return Message(data, address, msg_flags, ancillary, length)

    # ------------------------------------------------------------ output helpers

    def _ttl(self, destination: int) -> int | None:
        if destination >> 28 == 0xE:
            return self.mc_ttl
        return None if self.uc_ttl == -1 else self.uc_ttl

    def _send_cmsgs(self, ancillary: Iterable[tuple[int, int, bytes]]) -> tuple[int | None, int | None]:
        """ip_cmsg_send: IP_TTL, IP_TOS and IP_PKTINFO for one datagram; anything else at SOL_IP is EINVAL.

        IP_PKTINFO's ipi_spec_dst becomes the datagram's source (`self.cmsg_source`); its ifindex is not applied."""
        ttl = tos = None
        self.cmsg_source = 0
        for level, kind, data in ancillary:
            if level == SOL_SOCKET:
                continue  # SO_TIMESTAMPING and friends: accepted, without effect here
            if level != SOL_IP:
                raise _error(errno.EINVAL)
            if kind == IP_TTL:
                if len(data) != 4:
                    raise _error(errno.EINVAL)
                ttl = _INT.unpack(data)[0]
                if not 1 <= ttl <= 255:
                    raise _error(errno.EINVAL)
            elif kind == IP_PKTINFO:
                if len(data) < 12:
                    raise _error(errno.EINVAL)
                source = int.from_bytes(data[4:8], "big")
                if source and self.layer.ipv4.address_type(source) != "local":
                    raise _error(errno.EINVAL)
                self.cmsg_source = source
            elif kind == IP_TOS:
                if len(data) not in (1, 4):
                    raise _error(errno.EINVAL)
                tos = data[0] if len(data) == 1 else _INT.unpack(data)[0]
                if not 0 <= tos <= 255:
                    raise _error(errno.EINVAL)
            else:
                raise _error(errno.EINVAL)
        return ttl, tos

    def _dont_fragment(self, destination: int, length: int, now: float) -> bool:
        """ip_dont_fragment: DF for IP_PMTUDISC_DO/PROBE, and for WANT while the datagram fits the path MTU."""
        if self.pmtudisc in (IP_PMTUDISC_DO, IP_PMTUDISC_PROBE):
            return True
        if self.pmtudisc != IP_PMTUDISC_WANT:
            return False
        entry = self.layer.ipv4.route_cache.lookup(destination, now)
        return entry is not None and entry.type == "unicast" and length <= entry.pmtu

    def _destination(self, address: Any) -> SockAddr:
        """The destination of a datagram send: its family rules, IPv4-mapped for AF_INET6."""
        target = self._addr(address)
        if self.family == AF_INET6:
            if target.family == AF_INET:
                if self.v6only:
                    raise _error(errno.ENETUNREACH)
                return target
            if target.family != AF_INET6:
                raise _error(errno.EINVAL)
            if target.address is None or target.v6_any or self.v6only:
                raise _error(errno.ENETUNREACH)  # udpv6_sendmsg: no IPv6 route; v4-mapped needs dual stack
            return target
        if target.family != AF_INET and target.family != AF_UNSPEC:
            raise _error(errno.EAFNOSUPPORT)
        return target

    def _route_checks(self, destination: int, now: float) -> DstEntry:
        """ip_route_output_flow, then the RTCF_BROADCAST test of udp_sendmsg/raw_sendmsg/ip4_datagram_connect."""
        # The source (IP_PKTINFO's, else the bound address) routes 255.255.255.255 when no route does.
        entry = self.layer.ipv4.route_output(destination, now, src=self.cmsg_source or self._local()[0])
        if (entry.type == "broadcast" or destination == 0xFFFFFFFF) and not self.broadcast:
            raise _error(errno.EACCES)
        return entry

    # ------------------------------------------------------------ shutdown, close

    def shutdown(self, how: int, now: float) -> None:
        """inet_shutdown: EINVAL for a bad `how`; ENOTCONN unless connected, the mask set all the same."""
        self._check_open()
        if how not in (SHUT_RD, SHUT_WR, SHUT_RDWR):
            raise _error(errno.EINVAL)
        self.shutdown_mask |= how + 1
        self._wake()
        if self.state == TCP_CLOSE:
            raise _error(errno.ENOTCONN)

    def close(self, now: float) -> None:
        """The last reference is gone (the program closed its end, or died): unhash, free the queues."""
        if self.closed:
            return
        self._unhash(now)
        self.closed = True
        self.receive_queue.clear()
        self.error_queue.clear()
        self.rmem = 0
        self.layer.sockets.discard(self)
        self._wake()

    def _unhash(self, now: float) -> None:
        pass

    def describe(self) -> dict:
        address, port, v6_any = self._local()
        peer = self.peer
        return {
            "proto": self.kind + ("6" if self.family == AF_INET6 else ""),
            "local": f"{'*' if v6_any else IPv4Address.from_wire(address)}:{port}",
            "peer": f"{IPv4Address.from_wire(peer[0])}:{peer[1]}" if peer else "*:*",
            "state": STATE_NAMES.get(self.state, str(self.state)),
            "recv_q": self.rmem,
            "drops": self.drops,
        }
