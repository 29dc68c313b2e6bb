"""ICMP messages (RFC 792): echo, and the errors that quote an original datagram.

Before changing this file, read RFC 792 (message formats), RFC 1191 section 4
(Next-Hop MTU in "fragmentation needed"), RFC 1812 section 4.3.2.3 (how much
of the original datagram an error quotes) and RFC 1122 section 3.2.2.

The 4 "rest of header" bytes mean different things per type; `IcmpMessage`
exposes them as named fields and ignores the ones a type does not use:

* echo, timestamp, information and address mask messages: `identifier`, `sequence`;
* destination unreachable: `next_hop_mtu` in the low 16 bits (RFC 1191; zero
  unless the code is FRAG_NEEDED);
* parameter problem: `pointer` in the first byte;
* redirect: `gateway`;
* anything else: unused, built as zero.

`payload` is the echo data, or for an error the quoted original datagram.
ICMP has no length field: the message is whatever the IP payload holds.
"""
from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import NamedTuple

from .addresses import IPv4Address
from .checksum import internet_checksum, ones_complement_sum
from .errors import WireError
from .ipv4 import IPv4Header

# Types (RFC 792, RFC 950), spelled as the task and RFCs name them.
ECHO_REPLY = 0
DEST_UNREACH = 3
SOURCE_QUENCH = 4
REDIRECT = 5
ECHO_REQUEST = 8
TIME_EXCEEDED = 11
PARAMETER_PROBLEM = 12
TIMESTAMP = 13
TIMESTAMP_REPLY = 14
INFO_REQUEST = 15
INFO_REPLY = 16
ADDRESS_MASK_REQUEST = 17
ADDRESS_MASK_REPLY = 18

# Destination unreachable codes (RFC 792, RFC 1122 3.2.2.1, RFC 1812 5.2.7.1; Linux names).
NET_UNREACH = 0
HOST_UNREACH = 1
PROT_UNREACH = 2
PORT_UNREACH = 3
FRAG_NEEDED = 4
SR_FAILED = 5
NET_UNKNOWN = 6
HOST_UNKNOWN = 7
HOST_ISOLATED = 8
NET_ANO = 9
HOST_ANO = 10
NET_UNR_TOS = 11
HOST_UNR_TOS = 12
PKT_FILTERED = 13
PREC_VIOLATION = 14
PREC_CUTOFF = 15

# Redirect codes.
REDIR_NET = 0
REDIR_HOST = 1
REDIR_NETTOS = 2
REDIR_HOSTTOS = 3

# Time exceeded codes.
TTL_EXCEEDED_IN_TRANSIT = 0
FRAG_REASSEMBLY_TIME_EXCEEDED = 1

# Parameter problem codes (RFC 792, RFC 1108, RFC 1812 5.2.7.3).
POINTER_INDICATES_ERROR = 0
MISSING_REQUIRED_OPTION = 1
BAD_LENGTH = 2

HEADER_LENGTH = 8
# RFC 1812 4.3.2.3: the whole ICMP error datagram stays within 576 bytes, so
# with a 20-byte IP header and the 8-byte ICMP header 548 bytes are quoted.
ERROR_DATAGRAM_MAX_LENGTH = 576
MAX_QUOTED_LENGTH = ERROR_DATAGRAM_MAX_LENGTH - 20 - HEADER_LENGTH
QUOTED_TRANSPORT_BYTES = 8

ERROR_TYPES = frozenset({DEST_UNREACH, SOURCE_QUENCH, REDIRECT, TIME_EXCEEDED, PARAMETER_PROBLEM})
# Types whose rest-of-header is an identifier and a sequence number.
_ID_SEQUENCE_TYPES = frozenset(
    {ECHO_REPLY, ECHO_REQUEST, TIMESTAMP, TIMESTAMP_REPLY, INFO_REQUEST, INFO_REPLY,
     ADDRESS_MASK_REQUEST, ADDRESS_MASK_REPLY}
)

_HEADER = struct.Struct("!BBHI")
_int_new = int.__new__


def _error(reason: str) -> WireError:
    return WireError("icmp", reason)


class QuotedDatagram(NamedTuple):
    """The part of the offending datagram an ICMP error carries back."""

    header: IPv4Header
    transport_bytes: bytes  # up to the first 8 bytes after the header: ports (+ TCP sequence)


@dataclass(slots=True)
class IcmpMessage:
    """An ICMP message; which rest-of-header fields count depends on `type`."""

    type: int
    code: int
    checksum: int = 0
    identifier: int = 0
    sequence: int = 0
    next_hop_mtu: int = 0
    pointer: int = 0
    gateway: IPv4Address | None = None
    payload: bytes = b""

    @property
    def is_error(self) -> bool:
        """True for the types that quote an original datagram (never answered with an error)."""
        return self.type in ERROR_TYPES

    @classmethod
    def parse(cls, data: "bytes | bytearray | memoryview", verify_checksum: bool = False) -> "IcmpMessage":
        """Parse a whole ICMP message (the IP payload; the checksum covers all of it)."""
        if len(data) < HEADER_LENGTH:
            raise _error(f"message of {len(data)} bytes is shorter than the 8-byte header")
        if verify_checksum and ones_complement_sum(data) != 0xFFFF:
            raise _error("bad checksum")
        kind, code, checksum, rest = _HEADER.unpack_from(data)
        message = cls(kind, code, checksum, payload=bytes(data[HEADER_LENGTH:]))
        if kind in _ID_SEQUENCE_TYPES:
            message.identifier = rest >> 16
            message.sequence = rest & 0xFFFF
        elif kind == DEST_UNREACH:
            message.next_hop_mtu = rest & 0xFFFF
        elif kind == PARAMETER_PROBLEM:
            message.pointer = rest >> 24
        elif kind == REDIRECT:
            message.gateway = _int_new(IPv4Address, rest)
        return message

    def _rest_of_header(self) -> int:
        """The 4 type-dependent bytes as a 32-bit value."""
        kind = self.type
        if kind in _ID_SEQUENCE_TYPES:
            identifier, sequence = self.identifier, self.sequence
            if not (0 <= identifier <= 0xFFFF and 0 <= sequence <= 0xFFFF):
                raise _error(f"identifier {identifier} or sequence {sequence} out of 0..65535")
            return (identifier << 16) | sequence
        if kind == DEST_UNREACH:
            if not 0 <= self.next_hop_mtu <= 0xFFFF:
                raise _error(f"next-hop MTU {self.next_hop_mtu} out of 0..65535")
            return self.next_hop_mtu
        if kind == PARAMETER_PROBLEM:
            if not 0 <= self.pointer <= 0xFF:
                raise _error(f"pointer {self.pointer} out of 0..255")
            return self.pointer << 24
        if kind == REDIRECT:
            if self.gateway is None:
                raise _error("a redirect needs a gateway address")
            return int(self.gateway)
        return 0

    def build_into(self, buffer: "bytearray | memoryview", offset: int = 0) -> int:
        """Write the whole message (checksum computed) at `offset`; returns its length."""
        message = self.build()
        buffer[offset : offset + len(message)] = message
        return len(message)

    def build(self) -> bytes:
        """The whole message with its checksum computed over header and payload."""
        rest = self._rest_of_header()
        payload = self.payload
        try:
            initial = ((self.type << 8) | self.code) + (rest >> 16) + (rest & 0xFFFF)
            checksum = internet_checksum(payload, initial)
            header = _HEADER.pack(self.type, self.code, checksum, rest)
        except (struct.error, TypeError) as error:
            raise _error(f"cannot build message: {error}") from None
        return header + bytes(payload)

    def quoted_header(self) -> QuotedDatagram:
        """The original IPv4 header and first transport bytes quoted by this error.

        Used to find the socket an error belongs to (RFC 1122 3.2.2). Raises
        `WireError` if this is not an error, the quoted header is malformed, or
        fewer than the RFC's 8 bytes after it are quoted (unless the original
        datagram itself was shorter).
        """
        if self.type not in ERROR_TYPES:
            raise _error(f"type {self.type} carries no quoted datagram")
        quoted = self.payload
        header = IPv4Header.parse_quoted(quoted)
        start = header.header_length
        available = len(quoted) - start
        needed = min(QUOTED_TRANSPORT_BYTES, header.total_length - start)
        if available < needed:
            raise _error(f"quote holds {available} bytes after the IP header, needs {needed}")
        return QuotedDatagram(header, bytes(quoted[start : start + QUOTED_TRANSPORT_BYTES]))

    # Constructors for the messages a stack sends.

    @classmethod
    def echo_request(cls, identifier: int, sequence: int, data: bytes = b"") -> "IcmpMessage":
        return cls(ECHO_REQUEST, 0, identifier=identifier, sequence=sequence, payload=bytes(data))

    @classmethod
    def echo_reply_to(cls, request: "IcmpMessage") -> "IcmpMessage":
        """The reply to an echo request: same identifier, sequence and data (RFC 792)."""
        return cls(
            ECHO_REPLY, 0, identifier=request.identifier, sequence=request.sequence, payload=request.payload
        )

    @classmethod
    def destination_unreachable(
        cls, code: int, original_datagram: "bytes | bytearray | memoryview", next_hop_mtu: int = 0
    ) -> "IcmpMessage":
        """Destination unreachable; `next_hop_mtu` matters with FRAG_NEEDED (RFC 1191)."""
        return cls(DEST_UNREACH, code, next_hop_mtu=next_hop_mtu, payload=quote(original_datagram))

    @classmethod
    def time_exceeded(cls, code: int, original_datagram: "bytes | bytearray | memoryview") -> "IcmpMessage":
        return cls(TIME_EXCEEDED, code, payload=quote(original_datagram))

    @classmethod
    def parameter_problem(
        cls, pointer: int, original_datagram: "bytes | bytearray | memoryview", code: int = POINTER_INDICATES_ERROR
    ) -> "IcmpMessage":
        """Parameter problem; `pointer` is the offset of the bad octet in the original header."""
        return cls(PARAMETER_PROBLEM, code, pointer=pointer, payload=quote(original_datagram))

    @classmethod
    def redirect(
        cls, code: int, gateway: IPv4Address, original_datagram: "bytes | bytearray | memoryview"
    ) -> "IcmpMessage":
        return cls(REDIRECT, code, gateway=gateway, payload=quote(original_datagram))


def quote(original_datagram: "bytes | bytearray | memoryview") -> bytes:
    """As much of the original datagram as an error may carry (RFC 1812 4.3.2.3).

    Ethernet padding beyond the datagram's own total length is not quoted.
    """
    data = original_datagram
    if len(data) >= 4 and data[0] >> 4 == 4:
        total_length = (data[2] << 8) | data[3]
        if 20 <= total_length < len(data):
            data = data[:total_length]
    return bytes(data[:MAX_QUOTED_LENGTH])


_from_bytes = int.from_bytes
_ECHO_REPLY_TYPE_CODE = bytes((ECHO_REPLY, 0))


def echo_header(transport: "bytes | bytearray | memoryview") -> "tuple[int, int] | None":
    """(identifier, sequence) of the echo request at the start of `transport` (quoted in an ICMP
    error, or written by a program), else None (not an echo request, or shorter than its header)."""
    if len(transport) < HEADER_LENGTH or transport[0] != ECHO_REQUEST:
        return None
    rest = _HEADER.unpack_from(transport)[3]
    return rest >> 16, rest & 0xFFFF


def echo_reply_for(data: "bytes | bytearray | memoryview") -> "bytes | None":
    """The whole reply to `data` if it is an echo request with a right checksum, else None.

    The fast path of answering a ping (icmp_echo): no message objects, the
    reply is the request with type 0 and code 0 and its checksum computed over
    the unchanged rest (identifier, sequence, data), the same bytes
    `IcmpMessage.echo_reply_to(parse(data)).build()` makes. None for anything
    else, including a short or corrupt request: the caller then takes the
    general path, which counts why (InErrors, InCsumErrors).
    """
    if len(data) < HEADER_LENGTH or data[0] != ECHO_REQUEST:
        return None
    value = _from_bytes(data, "big")  # verify the request: ones_complement_sum(data) == 0xFFFF, inline
    if len(data) & 1:
        value <<= 8
    if not value or value % 0xFFFF:
        return None
    rest = data[4:]
    # The reply's type and code words are zero, so its checksum covers only the
    # rest: the same sum `build` computes from the rest-of-header and payload.
    value = _from_bytes(rest, "big")
    if len(rest) & 1:
        value <<= 8
    checksum = 0xFFFF if not value else ~((value % 0xFFFF) or 0xFFFF) & 0xFFFF
    return _ECHO_REPLY_TYPE_CODE + checksum.to_bytes(2, "big") + bytes(rest)


def echo_request_bytes(identifier: int, sequence: int, data: "bytes | bytearray | memoryview") -> bytes:
    """`IcmpMessage.echo_request(identifier, sequence, data).build()` without the message object.

    What ping sends, once per echo; the same bytes and the same `WireError`
    for an identifier or sequence out of range.
    """
    if not (0 <= identifier <= 0xFFFF and 0 <= sequence <= 0xFFFF):
        raise _error(f"identifier {identifier} or sequence {sequence} out of 0..65535")
    data = bytes(data)
    value = _from_bytes(data, "big")  # internet_checksum(data, initial), inline
    if len(data) & 1:
        value <<= 8
    value += (ECHO_REQUEST << 8) + identifier + sequence
    checksum = 0xFFFF if not value else ~((value % 0xFFFF) or 0xFFFF) & 0xFFFF
    return _HEADER.pack(ECHO_REQUEST, 0, checksum, (identifier << 16) | sequence) + data


# Module-level spellings of the constructors, for callers that prefer functions.
echo_request = IcmpMessage.echo_request
echo_reply_to = IcmpMessage.echo_reply_to
destination_unreachable = IcmpMessage.destination_unreachable
time_exceeded = IcmpMessage.time_exceeded
parameter_problem = IcmpMessage.parameter_problem
redirect = IcmpMessage.redirect
