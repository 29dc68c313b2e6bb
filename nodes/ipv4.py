"""IPv4: input checks, local delivery, forwarding, output, fragmentation, reassembly.

Before changing this file, read RFC 791 section 3.2, RFC 1122 section 3.2.1,
RFC 1812 sections 5.2-5.3 (forwarding: TTL, fragmentation, ICMP errors) and
seed 001's IP sections (routing, fragmentation, the ipq reassembly queue).
Linux equivalents: `ip_rcv`, `ip_rcv_finish`, `ip_local_deliver`,
`ip_forward`, `ip_output`/`ip_fragment`, `ip_defrag`.

Sans-I/O: this layer receives `SkBuff`s whose data starts at the IP header
and never touches a socket or a clock. Its seams, as Linux's:

* up: transports register with `add_protocol(number, handler, err_handler)`,
  Linux's `inet_add_protocol`/`struct net_protocol`; a datagram for us goes
  to `inet_protos[number].handler(datagram, now)`, and the ICMP layer hands
  an error quoting one of ours to `inet_protos[number].err_handler`.
* up, for errors: `icmp_send(type, code, packet, now)`, the one way any
  layer reports a datagram it cannot deliver; the ICMP layer installs it
  (`register_icmp_sender`), so ipv4 never imports icmp, udp or tcp.
* sideways, for transports: `output` (ip_queue_xmit), `route_output`
  (ip_route_output_key: source selection) and `update_pmtu` (RFC 1191).
* down: the three link-layer entry points given to the constructor
  (`neigh_output`, `loopback_xmit`, `broadcast_xmit`), dst_output's targets.

A datagram that cannot be sent is counted (OutNoRoutes, OutDiscards) and
`output` raises the errno a socket would see; what a received datagram
triggers (forwarding, echo replies, ICMP errors) is counted and dropped by
the caller, never raised out of the receive path.
"""
from __future__ import annotations

import errno
from dataclasses import asdict, dataclass
from random import Random
from typing import Callable, Mapping

from .ip_fragment import FragmentationNeeded, ReassemblyQueues, fragment
from .ip_options import OptionsProcessor
from .martian import InputFilter
from .nic import NetDevice
from .route import DELIVERING_TYPES, ROUTE_ERRORS, Route, RouteType
from .route_cache import DstEntry, RouteCache
from .skbuff import MAX_HEADER, PACKET_BROADCAST, PACKET_HOST, PACKET_MULTICAST, SkBuff
from .sysctl import Sysctl
from .wire.addresses import IPv4Address
from .wire.errors import WireError
from .wire.icmp import (
    DEST_UNREACH,
    FRAG_NEEDED,
    FRAG_REASSEMBLY_TIME_EXCEEDED,
    NET_UNREACH,
    PROT_UNREACH,
    REDIR_HOST,
    REDIRECT,
    TIME_EXCEEDED,
    TTL_EXCEEDED_IN_TRANSIT,
    IcmpMessage,
    QuotedDatagram,
)
from .wire.ipv4 import (
    IP_DF,
    VERSION_IHL_NO_OPTIONS,
    IPv4Header,
    IPv4View,
    build_header_into,
    decrement_ttl,
    header_checksum_ok,
    unpack_fixed_header,
)

LIMITED_BROADCAST = 0xFFFFFFFF
LOOPBACK_ADDRESS = 0x7F000001  # INADDR_LOOPBACK

_int_new = int.__new__
_UNICAST = RouteType.UNICAST
_LOCAL = RouteType.LOCAL
_BROADCAST = RouteType.BROADCAST
# First octets of addresses that may be martian (0/8, 127/8, 224/4 and above): others skip the checks.
_SUSPECT_SOURCE_NETS = frozenset((0, 127, *range(224, 256)))
_SUSPECT_DESTINATION_NETS = frozenset((0, 127))


@dataclass(slots=True)
class IpStats:
    """`/proc/net/snmp` Ip: counters, plus IpExt ones; the Reasm* counters live in `ReassemblyQueues`."""

    InReceives: int = 0
    InHdrErrors: int = 0
    InAddrErrors: int = 0
    ForwDatagrams: int = 0
    InUnknownProtos: int = 0
    InDiscards: int = 0
    InDelivers: int = 0
    OutRequests: int = 0
    OutDiscards: int = 0
    OutNoRoutes: int = 0
    FragOKs: int = 0
    FragFails: int = 0
    FragCreates: int = 0
    # IpExt
    InNoRoutes: int = 0
    InTruncatedPkts: int = 0
    InCsumErrors: int = 0
    InBcastPkts: int = 0
    OutBcastPkts: int = 0
    InOctets: int = 0
    OutOctets: int = 0
    # ours: datagrams dropped by the partition filter (an iptables DROP stand-in)
    FilterDrops: int = 0

    def as_dict(self) -> dict[str, int]:
        return asdict(self)


class Datagram:
    """A datagram handed up to a protocol: addresses, header fields and payload.

    `packet` is the whole datagram (header + payload) so that a protocol can
    quote it in an ICMP error; `payload` is a view of its transport part.
    """

    __slots__ = ("src", "dst", "protocol", "ttl", "tos", "dev", "pkt_type", "packet", "header_length", "now")

    def __init__(self, src: IPv4Address, dst: IPv4Address, protocol: int, ttl: int, tos: int, dev: str,
                 pkt_type: int, packet: "bytes | memoryview", header_length: int, now: float) -> None:
        self.src = src
        self.dst = dst
        self.protocol = protocol
        self.ttl = ttl
        self.tos = tos
        self.dev = dev
        self.pkt_type = pkt_type
        self.packet = packet
        self.header_length = header_length
        self.now = now

    @property
    def payload(self) -> memoryview:
        return memoryview(self.packet)[self.header_length:]

    @property
    def is_broadcast(self) -> bool:
        return self.pkt_type in (PACKET_BROADCAST, PACKET_MULTICAST)


Handler = Callable[[Datagram, float], None]
ErrHandler = Callable[[IcmpMessage, QuotedDatagram, Datagram, float], None]


class NetProtocol:
    """struct net_protocol: what IPv4 calls for one protocol number. `own_pmtu`: its err_handler
    applies a frag-needed's MTU itself, once it believes the error (TCP: tcp_v4_err's sequence check)."""

    __slots__ = ("handler", "err_handler", "own_pmtu")

    def __init__(self, handler: Handler, err_handler: ErrHandler, own_pmtu: bool = False) -> None:
        self.handler = handler
        self.err_handler = err_handler
        self.own_pmtu = own_pmtu


def _no_icmp(kind: int, code: int, original: "bytes | memoryview", now: float, *, next_hop_mtu: int = 0,
             gateway: int = 0) -> bool:
    return False  # no ICMP layer registered (a bare IPv4 layer in a test)


class IPv4Layer:
    """One node's IPv4 layer; the stack owns it and calls `receive`/`output`."""

    def __init__(self, sysctl: Sysctl, rng: Random, route_cache: RouteCache, devices: Mapping[str, NetDevice],
                 loopback: NetDevice, *, neigh_output: Callable[[NetDevice, int, SkBuff, float], None],
                 loopback_xmit: Callable[[SkBuff], None],
                 broadcast_xmit: Callable[[NetDevice, SkBuff], None]) -> None:
        self.sysctl = sysctl
        self.route_cache = route_cache
        self.devices = devices
        self.loopback = loopback
        self._neigh_output = neigh_output
        self._loopback_xmit = loopback_xmit
        self._broadcast_xmit = broadcast_xmit
        self.stats = IpStats()
        self.reassembly = ReassemblyQueues(
            ipfrag_time=sysctl["net.ipv4.ipfrag_time"],
            ipfrag_high_thresh=sysctl["net.ipv4.ipfrag_high_thresh"],
            ipfrag_low_thresh=sysctl["net.ipv4.ipfrag_low_thresh"],
        )
        self.inet_protos: dict[int, NetProtocol] = {}
        # icmp_send(type, code, packet, now, *, next_hop_mtu=0, gateway=0) -> sent?; installed by the ICMP layer.
        self.icmp_send: Callable[..., bool] = _no_icmp
        # Addresses that are ours or broadcast on some subnet: a set lookup on every datagram.
        self.local_addresses: set[int] = set()
        self.broadcast_addresses: set[int] = {LIMITED_BROADCAST}
        # Peers cut off by a partition: datagrams from or to them are dropped
        # in every path, like `iptables -A INPUT/OUTPUT/FORWARD -s/-d ADDR -j DROP`.
        self.blocked: frozenset[int] = frozenset()
        # Raw sockets, installed by the socket layer: the protocols some raw socket is open for, and
        # raw_deliver(datagram, now) -> True when a raw socket took a copy (Linux raw_local_deliver).
        self.raw_protocols: frozenset[int] = frozenset()
        self.raw_deliver: Callable[[Datagram, float], bool] = lambda datagram, now: False
        self.input_filter = InputFilter(sysctl, route_cache.fib)  # martians and rp_filter
        self.options = OptionsProcessor(sysctl, route_cache.lookup, route_cache.fib.address_type,
                                        lambda *args, **kwargs: self.icmp_send(*args, **kwargs), self.stats)
        self._identification = rng.randrange(0x10000)

    # ------------------------------------------------------------------ seams

    def add_protocol(self, number: int, handler: Handler, err_handler: ErrHandler, *, own_pmtu: bool = False) -> None:
        """inet_add_protocol: deliver datagrams of `number` to `handler`, ICMP errors about them to
        `err_handler` (which, with `own_pmtu`, updates the path MTU itself: see NetProtocol)."""
        if number in self.inet_protos:
            raise FileExistsError(errno.EEXIST, f"IP protocol {number} is registered already")
        self.inet_protos[number] = NetProtocol(handler, err_handler, own_pmtu)

    def del_protocol(self, number: int) -> None:
        """inet_del_protocol."""
        self.inet_protos.pop(number, None)

    def register_icmp_sender(self, icmp_send: Callable[..., bool]) -> None:
        """The ICMP layer offers `icmp_send` to every layer through IPv4 (Linux's icmp_send)."""
        self.icmp_send = icmp_send

    def route_output(self, dst: int, now: float, src: int | None = None) -> DstEntry:
        """ip_route_output_key: the route toward `dst`; ENETUNREACH (counted as OutNoRoutes) when none.

        `src`, a socket's bound address, routes 255.255.255.255 when no route matches it."""
        entry = self.route_cache.lookup(dst or LOOPBACK_ADDRESS, now)  # 0.0.0.0 is this host, over lo
        if entry is None and dst == LIMITED_BROADCAST:
            entry = self._broadcast_by_source(src, now)
        if entry is None:
            self.stats.OutNoRoutes += 1
            raise OSError(errno.ENETUNREACH, "Network is unreachable")
        return entry

    def address_type(self, address: int) -> str:
        """inet_addr_type: "local", "broadcast", "multicast" or "unicast" by the FIB's local table
        (so every 127.x.y.z is local), for bind's address check."""
        return self.route_cache.fib.address_type(address)

    def update_pmtu(self, dst: int, mtu: int, now: float) -> None:
        """ipv4_update_pmtu: a frag-needed error told us the path MTU toward `dst` (RFC 1191)."""
        self.route_cache.update_pmtu(dst, mtu, now)

    # ------------------------------------------------------------------ knobs

    @property
    def forwarding(self) -> bool:
        return bool(self.sysctl["net.ipv4.ip_forward"])

    def next_identification(self) -> int:
        self._identification = (self._identification + 1) & 0xFFFF
        return self._identification

    # ------------------------------------------------------------------ input

    def receive(self, skb: SkBuff, now: float) -> None:
        """ip_rcv: check the header, then deliver locally or forward.

        The common header (no options) is checked from one unpack, without
        building a view: this runs for every datagram a node receives.
        """
        stats = self.stats
        stats.InReceives += 1
        data = skb.data
        length = len(data)
        if length >= 20 and data[0] == VERSION_IHL_NO_OPTIONS:
            _, tos, total_length, identification, flags, ttl, protocol, checksum, src, dst = unpack_fixed_header(data)
            if total_length > length:
                stats.InTruncatedPkts += 1
                return
            if total_length < 20:
                stats.InHdrErrors += 1
                return
            # The header's words sum to one's-complement all-ones (a multiple of
            # 0xFFFF) exactly when its checksum is right (see IPv4Header.parse).
            if (0x4500 + tos + total_length + identification + flags + (ttl << 8) + protocol + checksum
                    + (src >> 16) + (src & 0xFFFF) + (dst >> 16) + (dst & 0xFFFF)) % 0xFFFF:
                stats.InCsumErrors += 1
                stats.InHdrErrors += 1
                return
            header_length = 20
        else:
            try:
                view = IPv4View(data)
            except WireError as error:
                if "truncated" in error.reason:
                    stats.InTruncatedPkts += 1
                else:
                    stats.InHdrErrors += 1
                return
            if not header_checksum_ok(data):
                stats.InCsumErrors += 1
                stats.InHdrErrors += 1
                return
            header_length = view.header_length  # its options are checked once routed (ip_rcv_options)
            _, tos, total_length, _, flags, ttl, protocol, _, src, dst = unpack_fixed_header(data)
        stats.InOctets += total_length
        if total_length < length:
            skb.trim(total_length)  # drop Ethernet padding
        skb.network_header = skb.data_offset  # skb_reset_network_header
        if self.blocked and (src in self.blocked or dst in self.blocked):
            stats.FilterDrops += 1
            return
        if dst >> 28 == 0xE:
            stats.InDiscards += 1  # no multicast group membership yet
            return
        # ip_route_input_slow's martian checks; a datagram looped back on lo keeps its route and skips them.
        if skb.dev != self.loopback.name and (
                src >> 24 in _SUSPECT_SOURCE_NETS or dst >> 24 in _SUSPECT_DESTINATION_NETS
                or src in self.local_addresses or self.sysctl["net.ipv4.conf.all.rp_filter"]) \
                and self.input_filter.rejects(src, dst, skb.dev or "", self.local_addresses,
                                              self.broadcast_addresses, self.forwarding, now):
            return
        if header_length > 20:  # ip_rcv_options: a bad option or a refused source route ends here
            routed = self.options.receive(skb, header_length, src, dst, now)
            if routed is None:
                return
            dst = routed
        if dst in self.local_addresses:
            self._local_deliver(skb, header_length, flags, ttl, protocol, tos, src, dst, now)
        elif dst in self.broadcast_addresses:
            stats.InBcastPkts += 1
            self._local_deliver(skb, header_length, flags, ttl, protocol, tos, src, dst, now)
        elif self.route_cache.fib.address_type(dst) is _LOCAL:
            # The local table decides, not the set of configured addresses: all of 127/8 (lo's route).
            self._local_deliver(skb, header_length, flags, ttl, protocol, tos, src, dst, now)
        elif skb.pkt_type != PACKET_HOST:
            stats.InAddrErrors += 1  # link-layer broadcast of a unicast datagram not for us
        elif self.sysctl["net.ipv4.ip_forward"]:
            self._forward(skb, ttl, flags, total_length, dst, now)
        else:
            stats.InAddrErrors += 1  # a host never forwards (RFC 1122 3.3.4.1)

    def _local_deliver(self, skb: SkBuff, header_length: int, flags: int, ttl: int, protocol: int, tos: int,
                       src: int, dst: int, now: float) -> None:
        """ip_local_deliver: reassemble if needed, then hand to the protocol."""
        stats = self.stats
        packet: "bytes | memoryview" = skb.data
        if flags & 0x3FFF:  # MF set or a non-zero offset: a fragment
            view = IPv4View(packet)
            result = self.reassembly.add(view.header(), view.payload, now)
            if result.datagram is None:
                return
            header, payload = result.datagram
            packet = header.build(payload)
            view = IPv4View(packet)
            header_length = view.header_length
            ttl = view.ttl
            tos = view.tos
        protocol_entry = self.inet_protos.get(protocol)
        if protocol in self.raw_protocols:
            # ip_protocol_deliver_rcu: raw_local_deliver first (a copy to each matching raw socket),
            # then the protocol; a datagram a raw socket took earns no protocol unreachable.
            datagram = Datagram(_int_new(IPv4Address, src), _int_new(IPv4Address, dst), protocol, ttl, tos,
                                skb.dev or "", skb.pkt_type, packet, header_length, now)
            raw = self.raw_deliver(datagram, now)
            stats.InDelivers += 1
            if protocol_entry is not None:
                protocol_entry.handler(datagram, now)
            elif not raw:
                stats.InDelivers -= 1
                stats.InUnknownProtos += 1
                if skb.pkt_type == PACKET_HOST and dst not in self.broadcast_addresses:
                    self.icmp_send(DEST_UNREACH, PROT_UNREACH, packet, now)
            return
        if protocol_entry is None:
            stats.InUnknownProtos += 1
            if skb.pkt_type == PACKET_HOST and dst not in self.broadcast_addresses:
                self.icmp_send(DEST_UNREACH, PROT_UNREACH, packet, now)
            return
        stats.InDelivers += 1
        protocol_entry.handler(Datagram(_int_new(IPv4Address, src), _int_new(IPv4Address, dst), protocol, ttl, tos, skb.dev or "",
                         skb.pkt_type, packet, header_length, now), now)

    # ------------------------------------------------------------- forwarding

    def _forward(self, skb: SkBuff, ttl: int, flags: int, total_length: int, dst: int, now: float) -> None:
        """ip_forward: route, TTL, MTU, then out through the neighbour layer (RFC 1812 5.2-5.3).

        The route comes first, as in Linux (ip_route_input_slow runs before ip_forward):
        an unroutable datagram earns net unreachable whatever its TTL.
        """
        stats = self.stats
        entry = self.route_cache.lookup(dst, now)
        if entry is None:
            stats.InNoRoutes += 1
            self.icmp_send(DEST_UNREACH, NET_UNREACH, skb.data, now)
            return
        route_type = entry.route.type
        if route_type is not _UNICAST:
            # ip_error: unreachable/prohibit earn their ICMP code, a blackhole drops silently.
            failure = ROUTE_ERRORS.get(route_type)
            stats.InDiscards += 1
            if failure is not None and failure.icmp_code is not None:
                self.icmp_send(DEST_UNREACH, failure.icmp_code, skb.data, now)
            return
        device = self.devices.get(entry.dev)
        if device is None or not device.running:
            stats.InNoRoutes += 1
            self.icmp_send(DEST_UNREACH, NET_UNREACH, skb.data, now)
            return
        if ttl <= 1:
            stats.InHdrErrors += 1  # Linux counts expiring datagrams as header errors
            self.icmp_send(TIME_EXCEEDED, TTL_EXCEEDED_IN_TRANSIT, skb.data, now)
            return
        # ip_dst_mtu_maybe_forward: a PMTU learnt from our own traffic is not a forwarding limit
        # unless ip_forward_use_pmtu is set; the route's mtu or the device's is.
        mtu = entry.pmtu if self.sysctl["net.ipv4.ip_forward_use_pmtu"] else entry.route_mtu
        if total_length > mtu and flags & IP_DF:
            stats.FragFails += 1
            self.icmp_send(DEST_UNREACH, FRAG_NEEDED, skb.data, now, next_hop_mtu=mtu)
            return
        skb.make_writable()  # skb_cow: a received frame is read-only
        decrement_ttl(skb.buffer, skb.data_offset)
        stats.ForwDatagrams += 1
        if entry.dev == skb.dev and self.sysctl["net.ipv4.conf.all.send_redirects"]:
            self._send_redirect(skb, entry, now)
        if total_length > mtu:
            rewritten = IPv4View(skb.data)
            self._fragment_and_send(rewritten.header(), rewritten.payload, device, entry.next_hop, mtu, now)
            return
        self._neigh_output(device, entry.next_hop, skb, now)

    def _send_redirect(self, skb: SkBuff, entry: DstEntry, now: float) -> None:
        """__mkroute_input's IPSKB_DOREDIRECT, then ip_rt_send_redirect: a datagram leaving by the link
        it came in on, from a sender on that link, earns a host redirect to our next hop
        (RFC 1812 5.2.7.2), with a back-off per sender."""
        src = unpack_fixed_header(skb.data)[8]
        cache = self.route_cache
        if not cache.sender_on_link(src, entry.dev):
            return  # fib_validate_source found the sender behind a gateway: it cannot use ours
        sysctl = self.sysctl
        if not sysctl["net.ipv4.conf.all.shared_media"] and not cache.on_link_together(
                entry.dev, src, entry.route.gateway or src):
            return
        if cache.redirect_allowed(src, now, number=sysctl["net.ipv4.route.redirect_number"],
                                  load=sysctl["net.ipv4.route.redirect_load"] / 1000.0,
                                  silence=sysctl["net.ipv4.route.redirect_silence"] / 1000.0):
            self.icmp_send(REDIRECT, REDIR_HOST, skb.data, now, gateway=entry.next_hop)

    # ----------------------------------------------------------------- output

    def output(self, dst: int, protocol: int, payload: "bytes | bytearray | memoryview", now: float, *,
               src: int | None = None, ttl: int | None = None, tos: int = 0, dont_fragment: bool = False,
               identification: int | None = None) -> None:
        """ip_queue_xmit for a locally generated datagram; raises OSError with the errno a socket sees.

        The transports' one way out. Every failure is counted before it is
        raised; a caller answering a received datagram catches it and drops.
        """
        stats = self.stats
        stats.OutRequests += 1
        if dst == 0:
            # ip_route_output_key_hash_rcu: 0.0.0.0 means this host, the source's address or 127.0.0.1.
            dst = src if src else LOOPBACK_ADDRESS
        if dst in self.blocked:
            stats.FilterDrops += 1
            raise OSError(errno.EPERM, "Operation not permitted")
        entry = self.route_cache.lookup(dst, now)  # route_output inline
        if entry is None and dst == LIMITED_BROADCAST:
            entry = self._broadcast_by_source(src, now)
        if entry is None:
            stats.OutNoRoutes += 1
            raise OSError(errno.ENETUNREACH, "Network is unreachable")
        route_type = entry.route.type
        if route_type not in DELIVERING_TYPES:
            failure = ROUTE_ERRORS[route_type]
            stats.OutDiscards += 1
            raise OSError(failure.errno, failure.message)  # fib_props[type].error, as Linux's sendmsg sees it
        if dst == LIMITED_BROADCAST:
            # __mkroute_output: whatever route matched (a default one, say), 255.255.255.255 leaves
            # by its device as a link-layer broadcast, never to its gateway.
            route_type = _BROADCAST
        if src is None:
            src = entry.src if entry.src is not None else (dst if route_type is _LOCAL else 0)
        if identification is None:
            identification = self._identification = (self._identification + 1) & 0xFFFF  # next_identification
        if ttl is None:
            ttl = self.sysctl["net.ipv4.ip_default_ttl"]
        device = self.loopback if route_type is _LOCAL else self.devices.get(entry.dev)
        if device is None or not (device.admin_up and device.carrier):
            stats.OutDiscards += 1
            raise OSError(errno.ENETUNREACH, "Network is unreachable")
        if src >> 24 == 127 and not device.loopback:
            stats.OutDiscards += 1  # __mkroute_output: a loopback source never leaves by a real device
            raise OSError(errno.EINVAL, "Invalid argument")
        mtu = device.mtu if route_type is _LOCAL else entry.pmtu
        length = 20 + len(payload)
        if length > mtu:
            if dont_fragment:
                stats.FragFails += 1
                raise FragmentationNeeded(mtu)
            header = IPv4Header(_int_new(IPv4Address, src), _int_new(IPv4Address, dst), protocol, ttl,
                                identification, dont_fragment=dont_fragment, tos=tos)
            self._fragment_and_send(header, memoryview(payload), device, entry.next_hop, mtu, now,
                                    broadcast=route_type is _BROADCAST)
            return
        skb = SkBuff.from_payload(payload, MAX_HEADER, dev=device.name, now=now)
        # The header written in place, no IPv4Header object: this is every datagram a node sends.
        build_header_into(skb.push(20), 0, length - 20, tos, identification, dont_fragment, ttl, protocol, src, dst)
        skb.network_header = skb.data_offset  # skb_reset_network_header
        stats.OutOctets += length
        if route_type is _UNICAST and not device.loopback:
            self._neigh_output(device, entry.next_hop, skb, now)  # the common case of _send
        else:
            self._send(skb, device, entry.next_hop, route_type, now)

    def _broadcast_by_source(self, src: int | None, now: float) -> DstEntry | None:
        """ip_route_output_key_hash_rcu's "special hack": with no route for 255.255.255.255, a source
        that is one of our addresses sends it out of that address's device (else ENETUNREACH)."""
        if not src:
            return None
        for device in self.devices.values():
            if device.loopback:
                continue
            for address in device.addresses:
                if address.address == src:
                    route = Route(IPv4Address(LIMITED_BROADCAST), 32, dev=device.name, src=address.address,
                                  protocol="kernel", type=_BROADCAST)
                    return DstEntry(route.network, route, route.network, device.name, address.address,
                                    device.mtu, None, now, route_mtu=device.mtu)
        return None

    def _send(self, skb: SkBuff, device: NetDevice, next_hop: int, route_type: RouteType, now: float) -> None:
        if route_type is _LOCAL or device.loopback:
            self._loopback_xmit(skb)
        elif route_type is _BROADCAST:
            self.stats.OutBcastPkts += 1
            # ip_mc_output: a broadcast route is RTCF_BROADCAST | RTCF_LOCAL, so a copy goes up to
            # our own listeners too (over lo, whose input keeps it as Linux's looped skb keeps its dst).
            self._loopback_xmit(skb.copy())
            self._broadcast_xmit(device, skb)
        else:
            self._neigh_output(device, next_hop, skb, now)

    def _fragment_and_send(self, header: IPv4Header, payload: memoryview, device: NetDevice, next_hop: int, mtu: int,
                           now: float, broadcast: bool = False) -> None:
        """ip_fragment: split to the egress MTU and send each piece (RFC 791 3.2)."""
        stats = self.stats
        try:
            pieces = fragment(header, payload, mtu)
        except (FragmentationNeeded, ValueError):
            stats.FragFails += 1
            return
        stats.FragOKs += 1
        stats.FragCreates += len(pieces)
        route_type = _BROADCAST if broadcast else _UNICAST
        for piece_header, piece in pieces:
            skb = SkBuff.alloc(len(piece), MAX_HEADER, dev=device.name, now=now)
            skb.put_data(piece)
            length = piece_header.header_length
            piece_header.build_into(skb.push(length), 0, len(piece))
            skb.reset_network_header()
            stats.OutOctets += length + len(piece)
            self._send(skb, device, next_hop, route_type, now)

    # ----------------------------------------------------------------- timers

    def next_timer(self) -> float | None:
        return self.reassembly.next_timer()

    def tick(self, now: float) -> None:
        """Expire reassembly queues: ICMP time exceeded (code 1) when fragment 0 had arrived (RFC 792)."""
        for expired in self.reassembly.tick(now):
            quoted = expired.quoted()  # ip_expire: the whole first fragment; icmp_send trims it to 576 bytes
            if quoted is not None:
                self.icmp_send(TIME_EXCEEDED, FRAG_REASSEMBLY_TIME_EXCEEDED, quoted, now)

    def counters(self) -> dict[str, int]:
        stats = self.stats.as_dict()
        stats.update(self.reassembly.counters)
        stats.update(self.options.counters)
        stats.update(self.input_filter.stats.as_dict())
        stats["Forwarding"] = 1 if self.forwarding else 2  # SNMP: 1 = forwarding, 2 = not
        stats["DefaultTTL"] = self.sysctl["net.ipv4.ip_default_ttl"]
        return stats
