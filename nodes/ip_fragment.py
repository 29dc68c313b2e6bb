"""IPv4 fragmentation (output) and reassembly queues (input, Linux `ipq`).

Before changing this file, read RFC 791 section 3.2 (fragmentation and
reassembly, the option copy flag), RFC 815 (reassembly without a hole list),
RFC 5722 (why overlapping fragments kill the datagram; written for IPv6, applied
here in spirit as Linux does), RFC 1122 section 3.3.2 (reassembly timeout,
ICMP time exceeded code 1) and seed 001's "데이터 조각내기" section (ipq,
ipfrag).

Sans-I/O: times are `now` arguments; nothing here sends anything. The caller
(the IPv4 layer) serialises fragments, sends ICMP errors and keeps the SNMP
`FragOKs`/`FragCreates`/`FragFails` counters for output; the reassembly
counters (`ReasmReqds`, `ReasmOKs`, `ReasmFails`, `ReasmTimeout`,
`ReasmOverlaps`) live here in `ReassemblyQueues.counters`.

Reassembly rules (Linux ip_frag_queue unless noted):

* A queue is keyed by (src, dst, protocol, identification) and lives
  `ipfrag_time` seconds from its first fragment, however many follow.
* A non-last fragment whose length is not a multiple of 8 is cut down to one.
* Fragments are held in runs, as Linux after 4.17 (`inet_frag_queue_insert`)
  holds them: a fragment starting exactly where the highest one ends extends
  that run; any other fragment starts a run of its own. A fragment lying
  wholly inside one run is a duplicate: it is dropped, the queue is kept, and
  ours `ReasmDuplicates` counts it (Linux shows it only as the drop reason
  DUP_FRAG). Any other overlap drops the whole datagram and counts
  `ReasmOverlaps` and `ReasmFails` (RFC 5722 with erratum 3089). Older
  kernels trimmed overlapping data and kept going (docs/design.md, "Which
  Linux the stack follows").
* A last fragment (MF clear) that disagrees with the length already known, an
  empty fragment, or data beyond the known end drops the datagram (`ReasmFails`).
* A datagram that would exceed 65535 bytes is dropped (`ReasmFails`).
* Memory: each fragment costs its data plus `FRAGMENT_OVERHEAD`; above
  `ipfrag_high_thresh` the oldest queues are evicted until memory is at or
  below `ipfrag_low_thresh` (each counts `ReasmFails`). This is the pre-4.17
  Linux evictor; newer kernels refuse new fragments instead.
"""
from __future__ import annotations

import bisect
import errno
import enum
from dataclasses import dataclass
from typing import Any

from bus.shaping import MIN_MTU  # the one MTU range (RFC 791: 68 bytes pass without further fragmentation)

from .wire.addresses import IPv4Address
from .wire.ipv4 import IP_MAXPACKET, MIN_HEADER_LENGTH, IPv4Header, iter_options

IPFRAG_TIME = 30.0
IPFRAG_HIGH_THRESH = 4 * 1024 * 1024
IPFRAG_LOW_THRESH = 3 * 1024 * 1024
# Rough bookkeeping cost of holding one fragment (bytes object, list slots),
# charged like skb truesize so floods of tiny fragments hit the limit sooner.
FRAGMENT_OVERHEAD = 128

_COPY_FLAG = 0x80


class FragmentationNeeded(OSError):
    """DF is set and the datagram does not fit the MTU: the caller sends ICMP frag-needed (RFC 1191) or fails with EMSGSIZE."""

    def __init__(self, mtu: int) -> None:
        super().__init__(errno.EMSGSIZE, f"Message too long: DF set and datagram exceeds MTU {mtu}")
        self.mtu = mtu


def copied_options(options: bytes) -> bytes:
    """The options with the copy flag set (RFC 791 3.1): what every fragment after the first carries.

    Raises the codec's `WireError` for malformed options.
    """
    kept = bytearray()
    for kind, data in iter_options(options):
        if kind & _COPY_FLAG:
            kept.append(kind)
            kept.append(len(data) + 2)
            kept += data
    return bytes(kept)


def fragment(header: IPv4Header, payload: "bytes | bytearray | memoryview",
             mtu: int) -> list[tuple[IPv4Header, memoryview]]:
    """Split a datagram into fragments of at most `mtu` bytes (RFC 791 3.2, Linux ip_fragment).

    Returns (header, data) pairs in offset order; each data is a slice of
    `payload` (no copy) and each header has `total_length` filled in. Every
    piece but the last carries a multiple of 8 data bytes. Re-fragmenting a
    fragment keeps its offset base and, on the last piece, its MF flag.
    A datagram that already fits comes back as a single pair with the original
    header (nothing to count). Raises `FragmentationNeeded` when DF is set and it
    does not fit, `ValueError` for an MTU below 68 or too small for the header.
    """
    data = memoryview(payload)
    first_header_length = header.header_length
    if first_header_length + len(data) <= mtu:
        return [(header, data)]
    if header.dont_fragment:
        raise FragmentationNeeded(mtu)
    if mtu < MIN_MTU:
        raise ValueError(f"MTU {mtu} is below the IPv4 minimum of {MIN_MTU}")
    later_options = copied_options(header.options) if header.options else b""
    later_header_length = IPv4Header(header.src, header.dst, header.protocol, options=later_options).header_length
    first_room = (mtu - first_header_length) & ~7
    later_room = (mtu - later_header_length) & ~7
    if min(first_room, later_room) < 8:  # later headers are never longer; checked so the loop always advances
        raise ValueError(f"MTU {mtu} leaves no room for data after a {first_header_length}-byte header")
    base = header.fragment_offset
    total = len(data)
    if base + total > IP_MAXPACKET:
        # A fragment reaching past 64 KiB (a forged one being re-fragmented): its
        # pieces' offsets would not fit the 13-bit field. The caller counts FragFails.
        raise ValueError(f"fragment at offset {base} with {total} bytes ends past 65535")
    pieces: list[tuple[IPv4Header, memoryview]] = []
    position = 0
    while position < total:
        first = position == 0
        room = first_room if first else later_room
        end = min(position + room, total)
        last = end == total
        header_length = first_header_length if first else later_header_length
        # Built field by field: dataclasses.replace costs several times more.
        piece = IPv4Header(
            src=header.src, dst=header.dst, protocol=header.protocol, ttl=header.ttl,
            identification=header.identification, dont_fragment=False,
            more_fragments=header.more_fragments if last else True,
            fragment_offset=base + position, tos=header.tos,
            total_length=header_length + end - position, checksum=0,
            options=header.options if first else later_options, reserved_flag=header.reserved_flag,
        )
        pieces.append((piece, data[position:end]))
        position = end
    return pieces


class Outcome(enum.Enum):
    """What `ReassemblyQueues.add` did with a fragment."""

    QUEUED = "queued"          # stored; the datagram still has holes
    COMPLETE = "complete"      # the last hole filled: `header` and `payload` are the datagram
    DUPLICATE = "duplicate"    # an exact copy of a fragment already held: ignored
    DROPPED = "dropped"        # the fragment (and its whole datagram) were discarded: see `reason`


@dataclass(frozen=True, slots=True)
class ReassemblyResult:
    outcome: Outcome
    header: IPv4Header | None = None
    payload: bytes | None = None
    reason: str | None = None  # for DROPPED: "overlap", "inconsistent length", "oversize", "memory"

    @property
    def datagram(self) -> tuple[IPv4Header, bytes] | None:
        """(header, payload) of the reassembled datagram, or None while incomplete."""
        if self.outcome is Outcome.COMPLETE:
            return self.header, self.payload  # type: ignore[return-value]
        return None


_QUEUED = ReassemblyResult(Outcome.QUEUED)
_DUPLICATE = ReassemblyResult(Outcome.DUPLICATE)

QueueKey = tuple[IPv4Address, IPv4Address, int, int]


@dataclass(frozen=True, slots=True)
class ExpiredQueue:
    """A reassembly queue that timed out; `first_header`/`first_payload` are set when fragment 0 had arrived."""

    key: QueueKey
    first_header: IPv4Header | None
    first_payload: bytes | None

    def quoted(self, data_length: int | None = None) -> bytes | None:
        """Fragment 0 as received: its header (length included) and data, or only the first `data_length` bytes.

        What an ICMP time exceeded (code 1) is about: Linux's ip_expire hands the whole first
        fragment to icmp_send, which quotes as much as fits in 576 bytes, as for every error
        (RFC 792's header + 64 bits is the minimum). None without fragment 0.
        """
        if self.first_header is None or self.first_payload is None:
            return None
        header = self.first_header
        buffer = bytearray(header.header_length)
        header.build_into(buffer, 0, len(self.first_payload))
        data = self.first_payload if data_length is None else self.first_payload[:data_length]
        return bytes(buffer) + data


class _Queue:
    """One datagram being reassembled (Linux struct ipq)."""

    __slots__ = ("key", "created", "expires", "offsets", "fragments", "received", "end_seen", "length",
                 "first_header", "memory", "run_starts", "run_ends")

    def __init__(self, key: QueueKey, now: float, timeout: float) -> None:
        self.key = key
        self.created = now
        self.expires = now + timeout
        self.offsets: list[int] = []          # sorted; fragments never overlap, so coverage is `received`
        self.fragments: dict[int, bytes] = {}
        self.received = 0                     # data bytes held (Linux "meat")
        self.end_seen = 0                     # highest end offset seen
        self.length: int | None = None        # total data length, once the last fragment arrived
        self.first_header: IPv4Header | None = None
        self.memory = 0
        self.run_starts: list[int] = []       # sorted; runs of adjacent fragments (Linux frag_run_len)
        self.run_ends: dict[int, int] = {}    # run start -> run end


class ReassemblyQueues:
    """All reassembly queues of one node, with their timer, memory limit and SNMP counters."""

    def __init__(self, ipfrag_time: float = IPFRAG_TIME, ipfrag_high_thresh: int = IPFRAG_HIGH_THRESH,
                 ipfrag_low_thresh: int = IPFRAG_LOW_THRESH) -> None:
        self.ipfrag_time = ipfrag_time
        self.ipfrag_high_thresh = ipfrag_high_thresh
        self.ipfrag_low_thresh = ipfrag_low_thresh
        # Insertion (creation) order is expiry order, so timers and eviction look at the front.
        self._queues: dict[QueueKey, _Queue] = {}
        self.memory = 0
        self.counters = {"ReasmReqds": 0, "ReasmOKs": 0, "ReasmFails": 0, "ReasmTimeout": 0, "ReasmOverlaps": 0,
                         "ReasmDuplicates": 0}

    def __len__(self) -> int:
        return len(self._queues)

    def add(self, header: IPv4Header, payload: "bytes | bytearray | memoryview", now: float) -> ReassemblyResult:
        """Queue one fragment (`payload` is its data, `header` its parsed header); complete the datagram if it can."""
        if not header.more_fragments and header.fragment_offset == 0:
            raise ValueError("not a fragment: MF clear and offset 0")
        counters = self.counters
        counters["ReasmReqds"] += 1
        key = (header.src, header.dst, header.protocol, header.identification)
        queue = self._queues.get(key)
        if queue is None:
            queue = self._queues[key] = _Queue(key, now, self.ipfrag_time)

        offset = header.fragment_offset
        end = offset + len(payload)
        if header.more_fragments:
            end &= ~7  # RFC 791: non-last fragments carry multiples of 8; Linux trims the excess
            if queue.length is not None and end > queue.length:
                return self._fail(queue, "inconsistent length")
        else:
            if end < queue.end_seen or (queue.length is not None and end != queue.length):
                return self._fail(queue, "inconsistent length")
            queue.length = end  # ip_frag_queue sets INET_FRAG_LAST_IN before the insert, duplicate or not
        if end == offset:
            return self._fail(queue, "inconsistent length")
        if end + MIN_HEADER_LENGTH > IP_MAXPACKET:
            return self._fail(queue, "oversize")

        placement = self._place(queue, offset, end)
        if placement is Outcome.DUPLICATE:
            counters["ReasmDuplicates"] += 1
            return _DUPLICATE
        if placement is None:
            counters["ReasmOverlaps"] += 1
            return self._fail(queue, "overlap")

        data = bytes(payload[: end - offset])
        offsets = queue.offsets
        offsets.insert(bisect.bisect_left(offsets, offset), offset)
        queue.fragments[offset] = data
        queue.received += len(data)
        if end > queue.end_seen:
            queue.end_seen = end
        if offset == 0:
            queue.first_header = header
        cost = len(data) + FRAGMENT_OVERHEAD
        queue.memory += cost
        self.memory += cost

        if queue.length is not None and queue.received == queue.length:
            return self._reassemble(queue)
        if self.memory > self.ipfrag_high_thresh:
            self._evict()
            if key not in self._queues:
                return ReassemblyResult(Outcome.DROPPED, reason="memory")
        return _QUEUED

    @staticmethod
    def _place(queue: _Queue, offset: int, end: int) -> Outcome | None:
        """inet_frag_queue_insert: record [offset, end) in the queue's runs (QUEUED); DUPLICATE when it
        lies inside one run, None for an overlap (nothing recorded then)."""
        starts, ends = queue.run_starts, queue.run_ends
        if not starts:
            starts.append(offset)
            ends[offset] = end
            return Outcome.QUEUED
        last_start = starts[-1]
        last_end = ends[last_start]
        if end > last_end:  # the common case: past everything held
            if offset < last_end:
                return None
            if offset == last_end:
                ends[last_start] = end  # fragrun_append_to_last
            else:
                starts.append(offset)
                ends[offset] = end
            return Outcome.QUEUED
        index = bisect.bisect_left(starts, end) - 1  # the last run starting before `end`
        if index >= 0:
            start = starts[index]
            run_end = ends[start]
            if run_end > offset:
                return Outcome.DUPLICATE if start <= offset and end <= run_end else None
        starts.insert(index + 1, offset)  # a run of its own, even when adjacent to its neighbours
        ends[offset] = end
        return Outcome.QUEUED

    def _reassemble(self, queue: _Queue) -> ReassemblyResult:
        """All holes filled (no overlaps and `received` == length, so offset 0 is present)."""
        first = queue.first_header
        assert first is not None
        if first.header_length + queue.length > IP_MAXPACKET:  # type: ignore[operator]
            return self._fail(queue, "oversize")
        self._remove(queue)
        payload = b"".join(queue.fragments[offset] for offset in queue.offsets)
        header = IPv4Header(
            src=first.src, dst=first.dst, protocol=first.protocol, ttl=first.ttl,
            identification=first.identification, dont_fragment=first.dont_fragment, more_fragments=False,
            fragment_offset=0, tos=first.tos, total_length=first.header_length + len(payload), checksum=0,
            options=first.options, reserved_flag=first.reserved_flag,
        )
        self.counters["ReasmOKs"] += 1
        return ReassemblyResult(Outcome.COMPLETE, header, payload)

    def _fail(self, queue: _Queue, reason: str) -> ReassemblyResult:
        self._remove(queue)
        self.counters["ReasmFails"] += 1
        return ReassemblyResult(Outcome.DROPPED, reason=reason)

    def _remove(self, queue: _Queue) -> None:
        del self._queues[queue.key]
        self.memory -= queue.memory

    def _evict(self) -> None:
        """Drop the oldest queues until memory is at or below the low threshold."""
        while self._queues and self.memory > self.ipfrag_low_thresh:
            self._remove(next(iter(self._queues.values())))
            self.counters["ReasmFails"] += 1

    def next_timer(self) -> float | None:
        """When the oldest queue expires (None without queues): the kernel's timer for `tick`."""
        for queue in self._queues.values():
            return queue.expires
        return None

    def tick(self, now: float) -> list[ExpiredQueue]:
        """Expire queues older than `ipfrag_time` (ReasmTimeout, ReasmFails); returns them for ICMP."""
        expired = []
        while self._queues:
            queue = next(iter(self._queues.values()))
            if queue.expires > now:
                break
            self._remove(queue)
            self.counters["ReasmTimeout"] += 1
            self.counters["ReasmFails"] += 1
            first_payload = queue.fragments.get(0) if queue.first_header is not None else None
            expired.append(ExpiredQueue(queue.key, queue.first_header, first_payload))
        return expired

    def table(self, now: float) -> list[dict[str, Any]]:
        """The queues as plain dicts (control endpoint): key, fragments, bytes held, known length, age."""
        return [{
            "src": str(queue.key[0]), "dst": str(queue.key[1]), "protocol": queue.key[2], "id": queue.key[3],
            "fragments": len(queue.offsets), "bytes": queue.received, "length": queue.length,
            "memory": queue.memory, "age": now - queue.created, "expires_in": queue.expires - now,
        } for queue in self._queues.values()]
