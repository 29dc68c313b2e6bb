"""The script language: a subset of packetdrill's (google/packetdrill, gtests/net/tcp/*.pkt).

One event a line, `TIME EVENT`:

    TIME      0.100 (absolute)   +0.2 (after the previous event)   * (any time)
              A...B on a call: it starts at A and must return at B (B absolute, or +x after A)
              A~B on an outbound packet: it may leave anywhere between A and B
    EVENT     < FLAGS START:END(LEN) [ack N] [win N] [<OPTIONS>]       a segment injected
              > FLAGS START:END(LEN) [ack N] [win N] [<OPTIONS>|<...>]  a segment expected
              < icmp unreachable CODE [mtu N] [[START:END(LEN)]]      an ICMP error injected
              > icmp unreachable CODE                                an ICMP error expected
              name(arg, ...) = RESULT [ERRNO [(text)]]               a socket call
FLAGS are packetdrill's letters (S F R P U E W, `.` for ACK); OPTIONS a comma list of
`mss N`, `sackOK`, `nop`, `eol`, `wscale N`, `TS val N ecr N` (`*` for either: not checked),
`sack A:B C:D`. Comments run from `//` to the end of the line (`/* ... */` on one line too).

Two kinds of line configure the run instead: `--tolerance_usecs=N`, `--mtu=N`, `--remote_isn=N`
(see runner.DIRECTIVES), and backquoted sysctls as packetdrill's scripts write them:
`` `sysctl -q net.ipv4.tcp_timestamps=0` `` (several separated by `;`).

The parser only checks form; what numbers mean (relative sequence numbers, fds) is the runner's.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

FLAG_LETTERS = "SFRPUEW."


class ScriptError(Exception):
    """A script that cannot be parsed, or an event that did not happen as written: FILE:LINE first."""

    def __init__(self, path: str, line: int, message: str) -> None:
        super().__init__(f"{path}:{line}: {message}")
        self.path = path
        self.line = line
        self.message = message


@dataclass(slots=True)
class TimeSpec:
    """When an event happens: `kind` is "absolute", "relative" or "any".

    A range adds `end` (seconds; after the start when `end_relative`) and its `separator`:
    "~" (a packet leaves between the two) or "..." (a call returns at the end)."""

    kind: str
    value: float = 0.0
    end: float | None = None
    end_relative: bool = False
    separator: str = ""


@dataclass(slots=True)
class Option:
    """One TCP option as written: `name` is mss, sackOK, nop, eol, wscale, TS or sack.

    `values`: (N,) for mss/wscale; (val, ecr) for TS with None for `*`; the (start, end)
    pairs for sack; () otherwise."""

    name: str
    values: tuple = ()


@dataclass(slots=True)
class PacketEvent:
    direction: str  # "<" injected, ">" expected
    flags: str  # packetdrill letters, "." for ACK
    start: int
    end: int
    ack: int | None = None
    window: int | None = None
    options: list[Option] | None = field(default_factory=list)  # None: `<...>`, any options


@dataclass(slots=True)
class IcmpEvent:
    direction: str
    type_name: str  # "unreachable"
    code_name: str  # frag_needed, port_unreachable, ...
    mtu: int | None = None
    quoted: tuple[int, int] | None = None  # the offending segment's START:END, our sequence space


@dataclass(slots=True)
class CallEvent:
    name: str
    args: list[str]
    result: int
    errno_name: str | None = None


@dataclass(slots=True)
class SysctlEvent:
    settings: list[tuple[str, str]]


@dataclass(slots=True)
class Event:
    line: int
    time: TimeSpec
    body: "PacketEvent | IcmpEvent | CallEvent | SysctlEvent"
    text: str = ""


@dataclass(slots=True)
class Script:
    path: str
    events: list[Event]
    directives: dict[str, str]


# ------------------------------------------------------------------------------ lines

_BLOCK_COMMENT = re.compile(r"/\*.*?\*/")
_NUMBER = r"(?:\d+(?:\.\d*)?|\.\d+)"
_TIME = re.compile(rf"^(\*|\+?{_NUMBER})(?:(~|\.\.\.)(\+?{_NUMBER}))?$")
_DIRECTIVE = re.compile(r"^--([a-z_]+)=(\S+)$")
_SEGMENT = re.compile(r"^(-?\d+):(-?\d+)\((\d+)\)$")
_CALL = re.compile(r"^([a-z_][a-z_0-9]*)\((.*)\)\s*=\s*(-?\d+)(?:\s+([A-Z][A-Z0-9_]*))?(?:\s*\(.*\))?$")
_SYSCTL = re.compile(r"^(?:sysctl\s+(?:-[qw]\s+)*)?([a-z0-9_.]+)\s*=\s*(\S+)$")


def parse_file(path: "str | Path") -> Script:
    path = Path(path)
    return parse(path.read_text(), str(path))


def parse(text: str, path: str = "<script>") -> Script:
    """The script's events in order, and its directives; ScriptError (FILE:LINE) on any bad line."""
    events: list[Event] = []
    directives: dict[str, str] = {}
    for number, raw in enumerate(text.splitlines(), start=1):
        line = _strip_comment(raw)
        if not line:
            continue
        directive = _DIRECTIVE.match(line)
        if directive:
            directives[directive.group(1)] = directive.group(2)
            continue
        if line.startswith("`"):
            events.append(Event(number, TimeSpec("any"), _sysctl(line, path, number), line))
            continue
        if line.startswith("%{"):
            raise ScriptError(path, number, "python blocks (%{ }%) are not supported")
        time_text, _, rest = line.partition(" ")
        time = parse_time(time_text, path, number)
        rest = rest.strip()
        if not rest:
            raise ScriptError(path, number, "a time without an event")
        body = _event(rest, path, number)
        if time.separator == "..." and not isinstance(body, CallEvent):
            raise ScriptError(path, number, "A...B is for calls (A~B for an expected segment)")
        if time.separator == "~" and not (isinstance(body, (PacketEvent, IcmpEvent)) and body.direction == ">"):
            raise ScriptError(path, number, "A~B is for expected segments (A...B for calls)")
        events.append(Event(number, time, body, line))
    return Script(path, events, directives)


def _strip_comment(raw: str) -> str:
    line = _BLOCK_COMMENT.sub(" ", raw)
    cut = line.find("//")
    if cut >= 0:
        line = line[:cut]
    return line.strip()


def parse_time(text: str, path: str = "<script>", line: int = 0) -> TimeSpec:
    match = _TIME.match(text)
    if not match:
        raise ScriptError(path, line, f"bad time {text!r} (0.100, +0.1, * or A...B)")
    start, separator, end = match.groups()
    if start == "*":
        if separator:
            raise ScriptError(path, line, "* cannot start a range")
        return TimeSpec("any")
    spec = TimeSpec("relative", float(start[1:])) if start.startswith("+") else TimeSpec("absolute", float(start))
    if separator:
        spec.separator = separator
        spec.end_relative = end.startswith("+")
        spec.end = float(end.lstrip("+"))
    return spec


def _event(text: str, path: str, line: int) -> "PacketEvent | IcmpEvent | CallEvent":
    if text[0] in "<>":
        direction, rest = text[0], text[1:].strip()
        if rest.startswith("icmp"):
            return _icmp(direction, rest, path, line)
        return parse_packet(direction, rest, path, line)
    return parse_call(text, path, line)


# ---------------------------------------------------------------------------- packets

def parse_packet(direction: str, text: str, path: str = "<script>", line: int = 0) -> PacketEvent:
    """`FLAGS START:END(LEN) [ack N] [win N] [<OPTIONS>]` after the direction."""
    options_text: str | None = None
    bracket = text.find("<")
    if bracket >= 0:
        if not text.endswith(">"):
            raise ScriptError(path, line, "options must end the line: <...>")
        options_text = text[bracket + 1 : -1].strip()
        text = text[:bracket].strip()
    words = text.split()
    if len(words) < 2:
        raise ScriptError(path, line, "a segment needs FLAGS and START:END(LEN)")
    flags = words[0]
    if any(letter not in FLAG_LETTERS for letter in flags) or len(set(flags)) != len(flags):
        raise ScriptError(path, line, f"bad flags {flags!r} (letters of {FLAG_LETTERS})")
    start, end = _segment(words[1], path, line)
    event = PacketEvent(direction, flags, start, end)
    rest = words[2:]
    while rest:
        if len(rest) < 2:
            raise ScriptError(path, line, f"{rest[0]!r} needs a value")
        key, value = rest[0], rest[1]
        rest = rest[2:]
        if key == "ack":
            event.ack = _int(value, path, line)
        elif key == "win":
            event.window = _int(value, path, line)
        else:
            raise ScriptError(path, line, f"unknown field {key!r} (ack, win)")
    if "." in flags and event.ack is None and direction == "<":
        raise ScriptError(path, line, "an injected ACK needs `ack N`")
    if options_text is None:
        event.options = []
    elif options_text == "...":
        if direction == "<":
            raise ScriptError(path, line, "<...> (any options) is for expected segments only")
        event.options = None
    else:
        event.options = parse_options(options_text, path, line)
    return event


def _segment(text: str, path: str, line: int) -> tuple[int, int]:
    match = _SEGMENT.match(text)
    if not match:
        raise ScriptError(path, line, f"bad segment {text!r} (START:END(LEN))")
    start, end, length = (int(group) for group in match.groups())
    if end - start != length:
        raise ScriptError(path, line, f"{text}: {end} - {start} is not {length}")
    return start, end


def _int(text: str, path: str, line: int) -> int:
    try:
        return int(text, 0)
    except ValueError:
        raise ScriptError(path, line, f"{text!r} is not a number") from None


def parse_options(text: str, path: str = "<script>", line: int = 0) -> list[Option]:
    options: list[Option] = []
    for item in (part.strip() for part in text.split(",")):
        words = item.split()
        if not words:
            raise ScriptError(path, line, "an empty option")
        name, values = words[0], words[1:]
        if name in ("nop", "eol", "sackOK") and not values:
            options.append(Option(name))
        elif name in ("mss", "wscale") and len(values) == 1:
            options.append(Option(name, (_int(values[0], path, line),)))
        elif name == "TS" and len(values) == 4 and values[0] == "val" and values[2] == "ecr":
            options.append(Option("TS", tuple(None if v == "*" else _int(v, path, line) for v in values[1::2])))
        elif name == "sack" and values:
            blocks = []
            for block in values:
                left, colon, right = block.partition(":")
                if not colon:
                    raise ScriptError(path, line, f"bad SACK block {block!r} (START:END)")
                blocks.append((_int(left, path, line), _int(right, path, line)))
            options.append(Option("sack", tuple(blocks)))
        else:
            raise ScriptError(path, line, f"bad option {item!r}")
    return options


# ------------------------------------------------------------------------------- ICMP

ICMP_CODES = {
    "net_unreachable": 0, "host_unreachable": 1, "protocol_unreachable": 2, "port_unreachable": 3,
    "frag_needed": 4, "source_route_failed": 5, "net_unknown": 6, "host_unknown": 7,
    "net_prohibited": 9, "host_prohibited": 10, "packet_filtered": 13,
}


def _icmp(direction: str, text: str, path: str, line: int) -> IcmpEvent:
    quoted = None
    if text.endswith("]"):
        bracket = text.rfind("[")
        quoted = _segment(text[bracket + 1 : -1].strip(), path, line)
        text = text[:bracket].strip()
    words = text.split()
    if len(words) < 3 or words[1] != "unreachable":
        raise ScriptError(path, line, "only `icmp unreachable CODE [mtu N] [[START:END(LEN)]]`")
    code = words[2]
    if code not in ICMP_CODES:
        raise ScriptError(path, line, f"unknown ICMP code {code!r} ({', '.join(ICMP_CODES)})")
    event = IcmpEvent(direction, words[1], code, quoted=quoted)
    rest = words[3:]
    if rest:
        if len(rest) != 2 or rest[0] != "mtu":
            raise ScriptError(path, line, f"unexpected {' '.join(rest)!r} (mtu N)")
        event.mtu = _int(rest[1], path, line)
    if code == "frag_needed" and direction == "<" and event.mtu is None:
        raise ScriptError(path, line, "frag_needed needs `mtu N`")
    return event


# ------------------------------------------------------------------------------ calls

def parse_call(text: str, path: str = "<script>", line: int = 0) -> CallEvent:
    """`name(arg, ...) = RESULT [ERRNO [(text)]]`; arguments stay text (split at top-level commas)."""
    match = _CALL.match(text)
    if not match:
        raise ScriptError(path, line, f"not a segment, ICMP or call: {text!r}")
    name, arguments, result, errno_name = match.groups()
    result = int(result)
    if (errno_name is not None) != (result == -1):
        raise ScriptError(path, line, "a call returning -1 names its errno, and only then")
    return CallEvent(name, split_arguments(arguments, path, line), result, errno_name)


def split_arguments(text: str, path: str = "<script>", line: int = 0) -> list[str]:
    parts: list[str] = []
    depth = 0
    quoted = False
    current = []
    for char in text:
        if char == '"':
            quoted = not quoted
        elif not quoted and char in "[{(":
            depth += 1
        elif not quoted and char in "]})":
            depth -= 1
            if depth < 0:
                raise ScriptError(path, line, "unbalanced brackets in the arguments")
        if char == "," and depth == 0 and not quoted:
            parts.append("".join(current).strip())
            current = []
        else:
            current.append(char)
    if depth or quoted:
        raise ScriptError(path, line, "unbalanced brackets or quotes in the arguments")
    tail = "".join(current).strip()
    if tail or parts:
        parts.append(tail)
    return parts


def _sysctl(text: str, path: str, line: int) -> SysctlEvent:
    if not (len(text) > 1 and text.endswith("`")):
        raise ScriptError(path, line, "a backquoted command ends on its line")
    settings = []
    for command in text[1:-1].split(";"):
        command = command.strip()
        if not command:
            continue
        match = _SYSCTL.match(command)
        if not match:
            raise ScriptError(path, line, f"only `sysctl -q NAME=VALUE` runs here, not {command!r}")
        settings.append((match.group(1), match.group(2)))
    if not settings:
        raise ScriptError(path, line, "an empty command")
    return SysctlEvent(settings)
