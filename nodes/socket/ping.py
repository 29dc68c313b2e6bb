"""`PingSocket`: SOCK_DGRAM/IPPROTO_ICMP (net/ipv4/ping.c), and `_PingIdentifier`, the ping
sockets of one identifier as the ICMP layer's echo listener (the layer's ping table holds them).

Imports inet and what it builds on."""
from __future__ import annotations

import errno
from typing import Any, Iterable

from ..ip_fragment import FragmentationNeeded
from ..ipv4 import Datagram
from ..skbuff import SKB_TRUESIZE_OVERHEAD
from ..wire.icmp import ECHO_REQUEST, IcmpMessage, QuotedDatagram, echo_header, echo_request_bytes
from ..wire.ipv4 import IPPROTO_ICMP
from .cmsg import _Queued
from .constants import AF_INET, SEND_SHUTDOWN, TCP_CLOSE, TCP_ESTABLISHED, _error
from .inet import InetSocket, LayerView
from .sockaddr import is_unspec


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

    def __init__(self, layer: LayerView, family: int, type_: int, protocol: int) -> None:
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
        if is_unspec(address):
            self.disconnect()
            return
        target = self._addr(address)
        if target.family != AF_INET:
            raise _error(errno.EAFNOSUPPORT)
        self._autobind()
        self._connect_raw(target.address, now)

    def disconnect(self) -> None:
        self.state = TCP_CLOSE
        self.peer = self.dst = None
        if not self.bind_address_locked:
            self.address = self.source = 0
        if not self.bind_port_locked and self.identifier:
            self.layer.ping_unhash(self)

    def sendmsg(self, data: bytes, address: Any, now: float, flags: int = 0,
                ancillary: Iterable[tuple[int, int, bytes]] = ()) -> int:
        """ping_v4_sendmsg: the program writes an echo request; the kernel sets identifier and checksum."""
        data = self._send_checks(data, flags)
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
        sequence = echo_header(data)[1]  # type checked above: an echo request
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
        header_length = quoted.header.header_length
        self._icmp_error(message, quoted, datagram, now, port=0, payload=bytes(message.payload[header_length:]),
                         ping=True)

    def _unhash(self, now: float) -> None:
        if self.identifier:
            self.layer.ping_unhash(self)

