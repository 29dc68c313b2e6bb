"""Ethernet II codec: one fixed frame taken apart and put together, plus scapy as oracle."""
from __future__ import annotations

import pytest
from hypothesis import given, settings
from scapy.layers.l2 import Dot1Q, Ether

from nodes.wire.addresses import MacAddress
from nodes.wire.errors import WireError
from nodes.wire.ethernet import (
    ETH_P_ARP,
    ETH_P_IP,
    HEADER_LENGTH,
    MIN_FRAME_LENGTH,
    VLAN_HEADER_LENGTH,
    EthernetHeader,
    EthernetView,
    VlanTag,
    pad,
)

from .oracles import FILL, ethernet_headers, filled

DST = MacAddress("02:00:00:00:00:02")
SRC = MacAddress("02:00:00:00:00:01")
PAYLOAD = bytes(range(46))
# dst, src, ethertype IPv4, then a payload
FRAME = bytes.fromhex("020000000002" "020000000001" "0800") + PAYLOAD
# the same addresses with an 802.1Q tag: PCP 5, DEI 0, VID 100, inner ethertype ARP
TAGGED = bytes.fromhex("020000000002" "020000000001" "8100" "a064" "0806") + PAYLOAD


def test_view_takes_apart_fixed_frame():
    view = EthernetView(FRAME)
    assert view.dst == DST
    assert view.src == SRC
    assert view.ethertype == ETH_P_IP
    assert not view.is_tagged
    assert view.header_length == HEADER_LENGTH
    assert bytes(view.payload) == PAYLOAD


def test_view_takes_apart_tagged_frame():
    view = EthernetView(TAGGED)
    assert view.is_tagged
    assert view.ethertype == ETH_P_ARP
    assert view.header_length == VLAN_HEADER_LENGTH
    assert bytes(view.payload) == PAYLOAD


def test_build_into_puts_fixed_header_together():
    buffer = filled(HEADER_LENGTH + 4)
    written = EthernetHeader(DST, SRC, ETH_P_IP).build_into(buffer, 2)
    assert written == HEADER_LENGTH
    assert buffer[2 : 2 + HEADER_LENGTH] == FRAME[:HEADER_LENGTH]
    assert buffer[:2] == bytes([FILL, FILL]) and buffer[-2:] == bytes([FILL, FILL])


def test_build_into_puts_tagged_header_together():
    buffer = filled(VLAN_HEADER_LENGTH)
    header = EthernetHeader(DST, SRC, ETH_P_ARP, VlanTag(vid=100, pcp=5))
    assert header.build_into(buffer) == VLAN_HEADER_LENGTH
    assert bytes(buffer) == TAGGED[:VLAN_HEADER_LENGTH]


def test_parse_fixed_frame():
    header = EthernetHeader.parse(FRAME)
    assert header == EthernetHeader(DST, SRC, ETH_P_IP, None)
    assert isinstance(header.dst, MacAddress) and isinstance(header.src, MacAddress)
    assert header.header_length == HEADER_LENGTH


def test_parse_tagged_frame_from_memoryview():
    header = EthernetHeader.parse(memoryview(TAGGED))
    assert header == EthernetHeader(DST, SRC, ETH_P_ARP, VlanTag(vid=100, pcp=5, dei=0))
    assert header.header_length == VLAN_HEADER_LENGTH


def test_build_fixed_frame():
    assert EthernetHeader(DST, SRC, ETH_P_IP).build(PAYLOAD) == FRAME
    assert EthernetHeader(DST, SRC, ETH_P_ARP, VlanTag(100, 5)).build(PAYLOAD) == TAGGED


@pytest.mark.parametrize(
    "data",
    [
        b"",
        FRAME[:13],
        FRAME[:12] + b"\x05\xdc" + PAYLOAD,  # 802.3 length field, not an ethertype
        TAGGED[:17],  # tag cut short
        TAGGED[:16] + b"\x00\x2e" + PAYLOAD,  # inner 802.3 length field
    ],
    ids=["empty", "13-bytes", "llc-length", "tag-truncated", "inner-llc-length"],
)
def test_parse_rejects_malformed_frames(data):
    with pytest.raises(WireError):
        EthernetHeader.parse(data)


def test_view_rejects_short_frame_and_truncated_tag_raises_wire_error():
    with pytest.raises(WireError):
        EthernetView(FRAME[:13])
    with pytest.raises(WireError):
        EthernetView(TAGGED[:16]).ethertype


def test_build_rejects_out_of_range_vlan_id():
    with pytest.raises(WireError):
        EthernetHeader(DST, SRC, ETH_P_IP, VlanTag(vid=4096)).build()


def test_pad_extends_short_frames_to_60_bytes_only():
    short = FRAME[:20]
    assert pad(short) == short + bytes(MIN_FRAME_LENGTH - 20)
    assert pad(FRAME) is FRAME  # already 60 bytes


def test_scapy_built_frame_parses_field_by_field():
    frame = bytes(Ether(dst="02:00:00:00:00:02", src="02:00:00:00:00:01") / Dot1Q(vlan=7, prio=3, dei=1, type=0x86DD))
    header = EthernetHeader.parse(frame)
    assert str(header.dst) == "02:00:00:00:00:02"
    assert str(header.src) == "02:00:00:00:00:01"
    assert header.ethertype == 0x86DD
    assert header.vlan == VlanTag(vid=7, pcp=3, dei=1)


@settings(max_examples=60, deadline=None)
@given(ethernet_headers())
def test_scapy_parses_what_we_build(header):
    frame = Ether(header.build(b"payload!"))
    assert frame.dst == str(header.dst)
    assert frame.src == str(header.src)
    if header.vlan is None:
        assert frame.type == header.ethertype
    else:
        assert frame.type == 0x8100
        tag = frame[Dot1Q]
        assert (tag.vlan, tag.prio, tag.dei, tag.type) == (header.vlan.vid, header.vlan.pcp, header.vlan.dei, header.ethertype)
