"""Property tests for the UDP and TCP codecs: round trips, and "parse it or raise WireError" on garbage."""
from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from nodes.wire import tcp, udp
from nodes.wire.errors import WireError
from nodes.wire.tcp import (
    NOP,
    SACK_PERMITTED,
    MssOption,
    SackOption,
    TcpHeader,
    TcpView,
    TimestampOption,
    UnknownOption,
    WindowScaleOption,
)
from nodes.wire.udp import UdpHeader, UdpView

# Bounded so the whole file runs in a few seconds; CI runs it on every push.
FAST = settings(max_examples=300, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])

u8 = st.integers(0, 0xFF)
u16 = st.integers(0, 0xFFFF)
u32 = st.integers(0, 0xFFFFFFFF)
addresses = u32
payloads = st.binary(max_size=64)

_KNOWN_KINDS = {0, 1, 2, 3, 4, 5, 8}
_single_options = st.one_of(
    st.just(NOP),
    st.just(SACK_PERMITTED),
    st.builds(MssOption, u16),
    st.builds(WindowScaleOption, u8),
    st.builds(TimestampOption, u32, u32),
    st.builds(SackOption, st.lists(st.tuples(u32, u32), min_size=1, max_size=4).map(tuple)),
    st.builds(UnknownOption, st.integers(2, 255).filter(lambda k: k not in _KNOWN_KINDS), st.binary(max_size=12)),
)


@st.composite
def option_lists(draw: st.DrawFn) -> tuple:
    """Options that fit in 40 bytes once padded, drawn until the budget says stop."""
    options: list = []
    used = 0
    for _ in range(draw(st.integers(0, 8))):
        option = draw(_single_options)
        if (used + option.wire_length + 3) & ~3 > tcp.MAX_OPTIONS_LENGTH:
            break
        options.append(option)
        used += option.wire_length
    return tuple(options)


tcp_headers = st.builds(
    TcpHeader,
    src_port=u16,
    dst_port=u16,
    seq=u32,
    ack=u32,
    flags=st.integers(0, tcp.FLAGS_MASK),
    window=u16,
    checksum=st.just(0),
    urgent=u16,
    options=option_lists(),
)


@FAST
@given(tcp_headers, payloads, addresses, addresses)
def test_tcp_build_then_parse_is_identity(header, payload, src_ip, dst_ip):
    segment = header.build(payload, src_ip, dst_ip)
    parsed = TcpHeader.parse(segment)
    assert parsed.options == header.options
    assert parsed == TcpHeader(
        header.src_port, header.dst_port, header.seq, header.ack, header.flags, header.window,
        parsed.checksum, header.urgent, header.options,
    )
    assert tcp.checksum_ok(segment, src_ip, dst_ip)
    assert segment[parsed.header_length :] == payload
    view = TcpView(segment)
    assert (view.src_port, view.dst_port, view.seq, view.ack, view.flags, view.window, view.urgent) == (
        header.src_port, header.dst_port, header.seq, header.ack, header.flags, header.window, header.urgent,
    )
    assert view.checksum == parsed.checksum and view.options == header.options
    assert bytes(view.payload) == payload


@FAST
@given(u16, u16, payloads, addresses, addresses)
def test_udp_build_then_parse_is_identity(src_port, dst_port, payload, src_ip, dst_ip):
    datagram = UdpHeader(src_port, dst_port).build(payload, src_ip, dst_ip)
    parsed = UdpHeader.parse(datagram)
    assert (parsed.src_port, parsed.dst_port, parsed.length) == (src_port, dst_port, 8 + len(payload))
    assert parsed.checksum != 0  # 0 is reserved for "no checksum"
    assert udp.checksum_ok(datagram, src_ip, dst_ip)
    assert bytes(UdpView(datagram).payload) == payload


def _tcp_parse_or_wire_error(data: bytes) -> None:
    """The fuzz invariant, plus: whatever parses re-encodes to the same header bytes."""
    try:
        header = TcpHeader.parse(data)
    except WireError:
        pass
    else:
        assert header.encode() == data[: header.header_length]
    try:
        view = TcpView(data)
    except WireError:
        return
    for accessor in ("src_port", "dst_port", "seq", "ack", "flags", "window", "checksum", "urgent", "syn"):
        getattr(view, accessor)
    for accessor in ("header_length", "options", "payload"):
        try:
            getattr(view, accessor)
        except WireError:
            pass
    tcp.checksum_ok(data, 1, 2)


def _udp_parse_or_wire_error(data: bytes) -> None:
    try:
        header = UdpHeader.parse(data)
    except WireError:
        pass
    else:
        assert header.encode() == data[:8]
    udp.checksum_ok(data, 1, 2)
    try:
        view = UdpView(data)
    except WireError:
        return
    try:
        view.payload
    except WireError:
        pass


@FAST
@given(st.binary(max_size=80))
def test_tcp_random_bytes_parse_or_raise_wire_error(data):
    _tcp_parse_or_wire_error(data)


@FAST
@given(st.binary(max_size=40))
def test_tcp_random_option_areas_parse_or_raise_wire_error(area):
    try:
        options = tcp.parse_options(area)
    except WireError:
        return
    assert tcp.encode_options(options) == area or len(area) % 4  # exact when the area is whole words


@FAST
@given(st.binary(max_size=24))
def test_udp_random_bytes_parse_or_raise_wire_error(data):
    _udp_parse_or_wire_error(data)


@st.composite
def mutated(draw: st.DrawFn, valid: bytes) -> bytes:
    """A valid segment with a few bytes overwritten, then maybe truncated."""
    data = bytearray(valid)
    for _ in range(draw(st.integers(1, 4))):
        data[draw(st.integers(0, len(data) - 1))] = draw(u8)
    return bytes(data[: draw(st.integers(0, len(data)))])


_VALID_TCP = TcpHeader(
    1, 2, 3, 4, tcp.SYN, 5,
    options=(MssOption(1460), SACK_PERMITTED, TimestampOption(6, 7), NOP, WindowScaleOption(7)),
).build(b"payload", 1, 2)
_VALID_TCP_SACK = TcpHeader(
    1, 2, 3, 4, tcp.ACK, 5, options=(NOP, NOP, SackOption(((1, 2), (3, 4), (5, 6), (7, 8)))),
).build(b"", 1, 2)
_VALID_UDP = UdpHeader(1, 2).build(b"payload", 1, 2)


@FAST
@pytest.mark.parametrize("valid", [_VALID_TCP, _VALID_TCP_SACK], ids=["syn", "sack"])
@given(data=st.data())
def test_tcp_mutated_segments_parse_or_raise_wire_error(valid, data):
    _tcp_parse_or_wire_error(data.draw(mutated(valid)))


@FAST
@given(mutated(_VALID_UDP))
def test_udp_mutated_datagrams_parse_or_raise_wire_error(data):
    _udp_parse_or_wire_error(data)
