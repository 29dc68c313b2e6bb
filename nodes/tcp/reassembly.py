"""The receive side's data queue: in-order bytes, the out-of-order queue, RCV.NXT, SACK blocks.

Before changing this file, read RFC 9293 section 3.10.7.4 (processing segment text), RFC 2018
section 4 (which SACK blocks a receiver reports, and in which order), RFC 2883 (D-SACK), and
Linux's net/ipv4/tcp_input.c: tcp_data_queue() (in-order data, data below RCV.NXT),
tcp_data_queue_ofo() (the out-of-order queue: coalescing, duplicates, D-SACK),
tcp_ofo_queue() (moving data across once a gap fills), tcp_prune_ofo_queue() (what is dropped
when the queue is over its limit) and tcp_sack_new_ofo_skb() (SACK block order).

Sans-I/O and clock-free. The caller (the connection) has already checked that a segment is
acceptable (RFC 9293 3.10.7.4, nodes/tcp/seq.py) and hands its payload here:

* `ReceiveQueue(rcv_nxt, buffer_size, ofo_limit=None)` -- RCV.NXT once the SYN is in.
* `receive(seq, data, fin=False) -> Arrival` -- what the segment did (advanced RCV.NXT, went to
  the out-of-order queue, was a duplicate, was cut for lack of room, delivered the FIN).
* `read(max_bytes) -> bytes`, `readable` -- the application's side (recv()).
* `receive_window`, `free_space` -- what the advertised window is made of.
* `sack_blocks(max_blocks)`, `clear_dsack()` -- the SACK option of the next ACK.

Inside, sequence numbers become *offsets*: unbounded integers counted from the first RCV.NXT,
so the queue never compares two numbers modulo 2**32; `seq_diff` converts at the edge, which is
exact while everything the queue holds lies within 2**31 of RCV.NXT (it lies within the
receive buffer, far below that).

Memory is counted in payload bytes, not Linux's skb truesize: `buffer_size` plays SO_RCVBUF's
part (in-order plus out-of-order bytes), `ofo_limit` bounds the out-of-order part alone.

Not modelled: receive-buffer autotuning (tcp_rcv_space_adjust), collapsing the receive queue
under memory pressure (tcp_collapse), urgent data.
"""
from __future__ import annotations

import bisect
import heapq
from dataclasses import dataclass

from nodes.tcp.seq import seq_add, seq_diff

# RFC 2018 section 3: 40 option bytes hold four 8-byte blocks after the 2-byte kind/length;
# with timestamps (10 bytes, padded to 12) only three fit.
MAX_SACK_BLOCKS = 4
MAX_SACK_BLOCKS_WITH_TIMESTAMPS = 3


def max_sack_blocks(timestamps: bool) -> int:
    """How many SACK blocks fit in an ACK's options (RFC 2018 section 3)."""
    return MAX_SACK_BLOCKS_WITH_TIMESTAMPS if timestamps else MAX_SACK_BLOCKS


@dataclass(frozen=True, slots=True)
class Arrival:
    """What one received segment did to the queue; the connection decides the ACK from it.

    Linux sends an immediate ACK when data went out of order, was a duplicate, or filled a
    gap (tcp_data_queue: inet_csk_schedule_ack / tcp_enter_quickack_mode); a plain in-order
    segment may wait for the delayed ACK.
    """

    in_order: int = 0          # bytes by which RCV.NXT advanced (the FIN not counted)
    out_of_order: int = 0      # new bytes that went into the out-of-order queue
    duplicate: int = 0         # bytes that were already here (the D-SACK range)
    dropped: int = 0           # new bytes cut for lack of room (receive buffer or ofo_limit)
    filled_gap: bool = False   # queued out-of-order data became in-order
    fin: bool = False          # RCV.NXT passed the peer's FIN during this call


@dataclass(slots=True)
class ReassemblyStats:
    """Counters named after Linux's LINUX_MIB_* (nstat), asserted exactly in tests."""

    TCPOFOQueue: int = 0       # segments that went into the out-of-order queue
    TCPOFODrop: int = 0        # segments (or their tails) dropped: ofo queue over its limit
    TCPOFOMerge: int = 0       # out-of-order segments wholly present already
    OfoPruned: int = 0         # times queued out-of-order data was thrown away for room
    TCPDSACKOldSent: int = 0   # D-SACKs for data below RCV.NXT
    TCPDSACKOfoSent: int = 0   # D-SACKs for data already in the out-of-order queue
    TCPRcvQDrop: int = 0       # segments cut because the receive buffer was full


class _Range:
    """A contiguous run of out-of-order bytes [start, end) in offsets, and when last touched."""

    __slots__ = ("start", "data", "stamp")

    def __init__(self, start: int, data: bytearray, stamp: int) -> None:
        self.start = start
        self.data = data
        self.stamp = stamp

    @property
    def end(self) -> int:
        return self.start + len(self.data)


def _range_end(queued: _Range) -> int:
    return queued.start + len(queued.data)


class ReceiveQueue:
    """One connection's received stream: bytes ready for recv() and the out-of-order queue."""

    def __init__(self, rcv_nxt: int, buffer_size: int = 131072, ofo_limit: int | None = None,
                 dsack: bool = True) -> None:
        if buffer_size <= 0:
            raise ValueError("buffer_size must be positive")
        self._base = rcv_nxt            # the sequence number of offset 0
        self._nxt = 0                   # RCV.NXT as an offset
        self._readable = bytearray()    # in-order bytes the application has not read
        self._ofo: list[_Range] = []    # sorted, disjoint, never adjacent (coalesced)
        self._ofo_bytes = 0
        self._stamp = 0
        self._fin: int | None = None    # the FIN's offset once seen
        self._fin_done = False
        self._fin_stamp = 0             # when an out-of-order FIN was queued (its SACK block's age)
        self._dsack: tuple[int, int] | None = None   # sequence numbers, reported once
        self.buffer_size = buffer_size
        self.ofo_limit = buffer_size if ofo_limit is None else ofo_limit
        self.dsack_enabled = dsack      # net.ipv4.tcp_dsack
        self.stats = ReassemblyStats()

    # -- what the connection reads -------------------------------------------------------
    @property
    def rcv_nxt(self) -> int:
        """RCV.NXT: the next sequence number expected (the FIN counted once passed)."""
        return (self._base + self._nxt) & 0xFFFFFFFF  # seq_add, inlined: read per segment

    @property
    def readable(self) -> int:
        """In-order bytes waiting for the application (recv() would return this many)."""
        return len(self._readable)

    @property
    def ofo_bytes(self) -> int:
        """Bytes held in the out-of-order queue."""
        return self._ofo_bytes

    @property
    def ofo_segments(self) -> int:
        """Contiguous runs in the out-of-order queue (each one SACK block)."""
        return len(self._ofo)

    @property
    def fin_received(self) -> bool:
        """The peer's FIN has been passed: no byte follows, recv() returns b"" once drained."""
        return self._fin_done

    @property
    def receive_window(self) -> int:
        """Bytes from RCV.NXT the peer may still send: the buffer less the unread bytes.

        Out-of-order bytes sit inside this window and do not shrink it, so its right edge
        (RCV.NXT + receive_window) never moves left as data arrives (RFC 9293 3.8.6 asks that
        the window not shrink); rounding and receiver SWS avoidance are the caller's.
        """
        return self.buffer_size - len(self._readable)

    @property
    def free_space(self) -> int:
        """Buffer bytes not holding data, in order or not (Linux's tcp_space())."""
        return self.buffer_size - len(self._readable) - self._ofo_bytes

    @property
    def fin_pending(self) -> bool:
        """The peer's FIN arrived ahead of missing data (it waits, out of order)."""
        return self._fin is not None and not self._fin_done and self._fin > self._nxt

    @property
    def sack_pending(self) -> bool:
        """Whether the next ACK has SACK blocks to carry (out-of-order data or FIN, a D-SACK)."""
        return bool(self._ofo) or self._dsack is not None or self.fin_pending

    @property
    def sack_block_count(self) -> int:
        """How many SACK blocks the next ACK would carry with room for all (D-SACK included)."""
        return len(self._ofo) + (self._dsack is not None) + self.fin_pending

    def append(self, data) -> bool:
        """The fast path of `receive`: `data` at exactly RCV.NXT with no out-of-order queue, no
        FIN seen and room in the buffer. Returns False (nothing done) otherwise."""
        if self._ofo or self._fin is not None or len(data) > self.buffer_size - len(self._readable):
            return False
        self._readable += data
        self._nxt += len(data)
        return True

    def peek(self, max_bytes: int = -1) -> bytes:
        """The first `max_bytes` in-order bytes (all when negative), left in place (MSG_PEEK)."""
        if max_bytes < 0:
            return bytes(self._readable)
        return bytes(self._readable[:max_bytes])

    def read(self, max_bytes: int = -1) -> bytes:
        """Take up to `max_bytes` in-order bytes (all when negative), as recv() does."""
        if max_bytes < 0 or max_bytes >= len(self._readable):
            out = bytes(self._readable)
            self._readable.clear()
            return out
        out = bytes(self._readable[:max_bytes])
        del self._readable[:max_bytes]
        return out

    # -- segments arriving ---------------------------------------------------------------
    def receive(self, seq: int, data: bytes, fin: bool = False) -> Arrival:
        """Take one acceptable segment's payload starting at `seq` (and its FIN flag)."""
        start = self._nxt + seq_diff(seq, self.rcv_nxt)
        end = start + len(data)
        dropped = 0
        duplicate = 0
        fin_offset = end if fin else None
        if self._fin is not None and end > self._fin:
            # Bytes after the FIN do not exist (RFC 9293 3.10.7.4): drop them silently.
            end = max(start, self._fin)
            data = data[:end - start]
            fin_offset = None
        if start < self._nxt:
            # tcp_data_queue: a retransmission of data already received; D-SACK it.
            duplicate = min(end, self._nxt) - start
            if duplicate > 0 and self.dsack_enabled:
                self._note_dsack(start, start + duplicate)
                self.stats.TCPDSACKOldSent += 1
            data = data[self._nxt - start:] if end > self._nxt else b""
            start = self._nxt
            end = max(end, start)
        window_end = self._nxt + self.receive_window
        if end > window_end:
            dropped = end - window_end
            self.stats.TCPRcvQDrop += 1
            data = data[:window_end - start] if window_end > start else b""
            end = max(start, window_end)
        if fin_offset is not None and fin_offset <= window_end and self._fin is None:
            # A FIN fits even with a zero window, as Linux accepts a bare FIN (tcp_data_queue).
            self._fin = fin_offset
            self._stamp += 1
            self._fin_stamp = self._stamp
        if start == end:
            arrival = Arrival(duplicate=duplicate, dropped=dropped)
        elif start == self._nxt:
            arrival = self._queue_in_order(data, duplicate, dropped)
        else:
            arrival = self._queue_out_of_order(start, data, duplicate, dropped)
        if self._fin is not None and not self._fin_done and self._nxt == self._fin:
            self._nxt += 1          # the FIN occupies one sequence number
            self._fin_done = True
            arrival = _with_fin(arrival)
        return arrival

    def _queue_in_order(self, data: bytes, duplicate: int, dropped: int) -> Arrival:
        """Data at RCV.NXT: append it, drop what it covers in the queue, pull what now joins.

        Linux's tcp_data_queue() then tcp_ofo_queue(): queued bytes below the new RCV.NXT
        were sent twice and are D-SACKed.
        """
        before = self._nxt
        self._readable += data
        self._nxt += len(data)
        filled = False
        covered = 0
        while self._ofo and self._ofo[0].start <= self._nxt:
            queued = self._ofo.pop(0)
            self._ofo_bytes -= len(queued.data)
            overlap = min(queued.end, self._nxt) - queued.start
            if overlap > 0:
                self._note_dsack(queued.start, queued.start + overlap)
                covered += overlap
            if queued.end > self._nxt:
                self._readable += queued.data[overlap:]
                self._nxt = queued.end
                filled = True
        if covered and self.dsack_enabled:
            self.stats.TCPDSACKOfoSent += 1
        return Arrival(in_order=self._nxt - before, duplicate=duplicate + covered, dropped=dropped,
                       filled_gap=filled)

    def _queue_out_of_order(self, start: int, data: bytes, duplicate: int,
                            dropped: int) -> Arrival:
        """Data above RCV.NXT: fill the holes it covers, coalesce, keep within `ofo_limit`.

        As tcp_data_queue_ofo(): bytes already queued are not stored twice (D-SACKed), and the
        run that holds the segment becomes the most recent, so its SACK block goes first.
        """
        end = start + len(data)
        if self._ofo_bytes + self._uncovered(start, end) > self.ofo_limit:
            self._prune_above(start, end)
        holes = self._holes(start, end, count_duplicates=True)
        new_bytes = sum(hi - lo for lo, hi in holes)
        if new_bytes < end - start:
            self.stats.TCPDSACKOfoSent += int(self.dsack_enabled)
            duplicate += (end - start) - new_bytes
        room = self.ofo_limit - self._ofo_bytes
        if new_bytes > room:
            # Still too much: keep the holes nearest RCV.NXT, drop the rest of the segment
            # (tcp_data_queue_ofo drops the whole skb when tcp_try_rmem_schedule fails).
            self.stats.TCPOFODrop += 1
            kept = []
            for lo, hi in holes:
                take = min(hi - lo, room)
                if take > 0:
                    kept.append((lo, lo + take))
                room -= take
            kept_bytes = sum(hi - lo for lo, hi in kept)
            dropped += new_bytes - kept_bytes
            new_bytes, holes = kept_bytes, kept
        if holes:
            self.stats.TCPOFOQueue += 1
        elif new_bytes == 0 and not dropped:
            self.stats.TCPOFOMerge += 1
        self._stamp += 1
        for lo, hi in holes:
            self._insert(lo, data[lo - start:hi - start])
        self._touch(holes[0][0] if holes else start)
        return Arrival(out_of_order=new_bytes, duplicate=duplicate, dropped=dropped)

    def _uncovered(self, start: int, end: int) -> int:
        return sum(hi - lo for lo, hi in self._holes(start, end, count_duplicates=False))

    def _holes(self, start: int, end: int, count_duplicates: bool) -> list[tuple[int, int]]:
        """The parts of [start, end) not yet queued; optionally D-SACK the parts that are."""
        holes = []
        cursor = start
        index = bisect.bisect_right(self._ofo, start, key=_range_end)
        while cursor < end and index < len(self._ofo) and self._ofo[index].start < end:
            queued = self._ofo[index]
            if queued.start > cursor:
                holes.append((cursor, queued.start))
            if count_duplicates:
                self._note_dsack(max(cursor, queued.start), min(end, queued.end))
            cursor = max(cursor, queued.end)
            index += 1
        if cursor < end:
            holes.append((cursor, end))
        return holes

    def _prune_above(self, start: int, end: int) -> None:
        """Throw away queued runs from the highest down, never those starting below `start`.

        tcp_prune_ofo_queue(): data farthest from RCV.NXT is the least useful, and pruning stops
        where the incoming segment would land last (Linux 4.15 and later).
        """
        pruned = False
        while (self._ofo and self._ofo[-1].start >= start
               and self._ofo_bytes + self._uncovered(start, end) > self.ofo_limit):
            queued = self._ofo.pop()
            self._ofo_bytes -= len(queued.data)
            pruned = True
        if pruned:
            self.stats.OfoPruned += 1

    def _insert(self, start: int, data: bytes) -> None:
        """Put bytes filling a hole into the queue, merging with the runs on either side."""
        index = bisect.bisect_left(self._ofo, start, key=_range_end)
        # _ofo[index] is the first run ending at or after `start`: the left neighbour if adjacent.
        if index < len(self._ofo) and self._ofo[index].end == start:
            run = self._ofo[index]
            run.data += data
        else:
            run = _Range(start, bytearray(data), self._stamp)
            self._ofo.insert(index, run)
        self._ofo_bytes += len(data)
        following = index + 1
        if following < len(self._ofo) and self._ofo[following].start == run.end:
            run.data += self._ofo.pop(following).data
            run.stamp = max(run.stamp, self._stamp)

    def _touch(self, offset: int) -> None:
        index = bisect.bisect_right(self._ofo, offset, key=_range_end)
        if index < len(self._ofo) and self._ofo[index].start <= offset:
            self._ofo[index].stamp = self._stamp

    def _note_dsack(self, start: int, end: int) -> None:
        """Remember a duplicate range for the next ACK (RFC 2883; tcp_dsack_set/_extend)."""
        if not self.dsack_enabled or start >= end:
            return
        if self._dsack is not None:
            old_start = self._nxt + seq_diff(self._dsack[0], self.rcv_nxt)
            old_end = old_start + seq_diff(self._dsack[1], self._dsack[0])
            if start > old_end or end < old_start:
                return              # one D-SACK block per ACK: the first one wins
            start, end = min(start, old_start), max(end, old_end)
        self._dsack = (seq_add(self._base, start), seq_add(self._base, end))

    # -- the SACK option ------------------------------------------------------------------
    def sack_blocks(self, max_blocks: int = MAX_SACK_BLOCKS) -> list[tuple[int, int]]:
        """The (left edge, right edge) blocks for the next ACK, as sequence numbers.

        RFC 2883 section 4: a pending D-SACK block goes first. Then RFC 2018 section 4: the
        block holding the most recently received segment, then the others most recent first
        (tcp_sack_new_ofo_skb moves the block it extends to the front). Every block lies above
        RCV.NXT because the out-of-order queue does.
        """
        blocks = []
        if self._dsack is not None and max_blocks > 0:
            blocks.append(self._dsack)
        runs = [(run.stamp, run.start, run.end) for run in self._ofo]
        if self.fin_pending:
            # An out-of-order FIN is queued like data (tcp_data_queue_ofo): SACKed, one number.
            fin = self._fin
            for index, (stamp, start, end) in enumerate(runs):
                if end == fin:
                    runs[index] = (max(stamp, self._fin_stamp), start, end + 1)
                    break
            else:
                runs.append((self._fin_stamp, fin, fin + 1))
        recent = heapq.nlargest(max(0, max_blocks - len(blocks)), runs)
        for _, start, end in recent:
            blocks.append((seq_add(self._base, start), seq_add(self._base, end)))
        return blocks

    def clear_dsack(self) -> None:
        """An ACK carried the D-SACK block: report it once only (tcp_options_write)."""
        self._dsack = None


def _with_fin(arrival: Arrival) -> Arrival:
    return Arrival(in_order=arrival.in_order, out_of_order=arrival.out_of_order,
                   duplicate=arrival.duplicate, dropped=arrival.dropped,
                   filled_gap=arrival.filled_gap, fin=True)
