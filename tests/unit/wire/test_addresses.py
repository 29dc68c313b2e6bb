"""MAC and IPv4 address types: text round trips, wire forms, and strict rejection of bad text."""
from __future__ import annotations

import ipaddress

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from nodes.wire.addresses import (
    BROADCAST_MAC,
    ZERO_MAC,
    IPv4Address,
    MacAddress,
    parse_cidr,
    prefix_mask,
)
from nodes.wire.errors import WireError

MAC_TEXT = "02:00:5e:10:00:ff"
MAC_BYTES = bytes.fromhex("02005e1000ff")
IP_TEXT = "192.168.0.199"
IP_VALUE = 0xC0A800C7


# --- MacAddress ---------------------------------------------------------------------------


def test_mac_parses_from_text_bytes_and_int():
    for value in (MAC_TEXT, MAC_TEXT.upper(), "02-00-5e-10-00-ff", f" {MAC_TEXT}\n", "2:0:5e:10:0:ff", MAC_BYTES, bytearray(MAC_BYTES), memoryview(MAC_BYTES), 0x02005E1000FF):
        mac = MacAddress(value)
        assert mac == MAC_BYTES and isinstance(mac, MacAddress), value


def test_mac_prints_as_colon_hex():
    mac = MacAddress(MAC_BYTES)
    assert str(mac) == MAC_TEXT
    assert repr(mac) == f"MacAddress('{MAC_TEXT}')"
    assert f"{mac}" == MAC_TEXT


def test_mac_from_wire_wraps_without_copying_semantics_changing():
    mac = MacAddress.from_wire(MAC_BYTES)
    assert mac == MAC_BYTES and isinstance(mac, MacAddress)
    assert MacAddress(mac) is mac
    assert hash(mac) == hash(MAC_BYTES)  # usable as a dict key next to raw bytes


@pytest.mark.parametrize(
    "value",
    [
        "zz:00:00:00:00:01",
        "02:00:00:00:00",
        "02:00:00:00:00:01:02",
        "002:00:00:00:00:01",
        "02:00:00:00::01",
        "+1:00:00:00:00:01",
        "02: 1:00:00:00:01",
        "0_:00:00:00:00:01",
        "",
        b"\x00" * 5,
        b"\x00" * 7,
        -1,
        1 << 48,
    ],
)
def test_mac_rejects_invalid_values(value):
    with pytest.raises(WireError):
        MacAddress(value)


def test_mac_properties():
    assert BROADCAST_MAC.is_broadcast and BROADCAST_MAC.is_multicast and not BROADCAST_MAC.is_unicast
    assert str(BROADCAST_MAC) == "ff:ff:ff:ff:ff:ff" and ZERO_MAC == bytes(6)
    multicast = MacAddress("01:00:5e:00:00:01")
    assert multicast.is_multicast and not multicast.is_broadcast and not multicast.is_unicast
    local = MacAddress(MAC_TEXT)
    assert local.is_unicast and local.is_locally_administered
    assert not MacAddress("00:1b:21:00:00:01").is_locally_administered


@settings(max_examples=200, deadline=None)
@given(st.binary(min_size=6, max_size=6))
def test_mac_text_round_trip(raw):
    mac = MacAddress(raw)
    assert MacAddress(str(mac)) == mac
    assert MacAddress(int.from_bytes(raw, "big")) == mac


# --- IPv4Address --------------------------------------------------------------------------


def test_ipv4_parses_from_text_bytes_and_int():
    for value in (IP_TEXT, f" {IP_TEXT} ", bytes([192, 168, 0, 199]), memoryview(bytes([192, 168, 0, 199])), IP_VALUE):
        address = IPv4Address(value)
        assert address == IP_VALUE and isinstance(address, IPv4Address), value


def test_ipv4_prints_as_dotted_quad():
    address = IPv4Address(IP_VALUE)
    assert str(address) == IP_TEXT
    assert repr(address) == f"IPv4Address('{IP_TEXT}')"
    assert f"{address}" == IP_TEXT
    assert f"{address:>15}" == "  " + IP_TEXT
    assert f"{address:08x}" == "c0a800c7"
    assert address.packed == bytes([192, 168, 0, 199])


def test_ipv4_from_wire_and_identity():
    address = IPv4Address.from_wire(IP_VALUE)
    assert isinstance(address, IPv4Address) and address == IP_VALUE
    assert IPv4Address(address) is address
    assert hash(address) == hash(IP_VALUE)


@pytest.mark.parametrize(
    "value",
    [
        "10.0.0.256",
        "1.2.3",
        "1.2.3.4.5",
        "01.2.3.4",
        "1.2.3.04",
        "1..2.3",
        "-1.2.3.4",
        "+1.2.3.4",
        "a.b.c.d",
        "1.2.3.4/24",
        "0x1.2.3.4",
        "1000.2.3.4",
        "\u0661.2.3.4",  # ARABIC-INDIC DIGIT ONE: isdigit(), yet not an address
        "\u00b2.2.3.4",  # SUPERSCRIPT TWO
        "",
        b"\x01\x02\x03",
        -1,
        1 << 32,
    ],
)
def test_ipv4_rejects_invalid_values(value):
    with pytest.raises(WireError):
        IPv4Address(value)


def test_ipv4_properties():
    assert IPv4Address("0.0.0.0").is_unspecified
    assert IPv4Address("127.0.0.1").is_loopback
    assert IPv4Address("224.0.0.1").is_multicast and IPv4Address("239.255.255.255").is_multicast
    assert not IPv4Address("240.0.0.1").is_multicast
    assert IPv4Address("255.255.255.255").is_limited_broadcast
    assert not any((IPv4Address(IP_TEXT).is_unspecified, IPv4Address(IP_TEXT).is_loopback))


@settings(max_examples=200, deadline=None)
@given(st.integers(0, 0xFFFFFFFF))
def test_ipv4_text_round_trip_matches_stdlib(value):
    address = IPv4Address(value)
    assert str(address) == str(ipaddress.IPv4Address(value))
    assert IPv4Address(str(address)) == value
    assert IPv4Address(address.packed) == value


@settings(max_examples=300, deadline=None)
@given(st.text(alphabet="0123456789.\u0661\u00b2x", max_size=16))
def test_ipv4_text_accepted_exactly_when_stdlib_accepts_it(text):
    try:
        expected = int(ipaddress.IPv4Address(text))
    except ValueError:
        with pytest.raises(WireError):
            IPv4Address(text)
    else:
        assert IPv4Address(text) == expected


# --- prefixes -----------------------------------------------------------------------------


def test_prefix_mask():
    assert prefix_mask(0) == 0
    assert prefix_mask(24) == 0xFFFFFF00
    assert prefix_mask(32) == 0xFFFFFFFF
    for bad in (-1, 33):
        with pytest.raises(WireError):
            prefix_mask(bad)


def test_parse_cidr():
    assert parse_cidr("10.0.1.10/24") == (IPv4Address("10.0.1.10"), 24)
    assert parse_cidr("10.0.1.10") == (IPv4Address("10.0.1.10"), 32)
    assert parse_cidr("0.0.0.0/0") == (0, 0)


@pytest.mark.parametrize("text", ["10.0.0.1/33", "10.0.0.1/", "10.0.0.1/x", "10.0.0.1/-1", "10.0.0.1/\u00b2", "10.0.0/8"])
def test_parse_cidr_rejects_invalid_text(text):
    with pytest.raises(WireError):
        parse_cidr(text)
