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

import heapq
import math
import random
import re
from collections import deque
from dataclasses import dataclass, fields
from dataclasses import replace as _dataclass_replace
from typing import Any, Mapping

from .text import did_you_mean

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

# The one MTU range of netemu (link parameters here, `ip link set DEV mtu N` in a node):
MIN_MTU = 68  # RFC 791: every internet module must forward a 68-octet datagram
MAX_MTU = 65535  # the largest IPv4 datagram (16-bit total length)


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
    hint = did_you_mean(text, LINK_PARAM_KEYS, _KEY_HINTS) or f" (known: {', '.join(LINK_PARAM_KEYS)})"
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
            whole, rest = divmod(rate, scale)
            # repr is the shortest spelling that reads back as the same float: exact rates round-trip.
            return (str(whole) if not rest else repr(rate / scale)) + unit
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


class Shaper:
    """One direction of one port: netem's impairments, a tbf-like serializer, a delay line.

    A frame offered at `now` goes through, in netem's order: link down ->
    dropped; `queue` frames already held -> tail drop (like netem's `limit`,
    the count covers frames waiting for the wire *and* frames in flight in the
    delay line); loss; duplication (the copy gets its own corruption and
    jitter, as netem's clone re-enters the qdisc); corruption (one random bit
    of a copy flipped); then its departure time:

    * serialization at `rate`: a frame starts when the previous one finished,
      ``finish = max(now, previous_finish) + len * 8 / rate`` -- tbf with a
      bucket of one frame, so no burst credit builds up while idle; the length
      is the Ethernet frame without preamble, FCS or gap, as tc counts it;
    * plus `delay` and a jitter drawn uniformly from [-jitter, +jitter] (netem's
      default when no distribution table is given; bounded, so tests can pin
      it), never earlier than the serialization finish;
    * departures are then made monotonic, so jitter alone never reorders
      (unlike netem, where jitter without a rate reorders through tfifo). Only
      `reorder` reorders: with probability `reorder` a frame skips delay and
      jitter and leaves when serialized -- "reorder 25%" sends a quarter of
      the frames at once, netem with gap 1. It needs a delay to overtake, so
      without delay or jitter no reorder draw happens.

    Correlated loss is a two-state Markov chain (the simple Gilbert model):
    after a loss the next frame is lost with ``c + (1 - c) * p``, after a
    delivery with ``(1 - c) * p``. Its stationary loss rate is exactly `loss`
    and its lag-one correlation exactly `loss_correlation`, with mean burst
    length ``1 / ((1 - c) * (1 - p))``. netem's own `loss p c` mixes
    successive uniform numbers instead, which is known to lower the actual loss
    rate and barely produce bursts (Salsano et al.).

    One class on purpose: composing impairments as wrappers (STYLE.md #11) costs
    a call and a hand-off per stage per frame; the stages have netem's fixed
    order anyway, and each is one `if` on a zero parameter when unused.

    Storage: frames whose departures arrive in order (all of them without
    `reorder`) sit in a deque; the few that overtake (reordered frames, frames
    sent after a parameter change shortened the delay) sit in a heap; pop_ready
    merges the two. Ties go to the deque.
    """

    __slots__ = (
        "_params", "_rng", "_random", "_line", "_heap", "_sequence",
        "_up", "_queue", "_seconds_per_byte", "_delay", "_jitter", "_reorder",
        "_loss", "_loss_correlated", "_loss_after_loss", "_loss_after_delivery", "_last_lost",
        "_duplicate", "_corrupt", "_serializer_free_at", "_floor", "_params_passthrough",
        "tx_packets", "tx_bytes", "dropped_down", "dropped_queue", "dropped_loss",
        "duplicated", "corrupted", "reordered",
    )

    def __init__(self, params: LinkParams | None = None, rng: random.Random | None = None) -> None:
        self._rng = rng if rng is not None else random.Random(0)
        self._random = self._rng.random
        self._line: deque[tuple[float, bytes]] = deque()
        self._heap: list[tuple[float, int, bytes]] = []
        self._sequence = 0
        self._serializer_free_at = -math.inf
        self._floor = -math.inf
        self._last_lost = False
        self._up = True
        self.tx_packets = self.tx_bytes = 0
        self.dropped_down = self.dropped_queue = self.dropped_loss = 0
        self.duplicated = self.corrupted = self.reordered = 0
        self._params = LinkParams()
        self._apply(params if params is not None else LinkParams())

    # --- parameters ---------------------------------------------------------------------

    @property
    def params(self) -> LinkParams:
        return self._params

    def update(self, **canonical: Any) -> None:
        """Change canonical parameters at run time; frames already scheduled keep their times.

        A parameter set back to 0 really goes: new frames do not wait behind
        frames scheduled under the old delay (they overtake them, as they
        would in netem's time-sorted queue).
        """
        self._apply(self._params.replace(**canonical))

    def set_params(self, params: LinkParams) -> None:
        """Replace every parameter at once (same rules as `update`)."""
        self._apply(params)

    def set_seed(self, seed: int) -> None:
        """Restart the random sequence, so a run can be replayed."""
        self._rng.seed(seed)
        self._last_lost = False

    def _apply(self, params: LinkParams) -> None:
        old = self._params
        self._params = params
        self._queue = params.queue
        self._seconds_per_byte = 8.0 / params.rate if params.rate else 0.0
        self._delay = params.delay
        self._jitter = params.jitter
        self._reorder = params.reorder if (params.delay or params.jitter) else 0.0
        self._loss = params.loss
        correlation = params.loss_correlation
        self._loss_correlated = bool(params.loss and correlation)
        self._loss_after_loss = correlation + (1.0 - correlation) * params.loss
        self._loss_after_delivery = (1.0 - correlation) * params.loss
        if not self._loss_correlated:
            self._last_lost = False
        self._duplicate = params.duplicate
        self._corrupt = params.corrupt
        self._params_passthrough = params.is_passthrough
        if (params.rate, params.delay, params.jitter) != (old.rate, old.delay, old.jitter):
            # New timing: the in-order guarantee restarts, so a shorter delay takes effect now.
            self._floor = -math.inf
        if not params.rate:
            self._serializer_free_at = -math.inf
        if self._up and not params.up:
            self._drop_held()
        self._up = params.up

    def _drop_held(self) -> None:
        """Link went down: frames queued or in flight are lost, as a qdisc reset loses them."""
        self.dropped_down += len(self._line) + len(self._heap)
        self._line.clear()
        self._heap.clear()
        self._serializer_free_at = -math.inf
        self._floor = -math.inf

    # --- data path ----------------------------------------------------------------------

    @property
    def passthrough(self) -> bool:
        """True when nothing needs shaping: no impairment set and no frame still held.

        A device may then hand frames straight to the wire. Held frames keep
        it False until they are out, so a device that stops polling a
        passthrough shaper strands nothing. `up` is the device's own check.
        """
        return self._params_passthrough and not self._line and not self._heap

    def offer(self, frame: bytes, now: float) -> None:
        """Accept a frame sent at `now`: drop it, or schedule it (maybe twice) for departure."""
        if not self._up:
            self.dropped_down += 1
            return
        if len(self._line) + len(self._heap) >= self._queue:
            self.dropped_queue += 1
            return
        if self._loss:
            if self._loss_correlated:
                lost = self._random() < (
                    self._loss_after_loss if self._last_lost else self._loss_after_delivery)
                self._last_lost = lost
            else:
                lost = self._random() < self._loss
            if lost:
                self.dropped_loss += 1
                return
        self._schedule(frame, now)
        if self._duplicate and self._random() < self._duplicate:
            if len(self._line) + len(self._heap) >= self._queue:
                self.dropped_queue += 1
            else:
                self.duplicated += 1
                self._schedule(frame, now)

    def _schedule(self, frame: bytes, now: float) -> None:
        random_ = self._random
        if self._corrupt and frame and random_() < self._corrupt:
            frame = self._flip_one_bit(frame)
        if self._seconds_per_byte:
            start = now if now > self._serializer_free_at else self._serializer_free_at
            finish = start + len(frame) * self._seconds_per_byte
            self._serializer_free_at = finish
        else:
            finish = now
        if self._reorder and random_() < self._reorder:
            self.reordered += 1
            departure = finish
        else:
            departure = finish + self._delay
            if self._jitter:
                departure += self._jitter * (2.0 * random_() - 1.0)
                if departure < finish:
                    departure = finish
            if departure < self._floor:
                departure = self._floor
            self._floor = departure
        line = self._line
        if not line or departure >= line[-1][0]:
            line.append((departure, frame))
        else:
            self._sequence += 1
            heapq.heappush(self._heap, (departure, self._sequence, frame))

    def _flip_one_bit(self, frame: bytes) -> bytes:
        """A copy of `frame` with one uniformly chosen bit inverted (the caller's bytes stay intact)."""
        self.corrupted += 1
        bit = self._rng.randrange(len(frame) * 8)
        damaged = bytearray(frame)
        damaged[bit >> 3] ^= 1 << (bit & 7)
        return bytes(damaged)

    def pop_ready(self, now: float) -> list[bytes]:
        """Every frame whose departure time is <= `now`, in departure order."""
        line, heap = self._line, self._heap
        ready: list[bytes] = []
        if not heap:
            while line and line[0][0] <= now:
                ready.append(line.popleft()[1])
        else:
            while True:
                if line and line[0][0] <= now and (not heap or line[0][0] <= heap[0][0]):
                    ready.append(line.popleft()[1])
                elif heap and heap[0][0] <= now:
                    ready.append(heapq.heappop(heap)[2])
                else:
                    break
        if ready:
            self.tx_packets += len(ready)
            self.tx_bytes += sum(map(len, ready))
        return ready

    def next_deadline(self) -> float | None:
        """When the next frame departs (the device's next timer), or None when nothing is held."""
        line, heap = self._line, self._heap
        if line:
            return min(line[0][0], heap[0][0]) if heap else line[0][0]
        return heap[0][0] if heap else None

    @property
    def backlog(self) -> int:
        """Frames held now: waiting for the wire or in the delay line."""
        return len(self._line) + len(self._heap)

    @property
    def counters(self) -> dict[str, int]:
        """A snapshot of the counters (tc -s qdisc in spirit, names fixed by the device contract)."""
        return {
            "tx_packets": self.tx_packets, "tx_bytes": self.tx_bytes,
            "dropped_down": self.dropped_down, "dropped_queue": self.dropped_queue,
            "dropped_loss": self.dropped_loss, "duplicated": self.duplicated,
            "corrupted": self.corrupted, "reordered": self.reordered,
            "backlog": len(self._line) + len(self._heap),
        }
