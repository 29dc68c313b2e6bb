"""Link parameters and the per-port shaper: Linux tc netem + tbf, sans-I/O.

Before changing this file, read tc-netem(8) and tc-tbf(8) (semantics we
mirror), tc(8) "PARAMETERS" (the unit suffixes), docs/design.md "Units inside
the program" (canonical values), and Salsano et al., "Definition of a general
and intuitive loss model for packet networks and its implementation in the
Netem module" (why correlated loss is a Markov chain here, not netem's
correlated random numbers).

Three layers:

* `parse_link_params` turns what a user writes (``10ms``, ``100Mbit``,
  ``1%``) into canonical values once, at the edge; `format_link_params` goes
  back for display. Errors are `LinkParamError` with the key and a message a
  user can act on.
* `LinkParams` is the canonical value object a device keeps per port.
* `Shaper` is one direction of one port: a bounded queue, a serializer at
  `rate`, then a delay line, with netem's impairments on the way in. It never
  reads a clock: `now` is an argument, frames come out of `pop_ready(now)`.
"""
from __future__ import annotations

import difflib
import heapq
import math
import random
import re
from collections import deque
from dataclasses import dataclass, fields
from dataclasses import replace as _dataclass_replace
from typing import Any, Mapping

LINK_PARAM_KEYS: tuple[str, ...] = (
    "mtu", "rate", "delay", "jitter", "loss", "loss_correlation",
    "duplicate", "corrupt", "reorder", "queue", "up",
)

# Names users bring from tc, Mininet or iproute2: suggested, never accepted,
# so every parameter keeps exactly one spelling.
_KEY_HINTS = {
    "bw": "rate", "bandwidth": "rate", "speed": "rate",
    "latency": "delay", "lat": "delay",
    "drop": "loss", "limit": "queue", "max_queue_size": "queue",
    "txqueuelen": "queue", "qlen": "queue", "state": "up", "link": "up",
    "correlation": "loss_correlation",
}

_NUMBER_WITH_UNIT = re.compile(
    r"\s*([+-]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?)\s*([A-Za-zµ%/]*)\s*"
)

# tc(8): bit = bits/s, bps = BYTES/s; SI prefixes are powers of 1000, the IEC
# ones (ki, mi, gi, ti) powers of 1024. A bare number is bits/s.
_RATE_UNITS: dict[str, float] = {"": 1.0}
for _prefix, _si, _iec in (("", 1, 1), ("k", 10**3, 2**10), ("m", 10**6, 2**20),
                           ("g", 10**9, 2**30), ("t", 10**12, 2**40)):
    _RATE_UNITS[_prefix + "bit"] = float(_si)
    _RATE_UNITS[_prefix + "bps"] = 8.0 * _si
    if _prefix:
        _RATE_UNITS[_prefix + "ibit"] = float(_iec)
        _RATE_UNITS[_prefix + "ibps"] = 8.0 * _iec

# Seconds per unit. A bare number is milliseconds (Mininet's and netem's
# everyday unit; tc itself would read microseconds: see docs/design.md).
_TIME_UNITS: dict[str, float] = {"": 1e-3}
for _names, _scale in ((("s", "sec", "secs"), 1.0), (("ms", "msec", "msecs"), 1e-3),
                       (("us", "usec", "usecs", "µs"), 1e-6), (("ns", "nsec", "nsecs"), 1e-9)):
    for _name in _names:
        _TIME_UNITS[_name] = _scale

_TRUE_WORDS = frozenset({"true", "yes", "on", "up", "1"})
_FALSE_WORDS = frozenset({"false", "no", "off", "down", "0"})

MIN_MTU = 68  # RFC 791: every internet module must forward a 68-octet datagram
MAX_MTU = 65535


class LinkParamError(ValueError):
    """A link parameter a user (or a control message) got wrong; `key` says which."""

    def __init__(self, key: str, message: str) -> None:
        super().__init__(f"{key}: {message}")
        self.key = key
        self.message = message


def _split_number(key: str, value: Any, what: str, examples: str) -> tuple[float, str]:
    """Number and lower-cased unit suffix of `value`; numbers pass with no unit."""
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        raise LinkParamError(key, f"{value!r} is not {what} (use e.g. {examples})")
    if isinstance(value, str):
        match = _NUMBER_WITH_UNIT.fullmatch(value)
        if match is None:
            raise LinkParamError(key, f"{value!r} is not {what} (use e.g. {examples})")
        number, unit = float(match.group(1)), match.group(2).lower()
    else:
        number, unit = float(value), ""
    if not math.isfinite(number):
        raise LinkParamError(key, f"{value!r} is not {what} (use e.g. {examples})")
    if number < 0:
        raise LinkParamError(key, f"{value!r} is negative")
    return number, unit


def _parse_rate(key: str, value: Any) -> int:
    examples = "100Mbit, 1.5Gbit, 64kbit; bps means bytes/s"
    number, unit = _split_number(key, value, "a rate", examples)
    scale = _RATE_UNITS.get(unit)
    if scale is None:
        raise LinkParamError(key, f"{value!r} is not a rate (use e.g. {examples})")
    rate = round(number * scale)
    if rate == 0 and number > 0:
        raise LinkParamError(key, f"{value!r} is below 1 bit/s (use 0 for unlimited)")
    return rate


def _parse_duration(key: str, value: Any) -> float:
    examples = "10ms, 500us, 1s"
    number, unit = _split_number(key, value, "a duration", examples)
    scale = _TIME_UNITS.get(unit)
    if scale is None:
        raise LinkParamError(key, f"{value!r} is not a duration (use e.g. {examples})")
    return number * scale


def _parse_percent(key: str, value: Any) -> float:
    number, unit = _split_number(key, value, "a percentage", "1%, 0.5%")
    if unit not in ("", "%"):
        raise LinkParamError(key, f"{value!r} is not a percentage (use e.g. 1%, 0.5%)")
    if number > 100:
        raise LinkParamError(key, f"{value!r} is more than 100%")
    return number / 100.0


def _parse_count(key: str, value: Any, what: str) -> int:
    if isinstance(value, str) and value.strip().isdigit():
        return int(value.strip())
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    raise LinkParamError(key, f"{value!r} is not {what}")


def _parse_queue(key: str, value: Any) -> int:
    queue = _parse_count(key, value, "a packet count (a positive integer)")
    if queue < 1:
        raise LinkParamError(key, f"{value!r} is not a packet count (a positive integer)")
    return queue


def _parse_mtu(key: str, value: Any) -> int:
    mtu = _parse_count(key, value, f"an MTU (an integer {MIN_MTU}..{MAX_MTU})")
    if not MIN_MTU <= mtu <= MAX_MTU:
        raise LinkParamError(key, f"{value!r} is outside {MIN_MTU}..{MAX_MTU}")
    return mtu


def _parse_up(key: str, value: Any) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, int) and value in (0, 1):
        return bool(value)
    if isinstance(value, str):
        word = value.strip().lower()
        if word in _TRUE_WORDS:
            return True
        if word in _FALSE_WORDS:
            return False
    raise LinkParamError(key, f"{value!r} is not a boolean (use true/false or up/down)")


_PARSERS = {
    "rate": _parse_rate,
    "delay": _parse_duration, "jitter": _parse_duration,
    "loss": _parse_percent, "loss_correlation": _parse_percent,
    "duplicate": _parse_percent, "corrupt": _parse_percent, "reorder": _parse_percent,
    "queue": _parse_queue, "mtu": _parse_mtu, "up": _parse_up,
}


def unknown_key_error(key: Any) -> LinkParamError:
    """The error for a key that is not a link parameter, with a did-you-mean."""
    text = str(key)
    guess = _KEY_HINTS.get(text.lower())
    if guess is None:
        close = difflib.get_close_matches(text.lower(), LINK_PARAM_KEYS, n=1, cutoff=0.6)
        guess = close[0] if close else None
    hint = f" (did you mean {guess!r}?)" if guess else f" (known: {', '.join(LINK_PARAM_KEYS)})"
    return LinkParamError(text, f"unknown link parameter {text!r}{hint}")


def parse_link_params(mapping: Mapping[str, Any]) -> dict[str, Any]:
    """Canonical values (bit/s, seconds, probabilities) for the user's values in `mapping`.

    Only the keys present are returned: defaults are `LinkParams`' business.
    Not idempotent: a canonical 0.01 read back as user input means 0.01%.
    """
    canonical: dict[str, Any] = {}
    for key, value in mapping.items():
        parser = _PARSERS.get(key) if isinstance(key, str) else None
        if parser is None:
            raise unknown_key_error(key)
        canonical[key] = parser(key, value)
    return canonical


def _format_number(value: float) -> str:
    """Shortest plain spelling: 12 significant digits hide float noise like 1.5000000000000002."""
    return format(value, ".12g")


def _format_rate(rate: int) -> str:
    for unit, scale in (("Tbit", 10**12), ("Gbit", 10**9), ("Mbit", 10**6), ("kbit", 10**3)):
        if rate >= scale:
            return _format_number(rate / scale) + unit
    return f"{rate}bit"


def _format_duration(seconds: float) -> str:
    if seconds == 0 or seconds >= 1:
        return _format_number(seconds) + "s"
    if seconds >= 1e-3:
        return _format_number(seconds * 1e3) + "ms"
    if seconds >= 1e-6:
        return _format_number(seconds * 1e6) + "us"
    return _format_number(seconds * 1e9) + "ns"


def format_link_params(canonical: Mapping[str, Any]) -> dict[str, str]:
    """Display strings (``100Mbit``, ``5ms``, ``1%``) that `parse_link_params` reads back."""
    shown: dict[str, str] = {}
    for key, value in canonical.items():
        if key == "rate":
            shown[key] = _format_rate(int(value))
        elif key in ("delay", "jitter"):
            shown[key] = _format_duration(float(value))
        elif key in ("loss", "loss_correlation", "duplicate", "corrupt", "reorder"):
            shown[key] = _format_number(float(value) * 100) + "%"
        elif key in ("queue", "mtu"):
            shown[key] = str(int(value))
        elif key == "up":
            shown[key] = "up" if value else "down"
        else:
            raise unknown_key_error(key)
    return shown


_PROBABILITY_KEYS = ("loss", "loss_correlation", "duplicate", "corrupt", "reorder")


@dataclass(frozen=True, slots=True)
class LinkParams:
    """Canonical behaviour of one port direction; see docs/design.md for the units.

    Construction checks ranges, so a control message carrying ``loss=5``
    (meant as 5%) fails loudly instead of dropping everything.
    """

    mtu: int = 1500
    rate: int = 0             # bit/s; 0 = unlimited
    delay: float = 0.0        # seconds
    jitter: float = 0.0       # seconds, uniform in [-jitter, +jitter]
    loss: float = 0.0         # probabilities 0..1 from here on
    loss_correlation: float = 0.0
    duplicate: float = 0.0
    corrupt: float = 0.0
    reorder: float = 0.0
    queue: int = 1000         # packets (netem `limit`)
    up: bool = True

    def __post_init__(self) -> None:
        def check(key: str, ok: bool, expected: str) -> None:
            if not ok:
                raise LinkParamError(key, f"canonical value {getattr(self, key)!r} is not {expected}")

        def is_int(value: Any) -> bool:
            return isinstance(value, int) and not isinstance(value, bool)

        def is_real(value: Any) -> bool:
            return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)

        check("mtu", is_int(self.mtu) and MIN_MTU <= self.mtu <= MAX_MTU, f"an int {MIN_MTU}..{MAX_MTU}")
        check("rate", is_int(self.rate) and self.rate >= 0, "an int >= 0 (bit/s)")
        check("queue", is_int(self.queue) and self.queue >= 1, "an int >= 1 (packets)")
        check("up", isinstance(self.up, bool), "a bool")
        for key in ("delay", "jitter"):
            value = getattr(self, key)
            check(key, is_real(value) and value >= 0, "a number of seconds >= 0")
            object.__setattr__(self, key, float(value))
        for key in _PROBABILITY_KEYS:
            value = getattr(self, key)
            check(key, is_real(value) and 0 <= value <= 1,
                  "a probability 0..1 (parse '5%' with parse_link_params)")
            object.__setattr__(self, key, float(value))

    def replace(self, **canonical: Any) -> "LinkParams":
        """A copy with some canonical values changed (unknown keys raise LinkParamError)."""
        for key in canonical:
            if key not in LINK_PARAM_KEYS:
                raise unknown_key_error(key)
        return _dataclass_replace(self, **canonical)

    @classmethod
    def from_canonical(cls, canonical: Mapping[str, Any]) -> "LinkParams":
        """Defaults overridden by a canonical dict (a device config's `defaults`/`ports`)."""
        return cls().replace(**canonical)

    @classmethod
    def from_user(cls, mapping: Mapping[str, Any]) -> "LinkParams":
        """Defaults overridden by user spellings (``{"delay": "10ms"}``)."""
        return cls.from_canonical(parse_link_params(mapping))

    def to_canonical(self) -> dict[str, Any]:
        """Every field as a plain dict (msgpack/JSON-able)."""
        return {f.name: getattr(self, f.name) for f in fields(self)}

    @property
    def is_passthrough(self) -> bool:
        """No impairment that needs a shaper (mtu, queue and up are the device's job)."""
        return not (self.rate or self.delay or self.jitter or self.loss or self.duplicate
                    or self.corrupt or self.reorder)
