"""`RawSocket`: SOCK_RAW (net/ipv4/raw.c): whole datagrams in, IP_HDRINCL and ICMP_FILTER.

Imports inet and what it builds on."""
from __future__ import annotations

import errno
from typing import Any, Iterable

from ..ip_fragment import FragmentationNeeded
from ..ipv4 import Datagram
from ..skbuff import SKB_TRUESIZE_OVERHEAD
from ..wire.icmp import IcmpMessage, QuotedDatagram
from ..wire.ipv4 import IP_DF, IPPROTO_ICMP, MIN_HEADER_LENGTH, unpack_fixed_header
from .cmsg import _Queued
from .constants import (
    AF_INET, AF_UNSPEC, ICMP_FILTER, IPPROTO_RAW, TCP_CLOSE, TCP_ESTABLISHED, _error,
)
from .inet import InetSocket, LayerView
from .sockaddr import is_unspec, parse_sockaddr


class RawSocket(InetSocket):
    """SOCK_RAW (net/ipv4/raw.c): whole IP datagrams of its protocol in, header included; IP_HDRINCL out."""

    kind = "raw"

    def __init__(self, layer: LayerView, family: int, type_: int, protocol: int) -> None:
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
        if is_unspec(address):
            self.state, self.peer, self.dst = TCP_CLOSE, None, None
            return
        target = parse_sockaddr(address, AF_INET)
        if target.family != AF_INET:
            raise _error(errno.EAFNOSUPPORT)
        self._connect_raw(target.address, now)

    def sendmsg(self, data: bytes, address: Any, now: float, flags: int = 0,
                ancillary: Iterable[tuple[int, int, bytes]] = ()) -> int:
        """raw_sendmsg / raw_send_hdrinc."""
        data = self._send_checks(data, flags)
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
        if len(data) < MIN_HEADER_LENGTH:
            raise _error(errno.EINVAL)
        version_ihl, tos, _, identification, flags, ttl, protocol, _, source, header_dst = unpack_fixed_header(data)
        header_length = (version_ihl & 0x0F) * 4
        if header_length < MIN_HEADER_LENGTH or header_length > len(data):
            raise _error(errno.EINVAL)
        entry = self.layer.ipv4.route_output(destination, now)
        if entry.type == "unicast" and len(data) > entry.pmtu:
            raise _error(errno.EMSGSIZE)  # never fragmented
        payload = data[header_length:]
        # Options in the program's header are not carried (ipv4.output writes a 20-byte header).
        self.layer.ipv4.output(header_dst or destination, protocol, payload, now,
                               src=source or self.source or None, ttl=ttl, tos=tos,
                               dont_fragment=bool(flags & IP_DF), identification=identification or None)
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
        payload = message.payload if self.hdrincl else message.payload[quoted.header.header_length:]
        self._icmp_error(message, quoted, datagram, now, port=0, payload=bytes(payload))

    def _unhash(self, now: float) -> None:
        self.layer.raw_unhash(self)
