"""ACK processing (tcp_ack): SND.UNA, the send window, RTT samples, congestion control, fast
retransmit with NewReno (RFC 5681 3.2, RFC 6582) or SACK recovery (RFC 6675), our FIN acked.

Part of `TcpConnection` (see nodes/tcp/connection.py), through InputMixin; read Linux's tcp_ack,
tcp_ack_update_window, tcp_clean_rtx_queue, tcp_fastretrans_alert and RFC 6298 5 first.
"""
from __future__ import annotations

from nodes.tcp.congestion import AckOutcome, CongestionState
from nodes.tcp.seq import seq_add, seq_diff, seq_gt, seq_le
from nodes.tcp.states import TCP_CLOSING, TCP_FIN_WAIT1, TCP_FIN_WAIT2, TCP_LAST_ACK, TCP_TIME_WAIT
from nodes.wire.tcp import FIN

_OPEN = CongestionState.OPEN
_RECOVERY = CongestionState.RECOVERY
_PARTIAL = AckOutcome.PARTIAL
_DUP_THRESH = 3


class AckMixin:
    """What an acceptable ACK does to the send side."""

    __slots__ = ()

    def _ack(self, h, seq: int, ack: int, plen: int, flags: int, tsecr, blocks, now: float) -> None:
        snd_una = self.snd_una
        acked = seq_diff(ack, snd_una)
        self.last_ack_recv = now
        if not plen and not flags & 0x03:
            self.stats.TCPPureAcks += 1  # an ACK without data, SYN or FIN
        self.probes = 0
        # tcp_ack_update_window / tcp_may_update_window (RFC 9293 3.10.7.4 fifth, SND.WL1/WL2)
        nwin = h.window << self.snd_wscale
        window_changed = False
        if acked > 0 or seq_gt(seq, self.snd_wl1) or (seq == self.snd_wl1 and nwin > self.snd_wnd):
            if nwin != self.snd_wnd:
                window_changed = True
                self.snd_wnd = nwin
                if nwin > self.max_snd_wnd:
                    self.max_snd_wnd = nwin
            self.snd_wl1 = seq
            self.snd_wl2 = ack
            if nwin and self.t_persist is not None:
                self.t_persist = None  # tcp_ack_probe: the window opened
                self._persist_backoff = 0
        if acked > 0:
            self._clean_acked(ack, acked, tsecr, blocks, now)
        elif acked == 0 and self.snd_nxt != snd_una:
            sb = self.sb
            if blocks and sb is not None:
                sb.on_ack(ack, list(blocks))
            if not plen and not flags & FIN and not window_changed:
                self._duplicate_ack(now)
        if blocks and self.sack_on:
            self._sack_recovery_check(now)
        if self.fin_sent and self.snd_una == self.snd_nxt:
            self._fin_acked(now)

    def _sack_recovery_check(self, now: float) -> None:
        """RFC 6675 5 step 4: DupThresh duplicate ACKs or IsLost(HighACK + 1) -> recovery, and
        the first lost segment is retransmitted at once whatever pipe says (step 4.3)."""
        sb = self.sb
        cc = self.cc
        if sb is None or cc.state is not _OPEN or not sb.should_enter_recovery:
            return
        if cc.enter_recovery(now, self.snd_nxt, sack=True):
            sb.enter_recovery()
            self.stats.TCPSackRecovery += 1
            self.stats.TCPFastRetrans += 1
            nxt = sb.next_seg(0, None)
            if nxt is not None and nxt.rule != 2:
                self._retransmit(nxt.seq, nxt.length, now)

    def _duplicate_ack(self, now: float) -> None:
        """RFC 5681 3.2 / RFC 6582 / RFC 6675 5: count, enter fast recovery, inflate."""
        cc = self.cc
        sb = self.sb
        if self.sack_on and sb is not None:
            return  # RFC 6675: the scoreboard counts (see _sack_recovery_check)
        self.dupacks += 1
        if cc.state is _RECOVERY:
            cc.on_duplicate_ack(now)
        elif cc.state is _OPEN and self.dupacks >= _DUP_THRESH:
            # RFC 6582 3.2 step 1-2: only when SND.UNA passed the last recovery point
            if cc.recover is None or seq_gt(self.snd_una, cc.recover) or self.snd_una == cc.recover:
                if cc.enter_recovery(now, self.snd_nxt):
                    self.stats.TCPRenoRecovery += 1
                    self.stats.TCPFastRetrans += 1
                    self._retransmit(self.snd_una, self.mss, now)

    def _clean_acked(self, ack: int, acked: int, tsecr, blocks, now: float) -> None:
        """SND.UNA advances: free the send buffer, RTT sample, congestion control, the RTO."""
        prior_in_flight = self._in_flight()
        self.snd_una = ack
        data = seq_diff(ack, self._sbuf_seq)
        if data > 0:
            buf = self._sbuf
            if data > len(buf):
                data = len(buf)
            del buf[:data]
            self._sbuf_seq = seq_add(self._sbuf_seq, data)
        self.bytes_acked += acked
        mss = self.mss
        segments = (acked + mss - 1) // mss
        self.delivered += segments
        sb = self.sb
        if sb is not None:
            if blocks or sb.any_sacked or sb.in_recovery:
                sb.on_ack(ack, list(blocks) if blocks else [])
            else:
                sb.advance(acked)
        # RTT (RFC 6298 with Karn; RFC 7323 4 from TSecr)
        seg_rtt = None
        rtt_seq = self._rtt_seq
        if rtt_seq is not None and seq_le(rtt_seq, ack):
            seg_rtt = now - self._rtt_time
            self._rtt_seq = None
        ts_rtt = self._ts.rtt_sample(tsecr, now) if self.ts_on and tsecr else None
        rtt = self.rtt
        if rtt.on_ack(seg_rtt, retransmitted=False, snd_una=ack, snd_nxt=self.snd_nxt, timestamp_rtt=ts_rtt):
            self._note_rtt(seg_rtt if seg_rtt is not None else ts_rtt)
        cc = self.cc
        cwnd_limited = self._cwnd_limited or 2 * prior_in_flight >= cc.cwnd * mss
        self._cwnd_limited = False
        sample = seg_rtt if seg_rtt is not None else ts_rtt
        outcome = cc.on_ack(now, ack, segments, sample, cwnd_limited=cwnd_limited, snd_nxt=self.snd_nxt)
        if outcome is _PARTIAL and not self.sack_on:
            self._retransmit(ack, mss, now)  # RFC 6582 3.2 step 3: partial ACK
        self.dupacks = 0
        self.retransmits = 0
        self.retrans_stamp = None
        self._tlp_out = False
        self._arm_rto(now)  # RFC 6298 5.2-5.3 (or the tail loss probe)
        self._expand_sndbuf()

    def _fin_acked(self, now: float) -> None:
        """Our FIN is acknowledged: FIN-WAIT-1 -> FIN-WAIT-2, CLOSING -> TIME-WAIT, LAST-ACK -> CLOSED."""
        state = self.state
        if state == TCP_FIN_WAIT1:
            self._set_state(TCP_FIN_WAIT2)
            if self.orphan:
                self.t_wait = now + self.config.fin_timeout
        elif state == TCP_CLOSING:
            self._set_state(TCP_TIME_WAIT)
            self.t_wait = now + self.config.time_wait
        elif state == TCP_LAST_ACK:
            self._done()
