"""MAC and IPv4 address types: cheap on the hot path, readable when printed.

`MacAddress` is a 6-byte `bytes` and `IPv4Address` an `int`, so they hash and
compare like the raw values a switch or a FIB keys on, yet print as
``02:00:00:00:00:01`` and ``10.0.0.1`` and parse back from those strings.
"""
from __future__ import annotations

from .errors import WireError

_HEX_DIGITS = frozenset("0123456789abcdefABCDEF")
_bytes_new = bytes.__new__
_int_new = int.__new__


class MacAddress(bytes):
    """An IEEE 802 MAC-48 address."""

    __slots__ = ()

    def __new__(cls, value: "str | bytes | bytearray | memoryview | int") -> "MacAddress":
        if isinstance(value, MacAddress):
            return value
        if isinstance(value, str):
            text = value.strip().replace("-", ":")
            parts = text.split(":")
            # int(p, 16) alone would also take "+1", " 1" and "0_1".
            if len(parts) != 6 or not all(1 <= len(p) <= 2 and _HEX_DIGITS.issuperset(p) for p in parts):
                raise WireError("mac", f"not a MAC address: {value!r}")
            try:
                return _bytes_new(cls, bytes(int(p, 16) for p in parts))
            except ValueError:
                raise WireError("mac", f"not a MAC address: {value!r}") from None
        if isinstance(value, int):
            if not 0 <= value < 1 << 48:
                raise WireError("mac", f"MAC address out of range: {value}")
            return _bytes_new(cls, value.to_bytes(6, "big"))
        raw = _bytes_new(cls, value)
        if len(raw) != 6:
            raise WireError("mac", f"a MAC address is 6 bytes, got {len(raw)}")
        return raw

    @classmethod
    def from_wire(cls, raw: "bytes | memoryview") -> "MacAddress":
        """Wrap 6 bytes already known to be the right length (no checks: hot path)."""
        return _bytes_new(cls, raw)

    def __str__(self) -> str:
        return self.hex(":")

    def __repr__(self) -> str:
        return f"MacAddress('{self.hex(':')}')"

    @property
    def is_broadcast(self) -> bool:
        return self == BROADCAST_MAC

    @property
    def is_multicast(self) -> bool:
        """Group address (I/G bit set); includes broadcast."""
        return bool(self[0] & 0x01)

    @property
    def is_unicast(self) -> bool:
        return not self[0] & 0x01

    @property
    def is_locally_administered(self) -> bool:
        return bool(self[0] & 0x02)


BROADCAST_MAC = _bytes_new(MacAddress, b"\xff" * 6)
ZERO_MAC = _bytes_new(MacAddress, b"\x00" * 6)


class IPv4Address(int):
    """An IPv4 address held as its 32-bit value."""

    __slots__ = ()

    def __new__(cls, value: "str | bytes | bytearray | memoryview | int") -> "IPv4Address":
        if isinstance(value, IPv4Address):
            return value
        if isinstance(value, str):
            parts = value.strip().split(".")
            if len(parts) != 4:
                raise WireError("ipv4", f"not an IPv4 address: {value!r}")
            number = 0
            for part in parts:
                # isascii: str.isdigit() is also true for "²" and "١", which int() rejects or misreads.
                if not part.isascii() or not part.isdigit() or len(part) > 3 or (len(part) > 1 and part[0] == "0"):
                    raise WireError("ipv4", f"not an IPv4 address: {value!r}")
                octet = int(part)
                if octet > 255:
                    raise WireError("ipv4", f"not an IPv4 address: {value!r}")
                number = (number << 8) | octet
            return _int_new(cls, number)
        if isinstance(value, int):
            if not 0 <= value <= 0xFFFFFFFF:
                raise WireError("ipv4", f"IPv4 address out of range: {value}")
            return _int_new(cls, value)
        raw = bytes(value)
        if len(raw) != 4:
            raise WireError("ipv4", f"an IPv4 address is 4 bytes, got {len(raw)}")
        return _int_new(cls, int.from_bytes(raw, "big"))

    @classmethod
    def from_wire(cls, value: int) -> "IPv4Address":
        """Wrap a 32-bit value already unpacked from a header (no checks: hot path)."""
        return _int_new(cls, value)

    def __str__(self) -> str:
        v = int(self)
        return f"{v >> 24}.{(v >> 16) & 255}.{(v >> 8) & 255}.{v & 255}"

    def __repr__(self) -> str:
        return f"IPv4Address('{self}')"

    def __format__(self, spec: str) -> str:
        return format(str(self), spec) if not spec or spec[-1] not in "xXdbon" else int.__format__(self, spec)

    @property
    def packed(self) -> bytes:
        return int(self).to_bytes(4, "big")

    @property
    def is_unspecified(self) -> bool:
        return self == 0

    @property
    def is_loopback(self) -> bool:
        return self >> 24 == 127

    @property
    def is_multicast(self) -> bool:
        return self >> 28 == 0xE

    @property
    def is_limited_broadcast(self) -> bool:
        return self == 0xFFFFFFFF


def prefix_mask(prefix_length: int) -> int:
    """The netmask of a prefix length as a 32-bit integer (24 -> 0xFFFFFF00)."""
    if not 0 <= prefix_length <= 32:
        raise WireError("ipv4", f"prefix length out of range: {prefix_length}")
    return (0xFFFFFFFF << (32 - prefix_length)) & 0xFFFFFFFF


def parse_cidr(text: str) -> tuple[IPv4Address, int]:
    """Parse ``10.0.0.1/24`` into (address, prefix length); no prefix means /32."""
    address, slash, prefix = text.strip().partition("/")
    if not slash:
        return IPv4Address(address), 32
    if not prefix.isascii() or not prefix.isdigit():
        raise WireError("ipv4", f"not a CIDR prefix: {text!r}")
    length = int(prefix)
    prefix_mask(length)
    return IPv4Address(address), length
