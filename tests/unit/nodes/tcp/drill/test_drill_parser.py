"""The script parser: packetdrill's syntax as our scripts write it, and errors at FILE:LINE."""
from __future__ import annotations

import pytest

from .parser import (
    CallEvent, IcmpEvent, Option, PacketEvent, ScriptError, SysctlEvent, parse, parse_call, parse_options,
    parse_packet, parse_time, split_arguments,
)


def test_times_absolute_relative_any_and_ranges():
    assert (parse_time("0.100").kind, parse_time("0.100").value) == ("absolute", 0.1)
    assert (parse_time("+.2").kind, parse_time("+.2").value) == ("relative", 0.2)
    assert parse_time("+0").value == 0.0
    assert parse_time("*").kind == "any"
    call_range = parse_time("+.1...0.200")
    assert (call_range.kind, call_range.value, call_range.separator, call_range.end, call_range.end_relative) == (
        "relative", 0.1, "...", 0.2, False)
    packet_range = parse_time("1~+2.5")
    assert (packet_range.separator, packet_range.end, packet_range.end_relative) == ("~", 2.5, True)


@pytest.mark.parametrize("text", ["", "+", "abc", "1..2", "*~1", "-1", "+0.1.2"])
def test_bad_times_are_errors(text):
    with pytest.raises(ScriptError):
        parse_time(text, "t.pkt", 7)


def test_injected_syn_with_every_option():
    event = parse_packet("<", "S 0:0(0) win 32792 <mss 1000,sackOK,TS val 100 ecr 0,nop,wscale 7>")
    assert event == PacketEvent("<", "S", 0, 0, None, 32792, [
        Option("mss", (1000,)), Option("sackOK"), Option("TS", (100, 0)), Option("nop"), Option("wscale", (7,))])


def test_expected_data_segment_fields():
    event = parse_packet(">", "P. 1:1001(1000) ack 1 win 257")
    assert (event.flags, event.start, event.end, event.ack, event.window, event.options) == (
        "P.", 1, 1001, 1, 257, [])


def test_any_options_and_wildcard_timestamps_on_expected_segments():
    assert parse_packet(">", ". 1:1(0) ack 1 <...>").options is None
    (timestamp,) = parse_packet(">", ". 1:1(0) ack 1 <TS val * ecr 700>").options
    assert timestamp == Option("TS", (None, 700))


def test_sack_blocks_and_eol():
    options = parse_options("nop,nop,sack 1001:2001 3001:4001,eol")
    assert options[2] == Option("sack", ((1001, 2001), (3001, 4001)))
    assert options[3] == Option("eol")


@pytest.mark.parametrize("text, complaint", [
    ("S 0:1(0) win 1", "is not"),  # END - START must be LEN
    ("Q 0:0(0)", "bad flags"),
    ("SS 0:0(0)", "bad flags"),
    ("S 0:0", "bad segment"),
    (". 1:1(0) win 5", "needs `ack N`"),  # an injected ACK states its ack
    ("S 0:0(0) win", "needs a value"),
    ("S 0:0(0) urg 5", "unknown field"),
    ("S 0:0(0) <mss>", "bad option"),
    ("S 0:0(0) <sack 1-2>", "bad SACK block"),
    ("S 0:0(0) <...>", "expected segments only"),
    ("S 0:0(0) <mss 5", "must end the line"),
])
def test_bad_segments_name_the_problem(text, complaint):
    with pytest.raises(ScriptError, match=complaint):
        parse_packet("<", text, "x.pkt", 3)


def test_calls_with_results_and_errnos():
    assert parse_call("socket(..., SOCK_STREAM, IPPROTO_TCP) = 3") == CallEvent(
        "socket", ["...", "SOCK_STREAM", "IPPROTO_TCP"], 3, None)
    call = parse_call("connect(3, ..., ...) = -1 EINPROGRESS (Operation now in progress)")
    assert (call.result, call.errno_name) == (-1, "EINPROGRESS")
    call = parse_call("setsockopt(4, SOL_SOCKET, SO_LINGER, {l_onoff=1, l_linger=0}, 8) = 0")
    assert call.args == ["4", "SOL_SOCKET", "SO_LINGER", "{l_onoff=1, l_linger=0}", "8"]
    assert parse_call("fcntl(3, F_SETFL, O_RDWR|O_NONBLOCK) = 0").args[2] == "O_RDWR|O_NONBLOCK"


def test_a_failing_call_must_name_its_errno_and_only_it():
    with pytest.raises(ScriptError, match="errno"):
        parse_call("read(3, ..., 10) = -1")
    with pytest.raises(ScriptError, match="errno"):
        parse_call("read(3, ..., 10) = 0 EAGAIN")


def test_arguments_split_at_top_level_commas_only():
    assert split_arguments('[{fd=4, events=POLLIN}], 1, 0') == ["[{fd=4, events=POLLIN}]", "1", "0"]
    assert split_arguments('3, "a,b"') == ["3", '"a,b"']
    assert split_arguments("") == []
    with pytest.raises(ScriptError):
        split_arguments("[1, 2")


def test_icmp_events():
    (event,) = parse("0 < icmp unreachable frag_needed mtu 1200 [1:1461(1460)]").events
    assert event.body == IcmpEvent("<", "unreachable", "frag_needed", 1200, (1, 1461))
    (event,) = parse("0 > icmp unreachable port_unreachable").events
    assert event.body == IcmpEvent(">", "unreachable", "port_unreachable")
    with pytest.raises(ScriptError, match="needs `mtu N`"):
        parse("0 < icmp unreachable frag_needed")
    with pytest.raises(ScriptError, match="unknown ICMP code"):
        parse("0 < icmp unreachable bogus")


def test_a_script_keeps_line_numbers_comments_directives_and_sysctls():
    script = parse(
        "// a comment line\n"
        "--tolerance_usecs=10000\n"
        "`sysctl -q net.ipv4.tcp_timestamps=0; sysctl -q net.ipv4.tcp_sack=0`\n"
        "\n"
        "0 socket(..., SOCK_STREAM, IPPROTO_TCP) = 3   // trailing comment\n"
        "+0 /* inline */ bind(3, ..., ...) = 0\n"
        "+.1 < S 0:0(0) win 1000\n",
        "demo.pkt",
    )
    assert script.directives == {"tolerance_usecs": "10000"}
    assert [event.line for event in script.events] == [3, 5, 6, 7]
    assert script.events[0].body == SysctlEvent([("net.ipv4.tcp_timestamps", "0"), ("net.ipv4.tcp_sack", "0")])
    assert script.events[2].body.name == "bind"
    assert script.events[3].time.kind == "relative"


@pytest.mark.parametrize("text, line, complaint", [
    ("0 socket(..., SOCK_STREAM, IPPROTO_TCP) = 3\n+0 frobnicate", 2, "not a segment"),
    ("\n\n0", 3, "without an event"),
    ("0 < S 0:0(0)\n%{ print(1) }%", 2, "python"),
    ("`echo hi`", 1, "sysctl"),
    ("0...1 < S 0:0(0) win 1", 1, "for calls"),
    ("0~1 read(3, ..., 1) = 1", 1, "for expected segments"),
    ("0~1 < S 0:0(0) win 1", 1, "for expected segments"),
])
def test_script_errors_carry_file_and_line(text, line, complaint):
    with pytest.raises(ScriptError, match=complaint) as caught:
        parse(text, "bad.pkt")
    assert (caught.value.path, caught.value.line) == ("bad.pkt", line)
    assert str(caught.value).startswith(f"bad.pkt:{line}: ")
