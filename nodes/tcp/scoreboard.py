"""The send side's SACK scoreboard and loss detection (RFC 6675).

Before changing this file, read RFC 6675 sections 2-5 (definitions, IsLost, SetPipe, NextSeg,
the algorithm's steps), section 5.1 (retransmission timeouts), RFC 2883 section 4 (telling a
D-SACK block apart) and Linux's net/ipv4/tcp_input.c: tcp_sacktag_write_queue() and
tcp_is_sackblock_valid() (which blocks count), tcp_timeout_mark_lost() (what an RTO does to
the scoreboard) and tcp_xmit_retransmit_queue() in tcp_output.c (what is retransmitted).

Sans-I/O and clock-free; the connection drives it:

* `Scoreboard(snd_una, mss, dup_thresh=3)` -- SND.UNA once the SYN is acknowledged.
* `on_transmit(seq, length, rescue=False)` -- a segment left: new data moves HighData,
  data below HighData is a retransmission and moves HighRxt (RFC 6675 step C.1-C.4).
* `on_ack(ack, sack_blocks) -> AckInfo` -- an acceptable ACK and its SACK blocks.
* `should_enter_recovery`, `enter_recovery()` -- RFC 6675 section 5 step 4.
* `is_lost(seq)`, `pipe()`, `next_seg(unsent, window_end)` -- the RFC's three routines.
* `on_rto() -> bool` -- the retransmission timer fired (section 5.1, tcp_timeout_mark_lost).

Cwnd and ssthresh belong to the congestion control (nodes/tcp/congestion.py); this module only
says what is in flight, what is lost and what to send next.

Inside, sequence numbers are offsets: unbounded integers counted from the first SND.UNA, so no
comparison here is modulo 2**32; `seq_diff` converts at the edge (everything tracked lies
within the send window, far below 2**31 of SND.UNA).

HighRxt is kept as an exclusive edge: `high_rxt` is the sequence number *after* the highest
retransmitted octet (RFC 6675's HighRxt + 1), and equals SND.UNA when nothing was retransmitted
in this recovery; likewise `high_data` is SND.NXT (HighData + 1).

Not modelled: RACK-TLP (RFC 8985, Linux's default loss detection since 4.18), FACK, reordering
adaptation of DupThresh (tcp_reordering), D-SACK based undo (the caller sees `AckInfo.dsack`),
detecting reneging at ACK time (tcp_check_sack_reneging) rather than at the RTO.
"""
from __future__ import annotations

import bisect
from dataclasses import dataclass

from nodes.tcp.seq import seq_add, seq_diff

DUP_THRESH = 3          # RFC 6675 section 2 (RFC 5681's three duplicate ACKs)


@dataclass(frozen=True, slots=True)
class AckInfo:
    """What one ACK changed on the scoreboard."""

    acked: int = 0              # bytes newly covered by the cumulative ACK
    newly_sacked: int = 0       # bytes newly covered by SACK blocks
    dsack: tuple[int, int] | None = None   # a D-SACK block (RFC 2883), for undo logic
    duplicate: bool = False     # RFC 6675 section 2's "duplicate acknowledgment"
    recovery_ended: bool = False   # step (A): the ACK covered RecoveryPoint


@dataclass(frozen=True, slots=True)
class NextSegment:
    """NextSeg()'s answer: send `length` bytes from `seq`; `rule` is RFC 6675's rule 1-4."""

    seq: int
    length: int
    rule: int


@dataclass(slots=True)
class ScoreboardStats:
    """Counters named after Linux's LINUX_MIB_* (nstat)."""

    TCPSACKDiscard: int = 0     # SACK blocks ignored as invalid (tcp_is_sackblock_valid)
    TCPDSACKRecv: int = 0       # D-SACK blocks received
    TCPSACKReneging: int = 0    # RTOs that found SACKed data at SND.UNA and forgot all SACKs


class Scoreboard:
    """RFC 6675's scoreboard for one connection: SACKed ranges above SND.UNA and its routines."""

    def __init__(self, snd_una: int, mss: int, dup_thresh: int = DUP_THRESH) -> None:
        if mss <= 0:
            raise ValueError("mss must be positive")
        self._base = snd_una
        self._una = 0               # HighACK, as an offset
        self._high_data = 0         # SND.NXT
        self._high_rxt = 0          # one past the highest retransmitted octet
        self._recovery_point = 0
        self._rescue_rxt: int | None = None
        self._rto_lost_end = 0      # unSACKed octets below this were marked lost by an RTO
        self._sacked: list[list[int]] = []   # sorted, disjoint, non-adjacent [start, end)
        self.mss = mss
        self.dup_thresh = dup_thresh
        self.dup_acks = 0           # RFC 6675's DupAcks
        self.in_recovery = False
        self.stats = ScoreboardStats()

    # -- conversions ---------------------------------------------------------------------
    def _offset(self, seq: int) -> int:
        return self._una + seq_diff(seq, self.snd_una)

    def _seq(self, offset: int) -> int:
        return seq_add(self._base, offset)

    @property
    def snd_una(self) -> int:
        """SND.UNA, the cumulative ACK point (RFC 6675's HighACK)."""
        return seq_add(self._base, self._una)

    @property
    def high_data(self) -> int:
        """SND.NXT: one past the highest octet ever sent (HighData + 1)."""
        return self._seq(self._high_data)

    @property
    def high_rxt(self) -> int:
        """One past the highest octet retransmitted in this recovery (HighRxt + 1)."""
        return self._seq(max(self._high_rxt, self._una))

    @property
    def recovery_point(self) -> int:
        """RecoveryPoint: HighData when recovery (or the last RTO) began."""
        return self._seq(max(self._recovery_point, self._una))

    @property
    def rescue_rxt(self) -> int | None:
        """RescueRxt: RecoveryPoint when rule 4 was used in this recovery, else None."""
        return None if self._rescue_rxt is None else self._seq(self._rescue_rxt)

    @property
    def sacked_bytes(self) -> int:
        return sum(end - start for start, end in self._sacked)

    def sacked_ranges(self) -> list[tuple[int, int]]:
        """The SACKed ranges above SND.UNA as (start, end) sequence numbers, lowest first."""
        return [(self._seq(start), self._seq(end)) for start, end in self._sacked]

    # -- events --------------------------------------------------------------------------
    def on_transmit(self, seq: int, length: int, rescue: bool = False) -> None:
        """A segment of `length` bytes from `seq` was sent (RFC 6675 step C)."""
        start = self._offset(seq)
        end = start + length
        if start < self._high_data and not rescue:
            # C.2: a retransmission moves HighRxt, except the rescue of rule 4 (C.3).
            self._high_rxt = max(self._high_rxt, min(end, self._high_data))
        if rescue:
            self._rescue_rxt = self._recovery_point
        self._high_data = max(self._high_data, end)

    @property
    def any_sacked(self) -> bool:
        """Whether any octet above SND.UNA is SACKed."""
        return bool(self._sacked)

    def on_new_data(self, length: int) -> None:
        """`length` new octets were sent at HighData (the common case of `on_transmit`, cheaply)."""
        self._high_data += length

    def advance(self, acked: int) -> None:
        """A plain cumulative ACK of `acked` more octets with no SACK blocks (the fast path of
        `on_ack`): only valid when nothing is SACKed and no recovery is in progress."""
        self._una += acked
        self.dup_acks = 0

    def on_ack(self, ack: int, sack_blocks: list[tuple[int, int]] = ()) -> AckInfo:
        """Update from an ACK the connection found acceptable (SND.UNA <= ack <= SND.NXT)."""
        ack_offset = self._offset(ack)
        if ack_offset > self._high_data:
            raise ValueError("ack beyond SND.NXT: the connection must check acceptability")
        acked = 0
        if ack_offset > self._una:
            acked = ack_offset - self._una
            self._una = ack_offset
            self._forget_below(ack_offset)
            self.dup_acks = 0
        dsack = None
        newly = 0
        for index, (left, right) in enumerate(sack_blocks):
            start = self._offset(left)
            end = start + seq_diff(right, left)
            if index == 0 and self._is_dsack(start, end, sack_blocks):
                dsack = (left, right)
                self.stats.TCPDSACKRecv += 1
                continue
            if end <= start or end > self._high_data or end <= self._una:
                # tcp_is_sackblock_valid: empty, beyond SND.NXT, or wholly acknowledged.
                self.stats.TCPSACKDiscard += 1
                continue
            newly += self._add_sacked(max(start, self._una), end)
        duplicate = (acked == 0 and newly > 0 and self._high_data > self._una)
        if duplicate:
            self.dup_acks += 1
        ended = False
        if self.in_recovery and self._una >= self._recovery_point:
            self.in_recovery = False    # step (A)
            ended = True
        return AckInfo(acked=acked, newly_sacked=newly, dsack=dsack, duplicate=duplicate,
                       recovery_ended=ended)

    def _is_dsack(self, start: int, end: int, blocks: list[tuple[int, int]]) -> bool:
        """RFC 2883 section 4: the first block is below the ACK, or inside the second block."""
        if end <= self._una:
            return end > start
        if len(blocks) > 1:
            second_start = self._una + seq_diff(blocks[1][0], self.snd_una)
            second_end = second_start + seq_diff(blocks[1][1], blocks[1][0])
            return second_start <= start and end <= second_end and start < end
        return False

    @property
    def should_enter_recovery(self) -> bool:
        """Step 4 of RFC 6675 section 5: DupAcks reached DupThresh, or IsLost(HighACK + 1).

        Never during recovery, nor before HighACK reaches the RecoveryPoint an RTO left
        (section 5.1).
        """
        if self.in_recovery or self._una < self._recovery_point or self._high_data <= self._una:
            return False
        return self.dup_acks >= self.dup_thresh or self._is_lost_offset(self._una)

    def enter_recovery(self) -> None:
        """Section 5 step 4.1-4.2: RecoveryPoint = HighData; HighRxt, RescueRxt start afresh."""
        self.in_recovery = True
        self._recovery_point = self._high_data
        self._high_rxt = self._una
        self._rescue_rxt = None

    def on_rto(self) -> bool:
        """The retransmission timer fired; return True if all SACK information was dropped.

        Linux's tcp_timeout_mark_lost(): SACK bits are kept, unless SND.UNA itself was SACKed
        -- the receiver reneged (RFC 2018 section 8) -- and then all are cleared; every other
        unSACKed byte sent is marked lost, so retransmission restarts from SND.UNA. RFC 6675
        section 5.1: recovery ends, RecoveryPoint = HighData, and no new recovery starts
        until it is acknowledged.
        """
        reneged = bool(self._sacked) and self._sacked[0][0] <= self._una
        if reneged:
            self._sacked.clear()
            self.stats.TCPSACKReneging += 1
        self.in_recovery = False
        self._recovery_point = self._high_data
        self._rto_lost_end = self._high_data
        self._high_rxt = self._una
        self._rescue_rxt = None
        self.dup_acks = 0
        return reneged

    # -- RFC 6675's routines -------------------------------------------------------------
    def is_lost(self, seq: int) -> bool:
        """IsLost(seq): unSACKed, and DupThresh runs or more than (DupThresh - 1) * SMSS
        bytes SACKed above it (RFC 6675 section 4), or marked lost by an RTO."""
        return self._is_lost_offset(self._offset(seq))

    def _is_lost_offset(self, offset: int) -> bool:
        if offset < self._una or offset >= self._high_data or self._is_sacked(offset):
            return False
        return offset < self._lost_edge()

    def _lost_edge(self) -> int:
        """Every unSACKed octet below this offset is lost (IsLost is monotone downwards)."""
        runs = 0
        sacked = 0
        edge = self._una
        for start, end in reversed(self._sacked):
            runs += 1
            sacked += end - start
            if runs >= self.dup_thresh or sacked > (self.dup_thresh - 1) * self.mss:
                edge = start
                break
        return max(edge, min(self._rto_lost_end, self._high_data))

    def pipe(self) -> int:
        """SetPipe() (RFC 6675 section 4): bytes the sender believes are in the network.

        Each unSACKed byte between HighACK and HighData counts once if not lost, and once more
        if it lies below HighRxt (retransmitted).
        """
        lost_edge = max(self._lost_edge(), self._una)
        high_rxt = min(max(self._high_rxt, self._una), self._high_data)
        return (self._unsacked(lost_edge, self._high_data)
                + self._unsacked(self._una, high_rxt))

    def next_seg(self, unsent: int = 0, window_end: int | None = None) -> NextSegment | None:
        """NextSeg() (RFC 6675 section 4): what to send next, or None (rule 5).

        `unsent` is how many bytes wait in the send buffer beyond SND.NXT, `window_end` is
        SND.UNA + SND.WND (no limit when None).
        """
        rxt_from = max(self._high_rxt, self._una)
        lost_edge = self._lost_edge()
        hole = self._first_unsacked(rxt_from)
        # Rule 1: the first lost byte not yet retransmitted.  Outside recovery only what an
        # RTO marked lost is retransmitted (tcp_xmit_retransmit_queue sends lost skbs only).
        if hole is not None and hole < lost_edge and (
                self.in_recovery or hole < self._rto_lost_end):
            return NextSegment(self._seq(hole), self._hole_length(hole), 1)
        # Rule 2: new data, as far as the send buffer and the peer's window allow.
        room = unsent
        if window_end is not None:
            room = min(room, self._offset(window_end) - self._high_data)
        if room > 0:
            return NextSegment(self._seq(self._high_data), min(self.mss, room), 2)
        if not self.in_recovery:
            return None
        # Rule 3: an unSACKed byte below the highest SACKed one, lost or not.
        if hole is not None and self._sacked and hole < self._sacked[-1][1]:
            return NextSegment(self._seq(hole), self._hole_length(hole), 3)
        # Rule 4: one rescue retransmission per recovery, ending at the highest unSACKed byte.
        if self._rescue_rxt is None or self._una > self._rescue_rxt:
            highest = self._last_unsacked()
            # (4.a): S2 > HighRxt -- never re-send what this recovery already retransmitted
            if highest is not None and highest >= max(self._high_rxt, self._una):
                start = max(highest + 1 - self.mss, self._high_rxt, self._una)
                below = bisect.bisect_right(self._sacked, [highest]) - 1
                if below >= 0:
                    start = max(start, self._sacked[below][1])
                return NextSegment(self._seq(start), highest + 1 - start, 4)
        return None

    # -- ranges ----------------------------------------------------------------------------
    def _add_sacked(self, start: int, end: int) -> int:
        """Merge [start, end) into the SACKed ranges; return how many bytes were new."""
        before = self.sacked_bytes
        index = bisect.bisect_left(self._sacked, [start])
        if index > 0 and self._sacked[index - 1][1] >= start:
            index -= 1
        last = index
        while last < len(self._sacked) and self._sacked[last][0] <= end:
            start = min(start, self._sacked[last][0])
            end = max(end, self._sacked[last][1])
            last += 1
        self._sacked[index:last] = [[start, end]]
        return self.sacked_bytes - before

    def _forget_below(self, offset: int) -> None:
        while self._sacked and self._sacked[0][1] <= offset:
            self._sacked.pop(0)
        if self._sacked and self._sacked[0][0] < offset:
            self._sacked[0][0] = offset

    def _is_sacked(self, offset: int) -> bool:
        index = bisect.bisect_right(self._sacked, [offset, float("inf")]) - 1
        return index >= 0 and self._sacked[index][1] > offset

    def _unsacked(self, start: int, end: int) -> int:
        if end <= start:
            return 0
        covered = 0
        for sack_start, sack_end in self._sacked:
            covered += max(0, min(end, sack_end) - max(start, sack_start))
        return (end - start) - covered

    def _first_unsacked(self, offset: int) -> int | None:
        """The lowest unSACKed offset at or above `offset` below HighData, if any."""
        for sack_start, sack_end in self._sacked:
            if sack_start <= offset < sack_end:
                offset = sack_end
        return offset if offset < self._high_data else None

    def _last_unsacked(self) -> int | None:
        offset = self._high_data - 1
        for sack_start, sack_end in reversed(self._sacked):
            if sack_start <= offset < sack_end:
                offset = sack_start - 1
        return offset if offset >= self._una else None

    def _hole_length(self, start: int) -> int:
        """Up to one SMSS from `start`, stopping at the next SACKed byte or HighData."""
        limit = self._high_data
        index = bisect.bisect_right(self._sacked, [start, float("inf")])
        if index < len(self._sacked):
            limit = min(limit, self._sacked[index][0])
        return min(self.mss, limit - start)
