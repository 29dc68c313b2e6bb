"""IPv4 codec (RFC 791 3.1, RFC 1122 3.2.1): fixed datagrams both ways, checks, TTL, options, scapy."""
from __future__ import annotations

import dataclasses

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st
import scapy.all  # noqa: F401  (every layer bound, as when other test modules loaded it first)
from scapy.layers.inet import IP, IPOption_NOP, IPOption_RR
from scapy.packet import Raw

from nodes.wire.addresses import IPv4Address
from nodes.wire.checksum import internet_checksum
from nodes.wire.errors import WireError
from nodes.wire.ipv4 import (
    IPOPT_NOOP,
    IPOPT_RR,
    IPPROTO_ICMP,
    IPPROTO_TCP,
    IPPROTO_UDP,
    IPv4Header,
    IPv4View,
    decrement_ttl,
    header_checksum_ok,
    is_fragment,
    iter_options,
    payload,
)

from .oracles import FILL, filled, ipv4_headers, well_formed_options

# The worked header-checksum example on Wikipedia's IPv4 page: UDP, DF, TTL 64,
# 192.168.0.1 -> 192.168.0.199, total length 115, checksum 0xb861.
HEADER = bytes.fromhex("4500" "0073" "0000" "4000" "4011" "b861" "c0a80001" "c0a800c7")
BODY = bytes(range(95))
DATAGRAM = HEADER + BODY
SRC = IPv4Address("192.168.0.1")
DST = IPv4Address("192.168.0.199")
FIXED = IPv4Header(SRC, DST, IPPROTO_UDP, ttl=64, dont_fragment=True, total_length=115, checksum=0xB861)

# Built by scapy: IHL 7 with a Record Route option and a NOP, id 1, DF and the
# reserved bit, fragment offset 5 units (40 bytes), protocol 0, payload "hi".
WITH_OPTIONS = bytes.fromhex("4700001e0001c005400099cf0a0000010a000002" "0707040000000001" "6869")


def test_protocol_numbers():
    assert (IPPROTO_ICMP, IPPROTO_TCP, IPPROTO_UDP) == (1, 6, 17)


# --- the four tests on the fixed datagram -------------------------------------------------


def test_view_takes_apart_fixed_datagram():
    view = IPv4View(memoryview(DATAGRAM + bytes(7)))  # Ethernet padding after the datagram
    assert view.src == SRC and isinstance(view.src, IPv4Address)
    assert view.dst == DST
    assert view.protocol == IPPROTO_UDP
    assert view.ttl == 64
    assert view.tos == 0
    assert view.identification == 0
    assert view.dont_fragment and not view.more_fragments
    assert view.fragment_offset == 0 and not view.is_fragment
    assert view.header_length == 20
    assert view.total_length == 115
    assert view.checksum_ok
    assert view.options == b""
    assert bytes(view.payload) == BODY
    assert view.header() == FIXED


def test_build_into_puts_fixed_header_together_in_front_of_payload():
    buffer = filled(4 + len(DATAGRAM))
    buffer[24:] = BODY
    assert FIXED.build_into(buffer, 4, len(BODY)) == 20
    assert bytes(buffer[4:]) == DATAGRAM
    assert buffer[:4] == bytes([FILL]) * 4


def test_build_into_ignores_stale_length_and_checksum_fields():
    stale = dataclasses.replace(FIXED, total_length=9999, checksum=0x1234)
    buffer = filled(20)
    stale.build_into(buffer, 0, len(BODY))
    assert bytes(buffer) == HEADER


def test_parse_fixed_datagram():
    assert IPv4Header.parse(DATAGRAM, verify_checksum=True) == FIXED
    assert IPv4Header.parse(bytearray(DATAGRAM + bytes(10))) == FIXED


def test_build_fixed_datagram():
    assert FIXED.build(BODY) == DATAGRAM
    assert dataclasses.replace(FIXED, total_length=0, checksum=0).build(BODY) == DATAGRAM


def test_parse_datagram_with_options_flags_and_offset():
    header = IPv4Header.parse(memoryview(WITH_OPTIONS), verify_checksum=True)
    assert header == IPv4Header(
        IPv4Address("10.0.0.1"),
        IPv4Address("10.0.0.2"),
        0,
        ttl=64,
        identification=1,
        dont_fragment=True,
        more_fragments=False,
        fragment_offset=40,
        tos=0,
        total_length=30,
        checksum=0x99CF,
        options=bytes.fromhex("0707040000000001"),
        reserved_flag=True,
    )
    assert header.header_length == 28
    assert header.payload_length == 2
    assert header.is_fragment
    assert header.build(b"hi") == WITH_OPTIONS


def test_view_over_datagram_with_options():
    view = IPv4View(WITH_OPTIONS)
    assert view.header_length == 28
    assert view.options == bytes.fromhex("0707040000000001")
    assert view.fragment_offset == 40 and view.is_fragment
    assert bytes(view.payload) == b"hi"


# --- what parse rejects -------------------------------------------------------------------


def _with(data: bytes, index: int, value: bytes) -> bytes:
    return data[:index] + value + data[index + len(value) :]


MALFORMED = {
    "shorter-than-header": DATAGRAM[:19],
    "version-6": _with(DATAGRAM, 0, b"\x65"),
    "ihl-4": _with(DATAGRAM, 0, b"\x44"),
    "ihl-beyond-data": _with(HEADER, 0, b"\x46"),
    "total-length-below-header": _with(DATAGRAM, 2, b"\x00\x13"),
    "truncated": DATAGRAM[:114],
    "options-total-length-below-header": _with(WITH_OPTIONS, 2, b"\x00\x18"),
}


@pytest.mark.parametrize("data", MALFORMED.values(), ids=MALFORMED.keys())
def test_parse_and_view_reject_malformed_datagrams(data):
    with pytest.raises(WireError):
        IPv4Header.parse(data)
    with pytest.raises(WireError):
        IPv4View(data)


def test_bad_checksum_raises_only_when_verifying():
    corrupt = _with(DATAGRAM, 10, b"\xb8\x62")
    assert IPv4Header.parse(corrupt).checksum == 0xB862
    with pytest.raises(WireError):
        IPv4Header.parse(corrupt, verify_checksum=True)
    assert not IPv4View(corrupt).checksum_ok


def test_header_checksum_ok_never_raises():
    assert header_checksum_ok(DATAGRAM)
    assert header_checksum_ok(WITH_OPTIONS)
    assert not header_checksum_ok(_with(DATAGRAM, 12, b"\xc0\xa8\x00\x02"))
    assert not header_checksum_ok(DATAGRAM[:19])
    assert not header_checksum_ok(_with(HEADER, 0, b"\x4f"))  # IHL past the data
    assert not header_checksum_ok(_with(HEADER, 0, b"\x43"))  # IHL below 5


def test_parse_quoted_accepts_a_datagram_cut_short():
    quoted = DATAGRAM[:28]
    with pytest.raises(WireError):
        IPv4Header.parse(quoted)
    assert IPv4Header.parse_quoted(quoted) == FIXED
    with pytest.raises(WireError):
        IPv4Header.parse_quoted(quoted[:19])


# --- build --------------------------------------------------------------------------------


def test_build_pads_unaligned_options_with_end_of_option_list():
    header = IPv4Header(SRC, DST, IPPROTO_TCP, options=b"\x01\x01\x01")
    assert header.header_length == 24
    datagram = header.build(b"x")
    assert datagram[0] == 0x46
    assert datagram[20:24] == b"\x01\x01\x01\x00"
    assert IPv4Header.parse(datagram, verify_checksum=True).options == b"\x01\x01\x01\x00"


@pytest.mark.parametrize(
    "changes",
    [
        {"fragment_offset": 12},  # not a multiple of 8
        {"fragment_offset": 65536},
        {"fragment_offset": -8},
        {"options": bytes(44)},
        {"ttl": 256},
        {"protocol": -1},
        {"identification": 1 << 16},
        {"src": "10.0.0.1"},
    ],
    ids=lambda changes: next(iter(changes)),
)
def test_build_rejects_out_of_range_fields(changes):
    header = dataclasses.replace(FIXED, **changes)
    with pytest.raises(WireError):
        header.build(b"")
    with pytest.raises(WireError):
        header.build_into(bytearray(64), 0, 0)


def test_build_rejects_total_length_over_65535():
    with pytest.raises(WireError):
        FIXED.build(bytes(65516))
    with pytest.raises(WireError):
        FIXED.build_into(bytearray(20), 0, 65516)
    assert len(FIXED.build(bytes(65515))) == 65535


def test_checksum_zero_case_is_written_as_zero_not_ffff():
    # Fields chosen so the header words sum to 0xFFFF: the checksum field must be 0.
    header = IPv4Header(IPv4Address(0), IPv4Address(0xFFFF - 0x4500 - 20 - 0x0001), 1, ttl=0)
    datagram = header.build()
    assert datagram[10:12] == b"\x00\x00"
    buffer = filled(20)
    header.build_into(buffer, 0, 0)
    assert bytes(buffer) == datagram
    assert header_checksum_ok(datagram)
    assert internet_checksum(datagram[:10] + datagram[12:]) == 0


# --- TTL decrement ------------------------------------------------------------------------


def test_decrement_ttl_in_place_behind_an_ethernet_header():
    frame = bytearray(14) + bytearray(DATAGRAM)
    assert decrement_ttl(frame, 14) == 63
    assert frame[14 + 8] == 63
    assert bytes(frame[14:]) == dataclasses.replace(FIXED, ttl=63).build(BODY)


def test_decrement_ttl_refuses_ttl_zero_and_short_buffers():
    zero = bytearray(IPv4Header(SRC, DST, IPPROTO_UDP, ttl=0).build())
    with pytest.raises(WireError):
        decrement_ttl(zero)
    with pytest.raises(WireError):
        decrement_ttl(bytearray(DATAGRAM[:19]))
    with pytest.raises(WireError):
        decrement_ttl(bytearray(DATAGRAM), len(DATAGRAM) - 19)


def test_decrement_ttl_keeps_a_wrong_checksum_wrong():
    corrupt = bytearray(_with(DATAGRAM, 10, b"\x00\x01"))
    decrement_ttl(corrupt)
    assert not header_checksum_ok(corrupt)


@settings(max_examples=300, deadline=None)
@given(ipv4_headers(), st.integers(0, 4))
def test_decrement_ttl_equals_full_recompute(header, offset):
    header.ttl = max(header.ttl, 1)
    buffer = bytearray(offset) + bytearray(header.build(b"data"))
    assert decrement_ttl(buffer, offset) == header.ttl - 1
    header.ttl -= 1
    assert bytes(buffer[offset:]) == header.build(b"data")


# --- helpers ------------------------------------------------------------------------------


def test_is_fragment_and_payload_helpers():
    assert not is_fragment(DATAGRAM)
    assert is_fragment(WITH_OPTIONS)
    assert is_fragment(dataclasses.replace(FIXED, more_fragments=True).build(b"12345678"))
    assert dataclasses.replace(FIXED, more_fragments=True).is_fragment
    assert not FIXED.is_fragment
    assert bytes(payload(DATAGRAM + b"\x00\x00")) == BODY
    with pytest.raises(WireError):
        is_fragment(DATAGRAM[:7])
    with pytest.raises(WireError):
        payload(DATAGRAM[:100])


def test_iter_options_walks_nop_and_tlv_and_stops_at_end_of_list():
    options = bytes.fromhex("0707040a000001" "01" "00" "ffff")
    assert list(iter_options(options)) == [(IPOPT_RR, bytes.fromhex("040a000001")), (IPOPT_NOOP, b"")]


@pytest.mark.parametrize(
    "options",
    [bytes.fromhex("07"), bytes.fromhex("0701"), bytes.fromhex("0700"), bytes.fromhex("0108ffffff")],
    ids=["no-length-byte", "length-1", "length-0", "overrun"],
)
def test_iter_options_rejects_bad_lengths(options):
    with pytest.raises(WireError):
        list(iter_options(options))


@settings(max_examples=100, deadline=None)
@given(well_formed_options())
def test_iter_options_yields_the_items_options_were_built_from(options):
    raw, items = options
    assert list(iter_options(raw + bytes(-len(raw) % 4))) == items


# --- scapy as oracle ----------------------------------------------------------------------


class IPHeaderOnly(IP):
    """scapy's IP with the body kept as raw bytes: an upper layer may rewrite the header
    it sits in (scapy's IGMP, protocol 2, adds a Router Alert option to its IP packet)."""

    def guess_payload_class(self, payload: bytes) -> type:
        return Raw


@settings(max_examples=50, deadline=None)
@given(
    ipv4_headers(options=False),
    st.sampled_from([[], [IPOption_RR(routers=["10.1.2.3", "10.4.5.6"]), IPOption_NOP()]]),
    st.binary(max_size=40),
)
def test_scapy_built_datagram_parses_field_by_field(fields, options, body):
    flags = (("DF",) if fields.dont_fragment else ()) + (("MF",) if fields.more_fragments else ())
    flags += ("evil",) if fields.reserved_flag else ()
    theirs = IP(
        src=str(fields.src),
        dst=str(fields.dst),
        proto=fields.protocol,
        ttl=fields.ttl,
        id=fields.identification,
        flags="+".join(flags),
        frag=fields.fragment_offset // 8,
        tos=fields.tos,
        options=options,
    ) / body
    data = bytes(theirs)
    ours = IPv4Header.parse(data, verify_checksum=True)
    again = IPHeaderOnly(data)
    assert ours.src == fields.src and ours.dst == fields.dst
    assert ours.protocol == fields.protocol
    assert ours.ttl == fields.ttl
    assert ours.identification == fields.identification
    assert ours.dont_fragment == fields.dont_fragment
    assert ours.more_fragments == fields.more_fragments
    assert ours.reserved_flag == fields.reserved_flag
    assert ours.fragment_offset == fields.fragment_offset
    assert ours.tos == fields.tos
    assert ours.total_length == again.len == len(data)
    assert ours.checksum == again.chksum
    assert ours.header_length == again.ihl * 4
    assert ours.options == data[20 : again.ihl * 4]
    assert bytes(IPv4View(data).payload) == body


@settings(max_examples=50, deadline=None)
@given(ipv4_headers(options=False), well_formed_options(), st.binary(max_size=40))
@example(IPv4Header(src=IPv4Address(0), dst=IPv4Address(0), protocol=2, ttl=0), (b"", []), bytes(8))  # IGMP
def test_scapy_parses_what_we_build_and_agrees_on_the_checksum(header, options, body):
    header.options = options[0]
    ours = header.build(body)
    theirs = IPHeaderOnly(ours)
    assert theirs.version == 4
    assert theirs.src == str(header.src) and theirs.dst == str(header.dst)
    assert theirs.proto == header.protocol
    assert theirs.ttl == header.ttl
    assert theirs.id == header.identification
    assert theirs.frag * 8 == header.fragment_offset
    assert theirs.flags.DF == header.dont_fragment
    assert theirs.flags.MF == header.more_fragments
    assert theirs.flags.evil == header.reserved_flag
    assert theirs.tos == header.tos
    assert theirs.len == len(ours)
    assert theirs.ihl * 4 == header.header_length
    recomputed = theirs.copy()
    del recomputed.chksum  # scapy fills in its own checksum on build
    assert bytes(recomputed) == ours
