"""A segment arrives (RFC 9293 3.10.7), as Linux's tcp_rcv_state_process does it.

Part of `TcpConnection` (see nodes/tcp/connection.py); read RFC 9293 3.10.7.3-4, RFC 5961
sections 3-5 (RST and SYN in window -> challenge ACK, ACK range), RFC 7323 5 (PAWS),
RFC 5681 3.2 / RFC 6582 / RFC 6675 5 (fast retransmit and recovery), and Linux's
tcp_rcv_synsent_state_process, tcp_validate_incoming, tcp_ack, tcp_fin, tcp_data_queue,
__tcp_ack_snd_check and tcp_timewait_state_process before changing it.
"""
from __future__ import annotations

import errno

from nodes.tcp.ack import AckMixin
from nodes.tcp.congestion import CongestionState
from nodes.tcp.options import negotiate, parse_syn, syn_ack_echo_ok
from nodes.tcp.reassembly import ReceiveQueue
from nodes.tcp.scoreboard import Scoreboard
from nodes.tcp.seq import SEQ_MASK, linux_sequence_acceptable, seq_add, seq_diff, seq_ge, seq_gt, seq_le, seq_lt
from nodes.tcp.states import (
    TCP_CLOSE,
    TCP_CLOSE_WAIT,
    TCP_CLOSING,
    TCP_ESTABLISHED,
    TCP_FIN_WAIT1,
    TCP_FIN_WAIT2,
    TCP_LAST_ACK,
    TCP_LISTEN,
    TCP_SYN_RECV,
    TCP_SYN_SENT,
    TCP_TIME_WAIT,
)
from nodes.wire.tcp import ACK, FIN, RST, SYN, URG, SackOption, TimestampOption

_DATA_STATES = frozenset((TCP_ESTABLISHED, TCP_FIN_WAIT1, TCP_FIN_WAIT2))
_PREDICT_MASK = SYN | FIN | RST | URG | ACK  # PSH may be set on the fast path
_HALF = 1 << 31
_OPEN = CongestionState.OPEN


class InputMixin(AckMixin):
    """The receiving half of TcpConnection (its ACK processing is AckMixin's)."""

    __slots__ = ()

    # -- handshake helpers -----------------------------------------------------------------
    def _parse_peer_syn(self, header):
        return parse_syn(header.options, self._settings)

    def _syn_received(self, header, peer, now: float) -> None:
        """The peer's SYN is in: IRS, RCV.NXT, the negotiated options (tcp_rcv_synsent_state_process
        / tcp_openreq_init)."""
        self.irs = header.seq
        self.rq = ReceiveQueue(seq_add(header.seq, 1), max(self.rcvbuf, 1))
        neg = negotiate(self._offer, peer, user_mss=self.user_mss)
        self._neg = neg
        self.ts_on = neg.timestamps
        self.sack_on = neg.sack
        self.snd_wscale = neg.snd_wscale
        self.rcv_wscale = neg.rcv_wscale
        self.window_clamp = neg.window_clamp
        self.advmss = neg.advertised_mss
        self.mss = max(neg.send_mss_for_path_mtu(self.path_mtu), 8)
        self.rcv_mss = min(536, neg.receive_mss)  # tcp_initialize_rcv_mss
        if neg.timestamps:
            self._ts.store(peer.tsval, now)
        self.snd_wnd = self.max_snd_wnd = header.window  # a SYN's window is never scaled
        self.snd_wl1 = header.seq
        self.snd_wl2 = header.ack
        self.rcv_wnd = self.rcv_ssthresh = self._offer.window
        self.rcv_wup = self.rq.rcv_nxt

    def _handshake_rtt(self, tsecr, now: float) -> None:
        seg_rtt = now - self._rtt_time if self.retransmits == 0 else None
        ts_rtt = self._ts.rtt_sample(tsecr, now) if self.ts_on else None
        if not self.rtt.on_ack(seg_rtt, retransmitted=False, snd_una=self.snd_una, snd_nxt=self.snd_nxt,
                               timestamp_rtt=ts_rtt):
            self.rtt.handshake_without_sample()
        self._note_rtt(seg_rtt if seg_rtt is not None else ts_rtt)

    def _note_rtt(self, sample) -> None:
        if sample is not None and (self.min_rtt is None or sample < self.min_rtt):
            self.min_rtt = sample

    def _establish(self, now: float) -> None:
        """ESTABLISHED: the scoreboard starts at SND.UNA; counters; a FIN queued in SYN-RECV goes."""
        self._set_state(TCP_ESTABLISHED)
        if self.passive:
            self.stats.PassiveOpens += 1
        self.sb = Scoreboard(self.snd_una, self.mss)
        # tcp_init_buffer_space: the autotuning's first estimate of a round trip's data
        self._rcvq_space = min(self.rcv_wnd, self.config.initial_cwnd * self.advmss)
        self._rcvq_time = now
        self.retransmits = 0
        self.retrans_stamp = None
        self.t_rtx = None
        self._rtt_seq = None
        self._expand_sndbuf()
        if self.fin_queued:
            self.fin_queued = False
            self._queue_fin(now)

    def _expand_sndbuf(self) -> None:
        """tcp_sndbuf_expand(): room for two windows of segments, unless SO_SNDBUF was set."""
        if not self._sndbuf_locked:
            want = 2 * max(self.cc.cwnd, self.config.initial_cwnd) * self.mss
            want = min(want, self.config.wmem_max)
            if want > self.sndbuf:
                self.sndbuf = want

    # -- segment arrives -------------------------------------------------------------------
    def receive(self, header, payload, now: float):
        """RFC 9293 3.10.7.4 "SEGMENT ARRIVES" (tcp_rcv_state_process). Returns True only for a
        SYN that ended a TIME-WAIT connection: the layer then hands it to the listener."""
        state = self.state
        self.segs_in += 1
        self.last_rcv = now
        self.keep_probes = 0
        if state == TCP_ESTABLISHED and header.flags & _PREDICT_MASK == ACK and self._fast_path(header, payload, now):
            return None
        if state == TCP_SYN_SENT:
            self._rcv_synsent(header, payload, now)
            return None
        if state == TCP_CLOSE or state == TCP_LISTEN:
            return None
        if state == TCP_TIME_WAIT:
            return self._rcv_timewait(header, payload, now)
        self._rcv_state_process(header, payload, now)
        return None

    def _fast_path(self, h, payload, now: float) -> bool:
        """Header prediction (tcp_rcv_established's fast path, Van Jacobson): in-order data or
        a pure ACK of new data on a quiet connection -- no SACK, no recovery, a window change
        only with new data acknowledged, timestamps (if any) fresh. Returns False, having changed nothing, for the general path."""
        rq = self.rq
        seq = h.seq
        if seq != rq.rcv_nxt:
            return False
        options = h.options
        tsval = tsecr = None
        if self.ts_on:
            if len(options) != 3:
                return False
            ts = options[2]
            if type(ts) is not TimestampOption:
                return False
            tsval = ts.value
            tsecr = ts.echo
            if (tsval - self._ts.ts_recent) & SEQ_MASK >= _HALF:
                return False  # older than TS.Recent: PAWS decides
        elif options:
            return False
        ack = h.ack
        snd_una = self.snd_una
        acked = (ack - snd_una) & SEQ_MASK
        if acked > (self.snd_nxt - snd_una) & SEQ_MASK:
            return False
        nwin = h.window << self.snd_wscale
        if nwin != self.snd_wnd and (not acked or not nwin):
            return False  # a window update without new data acknowledged, or a zero window
        sb = self.sb
        if self.cc.state is not _OPEN or sb.in_recovery or sb.any_sacked:
            return False
        plen = len(payload)
        if plen:
            room = (self.rcv_wup + self.rcv_wnd - seq) & SEQ_MASK
            if room == 0 or room >= _HALF:
                return False  # a zero window: the general path drops it
            if not rq.append(payload):
                return False
        elif not acked:
            return False  # a duplicate ACK or a window probe
        else:
            self.stats.TCPPureAcks += 1
        if tsval is not None and (self.rcv_wup - seq) & SEQ_MASK < _HALF:
            self._ts.store(tsval, now)  # tcp_replace_ts_recent: SEG.SEQ <= Last.ACK.sent
        if acked:
            self.last_ack_recv = now
            self.probes = 0
            self.snd_wl1 = seq
            self.snd_wl2 = ack
            if nwin != self.snd_wnd:
                # tcp_ack_update_window: SND.UNA advanced, so the window is taken (RFC 9293 3.10.7.4)
                self.snd_wnd = nwin
                if nwin > self.max_snd_wnd:
                    self.max_snd_wnd = nwin
                if self.t_persist is not None:
                    self.t_persist = None
                    self._persist_backoff = 0
            self._clean_acked(ack, acked, tsecr, None, now)
        if plen:
            if plen > self.rcv_mss:
                self.rcv_mss = min(plen, self.advmss)
            room = min(self.window_clamp, rq.free_space >> 1) - self.rcv_ssthresh
            if room > 0:
                self.rcv_ssthresh += min(room, max(2 * self.advmss, 2 * plen))
            self.data_segs_in += 1
            self.last_data_recv = now
            self.bytes_received += plen
            if tsecr:
                sample = self._ts.rtt_sample(tsecr, now)
                if sample is not None:
                    self._rcv_rtt_sample(sample)
            self._after_in_order(rq, now)
            if seq_diff(rq.rcv_nxt, self.rcv_wup) > self.rcv_mss or self.quickack or (
                    self._quick and not self._pingpong):
                if self._quick:
                    self._quick -= 1
                self._send_ack(now)
            else:
                self.ack_pending = True
                if self.t_delack is None:
                    self.t_delack = now + self._delack_timeout()
        self._write_xmit(now)
        self._on_change(self)
        return True

    def _after_in_order(self, rq, now: float) -> None:
        """In-order data arrived: the delayed-ACK clock and the receiver's RTT per window."""
        self._event_data_recv(now)
        # tcp_rcv_rtt_measure: the receiver's RTT, one window per sample
        if self._rrtt_seq is None or seq_ge(rq.rcv_nxt, self._rrtt_seq):
            if self._rrtt_seq is not None:
                self._rcv_rtt_sample(now - self._rrtt_time)
            self._rrtt_seq = seq_add(rq.rcv_nxt, max(self.rcv_wnd, 1))
            self._rrtt_time = now

    def _rcv_synsent(self, h, payload, now: float) -> None:
        """RFC 9293 3.10.7.3 (tcp_rcv_synsent_state_process)."""
        flags = h.flags
        if flags & ACK and (seq_le(h.ack, self.iss) or seq_gt(h.ack, self.snd_nxt)):
            if not flags & RST:
                self._send_reset_for(h, len(payload) + (1 if flags & SYN else 0) + (1 if flags & FIN else 0))
            return
        if flags & RST:
            if flags & ACK:
                self._done(errno.ECONNREFUSED)
                self._on_change(self)
            return
        if not flags & SYN:
            return
        peer = self._parse_peer_syn(h)
        if flags & ACK:
            if peer.tsval is not None and self._settings.timestamps and not syn_ack_echo_ok(
                    peer.tsecr, self.syn_tsval, self._tsval(now)):
                self._send_reset_for(h, 1)  # PAWSActiveRejected
                return
            self._syn_received(h, peer, now)
            self.snd_una = h.ack
            self._handshake_rtt(peer.tsecr, now)
            self._establish(now)
            self.last_ack_recv = now
            self._send_ack(now)
            self._write_xmit(now)
        else:
            # Simultaneous open (RFC 9293 3.5 figure 8): SYN-RECV, SYN-ACK with our ISN.
            self._syn_received(h, peer, now)
            self._set_state(TCP_SYN_RECV)
            self._send_syn(now)
        self._on_change(self)

    def _rcv_timewait(self, h, payload, now: float):
        """tcp_timewait_state_process(): re-ACK a FIN (restarting the timer), RST kills unless
        rfc1337, a new SYN above RCV.NXT ends TIME-WAIT for the listener."""
        flags = h.flags
        rcv_nxt = self.rq.rcv_nxt
        if flags & RST:
            if not self.config.rfc1337 and h.seq == rcv_nxt:  # TIME-WAIT assassination (RFC 1337)
                self._done()
                self._on_change(self)
            return None
        if flags & SYN and not flags & ACK:
            if seq_gt(h.seq, rcv_nxt):
                self._done()
                self._on_change(self)
                return True
            self._send_ack(now)
            return None
        if flags & FIN or payload:
            if flags & FIN:
                self.t_wait = now + self.config.time_wait
            self._send_ack(now)
        return None

    def _rcv_state_process(self, h, payload, now: float) -> None:
        flags = h.flags
        state = self.state
        seq = h.seq
        plen = len(payload)
        rq = self.rq
        tsval = tsecr = None
        blocks = None
        options = h.options
        if options:
            for option in options:
                kind = type(option)
                if kind is TimestampOption:
                    tsval = option.value
                    tsecr = option.echo
                elif kind is SackOption:
                    blocks = option.blocks
            if not self.ts_on:
                tsval = tsecr = None
            if not self.sack_on:
                blocks = None
        rst = flags & RST
        # PAWS (RFC 7323 5.3, tcp_validate_incoming)
        if tsval is not None and not rst and self._ts.paws_discard(tsval, now):
            self.stats.PAWSEstab += 1
            self._oow_ack(now, plen > 0)
            return
        rcv_nxt = rq.rcv_nxt
        syn = 1 if flags & SYN else 0
        end_seq = seq_add(seq, plen + syn + (1 if flags & FIN else 0))
        window = seq_diff(seq_add(self.rcv_wup, self.rcv_wnd), rcv_nxt)
        if not linux_sequence_acceptable(seq, end_seq, self.rcv_wup, rcv_nxt, max(window, 0)):
            if not rst:
                # RFC 9293 3.10.7.4 first check: <SEQ=SND.NXT><ACK=RCV.NXT><CTL=ACK>
                self._oow_ack(now, plen > 0 and not flags & SYN)
            return
        if rst:
            # RFC 5961 3.2: reset only at exactly RCV.NXT, else a challenge ACK.
            if seq == rcv_nxt:
                self._reset()
            else:
                self._challenge_ack(now)
            return
        if tsval is not None:
            self._ts.update(tsval, seq, self.rcv_wup, now)
            if plen and tsecr:
                # tcp_rcv_rtt_measure_ts: data echoing our clock gives the receiver's RTT
                sample = self._ts.rtt_sample(tsecr, now)
                if sample is not None:
                    self._rcv_rtt_sample(sample)
        if syn:
            if state == TCP_SYN_RECV and seq == self.irs:
                if self.passive or not flags & ACK:
                    self._send_syn(now)  # the peer's SYN again: our SYN-ACK was lost
                    return
                # simultaneous open: the peer's SYN-ACK acknowledges our SYN (tcp_validate_incoming);
                # its SYN is old news, acknowledged again (tcp_data_queue: a retransmission)
                seq = seq_add(seq, 1)
                self.ack_pending = True
            else:
                self._challenge_ack(now)  # RFC 5961 4.2
                return
        if not flags & ACK:
            return
        ack = h.ack
        if state == TCP_SYN_RECV:
            if not (seq_lt(self.snd_una, ack) and seq_le(ack, self.snd_nxt)):
                self._send_reset_for(h, plen)
                return
            self.snd_una = ack
            self._handshake_rtt(tsecr, now)
            self.snd_wnd = h.window << self.snd_wscale
            self.max_snd_wnd = max(self.max_snd_wnd, self.snd_wnd)
            self.snd_wl1 = seq
            self.snd_wl2 = ack
            self._establish(now)
            if self.ack_pending:
                self._send_ack(now)
        elif seq_gt(ack, self.snd_nxt) or seq_lt(ack, seq_add(self.snd_una, -self.max_snd_wnd)):
            self._challenge_ack(now)  # RFC 5961 5.2: ACK outside [SND.UNA - MAX.SND.WND, SND.NXT]
            return
        else:
            self._ack(h, seq, ack, plen, flags, tsecr, blocks, now)
            if self.state == TCP_CLOSE:
                self._on_change(self)
                return
        if flags & URG:
            pass  # urgent data is not modelled: the bytes are delivered in line
        if plen or flags & FIN:
            self._data(h, seq, payload, flags & FIN, now)
        if self.state != TCP_CLOSE:
            self._write_xmit(now)
        self._on_change(self)

    def _reset(self) -> None:
        """tcp_reset(): ECONNREFUSED in SYN-SENT, EPIPE in CLOSE-WAIT, else ECONNRESET; CLOSED."""
        state = self.state
        if state == TCP_CLOSE_WAIT:
            err = errno.EPIPE
        elif state in (TCP_LAST_ACK, TCP_CLOSING, TCP_TIME_WAIT) and self.orphan:
            err = 0
        else:
            err = errno.ECONNRESET
        self._done(err)
        self._on_change(self)

    # -- data (tcp_data_queue) ---------------------------------------------------------------
    def _data(self, h, seq: int, payload, fin: int, now: float) -> None:
        state = self.state
        rq = self.rq
        if state not in _DATA_STATES:
            # RFC 9293 3.10.7.4 seventh: after the peer's FIN nothing new can come: a retransmission
            # (of the FIN) is ACKed again, anything at or after RCV.NXT dropped (tcp_rcv_state_process)
            if seq_lt(seq, rq.rcv_nxt):
                self._send_ack(now)
            return
        plen = len(payload)
        if self.orphan and plen and seq_gt(seq_add(seq, plen), rq.rcv_nxt):
            # tcp_rcv_state_process: new data for a closed socket -> tcp_reset, and the segment
            # is answered as one for no connection (tcp_v4_send_reset: <SEQ=SEG.ACK><CTL=RST>)
            self.stats.TCPAbortOnData += 1
            self._send_reset_for(h, plen)
            self._done(errno.ECONNRESET)
            return
        if plen > self.rcv_mss:
            self.rcv_mss = min(plen, self.advmss)  # tcp_measure_rcv_mss
        if plen:
            # tcp_grow_window: each segment lets the window grow by two MSS, up to the clamp
            room = min(self.window_clamp, rq.free_space >> 1) - self.rcv_ssthresh
            if room > 0:
                self.rcv_ssthresh += min(room, max(2 * self.advmss, 2 * plen))
        if plen and seq == rq.rcv_nxt and seq_add(self.rcv_wup, self.rcv_wnd) == seq:
            # tcp_data_queue: data into a zero window we advertised is dropped and answered
            self.stats.TCPZeroWindowDrop += 1
            self._send_ack(now)
            return
        zero_window = rq.receive_window == 0
        fin_was_ahead = rq.fin_pending
        arrival = rq.receive(seq, payload, bool(fin))
        if plen:
            self.data_segs_in += 1
            self.last_data_recv = now
        if arrival.in_order:
            self.bytes_received += arrival.in_order
        stats = self.stats
        if arrival.out_of_order:
            stats.TCPOFOQueue += 1
        if arrival.dropped:
            if zero_window:
                stats.TCPZeroWindowDrop += 1
            elif not arrival.in_order:
                stats.TCPOFODrop += 1
        if arrival.in_order and plen:
            self._after_in_order(rq, now)
        if arrival.fin:
            self._fin_in(now)
            if self.state != TCP_CLOSE_WAIT or fin_was_ahead:
                self._send_ack(now)  # FIN-WAIT states, or the gap before the FIN filled (RFC 5681 4.2)
                return
        if (arrival.out_of_order or arrival.duplicate or arrival.filled_gap or arrival.dropped or rq.ofo_segments
                or rq.fin_pending):
            # tcp_data_queue: out of order, a duplicate or a filled gap -> ACK at once, and
            # quick-ACK mode for what follows (tcp_enter_quickack_mode; RFC 5681 4.2)
            self._incr_quickack(16)
            self._pingpong = False
            self._send_ack(now)
            return
        # __tcp_ack_snd_check: more than one full segment unacknowledged, or quick-ACK mode
        if not arrival.fin and (seq_diff(rq.rcv_nxt, self.rcv_wup) > self.rcv_mss or self.quickack
                                or (self._quick and not self._pingpong)):
            if self._quick:
                self._quick -= 1  # tcp_dec_quickack_mode
            self._send_ack(now)
            return
        self.ack_pending = True
        if self.t_delack is None:
            self.t_delack = now + self._delack_timeout()

    def _rcv_rtt_sample(self, sample: float) -> None:
        """tcp_rcv_rtt_update(): a smoothed receiver-side RTT for buffer autotuning."""
        if sample <= 0:
            return
        old = self._rcv_rtt
        self._rcv_rtt = sample if not old else old + (sample - old) / 8

    def _incr_quickack(self, max_quickacks: int) -> None:
        """tcp_incr_quickack(): up to rcv_wnd / (2 * rcv_mss) immediate ACKs, at least 2."""
        quick = self.rcv_wnd // (2 * self.rcv_mss) or 2
        quick = min(quick, max_quickacks)
        if quick > self._quick:
            self._quick = quick

    def _event_data_recv(self, now: float) -> None:
        """tcp_event_data_recv(): the ACK timeout (ato) follows the gaps between data segments;
        the first data (or data after a gap longer than the RTO) starts quick-ACK mode."""
        delack_min = self.config.delack_min
        if not self._ato:
            self._incr_quickack(16)
            self._ato = delack_min
        else:
            gap = now - self._lrcvtime
            if gap <= delack_min / 2:
                self._ato = self._ato / 2 + delack_min / 2
            elif gap < self._ato:
                self._ato = min(self._ato / 2 + gap, self.rtt.rto)
            elif gap > self.rtt.rto:
                self._incr_quickack(16)
        self._lrcvtime = now

    def _delack_timeout(self) -> float:
        """tcp_send_delayed_ack(): ato, bounded by the RTT (and 200 ms in ping-pong mode)."""
        config = self.config
        ato = self._ato  # 0 until data arrived: the "delayed" ACK of a bare FIN goes at once
        if ato > config.delack_min:
            max_ato = config.delack_max if self._pingpong else 0.5
            srtt = self.rtt.srtt
            if srtt is not None:
                max_ato = min(max_ato, max(srtt, config.delack_min))
            ato = min(ato, max_ato)
        return ato

    def _fin_in(self, now: float) -> None:
        """tcp_fin(): ESTABLISHED -> CLOSE-WAIT, FIN-WAIT-1 -> CLOSING, FIN-WAIT-2 -> TIME-WAIT."""
        state = self.state
        if state == TCP_ESTABLISHED:
            self._set_state(TCP_CLOSE_WAIT)
            self._pingpong = True  # inet_csk_enter_pingpong_mode: our FIN may go with the ACK
            self.ack_pending = True
            if self.t_delack is None:
                self.t_delack = now + self._delack_timeout()
        elif state == TCP_FIN_WAIT1:
            self._set_state(TCP_CLOSING)
        elif state == TCP_FIN_WAIT2:
            self._set_state(TCP_TIME_WAIT)
            self.t_wait = now + self.config.time_wait
