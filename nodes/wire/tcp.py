"""TCP segments: the header, its options, and the pseudo-header checksum.

Before changing this file, read RFC 9293 section 3.1 (header format) and
3.2 (option rules: EOL, NOP, kind-length), RFC 7323 sections 2-3 (window
scale, timestamps), RFC 2018 section 3 (SACK), RFC 6691 and RFC 879 (MSS),
and seed 001's TCP overview. Sequence numbers are plain 32-bit ints here:
modulo-2**32 comparison belongs to the TCP layer (`nodes/tcp/`), as does
everything a *value* means (a window shift over 14 is clamped there, an MSS
outside a SYN is ignored there). This module only says whether bytes are a
well-formed header.

Two shapes, as every codec here: `TcpView` reads fields straight out of a
buffer (demultiplexing and the established fast path); `TcpHeader` is the
parsed value with `parse`/`build`. Options are a tuple of small typed values
(`MssOption`, `TimestampOption`, ...); unknown kinds are kept verbatim.

Option parse rules: EOL (kind 0) ends the list; NOP (kind 1) is one byte;
every other kind has a length byte >= 2 that must not overrun the header,
and the known kinds must have their RFC length, else `WireError` (Linux's
tcp_parse_options skips such options silently; we are stricter on purpose,
so a malformed header is counted rather than half-understood).

Round trips are exact: padding after an EOL is kept in `EolOption.padding`
unless it is exactly the zero padding `build` would add again, in which case
the EOL is dropped (so `(MssOption(1460), WindowScaleOption(7))` built and
parsed back is the same tuple, and any parsed header re-encodes to the same
bytes).
"""
from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import ClassVar, TypeVar, Union

from .checksum import ones_complement_sum, pseudo_header_sum
from .errors import WireError

IPPROTO_TCP = 6
HEADER_LENGTH = 20  # without options
MAX_HEADER_LENGTH = 60
MAX_OPTIONS_LENGTH = MAX_HEADER_LENGTH - HEADER_LENGTH

# Control bits (RFC 9293 3.1), low byte of the 16-bit data-offset/flags word.
FIN = 0x01
SYN = 0x02
RST = 0x04
PSH = 0x08
ACK = 0x10
URG = 0x20
ECE = 0x40  # RFC 3168
CWR = 0x80  # RFC 3168
NS = 0x100  # RFC 3540 nonce sum, historic (RFC 8311); AccECN reuses the bit as AE
# `TcpHeader.flags` holds all 12 bits after the data offset, so the three
# reserved bits (0xE00) and NS survive a parse/build round trip untouched.
FLAGS_MASK = 0xFFF

TCPOPT_EOL = 0
TCPOPT_NOP = 1
TCPOPT_MSS = 2
TCPOPT_WINDOW = 3
TCPOPT_SACK_PERM = 4
TCPOPT_SACK = 5
TCPOPT_TIMESTAMP = 8

MAX_SACK_BLOCKS = 4

_HEADER = struct.Struct("!HHIIHHHH")
_CHECKSUM = struct.Struct("!H")
_CHECKSUM_OFFSET = 16
_U32 = struct.Struct("!I")
_MSS = struct.Struct("!BBH")
_WINDOW = struct.Struct("!BBB")
_TIMESTAMP = struct.Struct("!BBII")
_SACK_BLOCK = struct.Struct("!II")
# NOP, NOP, timestamp: what Linux puts on every segment once timestamps are
# on, and what tcp_parse_aligned_timestamp() recognises in one comparison.
_ALIGNED_TIMESTAMP = struct.Struct("!III")
_ALIGNED_TIMESTAMP_WORD = 0x0101080A


@dataclass(slots=True)
class MssOption:
    """Maximum segment size (kind 2, RFC 9293 3.7.1): the largest payload the SYN's sender accepts."""

    mss: int
    kind: ClassVar[int] = TCPOPT_MSS
    wire_length: ClassVar[int] = 4

    def encode(self) -> bytes:
        return _MSS.pack(TCPOPT_MSS, 4, self.mss)


@dataclass(slots=True)
class WindowScaleOption:
    """Window scale (kind 3, RFC 7323 2): the SYN sender's windows are shifted left by `shift`."""

    shift: int
    kind: ClassVar[int] = TCPOPT_WINDOW
    wire_length: ClassVar[int] = 3

    def encode(self) -> bytes:
        return _WINDOW.pack(TCPOPT_WINDOW, 3, self.shift)


@dataclass(slots=True)
class SackPermittedOption:
    """SACK permitted (kind 4, RFC 2018 2), on a SYN only."""

    kind: ClassVar[int] = TCPOPT_SACK_PERM
    wire_length: ClassVar[int] = 2

    def encode(self) -> bytes:
        return b"\x04\x02"


@dataclass(slots=True)
class SackOption:
    """Selective acknowledgment (kind 5, RFC 2018 3): 1-4 (left edge, right edge) blocks."""

    blocks: tuple[tuple[int, int], ...]
    kind: ClassVar[int] = TCPOPT_SACK

    @property
    def wire_length(self) -> int:
        return 2 + 8 * len(self.blocks)

    def encode(self) -> bytes:
        if not 1 <= len(self.blocks) <= MAX_SACK_BLOCKS:
            raise WireError("tcp", f"a SACK option carries 1 to 4 blocks, not {len(self.blocks)}")
        return bytes((TCPOPT_SACK, 2 + 8 * len(self.blocks))) + b"".join(
            _SACK_BLOCK.pack(left, right) for left, right in self.blocks
        )


@dataclass(slots=True)
class TimestampOption:
    """Timestamps (kind 8, RFC 7323 3): the sender's clock `value` and the peer's echoed `echo`."""

    value: int
    echo: int
    kind: ClassVar[int] = TCPOPT_TIMESTAMP
    wire_length: ClassVar[int] = 10

    def encode(self) -> bytes:
        return _TIMESTAMP.pack(TCPOPT_TIMESTAMP, 10, self.value, self.echo)


@dataclass(slots=True)
class NopOption:
    """No-operation (kind 1): one byte, used to align the next option."""

    kind: ClassVar[int] = TCPOPT_NOP
    wire_length: ClassVar[int] = 1

    def encode(self) -> bytes:
        return b"\x01"


@dataclass(slots=True)
class EolOption:
    """End of option list (kind 0); `padding` holds the bytes after it when they are not plain zero padding.

    Only `parse` needs this: to build, leave the EOL out and `encode_options`
    pads. An EOL given to `build` is followed by the zero padding it needs,
    which parses back as part of `padding`.
    """

    padding: bytes = b""
    kind: ClassVar[int] = TCPOPT_EOL

    @property
    def wire_length(self) -> int:
        return 1 + len(self.padding)

    def encode(self) -> bytes:
        return b"\x00" + self.padding


@dataclass(slots=True)
class UnknownOption:
    """Any other kind, kept verbatim: `data` is what follows the kind and length bytes."""

    kind: int
    data: bytes = b""

    @property
    def wire_length(self) -> int:
        return 2 + len(self.data)

    def encode(self) -> bytes:
        if not 2 <= self.kind <= 255 or len(self.data) > 253:
            raise WireError("tcp", f"option kind {self.kind} with {len(self.data)} data bytes cannot be encoded")
        return bytes((self.kind, 2 + len(self.data))) + self.data


TcpOption = Union[
    MssOption, WindowScaleOption, SackPermittedOption, SackOption, TimestampOption, NopOption, EolOption, UnknownOption
]
_Option = TypeVar("_Option")

# Options without fields are shared: parsing a NOP then costs no allocation.
NOP = NopOption()
SACK_PERMITTED = SackPermittedOption()


def encode_options(options: "tuple[TcpOption, ...] | list[TcpOption]") -> bytes:
    """Options as they go on the wire, zero-padded (EOL then zeros) to a multiple of 4 bytes."""
    if not options:
        return b""
    try:
        if (
            len(options) == 3
            and type(options[2]) is TimestampOption
            and type(options[0]) is NopOption
            and type(options[1]) is NopOption
        ):
            # Every data segment of a timestamped connection: skip the generic join.
            timestamp = options[2]
            return _ALIGNED_TIMESTAMP.pack(_ALIGNED_TIMESTAMP_WORD, timestamp.value, timestamp.echo)
        raw = b"".join([option.encode() for option in options])
    except struct.error as error:
        raise WireError("tcp", f"option field out of range: {error}") from None
    if len(raw) > MAX_OPTIONS_LENGTH:
        raise WireError("tcp", f"{len(raw)} bytes of options exceed the {MAX_OPTIONS_LENGTH} a header can hold")
    for option in options[:-1]:
        if type(option) is EolOption:
            raise WireError("tcp", "EOL must be the last option: anything after it reads back as padding")
    pad = -len(raw) & 3
    if pad:
        # A zero byte is an EOL, and what follows an EOL is ignored: RFC 9293 3.1.
        # (40 is a multiple of 4, so padding never pushes past the limit.)
        raw += bytes(pad)
    return raw


def options_length(options: "tuple[TcpOption, ...] | list[TcpOption]") -> int:
    """Bytes the options take on the wire, padding included (not checked against the 40-byte limit)."""
    if not options:
        return 0
    total = 0
    for option in options:
        total += option.wire_length
    return (total + 3) & ~3


def parse_options(
    data: "bytes | bytearray | memoryview", start: int = 0, end: int | None = None
) -> tuple[TcpOption, ...]:
    """Parse `data[start:end]` as a TCP option list (the bytes between the fixed header and the payload)."""
    if end is None:
        end = len(data)
    elif end > len(data):
        raise WireError("tcp", f"options end at byte {end}, past the {len(data)} bytes received")
    if end - start == 12:
        word, value, echo = _ALIGNED_TIMESTAMP.unpack_from(data, start)
        if word == _ALIGNED_TIMESTAMP_WORD:
            return (NOP, NOP, TimestampOption(value, echo))
    options: list = []
    append = options.append
    i = start
    while i < end:
        kind = data[i]
        if kind == TCPOPT_NOP:
            append(NOP)
            i += 1
            continue
        if kind == TCPOPT_EOL:
            padding = bytes(data[i + 1 : end])
            before = i - start
            # Exactly the padding `encode_options` would add: drop it, so
            # build -> parse gives back the options the caller gave.
            if before & 3 and end - start == (before + 3) & ~3 and not any(padding):
                break
            append(EolOption(padding))
            break
        if i + 1 >= end:
            raise WireError("tcp", f"option kind {kind} at byte {i - start} has no length byte")
        length = data[i + 1]
        if length < 2:
            raise WireError("tcp", f"option kind {kind} has length {length} < 2")
        if i + length > end:
            raise WireError("tcp", f"option kind {kind} of length {length} overruns the header")
        if kind == TCPOPT_TIMESTAMP:
            if length != 10:
                raise WireError("tcp", f"timestamp option of length {length}, not 10")
            append(TimestampOption(_U32.unpack_from(data, i + 2)[0], _U32.unpack_from(data, i + 6)[0]))
        elif kind == TCPOPT_MSS:
            if length != 4:
                raise WireError("tcp", f"MSS option of length {length}, not 4")
            append(MssOption((data[i + 2] << 8) | data[i + 3]))
        elif kind == TCPOPT_WINDOW:
            if length != 3:
                raise WireError("tcp", f"window scale option of length {length}, not 3")
            append(WindowScaleOption(data[i + 2]))
        elif kind == TCPOPT_SACK_PERM:
            if length != 2:
                raise WireError("tcp", f"SACK-permitted option of length {length}, not 2")
            append(SACK_PERMITTED)
        elif kind == TCPOPT_SACK:
            count, rest = divmod(length - 2, 8)
            if rest or not 1 <= count <= MAX_SACK_BLOCKS:
                raise WireError("tcp", f"SACK option of length {length}, not 2 + 8n with n in 1..4")
            append(SackOption(tuple(_SACK_BLOCK.unpack_from(data, i + 2 + 8 * n) for n in range(count))))
        else:
            append(UnknownOption(kind, bytes(data[i + 2 : i + length])))
        i += length
    return tuple(options)


@dataclass(slots=True)
class TcpHeader:
    """A TCP header. `flags` holds the 12 bits after the data offset (see FIN..NS).

    Flag tests are properties named after the bits: `fin`, `syn`, `rst`,
    `psh`, `ack_flag` (because `ack` is the acknowledgment number), `urg`,
    `ece`, `cwr`. `data_offset` and `header_length` follow from `options`.
    """

    src_port: int
    dst_port: int
    seq: int
    ack: int
    flags: int
    window: int
    checksum: int = 0
    urgent: int = 0
    options: tuple[TcpOption, ...] = ()

    @property
    def header_length(self) -> int:
        """Bytes of header including padded options."""
        return HEADER_LENGTH + options_length(self.options) if self.options else HEADER_LENGTH

    @property
    def data_offset(self) -> int:
        """The header length in 32-bit words, as the wire carries it."""
        return self.header_length >> 2

    @property
    def fin(self) -> bool:
        return bool(self.flags & FIN)

    @property
    def syn(self) -> bool:
        return bool(self.flags & SYN)

    @property
    def rst(self) -> bool:
        return bool(self.flags & RST)

    @property
    def psh(self) -> bool:
        return bool(self.flags & PSH)

    @property
    def ack_flag(self) -> bool:
        return bool(self.flags & ACK)

    @property
    def urg(self) -> bool:
        return bool(self.flags & URG)

    @property
    def ece(self) -> bool:
        return bool(self.flags & ECE)

    @property
    def cwr(self) -> bool:
        return bool(self.flags & CWR)

    def option(self, option_type: type[_Option]) -> _Option | None:
        """The first option of that type (`header.option(MssOption)`), or None."""
        for option in self.options:
            if type(option) is option_type:
                return option
        return None

    @classmethod
    def parse(cls, data: "bytes | bytearray | memoryview") -> "TcpHeader":
        """Parse the header and its options; the payload is `data[header.header_length:]`."""
        if len(data) < HEADER_LENGTH:
            raise WireError("tcp", f"segment of {len(data)} bytes is shorter than a header")
        src_port, dst_port, seq, ack, offset_flags, window, checksum, urgent = _HEADER.unpack_from(data)
        header_length = (offset_flags >> 12) << 2
        if header_length == HEADER_LENGTH:
            return cls(src_port, dst_port, seq, ack, offset_flags & FLAGS_MASK, window, checksum, urgent, ())
        if header_length < HEADER_LENGTH:
            raise WireError("tcp", f"data offset {header_length >> 2} is below the minimum of 5")
        if header_length > len(data):
            raise WireError("tcp", f"header of {header_length} bytes overruns the {len(data)} bytes received")
        if header_length == 32:
            # Inlined fast path of parse_options for NOP NOP timestamp (see there).
            word, value, echo = _ALIGNED_TIMESTAMP.unpack_from(data, HEADER_LENGTH)
            if word == _ALIGNED_TIMESTAMP_WORD:
                return cls(
                    src_port, dst_port, seq, ack, offset_flags & FLAGS_MASK, window, checksum, urgent,
                    (NOP, NOP, TimestampOption(value, echo)),
                )
        options = parse_options(data, HEADER_LENGTH, header_length)
        return cls(src_port, dst_port, seq, ack, offset_flags & FLAGS_MASK, window, checksum, urgent, options)

    def _pack_into(self, buffer: "bytearray | memoryview", offset: int, options: bytes, checksum: int) -> int:
        header_length = HEADER_LENGTH + len(options)
        if self.flags & ~FLAGS_MASK:
            raise WireError("tcp", f"flags {self.flags:#x} do not fit 12 bits")
        try:
            _HEADER.pack_into(
                buffer, offset, self.src_port, self.dst_port, self.seq, self.ack,
                (header_length << 10) | self.flags, self.window, checksum, self.urgent,
            )
        except struct.error as error:
            raise WireError("tcp", f"field out of range: {error}") from None
        if options:
            buffer[offset + HEADER_LENGTH : offset + header_length] = options
        return header_length

    def build_into(
        self,
        buffer: "bytearray | memoryview",
        offset: int,
        payload_length: int,
        src_ip: int,
        dst_ip: int,
    ) -> int:
        """Write the header at `offset` in front of `payload_length` payload bytes already there.

        The checksum is computed over the pseudo-header, the header and the
        payload (the instance's `checksum` is ignored and left unchanged).
        Returns the header length.
        """
        options = encode_options(self.options) if self.options else b""
        header_length = HEADER_LENGTH + len(options)
        end = offset + header_length + payload_length
        if offset < 0 or payload_length < 0 or end > len(buffer):
            raise WireError("tcp", f"buffer of {len(buffer)} bytes cannot hold the segment at offset {offset}")
        self._pack_into(buffer, offset, options, 0)
        total = ones_complement_sum(
            memoryview(buffer)[offset:end],
            pseudo_header_sum(src_ip, dst_ip, IPPROTO_TCP, header_length + payload_length),
        )
        _CHECKSUM.pack_into(buffer, offset + _CHECKSUM_OFFSET, ~total & 0xFFFF)
        return header_length

    def build(self, payload: "bytes | bytearray | memoryview", src_ip: int, dst_ip: int) -> bytes:
        """The whole segment, header then `payload`, with the checksum computed."""
        options = encode_options(self.options) if self.options else b""
        segment = bytearray(HEADER_LENGTH + len(options) + len(payload))
        segment[HEADER_LENGTH + len(options) :] = payload
        self.build_into(segment, 0, len(payload), src_ip, dst_ip)
        return bytes(segment)

    def encode(self) -> bytes:
        """The header bytes exactly as the fields say, checksum included as stored (tests, captures)."""
        options = encode_options(self.options) if self.options else b""
        header = bytearray(HEADER_LENGTH + len(options))
        self._pack_into(header, 0, options, self.checksum)
        return bytes(header)


def checksum_ok(segment: "bytes | bytearray | memoryview", src_ip: int, dst_ip: int) -> bool:
    """True if the segment (header and payload, nothing after) sums right with its pseudo-header."""
    return ones_complement_sum(segment, pseudo_header_sum(src_ip, dst_ip, IPPROTO_TCP, len(segment))) == 0xFFFF


_FLAG_LETTERS = ((SYN, "S"), (FIN, "F"), (RST, "R"), (PSH, "P"), (URG, "U"), (ECE, "E"), (CWR, "W"), (ACK, "."))


def format_flags(flags: int) -> str:
    """Flags as tcpdump prints them: SYN|ACK is "S.", a bare ACK ".", none "none"."""
    text = "".join(letter for bit, letter in _FLAG_LETTERS if flags & bit)
    return text or "none"


class TcpView:
    """Zero-copy accessors over a segment; the fixed header is checked once, at creation.

    `header_length`, `options` and `payload` check the data offset when read
    and raise `WireError` if it is impossible; the other accessors cannot fail.
    """

    __slots__ = ("buffer",)

    def __init__(self, buffer: "bytes | bytearray | memoryview") -> None:
        if len(buffer) < HEADER_LENGTH:
            raise WireError("tcp", f"segment of {len(buffer)} bytes is shorter than a header")
        self.buffer = buffer

    @property
    def src_port(self) -> int:
        return (self.buffer[0] << 8) | self.buffer[1]

    @property
    def dst_port(self) -> int:
        return (self.buffer[2] << 8) | self.buffer[3]

    @property
    def seq(self) -> int:
        return _U32.unpack_from(self.buffer, 4)[0]

    @property
    def ack(self) -> int:
        return _U32.unpack_from(self.buffer, 8)[0]

    @property
    def data_offset(self) -> int:
        return self.buffer[12] >> 4

    @property
    def flags(self) -> int:
        return ((self.buffer[12] & 0x0F) << 8) | self.buffer[13]

    @property
    def syn(self) -> bool:
        return bool(self.buffer[13] & SYN)

    @property
    def fin(self) -> bool:
        return bool(self.buffer[13] & FIN)

    @property
    def rst(self) -> bool:
        return bool(self.buffer[13] & RST)

    @property
    def ack_flag(self) -> bool:
        return bool(self.buffer[13] & ACK)

    @property
    def window(self) -> int:
        return (self.buffer[14] << 8) | self.buffer[15]

    @property
    def checksum(self) -> int:
        return (self.buffer[16] << 8) | self.buffer[17]

    @property
    def urgent(self) -> int:
        return (self.buffer[18] << 8) | self.buffer[19]

    @property
    def header_length(self) -> int:
        """Header length in bytes from the data offset; WireError if below 20 or past the buffer."""
        header_length = (self.buffer[12] >> 4) << 2
        if header_length < HEADER_LENGTH or header_length > len(self.buffer):
            raise WireError("tcp", f"data offset {header_length >> 2} does not fit the {len(self.buffer)} bytes received")
        return header_length

    @property
    def options(self) -> tuple[TcpOption, ...]:
        return parse_options(self.buffer, HEADER_LENGTH, self.header_length)

    @property
    def payload(self) -> memoryview:
        return memoryview(self.buffer)[self.header_length :]
