"""The INET socket layer: the kernel side of every socket a program opens on a node.

Before changing this package, read seed 001's "BSD 소켓 인터페이스" and "INET 소켓
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

The package, bottom to top: a submodule imports only the ones listed before it
(and the layers below socket: udp, icmp, ipv4, ...), never one after it:

    constants   Linux's numbers (x86_64), the struct layouts they share, `_error`
    sockaddr    `SockAddr`, `parse_sockaddr`, `pack_sockaddr`             -> constants
    cmsg        `pack_cmsgs`/`unpack_cmsgs`; `Message`, `QueuedError` and
                the receive queue's entries                               -> constants
    options     `SocketOptions`: setsockopt/getsockopt, InetSocket's mixin -> constants
    inet        `InetSocket`, what every INET socket has; `LayerView`,
                what a socket uses of its layer          -> constants, sockaddr, cmsg, options
    udp | ping | raw | stream
                `UdpSocket`; `PingSocket`; `RawSocket`; `StreamSocket` and
                `StreamProtocol` (the transport's half)   -> inet and the ones below it
    layer       `SocketLayer`: inet_create, inetsw, the ping and raw tables -> all of the above

This module re-exports the public names (`from nodes.socket import ...` as before the split).
"""
from __future__ import annotations

# The stack's numbers the socket layer uses, in its namespace (and __all__) before the split: kept there.
from ..skbuff import SKB_TRUESIZE_OVERHEAD
from ..wire.icmp import ECHO_REQUEST
from ..wire.ipv4 import IPPROTO_ICMP, IPPROTO_UDP
from .cmsg import Message, QueuedError, pack_cmsgs, unpack_cmsgs
from .constants import (
    AF_UNSPEC, AF_INET, AF_INET6, SOCK_STREAM, SOCK_DGRAM, SOCK_RAW, SOCK_RDM, SOCK_SEQPACKET, SOCK_PACKET,
    SOCK_MAX, SOCK_NONBLOCK, SOCK_CLOEXEC, SOCK_TYPE_MASK, IPPROTO_IP, IPPROTO_IPV6, IPPROTO_ICMPV6,
    IPPROTO_RAW, IPPROTO_MAX, SOL_SOCKET, SOL_IP, SOL_UDP, SOL_IPV6, SOL_RAW, SO_DEBUG, SO_REUSEADDR, SO_TYPE,
    SO_ERROR, SO_DONTROUTE, SO_BROADCAST, SO_SNDBUF, SO_RCVBUF, SO_KEEPALIVE, SO_OOBINLINE, SO_NO_CHECK,
    SO_PRIORITY, SO_LINGER, SO_REUSEPORT, SO_RCVLOWAT, SO_SNDLOWAT, SO_RCVTIMEO, SO_SNDTIMEO, SO_TIMESTAMP,
    SO_ACCEPTCONN, SO_SNDBUFFORCE, SO_RCVBUFFORCE, SO_TIMESTAMPNS, SO_PROTOCOL, SO_DOMAIN, IP_TOS, IP_TTL,
    IP_HDRINCL, IP_OPTIONS, IP_PKTINFO, IP_MTU_DISCOVER, IP_RECVERR, IP_RECVTTL, IP_RECVTOS, IP_MTU,
    IP_MULTICAST_TTL, IP_MULTICAST_LOOP, IP_PMTUDISC_DONT, IP_PMTUDISC_WANT, IP_PMTUDISC_DO, IP_PMTUDISC_PROBE,
    IP_PMTUDISC_INTERFACE, IP_PMTUDISC_OMIT, IPV6_UNICAST_HOPS, IPV6_RECVERR, IPV6_V6ONLY, IPV6_MULTICAST_IF,
    IPV6_MULTICAST_HOPS, IPV6_MULTICAST_LOOP, IPV6_MTU_DISCOVER, IPV6_RECVPKTINFO, IPV6_PKTINFO,
    IPV6_RECVHOPLIMIT, IPV6_DONTFRAG, IPV6_RECVTCLASS, IPV6_TCLASS, ICMP_FILTER, MSG_OOB, MSG_PEEK,
    MSG_DONTROUTE, MSG_CTRUNC, MSG_TRUNC, MSG_DONTWAIT, MSG_EOR, MSG_WAITALL, MSG_CONFIRM, MSG_ERRQUEUE,
    MSG_NOSIGNAL, MSG_MORE, SHUT_RD, SHUT_WR, SHUT_RDWR, RCV_SHUTDOWN, SEND_SHUTDOWN, POLLIN, POLLPRI, POLLOUT,
    POLLERR, POLLHUP, POLLRDNORM, POLLWRNORM, POLLWRBAND, POLLRDHUP, SO_EE_ORIGIN_LOCAL, SO_EE_ORIGIN_ICMP,
    SOMAXCONN, SOCK_MIN_RCVBUF, SOCK_MIN_SNDBUF, TCP_ESTABLISHED, TCP_SYN_SENT, TCP_CLOSE, TCP_LISTEN,
    STATE_NAMES,
)
from .inet import InetSocket
from .layer import SocketLayer, StreamFactory
from .ping import PingSocket
from .raw import RawSocket
from .sockaddr import SockAddr, pack_sockaddr, parse_sockaddr
from .stream import StreamProtocol, StreamSocket
from .udp import UdpSocket

__all__ = [
    "SocketLayer", "InetSocket", "UdpSocket", "PingSocket", "RawSocket", "StreamSocket", "StreamProtocol",
    "Message", "QueuedError", "SockAddr", "parse_sockaddr", "pack_sockaddr", "pack_cmsgs", "unpack_cmsgs",
    "StreamFactory",
]
__all__ += [  # Linux's numbers
    "AF_UNSPEC", "AF_INET", "AF_INET6", "SOCK_STREAM", "SOCK_DGRAM", "SOCK_RAW", "SOCK_RDM", "SOCK_SEQPACKET",
    "SOCK_PACKET", "SOCK_MAX", "SOCK_NONBLOCK", "SOCK_CLOEXEC", "SOCK_TYPE_MASK", "IPPROTO_IP", "IPPROTO_IPV6",
    "IPPROTO_ICMPV6", "IPPROTO_RAW", "IPPROTO_MAX", "SOL_SOCKET", "SOL_IP", "SOL_UDP", "SOL_IPV6", "SOL_RAW",
    "SO_DEBUG", "SO_REUSEADDR", "SO_TYPE", "SO_ERROR", "SO_DONTROUTE", "SO_BROADCAST", "SO_SNDBUF",
    "SO_RCVBUF", "SO_KEEPALIVE", "SO_OOBINLINE", "SO_NO_CHECK", "SO_PRIORITY", "SO_LINGER", "SO_REUSEPORT",
    "SO_RCVLOWAT", "SO_SNDLOWAT", "SO_RCVTIMEO", "SO_SNDTIMEO", "SO_TIMESTAMP", "SO_ACCEPTCONN",
    "SO_SNDBUFFORCE", "SO_RCVBUFFORCE", "SO_TIMESTAMPNS", "SO_PROTOCOL", "SO_DOMAIN", "IP_TOS", "IP_TTL",
    "IP_HDRINCL", "IP_OPTIONS", "IP_PKTINFO", "IP_MTU_DISCOVER", "IP_RECVERR", "IP_RECVTTL", "IP_RECVTOS",
    "IP_MTU", "IP_MULTICAST_TTL", "IP_MULTICAST_LOOP", "IP_PMTUDISC_DONT", "IP_PMTUDISC_WANT",
    "IP_PMTUDISC_DO", "IP_PMTUDISC_PROBE", "IP_PMTUDISC_INTERFACE", "IP_PMTUDISC_OMIT", "IPV6_UNICAST_HOPS",
    "IPV6_RECVERR", "IPV6_V6ONLY", "IPV6_MULTICAST_IF", "IPV6_MULTICAST_HOPS", "IPV6_MULTICAST_LOOP",
    "IPV6_MTU_DISCOVER", "IPV6_RECVPKTINFO", "IPV6_PKTINFO", "IPV6_RECVHOPLIMIT", "IPV6_DONTFRAG",
    "IPV6_RECVTCLASS", "IPV6_TCLASS", "ICMP_FILTER", "MSG_OOB", "MSG_PEEK", "MSG_DONTROUTE", "MSG_CTRUNC",
    "MSG_TRUNC", "MSG_DONTWAIT", "MSG_EOR", "MSG_WAITALL", "MSG_CONFIRM", "MSG_ERRQUEUE", "MSG_NOSIGNAL",
    "MSG_MORE", "SHUT_RD", "SHUT_WR", "SHUT_RDWR", "RCV_SHUTDOWN", "SEND_SHUTDOWN", "POLLIN", "POLLPRI",
    "POLLOUT", "POLLERR", "POLLHUP", "POLLRDNORM", "POLLWRNORM", "POLLWRBAND", "POLLRDHUP",
    "SO_EE_ORIGIN_LOCAL", "SO_EE_ORIGIN_ICMP", "SOMAXCONN", "SOCK_MIN_RCVBUF", "SOCK_MIN_SNDBUF",
    "TCP_ESTABLISHED", "TCP_SYN_SENT", "TCP_CLOSE", "TCP_LISTEN", "STATE_NAMES", "SKB_TRUESIZE_OVERHEAD",
    "ECHO_REQUEST", "IPPROTO_ICMP", "IPPROTO_UDP",
]
