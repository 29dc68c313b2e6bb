"""The INET socket layer: the kernel side of every socket a program opens on a node.

Before changing this file, read seed 001's "BSD 소켓 인터페이스" and "INET 소켓
계층" sections (struct socket -> struct sock, proto_ops, inet_bind, the port
tables), and Linux net/ipv4/af_inet.c (inet_create, __inet_bind,
inet_dgram_connect, inet_shutdown), net/ipv4/udp.c (udp_sendmsg,
udp_recvmsg, __udp4_lib_err), net/ipv4/ping.c, net/ipv4/raw.c,
net/ipv4/ip_sockglue.c (ip_setsockopt, ip_recv_error, ip_cmsg_recv) and
net/core/sock.c (sk_setsockopt). Errno for errno, those are the rules.

Sans-I/O, like every layer below: no file descriptors, no clock. Time is an
argument; a call that would block raises BlockingIOError (EAGAIN) and the
front end (nodes/syscalls.py for trapped programs, the API socket for
node.socket()) turns it into a pending request, answered when the socket's
readiness changes.

The front ends' contract (see `InetSocket`):

* `SocketLayer.socket(family, type, proto, privileged=True)` -> an
  `InetSocket` (inet_create); OSError EAFNOSUPPORT / ESOCKTNOSUPPORT /
  EPROTONOSUPPORT / EINVAL / EPERM as Linux.
* Addresses: the stdlib's tuples (`("10.0.0.1", 53)`, `("::", 53, 0, 0)`)
  for the in-process API, or the raw `struct sockaddr` bytes a trapped call
  carries (checked for length and family the way Linux does: EINVAL,
  EAFNOSUPPORT); `pack_sockaddr` builds the bytes a trapped call writes back.
* Calls: bind, connect (AF_UNSPEC dissolves), sendmsg/sendto, recvmsg/recvfrom,
  getsockname, getpeername, setsockopt, getsockopt, shutdown, listen, accept,
  close. `recvmsg` returns a `Message`: data, address, msg_flags, ancillary
  data as the stdlib's (level, type, bytes) triples in Linux's layouts.
* Readiness and back-pressure: `poll()` is Linux's datagram_poll mask
  (POLLIN/POLLOUT/POLLERR/POLLHUP/POLLRDHUP); `on_ready(sock)` is called
  whenever it may have changed (data or an error arrived, shutdown, close).
  `recv_ready()` says whether a datagram waits, `send_room()` how many bytes
  the kernel takes now: the front end reads the program's end of its
  socketpair only while there is room, and writes to it only what the
  program's end has room for, leaving the rest queued here (where SO_RCVBUF
  bounds it and drops are counted, as on Linux).

SOCK_STREAM: the socket layer's half is here (`StreamSocket`: bind, listen
with its backlog and accept queue, accept, shutdown, states); the transport
plugs in with `register_protosw(SOCK_STREAM, IPPROTO_TCP, factory)`, Linux's
inet_register_protosw. Until TCP registers, inet_create finds no entry for
SOCK_STREAM and `socket(AF_INET, SOCK_STREAM, 0)` fails as Linux does with
an empty inetsw list: ESOCKTNOSUPPORT. No transport is faked.

AF_INET6 is dual-stack over IPv4 only: `::` with IPV6_V6ONLY=0 takes IPv4
peers seen as ::ffff:a.b.c.d, a mapped destination works, a native IPv6
destination is ENETUNREACH (this node has no IPv6 route), a native IPv6
address cannot be bound (EADDRNOTAVAIL).
"""
from __future__ import annotations

import errno
import ipaddress
import os
import struct
from collections import deque
from dataclasses import dataclass
from random import Random
from typing import Any, Callable, Iterable, Mapping, Protocol

from .icmp import IcmpLayer
from .ipv4 import Datagram, IPv4Layer
from .ip_fragment import FragmentationNeeded
from .nic import NetDevice
from .skbuff import SKB_TRUESIZE_OVERHEAD
from .sysctl import Sysctl
from .udp import UdpEndpoint, UdpLayer, icmp_error_report
from .wire.addresses import IPv4Address
from .wire.errors import WireError
from .wire.icmp import ECHO_REQUEST, IcmpMessage, QuotedDatagram, echo_request_bytes
from .wire.ipv4 import IPPROTO_ICMP, IPPROTO_UDP

# --------------------------------------------------------------- Linux's numbers (x86_64)

AF_UNSPEC, AF_INET, AF_INET6 = 0, 2, 10
SOCK_STREAM, SOCK_DGRAM, SOCK_RAW, SOCK_RDM, SOCK_SEQPACKET, SOCK_PACKET = 1, 2, 3, 4, 5, 10
SOCK_MAX = 11
SOCK_NONBLOCK, SOCK_CLOEXEC = 0o4000, 0o2000000
SOCK_TYPE_MASK = 0xF
IPPROTO_IP, IPPROTO_IPV6, IPPROTO_ICMPV6, IPPROTO_RAW = 0, 41, 58, 255
IPPROTO_MAX = 263  # include/uapi/linux/in.h (IPPROTO_MPTCP = 262)

SOL_SOCKET, SOL_IP, SOL_UDP, SOL_IPV6, SOL_RAW = 1, 0, 17, 41, 255
SO_DEBUG, SO_REUSEADDR, SO_TYPE, SO_ERROR, SO_DONTROUTE, SO_BROADCAST = 1, 2, 3, 4, 5, 6
SO_SNDBUF, SO_RCVBUF, SO_KEEPALIVE, SO_OOBINLINE, SO_NO_CHECK, SO_PRIORITY, SO_LINGER = 7, 8, 9, 10, 11, 12, 13
SO_REUSEPORT, SO_RCVLOWAT, SO_SNDLOWAT, SO_RCVTIMEO, SO_SNDTIMEO = 15, 18, 19, 20, 21
SO_TIMESTAMP, SO_ACCEPTCONN, SO_SNDBUFFORCE, SO_RCVBUFFORCE, SO_TIMESTAMPNS = 29, 30, 32, 33, 35
SO_PROTOCOL, SO_DOMAIN = 38, 39
IP_TOS, IP_TTL, IP_HDRINCL, IP_OPTIONS, IP_PKTINFO, IP_MTU_DISCOVER = 1, 2, 3, 4, 8, 10
IP_RECVERR, IP_RECVTTL, IP_RECVTOS, IP_MTU, IP_MULTICAST_TTL, IP_MULTICAST_LOOP = 11, 12, 13, 14, 33, 34
IP_PMTUDISC_DONT, IP_PMTUDISC_WANT, IP_PMTUDISC_DO, IP_PMTUDISC_PROBE = 0, 1, 2, 3
IP_PMTUDISC_INTERFACE, IP_PMTUDISC_OMIT = 4, 5
IPV6_UNICAST_HOPS, IPV6_RECVERR, IPV6_V6ONLY = 16, 25, 26
IPV6_MULTICAST_IF, IPV6_MULTICAST_HOPS, IPV6_MULTICAST_LOOP, IPV6_MTU_DISCOVER = 17, 18, 19, 23
IPV6_RECVPKTINFO, IPV6_PKTINFO, IPV6_RECVHOPLIMIT, IPV6_DONTFRAG, IPV6_RECVTCLASS, IPV6_TCLASS = 49, 50, 51, 62, 66, 67
# IPv6 options that are the socket's own state but never touch IPv4-mapped traffic (udp_sendmsg
# uses the IPv4 options for it): held and reported as Linux does, without effect here. name -> (min, max)
_IPV6_HELD = {IPV6_MULTICAST_IF: (0, 0x7FFFFFFF), IPV6_MULTICAST_HOPS: (-1, 255), IPV6_MULTICAST_LOOP: (0, 1),
              IPV6_MTU_DISCOVER: (0, 5), IPV6_RECVHOPLIMIT: (0, 1), IPV6_DONTFRAG: (0, 1),
              IPV6_RECVTCLASS: (0, 1), IPV6_TCLASS: (-1, 255)}
_IPV6_DEFAULTS = {IPV6_MULTICAST_HOPS: 1, IPV6_MULTICAST_LOOP: 1, IPV6_TCLASS: 0}
ICMP_FILTER = 1

MSG_OOB, MSG_PEEK, MSG_DONTROUTE, MSG_CTRUNC, MSG_TRUNC, MSG_DONTWAIT = 0x1, 0x2, 0x4, 0x8, 0x20, 0x40
MSG_EOR, MSG_WAITALL, MSG_CONFIRM, MSG_ERRQUEUE, MSG_NOSIGNAL, MSG_MORE = 0x80, 0x100, 0x800, 0x2000, 0x4000, 0x8000
SHUT_RD, SHUT_WR, SHUT_RDWR = 0, 1, 2
RCV_SHUTDOWN, SEND_SHUTDOWN = 1, 2

POLLIN, POLLPRI, POLLOUT, POLLERR, POLLHUP = 0x1, 0x2, 0x4, 0x8, 0x10
POLLRDNORM, POLLWRNORM, POLLWRBAND, POLLRDHUP = 0x40, 0x100, 0x200, 0x2000

SO_EE_ORIGIN_LOCAL, SO_EE_ORIGIN_ICMP = 1, 2
SOMAXCONN = 4096  # net.core.somaxconn
SOCK_MIN_RCVBUF = 2304  # TCP_SKB_MIN_TRUESIZE: 2048 + SKB_DATA_ALIGN(sizeof(struct sk_buff))
SOCK_MIN_SNDBUF = 2 * SOCK_MIN_RCVBUF

# TCP states as Linux numbers them (include/net/tcp_states.h), the socket layer's `state`
TCP_ESTABLISHED, TCP_SYN_SENT, TCP_CLOSE, TCP_LISTEN = 1, 2, 7, 10
STATE_NAMES = {TCP_ESTABLISHED: "ESTAB", TCP_SYN_SENT: "SYN-SENT", TCP_CLOSE: "UNCONN", TCP_LISTEN: "LISTEN"}

_SOCKADDR_IN = struct.Struct("=H2s4s8x")  # sa_family (host order), port and address (network order)
_SOCKADDR_IN6 = struct.Struct("=H2s4s16sI")
_EXTENDED_ERR = struct.Struct("=IBBBBII")  # struct sock_extended_err
_INT = struct.Struct("=i")
_TIMEVAL = struct.Struct("=qq")
_MAPPED_PREFIX = bytes(10) + b"\xff\xff"


def _error(code: int) -> OSError:
    """An OSError of the stdlib's subclass for `code` (BlockingIOError for EAGAIN...), as Python raises."""
    return OSError(code, os.strerror(code))


# ------------------------------------------------------------------------------ addresses

@dataclass(frozen=True, slots=True)
class SockAddr:
    """A decoded socket address: `family`, the IPv4 address it means (None: a native IPv6
    address, which this node cannot reach), the port, and whether it was IPv6's `::`."""

    family: int
    address: int | None
    port: int
    v6_any: bool = False


def parse_sockaddr(raw: "bytes | tuple | None", family: int, *, minimum: bool = True) -> SockAddr:
    """A raw `struct sockaddr` (trapped call) or a stdlib tuple (in-process API) as a SockAddr.

    Raw bytes shorter than the family's sockaddr raise EINVAL (inet_bind,
    udp_sendmsg, ip4_datagram_connect, inet6_bind: SIN6_LEN_RFC2133)."""
    if isinstance(raw, (bytes, bytearray, memoryview)):
        raw = bytes(raw)
        if len(raw) < 2:
            raise _error(errno.EINVAL)
        given = int.from_bytes(raw[:2], "little")
        if given == AF_INET6:
            if len(raw) < 24:
                raise _error(errno.EINVAL)
            port = int.from_bytes(raw[2:4], "big")
            return _v6(raw[8:24], port)
        if len(raw) < 16 and minimum:
            raise _error(errno.EINVAL)
        raw = raw.ljust(16, b"\0")
        return SockAddr(given, int.from_bytes(raw[4:8], "big"), int.from_bytes(raw[2:4], "big"))
    if raw is None:
        raise _error(errno.EINVAL)
    if hasattr(raw, "family") and hasattr(raw, "host"):
        # the syscall front end's decoded sockaddr (family, host, port, flowinfo, scope_id, raw):
        # its own family decides, as the bytes it came from would
        if getattr(raw, "raw", b""):
            return parse_sockaddr(raw.raw, family)
        if raw.family not in (AF_INET, AF_INET6):
            return SockAddr(raw.family, 0, raw.port)
        return parse_sockaddr((raw.host, raw.port), raw.family)
    host, port = raw[0], raw[1]
    if not isinstance(port, int) or not 0 <= port <= 0xFFFF:
        raise OverflowError("port must be 0-65535.")
    if family == AF_INET6:
        try:
            packed = ipaddress.IPv6Address(host or "::").packed
        except ValueError:
            raise _error(errno.EINVAL) from None  # getaddrinfo would have refused it: gaierror in the stdlib
        return _v6(packed, port)
    if host == "<broadcast>":
        return SockAddr(AF_INET, 0xFFFFFFFF, port)  # the stdlib's INADDR_BROADCAST spelling
    try:
        return SockAddr(AF_INET, int(IPv4Address(host or "0.0.0.0")), port)
    except WireError:
        raise _error(errno.EINVAL) from None


def _v6(packed: bytes, port: int) -> SockAddr:
    if packed == bytes(16):
        return SockAddr(AF_INET6, 0, port, v6_any=True)
    if packed[:12] == _MAPPED_PREFIX:
        return SockAddr(AF_INET6, int.from_bytes(packed[12:], "big"), port)
    return SockAddr(AF_INET6, None, port)


def pack_sockaddr(address: tuple, family: int) -> bytes:
    """The `struct sockaddr_in`/`sockaddr_in6` bytes for a stdlib address tuple (what a trapped call writes back)."""
    if family == AF_INET6:
        packed = ipaddress.IPv6Address(address[0]).packed
        return _SOCKADDR_IN6.pack(AF_INET6, address[1].to_bytes(2, "big"), b"\0\0\0\0", packed, 0)
    return _SOCKADDR_IN.pack(AF_INET, address[1].to_bytes(2, "big"), int(IPv4Address(address[0])).to_bytes(4, "big"))


_CMSGHDR = struct.Struct("=Qii")  # struct cmsghdr on LP64: size_t cmsg_len; int cmsg_level; int cmsg_type


def _cmsg_align(length: int) -> int:
    return (length + 7) & ~7  # CMSG_ALIGN: sizeof(long)


def pack_cmsgs(ancillary: Iterable[tuple[int, int, bytes]], control_size: int) -> tuple[bytes, int]:
    """Control messages as a program's msg_control gets them, and MSG_CTRUNC when they did not fit.

    put_cmsg (net/core/scm.c): a message whose header does not fit ends the list with
    MSG_CTRUNC; one whose data does not fit is cut short, with MSG_CTRUNC."""
    out = bytearray()
    flags = 0
    for level, kind, data in ancillary:
        space = control_size - len(out)
        if space < _CMSGHDR.size:
            flags |= MSG_CTRUNC
            break
        length = _CMSGHDR.size + len(data)
        if length > space:
            flags |= MSG_CTRUNC
            length = space
        out += _CMSGHDR.pack(length, level, kind) + data[:length - _CMSGHDR.size]
        out += bytes(min(_cmsg_align(length), space) - length)  # msg_controllen advances by CMSG_SPACE
        if flags & MSG_CTRUNC:
            break
    return bytes(out), flags


def unpack_cmsgs(control: bytes) -> list[tuple[int, int, bytes]]:
    """A program's msg_control as (level, type, data) triples; EINVAL for a malformed header (__scm_send)."""
    ancillary = []
    offset = 0
    while len(control) - offset >= _CMSGHDR.size:
        length, level, kind = _CMSGHDR.unpack_from(control, offset)
        if length < _CMSGHDR.size or length > len(control) - offset:
            raise _error(errno.EINVAL)
        ancillary.append((level, kind, bytes(control[offset + _CMSGHDR.size:offset + length])))
        offset += _cmsg_align(length)
    return ancillary


def _host(family: int, address: int, v6_any: bool = False) -> str:
    if family == AF_INET6:
        return "::" if v6_any or (not address and v6_any) else f"::ffff:{IPv4Address.from_wire(address)}"
    return str(IPv4Address.from_wire(address))


# -------------------------------------------------------------------------------- messages

@dataclass(slots=True)
class Message:
    """What recvmsg returns: `length` is the datagram's size with MSG_TRUNC in the flags, else len(data)."""

    data: bytes
    address: tuple | None
    flags: int
    ancillary: list[tuple[int, int, bytes]]
    length: int


@dataclass(slots=True)
class _Queued:
    """One datagram in a receive queue, with what ip_cmsg_recv and sock_recv_timestamp need."""

    data: bytes
    source: int
    port: int
    ttl: int
    tos: int
    stamp: float
    truesize: int
    dst: int = 0
    dev: str = ""


@dataclass(slots=True)
class QueuedError:
    """An skb on sk_error_queue: sock_extended_err, the offender, the original destination, the payload."""

    ee_errno: int
    ee_origin: int
    ee_type: int
    ee_code: int
    ee_info: int
    offender: int
    address: int
    port: int
    payload: bytes
    stamp: float
    ttl: int = 0  # of the ICMP datagram, for IP_RECVTTL
    tos: int = 0
    truesize: int = 0


# --------------------------------------------------------------------------------- sockets

class InetSocket:
    """struct socket + struct sock + struct inet_sock: what every INET socket has.

    The front ends call the public methods; protocol classes below implement
    the `_protocol_*` parts. `on_ready(sock)` is the wake-up (sk_data_ready,
    sk_error_report, sk_state_change) for the front end.
    """

    kind = "inet"

    def __init__(self, layer: "SocketLayer", family: int, type_: int, protocol: int) -> None:
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

    def recvfrom(self, bufsize: int, now: float, flags: int = 0) -> tuple[bytes, tuple | None]:
        message = self.recvmsg(bufsize, now, flags)
        return message.data, message.address

    def recvmsg(self, bufsize: int, now: float, flags: int = 0) -> Message:
        """Dequeue (or MSG_PEEK) the next datagram; EAGAIN when none waits (never blocks)."""
        self._check_open()
        self.layer.now = now
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
        if self.timestamp == SO_TIMESTAMP:
            seconds = int(item.stamp)
            ancillary.append((SOL_SOCKET, SO_TIMESTAMP, _TIMEVAL.pack(seconds, int((item.stamp - seconds) * 1e6))))
        elif self.timestamp == SO_TIMESTAMPNS:
            seconds = int(item.stamp)
            ancillary.append((SOL_SOCKET, SO_TIMESTAMPNS, _TIMEVAL.pack(seconds, int((item.stamp - seconds) * 1e9))))
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

    # ------------------------------------------------------------ options

    def setsockopt(self, level: int, option: int, value: "int | bytes") -> None:
        """sock_setsockopt / ip_setsockopt / ipv6_setsockopt / raw_setsockopt; ENOPROTOOPT for the unknown."""
        self._check_open()
        if level == SOL_SOCKET:
            self._set_socket_option(option, value)
        elif level == SOL_IP:
            if self.family == AF_INET6 and self.type == SOCK_RAW:
                raise _error(errno.ENOPROTOOPT)
            self._set_ip_option(option, value)
        elif level == SOL_IPV6 and self.family == AF_INET6:
            self._set_ipv6_option(option, value)
        elif level == SOL_RAW and self.type == SOCK_RAW:
            self._set_raw_option(option, value)
        else:
            raise _error(errno.ENOPROTOOPT)

    def getsockopt(self, level: int, option: int) -> "int | bytes":
        self._check_open()
        if level == SOL_SOCKET:
            return self._get_socket_option(option)
        if level == SOL_IP:
            return self._get_ip_option(option)
        if level == SOL_IPV6 and self.family == AF_INET6:
            return self._get_ipv6_option(option)
        if level == SOL_RAW and self.type == SOCK_RAW:
            return self._get_raw_option(option)
        raise _error(errno.ENOPROTOOPT)

    @staticmethod
    def _int(value: "int | bytes", *, socket_level: bool = True) -> int:
        """An int option's value: sk_setsockopt needs sizeof(int) bytes (EINVAL); ip_setsockopt also takes one byte."""
        if isinstance(value, int):
            return value
        value = bytes(value)
        if len(value) >= 4:
            return _INT.unpack_from(value)[0]
        if not socket_level and len(value) >= 1:
            return value[0]
        raise _error(errno.EINVAL)

    def _set_socket_option(self, option: int, value: "int | bytes") -> None:
        if option in (SO_RCVTIMEO, SO_SNDTIMEO):
            raw = bytes(value) if not isinstance(value, int) else _TIMEVAL.pack(value, 0)
            if len(raw) < _TIMEVAL.size:
                raise _error(errno.EINVAL)
            seconds, micros = _TIMEVAL.unpack_from(raw)
            if not 0 <= micros < 1_000_000:
                raise _error(errno.EDOM)  # sock_set_timeout
            timeout = 0.0 if seconds < 0 else seconds + micros / 1e6
            if option == SO_RCVTIMEO:
                self.rcvtimeo = timeout
            else:
                self.sndtimeo = timeout
            return
        if option == SO_LINGER:
            raw = bytes(value) if not isinstance(value, int) else bytes(8)
            if len(raw) < 8:
                raise _error(errno.EINVAL)
            self.linger = raw[:8]
            return
        number = self._int(value)
        sysctl = self.layer.sysctl
        if option == SO_REUSEADDR:
            self.reuseaddr = bool(number)
        elif option == SO_REUSEPORT:
            self.reuseport = bool(number)
        elif option == SO_BROADCAST:
            self.broadcast = bool(number)
        elif option == SO_KEEPALIVE:
            self.keepalive = bool(number)
        elif option == SO_DONTROUTE:
            self.dontroute = bool(number)
        elif option in (SO_DEBUG, SO_OOBINLINE, SO_NO_CHECK):
            pass  # accepted, as Linux, and without effect here
        elif option == SO_PRIORITY:
            if not 0 <= number <= 6 and not self.privileged:
                raise _error(errno.EPERM)
            self.priority = number
        elif option == SO_RCVLOWAT:
            self.rcvlowat = max(number, 1) if number >= 0 else 0x7FFFFFFF
        elif option == SO_SNDBUF or (option == SO_SNDBUFFORCE and self.privileged):
            # sk_setsockopt: min(val, wmem_max) unless forced, doubled for the kernel's overhead
            requested = number & 0xFFFFFFFF if option == SO_SNDBUF else max(number, 0)
            if option == SO_SNDBUF:
                requested = min(requested, sysctl["net.core.wmem_max"])
            self.sndbuf = max(min(requested, 0x7FFFFFFF // 2) * 2, SOCK_MIN_SNDBUF)
            self._wake()
        elif option == SO_RCVBUF or (option == SO_RCVBUFFORCE and self.privileged):
            requested = number & 0xFFFFFFFF if option == SO_RCVBUF else max(number, 0)
            if option == SO_RCVBUF:
                requested = min(requested, sysctl["net.core.rmem_max"])
            self.rcvbuf = max(min(requested, 0x7FFFFFFF // 2) * 2, SOCK_MIN_RCVBUF)
        elif option in (SO_SNDBUFFORCE, SO_RCVBUFFORCE):
            raise _error(errno.EPERM)  # CAP_NET_ADMIN
        elif option in (SO_TIMESTAMP, SO_TIMESTAMPNS):
            if number:
                self.timestamp = option
            elif self.timestamp == option:
                self.timestamp = 0
        else:
            raise _error(errno.ENOPROTOOPT)  # also SO_ERROR, SO_TYPE...: read-only

    privileged = True  # the caller's CAP_NET_BIND_SERVICE / CAP_NET_RAW / CAP_NET_ADMIN (root: all)
    uid = 0

    def _get_socket_option(self, option: int) -> "int | bytes":
        if option == SO_ERROR:
            return self._take_error()  # sock_error: reading clears it
        if option == SO_TYPE:
            return self.type
        if option == SO_PROTOCOL:
            return self.protocol
        if option == SO_DOMAIN:
            return self.family
        if option == SO_ACCEPTCONN:
            return int(self.state == TCP_LISTEN)
        if option == SO_RCVTIMEO or option == SO_SNDTIMEO:
            timeout = self.rcvtimeo if option == SO_RCVTIMEO else self.sndtimeo
            return _TIMEVAL.pack(int(timeout), int(round((timeout - int(timeout)) * 1e6)))
        if option == SO_LINGER:
            return self.linger
        values = {
            SO_REUSEADDR: int(self.reuseaddr), SO_REUSEPORT: int(self.reuseport), SO_BROADCAST: int(self.broadcast),
            SO_KEEPALIVE: int(self.keepalive), SO_DONTROUTE: int(self.dontroute), SO_PRIORITY: self.priority,
            SO_RCVLOWAT: self.rcvlowat, SO_SNDLOWAT: 1, SO_SNDBUF: self.sndbuf, SO_RCVBUF: self.rcvbuf,
            SO_TIMESTAMP: int(self.timestamp == SO_TIMESTAMP), SO_TIMESTAMPNS: int(self.timestamp == SO_TIMESTAMPNS),
            SO_DEBUG: 0, SO_OOBINLINE: 0, SO_NO_CHECK: 0,
        }
        if option not in values:
            raise _error(errno.ENOPROTOOPT)
        return values[option]

    def _set_ip_option(self, option: int, value: "int | bytes") -> None:
        if option == IP_OPTIONS:
            if bytes(value if not isinstance(value, int) else b""):
                raise _error(errno.EINVAL)  # IP options on output: not modelled, refused rather than ignored
            return
        number = self._int(value, socket_level=False)
        if option == IP_TTL:
            if number != -1 and not 1 <= number <= 255:
                raise _error(errno.EINVAL)
            self.uc_ttl = number
        elif option == IP_TOS:
            self.tos = number & 0xFF
        elif option == IP_RECVTTL:
            self.recvttl = bool(number)
        elif option == IP_RECVTOS:
            self.recvtos = bool(number)
        elif option == IP_PKTINFO:
            self.pktinfo = bool(number)
        elif option == IP_RECVERR:
            self.recverr = bool(number)
            if not number:  # ip_setsockopt: turning it off purges the queue
                for entry in self.error_queue:
                    self.rmem -= entry.truesize
                self.error_queue.clear()
        elif option == IP_MTU_DISCOVER:
            if not IP_PMTUDISC_DONT <= number <= IP_PMTUDISC_OMIT:
                raise _error(errno.EINVAL)
            self.pmtudisc = number
        elif option == IP_MULTICAST_TTL:
            if number == -1:
                number = 1
            if not 0 <= number <= 255:
                raise _error(errno.EINVAL)
            self.mc_ttl = number
        elif option == IP_MULTICAST_LOOP:
            self.mc_loop = bool(number)
        elif option == IP_HDRINCL:
            if self.type != SOCK_RAW:
                raise _error(errno.ENOPROTOOPT)
            self._set_hdrincl(bool(number))
        else:
            raise _error(errno.ENOPROTOOPT)

    def _set_hdrincl(self, on: bool) -> None:
        raise _error(errno.ENOPROTOOPT)

    def _get_ip_option(self, option: int) -> "int | bytes":
        if option == IP_TTL:
            return self.uc_ttl if self.uc_ttl != -1 else self.layer.sysctl["net.ipv4.ip_default_ttl"]
        if option == IP_MTU:
            if self.state != TCP_ESTABLISHED or self.peer is None:
                raise _error(errno.ENOTCONN)
            return self.layer.ipv4.route_output(self.peer[0], self.layer.now).pmtu
        if option == IP_OPTIONS:
            return b""
        if option == IP_HDRINCL and self.type == SOCK_RAW:
            return int(getattr(self, "hdrincl", False))
        values = {IP_TOS: self.tos, IP_RECVTTL: int(self.recvttl), IP_RECVTOS: int(self.recvtos),
                  IP_PKTINFO: int(self.pktinfo), IP_RECVERR: int(self.recverr), IP_MTU_DISCOVER: self.pmtudisc,
                  IP_MULTICAST_TTL: self.mc_ttl, IP_MULTICAST_LOOP: int(self.mc_loop)}
        if option not in values:
            raise _error(errno.ENOPROTOOPT)
        return values[option]

    def _set_ipv6_option(self, option: int, value: "int | bytes") -> None:
        number = self._int(value)
        if option == IPV6_V6ONLY:
            if self._bound_port():
                raise _error(errno.EINVAL)  # do_ipv6_setsockopt: not once bound
            self.v6only = bool(number)
        elif option == IPV6_RECVERR:
            self.recverr6 = bool(number)
        elif option == IPV6_UNICAST_HOPS:
            if number != -1 and not 0 <= number <= 255:
                raise _error(errno.EINVAL)
            self.hop_limit = number
        elif option == IPV6_RECVPKTINFO:
            self.pktinfo6 = bool(number)
        elif option in _IPV6_HELD:
            low, high = _IPV6_HELD[option]
            if not low <= number <= high:
                raise _error(errno.EINVAL)
            self.ipv6_held[option] = number if number != -1 else _IPV6_DEFAULTS.get(option, 0)
        else:
            raise _error(errno.ENOPROTOOPT)

    def _get_ipv6_option(self, option: int) -> int:
        if option == IPV6_V6ONLY:
            return int(self.v6only)
        if option == IPV6_RECVERR:
            return int(self.recverr6)
        if option == IPV6_UNICAST_HOPS:
            return self.hop_limit if self.hop_limit != -1 else 64
        if option == IPV6_RECVPKTINFO:
            return int(self.pktinfo6)
        if option in _IPV6_HELD:
            return self.ipv6_held.get(option, _IPV6_DEFAULTS.get(option, 0))
        raise _error(errno.ENOPROTOOPT)

    def _set_raw_option(self, option: int, value: "int | bytes") -> None:
        raise _error(errno.ENOPROTOOPT)

    def _get_raw_option(self, option: int) -> "int | bytes":
        raise _error(errno.ENOPROTOOPT)

    def _bound_port(self) -> int:
        return 0

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

    def _route_checks(self, destination: int, now: float) -> None:
        """ip_route_output_flow, then udp_sendmsg/raw_sendmsg's RTCF_BROADCAST test."""
        entry = self.layer.ipv4.route_output(destination, now)
        if (entry.type == "broadcast" or destination == 0xFFFFFFFF) and not self.broadcast:
            raise _error(errno.EACCES)

    # ------------------------------------------------------------ shutdown, close

    def shutdown(self, how: int) -> None:
        """inet_shutdown: EINVAL for a bad `how`; ENOTCONN unless connected, the mask set all the same."""
        self._check_open()
        if how not in (SHUT_RD, SHUT_WR, SHUT_RDWR):
            raise _error(errno.EINVAL)
        self.shutdown_mask |= how + 1
        self._wake()
        if self.state == TCP_CLOSE:
            raise _error(errno.ENOTCONN)

    def close(self) -> None:
        """The last reference is gone (the program closed its end, or died): unhash, free the queues."""
        if self.closed:
            return
        self._unhash()
        self.closed = True
        self.receive_queue.clear()
        self.error_queue.clear()
        self.rmem = 0
        self.layer.sockets.discard(self)
        self._wake()

    def _unhash(self) -> None:
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


class UdpSocket(InetSocket):
    """SOCK_DGRAM/IPPROTO_UDP (AF_INET, and AF_INET6 dual-stack): on a `UdpEndpoint` of the UDP layer."""

    kind = "udp"

    def __init__(self, layer: "SocketLayer", family: int, type_: int, protocol: int) -> None:
        super().__init__(layer, family, type_, protocol)
        self.udp = layer.udp
        self.endpoint = UdpEndpoint(self.udp, family_inet6=family == AF_INET6)
        self.endpoint.on_receive = self._receive
        self.endpoint.on_error = self._error

    def _local(self) -> tuple[int, int, bool]:
        endpoint = self.endpoint
        return int(endpoint.address), endpoint.port if endpoint.hashed else 0, endpoint.v6_any

    def _bound_port(self) -> int:
        return self.endpoint.port if self.endpoint.hashed else 0

    def _prepare_endpoint(self) -> None:
        endpoint = self.endpoint
        endpoint.reuseaddr, endpoint.reuseport = self.reuseaddr, self.reuseport
        endpoint.v4 = not (self.family == AF_INET6 and self.v6only)

    def bind(self, address: Any) -> None:
        """__inet_bind / __inet6_bind + udp_lib_get_port."""
        self._check_open()
        target = self._addr(address)
        endpoint = self.endpoint
        v6_any = False
        if self.family == AF_INET6:
            if target.family != AF_INET6:
                raise _error(errno.EAFNOSUPPORT)
            if target.address is None:
                raise _error(errno.EADDRNOTAVAIL)  # no IPv6 address is configured here
            v6_any = target.v6_any
            if not v6_any and self.v6only:
                raise _error(errno.EINVAL)  # __inet6_bind: a v4-mapped address on an IPv6-only socket
        elif target.family != AF_INET and not (target.family == AF_UNSPEC and target.address == 0):
            raise _error(errno.EAFNOSUPPORT)  # __inet_bind's "compatibility games": AF_UNSPEC + INADDR_ANY only
        address_type = self.layer.ipv4.address_type(target.address) if target.address else "local"
        if address_type not in ("local", "broadcast", "multicast"):
            raise _error(errno.EADDRNOTAVAIL)
        port = target.port
        if port and port < self.layer.sysctl["net.ipv4.ip_unprivileged_port_start"] and not self.privileged:
            raise _error(errno.EACCES)  # inet_port_requires_bind_service without CAP_NET_BIND_SERVICE
        if endpoint.hashed or self.state != TCP_CLOSE:
            raise _error(errno.EINVAL)  # already bound
        self._prepare_endpoint()
        endpoint.address = IPv4Address.from_wire(target.address)
        endpoint.source = IPv4Address.from_wire(0 if address_type != "local" else target.address)
        endpoint.v6_any = v6_any
        try:
            self.udp.get_port(endpoint, port)
        except OSError:
            endpoint.address = endpoint.source = IPv4Address.from_wire(0)
            endpoint.v6_any = False
            raise
        self.bind_address_locked = bool(target.address)
        self.bind_port_locked = bool(port)

    def _autobind(self) -> None:
        """inet_autobind: an ephemeral port on the wildcard address; EAGAIN when none is free."""
        endpoint = self.endpoint
        if endpoint.hashed:
            return
        self._prepare_endpoint()
        endpoint.v6_any = self.family == AF_INET6
        try:
            self.udp.get_port(endpoint, 0)
        except OSError:
            endpoint.v6_any = False
            raise _error(errno.EAGAIN) from None

    def connect(self, address: Any, now: float) -> None:
        """inet_dgram_connect + ip4_datagram_connect: a default peer, the source chosen now."""
        self._check_open()
        if isinstance(address, (bytes, bytearray)) and len(address) >= 2 and int.from_bytes(address[:2], "little") == AF_UNSPEC:
            self.disconnect()
            return
        if isinstance(address, tuple) and address and address[0] is None:
            self.disconnect()
            return
        target = self._destination(address)
        assert target.address is not None
        self._autobind()
        destination = target.address
        entry = self.layer.ipv4.route_output(destination, now)
        if (entry.type == "broadcast" or destination == 0xFFFFFFFF) and not self.broadcast:
            raise _error(errno.EACCES)
        endpoint = self.endpoint
        source = endpoint.source or (entry.src if entry.src is not None else destination)
        if not endpoint.source:
            endpoint.source = IPv4Address.from_wire(int(source))
        if not endpoint.address:
            endpoint.address = IPv4Address.from_wire(int(source))  # inet_rcv_saddr, rehashed
            endpoint.v6_any = False
        self.peer = endpoint.peer = (destination, target.port)
        self.state = TCP_ESTABLISHED

    def disconnect(self) -> None:
        """__udp_disconnect: forget the peer; an unlocked address and port are given back."""
        endpoint = self.endpoint
        self.state = TCP_CLOSE
        self.peer = endpoint.peer = None
        if not self.bind_address_locked:
            endpoint.address = endpoint.source = IPv4Address.from_wire(0)
            endpoint.v6_any = self.family == AF_INET6 and endpoint.hashed
        if not self.bind_port_locked and endpoint.hashed:
            self.udp.unbind(endpoint)
            endpoint.port = 0
            endpoint.v6_any = False

    def sendmsg(self, data: bytes, address: Any, now: float, flags: int = 0,
                ancillary: Iterable[tuple[int, int, bytes]] = ()) -> int:
        """udp_sendmsg: EMSGSIZE, EOPNOTSUPP, EDESTADDRREQ, EINVAL, EACCES, EPIPE and the route's errno."""
        self._check_open()
        self.layer.now = now
        data = bytes(data)
        if len(data) > 0xFFFF:
            raise _error(errno.EMSGSIZE)
        if flags & MSG_OOB:
            raise _error(errno.EOPNOTSUPP)
        if address is not None:
            target = self._destination(address)
            destination, port = target.address, target.port
            if port == 0:
                raise _error(errno.EINVAL)
        else:
            if self.state != TCP_ESTABLISHED or self.peer is None:
                raise _error(errno.EDESTADDRREQ)
            destination, port = self.peer
        assert destination is not None
        ttl, tos = self._send_cmsgs(ancillary)
        self._autobind()
        if self.shutdown_mask & SEND_SHUTDOWN:
            raise _error(errno.EPIPE)
        self._route_checks(destination, now)
        if len(data) > 0xFFFF - 8 - 20:
            raise _error(errno.EMSGSIZE)  # ip_append_data: the datagram would not fit 65535 bytes
        if self.sk_err:
            raise _error(self._take_error())  # sock_alloc_send_pskb reports a pending error
        if self.pmtudisc in (IP_PMTUDISC_DO, IP_PMTUDISC_PROBE):
            entry = self.layer.ipv4.route_cache.lookup(destination, now)
            if entry is not None and entry.type == "unicast" and len(data) + 28 > entry.pmtu:
                self._local_error(errno.EMSGSIZE, destination, port, entry.pmtu, now)
                raise _error(errno.EMSGSIZE)
        try:
            self.udp.sendto(self.endpoint, data, destination, port, now, src=self.cmsg_source or None,
                            ttl=ttl if ttl is not None else self._ttl(destination),
                            tos=tos if tos is not None else self.tos,
                            dont_fragment=self._dont_fragment(destination, len(data) + 28, now))
        except FragmentationNeeded:
            raise _error(errno.EMSGSIZE) from None
        return len(data)

    def _counted_read(self) -> None:
        self.udp.stats.InDatagrams += 1  # udp_recvmsg: counted when the program reads it

    def _receive(self, data: bytes, source: tuple[str, int], datagram: Datagram) -> bool:
        item = _Queued(data, int(datagram.src), source[1], datagram.ttl, datagram.tos, datagram.now,
                       len(data) + SKB_TRUESIZE_OVERHEAD, int(datagram.dst), datagram.dev)
        return self._queue(item, udp_rule=True)

    def _error(self, message: IcmpMessage, quoted: QuotedDatagram, datagram: Datagram, now: float) -> None:
        transport = quoted.transport_bytes
        port = (transport[2] << 8) | transport[3] if len(transport) >= 4 else 0
        header_length = (message.payload[0] & 0x0F) * 4 if message.payload else 20
        original = message.payload[header_length + 8:max(header_length + 8, quoted.header.total_length)]
        self._icmp_error(message, quoted, datagram, now, port=port, payload=bytes(original))

    def _unhash(self) -> None:
        if self.endpoint.hashed:
            self.udp.unbind(self.endpoint)


class _PingIdentifier:
    """The ping sockets sharing one identifier (ping_table's slot), an EchoListener of the ICMP layer."""

    def __init__(self) -> None:
        self.sockets: list["PingSocket"] = []  # the last bound first

    def _match(self, datagram: Datagram) -> "PingSocket | None":
        for sock in self.sockets:  # ping_lookup: the identifier, and the bound address if any
            if sock.address and sock.address != datagram.dst:
                continue
            return sock
        return None

    def echo_reply(self, message: IcmpMessage, datagram: Datagram, now: float) -> None:
        sock = self._match(datagram)
        if sock is not None:
            sock._receive(datagram)

    def echo_error(self, message: IcmpMessage, quoted: QuotedDatagram, datagram: Datagram, now: float) -> None:
        for sock in self.sockets:
            if sock.address and sock.address != quoted.header.src:
                continue
            sock._error(message, quoted, datagram, now)
            return


class PingSocket(InetSocket):
    """SOCK_DGRAM/IPPROTO_ICMP (net/ipv4/ping.c): echo requests in, replies out; identifier = local port."""

    kind = "icmp"

    def __init__(self, layer: "SocketLayer", family: int, type_: int, protocol: int) -> None:
        super().__init__(layer, family, type_, protocol)
        self.address = 0  # inet_rcv_saddr
        self.source = 0  # inet_saddr
        self.identifier = 0  # inet_num

    def _local(self) -> tuple[int, int, bool]:
        return self.address, self.identifier, False

    def _bound_port(self) -> int:
        return self.identifier

    def bind(self, address: Any) -> None:
        """ping_bind + ping_check_bind_addr + ping_get_port."""
        self._check_open()
        target = self._addr(address)
        if target.family != AF_INET:
            raise _error(errno.EAFNOSUPPORT)
        kind = self.layer.ipv4.address_type(target.address) if target.address else "local"
        if kind != "local":
            raise _error(errno.EADDRNOTAVAIL)  # ping: no broadcast or multicast binds
        if self.identifier:
            raise _error(errno.EINVAL)
        self.address = self.source = target.address or 0
        try:
            self.layer.ping_get_port(self, target.port)
        except OSError:
            self.address = self.source = 0
            raise
        self.bind_address_locked = bool(target.address)
        self.bind_port_locked = bool(target.port)

    def _autobind(self) -> None:
        if not self.identifier:
            try:
                self.layer.ping_get_port(self, 0)
            except OSError:
                raise _error(errno.EAGAIN) from None

    def connect(self, address: Any, now: float) -> None:
        self._check_open()
        if isinstance(address, (bytes, bytearray)) and len(address) >= 2 and int.from_bytes(address[:2], "little") == AF_UNSPEC:
            self.disconnect()
            return
        target = self._addr(address)
        if target.family != AF_INET:
            raise _error(errno.EAFNOSUPPORT)
        self._autobind()
        entry = self.layer.ipv4.route_output(target.address, now)
        if (entry.type == "broadcast" or target.address == 0xFFFFFFFF) and not self.broadcast:
            raise _error(errno.EACCES)
        if not self.source:
            self.source = int(entry.src) if entry.src is not None else target.address
        if not self.address:
            self.address = self.source
        self.peer = (target.address, 0)
        self.state = TCP_ESTABLISHED

    def disconnect(self) -> None:
        self.state = TCP_CLOSE
        self.peer = None
        if not self.bind_address_locked:
            self.address = self.source = 0
        if not self.bind_port_locked and self.identifier:
            self._unhash()

    def sendmsg(self, data: bytes, address: Any, now: float, flags: int = 0,
                ancillary: Iterable[tuple[int, int, bytes]] = ()) -> int:
        """ping_v4_sendmsg: the program writes an echo request; the kernel sets identifier and checksum."""
        self._check_open()
        data = bytes(data)
        if len(data) > 0xFFFF:
            raise _error(errno.EMSGSIZE)
        if flags & MSG_OOB:
            raise _error(errno.EOPNOTSUPP)
        if len(data) < 8:
            raise _error(errno.EINVAL)  # ping_common_sendmsg: room for the ICMP header
        if data[0] != ECHO_REQUEST or data[1] != 0:
            raise _error(errno.EINVAL)
        if address is not None:
            target = self._addr(address)
            if target.family != AF_INET:
                raise _error(errno.EAFNOSUPPORT)
            destination = target.address
        else:
            if self.state != TCP_ESTABLISHED or self.peer is None:
                raise _error(errno.EDESTADDRREQ)
            destination = self.peer[0]
        ttl, tos = self._send_cmsgs(ancillary)
        self._autobind()
        if self.shutdown_mask & SEND_SHUTDOWN:
            raise _error(errno.EPIPE)
        self._route_checks(destination, now)
        if self.sk_err:
            raise _error(self._take_error())
        sequence = int.from_bytes(data[6:8], "big")
        message = echo_request_bytes(self.identifier, sequence, data[8:])
        try:
            self.layer.ipv4.output(destination, IPPROTO_ICMP, message, now, src=self.cmsg_source or self.source or None,
                                   ttl=ttl if ttl is not None else self._ttl(destination),
                                   tos=tos if tos is not None else self.tos,
                                   dont_fragment=self._dont_fragment(destination, len(message) + 20, now))
        except FragmentationNeeded:
            raise _error(errno.EMSGSIZE) from None
        self.layer.icmp.out_count(ECHO_REQUEST)
        return len(data)

    def _receive(self, datagram: Datagram) -> None:
        data = bytes(datagram.payload)
        self._queue(_Queued(data, int(datagram.src), 0, datagram.ttl, datagram.tos, datagram.now,
                            len(data) + SKB_TRUESIZE_OVERHEAD, int(datagram.dst), datagram.dev), udp_rule=False)

    def _error(self, message: IcmpMessage, quoted: QuotedDatagram, datagram: Datagram, now: float) -> None:
        header_length = (message.payload[0] & 0x0F) * 4 if message.payload else 20
        self._icmp_error(message, quoted, datagram, now, port=0, payload=bytes(message.payload[header_length:]),
                         ping=True)

    def _unhash(self) -> None:
        if self.identifier:
            self.layer.ping_unhash(self)


class RawSocket(InetSocket):
    """SOCK_RAW (net/ipv4/raw.c): whole IP datagrams of its protocol in, header included; IP_HDRINCL out."""

    kind = "raw"

    def __init__(self, layer: "SocketLayer", family: int, type_: int, protocol: int) -> None:
        super().__init__(layer, family, type_, protocol)
        self.address = 0
        self.source = 0
        self.hdrincl = protocol == IPPROTO_RAW  # inet_create: IPPROTO_RAW implies IP_HDRINCL
        self.icmp_filter = 0

    def _local(self) -> tuple[int, int, bool]:
        return self.address, self.protocol, False  # inet_create: inet_sport = htons(inet_num = protocol)

    def _set_hdrincl(self, on: bool) -> None:
        if self.protocol == IPPROTO_RAW:
            return  # always on
        self.hdrincl = on

    def _set_raw_option(self, option: int, value: "int | bytes") -> None:
        if option != ICMP_FILTER:
            raise _error(errno.ENOPROTOOPT)
        if self.protocol != IPPROTO_ICMP:
            raise _error(errno.EOPNOTSUPP)  # raw_seticmpfilter is for ICMP sockets only
        if isinstance(value, int):
            self.icmp_filter = value & 0xFFFFFFFF
        else:
            raw = bytes(value)[:4]
            self.icmp_filter = int.from_bytes(raw.ljust(4, b"\0"), "little")

    def _get_raw_option(self, option: int) -> "int | bytes":
        if option != ICMP_FILTER:
            raise _error(errno.ENOPROTOOPT)
        if self.protocol != IPPROTO_ICMP:
            raise _error(errno.EOPNOTSUPP)
        return self.icmp_filter

    def bind(self, address: Any) -> None:
        """raw_bind: an address only (no port); EADDRNOTAVAIL for one not ours."""
        self._check_open()
        target = parse_sockaddr(address, AF_INET)
        if self.state != TCP_CLOSE:
            raise _error(errno.EINVAL)
        kind = self.layer.ipv4.address_type(target.address) if target.address else "local"
        if kind not in ("local", "broadcast", "multicast"):
            raise _error(errno.EADDRNOTAVAIL)
        self.address = target.address
        self.source = 0 if kind != "local" else target.address

    def connect(self, address: Any, now: float) -> None:
        self._check_open()
        if isinstance(address, (bytes, bytearray)) and len(address) >= 2 and int.from_bytes(address[:2], "little") == AF_UNSPEC:
            self.state, self.peer = TCP_CLOSE, None
            return
        target = parse_sockaddr(address, AF_INET)
        if target.family != AF_INET:
            raise _error(errno.EAFNOSUPPORT)
        entry = self.layer.ipv4.route_output(target.address, now)
        if (entry.type == "broadcast" or target.address == 0xFFFFFFFF) and not self.broadcast:
            raise _error(errno.EACCES)
        if not self.source:
            self.source = int(entry.src) if entry.src is not None else target.address
        if not self.address:
            self.address = self.source
        self.peer = (target.address, 0)
        self.state = TCP_ESTABLISHED

    def sendmsg(self, data: bytes, address: Any, now: float, flags: int = 0,
                ancillary: Iterable[tuple[int, int, bytes]] = ()) -> int:
        """raw_sendmsg / raw_send_hdrinc."""
        self._check_open()
        data = bytes(data)
        if len(data) > 0xFFFF:
            raise _error(errno.EMSGSIZE)
        if flags & MSG_OOB:
            raise _error(errno.EOPNOTSUPP)
        if address is not None:
            target = parse_sockaddr(address, AF_INET)
            if target.family not in (AF_INET, AF_UNSPEC):
                raise _error(errno.EAFNOSUPPORT)
            destination = target.address
        else:
            if self.state != TCP_ESTABLISHED or self.peer is None:
                raise _error(errno.EDESTADDRREQ)
            destination = self.peer[0]
        ttl, tos = self._send_cmsgs(ancillary)
        ipv4 = self.layer.ipv4
        self._route_checks(destination, now)
        if self.sk_err:
            raise _error(self._take_error())
        if self.hdrincl:
            return self._send_hdrinc(data, destination, now)
        try:
            ipv4.output(destination, self.protocol, data, now, src=self.cmsg_source or self.source or None,
                        ttl=ttl if ttl is not None else self._ttl(destination),
                        tos=tos if tos is not None else self.tos,
                        dont_fragment=self._dont_fragment(destination, len(data) + 20, now))
        except FragmentationNeeded:
            raise _error(errno.EMSGSIZE) from None
        if self.protocol == IPPROTO_ICMP and data:
            self.layer.icmp.out_count(data[0])
        return len(data)

    def _send_hdrinc(self, data: bytes, destination: int, now: float) -> int:
        """raw_send_hdrinc: the program's header, with total length and checksum (and id, source if 0) filled in."""
        if len(data) < 20:
            raise _error(errno.EINVAL)
        header_length = (data[0] & 0x0F) * 4
        if header_length < 20 or header_length > len(data):
            raise _error(errno.EINVAL)
        entry = self.layer.ipv4.route_output(destination, now)
        if entry.type == "unicast" and len(data) > entry.pmtu:
            raise _error(errno.EMSGSIZE)  # never fragmented
        flags = int.from_bytes(data[6:8], "big")
        source = int.from_bytes(data[12:16], "big") or self.source or None
        identification = int.from_bytes(data[4:6], "big") or None
        protocol = data[9]
        payload = data[header_length:]
        # Options in the program's header are not carried (ipv4.output writes a 20-byte header).
        self.layer.ipv4.output(int.from_bytes(data[16:20], "big") or destination, protocol, payload, now,
                               src=source, ttl=data[8], tos=data[1], dont_fragment=bool(flags & 0x4000),
                               identification=identification)
        if protocol == IPPROTO_ICMP and len(payload) >= 8:
            self.layer.icmp.out_count(payload[0])
        return len(data)

    def matches(self, datagram: Datagram) -> bool:
        """raw_v4_match + icmp_filter."""
        if self.peer is not None and self.peer[0] != datagram.src:
            return False
        if self.address and self.address != datagram.dst:
            return False
        if self.protocol == IPPROTO_ICMP and self.icmp_filter:
            payload = datagram.payload
            if not payload:
                return False
            kind = payload[0]
            if kind < 32 and (self.icmp_filter >> kind) & 1:
                return False
        return True

    def _receive(self, datagram: Datagram) -> bool:
        data = bytes(datagram.packet)
        return self._queue(_Queued(data, int(datagram.src), 0, datagram.ttl, datagram.tos, datagram.now,
                                   len(data) + SKB_TRUESIZE_OVERHEAD, int(datagram.dst), datagram.dev),
                           udp_rule=False)

    def _error(self, message: IcmpMessage, quoted: QuotedDatagram, datagram: Datagram, now: float) -> None:
        """raw_err: only with IP_RECVERR or when connected; the payload from the quoted header (hdrincl) or after it."""
        if not self.recverr and self.state != TCP_ESTABLISHED:
            return
        header_length = (message.payload[0] & 0x0F) * 4 if message.payload else 20
        payload = message.payload if self.hdrincl else message.payload[header_length:]
        self._icmp_error(message, quoted, datagram, now, port=0, payload=bytes(payload))

    def _unhash(self) -> None:
        self.layer.raw_unhash(self)


class StreamProtocol(Protocol):
    """What a stream transport (TCP) gives the socket layer: Linux's struct proto for SOCK_STREAM.

    A typing Protocol: TCP sits below this layer (icmp | udp | tcp) and cannot import
    it, so it satisfies these methods structurally; the composition root registers it.

    Registered with `SocketLayer.register_protosw(SOCK_STREAM, IPPROTO_TCP, protocol)`.
    The socket layer keeps states, the accept queue and shutdown; the protocol
    keeps its port table (inet_csk_get_port: `get_port` returns the port or raises
    EADDRINUSE, `close` gives it back), connections and byte streams. It moves
    a connecting socket on with `sock.set_state(TCP_ESTABLISHED)` (or sets
    `sock.sk_err` and TCP_CLOSE), hands a listener its new connections with
    `listener.enqueue_accept(child)`, and calls `sock._wake()` whenever
    `recv_ready`/`send_room` change: the front ends wait on that."""

    def get_port(self, sock: "StreamSocket", address: int, port: int) -> int:
        raise NotImplementedError

    def listen(self, sock: "StreamSocket") -> None:
        raise NotImplementedError

    def connect(self, sock: "StreamSocket", address: int, port: int, now: float) -> None:
        """Start the handshake; raise EINPROGRESS-free errors only (the front end decides blocking)."""
        raise NotImplementedError

    def sendmsg(self, sock: "StreamSocket", data: bytes, flags: int, now: float) -> int:
        """Bytes taken into the send buffer (fewer than offered when it fills); EAGAIN when none fit."""
        raise NotImplementedError

    def recvmsg(self, sock: "StreamSocket", bufsize: int, flags: int, now: float) -> bytes:
        """Up to `bufsize` bytes in order; b"" at the peer's FIN; EAGAIN when none wait."""
        raise NotImplementedError

    def send_room(self, sock: "StreamSocket") -> int:
        """Free space in the send buffer (sk_stream_wspace)."""
        raise NotImplementedError

    def recv_ready(self, sock: "StreamSocket") -> bool:
        raise NotImplementedError

    def shutdown(self, sock: "StreamSocket", how: int, now: float) -> None:
        raise NotImplementedError

    def close(self, sock: "StreamSocket", now: float) -> None:
        raise NotImplementedError


class StreamSocket(InetSocket):
    """SOCK_STREAM's socket-layer half (inet_stream_ops): bind, listen/accept queue, shutdown, states.

    The transport behind `protocol` completes connections: it calls
    `enqueue_accept(child)` on a listener (False when the backlog is full:
    sk_acceptq_is_full) and `set_state` on a connecting socket."""

    kind = "tcp"

    def __init__(self, layer: "SocketLayer", family: int, type_: int, protocol: int, proto: StreamProtocol) -> None:
        super().__init__(layer, family, type_, protocol)
        self.proto = proto
        self.address = 0
        self.port = 0
        self.v6_any = False
        self.backlog = 0  # sk_max_ack_backlog
        self.accept_queue: deque["StreamSocket"] = deque()

    def _local(self) -> tuple[int, int, bool]:
        return self.address, self.port, self.v6_any

    def _bound_port(self) -> int:
        return self.port

    def bind(self, address: Any) -> None:
        self._check_open()
        target = self._addr(address)
        if self.family == AF_INET6:
            if target.family != AF_INET6:
                raise _error(errno.EAFNOSUPPORT)
            if target.address is None:
                raise _error(errno.EADDRNOTAVAIL)
        elif target.family != AF_INET and not (target.family == AF_UNSPEC and target.address == 0):
            raise _error(errno.EAFNOSUPPORT)
        if target.address and self.layer.ipv4.address_type(target.address) not in ("local", "broadcast", "multicast"):
            raise _error(errno.EADDRNOTAVAIL)
        if target.port and target.port < self.layer.sysctl["net.ipv4.ip_unprivileged_port_start"] and not self.privileged:
            raise _error(errno.EACCES)
        if self.port or self.state != TCP_CLOSE:
            raise _error(errno.EINVAL)
        self.port = self.proto.get_port(self, target.address, target.port)
        self.address = target.address
        self.v6_any = target.v6_any
        self.bind_address_locked = bool(target.address)
        self.bind_port_locked = bool(target.port)

    def listen(self, backlog: int) -> None:
        """inet_listen: EINVAL unless closed or listening; autobinds; the backlog capped at somaxconn."""
        self._check_open()
        if self.state not in (TCP_CLOSE, TCP_LISTEN):
            raise _error(errno.EINVAL)
        self.backlog = min(max(backlog, 0), SOMAXCONN)
        if self.state != TCP_LISTEN:
            if not self.port:
                self.port = self.proto.get_port(self, self.address, 0)
                self.v6_any = self.family == AF_INET6
            self.proto.listen(self)
            self.state = TCP_LISTEN

    def enqueue_accept(self, child: "StreamSocket") -> bool:
        """inet_csk_reqsk_queue_add: False when full (sk_acceptq_is_full: more than the backlog waiting)."""
        if self.state != TCP_LISTEN or len(self.accept_queue) > self.backlog:
            return False
        self.accept_queue.append(child)
        self._wake()
        return True

    def accept(self) -> "StreamSocket":
        """inet_accept: EINVAL unless listening, EAGAIN while the queue is empty."""
        self._check_open()
        if self.state != TCP_LISTEN:
            raise _error(errno.EINVAL)
        if not self.accept_queue:
            raise _error(errno.EAGAIN)
        child = self.accept_queue.popleft()
        self.layer.sockets.add(child)
        return child

    def connect(self, address: Any, now: float) -> None:
        self._check_open()
        target = self._destination(address)
        if self.state == TCP_ESTABLISHED:
            raise _error(errno.EISCONN)
        if self.state == TCP_SYN_SENT:
            raise _error(errno.EALREADY)
        if self.state == TCP_LISTEN:
            raise _error(errno.EINVAL)
        assert target.address is not None
        # __inet_stream_connect: the transport starts the handshake (TCP_SYN_SENT) and later moves the
        # state on; the front end answers a non-blocking connect EINPROGRESS and waits on `on_ready`.
        self.peer = (target.address, target.port)
        try:
            self.proto.connect(self, target.address, target.port, now)
        except OSError:
            self.peer = None
            raise

    def set_state(self, state: int) -> None:
        self.state = state
        self._wake()

    def poll(self) -> int:
        """tcp_poll, the socket layer's part: a listener is readable with connections to accept."""
        if self.state == TCP_LISTEN:
            return POLLIN | POLLRDNORM if self.accept_queue else 0
        mask = POLLERR if self.sk_err else 0
        if self.shutdown_mask == RCV_SHUTDOWN | SEND_SHUTDOWN or (self.state == TCP_CLOSE and self.peer is not None):
            mask |= POLLHUP
        if self.shutdown_mask & RCV_SHUTDOWN:
            mask |= POLLIN | POLLRDNORM | POLLRDHUP
        if self.recv_ready():
            mask |= POLLIN | POLLRDNORM
        if self.send_room() > 0:
            mask |= POLLOUT | POLLWRNORM
        return mask

    def shutdown(self, how: int) -> None:
        self._check_open()
        if how not in (SHUT_RD, SHUT_WR, SHUT_RDWR):
            raise _error(errno.EINVAL)
        if self.state == TCP_CLOSE:
            self.shutdown_mask |= how + 1
            raise _error(errno.ENOTCONN)
        if self.state == TCP_LISTEN:
            if (how + 1) & RCV_SHUTDOWN:  # inet_shutdown: a listener stops listening
                self.proto.shutdown(self, how, self.layer.now)
                self.state = TCP_CLOSE
                self.accept_queue.clear()
            self._wake()
            return
        self.shutdown_mask |= how + 1
        self.proto.shutdown(self, how, self.layer.now)
        self._wake()

    def send_room(self) -> int:
        if self.closed or self.state != TCP_ESTABLISHED or self.shutdown_mask & SEND_SHUTDOWN:
            return 0
        return self.proto.send_room(self)

    def recv_ready(self) -> bool:
        return self.state == TCP_ESTABLISHED and self.proto.recv_ready(self)

    def sendmsg(self, data: bytes, address: Any, now: float, flags: int = 0,
                ancillary: Iterable[tuple[int, int, bytes]] = ()) -> int:
        """inet_sendmsg -> the transport; EPIPE after SHUT_WR, ENOTCONN before the connection (tcp_sendmsg)."""
        self._check_open()
        self.layer.now = now
        if self.sk_err:
            raise _error(self._take_error())
        if self.shutdown_mask & SEND_SHUTDOWN:
            raise _error(errno.EPIPE)
        if self.state != TCP_ESTABLISHED:
            raise _error(errno.EPIPE if self.state == TCP_CLOSE and self.peer is not None else errno.ENOTCONN)
        return self.proto.sendmsg(self, bytes(data), flags, now)

    def recvmsg(self, bufsize: int, now: float, flags: int = 0) -> Message:
        """inet_recvmsg -> the transport; ENOTCONN before the connection, EINVAL on a listener."""
        self._check_open()
        self.layer.now = now
        if self.state == TCP_LISTEN:
            raise _error(errno.ENOTCONN)
        if self.sk_err:
            raise _error(self._take_error())
        if self.state != TCP_ESTABLISHED:
            if self.shutdown_mask & RCV_SHUTDOWN or self.peer is not None:
                return Message(b"", None, 0, [], 0)
            raise _error(errno.ENOTCONN)
        data = self.proto.recvmsg(self, bufsize, flags, now)
        return Message(data, None, 0, [], len(data))

    def _unhash(self) -> None:
        for child in self.accept_queue:
            child.close()
        self.accept_queue.clear()
        self.proto.close(self, self.layer.now)


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
        self.now = 0.0  # the time of the last call that gave one (for getsockopt(IP_MTU), shutdown)
        self.sockets: set[InetSocket] = set()
        self.stream: dict[int, StreamProtocol] = {}  # inetsw[SOCK_STREAM] by protocol
        self.raw: dict[int, list[RawSocket]] = {}  # raw_v4_hashinfo by protocol
        self._ping_rover = 0  # ping_port_rover
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
        return [sock.describe() for sock in self.sockets] + kernel


__all__ = [
    "SocketLayer", "InetSocket", "UdpSocket", "PingSocket", "RawSocket", "StreamSocket", "StreamProtocol",
    "Message", "QueuedError", "SockAddr", "parse_sockaddr", "pack_sockaddr", "pack_cmsgs", "unpack_cmsgs",
]
__all__ += [name for name in list(globals()) if name.isupper() and not name.startswith("_")]  # Linux's numbers
