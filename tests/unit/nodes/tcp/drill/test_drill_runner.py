"""The runner's plumbing without TCP: frames in and out of the stack on the fake clock (with
ICMP and UDP, which the stack always had), relative numbering, comparison and failures."""
from __future__ import annotations

import socket

import pytest

from nodes.wire.ipv4 import IPPROTO_UDP, IPv4Header
from nodes.wire.tcp import (
    ACK, PSH, SYN, MssOption, NopOption, SackOption, SackPermittedOption, TcpHeader, TimestampOption,
    WindowScaleOption,
)
from nodes.wire.udp import UdpHeader

from .harness import LOCAL_IP, REMOTE_IP, START, Harness, Sent
from .parser import ScriptError, parse, parse_packet
from .runner import Runner
from .segments import Numbering, build_inbound, compare, describe, pattern


ECHO = bytes((8, 0, 0, 0, 0, 0, 0, 1)) + b"hello"  # what a ping program writes: an echo request


def run(text: str) -> None:
    Runner(parse(text, "t.pkt")).run()


# ---------------------------------------------------------------------- the wire

def test_what_the_stack_sends_is_taken_off_eth0_with_its_time():
    harness = Harness()
    ping = harness.stack.sockets.socket(socket.AF_INET, socket.SOCK_DGRAM, socket.IPPROTO_ICMP)
    harness.stack.call_at(START + 0.25, lambda now: ping.sendto(ECHO, (str(REMOTE_IP), 0), now))
    harness.advance(1.0, stop_on_send=True)
    assert harness.time == 0.25
    (sent,) = harness.sent
    assert (sent.problem, sent.ip.src, sent.ip.dst, sent.icmp.type) == ("", LOCAL_IP, REMOTE_IP, 8)
    harness.sent.clear()
    harness.advance(2.0)
    assert harness.time == 2.0 and not harness.sent


def test_an_injected_datagram_reaches_the_stack_from_the_peer():
    harness = Harness()
    udp = UdpHeader(40000, 9, 0, 0).build(b"x", int(REMOTE_IP), int(LOCAL_IP))
    harness.inject_ip(IPPROTO_UDP, udp)
    (sent,) = harness.sent
    assert (sent.icmp.type, sent.icmp.code, sent.ip.dst) == (3, 3, REMOTE_IP)  # port unreachable, back to the peer
    quoted = IPv4Header.parse(sent.icmp.payload)
    assert (quoted.src, quoted.dst, quoted.protocol) == (REMOTE_IP, LOCAL_IP, IPPROTO_UDP)


def test_blocked_calls_retry_after_every_step():
    harness = Harness()
    steps = []
    harness.on_step = lambda: steps.append(harness.time) and False
    harness.stack.call_at(START + 0.5, lambda now: None)
    harness.advance(1.0)
    assert steps[0] == 0.0 and 0.5 in steps and steps[-1] == 1.0


# ---------------------------------------------------------------------- numbering

def test_payload_pattern_is_periodic_in_251():
    assert pattern(0, 3) == b"\x00\x01\x02"
    assert pattern(250, 3) == b"\xfa\x00\x01"
    assert pattern(1, 1000)[251:254] == pattern(1, 3)
    assert len(pattern(7, 100000)) == 100000


def test_injected_numbers_are_relative_to_both_isns():
    numbering = Numbering(remote_isn=2**32 - 10, local_isn=5000, ts_offset=1000)
    event = parse_packet("<", "P. 1:21(20) ack 101 win 257 <nop,nop,TS val 7 ecr 300,sack 201:301>")
    header, payload = build_inbound(event, numbering)
    assert (header.seq, header.ack, header.flags, header.window) == (2**32 - 9, 5101, PSH | ACK, 257)
    assert (header.src_port, header.dst_port) == (40000, 8080)
    assert header.options[2] == TimestampOption(7, 1300)  # ecr in our clock's numbers
    assert header.options[3] == SackOption(((5201, 5301),))
    assert payload == pattern(1, 20)


def test_an_injected_syn_marks_a_new_connection():
    numbering = Numbering(local_isn=5000)
    build_inbound(parse_packet("<", "S 10:10(0) win 100"), numbering)
    assert numbering.expect_syn and numbering.remote_syn == 10


def _sent(header: TcpHeader, payload: bytes = b"", problem: str = "") -> Sent:
    return Sent(0.0, b"", tcp=header, payload=payload, problem=problem)


def test_our_isn_and_timestamp_offset_come_from_our_syn():
    numbering = Numbering(remote_isn=100)
    syn_ack = TcpHeader(8080, 40000, 777, 101, SYN | ACK, 65535, options=(
        MssOption(1460), SackPermittedOption(), TimestampOption(5000, 9), NopOption(), WindowScaleOption(7)))
    event = parse_packet(">", "S. 0:0(0) ack 1 <mss 1460,sackOK,TS val 100 ecr 9,nop,wscale 7>")
    assert compare(event, _sent(syn_ack), numbering) == []
    assert (numbering.local_isn, numbering.ts_offset) == (777, 4900)
    data = TcpHeader(8080, 40000, 778, 101, PSH | ACK, 502)
    assert compare(parse_packet(">", "P. 1:11(10) ack 1"), _sent(data, pattern(1, 10)), numbering) == []


def test_every_difference_is_named():
    numbering = Numbering(remote_isn=100, local_isn=1000)
    header = TcpHeader(8080, 40000, 1001, 150, ACK, 500, options=(NopOption(), NopOption(), TimestampOption(1, 2)))
    event = parse_packet(">", "P. 1:11(10) ack 1 win 257")
    differences = compare(event, _sent(header, pattern(1, 5)), numbering)
    assert differences == [
        "flags ., expected P.",
        "sequence 1:6(5), expected 1:11(10)",
        "ack 50, expected 1",
        "win 500, expected 257",
        "options <nop,nop,TS val 1 ecr 2>, expected <>",
    ]
    assert compare(parse_packet(">", ". 1:6(5) ack 50 <...>"), _sent(header, b"wrong"), numbering) == [
        "payload bytes are not the bytes written"]
    assert compare(parse_packet(">", ". 1:6(5)"), _sent(header, b"", "bad TCP checksum"), numbering) == [
        "bad TCP checksum"]


def test_sent_segments_print_in_script_syntax():
    numbering = Numbering(remote_isn=100, local_isn=1000)
    header = TcpHeader(8080, 40000, 1001, 201, PSH | ACK, 502, options=(
        NopOption(), NopOption(), SackOption(((301, 401),))))
    assert describe(_sent(header, pattern(1, 10)), numbering) == (
        "0.000000 > P. 1:11(10) ack 101 win 502 <nop,nop,sack 201:301>")


# ---------------------------------------------------------------------- failures

def test_a_segment_that_never_comes_fails_at_its_line():
    with pytest.raises(ScriptError, match=r"^t.pkt:2: expected a segment by 1.004000, the stack sent nothing"):
        run("// nothing happens\n1 > S 0:0(0)\n")


def test_a_segment_nobody_expected_fails_before_the_next_event():
    # the stack answers the SYN (an RST, or ICMP while no TCP is registered): the script says nothing of it
    with pytest.raises(ScriptError, match=r"^t.pkt:2: the stack sent a segment the script does not expect "
                                          r"\(before line 2\):\n  actual:   0.000000 > "):
        run("0 < S 0:0(0) win 1000\n+1 < . 1:1(0) ack 1 win 1000\n")


def test_a_segment_after_the_last_event_fails_too():
    with pytest.raises(ScriptError, match=r"^t.pkt:1: .*after the last event"):
        run("0 < S 0:0(0) win 1000\n")


def test_unknown_calls_and_directives_are_errors():
    with pytest.raises(ScriptError, match=r"^t.pkt:1: unsupported call frob\(\)"):
        run("0 frob(1) = 0\n")
    with pytest.raises(ScriptError, match="unknown directive"):
        run("--speed=3\n0 > S 0:0(0)\n")


def test_time_cannot_go_backwards():
    with pytest.raises(ScriptError, match=r"^t.pkt:2: time 0.500000 is before"):
        run("1 fcntl(3, F_GETFL) = -1 EBADF\n0.5 fcntl(3, F_GETFL) = -1 EBADF\n")


def test_a_call_returning_otherwise_fails_with_both_results():
    with pytest.raises(ScriptError, match=r"^t.pkt:1: fcntl\(\) returned -1 EBADF, expected 0"):
        run("0 fcntl(9, F_GETFL) = 0\n")


# ---------------------------------------------------------------------- blocking calls

LISTENER = ("0 socket(..., SOCK_STREAM, IPPROTO_TCP) = 3\n"
            "+0 bind(3, ..., ...) = 0\n"
            "+0 listen(3, 1) = 0\n")


def test_a_blocking_call_that_never_returns_fails_at_its_line():
    with pytest.raises(ScriptError, match=r"^t.pkt:4: accept\(\) never returned"):
        run(LISTENER + "+0 accept(3, ..., ...) = 4\n")


def test_a_blocking_call_must_return_before_the_next_call():
    with pytest.raises(ScriptError, match=r"^t.pkt:4: accept\(\) had not returned by line 5"):
        run(LISTENER + "+0 accept(3, ..., ...) = 4\n+1 listen(3, 2) = 0\n")


def test_a_blocking_call_must_return_by_its_end_time():
    with pytest.raises(ScriptError, match=r"^t.pkt:4: accept\(\) had not returned at 0.500000"):
        run(LISTENER + "+0...0.5 accept(3, ..., ...) = 4\n+1 listen(3, 2) = 0\n")


def test_a_blocked_call_returns_as_the_stack_answers():
    # accept() blocks from 0 until the handshake completes at 0.2, and the script says so
    run(LISTENER + "+0...0.2 accept(3, ..., ...) = 4\n"
        "+.1 < S 0:0(0) win 1000 <mss 1000>\n"
        "+0 > S. 0:0(0) ack 1 <mss 1460>\n"
        "+.1 < . 1:1(0) ack 1 win 1000\n")
    with pytest.raises(ScriptError, match=r"^t.pkt:4: accept\(\) had not returned at 0.100000"):
        run(LISTENER + "+0...0.1 accept(3, ..., ...) = 4\n"
            "+.1 < S 0:0(0) win 1000 <mss 1000>\n"
            "+0 > S. 0:0(0) ack 1 <mss 1460>\n"
            "+.1 < . 1:1(0) ack 1 win 1000\n")


def test_a_segment_sent_too_early_fails_with_both_times():
    with pytest.raises(ScriptError, match=r"(?s)^t.pkt:5: .*sent at 0.000000, expected at 0.500000"):
        run(LISTENER + "+0 < S 0:0(0) win 1000 <mss 1000>\n+.5 > S. 0:0(0) ack 1 <mss 1460>\n")
    # a range admits it
    run(LISTENER + "+0 < S 0:0(0) win 1000 <mss 1000>\n+0~+.5 > S. 0:0(0) ack 1 <mss 1460>\n")


def test_a_blocked_call_returning_early_fails_too():
    with pytest.raises(ScriptError, match=r"^t.pkt:4: accept\(\) returned at 0.200000, expected at 0.500000"):
        run(LISTENER + "+0...0.5 accept(3, ..., ...) = 4\n"
            "+.1 < S 0:0(0) win 1000 <mss 1000>\n"
            "+0 > S. 0:0(0) ack 1 <mss 1460>\n"
            "+.1 < . 1:1(0) ack 1 win 1000\n")


def test_an_exception_in_the_stack_fails_at_the_line_that_caused_it(monkeypatch):
    from nodes.ipv4 import IPv4Layer

    def broken(*args, **kwargs):
        raise ZeroDivisionError("boom")

    monkeypatch.setattr(IPv4Layer, "receive", broken)
    with pytest.raises(ScriptError, match=r"^t.pkt:2: the stack raised ZeroDivisionError: boom"):
        run("// a frame in\n0 < S 0:0(0) win 1000\n")
    monkeypatch.setattr("nodes.nic.NapiScheduler.reraise", False)  # as outside the test suite
    with pytest.raises(ScriptError, match=r"^t.pkt:2: the stack's exception barrier caught 1 frame"):
        run("// a frame in\n0 < S 0:0(0) win 1000\n")


def test_each_peer_port_keeps_its_own_isns():
    numbering = Numbering(local_isn=5000, remote_syn=7)
    numbering.switch_peer_port(40001)
    assert (numbering.remote_port, numbering.local_isn, numbering.remote_syn) == (40001, None, 0)
    numbering.local_isn = 9000
    numbering.switch_peer_port(40000)
    assert (numbering.remote_port, numbering.local_isn, numbering.remote_syn) == (40000, 5000, 7)
    numbering.switch_peer_port(40001)
    assert numbering.local_isn == 9000
