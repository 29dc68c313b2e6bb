"""Shared test helpers for the L2/L3 codecs: hypothesis strategies and byte mutators.

Scapy is the independent oracle; the test modules import it themselves so a
scapy import costs only the modules that need it.
"""
from __future__ import annotations

from hypothesis import strategies as st

from nodes.wire.addresses import IPv4Address, MacAddress
from nodes.wire.arp import ArpPacket
from nodes.wire.ethernet import EthernetHeader, VlanTag
from nodes.wire.icmp import (
    DEST_UNREACH,
    ECHO_REPLY,
    ECHO_REQUEST,
    PARAMETER_PROBLEM,
    REDIRECT,
    TIME_EXCEEDED,
    IcmpMessage,
)
from nodes.wire.ipv4 import IPv4Header

FILL = 0xA5  # pre-fill byte for build_into tests: a field the builder forgets shows as a5

u8 = st.integers(0, 0xFF)
u16 = st.integers(0, 0xFFFF)
macs = st.binary(min_size=6, max_size=6).map(MacAddress)
ipv4_addresses = st.integers(0, 0xFFFFFFFF).map(IPv4Address)
ethertypes = st.integers(0x0600, 0xFFFF).filter(lambda t: t != 0x8100)


def filled(length: int) -> bytearray:
    return bytearray(bytes([FILL]) * length)


@st.composite
def ethernet_headers(draw: st.DrawFn) -> EthernetHeader:
    vlan = draw(st.none() | st.builds(VlanTag, st.integers(0, 0x0FFF), st.integers(0, 7), st.integers(0, 1)))
    return EthernetHeader(draw(macs), draw(macs), draw(ethertypes), vlan)


@st.composite
def arp_packets(draw: st.DrawFn) -> ArpPacket:
    return ArpPacket(draw(u16), draw(macs), draw(ipv4_addresses), draw(macs), draw(ipv4_addresses))


@st.composite
def ipv4_option_bytes(draw: st.DrawFn) -> bytes:
    """Raw options already padded to a multiple of 4 (any bytes: options are carried raw)."""
    words = draw(st.integers(0, 10))
    return draw(st.binary(min_size=4 * words, max_size=4 * words))


@st.composite
def ipv4_headers(draw: st.DrawFn, options: bool = True) -> IPv4Header:
    """A valid header as a builder would fill it (total_length and checksum left 0)."""
    return IPv4Header(
        src=draw(ipv4_addresses),
        dst=draw(ipv4_addresses),
        protocol=draw(u8),
        ttl=draw(u8),
        identification=draw(u16),
        dont_fragment=draw(st.booleans()),
        more_fragments=draw(st.booleans()),
        fragment_offset=draw(st.integers(0, 0x1FFF)) * 8,
        tos=draw(u8),
        options=draw(ipv4_option_bytes()) if options else b"",
        reserved_flag=draw(st.booleans()),
    )


@st.composite
def well_formed_options(draw: st.DrawFn) -> tuple[bytes, list[tuple[int, bytes]]]:
    """Options built from NOP and TLV items (no EOL inside), with the items they encode."""
    items: list[tuple[int, bytes]] = []
    raw = bytearray()
    for _ in range(draw(st.integers(0, 4))):
        if draw(st.booleans()):
            items.append((1, b""))
            raw.append(1)
        else:
            kind = draw(st.integers(2, 255))
            data = draw(st.binary(max_size=6))
            items.append((kind, data))
            raw += bytes([kind, len(data) + 2]) + data
    return bytes(raw), items


@st.composite
def icmp_messages(draw: st.DrawFn) -> IcmpMessage:
    """A valid message with only the rest-of-header fields its type uses."""
    kind = draw(st.sampled_from([ECHO_REQUEST, ECHO_REPLY, DEST_UNREACH, TIME_EXCEEDED, PARAMETER_PROBLEM, REDIRECT]))
    code = draw(u8)
    payload = draw(st.binary(max_size=80))
    message = IcmpMessage(kind, code, payload=payload)
    if kind in (ECHO_REQUEST, ECHO_REPLY):
        message.identifier = draw(u16)
        message.sequence = draw(u16)
    elif kind == DEST_UNREACH:
        message.next_hop_mtu = draw(u16)
    elif kind == PARAMETER_PROBLEM:
        message.pointer = draw(u8)
    elif kind == REDIRECT:
        message.gateway = draw(ipv4_addresses)
    return message


@st.composite
def mutated(draw: st.DrawFn, valid: bytes) -> bytes:
    """`valid` with a few bytes overwritten, then cut or extended: near-misses for the parsers."""
    data = bytearray(valid)
    for _ in range(draw(st.integers(1, 4))):
        if data:
            data[draw(st.integers(0, len(data) - 1))] = draw(u8)
    cut = draw(st.integers(0, len(data)))
    if draw(st.booleans()):
        return bytes(data[:cut])
    return bytes(data) + draw(st.binary(max_size=8))
