"""A seeded, mutational frame fuzzer for a running emulation (issue 10), shared by the test and the bench.

`tests/scenarios/test_fuzz_frames.py` (a short run in `make test`) and
`bench/fuzz.py` (`python -m bench fuzz`, a long one) both use this module:

* `SegmentView.from_emulation(net, "west")` reads what a station on a segment
  could learn by listening: the MACs and addresses of the nodes on it, the
  routers' other addresses and the hosts beyond them.
* `FrameFuzzer(view, seed)` generates frames: per-protocol generators (ARP,
  IPv4 header fields, options, fragments, ICMP, UDP, TCP and other protocol
  numbers, VLAN tags, runts, oversize frames up to 64 KiB) built mostly
  well-formed, addressed to the nodes' real MACs so they pass the NIC filter
  and reach IP, then mutated (bit flips, boundary values, truncation,
  garbage) with one `random.Random(seed)`: the same seed gives the same frames.
* `Injector(net, "west")` attaches a foreign port ("fuzz:eth0") to the
  segment's switch as a NIC would (a DEALER that says hello), raises the
  segment's port MTUs so oversize frames reach the nodes, and sends frames in
  packed batches, paced by the nodes' own counters so their rx rings are not
  simply overflowed (a frame dropped at a full ring tests nothing).
* `health(net, baseline)` lists what is wrong after a run: crashes, restarted
  or replaced processes, `rx_exceptions`, tables past their limits, RSS growth.

Frames go out with the fuzzer's own source MACs (a small pool), never a node's:
poisoning the switch's forwarding table is a different experiment from
poisoning the nodes' ARP tables, which the ARP generator does on purpose.
"""
from __future__ import annotations

import random
import struct
import time
from dataclasses import dataclass, field
from typing import Any, Callable

import psutil
import zmq

from bus.transport import MAX_FRAME_LENGTH, ControlClient, ControlError, pack_frames
from nodes.wire.checksum import internet_checksum, pseudo_header_sum
from nodes.wire.icmp import ERROR_TYPES
from nodes.wire.ipv4 import IPOPT_LSRR, IPOPT_NOOP, IPOPT_RA, IPOPT_RR, IPOPT_SEC, IPOPT_SSRR, IPOPT_TS

BROADCAST = b"\xff" * 6
ETH_IP = b"\x08\x00"
ETH_ARP = b"\x08\x06"
IPPROTO_ICMP, IPPROTO_TCP, IPPROTO_UDP = 1, 6, 17
FUZZ_ATTACHMENT = "fuzz:eth0"
PING_IDENTIFIERS = (0x4E45, 0x4E46, 0x4E47)  # nodes/probes.py PingSession's first identifiers: live sessions
MAX_MTU = 65535  # bus/shaping.py MAX_MTU: a port that passes every frame the framing can carry

_IP_HEADER = struct.Struct("!BBHHHBBHII")
_UDP_HEADER = struct.Struct("!HHHH")
_TCP_HEADER = struct.Struct("!HHIIBBHHH")
_ICMP_HEADER = struct.Struct("!BBHI")

BOUNDARY_BYTES = (0x00, 0x01, 0x7F, 0x80, 0xFE, 0xFF)
BOUNDARY_WORDS = (0x0000, 0x0001, 0x0007, 0x0008, 0x0013, 0x0014, 0x003F, 0x0040, 0x05DC, 0x05DD,
                  0x7FFF, 0x8000, 0xFFFE, 0xFFFF)


def ip_int(text: str) -> int:
    a, b, c, d = (int(part) for part in text.split("."))
    return (a << 24) | (b << 16) | (c << 8) | d


def mac_bytes(text: str) -> bytes:
    return bytes.fromhex(text.replace(":", ""))


# ---------------------------------------------------------------- what the fuzzer knows


@dataclass
class SegmentView:
    """The segment as a station on it sees it: who is there, and which addresses exist beyond."""

    segment: str
    macs: dict[str, bytes]             # node on the segment -> its MAC there
    addresses: dict[str, int]          # node on the segment -> its address there
    network: int                       # the segment's subnet (first node's prefix)
    prefix_length: int
    gateway: str                       # the router on the segment (frames to it reach IP forwarding)
    router_addresses: list[int]        # every address of every router, anywhere
    remote_addresses: list[int]        # every host address not on the segment

    @classmethod
    def from_emulation(cls, net: Any, segment: str) -> "SegmentView":
        macs: dict[str, bytes] = {}
        addresses: dict[str, int] = {}
        network = prefix_length = 0
        gateway = ""
        routers: list[int] = []
        remote: list[int] = []
        for name, node in net.topology.nodes.items():
            on_segment = [i for i in node.interfaces.values() if i.device == segment]
            if node.kind == "router":
                routers += [ip_int(a) for a in net[name].addresses]
            if not on_segment:
                if node.kind == "host":
                    remote += [ip_int(a) for a in net[name].addresses]
                continue
            interface = on_segment[0]
            described = {i["name"]: i for i in net[name].interfaces()}[interface.name]
            macs[name] = mac_bytes(described["mac"])
            address = described["addresses"][0]
            addresses[name] = ip_int(address["address"])
            if not prefix_length:
                prefix_length = int(address["prefix_length"])
                network = addresses[name] & (~((1 << (32 - prefix_length)) - 1) & 0xFFFFFFFF)
            if node.kind == "router" and not gateway:
                gateway = name
        if not gateway:
            raise ValueError(f"no router on segment {segment!r}: nothing to fuzz past the first hop")
        return cls(segment, macs, addresses, network, prefix_length, gateway, routers, remote)

    @classmethod
    def from_topology(cls, topology: Any, segment: str) -> "SegmentView":
        """The same view from the topology model alone (MACs as the checks filled them in): for offline replay."""
        macs: dict[str, bytes] = {}
        addresses: dict[str, int] = {}
        network = prefix_length = 0
        gateway = ""
        routers: list[int] = []
        remote: list[int] = []
        for name, node in topology.nodes.items():
            interfaces = list(node.interfaces.values())
            on_segment = [i for i in interfaces if i.device == segment]
            if node.kind == "router":
                routers += [int(i.address) for i in interfaces]
            if not on_segment:
                if node.kind == "host":
                    remote += [int(i.address) for i in interfaces]
                continue
            interface = on_segment[0]
            macs[name] = mac_bytes(interface.mac)
            addresses[name] = int(interface.address)
            if not prefix_length:
                prefix_length = interface.prefix_length
                network = addresses[name] & (~((1 << (32 - prefix_length)) - 1) & 0xFFFFFFFF)
            if node.kind == "router" and not gateway:
                gateway = name
        if not gateway:
            raise ValueError(f"no router on segment {segment!r}: nothing to fuzz past the first hop")
        return cls(segment, macs, addresses, network, prefix_length, gateway, routers, remote)

    @property
    def broadcast_address(self) -> int:
        return self.network | ((1 << (32 - self.prefix_length)) - 1)


# ---------------------------------------------------------------- the generators


class FrameFuzzer:
    """Seeded per-protocol frame generators plus a byte-level mutation pass."""

    def __init__(self, view: SegmentView, seed: int = 0, mutation_rate: float = 0.3,
                 max_frame: int = MAX_FRAME_LENGTH) -> None:
        self.view = view
        self.rng = rng = random.Random(seed)
        self.mutation_rate = mutation_rate
        self.max_frame = max_frame
        node_macs = set(view.macs.values())
        self.source_macs = []
        while len(self.source_macs) < 8:
            mac = bytes([0x02, 0xF0, 0x22]) + rng.randbytes(3)
            if mac not in node_macs:
                self.source_macs.append(mac)
        self._node_macs = node_macs
        self._avoid_sources = node_macs
        self.gateway_mac = view.macs[view.gateway]
        self.host_macs = [mac for name, mac in view.macs.items() if name != view.gateway] or [self.gateway_mac]
        self.gateway_ip = view.addresses[view.gateway]
        self.segment_ips = list(view.addresses.values())
        self.ident_pool = [rng.getrandbits(16) for _ in range(4)]
        self.generated: dict[str, int] = {}
        # (weight, name, generator): a generator returns one frame or a list of frames
        table: list[tuple[int, str, Callable[[], Any]]] = [
            (10, "arp", self.arp),
            (16, "icmp", self.icmp_frame),
            (8, "icmp_error", self.icmp_error_frame),
            (10, "udp", self.udp_frame),
            (8, "tcp", self.tcp_frame),
            (6, "ip_other", self.other_protocol_frame),
            (10, "ip_header", self.ip_header_frame),
            (6, "ip_options", self.ip_options_frame),
            (3, "fragments", self.fragments),
            (4, "vlan", self.vlan_frame),
            (4, "raw", self.raw_frame),
            (1, "oversize", self.oversize_frame),
        ]
        self._names = [name for _, name, _ in table]
        self._generators = [gen for _, _, gen in table]
        self._cum_weights = []
        total = 0
        for weight, _, _ in table:
            total += weight
            self._cum_weights.append(total)

    # -- driving ---------------------------------------------------------------

    def frames(self, count: int) -> list[bytes]:
        """At least `count` frames (a fragment train is kept whole, so a few more may come)."""
        out: list[bytes] = []
        rng = self.rng
        choose = rng.choices
        generators, names, weights = self._generators, self._names, self._cum_weights
        generated = self.generated
        index_range = range(len(generators))
        while len(out) < count:
            index = choose(index_range, cum_weights=weights)[0]
            produced = generators[index]()
            if isinstance(produced, bytes):
                produced = [produced]
            name = names[index]
            generated[name] = generated.get(name, 0) + len(produced)
            for frame in produced:
                if rng.random() < self.mutation_rate:
                    frame = self.mutate(frame)
                out.append(frame[: self.max_frame])
        return out

    # -- addresses -------------------------------------------------------------

    def dst_mac(self) -> bytes:
        r = self.rng.random()
        if r < 0.62:
            return self.gateway_mac
        if r < 0.76:
            return BROADCAST
        if r < 0.88:
            return self.rng.choice(self.host_macs)
        if r < 0.93:
            return b"\x01\x00\x5e" + bytes([self.rng.getrandbits(7)]) + self.rng.randbytes(2)
        if r < 0.96:
            return b"\x33\x33" + self.rng.randbytes(4)
        mac = bytes([self.rng.getrandbits(8) & 0xFE]) + self.rng.randbytes(5)  # unknown unicast: flooded
        return mac if mac not in self._node_macs and mac not in self.source_macs else BROADCAST

    def src_mac(self) -> bytes:
        r = self.rng.random()
        if r < 0.9:
            return self.rng.choice(self.source_macs)
        if r < 0.97:
            return bytes([0x02, 0xF1]) + self.rng.randbytes(4)
        return self.rng.choice((b"\x00" * 6, BROADCAST, b"\x01\x00\x5e\x00\x00\x01"))

    def on_link_ip(self) -> int:
        host_bits = 32 - self.view.prefix_length
        return self.view.network | (self.rng.getrandbits(host_bits) if host_bits else 0)

    def special_ip(self) -> int:
        rng = self.rng
        return rng.choice((
            0, 0xFFFFFFFF, self.view.broadcast_address, self.view.network,
            ip_int("127.0.0.1"), (127 << 24) | rng.getrandbits(24),
            ip_int("224.0.0.1"), ip_int("224.0.0.251"), (rng.randint(224, 239) << 24) | rng.getrandbits(24),
            ip_int("240.0.0.1"), ip_int("169.254.1.1"), (rng.getrandbits(8) << 24) | 0xFFFFFF,
        ))

    def unknown_ip(self) -> int:
        rng = self.rng
        return rng.choice((
            ip_int("192.168.0.0") | rng.getrandbits(16), ip_int("172.16.0.0") | rng.getrandbits(20),
            ip_int("198.51.100.0") | rng.getrandbits(8), rng.getrandbits(32),
            ip_int("10.99.0.0") | rng.getrandbits(16),
        ))

    def dst_ip(self) -> int:
        r = self.rng.random()
        view = self.view
        if r < 0.25:
            return self.gateway_ip
        if r < 0.40 and view.remote_addresses:
            return self.rng.choice(view.remote_addresses)
        if r < 0.55 and view.router_addresses:
            return self.rng.choice(view.router_addresses)
        if r < 0.63:
            return self.rng.choice(self.segment_ips)
        if r < 0.71:
            return self.on_link_ip()
        if r < 0.83:
            return self.unknown_ip()
        return self.special_ip()

    def src_ip(self) -> int:
        r = self.rng.random()
        view = self.view
        if r < 0.22:
            return view.network | 200 if view.prefix_length <= 24 else self.on_link_ip()  # a plausible station
        if r < 0.32:
            return self.rng.choice(self.segment_ips)  # spoofing a node on the segment (or the router itself)
        if r < 0.45:
            return self.on_link_ip()
        if r < 0.67:
            return self.unknown_ip()  # no route back: the answer must be dropped, not crash
        if r < 0.77 and view.remote_addresses:
            return self.rng.choice(view.remote_addresses)
        if r < 0.85 and view.router_addresses:
            return self.rng.choice(view.router_addresses)
        return self.special_ip()

    def payload(self, limit: int = 1400) -> bytes:
        r = self.rng.random()
        if r < 0.6:
            length = self.rng.randint(0, 64)
        elif r < 0.9:
            length = self.rng.randint(0, 512)
        else:
            length = self.rng.randint(0, limit)
        return self.rng.randbytes(min(length, limit))

    # -- Ethernet --------------------------------------------------------------

    def ether(self, ethertype: bytes, body: bytes, dst: bytes | None = None) -> bytes:
        frame = (dst if dst is not None else self.dst_mac()) + self.src_mac() + ethertype + body
        if len(frame) < 60 and self.rng.random() < 0.8:
            frame += bytes(60 - len(frame))  # the sender pads, usually
        return frame

    # -- ARP -------------------------------------------------------------------

    def arp(self) -> bytes:
        rng = self.rng
        view = self.view
        odd = rng.random() < 0.25
        htype = 1 if not odd or rng.random() < 0.5 else rng.choice((0, 6, 0x0100, 0xFFFF, rng.getrandbits(16)))
        ptype = 0x0800 if not odd or rng.random() < 0.5 else rng.choice((0, 0x86DD, 0x0806, rng.getrandbits(16)))
        hlen = 6 if not odd or rng.random() < 0.5 else rng.choice((0, 1, 5, 7, 16, 255))
        plen = 4 if not odd or rng.random() < 0.5 else rng.choice((0, 1, 3, 5, 16, 255))
        r = rng.random()
        op = 1 if r < 0.45 else 2 if r < 0.9 else rng.choice((0, 3, 4, 8, 9, 10, 0x0100, 0xFFFF))
        r = rng.random()
        if r < 0.3:
            sender_ip = rng.choice(self.segment_ips)           # spoofing a real node: poisons neighbours
        elif r < 0.45:
            sender_ip = view.network | 200 if view.prefix_length <= 24 else self.on_link_ip()
        elif r < 0.6:
            sender_ip = self.on_link_ip()
        elif r < 0.7:
            sender_ip = 0                                     # an address probe (RFC 5227)
        elif r < 0.8 and view.router_addresses:
            sender_ip = rng.choice(view.router_addresses)
        else:
            sender_ip = rng.choice((self.special_ip(), self.unknown_ip()))
        r = rng.random()
        sender_mac = (rng.choice(self.source_macs) if r < 0.75 else
                      rng.choice((b"\x00" * 6, BROADCAST, b"\x01\x00\x5e\x00\x00\x01", rng.randbytes(6),
                                  rng.choice(list(view.macs.values())))))
        target_ip = rng.choice((self.gateway_ip, rng.choice(self.segment_ips), self.on_link_ip(), sender_ip,
                                self.special_ip(), self.unknown_ip()))
        target_mac = rng.choice((b"\x00" * 6, BROADCAST, self.gateway_mac, rng.randbytes(6)))

        def sized(value: bytes, length: int) -> bytes:
            return (value + bytes(max(0, length - len(value))))[:length] if length <= 6 or rng.random() < 0.5 \
                else rng.randbytes(length)

        body = (struct.pack("!HHBBH", htype, ptype, hlen, plen, op) + sized(sender_mac, hlen)
                + sized(sender_ip.to_bytes(4, "big"), plen) + sized(target_mac, hlen)
                + sized(target_ip.to_bytes(4, "big"), plen))
        r = rng.random()
        if r < 0.1:
            body = body[: rng.randint(0, len(body))]
        elif r < 0.2:
            body += rng.randbytes(rng.randint(1, 64))
        dst = BROADCAST if op == 1 and rng.random() < 0.6 else None
        return self.ether(ETH_ARP, body, dst)

    # -- IPv4 ------------------------------------------------------------------

    def options(self) -> bytes:
        rng = self.rng
        addresses = [self.gateway_ip, self.on_link_ip(), self.unknown_ip()] + self.view.router_addresses
        kind = rng.randrange(12)
        if kind == 0:
            raw = rng.randbytes(rng.randint(1, 40))                       # garbage
        elif kind == 1:
            raw = bytes([rng.choice((IPOPT_RR, IPOPT_TS, IPOPT_LSRR, IPOPT_SEC, 0x99)), 0])  # zero-length
        elif kind == 2:
            raw = bytes([rng.choice((IPOPT_RR, IPOPT_LSRR, 0x44, 0x88)), 1])                # length 1
        elif kind == 3:
            raw = bytes([rng.choice((IPOPT_RR, IPOPT_TS, IPOPT_SSRR, 0x9F)), rng.randint(41, 255)]) + rng.randbytes(6)  # overlong
        elif kind == 4:  # record route, any pointer
            slots = rng.randint(0, 9)
            raw = bytes([IPOPT_RR, 3 + 4 * slots, rng.choice((0, 1, 3, 4, 5, 8, 40, 255))]) + bytes(4 * slots)
        elif kind == 5:  # timestamp with odd pointers, flags and overflow
            slots = rng.randint(0, 9)
            raw = bytes([IPOPT_TS, 4 + 4 * slots, rng.choice((1, 4, 5, 9, 13, 40, 255)),
                         rng.getrandbits(8)]) + rng.randbytes(4 * slots)
        elif kind in (6, 7):  # source routes through real routers, unknown places and ourselves
            route = [rng.choice(addresses) for _ in range(rng.randint(0, 9))]
            raw = bytes([rng.choice((IPOPT_LSRR, IPOPT_SSRR)), 3 + 4 * len(route),
                         rng.choice((4, 4, 4, 5, 8, 3 + 4 * len(route) + 1, 0))]) + b"".join(a.to_bytes(4, "big") for a in route)
        elif kind == 8:
            raw = bytes([IPOPT_RA, 4, 0, 0]) if rng.random() < 0.7 else bytes([IPOPT_RA, rng.randint(0, 8)])
        elif kind == 9:
            raw = bytes([IPOPT_SEC, 11]) + rng.randbytes(9)
        elif kind == 10:
            raw = bytes([IPOPT_NOOP]) * rng.randint(1, 40)
        else:  # End of list, then garbage behind it
            raw = b"\x00" + rng.randbytes(rng.randint(0, 30))
        raw = raw[:40]
        if len(raw) % 4:
            pad = 4 - len(raw) % 4
            raw += bytes(pad) if rng.random() < 0.7 else rng.randbytes(pad)
        return raw

    def ipv4(self, protocol: int, body: bytes, *, src: int | None = None, dst: int | None = None,
             options: bytes = b"", ttl: int | None = None, flags_fragment: int | None = None,
             ident: int | None = None, total_length: int | None = None, tos: int | None = None) -> bytes:
        """An IPv4 header with a correct checksum over whatever fields it is given (wrong ones included)."""
        rng = self.rng
        if ttl is None:
            ttl = 64 if rng.random() < 0.85 else rng.choice((0, 1, 2, 255))
        if flags_fragment is None:
            flags_fragment = 0x4000 if rng.random() < 0.4 else 0
        header_length = 20 + len(options)
        if total_length is None:
            total_length = min(0xFFFF, header_length + len(body))
        header = _IP_HEADER.pack(0x40 | (header_length // 4), rng.getrandbits(8) if tos is None else tos,
                                 total_length & 0xFFFF, rng.getrandbits(16) if ident is None else ident,
                                 flags_fragment, ttl, protocol & 0xFF, 0,
                                 self.src_ip() if src is None else src, self.dst_ip() if dst is None else dst) + options
        checksum = internet_checksum(header)
        return header[:10] + checksum.to_bytes(2, "big") + header[12:] + body

    def ip_frame(self, protocol: int, body: bytes, **fields: Any) -> bytes:
        return self.ether(ETH_IP, self.ipv4(protocol, body, **fields))

    @staticmethod
    def transport_checksum(src: int, dst: int, protocol: int, segment: bytes) -> int:
        return internet_checksum(segment, pseudo_header_sum(src, dst, protocol, len(segment)))

    # -- ICMP ------------------------------------------------------------------

    def icmp(self, icmp_type: int, code: int, rest: int, data: bytes, good_checksum: bool = True) -> bytes:
        message = _ICMP_HEADER.pack(icmp_type & 0xFF, code & 0xFF, 0, rest & 0xFFFFFFFF) + data
        checksum = internet_checksum(message)
        if not good_checksum:
            checksum ^= 1 << self.rng.randrange(16) or 1
        return message[:2] + checksum.to_bytes(2, "big") + message[4:]

    def icmp_frame(self) -> bytes:
        rng = self.rng
        r = rng.random()
        if r < 0.55:
            icmp_type, code = 8, (0 if rng.random() < 0.9 else rng.getrandbits(8))       # echo request
        elif r < 0.65:                                                                  # echo reply, maybe to a live ping
            icmp_type, code = 0, 0
            if rng.random() < 0.5:
                identifier = rng.choice(PING_IDENTIFIERS)
                data = self.payload(200)
                message = self.icmp(0, 0, (identifier << 16) | rng.randint(0, 64), data,
                                    good_checksum=rng.random() < 0.9)
                return self.ip_frame(IPPROTO_ICMP, message, src=rng.choice((self.src_ip(), *self.view.remote_addresses)),
                                     dst=rng.choice(self.segment_ips))
        elif r < 0.8:
            icmp_type, code = rng.choice((13, 14, 15, 16, 17, 18, 9, 10, 30, 37, 40, 42)), rng.getrandbits(3)
        else:
            icmp_type, code = rng.getrandbits(8), rng.getrandbits(8)
        data = self.payload(1400)
        message = self.icmp(icmp_type, code, rng.getrandbits(32), data, good_checksum=rng.random() < 0.85)
        if rng.random() < 0.05:
            message = message[: rng.randint(0, 7)]  # shorter than an ICMP header
        return self.ip_frame(IPPROTO_ICMP, message)

    def quoted_datagram(self) -> bytes:
        """What an ICMP error quotes: junk, a plausible header and 8 bytes, or pieces of one."""
        rng = self.rng
        kind = rng.randrange(6)
        if kind == 0:
            return rng.randbytes(rng.randint(0, 80))
        protocol = rng.choice((IPPROTO_UDP, IPPROTO_ICMP, IPPROTO_TCP, rng.getrandbits(8)))
        src = rng.choice((rng.choice(self.segment_ips), self.src_ip(), self.dst_ip()))
        dst = rng.choice((self.dst_ip(), self.unknown_ip(), rng.choice(self.segment_ips)))
        if protocol == IPPROTO_UDP:
            transport = _UDP_HEADER.pack(rng.choice((33434, 33435, 53, rng.getrandbits(16))),
                                         rng.choice((33434 + rng.randint(0, 90), 7, 53, rng.getrandbits(16))),
                                         rng.choice((8, 36, 0, 7, 0xFFFF)), rng.getrandbits(16))
        elif protocol == IPPROTO_ICMP:
            rest = ((rng.choice(PING_IDENTIFIERS) << 16) | rng.randint(0, 64)) if rng.random() < 0.5 \
                else rng.getrandbits(32)
            transport = _ICMP_HEADER.pack(rng.choice((8, 8, 0, 3, 11, rng.getrandbits(8))), 0, rng.getrandbits(16),
                                          rest)
        else:
            transport = rng.randbytes(8)
        options = self.options() if rng.random() < 0.1 else b""
        inner = self.ipv4(protocol, transport + rng.randbytes(rng.choice((0, 0, 20, 100))), src=src, dst=dst,
                          options=options, ttl=rng.choice((0, 1, 64)),
                          flags_fragment=rng.choice((0, 0x4000, 0x2000, 0x2000 | rng.getrandbits(13))))
        if kind == 2:
            inner = inner[: rng.randint(0, len(inner))]                          # truncated quote
        elif kind == 3:
            inner = bytes([rng.choice((0x45, 0x4F, 0x40, 0x41, 0x65, 0x00))]) + inner[1:]  # bad version/IHL
        elif kind == 4:
            inner = inner[:2] + rng.choice((0, 1, 19, 20, 0xFFFF)).to_bytes(2, "big") + inner[4:]  # total length
        return inner

    def icmp_error_frame(self) -> bytes:
        rng = self.rng
        icmp_type = rng.choice(sorted(ERROR_TYPES) + [3, 3, 11])
        code = rng.choice((0, 1, 2, 3, 4, 4, 5, 13, rng.getrandbits(8)))
        if icmp_type == 3 and code == 4:   # fragmentation needed, with odd next-hop MTUs
            rest = rng.choice((0, 1, 8, 67, 68, 69, 296, 575, 576, 1000, 1499, 1500, 1501, 9000, 0xFFFF))
        elif icmp_type == 12:
            rest = rng.getrandbits(8) << 24    # parameter problem pointer
        elif icmp_type == 5:
            rest = rng.choice((self.gateway_ip, rng.choice(self.segment_ips), self.on_link_ip(), self.unknown_ip(),
                               self.special_ip()))
        else:
            rest = rng.choice((0, rng.getrandbits(32)))
        message = self.icmp(icmp_type, code, rest, self.quoted_datagram(), good_checksum=rng.random() < 0.85)
        return self.ip_frame(IPPROTO_ICMP, message)

    # -- UDP / TCP / others ----------------------------------------------------

    def udp_frame(self) -> bytes:
        rng = self.rng
        src, dst = self.src_ip(), self.dst_ip()
        data = self.payload(1400)
        length = 8 + len(data)
        r = rng.random()
        if r > 0.75:
            length = rng.choice((0, 1, 7, 8, length - 1, length + 1, length + 100, 0xFFFF)) & 0xFFFF
        ports = (0, 7, 9, 53, 67, 68, 123, 137, 520, 33434, 33435 + rng.randint(0, 90), 65535)
        sport = rng.choice(ports) if rng.random() < 0.5 else rng.getrandbits(16)
        dport = rng.choice(ports) if rng.random() < 0.7 else rng.getrandbits(16)
        segment = _UDP_HEADER.pack(sport, dport, length, 0) + data
        r = rng.random()
        checksum = 0 if r < 0.2 else self.transport_checksum(src, dst, IPPROTO_UDP, segment) if r < 0.85 \
            else rng.getrandbits(16)
        segment = segment[:6] + checksum.to_bytes(2, "big") + segment[8:]
        if rng.random() < 0.05:
            segment = segment[: rng.randint(0, 7)]
        return self.ip_frame(IPPROTO_UDP, segment, src=src, dst=dst)

    def tcp_frame(self) -> bytes:
        """No TCP in the stack yet: every one of these must be dropped (protocol unreachable), never crash."""
        rng = self.rng
        src, dst = self.src_ip(), self.dst_ip()
        offset = 5 if rng.random() < 0.7 else rng.randint(0, 15)
        options = rng.randbytes(max(0, offset - 5) * 4) if rng.random() < 0.5 else b""
        flags = rng.choice((0x002, 0x010, 0x012, 0x011, 0x004, 0x018, 0x029, 0x000, 0xFFF)) \
            if rng.random() < 0.7 else rng.getrandbits(12)
        header = _TCP_HEADER.pack(rng.getrandbits(16), rng.choice((22, 80, 443, 0, rng.getrandbits(16))),
                                  rng.getrandbits(32), rng.getrandbits(32), ((offset & 0xF) << 4) | (flags >> 8),
                                  flags & 0xFF, rng.getrandbits(16), 0, rng.getrandbits(16)) + options
        segment = header + self.payload(1400)
        checksum = self.transport_checksum(src, dst, IPPROTO_TCP, segment) if rng.random() < 0.7 else rng.getrandbits(16)
        segment = segment[:16] + checksum.to_bytes(2, "big") + segment[18:]
        if rng.random() < 0.1:
            segment = segment[: rng.randint(0, 20)]
        return self.ip_frame(IPPROTO_TCP, segment, src=src, dst=dst)

    def other_protocol_frame(self) -> bytes:
        rng = self.rng
        protocol = rng.choice((0, 2, 3, 4, 8, 41, 47, 50, 51, 89, 103, 112, 132, 136, 253, 254, 255, rng.getrandbits(8)))
        if protocol == 4 and rng.random() < 0.7:   # IP in IP: a whole datagram inside, maybe to us
            body = self.ipv4(rng.choice((IPPROTO_ICMP, IPPROTO_UDP)), self.icmp(8, 0, rng.getrandbits(32), b"x" * 8))
        else:
            body = self.payload(1000)
        return self.ip_frame(protocol, body)

    def ip_header_frame(self) -> bytes:
        """A plausible datagram with one or two header fields at odd or boundary values, checksum still right."""
        rng = self.rng
        protocol = rng.choice((IPPROTO_ICMP, IPPROTO_UDP, IPPROTO_TCP))
        if protocol == IPPROTO_ICMP:
            body = self.icmp(8, 0, rng.getrandbits(32), self.payload(600))
        elif protocol == IPPROTO_UDP:
            data = self.payload(600)
            body = _UDP_HEADER.pack(rng.getrandbits(16), rng.choice((33434, 53, 7)), 8 + len(data), 0) + data
        else:
            body = _TCP_HEADER.pack(1, 2, 3, 4, 0x50, 0x02, 1024, 0, 0)
        datagram = bytearray(self.ipv4(protocol, body))
        for _ in range(rng.choice((1, 1, 2))):
            field_name = rng.randrange(8)
            if field_name == 0:      # version
                datagram[0] = (rng.choice((0, 1, 5, 6, 15, rng.getrandbits(4))) << 4) | (datagram[0] & 0xF)
            elif field_name == 1:    # IHL, with or without room behind it
                datagram[0] = (datagram[0] & 0xF0) | rng.choice((0, 1, 4, 6, 7, 15, rng.getrandbits(4)))
            elif field_name == 2:    # total length
                real = len(datagram)
                value = rng.choice((0, 1, 19, 20, 21, real - 1, real + 1, real + 8, 576, 1500, 0xFFFF,
                                    rng.getrandbits(16)))
                datagram[2:4] = (value & 0xFFFF).to_bytes(2, "big")
            elif field_name == 3:    # flags and fragment offset
                value = rng.choice((0x8000, 0x2000, 0x6000, 0x2000 | rng.getrandbits(13), rng.getrandbits(13),
                                    0x1FFF, 0x3FFF, 0xFFFF))
                datagram[6:8] = value.to_bytes(2, "big")
            elif field_name == 4:    # TTL
                datagram[8] = rng.choice((0, 1, 2))
            elif field_name == 5:    # protocol
                datagram[9] = rng.getrandbits(8)
            elif field_name == 6:    # source
                datagram[12:16] = rng.choice((self.special_ip(), self.gateway_ip, self.unknown_ip())).to_bytes(4, "big")
            else:                    # destination
                datagram[16:20] = rng.choice((self.special_ip(), self.unknown_ip(), self.on_link_ip())).to_bytes(4, "big")
        ihl = datagram[0] & 0xF
        if rng.random() < 0.9 and 5 <= ihl and ihl * 4 <= len(datagram):
            datagram[10:12] = b"\x00\x00"
            datagram[10:12] = internet_checksum(bytes(datagram[: ihl * 4])).to_bytes(2, "big")
        elif rng.random() < 0.5:
            datagram[10:12] = rng.randbytes(2)
        return self.ether(ETH_IP, bytes(datagram))

    def ip_options_frame(self) -> bytes:
        rng = self.rng
        options = self.options()
        if rng.random() < 0.3:
            data = self.payload(200)
            body = _UDP_HEADER.pack(rng.getrandbits(16), 33434 + rng.randint(0, 30), 8 + len(data), 0) + data
            return self.ip_frame(IPPROTO_UDP, body, options=options)
        return self.ip_frame(IPPROTO_ICMP, self.icmp(8, 0, rng.getrandbits(32), self.payload(300)), options=options)

    # -- fragments -------------------------------------------------------------

    def fragments(self) -> list[bytes]:
        """One datagram cut at random 8-byte boundaries, then reordered, duplicated, overlapped, lost, overrun."""
        rng = self.rng
        protocol = rng.choice((IPPROTO_ICMP, IPPROTO_UDP, IPPROTO_UDP, rng.getrandbits(8)))
        src, dst = self.src_ip(), self.dst_ip()
        size = rng.choice((rng.randint(8, 600), rng.randint(8, 1400), rng.randint(600, 3000), rng.randint(3000, 9000)))
        if protocol == IPPROTO_ICMP:
            payload = self.icmp(8, 0, rng.getrandbits(32), rng.randbytes(max(0, size - 8)))
        elif protocol == IPPROTO_UDP:
            data = rng.randbytes(max(0, size - 8))
            segment = _UDP_HEADER.pack(rng.getrandbits(16), rng.choice((7, 53, 33434)), 8 + len(data), 0) + data
            payload = segment[:6] + self.transport_checksum(src, dst, IPPROTO_UDP, segment).to_bytes(2, "big") + segment[8:]
        else:
            payload = rng.randbytes(size)
        ident = rng.choice(self.ident_pool) if rng.random() < 0.3 else rng.getrandbits(16)
        pieces: list[tuple[int, bytes, bool]] = []
        offset = 0
        while offset < len(payload):
            chunk = rng.choice((8, 16, 64, 256, 512, 1024, 1472 // 8 * 8))
            piece = payload[offset: offset + chunk]
            offset += len(piece)
            pieces.append((offset - len(piece), piece, offset < len(payload)))
        games = rng.randrange(10)
        if games == 0 and len(pieces) > 1:
            rng.shuffle(pieces)
        elif games == 1:
            pieces += [rng.choice(pieces) for _ in range(rng.randint(1, 3))]           # duplicates
        elif games == 2 and len(pieces) > 1:                                            # overlap, new bytes
            start, piece, more = rng.choice(pieces)
            pieces.append((max(0, start - 8 * rng.randint(1, 8)), rng.randbytes(len(piece) + 16), more))
        elif games == 3 and len(pieces) > 1:
            del pieces[rng.randrange(len(pieces))]                                      # one lost: never completes
        elif games == 4:
            start, piece, _ = pieces[-1]
            pieces[-1] = (start, piece, True)                                           # MF on the last one
        elif games == 5:  # near or past 64 KiB; the larger ones must be re-fragmented on the way (MTU, PMTU)
            pieces.append((rng.choice((0xFFF8, 0xFFF0, 8 * 8190, 65528, 65536 - 1504, 64000)),
                           rng.randbytes(rng.choice((8, 16, 100, 600, 1480, 3000))), rng.random() < 0.5))
        elif games == 6:
            pieces.append((rng.randrange(0, 0x2000) * 8, rng.randbytes(rng.choice((0, 1, 7, 8, 9))),
                           rng.random() < 0.5))                                         # tiny, odd length
        elif games == 7 and len(pieces) > 1:
            start, piece, _ = pieces[-1]
            pieces.append((start, piece, False))
            pieces.append((start + 64, rng.randbytes(64), False))                       # two different ends
        frames = []
        ttl = 64 if rng.random() < 0.9 else rng.choice((0, 1))
        df = 0x4000 if rng.random() < 0.05 else 0
        for start, piece, more in pieces[:48]:
            field_value = df | (0x2000 if more else 0) | ((start // 8) & 0x1FFF)
            frames.append(self.ip_frame(protocol, piece, src=src, dst=dst, ident=ident, ttl=ttl,
                                        flags_fragment=field_value, tos=0))
        return frames

    # -- link layer oddities ---------------------------------------------------

    def vlan_frame(self) -> bytes:
        rng = self.rng
        inner = rng.choice((self.icmp_frame, self.arp, self.udp_frame))()
        tags = b""
        for _ in range(rng.choice((1, 1, 1, 2))):
            tpid = rng.choice((b"\x81\x00", b"\x81\x00", b"\x88\xa8", b"\x91\x00"))
            tags += tpid + rng.choice((0, 1, 4095, rng.getrandbits(16))).to_bytes(2, "big")
        return inner[:12] + tags + inner[12:]

    def raw_frame(self) -> bytes:
        rng = self.rng
        kind = rng.randrange(5)
        if kind == 0:
            return rng.randbytes(rng.randint(0, 13))                                   # runt: no full header
        if kind == 1:
            return self.dst_mac() + self.src_mac() + rng.choice((ETH_IP, ETH_ARP)) + rng.randbytes(rng.randint(0, 40))
        if kind == 2:                                                                   # IEEE 802.3 length field, LLC
            body = rng.randbytes(rng.randint(0, 100))
            return self.dst_mac() + self.src_mac() + min(len(body), 1500).to_bytes(2, "big") + body
        if kind == 3:
            return self.dst_mac() + self.src_mac() + rng.randbytes(2) + rng.randbytes(rng.randint(0, 200))
        return self.dst_mac() + self.src_mac() + rng.choice((b"\x86\xdd", b"\x88\x47", b"\x88\xcc", b"\x00\x00")) \
            + rng.randbytes(rng.randint(0, 100))

    def oversize_frame(self) -> bytes:
        """Longer than the link MTU, up to what the framing carries (64 KiB)."""
        rng = self.rng
        size = rng.choice((1501, 1518, 1600, 4000, 9000, rng.randint(1500, 20000), MAX_FRAME_LENGTH - 14))
        kind = rng.randrange(3)
        if kind == 0:   # an honest jumbo ICMP echo, total length right
            body = self.icmp(8, 0, rng.getrandbits(32), rng.randbytes(max(0, size - 28)))
            return self.ether(ETH_IP, self.ipv4(IPPROTO_ICMP, body, flags_fragment=rng.choice((0, 0x4000)))
                              [: MAX_FRAME_LENGTH - 14])
        if kind == 1:   # a datagram whose header claims less than the frame holds
            datagram = self.ipv4(IPPROTO_UDP, _UDP_HEADER.pack(1, 33434, 16, 0) + bytes(8))
            return self.ether(ETH_IP, datagram + rng.randbytes(max(0, size - len(datagram))))
        return self.dst_mac() + self.src_mac() + rng.choice((ETH_IP, ETH_ARP)) + rng.randbytes(size)

    # -- mutation --------------------------------------------------------------

    def mutate(self, frame: bytes) -> bytes:
        rng = self.rng
        data = bytearray(frame)
        for _ in range(rng.choice((1, 1, 2, 3))):
            if not data:
                break
            # Mostly past the Ethernet header, so the frame still reaches a node.
            low = 14 if len(data) > 14 and rng.random() < 0.9 else 0
            position = rng.randrange(low, len(data))
            op = rng.randrange(7)
            if op == 0:
                data[position] ^= 1 << rng.randrange(8)
            elif op == 1:
                data[position] = rng.choice(BOUNDARY_BYTES)
            elif op == 2 and position + 2 <= len(data):
                data[position:position + 2] = rng.choice(BOUNDARY_WORDS).to_bytes(2, "big")
            elif op == 3:
                del data[rng.randrange(low, len(data) + 1):]                            # truncation
            elif op == 4:
                data += rng.randbytes(rng.randint(1, 64))                               # trailing garbage
            elif op == 5:
                data[position:position] = rng.randbytes(rng.randint(1, 8))              # insertion
            else:
                del data[position: position + rng.randint(1, 8)]                        # deletion
        if len(data) >= 12 and bytes(data[6:12]) in self._avoid_sources:
            data[6:12] = self.source_macs[0]
        # Half the time, make the (mutated) IP header's checksum right again, so the
        # mutation reaches the code behind the checksum check.
        if (len(data) >= 34 and data[12:14] == ETH_IP and rng.random() < 0.5):
            ihl = data[14] & 0xF
            if ihl >= 5 and 14 + ihl * 4 <= len(data):
                data[24:26] = b"\x00\x00"
                data[24:26] = internet_checksum(bytes(data[14:14 + ihl * 4])).to_bytes(2, "big")
        return bytes(data)


# ---------------------------------------------------------------- injection


@dataclass
class InjectionStats:
    frames: int = 0                  # frames handed to the switch
    messages: int = 0
    bytes: int = 0
    received: int = 0                # frames the segment sent back to the foreign port (ARP, ICMP errors...)
    stalls: int = 0                  # pacing gave up waiting on a node that did not consume what we counted
    elapsed: float = 0.0
    per_node: dict[str, int] = field(default_factory=dict)  # frames addressed to each node (MAC filter passes)


class Injector:
    """A foreign NIC on a segment's switch that sends fuzz frames in packed batches, paced by the nodes.

    Pacing: every `sync_every` frames it reads the counters of the nodes on the
    segment and waits while more than `window` frames addressed to one of them
    are not yet processed (softnet `processed` + ring drops). A node that stops
    making progress for `stall_timeout` is not waited for any longer (its
    count is resynchronised): the fuzzer's arithmetic of who receives what is
    an estimate, and the check for a dead node is `health`, not the pacing.
    """

    def __init__(self, net: Any, segment: str, attachment: str = FUZZ_ATTACHMENT, *, batch: int = 64,
                 window: int = 512, sync_every: int = 256, stall_timeout: float = 0.25,
                 jumbo: bool = True) -> None:
        self.net = net
        self.segment = segment
        self.attachment = attachment
        self.batch = batch
        self.window = window
        self.sync_every = sync_every
        self.stall_timeout = stall_timeout
        self.view = SegmentView.from_emulation(net, segment)
        self.stats = InjectionStats(per_node={name: 0 for name in self.view.macs})
        self._node_macs = {mac: name for name, mac in self.view.macs.items()}
        self._names = list(self.view.macs)
        self.context = zmq.Context()
        endpoint = net.plan[segment].config["data"]
        self.socket = self.context.socket(zmq.DEALER)
        self.socket.setsockopt(zmq.ROUTING_ID, attachment.encode())
        self.socket.setsockopt(zmq.LINGER, 0)
        self.socket.setsockopt(zmq.SNDTIMEO, 5000)   # blocking sends: the switch's queue paces us (HWM 64)
        self.socket.connect(endpoint)
        self.socket.send(b"")                         # hello: the switch makes us a port
        self._controls = {name: ControlClient(net.supervisor[name].control, 2.0) for name in self._names}
        self.silent: set[str] = set()  # nodes that stopped answering: not paced on any more
        self._consumed_base = dict.fromkeys(self._names, 0)
        self._restore_mtu: dict[str, int] = {}
        net.wait_for(lambda: any(p["name"] == attachment and p.get("attached")
                                 for p in net.supervisor.call(segment, "ports")), timeout=5.0)
        if jumbo:
            self._open_jumbo()
        self._resync()

    # -- setup -----------------------------------------------------------------

    def _open_jumbo(self) -> None:
        """Every port of the segment passes 64 KiB frames (nodes keep their own MTU)."""
        for port in self.net.supervisor.call(self.segment, "ports"):
            self._restore_mtu[port["name"]] = (port.get("params") or {}).get("mtu", port.get("mtu", 1500))
            self.net.supervisor.call(self.segment, "set_port", port=port["name"], mtu=MAX_MTU)

    def close(self) -> None:
        for port, mtu in self._restore_mtu.items():
            try:
                self.net.supervisor.call(self.segment, "set_port", port=port, mtu=mtu)
            except ControlError:
                pass
        for control in self._controls.values():
            control.close()
        self.socket.close(linger=0)
        self.context.term()

    def __enter__(self) -> "Injector":
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # -- pacing ----------------------------------------------------------------

    def _consumed(self, name: str) -> int | None:
        """Frames `name` took off its rings (processed or dropped at a full ring); None if it does not answer."""
        if name in self.silent:
            return None
        try:
            counters = self._controls[name].request("counters", {})
        except ControlError:
            # Dead or frozen: stop pacing on it (`health` reports it, with its crash log).
            self.silent.add(name)
            return None
        devices = counters.get("devices", {})
        return counters["softnet"]["processed"] + sum(d.get("rx_missed_errors", 0) for d in devices.values())

    def _resync(self) -> None:
        for name in self._names:
            consumed = self._consumed(name)
            if consumed is not None:
                self._consumed_base[name] = consumed - self.stats.per_node[name]

    def _wait_for_nodes(self, window: int) -> None:
        for name in self._names:
            target = self.stats.per_node[name] - window
            last = None
            deadline = time.monotonic() + self.stall_timeout
            while True:
                consumed = self._consumed(name)
                if consumed is None:
                    break
                done = consumed - self._consumed_base[name]
                if done >= target:
                    break
                if done != last:
                    last = done
                    deadline = time.monotonic() + self.stall_timeout
                elif time.monotonic() > deadline:
                    self.stats.stalls += 1
                    self._consumed_base[name] += done - self.stats.per_node[name]  # stop owing these frames
                    break
                self.drain()
                time.sleep(0.001)

    def drain(self) -> None:
        """Read (and forget) what the segment sends us: ARP requests and ICMP errors for spoofed stations."""
        recv = self.socket.recv
        while True:
            try:
                message = recv(zmq.NOBLOCK)
            except zmq.Again:
                return
            self.stats.received += 1 if message else 0

    # -- sending ---------------------------------------------------------------

    def _account(self, frames: list[bytes]) -> None:
        per_node = self.stats.per_node
        node_macs = self._node_macs
        names = self._names
        for frame in frames:
            if len(frame) < 14:
                continue
            dst = frame[:6]
            owner = node_macs.get(dst)
            if owner is not None:
                per_node[owner] += 1
            else:  # group address or unknown unicast: flooded to every node
                for name in names:
                    per_node[name] += 1

    def send(self, frames: list[bytes]) -> None:
        """Send `frames` in packed messages of `batch`, syncing with the nodes every `sync_every` frames."""
        start = time.perf_counter()
        stats = self.stats
        since_sync = 0
        for offset in range(0, len(frames), self.batch):
            chunk = frames[offset: offset + self.batch]
            message = pack_frames(chunk)
            try:
                self.socket.send(message)
            except zmq.Again:
                raise RuntimeError(f"switch {self.segment} took no frames for 5 s (dead or frozen?)") from None
            stats.messages += 1
            stats.frames += len(chunk)
            stats.bytes += len(message) - 2 * len(chunk)
            self._account(chunk)
            self.drain()
            since_sync += len(chunk)
            if since_sync >= self.sync_every:
                since_sync = 0
                self._wait_for_nodes(self.window)
        stats.elapsed += time.perf_counter() - start

    def settle(self, timeout: float = 5.0) -> None:
        """Wait until the nodes processed what they were sent (or stopped making progress)."""
        deadline = time.monotonic() + timeout
        saved = self.stall_timeout
        self.stall_timeout = min(saved * 4, max(0.0, deadline - time.monotonic()))
        try:
            self._wait_for_nodes(0)
        finally:
            self.stall_timeout = saved
        self.drain()


# ---------------------------------------------------------------- live sessions


class BackgroundProbes:
    """Pings and traceroutes running between two nodes while the fuzz goes on (threads, control requests).

    They give the fuzzed echo replies and ICMP errors live sessions to match
    (ping identifiers, traceroute ports). Their results are not judged: frames
    are lost under a flood; `errors` collects requests that failed outright.
    """

    def __init__(self, net: Any, src: str, dst: str) -> None:
        import threading

        self.net, self.src, self.dst = net, src, dst
        self.stop_event = threading.Event()
        self.rounds = 0
        self.errors: list[str] = []
        self.threads = [threading.Thread(target=self._loop, args=(kind,), daemon=True) for kind in ("ping", "trace")]

    def _loop(self, kind: str) -> None:
        node = self.net[self.src]
        while not self.stop_event.is_set():
            try:
                if kind == "ping":
                    node.ping(self.dst, count=10, interval=0.02, timeout=0.3)
                else:
                    node.traceroute(self.dst, max_hops=5, probes=1, wait=0.2)
                self.rounds += 1
            except ControlError as exc:
                self.errors.append(f"{kind} {self.src} -> {self.dst}: {exc}")
                return

    def __enter__(self) -> "BackgroundProbes":
        for thread in self.threads:
            thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop_event.set()
        for thread in self.threads:
            thread.join(15)


# ---------------------------------------------------------------- health


@dataclass
class Baseline:
    pids: dict[str, int]
    rss: dict[str, int]


def emulation_processes(net: Any) -> dict[str, int]:
    return {name: handle.pid for name, handle in net.supervisor.processes.items() if handle.pid}


def snapshot(net: Any) -> Baseline:
    pids = emulation_processes(net)
    rss = {}
    for name, pid in pids.items():
        try:
            rss[name] = psutil.Process(pid).memory_info().rss
        except psutil.NoSuchProcess:
            rss[name] = 0
    return Baseline(pids, rss)


def rx_exceptions(net: Any) -> dict[str, int | None]:
    """Each node's softnet rx_exceptions (None: the counter does not exist, or the node does not answer)."""
    found: dict[str, int | None] = {}
    for name in net.topology.nodes:
        try:
            found[name] = net[name].counters()["softnet"].get("rx_exceptions")
        except (ControlError, KeyError):
            found[name] = None
    return found


def health(net: Any, baseline: Baseline, rss_growth_limit: int = 64 * 1024 * 1024) -> list[str]:
    """Everything wrong with the emulation after a fuzz run (empty when all is well)."""
    problems: list[str] = []
    for event in list(net.crashes):
        tail = "\n".join("    " + line for line in getattr(event, "log_tail", None) or [])
        problems.append(f"crash: {event.describe() if hasattr(event, 'describe') else event}" + (f"\n{tail}" if tail else ""))
    for name, handle in net.supervisor.processes.items():
        if not handle.alive:
            problems.append(f"{name}: not running")
        if handle.pid != baseline.pids.get(name):
            problems.append(f"{name}: pid {baseline.pids.get(name)} became {handle.pid}")
        if handle.restarts:
            problems.append(f"{name}: restarted {handle.restarts} times")
    for name, pid in baseline.pids.items():
        try:
            grown = psutil.Process(pid).memory_info().rss - baseline.rss[name]
        except psutil.NoSuchProcess:
            continue
        if grown > rss_growth_limit:
            problems.append(f"{name}: RSS grew by {grown / 2**20:.1f} MiB (limit {rss_growth_limit / 2**20:.0f})")
    for name in net.topology.nodes:
        if not net.supervisor[name].alive:
            continue
        try:
            counters = net[name].counters()
            knobs = net[name].sysctl()
        except ControlError as exc:
            problems.append(f"{name}: does not answer ({exc})")
            continue
        exceptions = counters["softnet"].get("rx_exceptions")
        if exceptions is None:
            problems.append(f"{name}: no softnet rx_exceptions counter")
        elif exceptions:
            problems.append(f"{name}: rx_exceptions = {exceptions}")
        if counters["softnet"].get("timer_exceptions"):
            problems.append(f"{name}: timer_exceptions = {counters['softnet']['timer_exceptions']}")
        entries = counters["arp_cache"]["entries"]
        limit = _knob(knobs, "net.ipv4.neigh.default.gc_thresh3", 1024)
        if entries > limit:
            problems.append(f"{name}: {entries} neighbour entries, over gc_thresh3 {limit}")
        cache = counters.get("route_cache", {}).get("entries", 0)
        limit = _knob(knobs, "net.ipv4.route.max_size", 4096)
        if cache > limit:
            problems.append(f"{name}: {cache} route cache entries, over max_size {limit}")
    return problems


def _knob(knobs: Any, name: str, default: int) -> int:
    if isinstance(knobs, dict):
        value = knobs.get(name, default)
        if isinstance(value, dict):
            value = value.get("value", default)
        return int(value)
    return default


def reachable(net: Any, pairs: list[tuple[str, str]]) -> bool:
    """One echo answered for every (src, dst) pair."""
    for src, dst in pairs:
        if net[src].ping(dst, count=1, timeout=0.5).received != 1:
            return False
    return True


def wait_recovered(net: Any, pairs: list[tuple[str, str]], timeout: float) -> float:
    """Seconds until every pair pings again (TimeoutError past `timeout`)."""
    start = time.monotonic()
    net.wait_for(lambda: reachable(net, pairs), timeout=timeout, interval=0.05)
    return time.monotonic() - start


# ---------------------------------------------------------------- offline replay


@dataclass
class Finding:
    """An exception a node's barrier caught (or a timer's), with the frame that node was handling."""

    index: int                       # the fuzz frame being injected when it happened (-1: in the settling)
    node: str
    what: str
    frame: bytes | None
    traceback: str
    injected: bytes | None = None    # the fuzz frame itself (differs from `frame` when r1 forwarded it)


def build_memory_network(topology: Any) -> tuple[Any, dict[str, Any]]:
    """The topology's nodes as `Stack`s on a `nodes.memnet.Network` (hubs, fake clock), configured as the kernel does."""
    from control.plan import build_plan
    from nodes.memnet import Network
    from nodes.stack import Stack
    from nodes.sysctl import Sysctl
    from nodes.wire.addresses import parse_cidr

    plan = build_plan(topology, "/tmp/netemu-replay")
    network = Network(start=1000.0, latency=0.0001)
    devices: dict[str, Any] = {}
    for process in plan.nodes:
        config = process.config
        knobs = {"net.ipv4.ip_forward": 1 if process.kind == "router" else 0}
        knobs.update(config.get("sysctl") or {})
        stack = Stack(process.name, Sysctl(knobs), random.Random(0))
        network.stacks[process.name] = stack
        for spec in config["interfaces"]:
            device = stack.add_device(spec["name"], spec["mac"], mtu=int(spec.get("mtu", 1500)))
            address, prefix = parse_cidr(spec["ip"])
            stack.add_address(device.name, address, prefix)
            segment = spec["endpoint"].rsplit("/", 1)[-1].removesuffix(".data")
            network.segments.setdefault(segment, []).append((stack, device))
            devices[spec["attachment"]] = device
        for route in config.get("routes") or []:
            stack.add_route(route)
        for entry in config.get("arp") or []:
            stack.add_neighbour(entry["ip"], entry["mac"], entry.get("dev"), network.now)
    return network, devices


def replay_in_memory(topology: Any, segment: str, seed: int, count: int, *, chunk: int = 64,
                     frame_time: float = 25e-6, limit: int = 50,
                     frames: list[bytes] | None = None) -> tuple[list[Finding], int]:
    """Replay `FrameFuzzer(view, seed)`'s first `count` frames (or `frames`) into an in-memory copy of the network.

    No processes, a fake clock advancing `frame_time` per frame: every exception
    any node's barrier catches is returned with the frame it was handling, the
    fuzz frame being injected then, and the traceback (at most `limit`).
    Returns (findings, frames injected). Timing-dependent states (ARP
    retries, rate limits) differ from a live run, frame-local bugs do not.
    """
    import traceback as traceback_module

    network, _ = build_memory_network(topology)
    findings: list[Finding] = []
    current = {"index": -1, "frame": None}

    def recorder(node: str) -> Callable[..., None]:
        def report(what: str, error: BaseException, frame: bytes | None = None) -> None:
            if len(findings) < limit:
                findings.append(Finding(current["index"], node, what, bytes(frame) if frame is not None else None,
                                        "".join(traceback_module.format_exception(error)).rstrip(),
                                        current["frame"]))
        return report

    for name, stack in network.stacks.items():
        stack._report_once = recorder(name)  # every exception, not once per site
    from nodes.nic import NapiScheduler
    reraise, NapiScheduler.reraise = getattr(NapiScheduler, "reraise", False), False  # the suite may set it
    ports = network.segments[segment]
    if frames is None:
        frames = FrameFuzzer(SegmentView.from_topology(topology, segment), seed=seed).frames(count)
    injected = 0
    try:
        for offset in range(0, len(frames), chunk):
            for index in range(offset, min(offset + chunk, len(frames))):
                frame = frames[index]
                if len(frame) < 14:
                    continue  # the switch drops these (malformed)
                current["index"], current["frame"] = index, frame
                for stack, device in ports:
                    stack.receive(device, frame)
                    while stack.rx_pending:
                        stack.poll(network.now)
                injected += 1
            current["index"], current["frame"] = -1, None
            network.run(chunk * frame_time)
            if len(findings) >= limit:
                break
        network.run(5.0)
    finally:
        NapiScheduler.reraise = reraise
    return findings, injected


def minimize(topology: Any, segment: str, frames: list[bytes], finding: Finding,
             budget: float = 120.0) -> list[bytes]:
    """The fewest frames (a subsequence of `frames`, ending with the culprit) that still raise the same exception.

    Delta debugging (ddmin-style chunk removal) over the frames before the
    culprit, each candidate replayed in memory; stops after `budget` seconds
    with the smallest set found so far.
    """
    signature = finding.traceback.splitlines()[-1]
    culprit = frames[finding.index]
    deadline = time.monotonic() + budget

    def triggers(prefix: list[bytes]) -> bool:
        found, _ = replay_in_memory(topology, segment, 0, 0, frames=prefix + [culprit], limit=1)
        return bool(found) and found[0].traceback.splitlines()[-1] == signature

    prefix = frames[: finding.index]
    if triggers([]):
        return [culprit]
    pieces = 2
    while prefix and time.monotonic() < deadline:
        size = max(1, len(prefix) // pieces)
        reduced = False
        for start in range(0, len(prefix), size):
            candidate = prefix[:start] + prefix[start + size:]
            if triggers(candidate):
                prefix = candidate
                pieces = max(pieces - 1, 2)
                reduced = True
                break
            if time.monotonic() > deadline:
                break
        if not reduced:
            if size == 1:
                break
            pieces = min(pieces * 2, len(prefix))
    return prefix + [culprit]


def _main(argv: list[str] | None = None) -> int:
    import argparse

    from control.topology import load_topology

    parser = argparse.ArgumentParser(prog="python -m bench.fuzzframes",
                                     description="Replay the fuzzer's frames into an in-memory copy of a "
                                                 "topology; print every exception with its frame in hex.")
    parser.add_argument("--topology", default=str(_DEFAULT_TOPOLOGY))
    parser.add_argument("--segment", default="west")
    parser.add_argument("--seed", type=int, default=10)
    parser.add_argument("--frames", type=int, default=100_000)
    parser.add_argument("--limit", type=int, default=20)
    parser.add_argument("--minimize", action="store_true",
                        help="for the first exception, find the fewest frames that still raise it")
    args = parser.parse_args(argv)
    topology = load_topology(args.topology)
    start = time.perf_counter()
    findings, injected = replay_in_memory(topology, args.segment, args.seed, args.frames, limit=args.limit)
    print(f"{injected:,} frames replayed into {args.segment} of {args.topology} (seed {args.seed}) "
          f"in {time.perf_counter() - start:.1f} s: {len(findings)} exceptions")
    for finding in findings:
        print(f"\n--- {finding.node}: {finding.what} (fuzz frame #{finding.index})")
        if finding.frame is not None:
            print(f"frame at {finding.node}: {finding.frame.hex()}")
        if finding.injected is not None and finding.injected != finding.frame:
            print(f"injected frame: {finding.injected.hex()}")
        print(finding.traceback)
    if args.minimize and findings and findings[0].index >= 0:
        frames = FrameFuzzer(SegmentView.from_topology(topology, args.segment), seed=args.seed).frames(args.frames)
        minimal = minimize(topology, args.segment, frames, findings[0])
        print(f"\nminimal reproduction of the first ({findings[0].node}): {len(minimal)} frames into "
              f"{args.segment}, in order:")
        for frame in minimal:
            print(frame.hex())
    return 1 if findings else 0


_DEFAULT_TOPOLOGY = __import__("pathlib").Path(__file__).resolve().parent.parent / "tests" / "scenarios" / "fuzz_chain.yaml"

if __name__ == "__main__":
    raise SystemExit(_main())
