"""Ethernet II frames, with 802.1Q VLAN tags recognised.

Before changing this file, read IEEE 802.3 clause 3.2 (frame layout) and
IEEE 802.1Q clause 9 (the TPID 0x8100 tag), and seed 001's section on the
Ethernet frame. The frame check sequence is not carried: like a Linux
socket, we see frames after the NIC stripped it.

Two shapes, as every codec here: `EthernetView` reads fields straight out of
a buffer (the switch hot path); `EthernetHeader` is the parsed value with
`parse`/`build`.
"""
from __future__ import annotations

import struct
from dataclasses import dataclass

from .addresses import MacAddress
from .errors import WireError

ETH_P_IP = 0x0800
ETH_P_ARP = 0x0806
ETH_P_8021Q = 0x8100
ETH_P_IPV6 = 0x86DD

HEADER_LENGTH = 14
# Field slices of the header, for paths that look at a frame without parsing it.
DST = slice(0, 6)
SRC = slice(6, 12)
ETHERTYPE = slice(12, 14)
VLAN_HEADER_LENGTH = 18
MIN_FRAME_LENGTH = 60  # without FCS; shorter frames are padded by the sender
MAX_PAYLOAD = 1500

_HEADER = struct.Struct("!6s6sH")
_TAG = struct.Struct("!HH")
_mac = MacAddress.from_wire


@dataclass(slots=True)
class VlanTag:
    """An 802.1Q tag: priority code point, drop-eligible indicator, VLAN id."""

    vid: int
    pcp: int = 0
    dei: int = 0

    @property
    def tci(self) -> int:
        return (self.pcp << 13) | (self.dei << 12) | self.vid


@dataclass(slots=True)
class EthernetHeader:
    """An Ethernet II header; `ethertype` is the inner type when a VLAN tag is present."""

    dst: MacAddress
    src: MacAddress
    ethertype: int
    vlan: VlanTag | None = None

    @property
    def header_length(self) -> int:
        return VLAN_HEADER_LENGTH if self.vlan is not None else HEADER_LENGTH

    @classmethod
    def parse(cls, data: "bytes | bytearray | memoryview") -> "EthernetHeader":
        if len(data) < HEADER_LENGTH:
            raise WireError("ethernet", f"frame of {len(data)} bytes is shorter than a header")
        dst, src, ethertype = _HEADER.unpack_from(data)
        if ethertype != ETH_P_8021Q:
            if ethertype < 0x0600:
                raise WireError("ethernet", f"length field {ethertype:#06x} (802.3/LLC) is not Ethernet II")
            return cls(_mac(dst), _mac(src), ethertype, None)
        if len(data) < VLAN_HEADER_LENGTH:
            raise WireError("ethernet", "802.1Q tag truncated")
        tci, ethertype = _TAG.unpack_from(data, HEADER_LENGTH)
        if ethertype < 0x0600:
            raise WireError("ethernet", f"length field {ethertype:#06x} (802.3/LLC) is not Ethernet II")
        return cls(_mac(dst), _mac(src), ethertype, VlanTag(tci & 0x0FFF, tci >> 13, (tci >> 12) & 1))

    def build_into(self, buffer: "bytearray | memoryview", offset: int = 0) -> int:
        """Write the header at `offset`; returns its length."""
        if self.vlan is None:
            _HEADER.pack_into(buffer, offset, self.dst, self.src, self.ethertype)
            return HEADER_LENGTH
        vlan = self.vlan
        # Out-of-range parts would silently spill into their neighbours in the TCI.
        if not (0 <= vlan.vid <= 0x0FFF and 0 <= vlan.pcp <= 7 and 0 <= vlan.dei <= 1):
            raise WireError("ethernet", f"VLAN tag out of range: {vlan}")
        _HEADER.pack_into(buffer, offset, self.dst, self.src, ETH_P_8021Q)
        _TAG.pack_into(buffer, offset + HEADER_LENGTH, vlan.tci, self.ethertype)
        return VLAN_HEADER_LENGTH

    def build(self, payload: "bytes | memoryview" = b"") -> bytes:
        """Header followed by `payload` (no padding: see `pad`)."""
        header = bytearray(self.header_length)
        self.build_into(header)
        return bytes(header) + bytes(payload)


class EthernetView:
    """Zero-copy accessors over a frame; the length is checked once, at creation."""

    __slots__ = ("buffer",)

    def __init__(self, buffer: "bytes | memoryview") -> None:
        if len(buffer) < HEADER_LENGTH:
            raise WireError("ethernet", f"frame of {len(buffer)} bytes is shorter than a header")
        self.buffer = buffer

    @property
    def dst(self) -> bytes:
        return bytes(self.buffer[0:6])

    @property
    def src(self) -> bytes:
        return bytes(self.buffer[6:12])

    @property
    def is_tagged(self) -> bool:
        return self.buffer[12] == 0x81 and self.buffer[13] == 0x00

    @property
    def ethertype(self) -> int:
        """The inner ethertype (after a VLAN tag if any)."""
        b = self.buffer
        if b[12] == 0x81 and b[13] == 0x00:
            if len(b) < VLAN_HEADER_LENGTH:
                raise WireError("ethernet", "802.1Q tag truncated")
            return (b[16] << 8) | b[17]
        return (b[12] << 8) | b[13]

    @property
    def header_length(self) -> int:
        return VLAN_HEADER_LENGTH if self.is_tagged else HEADER_LENGTH

    @property
    def payload(self) -> memoryview:
        return memoryview(self.buffer)[self.header_length:]


def pad(frame: bytes) -> bytes:
    """Pad a frame to the 60-byte Ethernet minimum, as a NIC does before the FCS."""
    short = MIN_FRAME_LENGTH - len(frame)
    return frame + bytes(short) if short > 0 else frame
