"""Property tests for the L2/L3 codecs: build -> parse is identity; garbage parses or raises WireError.

The fuzz invariant (STYLE.md, "two kinds of error"): whatever bytes arrive,
a parser returns a value or raises `WireError`, never anything else, and a
view whose construction succeeded answers every accessor.
"""
from __future__ import annotations

import dataclasses

from hypothesis import given, settings
from hypothesis import strategies as st

from nodes.wire.arp import ArpPacket
from nodes.wire.errors import WireError
from nodes.wire.ethernet import ETH_P_ARP, ETH_P_IP, EthernetHeader, EthernetView, pad
from nodes.wire.icmp import IcmpMessage
from nodes.wire.ipv4 import (
    IPPROTO_ICMP,
    IPv4Header,
    IPv4View,
    decrement_ttl,
    header_checksum_ok,
    is_fragment,
    iter_options,
    payload,
)

from .oracles import arp_packets, ethernet_headers, filled, icmp_messages, ipv4_headers, mutated

FUZZ = settings(max_examples=300, deadline=None)


# --- round trips --------------------------------------------------------------------------


@FUZZ
@given(ethernet_headers(), st.binary(max_size=64))
def test_ethernet_build_then_parse_is_identity(header, body):
    frame = header.build(body)
    assert EthernetHeader.parse(frame) == header
    assert bytes(EthernetView(frame).payload) == body


@FUZZ
@given(arp_packets())
def test_arp_build_then_parse_is_identity(packet):
    assert ArpPacket.parse(packet.build()) == packet


@FUZZ
@given(ipv4_headers(), st.binary(max_size=64))
def test_ipv4_build_then_parse_is_identity_up_to_computed_fields(header, body):
    datagram = header.build(body)
    parsed = IPv4Header.parse(datagram, verify_checksum=True)
    assert parsed == dataclasses.replace(header, total_length=len(datagram), checksum=parsed.checksum)
    assert header_checksum_ok(datagram)
    view = IPv4View(datagram)
    assert (view.src, view.dst, view.protocol, view.ttl, view.tos) == (header.src, header.dst, header.protocol, header.ttl, header.tos)
    assert (view.identification, view.dont_fragment, view.more_fragments, view.fragment_offset) == (
        header.identification,
        header.dont_fragment,
        header.more_fragments,
        header.fragment_offset,
    )
    assert view.is_fragment == header.is_fragment
    assert view.header_length == header.header_length and view.total_length == len(datagram)
    assert bytes(view.payload) == body
    buffer = filled(len(datagram))
    buffer[header.header_length :] = body
    assert header.build_into(buffer, 0, len(body)) == header.header_length
    assert bytes(buffer) == datagram


@FUZZ
@given(icmp_messages())
def test_icmp_build_then_parse_is_identity_up_to_checksum(message):
    data = message.build()
    parsed = IcmpMessage.parse(data, verify_checksum=True)
    assert parsed == dataclasses.replace(message, checksum=parsed.checksum)


# --- garbage in: a value or WireError out -------------------------------------------------


def exercise_ipv4(data: "bytes | memoryview") -> None:
    """Every IPv4 entry point on `data`; only WireError may escape, and a built view never raises."""
    checksum_ok = header_checksum_ok(data)  # never raises at all
    assert isinstance(checksum_ok, bool)
    try:
        IPv4Header.parse(data)
    except WireError:
        pass
    else:
        # With the header otherwise valid, verification fails exactly on a bad checksum.
        try:
            IPv4Header.parse(data, verify_checksum=True)
        except WireError:
            assert not checksum_ok
        else:
            assert checksum_ok
    try:
        IPv4Header.parse_quoted(data)
    except WireError:
        pass
    try:
        is_fragment(data)
        payload(data)
    except WireError:
        pass
    try:
        view = IPv4View(data)
    except WireError:
        pass
    else:
        _ = (view.src, view.dst, view.protocol, view.ttl, view.tos, view.identification)
        _ = (view.dont_fragment, view.more_fragments, view.fragment_offset, view.is_fragment)
        _ = (view.checksum_ok, view.options, bytes(view.payload), view.header())
        try:
            list(iter_options(view.options))
        except WireError:
            pass
    buffer = bytearray(data)
    try:
        decrement_ttl(buffer)
    except WireError:
        pass


def exercise_icmp(data: "bytes | memoryview") -> None:
    for verify_checksum in (False, True):
        try:
            message = IcmpMessage.parse(data, verify_checksum=verify_checksum)
        except WireError:
            continue
        try:
            message.quoted_header()
        except WireError:
            pass
        try:
            message.build()  # a parsed message may hold values a builder refuses, but only with WireError
        except WireError:
            pass


def exercise_frame(frame: "bytes | memoryview") -> None:
    """Receive path of a node: Ethernet, then ARP or IPv4, then ICMP."""
    try:
        view = EthernetView(frame)
        _ = (view.dst, view.src, view.is_tagged, view.header_length, bytes(view.payload))
        view.ethertype
    except WireError:
        pass
    try:
        ethernet = EthernetHeader.parse(frame)
    except WireError:
        return
    body = memoryview(frame)[ethernet.header_length :]
    if ethernet.ethertype == ETH_P_ARP:
        try:
            ArpPacket.parse(body)
        except WireError:
            pass
    exercise_ipv4(body)
    try:
        inner = IPv4View(body).payload
    except WireError:
        return
    exercise_icmp(inner)


@FUZZ
@given(st.binary(max_size=120))
def test_random_bytes_parse_or_raise_wire_error(data):
    exercise_frame(data)
    exercise_ipv4(data)
    exercise_icmp(data)
    try:
        ArpPacket.parse(data)
    except WireError:
        pass
    try:
        list(iter_options(data))
    except WireError:
        pass


@st.composite
def valid_frames(draw: st.DrawFn) -> bytes:
    """A well-formed Ethernet frame carrying ARP, or IPv4 with ICMP inside."""
    ethernet = draw(ethernet_headers())
    if draw(st.booleans()):
        ethernet.ethertype = ETH_P_ARP
        return pad(ethernet.build(draw(arp_packets()).build()))
    ethernet.ethertype = ETH_P_IP
    ip = draw(ipv4_headers())
    ip.protocol = IPPROTO_ICMP
    message = draw(icmp_messages())
    if message.is_error and draw(st.booleans()):
        quoted = draw(ipv4_headers(options=False)).build(draw(st.binary(max_size=16)))
        message.payload = quoted
    return pad(ethernet.build(ip.build(message.build())))


@FUZZ
@given(valid_frames().flatmap(mutated))
def test_mutated_valid_frames_parse_or_raise_wire_error(frame):
    exercise_frame(frame)
    exercise_frame(memoryview(bytearray(frame)))


@FUZZ
@given(ipv4_headers().flatmap(lambda header: mutated(header.build(b"0123456789abcdef"))))
def test_mutated_ipv4_datagrams_parse_or_raise_wire_error(data):
    exercise_ipv4(data)


@settings(max_examples=100, deadline=None)
@given(valid_frames())
def test_unmutated_frames_reach_the_innermost_layer(frame):
    # Guards the fuzz tests above against a generator whose frames all fail early.
    ethernet = EthernetHeader.parse(frame)
    body = EthernetView(frame).payload
    if ethernet.ethertype == ETH_P_ARP:
        ArpPacket.parse(body)
    else:
        IcmpMessage.parse(IPv4View(body).payload, verify_checksum=True)
