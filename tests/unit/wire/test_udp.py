"""UDP codec: one fixed datagram taken apart and put together, scapy as oracle, checksum edges."""
from __future__ import annotations

import pytest
from scapy.all import IP, UDP, raw

from nodes.wire import udp
from nodes.wire.addresses import IPv4Address
from nodes.wire.checksum import internet_checksum, pseudo_header_sum
from nodes.wire.errors import WireError
from nodes.wire.udp import HEADER_LENGTH, UdpHeader, UdpView, checksum_ok

SRC = IPv4Address("192.168.1.2")
DST = IPv4Address("192.168.1.1")

# 192.168.1.2:5353 -> 192.168.1.1:53, payload b"hello"; checksum checked with scapy.
DATAGRAM = bytes.fromhex(
    "14e9"  # source port 5353
    "0035"  # destination port 53
    "000d"  # length 13
    "2390"  # checksum
    "68656c6c6f"  # b"hello"
)
HEADER = UdpHeader(src_port=5353, dst_port=53, length=13, checksum=0x2390)


def test_view_takes_fixed_datagram_apart():
    view = UdpView(DATAGRAM)
    assert (view.src_port, view.dst_port, view.length, view.checksum) == (5353, 53, 13, 0x2390)
    assert bytes(view.payload) == b"hello"


def test_build_into_puts_fixed_datagram_together_over_a5_buffer():
    buffer = bytearray(b"\xa5" * 30)
    buffer[10 + HEADER_LENGTH : 10 + HEADER_LENGTH + 5] = b"hello"
    written = UdpHeader(5353, 53).build_into(buffer, 10, 5, SRC, DST)
    assert written == HEADER_LENGTH
    assert bytes(buffer[10:23]) == DATAGRAM
    assert buffer[:10] == b"\xa5" * 10 and buffer[23:] == b"\xa5" * 7


def test_parse_fixed_datagram():
    assert UdpHeader.parse(DATAGRAM) == HEADER
    assert UdpHeader.parse(memoryview(DATAGRAM)) == HEADER
    assert HEADER.payload_length == 5


def test_build_fixed_datagram_ignores_stale_length_and_checksum():
    stale = UdpHeader(5353, 53, length=999, checksum=0x1234)
    assert stale.build(b"hello", SRC, DST) == DATAGRAM
    assert (stale.length, stale.checksum) == (999, 0x1234)  # the value itself is not mutated


def test_encode_writes_fields_verbatim():
    assert HEADER.encode() == DATAGRAM[:8]


def test_parse_allows_trailing_bytes_beyond_length():
    header = UdpHeader.parse(DATAGRAM + b"\x00" * 10)
    assert header.length == 13
    assert checksum_ok(DATAGRAM + b"\x00" * 10, SRC, DST)
    assert bytes(UdpView(DATAGRAM + b"\x00\x00").payload) == b"hello"


@pytest.mark.parametrize(
    "data",
    [
        b"",
        DATAGRAM[:7],
        DATAGRAM[:4] + b"\x00\x07" + DATAGRAM[6:],  # length below the header
        DATAGRAM[:4] + b"\x00\x0e" + DATAGRAM[6:],  # length past the data
    ],
    ids=["empty", "short", "length-below-8", "length-overruns"],
)
def test_parse_rejects_malformed_with_wire_error(data):
    with pytest.raises(WireError):
        UdpHeader.parse(data)
    assert not checksum_ok(data, SRC, DST)


def test_view_rejects_short_buffer_and_bad_length_on_payload():
    with pytest.raises(WireError):
        UdpView(b"\x00" * 7)
    view = UdpView(DATAGRAM[:4] + b"\x00\xff" + DATAGRAM[6:])
    with pytest.raises(WireError):
        view.payload


def test_checksum_ok_detects_corruption():
    assert checksum_ok(DATAGRAM, SRC, DST)
    corrupted = bytearray(DATAGRAM)
    corrupted[-1] ^= 0x01
    assert not checksum_ok(bytes(corrupted), SRC, DST)
    assert not checksum_ok(DATAGRAM, SRC, DST + 1)  # pseudo-header covered


def test_zero_checksum_means_none_and_is_accepted():
    no_checksum = DATAGRAM[:6] + b"\x00\x00" + b"garbage"[:5]
    assert checksum_ok(no_checksum, SRC, DST)


def test_no_check_sends_zero_checksum():
    datagram = UdpHeader(5353, 53).build(b"hello", SRC, DST, no_check=True)
    assert datagram[6:8] == b"\x00\x00"
    assert datagram[:6] == DATAGRAM[:6]


def _payload_summing_to_zero_checksum(src: int, dst: int) -> bytes:
    """A 2-byte payload chosen so the computed checksum is 0 (sent as 0xFFFF)."""
    header = UdpHeader(1000, 2000).build(b"\x00\x00", src, dst, no_check=True)
    # With a zero payload word the checksum is C = ~S; a payload word of C lifts
    # the sum to S + ~S = 0xFFFF, whose checksum is 0.
    partial = internet_checksum(header, pseudo_header_sum(src, dst, udp.IPPROTO_UDP, len(header)))
    return partial.to_bytes(2, "big")


def test_computed_zero_checksum_is_sent_as_ffff():
    payload = _payload_summing_to_zero_checksum(SRC, DST)
    datagram = UdpHeader(1000, 2000).build(payload, SRC, DST)
    assert datagram[6:8] == b"\xff\xff"
    assert checksum_ok(datagram, SRC, DST)
    # scapy agrees that 0xFFFF is the right field value here
    assert IP(raw(IP(src=str(SRC), dst=str(DST)) / UDP(sport=1000, dport=2000) / payload))[UDP].chksum == 0xFFFF


@pytest.mark.parametrize("payload", [b"", b"x", b"odd!!", bytes(range(256)) * 5 + b"\x7f"])
def test_checksum_matches_scapy_for_odd_and_even_payloads(payload):
    datagram = UdpHeader(4000, 5000).build(payload, SRC, DST)
    oracle = raw(IP(src=str(SRC), dst=str(DST)) / UDP(sport=4000, dport=5000) / payload)[20:]
    assert datagram == oracle


def test_scapy_datagram_parses_field_for_field():
    packet = IP(raw(IP(src="10.1.2.3", dst="10.9.8.7") / UDP(sport=68, dport=67) / (b"\x01" * 33)))
    segment = raw(packet[UDP])
    header = UdpHeader.parse(segment)
    assert (header.src_port, header.dst_port, header.length, header.checksum) == (68, 67, 41, packet[UDP].chksum)
    assert checksum_ok(segment, IPv4Address("10.1.2.3"), IPv4Address("10.9.8.7"))


def test_our_datagram_parses_in_scapy_with_its_checksum():
    src, dst = IPv4Address("172.16.0.5"), IPv4Address("172.16.9.1")
    datagram = UdpHeader(33434, 161).build(b"snmp?", src, dst)
    packet = IP(raw(IP(src=str(src), dst=str(dst), proto=17) / datagram))
    ours = packet[UDP].chksum
    del packet[UDP].chksum
    packet[UDP].len = None
    recomputed = IP(raw(packet))[UDP]
    assert (recomputed.sport, recomputed.dport, recomputed.len, recomputed.chksum) == (33434, 161, 13, ours)
    assert bytes(recomputed.payload) == b"snmp?"


def test_build_into_rejects_buffer_too_small_and_out_of_range_fields():
    with pytest.raises(WireError):
        UdpHeader(1, 2).build_into(bytearray(10), 0, 5, SRC, DST)
    with pytest.raises(WireError):
        UdpHeader(70000, 2).build(b"", SRC, DST)
    with pytest.raises(WireError):
        UdpHeader(1, 2).build_into(bytearray(70000), 0, 65535 - 7, SRC, DST)
