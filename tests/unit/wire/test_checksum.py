"""The Internet checksum (RFC 1071) and its incremental update (RFC 1624)."""
from __future__ import annotations

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st
from scapy.utils import checksum as scapy_checksum

from nodes.wire.checksum import (
    incremental_update,
    internet_checksum,
    ones_complement_sum,
    pseudo_header_sum,
    verify,
)

# RFC 1071 section 3, "Numerical Examples": bytes 00 01 f2 03 f4 f5 f6 f7 sum to ddf2.
RFC1071_DATA = bytes.fromhex("0001f203f4f5f6f7")


def reference_sum(data: bytes, initial: int = 0) -> int:
    """Word-by-word end-around-carry sum, the way RFC 1071 describes it (slow, obviously right)."""
    if len(data) % 2:
        data += b"\x00"
    total = initial
    for index in range(0, len(data), 2):
        total += (data[index] << 8) | data[index + 1]
        total = (total & 0xFFFF) + (total >> 16)
    return total


def test_rfc1071_example_sum_and_checksum():
    assert ones_complement_sum(RFC1071_DATA) == 0xDDF2
    assert internet_checksum(RFC1071_DATA) == 0x220D


def test_rfc1071_example_verifies_once_checksum_is_appended():
    assert verify(RFC1071_DATA + b"\x22\x0d")
    assert not verify(RFC1071_DATA + b"\x22\x0e")


def test_checksum_written_into_a_header_makes_it_verify():
    header = bytearray(bytes.fromhex("45000073000040004011" "0000" "c0a80001c0a800c7"))
    value = internet_checksum(header)
    assert value == 0xB861  # the Wikipedia IPv4 example
    header[10:12] = value.to_bytes(2, "big")
    assert verify(header)
    assert verify(memoryview(header)) and verify(bytes(header))


def test_odd_length_pads_a_zero_byte_at_the_end():
    assert ones_complement_sum(b"\x01") == 0x0100
    assert ones_complement_sum(RFC1071_DATA[:3]) == 0x0001 + 0xF200
    assert internet_checksum(RFC1071_DATA[:7]) == internet_checksum(RFC1071_DATA[:7] + b"\x00")


def test_all_zero_data_sums_to_zero_and_never_verifies():
    assert ones_complement_sum(bytes(20)) == 0
    assert ones_complement_sum(b"") == 0
    assert internet_checksum(bytes(20)) == 0xFFFF
    assert not verify(bytes(20))
    assert verify(bytes(18) + b"\xff\xff")


def test_nonzero_sum_is_ffff_never_zero():
    # 0x8000 + 0x7fff = 0xffff: one's-complement "negative zero", whose checksum is 0.
    assert ones_complement_sum(b"\x80\x00\x7f\xff") == 0xFFFF
    assert ones_complement_sum(b"\xff\xff\xff\xff") == 0xFFFF
    assert internet_checksum(b"\x80\x00\x7f\xff") == 0


def test_initial_value_is_added_to_the_sum():
    assert ones_complement_sum(b"\x00\x01", initial=0xFFFF) == 0x0001
    assert internet_checksum(RFC1071_DATA[4:], initial=ones_complement_sum(RFC1071_DATA[:4])) == 0x220D


def test_incremental_update_rfc1624_example():
    # RFC 1624 section 4: HC = 0xdd2f, a word changes from 0x5555 to 0x3285, HC' = 0x0000.
    assert incremental_update(0xDD2F, 0x5555, 0x3285) == 0x0000


def test_incremental_update_to_an_all_zero_message_gives_negative_zero():
    # Eqn. 3 can only yield 0x0000 here, where a recompute gives 0xffff. This cannot
    # happen for IPv4 headers (version 4) nor pseudo-header checksums (protocol != 0).
    old = b"\x00\x05"
    assert incremental_update(internet_checksum(old), 0x0005, 0x0000) == 0x0000
    assert internet_checksum(b"\x00\x00") == 0xFFFF


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=200), st.integers(0, 0xFFFF))
def test_fast_sum_equals_word_by_word_reference(data, initial):
    assert ones_complement_sum(data, initial) == reference_sum(data, initial)


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=200))
def test_checksum_agrees_with_scapy(data):
    assert internet_checksum(data) == scapy_checksum(data)


@settings(max_examples=300, deadline=None)
@given(st.binary(min_size=4, max_size=64).map(lambda b: b[: len(b) // 2 * 2]), st.data())
def test_incremental_update_equals_recompute(data, draw):
    words = len(data) // 2
    position = draw.draw(st.integers(1, words - 1))  # word 0 holds the checksum
    new_word = draw.draw(st.integers(0, 0xFFFF))
    message = bytearray(data)
    message[0:2] = b"\x00\x00"
    old_checksum = internet_checksum(message)
    old_word = int.from_bytes(message[2 * position : 2 * position + 2], "big")
    message[2 * position : 2 * position + 2] = new_word.to_bytes(2, "big")
    assume(any(message))  # the documented negative-zero case above
    assert incremental_update(old_checksum, old_word, new_word) == internet_checksum(message)


@settings(max_examples=100, deadline=None)
@given(st.integers(0, 0xFFFFFFFF), st.integers(0, 0xFFFFFFFF), st.integers(0, 255), st.integers(0, 0xFFFF))
def test_pseudo_header_sum_equals_byte_sum(source, destination, protocol, length):
    pseudo = source.to_bytes(4, "big") + destination.to_bytes(4, "big") + bytes([0, protocol]) + length.to_bytes(2, "big")
    assert pseudo_header_sum(source, destination, protocol, length) == ones_complement_sum(pseudo)


@pytest.mark.parametrize("size", [1499, 1500])
def test_checksum_of_a_full_frame_matches_reference(size):
    data = bytes((i * 7 + 3) & 0xFF for i in range(size))
    assert internet_checksum(data) == ~reference_sum(data) & 0xFFFF
