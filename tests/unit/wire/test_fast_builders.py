"""The hot paths' builders without objects make exactly what the codec objects make (the oracle)."""
from __future__ import annotations

from hypothesis import example, given, settings
from hypothesis import strategies as st

import pytest

from nodes.wire.addresses import IPv4Address
from nodes.wire.errors import WireError
from nodes.wire.icmp import ECHO_REQUEST, IcmpMessage, echo_reply_for, echo_request_bytes
from nodes.wire.ipv4 import IPv4Header, build_header_into

u16 = st.integers(0, 0xFFFF)


@settings(max_examples=500, deadline=None)
@given(u16, u16, st.binary(max_size=300))
@example(0, 0, b"")
@example(0xFFFF, 0xFFFF, b"\xff")
def test_echo_request_bytes_are_the_message_objects_bytes(identifier, sequence, data):
    assert echo_request_bytes(identifier, sequence, data) == IcmpMessage.echo_request(identifier, sequence, data).build()


@pytest.mark.parametrize("identifier, sequence", [(-1, 0), (0, 0x10000), (0x10000, 5)])
def test_echo_request_bytes_refuse_what_the_object_refuses(identifier, sequence):
    with pytest.raises(WireError):
        IcmpMessage.echo_request(identifier, sequence, b"").build()
    with pytest.raises(WireError):
        echo_request_bytes(identifier, sequence, b"")


@settings(max_examples=500, deadline=None)
@given(u16, u16, st.binary(max_size=300), st.one_of(st.none(), st.integers(0, 400)), st.integers(0, 255))
def test_echo_reply_for_is_parse_then_echo_reply_to_then_build(identifier, sequence, data, flip, value):
    request = bytearray(IcmpMessage.echo_request(identifier, sequence, data).build())
    if flip is not None and flip < len(request):
        request[flip] = value  # sometimes corrupt (checksum or type), sometimes unchanged
    try:
        parsed = IcmpMessage.parse(bytes(request), verify_checksum=True)
    except WireError:
        parsed = None
    expected = (IcmpMessage.echo_reply_to(parsed).build()
                if parsed is not None and parsed.type == ECHO_REQUEST and parsed.code == 0 else None)
    reply = echo_reply_for(bytes(request))
    if expected is None:
        assert reply is None
    else:
        assert reply == expected


@settings(max_examples=500, deadline=None)
@given(st.integers(0, 65515), st.integers(0, 255), u16, st.booleans(), st.integers(1, 255), st.integers(0, 255),
       st.integers(0, 0xFFFFFFFF), st.integers(0, 0xFFFFFFFF))
def test_build_header_into_writes_the_header_objects_bytes(payload_length, tos, identification, dont_fragment, ttl,
                                                           protocol, src, dst):
    header = IPv4Header(IPv4Address(src), IPv4Address(dst), protocol, ttl, identification,
                        dont_fragment=dont_fragment, tos=tos)
    expected = bytearray(b"\xa5" * 24)
    header.build_into(expected, 2, payload_length)
    fast = bytearray(b"\xa5" * 24)
    assert build_header_into(fast, 2, payload_length, tos, identification, dont_fragment, ttl, protocol,
                             src, dst) == 20
    assert fast == expected


def test_build_header_into_refuses_a_datagram_over_64_kib():
    with pytest.raises(WireError):
        build_header_into(bytearray(20), 0, 65516, 0, 0, False, 64, 17, 1, 2)
