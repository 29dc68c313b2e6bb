"""IPv4 input checks (ip_rcv): the header fast path counts exactly what the full parse would, and forwarding patches TTL and checksum."""
from __future__ import annotations

import struct

from hypothesis import given, settings
from hypothesis import strategies as st

from nodes.skbuff import PACKET_HOST, SkBuff
from nodes.stack import Stack
from nodes.sysctl import Sysctl
from nodes.wire.addresses import IPv4Address
from nodes.wire.checksum import internet_checksum
from nodes.wire.errors import WireError
from nodes.wire.ipv4 import IPPROTO_UDP, IPv4Header, IPv4View, header_checksum_ok, iter_options

LOCAL = IPv4Address("10.0.0.2")
PEER = IPv4Address("10.0.0.1")
ERROR_COUNTERS = ("InHdrErrors", "InTruncatedPkts", "InCsumErrors")


def _stack(forwarding: int = 0) -> Stack:
    stack = Stack("h", Sysctl({"net.ipv4.ip_forward": forwarding}))
    stack.add_device("eth0", "02:00:00:00:00:02")
    stack.add_address("eth0", LOCAL, 24)
    stack.add_device("eth1", "02:00:00:00:01:02")
    stack.add_address("eth1", "10.0.1.2", 24)
    stack.add_neighbour("10.0.1.9", "02:00:00:00:01:09", "eth1", 0.0)
    return stack


def _receive(stack: Stack, datagram: bytes) -> dict[str, int]:
    skb = SkBuff.from_frame(bytes(14) + datagram, dev="eth0")
    skb.pull(14)
    skb.pkt_type = PACKET_HOST
    stack.ipv4.receive(skb, 1.0)
    return stack.ipv4.counters()


def _reference_verdict(data: bytes) -> str:
    """What ip_rcv must conclude, from the full view parse (the slow path, kept as the oracle)."""
    try:
        view = IPv4View(data)
    except WireError as error:
        return "truncated" if "truncated" in error.reason else "header"
    if not header_checksum_ok(data):
        return "checksum"
    try:
        for _ in iter_options(view.options):
            pass
    except WireError:
        return "header"
    return "ok"


def _verdict(counters: dict[str, int]) -> str:
    if counters["InCsumErrors"]:
        assert counters["InHdrErrors"] == 1
        return "checksum"
    if counters["InHdrErrors"]:
        return "header"
    if counters["InTruncatedPkts"]:
        return "truncated"
    return "ok"


def _header(total_length: int, checksum: int | None = None, version_ihl: int = 0x45, ttl: int = 64,
            dst: int = LOCAL) -> bytes:
    fields = [version_ihl, 0, total_length, 7, 0, ttl, 253, 0, int(PEER), int(dst)]
    header = bytearray(struct.pack("!BBHHHBBHII", *fields))
    header[10:12] = (internet_checksum(header) if checksum is None else checksum).to_bytes(2, "big")
    return bytes(header)


def test_valid_datagram_without_options_is_delivered_and_counts_no_error():
    stack = _stack()
    stack.ipv4.add_protocol(253, lambda datagram, now: None, lambda *error: None)
    counters = _receive(stack, _header(28) + bytes(8))
    assert counters["InReceives"] == 1 and counters["InDelivers"] == 1 and counters["InOctets"] == 28
    assert all(counters[name] == 0 for name in ERROR_COUNTERS)


def test_bad_checksum_counts_in_csum_and_header_errors_once_each():
    counters = _receive(_stack(), _header(28, checksum=0x1234) + bytes(8))
    assert (counters["InCsumErrors"], counters["InHdrErrors"], counters["InDelivers"]) == (1, 1, 0)


def test_total_length_beyond_the_frame_is_a_truncated_packet():
    counters = _receive(_stack(), _header(200) + bytes(8))
    assert (counters["InTruncatedPkts"], counters["InHdrErrors"], counters["InOctets"]) == (1, 0, 0)


def test_total_length_shorter_than_the_header_is_a_header_error():
    counters = _receive(_stack(), _header(19) + bytes(8))
    assert (counters["InHdrErrors"], counters["InTruncatedPkts"]) == (1, 0)


def test_ethernet_padding_past_total_length_is_trimmed_before_delivery():
    stack = _stack()
    seen = []
    stack.ipv4.add_protocol(253, lambda datagram, now: seen.append(bytes(datagram.packet)), lambda *error: None)
    datagram = _header(24) + b"data"
    _receive(stack, datagram + bytes(22))
    assert seen == [datagram]


def test_forwarded_datagram_leaves_with_ttl_minus_one_and_a_correct_checksum():
    stack = _stack(forwarding=1)
    datagram = _header(28, dst=int(IPv4Address("10.0.1.9"))) + bytes(8)
    _receive(stack, datagram)
    (frame,) = stack.devices["eth1"].tx_drain()
    header = frame[14:34]
    assert header[8] == 63
    assert internet_checksum(header[:10] + b"\0\0" + header[12:]) == int.from_bytes(header[10:12], "big")
    assert frame[34:] == datagram[20:]
    assert stack.ipv4.counters()["ForwDatagrams"] == 1


@settings(max_examples=400, deadline=None)
@given(version_ihl=st.sampled_from([0x45, 0x45, 0x45, 0x46, 0x47, 0x44, 0x35, 0x55, 0x4F]),
       total_length=st.integers(0, 80), extra=st.binary(min_size=0, max_size=60),
       good_checksum=st.booleans())
def test_input_checks_agree_with_the_full_parse(version_ihl, total_length, extra, good_checksum):
    header = bytearray(_header(total_length, version_ihl=version_ihl))
    data = bytearray(header + extra)
    header_length = (version_ihl & 0x0F) * 4
    if 20 <= header_length <= len(data):
        data[10:12] = b"\0\0"
        checksum = internet_checksum(bytes(data[:header_length]))
        data[10:12] = (checksum if good_checksum else checksum ^ 0x0101).to_bytes(2, "big")
    data = bytes(data)
    counters = _receive(_stack(), data)
    assert _verdict(counters) == _reference_verdict(data)


def test_options_are_still_walked_and_a_bad_option_is_a_header_error():
    header = IPv4Header(PEER, LOCAL, IPPROTO_UDP, options=b"\x07\x01")  # record route with length 1: invalid
    datagram = bytearray(header.build(bytes(8)))
    counters = _receive(_stack(), bytes(datagram))
    assert counters["InHdrErrors"] == 1 and counters["InDelivers"] == 0
