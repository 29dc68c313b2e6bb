"""struct sockaddr_in / sockaddr_in6 as the trapped calls carry them, against the stdlib's tuples."""
import errno
import socket as stdlib

import pytest
from hypothesis import given
from hypothesis import strategies as st

from nodes.socket import AF_INET, AF_INET6, SockAddr, pack_sockaddr, parse_sockaddr

ports = st.integers(0, 0xFFFF)
ipv4 = st.integers(0, 0xFFFFFFFF).map(lambda n: stdlib.inet_ntoa(n.to_bytes(4, "big")))


@given(ipv4, ports)
def test_sockaddr_in_round_trips_and_decodes_as_the_stdlib_tuple(host, port):
    raw = pack_sockaddr((host, port), AF_INET)
    assert len(raw) == 16 and raw[:2] == AF_INET.to_bytes(2, "little")
    assert parse_sockaddr(raw, AF_INET) == SockAddr(AF_INET, int.from_bytes(stdlib.inet_aton(host), "big"), port)
    assert parse_sockaddr(raw, AF_INET) == parse_sockaddr((host, port), AF_INET)


@given(ipv4, ports)
def test_a_v4_mapped_sockaddr_in6_means_its_ipv4_address(host, port):
    raw = pack_sockaddr((f"::ffff:{host}", port), AF_INET6)
    assert len(raw) == 28
    assert parse_sockaddr(raw, AF_INET6) == SockAddr(AF_INET6, int.from_bytes(stdlib.inet_aton(host), "big"), port)


def test_the_unspecified_and_native_ipv6_addresses():
    assert parse_sockaddr(("::", 80), AF_INET6) == SockAddr(AF_INET6, 0, 80, v6_any=True)
    assert parse_sockaddr(("2001:db8::1", 80), AF_INET6).address is None


def test_the_stdlib_spellings_of_any_and_broadcast():
    assert parse_sockaddr(("", 80), AF_INET).address == 0
    assert parse_sockaddr(("<broadcast>", 80), AF_INET).address == 0xFFFFFFFF


def test_a_port_out_of_range_is_overflowerror_as_the_stdlib():
    with pytest.raises(OverflowError):
        parse_sockaddr(("10.0.0.1", 65536), AF_INET)


def test_a_sockaddr_shorter_than_its_family_is_einval():
    with pytest.raises(OSError) as error:
        parse_sockaddr(pack_sockaddr(("::", 80), AF_INET6)[:23], AF_INET6)
    assert error.value.errno == errno.EINVAL


def test_control_messages_are_laid_out_as_linux_cmsghdrs():
    from nodes.socket import pack_cmsgs, unpack_cmsgs

    ancillary = [(0, 2, (9).to_bytes(4, "little")), (0, 1, b"\x10")]
    control, flags = pack_cmsgs(ancillary, 64)
    assert flags == 0 and len(control) == 48  # msg_controllen: CMSG_SPACE(4) + CMSG_SPACE(1) = 24 + 24
    assert control[:16] == (20).to_bytes(8, "little") + (0).to_bytes(4, "little") + (2).to_bytes(4, "little")
    assert unpack_cmsgs(control) == ancillary


def test_control_messages_that_do_not_fit_set_msg_ctrunc():
    from nodes.socket import MSG_CTRUNC, pack_cmsgs

    control, flags = pack_cmsgs([(0, 2, bytes(4)), (0, 1, b"\x10")], 24)
    assert flags == MSG_CTRUNC and len(control) == 24


def test_a_malformed_cmsghdr_is_einval():
    from nodes.socket import unpack_cmsgs

    with pytest.raises(OSError) as error:
        unpack_cmsgs((100).to_bytes(8, "little") + bytes(8))
    assert error.value.errno == errno.EINVAL


def test_a_decoded_sockaddr_with_its_own_family_is_taken_as_is():
    from typing import NamedTuple

    class Decoded(NamedTuple):  # the shape nodes/syscalls.py hands over
        family: int
        host: str = ""
        port: int = 0
        flowinfo: int = 0
        scope_id: int = 0
        raw: bytes = b""

    assert parse_sockaddr(Decoded(AF_INET6, "::ffff:10.0.0.1", 53), AF_INET) == SockAddr(AF_INET6, 0x0A000001, 53)
    assert parse_sockaddr(Decoded(AF_INET, "10.0.0.1", 53), AF_INET6) == SockAddr(AF_INET, 0x0A000001, 53)
    assert parse_sockaddr(Decoded(1, raw=b"\x01\x00/tmp/socket.x.y"), AF_INET).family == 1  # then EAFNOSUPPORT
    with pytest.raises(OSError) as error:
        parse_sockaddr(Decoded(1, raw=b"\x01\x00/tmp/x"), AF_INET)  # shorter than a sockaddr_in: inet_bind's EINVAL
    assert error.value.errno == errno.EINVAL
