"""IP options as Linux acts on them (issue 14 item 11): source routes refused by default, malformed
options answered with Parameter Problem, record route and timestamp filled in on the way."""
from __future__ import annotations

import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from nodes.ip_options import MS_PER_DAY, OptionError, compile_options
from nodes.memnet import host_router_host
from nodes.wire.addresses import IPv4Address
from nodes.wire.ethernet import EthernetHeader
from nodes.wire.icmp import DEST_UNREACH, PARAMETER_PROBLEM, SR_FAILED, IcmpMessage
from nodes.wire.ipv4 import (
    IPPROTO_ICMP,
    IPv4Header,
    IPv4View,
    header_checksum_ok,
    refresh_header_checksum,
    set_destination,
)

H1 = IPv4Address("10.0.1.10")
H2 = IPv4Address("10.0.2.10")
R1_LAN1 = IPv4Address("10.0.1.1")
R1_LAN2 = IPv4Address("10.0.2.1")
ETH_P_IP = 0x0800


def address(text: str) -> bytes:
    return int(IPv4Address(text)).to_bytes(4, "big")


def record_route(slots: int, pointer: int = 4, filled: bytes = b"") -> bytes:
    body = filled + bytes(4 * slots - len(filled))
    return bytes((7, 3 + 4 * slots, pointer)) + body + b"\x00"  # End of List pads to a word


def source_route(kind: int, hops: list[str], pointer: int = 4) -> bytes:
    return bytes((kind, 3 + 4 * len(hops), pointer)) + b"".join(address(hop) for hop in hops) + b"\x01"


def timestamp(slots_bytes: int, flags: int, pointer: int = 5) -> bytes:
    return bytes((68, 4 + slots_bytes, pointer, flags)) + bytes(slots_bytes)


LSRR, SSRR = 131, 137


class Lab:
    """h1 -- lan1 -- r1 -- lan2 -- h2, with every frame on each segment kept."""

    def __init__(self, **r1_sysctl: int) -> None:
        self.net, self.h1, self.r1, self.h2 = host_router_host()
        for name, value in r1_sysctl.items():
            self.r1.sysctl.set(name, value)
        self.frames: dict[str, list[bytes]] = {"lan1": [], "lan2": []}
        self.net.taps.append(lambda segment, frame: self.frames[segment].append(frame))

    def send(self, options: bytes, dst: IPv4Address = H2) -> None:
        """An echo request from h1 with `options`, put on lan1 toward r1 as h1 would send it."""
        echo = IcmpMessage.echo_request(0x77, 1, b"options").build()
        datagram = IPv4Header(H1, dst, IPPROTO_ICMP, ttl=64, identification=7, options=options).build(echo)
        frame = EthernetHeader(self.r1.devices["eth0"].mac, self.h1.devices["eth0"].mac, ETH_P_IP).build(datagram)
        self.r1.receive("eth0", frame)
        self.net.run(0.5)

    def datagrams(self, segment: str, src: IPv4Address | None = None) -> list[IPv4View]:
        views = [IPv4View(frame[14:]) for frame in self.frames[segment] if frame[12:14] == b"\x08\x00"]
        return [view for view in views if src is None or view.src == src]

    def icmp_to_h1(self) -> list[IcmpMessage]:
        return [IcmpMessage.parse(view.payload) for view in self.datagrams("lan1")
                if view.dst == H1 and view.protocol == IPPROTO_ICMP]

    def forwarded(self) -> list[IPv4View]:
        return [view for view in self.datagrams("lan2") if view.src == H1]


def options_of(view: IPv4View) -> bytes:
    return bytes(view.buffer[20:view.header_length])


# ------------------------------------------------------------------ source routes


@pytest.mark.parametrize("kind", [LSRR, SSRR], ids=["loose", "strict"])
def test_a_source_routed_datagram_is_dropped_by_default(kind):
    lab = Lab()
    lab.send(source_route(kind, ["10.0.2.10"]), dst=R1_LAN1)
    assert lab.forwarded() == []
    assert lab.icmp_to_h1() == []  # dropped silently, as ip_rcv_options does
    assert lab.r1.counters()["Ip"]["SourceRouteDrops"] == 1


def test_a_source_routed_datagram_through_a_router_it_does_not_name_is_dropped_too():
    lab = Lab()
    lab.send(source_route(LSRR, ["10.0.2.99"]))
    assert lab.forwarded() == []
    assert lab.r1.counters()["Ip"]["SourceRouteDrops"] == 1


def test_an_accepted_loose_route_is_followed_and_records_the_egress_address():
    lab = Lab(**{"net.ipv4.conf.all.accept_source_route": 1})
    lab.send(source_route(LSRR, ["10.0.2.10"]), dst=R1_LAN1)
    [view] = lab.forwarded()
    assert view.dst == H2
    assert options_of(view) == source_route(LSRR, ["10.0.2.1"], pointer=8)
    assert header_checksum_ok(view.buffer)
    assert view.ttl == 63


def test_a_strict_route_to_a_hop_behind_a_gateway_fails():
    lab = Lab(**{"net.ipv4.conf.all.accept_source_route": 1})
    lab.r1.add_route({"dst": "10.5.0.0/16", "gateway": "10.0.2.10"})
    lab.send(source_route(SSRR, ["10.5.0.1"]), dst=R1_LAN1)
    assert lab.forwarded() == []
    [error] = lab.icmp_to_h1()
    assert (error.type, error.code) == (DEST_UNREACH, SR_FAILED)


def test_a_strict_route_through_a_router_it_does_not_name_is_a_parameter_problem():
    lab = Lab(**{"net.ipv4.conf.all.accept_source_route": 1})
    lab.send(source_route(SSRR, ["10.0.2.99"]))
    [error] = lab.icmp_to_h1()
    assert (error.type, error.pointer) == (PARAMETER_PROBLEM, 16)  # the destination address field


# ------------------------------------------------------------------ malformed options


@pytest.mark.parametrize("options, pointer", [
    pytest.param(bytes((7, 7, 3, 0, 0, 0, 0, 0)), 22, id="record route pointer below 4"),
    pytest.param(bytes((7, 1, 0, 0)), 20, id="length below 2"),
    pytest.param(bytes((1, 1, 7, 9)), 22, id="length past the header"),
    pytest.param(bytes((1, 1, 1, 7)), 23, id="type without a length"),
    pytest.param(bytes((7, 7, 4)) + bytes(4) + b"\x01" + bytes((7, 7, 4)) + bytes(4) + b"\x01", 28,
                 id="a second record route"),
    pytest.param(bytes((68, 3, 5, 0)), 21, id="timestamp shorter than 4"),
    pytest.param(bytes((68, 12, 4, 0)) + bytes(8), 22, id="timestamp pointer below 5"),
    pytest.param(bytes((68, 8, 9, 0xF0)) + bytes(4), 23, id="full timestamp overflowing past 15"),
    pytest.param(bytes((68, 8, 5, 1)) + bytes(4), 22, id="address and stamp without room for both"),
    pytest.param(bytes((148, 2, 0, 0)), 21, id="router alert shorter than 4"),
])
def test_a_malformed_option_is_answered_with_a_parameter_problem(options, pointer):
    lab = Lab()
    lab.send(options)
    assert lab.forwarded() == []
    [error] = lab.icmp_to_h1()
    assert (error.type, error.code, error.pointer) == (PARAMETER_PROBLEM, 0, pointer)
    assert lab.r1.counters()["Ip"]["InHdrErrors"] == 1
    assert lab.r1.counters()["Icmp"]["OutParmProbs"] == 1


# ------------------------------------------------------------------ record route and timestamp


def test_record_route_gets_the_egress_address_of_a_router():
    lab = Lab()
    lab.send(record_route(2))
    [view] = lab.forwarded()
    assert options_of(view) == record_route(2, pointer=8, filled=address("10.0.2.1"))
    assert header_checksum_ok(view.buffer)
    assert lab.h1.counters()["Icmp"]["InEchoReps"] == 1  # h2 took it (and filled its own slot)


def test_a_full_record_route_passes_unchanged():
    full = record_route(1, pointer=8, filled=address("10.9.9.9"))
    lab = Lab()
    lab.send(full)
    [view] = lab.forwarded()
    assert options_of(view) == full


def test_timestamp_only_is_stamped_with_milliseconds_of_the_day():
    lab = Lab()
    sent_at = lab.net.now
    lab.send(timestamp(8, 0))
    [view] = lab.forwarded()
    option = options_of(view)
    assert option[:4] == bytes((68, 12, 9, 0))
    stamp = struct.unpack("!I", option[4:8])[0]
    assert 0 <= stamp - int(sent_at * 1000) % MS_PER_DAY <= 10  # ms since midnight of `now`
    assert option[8:12] == bytes(4)


def test_timestamp_with_addresses_records_the_address_toward_the_sender():
    lab = Lab()
    lab.send(timestamp(16, 1))
    [view] = lab.forwarded()
    option = options_of(view)
    assert option[2] == 13 and option[4:8] == address("10.0.1.1")  # fib_compute_spec_dst


def test_a_prespecified_timestamp_waits_for_the_host_it_names():
    lab = Lab()
    lab.send(bytes((68, 20, 5, 3)) + address("10.0.2.10") + bytes(4) + address("10.0.2.1") + bytes(4))
    [view] = lab.forwarded()
    assert options_of(view)[2] == 5  # the first entry names h2: r1 leaves it alone


def test_a_full_timestamp_counts_its_overflow():
    lab = Lab()
    lab.send(bytes((68, 8, 9, 0x20)) + bytes(4))
    [view] = lab.forwarded()
    assert options_of(view)[3] == 0x30


# ------------------------------------------------------------------ compile_options, alone


def test_compile_rewrites_what_follows_end_of_list_as_end():
    header = bytearray(IPv4Header(H1, H2, IPPROTO_ICMP, options=b"\x00\x07\x01\x01").build())
    compiled = compile_options(memoryview(header)[:24], 0, 0, lambda address: False)
    assert bytes(header[20:24]) == bytes(4) and compiled.changed


def test_compile_raises_with_the_offset_of_the_bad_octet():
    header = bytearray(IPv4Header(H1, H2, IPPROTO_ICMP, options=source_route(LSRR, ["10.0.0.1"], pointer=3)).build())
    with pytest.raises(OptionError) as raised:
        compile_options(memoryview(header)[:28], 0, 0, lambda address: False)
    assert raised.value.pointer == 22


@settings(max_examples=200, deadline=None)
@given(options=st.binary(min_size=1, max_size=40), accept=st.booleans(), to_router=st.booleans())
def test_any_options_end_in_a_counter_never_an_exception(options, accept, to_router):
    """Whatever the options, r1 forwards, answers or drops with a count (the memnet stacks reraise)."""
    lab = Lab(**{"net.ipv4.conf.all.accept_source_route": int(accept)})
    options = options + bytes(-len(options) % 4)
    lab.send(options, dst=R1_LAN1 if to_router else H2)
    for view in lab.forwarded():
        assert header_checksum_ok(view.buffer)


def test_wire_helpers_rewrite_the_destination_and_the_checksum():
    header = bytearray(IPv4Header(H1, H2, IPPROTO_ICMP, options=record_route(1)).build())
    set_destination(header, int(R1_LAN2))
    assert not header_checksum_ok(header)
    refresh_header_checksum(header)
    assert header == IPv4Header(H1, R1_LAN2, IPPROTO_ICMP, options=record_route(1)).build()
