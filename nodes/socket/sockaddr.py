"""Socket addresses: `struct sockaddr_in`/`sockaddr_in6` (raw bytes of a trapped call) and the
stdlib's tuples, both decoded to a `SockAddr` (`parse_sockaddr`), and back (`pack_sockaddr`).

Imports constants only."""
from __future__ import annotations

import errno
import ipaddress
import struct
from dataclasses import dataclass

from ..wire.addresses import IPv4Address
from ..wire.errors import WireError
from .constants import AF_INET, AF_INET6, AF_UNSPEC, _MAPPED_PREFIX, _error

_SOCKADDR_IN = struct.Struct("=H2s4s8x")  # sa_family (host order), port and address (network order)
_SOCKADDR_IN6 = struct.Struct("=H2s4s16sI")


# ------------------------------------------------------------------------------ addresses

@dataclass(frozen=True, slots=True)
class SockAddr:
    """A decoded socket address: `family`, the IPv4 address it means (None: a native IPv6
    address, which this node cannot reach), the port, and whether it was IPv6's `::`."""

    family: int
    address: int | None
    port: int
    v6_any: bool = False


def parse_sockaddr(raw: "bytes | tuple | None", family: int, *, minimum: bool = True) -> SockAddr:
    """A raw `struct sockaddr` (trapped call) or a stdlib tuple (in-process API) as a SockAddr.

    Raw bytes shorter than the family's sockaddr raise EINVAL (inet_bind,
    udp_sendmsg, ip4_datagram_connect, inet6_bind: SIN6_LEN_RFC2133)."""
    if isinstance(raw, (bytes, bytearray, memoryview)):
        raw = bytes(raw)
        if len(raw) < 2:
            raise _error(errno.EINVAL)
        given = int.from_bytes(raw[:2], "little")
        if given == AF_INET6:
            if len(raw) < 24:
                raise _error(errno.EINVAL)
            port = int.from_bytes(raw[2:4], "big")
            return _v6(raw[8:24], port)
        if len(raw) < 16 and minimum:
            raise _error(errno.EINVAL)
        raw = raw.ljust(16, b"\0")
        return SockAddr(given, int.from_bytes(raw[4:8], "big"), int.from_bytes(raw[2:4], "big"))
    if raw is None:
        raise _error(errno.EINVAL)
    if hasattr(raw, "family") and hasattr(raw, "host"):
        # the syscall front end's decoded sockaddr (family, host, port, flowinfo, scope_id, raw):
        # its own family decides, as the bytes it came from would
        if getattr(raw, "raw", b""):
            return parse_sockaddr(raw.raw, family)
        if raw.family not in (AF_INET, AF_INET6):
            return SockAddr(raw.family, 0, raw.port)
        return parse_sockaddr((raw.host, raw.port), raw.family)
    host, port = raw[0], raw[1]
    if not isinstance(port, int) or not 0 <= port <= 0xFFFF:
        raise OverflowError("port must be 0-65535.")
    if family == AF_INET6:
        try:
            packed = ipaddress.IPv6Address(host or "::").packed
        except ValueError:
            raise _error(errno.EINVAL) from None  # getaddrinfo would have refused it: gaierror in the stdlib
        return _v6(packed, port)
    if host == "<broadcast>":
        return SockAddr(AF_INET, 0xFFFFFFFF, port)  # the stdlib's INADDR_BROADCAST spelling
    try:
        return SockAddr(AF_INET, int(IPv4Address(host or "0.0.0.0")), port)
    except WireError:
        raise _error(errno.EINVAL) from None


def is_unspec(raw: "bytes | tuple | None") -> bool:
    """A raw sockaddr whose family is AF_UNSPEC: connect() to it dissolves the association."""
    return isinstance(raw, (bytes, bytearray)) and len(raw) >= 2 and int.from_bytes(raw[:2], "little") == AF_UNSPEC


def _v6(packed: bytes, port: int) -> SockAddr:
    if packed == bytes(16):
        return SockAddr(AF_INET6, 0, port, v6_any=True)
    if packed[:12] == _MAPPED_PREFIX:
        return SockAddr(AF_INET6, int.from_bytes(packed[12:], "big"), port)
    return SockAddr(AF_INET6, None, port)


def pack_sockaddr(address: tuple, family: int) -> bytes:
    """The `struct sockaddr_in`/`sockaddr_in6` bytes for a stdlib address tuple (what a trapped call writes back)."""
    if family == AF_INET6:
        packed = ipaddress.IPv6Address(address[0]).packed
        return _SOCKADDR_IN6.pack(AF_INET6, address[1].to_bytes(2, "big"), b"\0\0\0\0", packed, 0)
    return _SOCKADDR_IN.pack(AF_INET, address[1].to_bytes(2, "big"), int(IPv4Address(address[0])).to_bytes(4, "big"))


def _host(family: int, address: int, v6_any: bool = False) -> str:
    if family == AF_INET6:
        return "::" if v6_any or (not address and v6_any) else f"::ffff:{IPv4Address.from_wire(address)}"
    return str(IPv4Address.from_wire(address))
