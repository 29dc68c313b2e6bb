"""ARP codec (RFC 826, Ethernet/IPv4): fixed packet both ways, rejections, scapy as oracle."""
from __future__ import annotations

import pytest
from hypothesis import given, settings
from scapy.layers.l2 import ARP

from nodes.wire.addresses import ZERO_MAC, IPv4Address, MacAddress
from nodes.wire.arp import ARP_REPLY, ARP_REQUEST, PACKET_LENGTH, ArpPacket
from nodes.wire.errors import WireError

from .oracles import FILL, arp_packets, filled

MAC1 = MacAddress("02:00:00:00:00:01")
MAC2 = MacAddress("02:00:00:00:00:02")
IP1 = IPv4Address("10.0.0.1")
IP2 = IPv4Address("10.0.0.2")
# who has 10.0.0.2? tell 10.0.0.1 (02:00:00:00:00:01)
REQUEST = bytes.fromhex("0001" "0800" "06" "04" "0001" "020000000001" "0a000001" "000000000000" "0a000002")


def test_parse_takes_apart_fixed_request():
    packet = ArpPacket.parse(REQUEST)
    assert packet.operation == ARP_REQUEST
    assert packet.sender_mac == MAC1 and isinstance(packet.sender_mac, MacAddress)
    assert packet.sender_ip == IP1 and isinstance(packet.sender_ip, IPv4Address)
    assert packet.target_mac == ZERO_MAC
    assert packet.target_ip == IP2 and isinstance(packet.target_ip, IPv4Address)


def test_build_into_puts_fixed_request_together():
    buffer = filled(PACKET_LENGTH + 3)
    assert ArpPacket.request(MAC1, IP1, IP2).build_into(buffer, 1) == PACKET_LENGTH
    assert buffer[1 : 1 + PACKET_LENGTH] == REQUEST
    assert buffer[0] == FILL and buffer[-2:] == bytes([FILL, FILL])


def test_parse_fixed_request_with_ethernet_padding_from_memoryview():
    padded = memoryview(bytearray(REQUEST + bytes(18)))
    assert ArpPacket.parse(padded) == ArpPacket(ARP_REQUEST, MAC1, IP1, ZERO_MAC, IP2)


def test_build_fixed_request():
    assert ArpPacket(ARP_REQUEST, MAC1, IP1, ZERO_MAC, IP2).build() == REQUEST


def test_reply_with_answers_the_asker_from_the_target_address():
    reply = ArpPacket.parse(REQUEST).reply_with(MAC2)
    assert reply == ArpPacket(ARP_REPLY, MAC2, IP2, MAC1, IP1)
    assert reply == ArpPacket.reply(MAC2, IP2, MAC1, IP1)


def test_gratuitous_announces_own_address_with_zero_target_mac():
    packet = ArpPacket.gratuitous(MAC1, IP1)
    assert packet == ArpPacket(ARP_REQUEST, MAC1, IP1, ZERO_MAC, IP1)
    assert packet.is_gratuitous
    assert not ArpPacket.parse(REQUEST).is_gratuitous
    assert ArpPacket.gratuitous(MAC1, IP1, ARP_REPLY).operation == ARP_REPLY


def test_unknown_operation_is_left_to_the_neighbour_layer():
    data = REQUEST[:6] + b"\x00\x03" + REQUEST[8:]  # RARP request opcode
    assert ArpPacket.parse(data).operation == 3


@pytest.mark.parametrize(
    "data",
    [
        REQUEST[:27],
        b"\x00\x06" + REQUEST[2:],  # IEEE 802 hardware type
        REQUEST[:2] + b"\x86\xdd" + REQUEST[4:],  # IPv6 protocol
        REQUEST[:4] + b"\x08" + REQUEST[5:],  # hardware length 8
        REQUEST[:5] + b"\x10" + REQUEST[6:],  # protocol length 16
    ],
    ids=["27-bytes", "hardware-type", "protocol-type", "hlen", "plen"],
)
def test_parse_rejects_anything_but_ethernet_ipv4(data):
    with pytest.raises(WireError):
        ArpPacket.parse(data)


def test_build_rejects_wrong_sized_mac_and_out_of_range_operation():
    with pytest.raises(WireError):
        ArpPacket(ARP_REQUEST, b"\x02\x00", IP1, ZERO_MAC, IP2).build()
    with pytest.raises(WireError):
        ArpPacket(70000, MAC1, IP1, ZERO_MAC, IP2).build()


def test_scapy_built_reply_parses_field_by_field():
    data = bytes(ARP(op=2, hwsrc="02:00:00:00:00:02", psrc="10.0.0.2", hwdst="02:00:00:00:00:01", pdst="10.0.0.1"))
    packet = ArpPacket.parse(data)
    assert packet.operation == ARP_REPLY
    assert str(packet.sender_mac) == "02:00:00:00:00:02"
    assert str(packet.sender_ip) == "10.0.0.2"
    assert str(packet.target_mac) == "02:00:00:00:00:01"
    assert str(packet.target_ip) == "10.0.0.1"


@settings(max_examples=60, deadline=None)
@given(arp_packets())
def test_scapy_parses_what_we_build(packet):
    theirs = ARP(packet.build())
    assert (theirs.hwtype, theirs.ptype, theirs.hwlen, theirs.plen) == (1, 0x0800, 6, 4)
    assert theirs.op == packet.operation
    assert theirs.hwsrc == str(packet.sender_mac)
    assert theirs.psrc == str(packet.sender_ip)
    assert theirs.hwdst == str(packet.target_mac)
    assert theirs.pdst == str(packet.target_ip)
