"""UDP datagrams: the 8-byte header and its pseudo-header checksum.

Before changing this file, read RFC 768 (the whole page), RFC 1122 section
4.1.3.4 (the checksum may be off on send, must be checked when present) and
RFC 1071 for the checksum itself (`checksum.py`). Seed 001 describes where
UDP sits in the Linux stack (udp_hash demultiplexing lives in `nodes/udp.py`).

Two shapes, as every codec here: `UdpView` reads fields straight out of a
buffer (the demultiplexing hot path); `UdpHeader` is the parsed value with
`parse`/`build`. IP addresses are 32-bit ints (`IPv4Address` is one).
"""
from __future__ import annotations

import struct
from dataclasses import dataclass

from .checksum import ones_complement_sum, pseudo_header_sum
from .errors import WireError

IPPROTO_UDP = 17
HEADER_LENGTH = 8
MAX_LENGTH = 0xFFFF

_HEADER = struct.Struct("!HHHH")
_CHECKSUM = struct.Struct("!H")
_CHECKSUM_OFFSET = 6


@dataclass(slots=True)
class UdpHeader:
    """A UDP header; `length` counts header plus payload, `checksum` 0 means "not computed"."""

    src_port: int
    dst_port: int
    length: int = 0
    checksum: int = 0

    @property
    def payload_length(self) -> int:
        return self.length - HEADER_LENGTH

    @classmethod
    def parse(cls, data: "bytes | bytearray | memoryview") -> "UdpHeader":
        """Parse the header; the datagram is `data[:length]`, anything after it is not UDP's.

        Trailing bytes are allowed (the IP layer may hand over Ethernet
        padding); a length past the end of `data` is a truncated datagram.
        """
        if len(data) < HEADER_LENGTH:
            raise WireError("udp", f"datagram of {len(data)} bytes is shorter than a header")
        src_port, dst_port, length, checksum = _HEADER.unpack_from(data)
        if length < HEADER_LENGTH:
            raise WireError("udp", f"length field {length} is shorter than the header")
        if length > len(data):
            raise WireError("udp", f"length field {length} overruns the {len(data)} bytes received")
        return cls(src_port, dst_port, length, checksum)

    def build_into(
        self,
        buffer: "bytearray | memoryview",
        offset: int,
        payload_length: int,
        src_ip: int,
        dst_ip: int,
        *,
        no_check: bool = False,
    ) -> int:
        """Write the header at `offset` in front of `payload_length` payload bytes already there.

        `length` and `checksum` are computed (the instance's own values are
        ignored and left unchanged). `no_check` sends checksum 0, like
        Linux's SO_NO_CHECK. Returns the header length.
        """
        length = HEADER_LENGTH + payload_length
        if not 0 <= payload_length <= MAX_LENGTH - HEADER_LENGTH:
            raise WireError("udp", f"payload of {payload_length} bytes does not fit a datagram")
        end = offset + length
        if offset < 0 or end > len(buffer):
            raise WireError("udp", f"buffer of {len(buffer)} bytes ends before the payload")
        try:
            _HEADER.pack_into(buffer, offset, self.src_port, self.dst_port, length, 0)
        except struct.error as error:
            raise WireError("udp", f"field out of range: {error}") from None
        if not no_check:
            region = memoryview(buffer)[offset:end]
            total = ones_complement_sum(region, pseudo_header_sum(src_ip, dst_ip, IPPROTO_UDP, length))
            # A computed 0 goes out as its one's-complement twin 0xFFFF, because
            # 0 on the wire means "no checksum" (RFC 768).
            _CHECKSUM.pack_into(buffer, offset + _CHECKSUM_OFFSET, (~total & 0xFFFF) or 0xFFFF)
        return HEADER_LENGTH

    def build(
        self,
        payload: "bytes | bytearray | memoryview",
        src_ip: int,
        dst_ip: int,
        *,
        no_check: bool = False,
    ) -> bytes:
        """The whole datagram, header then `payload`, with length and checksum computed."""
        datagram = bytearray(HEADER_LENGTH + len(payload))
        datagram[HEADER_LENGTH:] = payload
        self.build_into(datagram, 0, len(payload), src_ip, dst_ip, no_check=no_check)
        return bytes(datagram)

    def encode(self) -> bytes:
        """The 8 header bytes exactly as the fields say, nothing computed (for tests, captures)."""
        try:
            return _HEADER.pack(self.src_port, self.dst_port, self.length, self.checksum)
        except struct.error as error:
            raise WireError("udp", f"field out of range: {error}") from None


_PORTS = struct.Struct("!HH")


def quoted_ports(transport: "bytes | bytearray | memoryview") -> "tuple[int, int] | None":
    """(source port, destination port) of a UDP header quoted in an ICMP error (RFC 792 quotes
    at least 8 bytes, RFC 1812 more); None when fewer than the 4 bytes of the ports are there."""
    if len(transport) < _PORTS.size:
        return None
    return _PORTS.unpack_from(transport)


def checksum_ok(datagram: "bytes | bytearray | memoryview", src_ip: int, dst_ip: int) -> bool:
    """True if the datagram's checksum is right or absent (0); False for a bad sum or a bad length.

    Covers `datagram[:length]` as the length field says. It never raises, so
    a receiver may call it before or after `UdpHeader.parse`.
    """
    if len(datagram) < HEADER_LENGTH:
        return False
    length = (datagram[4] << 8) | datagram[5]
    if length < HEADER_LENGTH or length > len(datagram):
        return False
    if datagram[6] == 0 and datagram[7] == 0:
        return True
    if length != len(datagram):
        datagram = memoryview(datagram)[:length]
    return ones_complement_sum(datagram, pseudo_header_sum(src_ip, dst_ip, IPPROTO_UDP, length)) == 0xFFFF


class UdpView:
    """Zero-copy accessors over a datagram; the header length is checked once, at creation."""

    __slots__ = ("buffer",)

    def __init__(self, buffer: "bytes | bytearray | memoryview") -> None:
        if len(buffer) < HEADER_LENGTH:
            raise WireError("udp", f"datagram of {len(buffer)} bytes is shorter than a header")
        self.buffer = buffer

    @property
    def src_port(self) -> int:
        return (self.buffer[0] << 8) | self.buffer[1]

    @property
    def dst_port(self) -> int:
        return (self.buffer[2] << 8) | self.buffer[3]

    @property
    def length(self) -> int:
        return (self.buffer[4] << 8) | self.buffer[5]

    @property
    def checksum(self) -> int:
        return (self.buffer[6] << 8) | self.buffer[7]

    @property
    def payload(self) -> memoryview:
        """The payload as the length field delimits it; WireError if that length is impossible."""
        length = (self.buffer[4] << 8) | self.buffer[5]
        if length < HEADER_LENGTH or length > len(self.buffer):
            raise WireError("udp", f"length field {length} does not fit the {len(self.buffer)} bytes received")
        return memoryview(self.buffer)[HEADER_LENGTH:length]
