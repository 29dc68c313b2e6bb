"""Script segments and wire segments: relative numbers, building what is injected, comparing
what was sent with what the script expects, and printing either in the script's syntax.

Sequence numbers are relative as in packetdrill: the peer's (what `<` segments carry as
START:END and `>` segments as `ack`) are offsets from `remote_isn`, a fixed number; ours (`>`
START:END, `<` ack, SACK blocks we are sent) are offsets from the ISN of the stack's SYN, learned
from the first SYN it sends for a connection (0 before any). Timestamps: the peer's TSval is
written as is; our TSval is not checked (its clock has a random per-connection offset), but the
first one the script writes as a number fixes that offset, and an injected `ecr N` is N plus it,
so a script echoes our clock in its own numbers as packetdrill's do. Our TSecr is checked.

Payload bytes are a known pattern (`pattern`): the byte at relative sequence number s is
s % 251, both ways, so reads check what arrived and outbound data is checked against writes.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from nodes.wire.tcp import (
    ACK, CWR, ECE, FIN, PSH, RST, SYN, URG, EolOption, MssOption, NopOption, SackOption, SackPermittedOption,
    TcpHeader, TimestampOption, WindowScaleOption,
)

from .harness import Sent
from .parser import ICMP_CODES, IcmpEvent, Option, PacketEvent

MOD = 1 << 32
FLAG_BITS = {"S": SYN, "F": FIN, "R": RST, "P": PSH, "U": URG, "E": ECE, "W": CWR, ".": ACK}
DEFAULT_WINDOW = 65535
LOCAL_PORT = 8080  # bind(..., ...) and connect(..., ...) use it: ours when listening, the peer's when connecting
REMOTE_PORT = 40000  # the peer's port toward our listener
_BASE = bytes(range(251))


def pattern(start: int, length: int) -> bytes:
    """The payload of relative sequence numbers start..start+length."""
    offset = start % 251
    repeats = (offset + length) // 251 + 1
    return (_BASE * repeats)[offset : offset + length]


def flag_bits(letters: str) -> int:
    bits = 0
    for letter in letters:
        bits |= FLAG_BITS[letter]
    return bits


def flag_letters(bits: int) -> str:
    text = "".join(letter for letter, bit in FLAG_BITS.items() if bits & bit)
    return text or "none"


@dataclass(slots=True)
class Numbering:
    """The connection the script talks about: ports, ISNs, the timestamp offset."""

    remote_isn: int = 3_000_000_000
    local_isn: int | None = None
    local_port: int = LOCAL_PORT
    remote_port: int = REMOTE_PORT
    ts_offset: int | None = None
    remote_syn: int = 0  # script START of the last SYN injected: reads begin after it
    expect_syn: bool = False  # a SYN was injected or connect() called: our next SYN has a new ISN
    others: dict[int, tuple[int | None, int]] = field(default_factory=dict)  # other peer ports' ISN, SYN

    def switch_peer_port(self, port: int) -> None:
        """The segments that follow belong to the peer's connection from `port` (peer_port(N)):
        each keeps its own ISN; the timestamp offset, per address pair, is shared."""
        self.others[self.remote_port] = (self.local_isn, self.remote_syn)
        self.remote_port = port
        self.local_isn, self.remote_syn = self.others.get(port, (None, 0))

    def ours(self, relative: int) -> int:
        return (relative + (self.local_isn or 0)) % MOD

    def theirs(self, relative: int) -> int:
        return (relative + self.remote_isn) % MOD

    def relative_ours(self, live: int) -> int:
        return _signed((live - (self.local_isn or 0)) % MOD)

    def relative_theirs(self, live: int) -> int:
        return _signed((live - self.remote_isn) % MOD)

    def new_connection(self) -> None:
        """A SYN may start another connection: if the next segment we send is a SYN (or a
        SYN-ACK), it fixes a new ISN; any other keeps the old one (a challenge ACK, a RST)."""
        self.expect_syn = True


def _signed(value: int) -> int:
    return value - MOD if value >= 1 << 31 else value


# ------------------------------------------------------------------------- injected

def build_inbound(event: PacketEvent, numbering: Numbering) -> tuple[TcpHeader, bytes]:
    flags = flag_bits(event.flags)
    if flags & SYN:
        numbering.remote_syn = event.start
        if not flags & ACK:
            numbering.new_connection()
    ack = numbering.ours(event.ack) if event.ack is not None else 0
    window = event.window if event.window is not None else DEFAULT_WINDOW
    options = tuple(_wire_option(option, numbering) for option in event.options or ())
    header = TcpHeader(numbering.remote_port, numbering.local_port, numbering.theirs(event.start), ack, flags,
                       window, options=options)
    return header, pattern(event.start, event.end - event.start)


def _wire_option(option: Option, numbering: Numbering):
    name, values = option.name, option.values
    if name == "mss":
        return MssOption(values[0])
    if name == "wscale":
        return WindowScaleOption(values[0])
    if name == "sackOK":
        return SackPermittedOption()
    if name == "nop":
        return NopOption()
    if name == "eol":
        return EolOption()
    if name == "sack":
        return SackOption(tuple((numbering.ours(left), numbering.ours(right)) for left, right in values))
    value, echo = values
    if value is None or echo is None:
        raise ValueError("an injected TS needs numbers: TS val N ecr N")
    if echo and numbering.ts_offset is not None:
        echo = (echo + numbering.ts_offset) % MOD
    return TimestampOption(value, echo)


# ------------------------------------------------------------------------- expected

def compare(event: PacketEvent, sent: Sent, numbering: Numbering) -> list[str]:
    """What differs between the expected segment and the one sent ([] when it matches).

    Learns our ISN from a SYN when none is known yet, and the timestamp offset."""
    if sent.problem:
        return [sent.problem]
    header = sent.tcp
    if header is None:
        return ["not a TCP segment"]
    differences: list[str] = []
    flags = flag_bits(event.flags)
    if header.flags & SYN and (numbering.local_isn is None or numbering.expect_syn):
        numbering.local_isn = (header.seq - event.start) % MOD
        numbering.local_port = header.src_port
    numbering.expect_syn = False
    ports = (numbering.local_port, numbering.remote_port)
    if (header.src_port, header.dst_port) != ports:
        differences.append(f"ports {header.src_port} > {header.dst_port}, expected {ports[0]} > {ports[1]}")
    if header.flags != flags:
        differences.append(f"flags {flag_letters(header.flags)}, expected {flag_letters(flags)}")
    start = numbering.relative_ours(header.seq)
    length = len(sent.payload)
    if (start, length) != (event.start, event.end - event.start):
        differences.append(f"sequence {start}:{start + length}({length}), expected "
                           f"{event.start}:{event.end}({event.end - event.start})")
    elif length and sent.payload != pattern(start, length):
        differences.append("payload bytes are not the bytes written")
    if event.ack is not None:
        if not header.flags & ACK or header.ack != numbering.theirs(event.ack):
            differences.append(f"ack {numbering.relative_theirs(header.ack)}, expected {event.ack}")
    if event.window is not None and header.window != event.window:
        differences.append(f"win {header.window}, expected {event.window}")
    if event.options is not None:
        differences.extend(_compare_options(event.options, header, numbering))
    return differences


def _compare_options(expected: list[Option], header: TcpHeader, numbering: Numbering) -> list[str]:
    actual = [option for option in header.options if not (type(option) is EolOption and not option.padding)]
    written = format_options(header, numbering)
    wanted = "<" + ",".join(_format_option(option) for option in expected) + ">"
    if len(actual) != len(expected):
        return [f"options {written}, expected {wanted}"]
    for option, live in zip(expected, actual):
        if not _option_matches(option, live, numbering):
            return [f"options {written}, expected {wanted}"]
    return []


def _option_matches(option: Option, live, numbering: Numbering) -> bool:
    name, values = option.name, option.values
    if name == "mss":
        return type(live) is MssOption and live.mss == values[0]
    if name == "wscale":
        return type(live) is WindowScaleOption and live.shift == values[0]
    if name == "sackOK":
        return type(live) is SackPermittedOption
    if name == "nop":
        return type(live) is NopOption
    if name == "eol":
        return type(live) is EolOption
    if name == "sack":
        return type(live) is SackOption and live.blocks == tuple(
            (numbering.theirs(left), numbering.theirs(right)) for left, right in values)
    if type(live) is not TimestampOption:
        return False
    value, echo = values
    if value is not None and numbering.ts_offset is None:
        numbering.ts_offset = (live.value - value) % MOD
    return echo is None or live.echo == echo


# --------------------------------------------------------------------------- ICMP

def compare_icmp(event: IcmpEvent, sent: Sent) -> list[str]:
    if sent.problem:
        return [sent.problem]
    if sent.icmp is None:
        return ["not an ICMP message"]
    code = ICMP_CODES[event.code_name]
    if (sent.icmp.type, sent.icmp.code) != (3, code):
        return [f"ICMP type {sent.icmp.type} code {sent.icmp.code}, expected 3 (unreachable) code {code}"]
    if event.mtu is not None and sent.icmp.next_hop_mtu != event.mtu:
        return [f"next-hop MTU {sent.icmp.next_hop_mtu}, expected {event.mtu}"]
    return []


# --------------------------------------------------------------------------- printing

def describe(sent: Sent, numbering: Numbering) -> str:
    """A sent frame in the script's syntax (relative numbers), for failure messages."""
    if sent.tcp is not None:
        header = sent.tcp
        start = numbering.relative_ours(header.seq)
        length = len(sent.payload)
        text = f"> {flag_letters(header.flags)} {start}:{start + length}({length})"
        if header.flags & ACK:
            text += f" ack {numbering.relative_theirs(header.ack)}"
        text += f" win {header.window}"
        if header.options:
            text += " " + format_options(header, numbering)
        if (header.src_port, header.dst_port) != (numbering.local_port, numbering.remote_port):
            text += f"  (ports {header.src_port} > {header.dst_port})"
    elif sent.icmp is not None:
        icmp = sent.icmp
        names = {code: name for name, code in ICMP_CODES.items()}
        if icmp.type == 3:
            text = f"> icmp unreachable {names.get(icmp.code, icmp.code)}"
            if icmp.code == 4:
                text += f" mtu {icmp.next_hop_mtu}"
        else:
            text = f"> icmp type {icmp.type} code {icmp.code}"
    else:
        text = f"> a frame of {len(sent.frame)} bytes"
    if sent.problem:
        text += f"  [{sent.problem}]"
    return f"{sent.time:.6f} {text}"


def format_options(header: TcpHeader, numbering: Numbering) -> str:
    parts = []
    for option in header.options:
        kind = type(option)
        if kind is MssOption:
            parts.append(f"mss {option.mss}")
        elif kind is WindowScaleOption:
            parts.append(f"wscale {option.shift}")
        elif kind is SackPermittedOption:
            parts.append("sackOK")
        elif kind is NopOption:
            parts.append("nop")
        elif kind is EolOption:
            if option.padding:
                parts.append("eol")
        elif kind is TimestampOption:
            value = option.value
            if numbering.ts_offset is not None:
                value = (value - numbering.ts_offset) % MOD
            parts.append(f"TS val {value} ecr {option.echo}")
        elif kind is SackOption:
            parts.append("sack " + " ".join(
                f"{numbering.relative_theirs(left)}:{numbering.relative_theirs(right)}" for left, right in option.blocks))
        else:
            parts.append(f"kind {option.kind}")
    return "<" + ",".join(parts) + ">"


def _format_option(option: Option) -> str:
    if option.name == "TS":
        value, echo = ("*" if v is None else v for v in option.values)
        return f"TS val {value} ecr {echo}"
    if option.name == "sack":
        return "sack " + " ".join(f"{left}:{right}" for left, right in option.values)
    return " ".join([option.name, *(str(value) for value in option.values)])
