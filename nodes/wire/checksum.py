"""The Internet checksum: RFC 1071, with RFC 1624 incremental update.

Reading the whole buffer as one big integer and reducing it modulo 0xFFFF is
the one's-complement sum of its 16-bit words (2**16 == 1 mod 0xFFFF), which
CPython computes in C: ~3 us for 1500 bytes against ~25 us summing words.
"""
from __future__ import annotations

_from_bytes = int.from_bytes


def ones_complement_sum(data: "bytes | bytearray | memoryview", initial: int = 0) -> int:
    """Folded 16-bit one's-complement sum of `data` plus `initial` (not inverted).

    An odd trailing byte is padded with a zero byte, as RFC 1071 says.
    """
    value = _from_bytes(data, "big")
    if len(data) & 1:
        value <<= 8
    value += initial
    if not value:
        return 0
    folded = value % 0xFFFF
    # One's-complement arithmetic has two zeros; a non-zero sum is 0xFFFF, never 0.
    return folded or 0xFFFF


def internet_checksum(data: "bytes | bytearray | memoryview", initial: int = 0) -> int:
    """The checksum field value for `data` (with its checksum field zeroed)."""
    return ~ones_complement_sum(data, initial) & 0xFFFF


def verify(data: "bytes | bytearray | memoryview", initial: int = 0) -> bool:
    """True if `data`, checksum field included, sums to all ones."""
    return ones_complement_sum(data, initial) == 0xFFFF


def pseudo_header_sum(source: int, destination: int, protocol: int, length: int) -> int:
    """Partial sum of the IPv4 pseudo-header that TCP and UDP checksums cover (RFC 793 3.1)."""
    total = (source >> 16) + (source & 0xFFFF) + (destination >> 16) + (destination & 0xFFFF)
    total += protocol + length
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return total


def incremental_update(checksum: int, old_word: int, new_word: int) -> int:
    """New checksum after one 16-bit word changed: RFC 1624 eqn. 3, HC' = ~(~HC + ~m + m')."""
    total = (~checksum & 0xFFFF) + (~old_word & 0xFFFF) + new_word
    total = (total & 0xFFFF) + (total >> 16)
    total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF
