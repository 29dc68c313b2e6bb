"""Cost of the wire codecs per full-size frame, beside the per-frame budget of the raw ZeroMQ link.

Every row's baseline is the time ZeroMQ alone needs to carry one 1514-byte
frame between two processes (measured in the same run), so the ratio is the
share of that budget the codec eats: at ratio 1 the codec alone would halve
the wire's frame rate on one core.

The frame is a full-size TCP data segment as Linux sends it once timestamps
are on: Ethernet (14) + IPv4 (20) + TCP (20 + NOP NOP timestamp) + 1448 bytes.
`python -m bench wire` prints the table and writes bench/out/wire.json.
"""
from __future__ import annotations

import struct

from bench.baseline import zmq_frame_rate
from bench.harness import Row, ns_per_call
from nodes.wire.addresses import IPv4Address, MacAddress
from nodes.wire.checksum import internet_checksum
from nodes.wire.ethernet import ETH_P_IP, EthernetHeader
from nodes.wire.ipv4 import IPPROTO_TCP, IPv4Header, header_checksum_ok
from nodes.wire.tcp import ACK, NOP, PSH, TcpHeader, TcpView, TimestampOption
from nodes.wire.tcp import checksum_ok as tcp_checksum_ok

FRAME_LENGTH = 1514
ETHERNET_LENGTH = 14
IP_OFFSET = ETHERNET_LENGTH
TCP_OFFSET = IP_OFFSET + 20
TCP_HEADER_LENGTH = 32
PAYLOAD_OFFSET = TCP_OFFSET + TCP_HEADER_LENGTH
PAYLOAD_LENGTH = FRAME_LENGTH - PAYLOAD_OFFSET  # 1448, the MSS with timestamps on a 1500 MTU

SRC_IP = IPv4Address("10.0.1.10")
DST_IP = IPv4Address("10.0.2.10")

# Eth + IPv4 + TCP fixed headers (no TCP options) as one struct: the floor any
# pure-Python codec pays to get 54 bytes of fields in or out.
_FLOOR = struct.Struct("!6s6sHBBHHHBBHIIHHIIHHHH")


def _headers() -> tuple[EthernetHeader, IPv4Header, TcpHeader]:
    ethernet = EthernetHeader(MacAddress("02:00:00:00:00:02"), MacAddress("02:00:00:00:00:01"), ETH_P_IP)
    ip = IPv4Header(SRC_IP, DST_IP, IPPROTO_TCP, ttl=64, identification=0x1234, dont_fragment=True)
    segment = TcpHeader(
        40000, 5001, 0x1000_0000, 0x2000_0000, PSH | ACK, 502,
        options=(NOP, NOP, TimestampOption(123456789, 987654321)),
    )
    return ethernet, ip, segment


def _payload() -> bytes:
    """Non-zero, non-repeating-by-word payload so the checksum does real work."""
    return bytes((i * 7 + 13) & 0xFF for i in range(PAYLOAD_LENGTH))


def build_frame(buffer: bytearray, ethernet: EthernetHeader, ip: IPv4Header, segment: TcpHeader) -> None:
    """Push TCP, IPv4 and Ethernet headers in front of a payload already in `buffer` (the send path)."""
    tcp_length = segment.build_into(buffer, TCP_OFFSET, PAYLOAD_LENGTH, SRC_IP, DST_IP) + PAYLOAD_LENGTH
    ip.build_into(buffer, IP_OFFSET, tcp_length)
    ethernet.build_into(buffer, 0)


def parse_frame(frame: "bytes | memoryview") -> tuple[EthernetHeader, IPv4Header, TcpHeader]:
    """Header objects for all three layers (the receive path before any checksum)."""
    view = memoryview(frame)
    ethernet = EthernetHeader.parse(view)
    ip = IPv4Header.parse(view[ETHERNET_LENGTH:])
    start = ETHERNET_LENGTH + ip.header_length
    segment = TcpHeader.parse(view[start : ETHERNET_LENGTH + ip.total_length])
    return ethernet, ip, segment


def parse_and_verify_frame(frame: "bytes | memoryview") -> tuple[EthernetHeader, IPv4Header, TcpHeader]:
    """`parse_frame` plus the IPv4 header and TCP checksums, as a receiver must do."""
    view = memoryview(frame)
    ethernet = EthernetHeader.parse(view)
    ip_datagram = view[ETHERNET_LENGTH:]
    ip = IPv4Header.parse(ip_datagram)
    if not header_checksum_ok(ip_datagram):
        raise AssertionError("bad IPv4 checksum in the benchmark frame")
    tcp_segment = ip_datagram[ip.header_length : ip.total_length]
    segment = TcpHeader.parse(tcp_segment)
    if not tcp_checksum_ok(tcp_segment, ip.src, ip.dst):
        raise AssertionError("bad TCP checksum in the benchmark frame")
    return ethernet, ip, segment


def _check(frame: bytes, headers: tuple[EthernetHeader, IPv4Header, TcpHeader]) -> None:
    """Make sure the timed functions do what the rows claim before timing them."""
    ethernet, ip, segment = parse_and_verify_frame(frame)
    if len(frame) != FRAME_LENGTH or segment.header_length != TCP_HEADER_LENGTH:
        raise AssertionError("benchmark frame is not the 1514-byte timestamped segment it should be")
    if segment.option(TimestampOption) != headers[2].option(TimestampOption) or ip.dst != DST_IP:
        raise AssertionError("benchmark frame did not parse back to its headers")


def run() -> list[Row]:
    ethernet, ip, segment = _headers()
    buffer = bytearray(FRAME_LENGTH)
    buffer[PAYLOAD_OFFSET:] = _payload()
    build_frame(buffer, ethernet, ip, segment)
    frame = bytes(buffer)
    _check(frame, (ethernet, ip, segment))
    ip_datagram = memoryview(frame)[IP_OFFSET:]
    tcp_segment = memoryview(frame)[TCP_OFFSET:]
    checksum_data = frame[IP_OFFSET:]  # 1500 bytes
    floor_fields = _FLOOR.unpack_from(frame)
    floor_buffer = bytearray(FRAME_LENGTH)

    zmq_ns = 1e9 / zmq_frame_rate(FRAME_LENGTH)

    def row(metric: str, ns: float, target: str = "") -> Row:
        return Row(metric, ns, "ns", zmq_ns, "zmq frame", target)

    return [
        row("parse Eth+IPv4+TCP headers, 1514 B frame with TS option", ns_per_call(lambda: parse_frame(frame)), "<= 3000 ns"),
        row(
            "build Eth+IPv4+TCP into 1514 B buffer, both checksums",
            ns_per_call(lambda: build_frame(buffer, ethernet, ip, segment)),
            "<= 12000 ns",
        ),
        row("Internet checksum of 1500 B", ns_per_call(lambda: internet_checksum(checksum_data)), "<= 8000 ns"),
        # Informational: where the time goes, and the floors it is measured against.
        row("  parse + verify IPv4 and TCP checksums", ns_per_call(lambda: parse_and_verify_frame(frame))),
        row("  EthernetHeader.parse", ns_per_call(lambda: EthernetHeader.parse(frame))),
        row("  IPv4Header.parse", ns_per_call(lambda: IPv4Header.parse(ip_datagram))),
        row("  TcpHeader.parse (NOP NOP TS)", ns_per_call(lambda: TcpHeader.parse(tcp_segment))),
        row("  TcpView ports+seq+flags", ns_per_call(lambda: _view_fields(tcp_segment))),
        row(
            "  TcpHeader.build_into (checksum over 1480 B)",
            ns_per_call(lambda: segment.build_into(buffer, TCP_OFFSET, PAYLOAD_LENGTH, SRC_IP, DST_IP)),
        ),
        row("  IPv4Header.build_into", ns_per_call(lambda: ip.build_into(buffer, IP_OFFSET, PAYLOAD_LENGTH + 32))),
        row("  floor: one 54-byte Struct unpack", ns_per_call(lambda: _FLOOR.unpack_from(frame))),
        row("  floor: one 54-byte Struct pack_into", ns_per_call(lambda: _FLOOR.pack_into(floor_buffer, 0, *floor_fields))),
    ]


def _view_fields(segment: memoryview) -> tuple[int, int, int, int]:
    view = TcpView(segment)
    return view.src_port, view.dst_port, view.seq, view.flags
