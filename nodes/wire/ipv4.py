"""IPv4 headers: parse, build, the forwarding TTL decrement, and option walking.

Before changing this file, read RFC 791 section 3.1 (header format and
options), RFC 1122 section 3.2.1 (what a receiver must check), RFC 1624
(incremental checksum update) and seed 001's sections on the IP layer.

Two shapes, as every codec here: `IPv4View` reads fields straight out of a
buffer after checking it once (the forwarding and demultiplexing hot path);
`IPv4Header` is the parsed value with `parse`/`build`/`build_into`.

Conventions:

* `fragment_offset` is in bytes, always a multiple of 8 (the wire field counts
  8-byte units): callers never divide or multiply by 8 themselves.
* `options` are raw bytes. On build they are padded with zero bytes (End of
  Option List) to a multiple of 4, so `header_length` is 20 plus the padded
  option length; more than 40 bytes of options raise `WireError`.
* `build`/`build_into` always compute `total_length` and the header checksum;
  the values stored in the header object are ignored (they are what `parse`
  read off the wire).
"""
from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import Iterator

from .addresses import IPv4Address
from .checksum import incremental_update, ones_complement_sum
from .errors import WireError

IPPROTO_ICMP = 1
IPPROTO_TCP = 6
IPPROTO_UDP = 17

# Flag bits of the 16-bit flags/fragment-offset word, with Linux's names.
IP_CE = 0x8000  # the reserved ("evil") bit; Linux calls it IP_CE
IP_DF = 0x4000
IP_MF = 0x2000
IP_OFFSET = 0x1FFF

# Option types (RFC 791 3.1; Linux include/uapi/linux/ip.h names).
IPOPT_END = 0
IPOPT_NOOP = 1
IPOPT_SEC = 130
IPOPT_LSRR = 131
IPOPT_SSRR = 137
IPOPT_RR = 7
IPOPT_TS = 68
IPOPT_RA = 148

MIN_HEADER_LENGTH = 20
MAX_HEADER_LENGTH = 60
MAX_OPTIONS_LENGTH = MAX_HEADER_LENGTH - MIN_HEADER_LENGTH
IP_MAXPACKET = 0xFFFF

_HEADER = struct.Struct("!BBHHHBBHII")
# The fixed 20-byte header as a tuple (version_ihl, tos, total_length, identification,
# flags_fragment, ttl, protocol, checksum, src, dst), for hot paths and for quoting:
# ip_rcv's fast path and icmp_send unpack it once instead of building a view.
unpack_fixed_header = _HEADER.unpack_from
# The one's-complement sum of a header without options, from its unpacked fields:
# divisible by 0xFFFF exactly when the checksum is right (see IPv4Header.parse).
VERSION_IHL_NO_OPTIONS = 0x45
_U32 = struct.Struct("!I")
_int_new = int.__new__
_Address = IPv4Address


def _error(reason: str) -> WireError:
    return WireError("ipv4", reason)


@dataclass(slots=True)
class IPv4Header:
    """An IPv4 header; addresses are `IPv4Address`, `fragment_offset` is in bytes."""

    src: IPv4Address
    dst: IPv4Address
    protocol: int
    ttl: int = 64
    identification: int = 0
    dont_fragment: bool = False
    more_fragments: bool = False
    fragment_offset: int = 0
    tos: int = 0
    total_length: int = 0
    checksum: int = 0
    options: bytes = b""
    reserved_flag: bool = False

    @property
    def header_length(self) -> int:
        """20 plus the options padded to a multiple of 4 (what `build` writes)."""
        return MIN_HEADER_LENGTH + ((len(self.options) + 3) & ~3)

    @property
    def is_fragment(self) -> bool:
        """True for any piece of a fragmented datagram (MF set or a non-zero offset)."""
        return self.more_fragments or self.fragment_offset != 0

    @property
    def payload_length(self) -> int:
        """Bytes after the header according to `total_length` (meaningful after `parse`)."""
        return self.total_length - self.header_length

    @classmethod
    def parse(cls, data: "bytes | bytearray | memoryview", verify_checksum: bool = False) -> "IPv4Header":
        """Parse the header at the start of `data`; data may run past total_length (Ethernet padding)."""
        length = len(data)
        if length < MIN_HEADER_LENGTH:
            raise _error(f"datagram of {length} bytes is shorter than a header")
        version_ihl, tos, total_length, identification, flags, ttl, protocol, checksum, src, dst = (
            _HEADER.unpack_from(data)
        )
        if version_ihl == 0x45:  # the common case: no options
            header_length = MIN_HEADER_LENGTH
            options = b""
        else:
            if version_ihl >> 4 != 4:
                raise _error(f"version {version_ihl >> 4} is not 4")
            header_length = (version_ihl & 0x0F) << 2
            if header_length < MIN_HEADER_LENGTH:
                raise _error(f"header length {header_length} is below 20")
            if header_length > length:
                raise _error(f"header length {header_length} exceeds the {length} bytes received")
            options = bytes(data[MIN_HEADER_LENGTH:header_length])
        if total_length < header_length:
            raise _error(f"total length {total_length} is shorter than the {header_length}-byte header")
        if total_length > length:
            raise _error(f"truncated: total length {total_length}, {length} bytes received")
        if verify_checksum:
            if options:
                valid = ones_complement_sum(data[:header_length]) == 0xFFFF
            else:
                # Sum the words from the fields already unpacked. A header with a
                # right checksum sums to one's-complement all-ones, a multiple of
                # 0xFFFF; it cannot sum to 0 since its first byte is 0x45.
                valid = (
                    0x4500 + tos + total_length + identification + flags + (ttl << 8) + protocol + checksum
                    + (src >> 16) + (src & 0xFFFF) + (dst >> 16) + (dst & 0xFFFF)
                ) % 0xFFFF == 0
            if not valid:
                raise _error("bad header checksum")
        return cls(
            _int_new(_Address, src),
            _int_new(_Address, dst),
            protocol,
            ttl,
            identification,
            flags & IP_DF != 0,
            flags & IP_MF != 0,
            (flags & IP_OFFSET) << 3,
            tos,
            total_length,
            checksum,
            options,
            flags & IP_CE != 0,
        )

    @classmethod
    def parse_quoted(cls, data: "bytes | bytearray | memoryview") -> "IPv4Header":
        """Parse a header quoted in an ICMP error: the datagram it describes may be cut short.

        Everything is checked as in `parse` except that `total_length` may exceed `len(data)`.
        """
        length = len(data)
        if length < MIN_HEADER_LENGTH:
            raise _error(f"datagram of {length} bytes is shorter than a header")
        header_length = (data[0] & 0x0F) << 2
        if not MIN_HEADER_LENGTH <= header_length <= length:
            raise _error(f"header length {header_length} is below 20 or beyond the {length} bytes quoted")
        total_length = (data[2] << 8) | data[3]
        # Parse a copy that claims to be just its header, then restore the real
        # length: one set of checks, and `parse` stays free of a flag on the hot path.
        header_only = bytearray(data[:header_length])
        header_only[2] = header_length >> 8
        header_only[3] = header_length & 0xFF
        header = cls.parse(header_only)
        if total_length < header_length:
            raise _error(f"total length {total_length} is shorter than the {header_length}-byte header")
        header.total_length = total_length
        return header

    def _fields(self, total_length: int) -> tuple[int, int, int, bytes]:
        """(version/IHL byte, flags word, checksum, padded options) for a header of `total_length`."""
        options = self.options
        if options:
            if len(options) > MAX_OPTIONS_LENGTH:
                raise _error(f"{len(options)} bytes of options exceed the 40-byte maximum")
            pad = -len(options) & 3
            options = bytes(options) + bytes(pad) if pad else bytes(options)
        header_length = MIN_HEADER_LENGTH + len(options)
        offset = self.fragment_offset
        if offset & ~0xFFF8:
            raise _error(f"fragment offset {offset} is not a multiple of 8 in 0..65528")
        if not header_length <= total_length <= IP_MAXPACKET:
            raise _error(f"total length {total_length} out of range")
        flags = offset >> 3
        if self.dont_fragment:
            flags |= IP_DF
        if self.more_fragments:
            flags |= IP_MF
        if self.reserved_flag:
            flags |= IP_CE
        version_ihl = 0x40 | (header_length >> 2)
        src = self.src
        dst = self.dst
        try:
            # One's-complement sum straight from the field values: cheaper than
            # packing twice (once to checksum, once with the checksum in). The
            # checksum is then -sum mod 0xFFFF: ~sum for a sum that is not a
            # multiple of 0xFFFF, and 0 (not 0xFFFF) when it is; a header never
            # sums to zero since its version is 4.
            total = (
                (version_ihl << 8 | self.tos)
                + total_length
                + self.identification
                + flags
                + (self.ttl << 8 | self.protocol)
                + (src >> 16)
                + (src & 0xFFFF)
                + (dst >> 16)
                + (dst & 0xFFFF)
            )
        except TypeError:
            raise _error("header field of the wrong type") from None
        if options:
            total += ones_complement_sum(options)
        return version_ihl, flags, -total % 0xFFFF, options

    def build_into(self, buffer: "bytearray | memoryview", offset: int, payload_length: int) -> int:
        """Write the header at `offset` for a payload of `payload_length` bytes; returns its length.

        This is how the stack pushes a header in front of a payload already in
        a buffer: total length and checksum are computed, nothing is copied.
        """
        if not self.options:
            # The common case inline (no options): this is on every packet sent
            # and a helper call plus its tuple cost a quarter of the time.
            total_length = MIN_HEADER_LENGTH + payload_length
            fragment_offset = self.fragment_offset
            if fragment_offset & ~0xFFF8:
                raise _error(f"fragment offset {fragment_offset} is not a multiple of 8 in 0..65528")
            if not MIN_HEADER_LENGTH <= total_length <= IP_MAXPACKET:
                raise _error(f"total length {total_length} out of range")
            flags = fragment_offset >> 3
            if self.dont_fragment:
                flags |= IP_DF
            if self.more_fragments:
                flags |= IP_MF
            if self.reserved_flag:
                flags |= IP_CE
            tos = self.tos
            identification = self.identification
            ttl = self.ttl
            protocol = self.protocol
            src = self.src
            dst = self.dst
            try:
                checksum = -(
                    (0x4500 | tos)
                    + total_length
                    + identification
                    + flags
                    + (ttl << 8 | protocol)
                    + (src >> 16)
                    + (src & 0xFFFF)
                    + (dst >> 16)
                    + (dst & 0xFFFF)
                ) % 0xFFFF
                _HEADER.pack_into(
                    buffer, offset, 0x45, tos, total_length, identification, flags, ttl, protocol, checksum, src, dst
                )
            except (struct.error, TypeError) as error:
                raise _error(f"cannot build header: {error}") from None
            return MIN_HEADER_LENGTH
        header_length = self.header_length
        version_ihl, flags, checksum, options = self._fields(header_length + payload_length)
        try:
            _HEADER.pack_into(
                buffer,
                offset,
                version_ihl,
                self.tos,
                header_length + payload_length,
                self.identification,
                flags,
                self.ttl,
                self.protocol,
                checksum,
                self.src,
                self.dst,
            )
        except struct.error as error:
            raise _error(f"cannot build header: {error}") from None
        if options:
            buffer[offset + MIN_HEADER_LENGTH : offset + header_length] = options
        return header_length

    def build(self, payload: "bytes | bytearray | memoryview" = b"") -> bytes:
        """Header (total length and checksum computed) followed by `payload`."""
        total_length = self.header_length + len(payload)
        version_ihl, flags, checksum, options = self._fields(total_length)
        try:
            header = _HEADER.pack(
                version_ihl,
                self.tos,
                total_length,
                self.identification,
                flags,
                self.ttl,
                self.protocol,
                checksum,
                self.src,
                self.dst,
            )
        except struct.error as error:
            raise _error(f"cannot build header: {error}") from None
        return header + options + bytes(payload) if options else header + bytes(payload)


class IPv4View:
    """Zero-copy accessors over a datagram, checked once at creation like `IPv4Header.parse`.

    After construction no accessor raises: version, header length and total
    length are known to be consistent with the buffer.
    """

    __slots__ = ("buffer", "header_length", "total_length")

    def __init__(self, buffer: "bytes | bytearray | memoryview") -> None:
        length = len(buffer)
        if length < MIN_HEADER_LENGTH:
            raise _error(f"datagram of {length} bytes is shorter than a header")
        version_ihl = buffer[0]
        if version_ihl >> 4 != 4:
            raise _error(f"version {version_ihl >> 4} is not 4")
        header_length = (version_ihl & 0x0F) << 2
        if header_length < MIN_HEADER_LENGTH:
            raise _error(f"header length {header_length} is below 20")
        if header_length > length:
            raise _error(f"header length {header_length} exceeds the {length} bytes received")
        total_length = (buffer[2] << 8) | buffer[3]
        if total_length < header_length:
            raise _error(f"total length {total_length} is shorter than the {header_length}-byte header")
        if total_length > length:
            raise _error(f"truncated: total length {total_length}, {length} bytes received")
        self.buffer = buffer
        self.header_length = header_length
        self.total_length = total_length

    @property
    def src(self) -> IPv4Address:
        return _int_new(_Address, _U32.unpack_from(self.buffer, 12)[0])

    @property
    def dst(self) -> IPv4Address:
        return _int_new(_Address, _U32.unpack_from(self.buffer, 16)[0])

    @property
    def protocol(self) -> int:
        return self.buffer[9]

    @property
    def ttl(self) -> int:
        return self.buffer[8]

    @property
    def tos(self) -> int:
        return self.buffer[1]

    @property
    def identification(self) -> int:
        return (self.buffer[4] << 8) | self.buffer[5]

    @property
    def dont_fragment(self) -> bool:
        return self.buffer[6] & 0x40 != 0

    @property
    def more_fragments(self) -> bool:
        return self.buffer[6] & 0x20 != 0

    @property
    def fragment_offset(self) -> int:
        """Offset of this fragment's data in bytes."""
        return (((self.buffer[6] & 0x1F) << 8) | self.buffer[7]) << 3

    @property
    def is_fragment(self) -> bool:
        return (self.buffer[6] & 0x3F) | self.buffer[7] != 0

    @property
    def checksum_ok(self) -> bool:
        return ones_complement_sum(self.buffer[: self.header_length]) == 0xFFFF

    @property
    def options(self) -> bytes:
        return bytes(self.buffer[MIN_HEADER_LENGTH : self.header_length])

    @property
    def payload(self) -> memoryview:
        """The data after the header, up to total_length (Ethernet padding excluded)."""
        return memoryview(self.buffer)[self.header_length : self.total_length]

    def header(self) -> IPv4Header:
        """The full parsed header value."""
        return IPv4Header.parse(self.buffer)


def header_checksum_ok(data: "bytes | bytearray | memoryview") -> bool:
    """True if the header at the start of `data` has a valid checksum; never raises.

    Cheap, so the stack can count InHdrErrors without an exception per bad datagram.
    A buffer too short for the header its IHL announces is not OK.
    """
    if len(data) < MIN_HEADER_LENGTH:
        return False
    header_length = (data[0] & 0x0F) << 2
    if header_length < MIN_HEADER_LENGTH or header_length > len(data):
        return False
    return ones_complement_sum(data[:header_length]) == 0xFFFF


def build_header_into(buffer: "bytearray | memoryview", offset: int, payload_length: int, tos: int,
                      identification: int, dont_fragment: bool, ttl: int, protocol: int, src: int, dst: int) -> int:
    """`IPv4Header(src, dst, protocol, ttl, identification, dont_fragment=..., tos=...).build_into(...)`
    without the header object: a whole unfragmented datagram's header, no options.

    The output path of every locally generated datagram that fits the MTU;
    the same bytes and the same `WireError`s as building the object.
    Returns the header's length (20).
    """
    total_length = MIN_HEADER_LENGTH + payload_length
    if not MIN_HEADER_LENGTH <= total_length <= IP_MAXPACKET:
        raise _error(f"total length {total_length} out of range")
    flags = IP_DF if dont_fragment else 0
    try:
        checksum = -(
            (0x4500 | tos) + total_length + identification + flags + (ttl << 8 | protocol)
            + (src >> 16) + (src & 0xFFFF) + (dst >> 16) + (dst & 0xFFFF)
        ) % 0xFFFF
        _HEADER.pack_into(buffer, offset, 0x45, tos, total_length, identification, flags, ttl, protocol, checksum,
                          src, dst)
    except (struct.error, TypeError) as error:
        raise _error(f"cannot build header: {error}") from None
    return MIN_HEADER_LENGTH


def decrement_ttl(buffer: "bytearray | memoryview", offset: int = 0) -> int:
    """Decrement the TTL of the header at `offset` in place; returns the new TTL.

    The forwarding fast path (Linux ip_decrease_ttl): the checksum is patched
    with RFC 1624 instead of recomputed. A wrong checksum stays wrong, as it
    should: a router does not launder corruption. The caller checks TTL > 1
    first (RFC 1812 5.3.1); a TTL of 0 cannot be decremented and raises.
    """
    if offset < 0 or len(buffer) < offset + MIN_HEADER_LENGTH:
        raise _error("buffer too short to hold a header at this offset")
    ttl = buffer[offset + 8]
    if ttl == 0:
        raise _error("TTL is already 0")
    old_word = (ttl << 8) | buffer[offset + 9]
    checksum = incremental_update(
        (buffer[offset + 10] << 8) | buffer[offset + 11], old_word, old_word - 0x100
    )
    buffer[offset + 8] = ttl - 1
    buffer[offset + 10] = checksum >> 8
    buffer[offset + 11] = checksum & 0xFF
    return ttl - 1


def set_destination(header: "bytearray | memoryview", address: int) -> None:
    """Rewrite the destination address of the header at the start of `header` (a source route's next
    hop); the checksum is left to `refresh_header_checksum`."""
    if len(header) < MIN_HEADER_LENGTH:
        raise _error("buffer too short to hold a header")
    header[16:20] = address.to_bytes(4, "big")


def refresh_header_checksum(header: "bytearray | memoryview") -> None:
    """Recompute the checksum of the header at the start of `header` (Linux ip_send_check): after
    options were rewritten in place. `header` holds at least the length its IHL announces."""
    header_length = (header[0] & 0x0F) << 2 if header else 0
    if header_length < MIN_HEADER_LENGTH or header_length > len(header):
        raise _error("buffer too short for the header length it announces")
    header[10] = header[11] = 0
    checksum = 0xFFFF - ones_complement_sum(header[:header_length])
    header[10] = checksum >> 8
    header[11] = checksum & 0xFF


def is_fragment(data: "bytes | bytearray | memoryview") -> bool:
    """True if the datagram at the start of `data` is a fragment (MF set or offset != 0)."""
    if len(data) < MIN_HEADER_LENGTH:
        raise _error(f"datagram of {len(data)} bytes is shorter than a header")
    return (data[6] & 0x3F) | data[7] != 0


def payload(data: "bytes | bytearray | memoryview") -> memoryview:
    """The payload of the datagram in `data`, sliced by header and total length (checked)."""
    return IPv4View(data).payload


def iter_options(options: "bytes | bytearray | memoryview") -> Iterator[tuple[int, bytes]]:
    """Walk raw options, yielding (type, data) with data after the type and length bytes.

    NOP yields (IPOPT_NOOP, b""); End of Option List stops the walk (it and
    the padding after it are not yielded). A length below 2 or running past
    the end raises `WireError`.
    """
    index = 0
    end = len(options)
    while index < end:
        kind = options[index]
        if kind == IPOPT_END:
            return
        if kind == IPOPT_NOOP:
            yield kind, b""
            index += 1
            continue
        if index + 1 >= end:
            raise _error(f"option {kind} at byte {index} has no length byte")
        length = options[index + 1]
        if length < 2:
            raise _error(f"option {kind} at byte {index} has length {length}")
        if index + length > end:
            raise _error(f"option {kind} at byte {index} overruns the options by {index + length - end} bytes")
        yield kind, bytes(options[index + 2 : index + length])
        index += length
