"""TCP codec: one fixed SYN taken apart and put together, option rules, scapy as oracle."""
from __future__ import annotations

import pytest
from scapy.all import IP, TCP, raw

from nodes.wire import tcp
from nodes.wire.addresses import IPv4Address
from nodes.wire.errors import WireError
from nodes.wire.tcp import (
    ACK,
    CWR,
    ECE,
    FIN,
    NOP,
    NS,
    PSH,
    RST,
    SACK_PERMITTED,
    SYN,
    URG,
    EolOption,
    MssOption,
    NopOption,
    SackOption,
    SackPermittedOption,
    TcpHeader,
    TcpView,
    TimestampOption,
    UnknownOption,
    WindowScaleOption,
    checksum_ok,
    encode_options,
    format_flags,
    parse_options,
)

SRC = IPv4Address("192.168.1.2")
DST = IPv4Address("192.168.1.1")

# A Linux-style SYN from 192.168.1.2:54321 to 192.168.1.1:80; checksum checked with scapy.
SYN_SEGMENT = bytes.fromhex(
    "d431"  # source port 54321
    "0050"  # destination port 80
    "12345678"  # sequence number
    "00000000"  # acknowledgment number
    "a002"  # data offset 10 (40 bytes), flags SYN
    "faf0"  # window 64240
    "8887"  # checksum
    "0000"  # urgent pointer
    "020405b4"  # MSS 1460
    "0402"  # SACK permitted
    "080a0102030400000000"  # timestamp value 0x01020304, echo 0
    "01"  # NOP
    "030307"  # window scale 7
)
SYN_OPTIONS = (MssOption(1460), SackPermittedOption(), TimestampOption(0x01020304, 0), NopOption(), WindowScaleOption(7))
SYN_HEADER = TcpHeader(
    src_port=54321, dst_port=80, seq=0x12345678, ack=0, flags=SYN, window=64240, checksum=0x8887, urgent=0,
    options=SYN_OPTIONS,
)


def test_view_takes_fixed_syn_apart():
    view = TcpView(SYN_SEGMENT)
    assert (view.src_port, view.dst_port, view.seq, view.ack) == (54321, 80, 0x12345678, 0)
    assert (view.data_offset, view.header_length, view.flags) == (10, 40, SYN)
    assert (view.syn, view.ack_flag, view.fin, view.rst) == (True, False, False, False)
    assert (view.window, view.checksum, view.urgent) == (64240, 0x8887, 0)
    assert view.options == SYN_OPTIONS
    assert bytes(view.payload) == b""


def test_build_into_puts_fixed_syn_together_over_a5_buffer():
    buffer = bytearray(b"\xa5" * 64)
    written = TcpHeader(54321, 80, 0x12345678, 0, SYN, 64240, options=SYN_OPTIONS).build_into(buffer, 8, 0, SRC, DST)
    assert written == 40
    assert bytes(buffer[8:48]) == SYN_SEGMENT
    assert buffer[:8] == b"\xa5" * 8 and buffer[48:] == b"\xa5" * 16


def test_parse_fixed_syn():
    header = TcpHeader.parse(SYN_SEGMENT)
    assert header == SYN_HEADER
    assert (header.data_offset, header.header_length) == (10, 40)
    assert header.syn and not header.ack_flag


def test_build_fixed_syn_computes_checksum_and_keeps_value_unchanged():
    stale = TcpHeader(54321, 80, 0x12345678, 0, SYN, 64240, checksum=0xBEEF, options=SYN_OPTIONS)
    assert stale.build(b"", SRC, DST) == SYN_SEGMENT
    assert stale.checksum == 0xBEEF
    assert SYN_HEADER.encode() == SYN_SEGMENT


def test_payload_follows_header_in_view_and_build():
    header = TcpHeader(1, 2, 3, 4, PSH | ACK, 500, options=(NOP, NOP, TimestampOption(7, 8)))
    segment = header.build(b"hello", SRC, DST)
    assert len(segment) == 32 + 5
    assert bytes(TcpView(segment).payload) == b"hello"
    assert TcpHeader.parse(segment).header_length == 32
    assert checksum_ok(segment, SRC, DST)


def test_flag_constants_and_properties():
    assert (FIN, SYN, RST, PSH, ACK, URG, ECE, CWR, NS) == (1, 2, 4, 8, 16, 32, 64, 128, 256)
    header = TcpHeader(1, 2, 0, 0, FIN | RST | PSH | URG | ECE | CWR | ACK, 0)
    assert (header.fin, header.syn, header.rst, header.psh) == (True, False, True, True)
    assert (header.ack_flag, header.urg, header.ece, header.cwr) == (True, True, True, True)
    assert format_flags(SYN | ACK) == "S." and format_flags(ACK) == "." and format_flags(0) == "none"
    assert format_flags(FIN | PSH | ACK) == "FP."


def test_reserved_bits_and_ns_survive_round_trip():
    header = TcpHeader(1, 2, 3, 4, 0xE00 | NS | ACK, 9)
    segment = header.build(b"", SRC, DST)
    assert segment[12:14] == b"\x5f\x10"
    assert TcpHeader.parse(segment).flags == 0xE00 | NS | ACK
    assert TcpView(segment).flags == 0xF10


def test_option_finds_first_option_of_a_type():
    assert SYN_HEADER.option(MssOption) == MssOption(1460)
    assert SYN_HEADER.option(WindowScaleOption).shift == 7
    assert SYN_HEADER.option(SackOption) is None
    assert TcpHeader(1, 2, 0, 0, ACK, 0).option(TimestampOption) is None


def test_aligned_timestamp_fast_path_gives_same_options_as_general_path():
    raw_options = b"\x01\x01\x08\x0a" + (0xDEADBEEF).to_bytes(4, "big") + (5).to_bytes(4, "big")
    assert parse_options(raw_options) == (NOP, NOP, TimestampOption(0xDEADBEEF, 5))
    # the same options in a 16-byte area (EOL + padding) go through the general loop
    assert parse_options(raw_options + b"\x00" * 4) == (NOP, NOP, TimestampOption(0xDEADBEEF, 5), EolOption(b"\x00\x00\x00"))


def test_aligned_timestamp_fast_path_encodes_like_general_path():
    timestamp = TimestampOption(0xFFFFFFFF, 1)
    expected = b"\x01\x01" + timestamp.encode()
    assert encode_options((NOP, NOP, timestamp)) == expected
    assert encode_options([NopOption(), NopOption(), timestamp]) == expected
    with pytest.raises(WireError):
        encode_options((NOP, NOP, TimestampOption(1 << 32, 0)))


def test_sack_blocks_parse_and_build():
    blocks = ((1000, 2000), (3000, 4000), (0xFFFFFF00, 0x10))
    header = TcpHeader(1, 2, 3, 4, ACK, 5, options=(NOP, NOP, SackOption(blocks)))
    segment = header.build(b"", SRC, DST)
    assert segment[20:24] == b"\x01\x01\x05\x1a"
    assert TcpHeader.parse(segment).option(SackOption).blocks == blocks


class TestEolAndPadding:
    def test_build_pads_with_zeros_and_parse_drops_that_padding(self):
        header = TcpHeader(1, 2, 3, 4, SYN, 5, options=(MssOption(536), WindowScaleOption(2)))
        segment = header.build(b"", SRC, DST)
        assert segment[20:28] == b"\x02\x04\x02\x18\x03\x03\x02\x00"
        assert TcpHeader.parse(segment).options == header.options

    def test_non_canonical_padding_is_kept_verbatim(self):
        options_area = b"\x02\x04\x05\xb4\x00\x00\x07\x00"  # MSS, EOL, then junk padding
        options = parse_options(options_area)
        assert options == (MssOption(1460), EolOption(b"\x00\x07\x00"))
        assert encode_options(options) == options_area

    def test_whole_word_of_padding_after_eol_is_kept(self):
        options_area = b"\x02\x04\x05\xb4\x00\x00\x00\x00"
        options = parse_options(options_area)
        assert options == (MssOption(1460), EolOption(b"\x00\x00\x00"))
        assert encode_options(options) == options_area

    def test_eol_first_means_no_options(self):
        assert parse_options(b"\x00\x02\x04\x05") == (EolOption(b"\x02\x04\x05"),)

    def test_eol_before_another_option_is_refused_on_build(self):
        with pytest.raises(WireError):
            encode_options((EolOption(), MssOption(1460)))


def test_unknown_option_kept_verbatim():
    options_area = b"\x1e\x06\xde\xad\xbe\xef\x01\x01"  # kind 30 (MPTCP), 4 bytes of data, two NOPs
    options = parse_options(options_area)
    assert options == (UnknownOption(30, b"\xde\xad\xbe\xef"), NOP, NOP)
    assert encode_options(options) == options_area


@pytest.mark.parametrize(
    "options_area",
    [
        b"\x02\x03\x05\xb4",  # MSS length 3
        b"\x02\x05\x05\xb4\x00\x01\x01\x01",  # MSS length 5
        b"\x03\x04\x07\x01",  # window scale length 4
        b"\x04\x03\x00\x01",  # SACK permitted length 3
        b"\x08\x08" + bytes(6),  # timestamp length 8
        b"\x05\x09" + bytes(10),  # SACK 2 + 7
        b"\x05\x02\x01\x01",  # SACK without blocks
        b"\x05\x2a" + bytes(40),  # SACK with 5 blocks
        b"\x1e\x01\x01\x01",  # length 1
        b"\x1e\x00\x01\x01",  # length 0
        b"\x01\x01\x01\x1e",  # kind with no room for a length byte
        b"\x1e\x08\x00\x00",  # length overruns the header
    ],
    ids=[
        "mss-3", "mss-5", "ws-4", "sackp-3", "ts-8", "sack-9", "sack-0-blocks", "sack-5-blocks",
        "length-1", "length-0", "no-length-byte", "overrun",
    ],
)
def test_malformed_options_raise_wire_error(options_area):
    with pytest.raises(WireError):
        parse_options(options_area)
    segment = bytearray(TcpHeader(1, 2, 3, 4, ACK, 5).encode() + options_area)
    segment[12] = (len(segment) // 4) << 4
    with pytest.raises(WireError):
        TcpHeader.parse(bytes(segment))


@pytest.mark.parametrize(
    "data",
    [b"", SYN_SEGMENT[:19], SYN_SEGMENT[:12] + b"\x40" + SYN_SEGMENT[13:], SYN_SEGMENT[:39]],
    ids=["empty", "short", "data-offset-4", "options-truncated"],
)
def test_malformed_header_raises_wire_error(data):
    with pytest.raises(WireError):
        TcpHeader.parse(data)


def test_view_checks_data_offset_when_read():
    with pytest.raises(WireError):
        TcpView(SYN_SEGMENT[:19])
    view = TcpView(SYN_SEGMENT[:12] + b"\x40" + SYN_SEGMENT[13:])
    assert view.src_port == 54321  # fixed fields still readable
    for accessor in ("header_length", "options", "payload"):
        with pytest.raises(WireError):
            getattr(view, accessor)
    with pytest.raises(WireError):
        TcpView(SYN_SEGMENT[:30]).payload


def test_build_refuses_more_than_40_bytes_of_options():
    too_many = (TimestampOption(1, 2), SackOption(((1, 2), (3, 4), (5, 6), (7, 8))))  # 44 bytes
    with pytest.raises(WireError):
        TcpHeader(1, 2, 3, 4, ACK, 5, options=too_many).build(b"", SRC, DST)
    # 39 bytes would pad to 40 and fit; 41 would not
    assert len(encode_options((UnknownOption(200, bytes(37)),))) == 40
    with pytest.raises(WireError):
        encode_options((UnknownOption(200, bytes(39)),))


def test_build_refuses_out_of_range_fields():
    with pytest.raises(WireError):
        TcpHeader(1, 2, 3, 4, 0x1000, 5).build(b"", SRC, DST)
    with pytest.raises(WireError):
        TcpHeader(1, 2, 1 << 32, 4, ACK, 5).build(b"", SRC, DST)
    with pytest.raises(WireError):
        TcpHeader(1, 2, 3, 4, ACK, 5, options=(MssOption(70000),)).build(b"", SRC, DST)
    with pytest.raises(WireError):
        TcpHeader(1, 2, 3, 4, ACK, 5).build_into(bytearray(30), 0, 11, SRC, DST)


@pytest.mark.parametrize("payload", [b"", b"a", b"abc", bytes(range(256)) * 5 + b"\x01"])
def test_checksum_matches_scapy_for_odd_and_even_payloads(payload):
    header = TcpHeader(1025, 443, 7, 9, PSH | ACK, 1000, options=(NOP, NOP, TimestampOption(11, 12)))
    segment = header.build(payload, SRC, DST)
    oracle = raw(
        IP(src=str(SRC), dst=str(DST))
        / TCP(sport=1025, dport=443, seq=7, ack=9, flags="PA", window=1000, options=[("NOP", None), ("NOP", None), ("Timestamp", (11, 12))])
        / payload
    )[20:]
    assert segment == oracle
    assert checksum_ok(segment, SRC, DST)
    corrupted = bytearray(segment)
    corrupted[-1] ^= 0x40
    assert not checksum_ok(bytes(corrupted), SRC, DST)


def test_scapy_segment_parses_field_for_field():
    packet = IP(
        raw(
            IP(src="10.0.0.1", dst="10.0.0.2")
            / TCP(
                sport=40000, dport=22, seq=0xFFFFFFFF, ack=0x80000000, flags="SEC", window=29200, urgptr=0,
                options=[("MSS", 1460), ("SAckOK", b""), ("Timestamp", (1, 2)), ("NOP", None), ("WScale", 7)],
            )
            / b"xyz"
        )
    )
    segment = raw(packet[TCP])
    header = TcpHeader.parse(segment)
    assert (header.src_port, header.dst_port, header.seq, header.ack) == (40000, 22, 0xFFFFFFFF, 0x80000000)
    assert header.flags == SYN | ECE | CWR and header.window == 29200
    assert header.checksum == packet[TCP].chksum and header.urgent == 0
    assert header.options == (MssOption(1460), SACK_PERMITTED, TimestampOption(1, 2), NOP, WindowScaleOption(7))
    assert header.header_length == packet[TCP].dataofs * 4 == 40
    assert segment[header.header_length :] == b"xyz"
    assert checksum_ok(segment, IPv4Address("10.0.0.1"), IPv4Address("10.0.0.2"))


def test_scapy_sack_segment_parses():
    segment = raw(
        TCP(sport=1, dport=2, flags="A", options=[("NOP", None), ("NOP", None), ("SAck", (100, 200, 300, 400))])
    )
    assert TcpHeader.parse(segment).option(SackOption) == SackOption(((100, 200), (300, 400)))


def test_our_segment_parses_in_scapy_with_its_checksum():
    src, dst = IPv4Address("172.16.0.5"), IPv4Address("172.16.9.1")
    header = TcpHeader(
        5000, 80, 123456789, 987654321, SYN | ACK, 65535,
        options=(MssOption(1400), NOP, WindowScaleOption(14), SACK_PERMITTED, TimestampOption(4, 5), SackOption(((9, 10),))),
    )
    segment = header.build(b"data!", src, dst)
    packet = IP(raw(IP(src=str(src), dst=str(dst), proto=6) / segment))
    ours = packet[TCP].chksum
    del packet[TCP].chksum
    recomputed = IP(raw(packet))[TCP]
    assert recomputed.chksum == ours
    assert (recomputed.sport, recomputed.dport, recomputed.seq, recomputed.ack) == (5000, 80, 123456789, 987654321)
    assert recomputed.flags == "SA" and recomputed.window == 65535 and recomputed.dataofs * 4 == header.header_length
    assert recomputed.options == [
        ("MSS", 1400), ("NOP", None), ("WScale", 14), ("SAckOK", b""), ("Timestamp", (4, 5)), ("SAck", (9, 10)),
        ("EOL", None),
    ]
    assert bytes(recomputed.payload) == b"data!"


def test_module_constants():
    assert tcp.IPPROTO_TCP == 6 and tcp.HEADER_LENGTH == 20 and tcp.MAX_OPTIONS_LENGTH == 40
