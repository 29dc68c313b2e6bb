"""ICMP codec (RFC 792, RFC 1191, RFC 1812 4.3.2.3): fixed messages both ways, quoting, scapy."""
from __future__ import annotations

import dataclasses

import pytest
from hypothesis import given, settings
from scapy.layers.inet import ICMP

from nodes.wire import icmp
from nodes.wire.addresses import IPv4Address
from nodes.wire.checksum import verify
from nodes.wire.errors import WireError
from nodes.wire.icmp import (
    DEST_UNREACH,
    ECHO_REPLY,
    ECHO_REQUEST,
    FRAG_NEEDED,
    FRAG_REASSEMBLY_TIME_EXCEEDED,
    MAX_QUOTED_LENGTH,
    PARAMETER_PROBLEM,
    PORT_UNREACH,
    REDIR_HOST,
    REDIRECT,
    TIME_EXCEEDED,
    TTL_EXCEEDED_IN_TRANSIT,
    IcmpMessage,
)
from nodes.wire.ipv4 import IPPROTO_UDP, IPv4Header

from .oracles import FILL, filled, icmp_messages

# Echo request, identifier 0x1234, sequence 1, data "abcdefgh" (checksum 0x5435).
ECHO = bytes.fromhex("0800" "5435" "1234" "0001") + b"abcdefgh"

# The Wikipedia example IPv4 header (UDP 192.168.0.1 -> 192.168.0.199, 115 bytes)
# followed by the first 8 bytes of its UDP header: ports 54321 -> 53.
ORIGINAL_HEADER = bytes.fromhex("4500" "0073" "0000" "4000" "4011" "b861" "c0a80001" "c0a800c7")
UDP_START = bytes.fromhex("d431" "0035" "0073" "abcd")
ORIGINAL = ORIGINAL_HEADER + UDP_START + bytes(87)
# Fragmentation needed, next-hop MTU 1400, quoting the header and 8 bytes (checksum 0x76dc).
FRAG_NEEDED_MESSAGE = bytes.fromhex("0304" "76dc" "0000" "0578") + ORIGINAL_HEADER + UDP_START


def test_type_and_code_numbers_match_rfc_792():
    assert (ECHO_REPLY, DEST_UNREACH, REDIRECT, ECHO_REQUEST, TIME_EXCEEDED, PARAMETER_PROBLEM) == (0, 3, 5, 8, 11, 12)
    assert (icmp.NET_UNREACH, icmp.HOST_UNREACH, icmp.PROT_UNREACH, PORT_UNREACH, FRAG_NEEDED) == (0, 1, 2, 3, 4)
    assert (TTL_EXCEEDED_IN_TRANSIT, FRAG_REASSEMBLY_TIME_EXCEEDED) == (0, 1)


# --- the four tests on fixed messages -----------------------------------------------------


def test_parse_takes_apart_fixed_echo_request():
    message = IcmpMessage.parse(memoryview(ECHO), verify_checksum=True)
    assert message.type == ECHO_REQUEST
    assert message.code == 0
    assert message.checksum == 0x5435
    assert message.identifier == 0x1234
    assert message.sequence == 1
    assert message.payload == b"abcdefgh" and isinstance(message.payload, bytes)
    assert (message.next_hop_mtu, message.pointer, message.gateway) == (0, 0, None)
    assert not message.is_error


def test_build_into_puts_fixed_echo_request_together():
    buffer = filled(len(ECHO) + 2)
    assert IcmpMessage.echo_request(0x1234, 1, b"abcdefgh").build_into(buffer, 1) == len(ECHO)
    assert buffer[1:-1] == ECHO
    assert buffer[0] == FILL and buffer[-1] == FILL


def test_parse_fixed_frag_needed():
    message = IcmpMessage.parse(FRAG_NEEDED_MESSAGE, verify_checksum=True)
    assert message == IcmpMessage(DEST_UNREACH, FRAG_NEEDED, 0x76DC, next_hop_mtu=1400, payload=ORIGINAL_HEADER + UDP_START)
    assert message.is_error


def test_build_fixed_messages():
    assert IcmpMessage(ECHO_REQUEST, 0, identifier=0x1234, sequence=1, payload=b"abcdefgh").build() == ECHO
    built = IcmpMessage.destination_unreachable(FRAG_NEEDED, ORIGINAL[:28], next_hop_mtu=1400).build()
    assert built == FRAG_NEEDED_MESSAGE


def test_build_ignores_a_stale_checksum_field():
    assert IcmpMessage(ECHO_REQUEST, 0, checksum=0xBEEF, identifier=0x1234, sequence=1, payload=b"abcdefgh").build() == ECHO


def test_all_zero_echo_reply_gets_checksum_ffff():
    assert IcmpMessage(ECHO_REPLY, 0).build() == bytes.fromhex("0000ffff00000000")


# --- what parse rejects -------------------------------------------------------------------


def test_parse_rejects_messages_shorter_than_the_header():
    for length in range(8):
        with pytest.raises(WireError):
            IcmpMessage.parse(ECHO[:length])


def test_bad_checksum_raises_only_when_verifying():
    corrupt = ECHO[:-1] + b"i"
    assert IcmpMessage.parse(corrupt).payload == b"abcdefgi"
    with pytest.raises(WireError):
        IcmpMessage.parse(corrupt, verify_checksum=True)


# --- rest-of-header by type ---------------------------------------------------------------


def test_parameter_problem_carries_pointer_in_first_byte():
    built = IcmpMessage.parameter_problem(9, ORIGINAL).build()
    assert built[4:8] == b"\x09\x00\x00\x00"
    assert IcmpMessage.parse(built, verify_checksum=True).pointer == 9


def test_redirect_carries_gateway():
    gateway = IPv4Address("192.168.0.254")
    built = IcmpMessage.redirect(REDIR_HOST, gateway, ORIGINAL).build()
    assert built[4:8] == gateway.packed
    parsed = IcmpMessage.parse(built, verify_checksum=True)
    assert parsed.gateway == gateway and isinstance(parsed.gateway, IPv4Address)


def test_time_exceeded_leaves_rest_of_header_unused():
    message = dataclasses.replace(IcmpMessage.time_exceeded(TTL_EXCEEDED_IN_TRANSIT, ORIGINAL), identifier=7, pointer=3)
    built = message.build()
    assert built[:2] == b"\x0b\x00" and built[4:8] == bytes(4)
    assert verify(built)


def test_echo_reply_mirrors_identifier_sequence_and_data():
    request = IcmpMessage.parse(ECHO)
    reply = IcmpMessage.echo_reply_to(request)
    assert reply == IcmpMessage(ECHO_REPLY, 0, identifier=0x1234, sequence=1, payload=b"abcdefgh")
    assert icmp.echo_reply_to(request) == reply  # module-level spelling
    assert verify(reply.build())


@pytest.mark.parametrize(
    "message",
    [
        IcmpMessage(ECHO_REQUEST, 0, identifier=1 << 16),
        IcmpMessage(ECHO_REPLY, 0, sequence=-1),
        IcmpMessage(DEST_UNREACH, FRAG_NEEDED, next_hop_mtu=70000),
        IcmpMessage(PARAMETER_PROBLEM, 0, pointer=256),
        IcmpMessage(REDIRECT, 0),  # no gateway
        IcmpMessage(256, 0),
        IcmpMessage(ECHO_REQUEST, 0, payload="text"),
    ],
    ids=["identifier", "sequence", "mtu", "pointer", "gateway", "type", "payload-type"],
)
def test_build_rejects_out_of_range_fields(message):
    with pytest.raises(WireError):
        message.build()


# --- quoting the original datagram --------------------------------------------------------


def test_error_quotes_as_much_as_fits_in_576_bytes():
    big = IPv4Header(IPv4Address("10.0.0.1"), IPv4Address("10.0.0.2"), IPPROTO_UDP).build(bytes(range(256)) * 6)
    message = IcmpMessage.destination_unreachable(PORT_UNREACH, big)
    assert MAX_QUOTED_LENGTH == 548
    assert message.payload == big[:548]
    assert 20 + len(message.build()) == 576


def test_error_quote_leaves_out_ethernet_padding():
    short = IPv4Header(IPv4Address("10.0.0.1"), IPv4Address("10.0.0.2"), IPPROTO_UDP).build(b"12345678")
    assert IcmpMessage.time_exceeded(TTL_EXCEEDED_IN_TRANSIT, short + bytes(18)).payload == short


def test_quoted_header_finds_original_header_and_transport_bytes():
    quoted = IcmpMessage.parse(FRAG_NEEDED_MESSAGE).quoted_header()
    assert quoted.header == IPv4Header.parse_quoted(ORIGINAL_HEADER)
    assert quoted.header.src == IPv4Address("192.168.0.1") and quoted.header.protocol == IPPROTO_UDP
    assert quoted.transport_bytes == UDP_START
    header, transport = IcmpMessage.destination_unreachable(PORT_UNREACH, ORIGINAL).quoted_header()
    assert transport == UDP_START  # only the first 8 bytes, however much was quoted


def test_quoted_header_accepts_a_whole_original_shorter_than_8_transport_bytes():
    tiny = IPv4Header(IPv4Address("10.0.0.1"), IPv4Address("10.0.0.2"), IPPROTO_UDP).build(b"abc")
    assert IcmpMessage.destination_unreachable(PORT_UNREACH, tiny).quoted_header().transport_bytes == b"abc"


@pytest.mark.parametrize(
    "message",
    [
        IcmpMessage(ECHO_REPLY, 0, payload=ORIGINAL[:28]),  # not an error
        IcmpMessage(DEST_UNREACH, PORT_UNREACH, payload=ORIGINAL[:27]),  # fewer than 8 transport bytes
        IcmpMessage(DEST_UNREACH, PORT_UNREACH, payload=ORIGINAL[:19]),  # no whole header
        IcmpMessage(DEST_UNREACH, PORT_UNREACH, payload=b"\x65" + ORIGINAL[1:28]),  # IPv6 version nibble
    ],
    ids=["echo", "7-transport-bytes", "19-header-bytes", "version-6"],
)
def test_quoted_header_raises_wire_error_when_nothing_usable_is_quoted(message):
    with pytest.raises(WireError):
        message.quoted_header()


# --- scapy as oracle ----------------------------------------------------------------------


def test_scapy_built_messages_parse_field_by_field():
    echo = IcmpMessage.parse(bytes(ICMP(type=0, id=77, seq=1234) / b"ping data"), verify_checksum=True)
    assert (echo.type, echo.identifier, echo.sequence, echo.payload) == (ECHO_REPLY, 77, 1234, b"ping data")
    frag = IcmpMessage.parse(bytes(ICMP(type=3, code=4, nexthopmtu=576) / ORIGINAL[:28]), verify_checksum=True)
    assert (frag.type, frag.code, frag.next_hop_mtu, frag.payload) == (DEST_UNREACH, FRAG_NEEDED, 576, ORIGINAL[:28])
    problem = IcmpMessage.parse(bytes(ICMP(type=12, ptr=8) / ORIGINAL[:28]), verify_checksum=True)
    assert problem.pointer == 8
    moved = IcmpMessage.parse(bytes(ICMP(type=5, code=1, gw="10.9.8.7") / ORIGINAL[:28]), verify_checksum=True)
    assert moved.gateway == IPv4Address("10.9.8.7")


@settings(max_examples=60, deadline=None)
@given(icmp_messages())
def test_scapy_parses_what_we_build_and_agrees_on_the_checksum(message):
    ours = message.build()
    theirs = ICMP(ours)
    assert theirs.type == message.type and theirs.code == message.code
    if message.type in (ECHO_REQUEST, ECHO_REPLY):
        assert (theirs.id, theirs.seq) == (message.identifier, message.sequence)
    elif message.type == DEST_UNREACH:
        assert theirs.nexthopmtu == message.next_hop_mtu
    elif message.type == PARAMETER_PROBLEM:
        assert theirs.ptr == message.pointer
    elif message.type == REDIRECT:
        assert theirs.gw == str(message.gateway)
    assert ours[8:] == message.payload
    recomputed = theirs.copy()
    del recomputed.chksum  # scapy fills in its own checksum on build
    assert bytes(recomputed) == ours
