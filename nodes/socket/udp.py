"""`UdpSocket`: SOCK_DGRAM/IPPROTO_UDP on an endpoint of the UDP layer (nodes/udp.py): bind and
autobind (udp_lib_get_port), connect/disconnect, udp_sendmsg, the receive and ICMP error paths.

Imports inet and what it builds on."""
from __future__ import annotations

import errno
from typing import Any, Iterable

from ..ip_fragment import FragmentationNeeded
from ..ipv4 import Datagram
from ..skbuff import SKB_TRUESIZE_OVERHEAD
from ..udp import UdpEndpoint
from ..wire.addresses import IPv4Address
from ..wire.icmp import IcmpMessage, QuotedDatagram
from ..wire.udp import quoted_ports
from .cmsg import _Queued
from .constants import (
    AF_INET, AF_INET6, AF_UNSPEC, IP_PMTUDISC_DO, IP_PMTUDISC_PROBE, SEND_SHUTDOWN, TCP_CLOSE,
    TCP_ESTABLISHED, _error,
)
from .inet import InetSocket, LayerView
from .sockaddr import is_unspec


class UdpSocket(InetSocket):
    """SOCK_DGRAM/IPPROTO_UDP (AF_INET, and AF_INET6 dual-stack): on a `UdpEndpoint` of the UDP layer."""

    kind = "udp"

    def __init__(self, layer: LayerView, family: int, type_: int, protocol: int) -> None:
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
        if is_unspec(address):
            self.disconnect()
            return
        if isinstance(address, tuple) and address and address[0] is None:
            self.disconnect()
            return
        target = self._destination(address)
        assert target.address is not None
        self._autobind()
        destination = target.address
        self.dst = entry = self._route_checks(destination, now)
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
        self.peer = endpoint.peer = self.dst = None
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
        data = self._send_checks(data, flags)
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
        ports = quoted_ports(quoted.transport_bytes)
        port = ports[1] if ports is not None else 0
        header_length = quoted.header.header_length
        original = message.payload[header_length + 8:max(header_length + 8, quoted.header.total_length)]
        self._icmp_error(message, quoted, datagram, now, port=port, payload=bytes(original))

    def _unhash(self, now: float) -> None:
        if self.endpoint.hashed:
            self.udp.unbind(self.endpoint)
