"""Argument parsing of the `netemu>` CLI (control/cli.py): ping's options as iputils reads them.

The error type every command raises for a line it cannot run, argparse that raises it
instead of exiting, and the option grammars of the node commands that have one.
"""
from __future__ import annotations

import argparse


class CommandError(Exception):
    """A command line that cannot be run (bad arguments, unknown names)."""


class _Parser(argparse.ArgumentParser):
    """argparse that raises instead of exiting (a typo must not end the session)."""

    def error(self, message: str) -> None:  # type: ignore[override]
        raise CommandError(f"{self.prog}: {message}")

    def exit(self, status: int = 0, message: str | None = None) -> None:  # type: ignore[override]
        if message:
            raise CommandError(message.strip())
        raise CommandError("")


# iputils' limits: -c 1..LONG_MAX, -s 0..INT_MAX then at most 65507 (65535 less the IP and ICMP headers),
# -t 0..255, -i and -W 0..INT_MAX/1000 seconds.
LONG_MAX, INT_MAX = 2**63 - 1, 2**31 - 1
MAX_PING_SIZE = 65535 - 20 - 8


def _iputils_integer(text: str, minimum: int, maximum: int) -> int:
    """iputils' strtol_or_err: an integer in range, or ping's own words for what is wrong."""
    try:
        value = int(text, 10)
    except ValueError:
        raise CommandError(f"ping: invalid argument: '{text}'") from None
    if not minimum <= value <= maximum:
        raise CommandError(f"ping: invalid argument: '{text}': out of range: {minimum} <= value <= {maximum}")
    return value


def _iputils_seconds(text: str, what: str) -> float:
    """-i and -W: a non-negative number of seconds (iputils says `bad timing interval` / `bad linger time`)."""
    try:
        value = float(text)
    except ValueError:
        raise CommandError(f"ping: {what}: {text}") from None
    if not 0 <= value <= INT_MAX / 1000:  # NaN fails this too
        raise CommandError(f"ping: {what}: {text}")
    return value


def _ping_parser() -> _Parser:
    parser = _Parser(prog="ping", add_help=False)
    parser.add_argument("-c", dest="count", default="3")
    parser.add_argument("-s", dest="size", default="56")
    parser.add_argument("-i", dest="interval", default="1")
    parser.add_argument("-W", dest="timeout", default="2")
    parser.add_argument("-t", dest="ttl")
    parser.add_argument("-M", dest="pmtudisc", choices=["do", "dont", "want"])
    parser.add_argument("destination")
    return parser


def parse_ping(args: list[str]) -> argparse.Namespace:
    """`ping` options as iputils reads them, with iputils' messages for values out of range."""
    options = _ping_parser().parse_args(args)
    options.count = _iputils_integer(options.count, 1, LONG_MAX)
    options.size = _iputils_integer(options.size, 0, INT_MAX)
    if options.size > MAX_PING_SIZE:
        raise CommandError(f"ping: packet size {options.size} is too large. Maximum is {MAX_PING_SIZE}")
    options.interval = _iputils_seconds(options.interval, "bad timing interval")
    timeout_text, options.timeout = options.timeout, _iputils_seconds(options.timeout, "bad linger time")
    if options.timeout == 0:
        # The node waits -W seconds for each reply: 0 would give up before any could come.
        raise CommandError(f"ping: bad linger time: {timeout_text} (must be more than 0)")
    if options.ttl is not None:
        options.ttl = _iputils_integer(options.ttl, 0, 255)
        if options.ttl == 0:
            raise CommandError("ping: cannot set unicast time-to-live: Invalid argument")  # Linux's IP_TTL: 1..255
    return options


def traceroute_parser() -> _Parser:
    parser = _Parser(prog="traceroute", add_help=False)
    parser.add_argument("-m", dest="max_hops", type=int, default=30)
    parser.add_argument("-q", dest="probes", type=int, default=3)
    parser.add_argument("-w", dest="wait", type=float, default=2.0)
    parser.add_argument("destination")
    return parser


def parse_assignments(words: list[str]) -> dict[str, str]:
    """`delay=10ms loss=1%` -> {"delay": "10ms", "loss": "1%"}."""
    params = {}
    for word in words:
        key, sep, value = word.partition("=")
        if not sep or not key:
            raise CommandError(f"expected KEY=VALUE, got {word!r}")
        params[key] = value
    return params
