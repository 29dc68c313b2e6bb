"""What a connection sends: tcp_write_xmit, retransmissions, ACKs, RSTs, the receive window.

Part of `TcpConnection` (see nodes/tcp/connection.py); read Linux's net/ipv4/tcp_output.c
(tcp_write_xmit, tcp_nagle_check, tcp_snd_wnd_test, __tcp_select_window, tcp_select_window,
tcp_send_fin, tcp_send_active_reset, tcp_xmit_probe_skb, tcp_xmit_retransmit_queue) and
RFC 1122 4.2.3.3-4 (receiver and sender SWS avoidance, Nagle) before changing it.
"""
from __future__ import annotations

from nodes.tcp.congestion import CongestionState
from nodes.tcp.options import offer_syn, offer_syn_ack
from nodes.tcp.seq import SEQ_MASK, seq_add, seq_diff, seq_gt
from nodes.tcp.states import (
    TCP_CLOSE_WAIT,
    TCP_CLOSING,
    TCP_ESTABLISHED,
    TCP_FIN_WAIT1,
    TCP_LAST_ACK,
    TCP_SYN_SENT,
)
from nodes.wire.tcp import ACK, FIN, NOP, PSH, RST, SYN, SackOption, TcpHeader, TimestampOption

# States in which data, a FIN or retransmissions may leave.
XMIT_STATES = frozenset((TCP_ESTABLISHED, TCP_CLOSE_WAIT, TCP_FIN_WAIT1, TCP_LAST_ACK, TCP_CLOSING))
_OPEN = CongestionState.OPEN
_LOSS = CongestionState.LOSS
TCP_INVALID_RATELIMIT = 0.5  # net.ipv4.tcp_invalid_ratelimit, 500 ms


class OutputMixin:
    """The sending half of TcpConnection."""

    __slots__ = ()

    # -- options ---------------------------------------------------------------------------
    def _make_offer(self, peer=None):
        """tcp_connect_init / tcp_openreq_init_rwin: the receive space is half the buffer
        (tcp_full_space); a buffer set by SO_RCVBUF also clamps the window (so, the scale)."""
        space = self.rcvbuf >> 1
        clamp = space if self._rcvbuf_locked else 0
        if peer is None:
            return offer_syn(self.path_mtu, space, self._settings, user_mss=self.user_mss, window_clamp=clamp)
        return offer_syn_ack(peer, self.path_mtu, space, self._settings, user_mss=self.user_mss,
                             window_clamp=clamp)

    def _tsval(self, now: float) -> int:
        """Our TSval clock (options.TimestampState.tsval, inlined: milliseconds plus the offset)."""
        return (int(now * 1000 + 1e-6) + self._ts.offset) & SEQ_MASK

    def _options(self, now: float) -> tuple:
        """tcp_established_options(): NOP NOP TS, then NOP NOP SACK with pending blocks."""
        rq = self.rq
        if self.ts_on:
            ts = TimestampOption((int(now * 1000 + 1e-6) + self._ts.offset) & SEQ_MASK, self._ts.ts_recent)
            if self.sack_on and rq.sack_pending:
                blocks = rq.sack_blocks(3)
                rq.clear_dsack()
                return (NOP, NOP, ts, NOP, NOP, SackOption(tuple(blocks)))
            return (NOP, NOP, ts)
        if self.sack_on and rq is not None and rq.sack_pending:
            blocks = rq.sack_blocks(4)
            rq.clear_dsack()
            return (NOP, NOP, SackOption(tuple(blocks)))
        return ()

    def _payload_limit(self) -> int:
        """The MSS less the SACK option a segment would carry now (tcp_current_mss)."""
        rq = self.rq
        if self.sack_on and rq.sack_pending:
            blocks = min(rq.sack_block_count, 3 if self.ts_on else 4)
            return max(self.mss - 4 - 8 * blocks, 1)
        return self.mss

    # -- the receive window ----------------------------------------------------------------
    def _window_candidate(self) -> int:
        """__tcp_select_window(): half the free buffer (tcp_space), at most rcv_ssthresh, 0 below
        one MSS (receiver SWS avoidance, RFC 1122 4.2.3.3), aligned up to the window scale."""
        rq = self.rq
        mss = self.rcv_mss
        full_space = min(self.window_clamp, self.rcvbuf >> 1)
        if mss > full_space:
            mss = max(full_space, 1)  # a buffer smaller than a segment still opens (Linux)
        free_space = rq.free_space >> 1
        if free_space < (full_space >> 1):
            if self.rcv_ssthresh > 4 * self.advmss:
                self.rcv_ssthresh = max(4 * self.advmss, mss)  # tcp_adjust_rcv_ssthresh
            if free_space < mss:
                return 0
        if free_space > self.rcv_ssthresh:
            free_space = self.rcv_ssthresh
        scale = self.rcv_wscale
        if scale:
            return ((free_space + (1 << scale) - 1) >> scale) << scale
        window = self.rcv_wnd
        # Linux keeps a window within one MSS of the free space; a window below one MSS (left
        # over from never shrinking the right edge) is not kept: that would be a silly window.
        if window <= free_space - mss or window > free_space or window < mss:
            window = (free_space // mss) * mss
        return window

    def _select_window(self) -> int:
        """tcp_select_window(): the window field of the next segment; never shrinks the right
        edge already offered (RFC 9293 3.8.6); records RCV.WUP and RCV.WND."""
        rq = self.rq
        new = self._window_candidate()
        rcv_nxt = rq.rcv_nxt
        cur = seq_diff(seq_add(self.rcv_wup, self.rcv_wnd), rcv_nxt)
        scale = self.rcv_wscale
        if new < cur:
            new = ((cur + (1 << scale) - 1) >> scale) << scale
        top = 65535 << scale
        if new > top:
            new = top
        self.rcv_wnd = new
        self.rcv_wup = rcv_nxt
        return new >> scale

    # -- segments --------------------------------------------------------------------------
    def _xmit(self, seq: int, flags: int, payload, now: float, options: tuple) -> None:
        """Build the header (ACK and window from the receive side) and hand it to the layer."""
        rq = self.rq
        if rq is not None:
            ack = rq.rcv_nxt
            window = self._select_window()
        else:
            ack = window = 0
        self.t_delack = None
        self.ack_pending = False
        self.segs_out += 1
        header = TcpHeader(self.local_port, self.remote_port, seq, ack, flags, window, 0, 0, options)
        try:
            self._transmit(self, header, payload)
        except OSError:
            pass  # no route / link down: as a lost segment, the timer retransmits

    def _send_syn(self, now: float) -> None:
        """Our SYN (SYN-SENT) or SYN-ACK (SYN-RECV), options as offered; windows never scaled."""
        offer = self._offer
        if self.state == TCP_SYN_SENT:
            flags, ack, tsecr = SYN, 0, 0
        else:
            flags, ack, tsecr = SYN | ACK, self.rq.rcv_nxt, self._ts.ts_recent
        header = TcpHeader(self.local_port, self.remote_port, self.iss, ack, flags, offer.window, 0, 0,
                           offer.options(self._tsval(now), tsecr))
        self.segs_out += 1
        try:
            self._transmit(self, header, b"")
        except OSError:
            pass

    def _send_ack(self, now: float) -> None:
        """A pure ACK at SND.NXT (tcp_send_ack)."""
        self._xmit(self.snd_nxt, ACK, b"", now, self._options(now))

    def _send_probe(self, now: float) -> None:
        """tcp_xmit_probe_skb(): an ACK with SND.UNA - 1, which the peer must answer."""
        self._xmit(seq_add(self.snd_una, -1), ACK, b"", now, self._options(now))

    def _send_active_reset(self, now: float) -> None:
        """tcp_send_active_reset(): RST|ACK at SND.NXT (OutRsts)."""
        self.stats.OutRsts += 1
        self._xmit(self.snd_nxt, RST | ACK, b"", now, self._options(now))

    def _send_reset_for(self, header, seg_len: int) -> None:
        """RFC 9293 3.10.7.1's reply to an unacceptable segment: <SEQ=SEG.ACK><CTL=RST> if it had
        an ACK, else <SEQ=0><ACK=SEG.SEQ+SEG.LEN><CTL=RST,ACK>."""
        if header.flags & ACK:
            reply = TcpHeader(self.local_port, self.remote_port, header.ack, 0, RST, 0)
        else:
            reply = TcpHeader(self.local_port, self.remote_port, 0, seq_add(header.seq, seg_len), RST | ACK, 0)
        self.stats.OutRsts += 1
        self.segs_out += 1
        try:
            self._transmit(self, reply, b"")
        except OSError:
            pass

    def _oow_rate_limited(self, now: float) -> bool:
        """__tcp_oow_rate_limited(): at most one ACK to out-of-window, PAWS-failing or challenged
        segments per tcp_invalid_ratelimit (500 ms) and connection, so that two confused ends
        cannot ACK each other in a loop."""
        if now - self._oow_time < getattr(self.config, "invalid_ratelimit", TCP_INVALID_RATELIMIT):
            return True
        self._oow_time = now
        return False

    def _oow_ack(self, now: float, has_data: bool) -> None:
        """tcp_send_dupack behind tcp_oow_rate_limited (segments with data are never limited)."""
        if has_data or not self._oow_rate_limited(now):
            self._send_ack(now)

    def _challenge_ack(self, now: float) -> None:
        """RFC 5961 section 7 (tcp_send_challenge_ack): an ACK, limited per connection (500 ms)
        and to challenge_ack_limit a second (TCPChallengeACK)."""
        if self._oow_rate_limited(now):
            return
        second = int(now)
        if second != self._chal_time:
            self._chal_time = second
            self._chal_count = 0
        if self._chal_count >= self.config.challenge_ack_limit:
            return
        self._chal_count += 1
        self.stats.TCPChallengeACK += 1
        self._send_ack(now)

    # -- data ------------------------------------------------------------------------------
    def _in_flight(self) -> int:
        """Bytes in the network: SND.NXT - SND.UNA, or RFC 6675's pipe once SACKs or losses count."""
        sb = self.sb
        if sb is not None and (sb.any_sacked or sb.in_recovery or self.cc.state is _LOSS):
            return sb.pipe()
        return seq_diff(self.snd_nxt, self.snd_una)

    def _send_new(self, count: int, flags: int, now: float) -> None:
        """Send `count` new bytes at SND.NXT (FIN in `flags` when it ends the stream)."""
        seq = self.snd_nxt
        off = seq_diff(seq, self._sbuf_seq)
        payload = bytes(self._sbuf[off:off + count])
        self._xmit(seq, flags, payload, now, self._options(now))
        length = count + (1 if flags & FIN else 0)
        self.snd_nxt = end = seq_add(seq, length)
        if self.sb is not None:
            self.sb.on_new_data(length)
        if count:
            self.data_segs_out += 1
            self.bytes_sent += count
            self.last_data_sent = now
            if now - self._lrcvtime < self._ato:
                self._pingpong = True  # tcp_event_data_sent: a reply within ato of the request
            if count < self.mss:
                self.snd_sml = end
        if self._rtt_seq is None and not self.ts_on:
            self._rtt_seq = end
            self._rtt_time = now
        if self.t_rtx is None or self._pto:
            self._arm_rto(now)  # tcp_schedule_loss_probe after new data

    def _write_xmit(self, now: float) -> None:
        """tcp_write_xmit(): retransmissions first, then new data within cwnd and the peer's
        window, Nagle (Minshall's variant, tcp_nagle_check) and sender SWS avoidance
        (RFC 1122 4.2.3.4); then the FIN; then the retransmission or persist timer."""
        if self.state not in XMIT_STATES:
            return
        cc = self.cc
        if cc.state is not _OPEN and (self.sack_on or cc.state is _LOSS):
            self._xmit_retransmits(now)
        snd_end = seq_add(self._sbuf_seq, len(self._sbuf))
        window_limited = False
        in_flight = self._in_flight()
        mss = self.mss
        limit = self._payload_limit()
        while True:
            snd_nxt = self.snd_nxt
            unsent = seq_diff(snd_end, snd_nxt)
            if unsent <= 0:
                break
            if in_flight >= cc.cwnd * mss:
                self._cwnd_limited = True
                break
            if not in_flight and self.last_data_sent and cc.state is _OPEN:
                # tcp_slow_start_after_idle_check (RFC 5681 4.1)
                idle = now - self.last_data_sent
                if idle > self.rtt.rto:
                    cc.on_idle_restart(now, idle, self.rtt.rto,
                                       slow_start_after_idle=self.config.slow_start_after_idle)
            count = unsent if unsent < limit else limit
            room = seq_diff(seq_add(self.snd_una, self.snd_wnd), snd_nxt)
            if count > room:
                if room <= 0 or (room < limit and room < (self.max_snd_wnd >> 1)):
                    window_limited = True
                    break
                count = room
            elif count < limit and not self.fin_queued and (
                    self.cork or (not self.nodelay and in_flight and seq_gt(self.snd_sml, self.snd_una))):
                break  # Nagle: hold the partial segment while a small one is unacknowledged
            flags = ACK
            if count == unsent:
                flags = ACK | PSH
                if self.fin_queued and not self.fin_sent:
                    flags |= FIN
                    self.fin_sent = True
                    self.fin_seq = snd_end
            self._send_new(count, flags, now)
            in_flight += count  # new data adds to SND.NXT - SND.UNA and to pipe alike
        if self.fin_queued and not self.fin_sent and seq_diff(snd_end, self.snd_nxt) <= 0:
            # tcp_send_fin: a bare FIN once every byte has left (not held by cwnd: tcp_cwnd_test)
            self.fin_sent = True
            self.fin_seq = self.snd_nxt
            self._send_new(0, ACK | FIN, now)
        if self.snd_nxt == self.snd_una and window_limited and self.t_persist is None:
            self.t_persist = now + min(self.rtt.rto * (1 << min(self._persist_backoff, 20)), self.config.rto_max)

    def _arm_rto(self, now: float) -> None:
        """tcp_rearm_rto() / tcp_schedule_loss_probe(): with SACK in the Open state, a tail loss
        probe after 2 SRTT (RFC 8985 7.2; + 200 ms with one segment out, for a delayed ACK)
        comes before the RTO; else the RTO itself. Nothing in flight: no timer."""
        if self.snd_una == self.snd_nxt:
            self.t_rtx = None
            self._pto = False
            return
        rto = self.rtt.rto
        srtt = self.rtt.srtt
        if self.sack_on and srtt is not None and not self._tlp_out and self.cc.state is _OPEN:
            one = seq_diff(self.snd_nxt, self.snd_una) <= self.mss
            pto = 2 * srtt + (self.config.rto_min if one else 0.002)
            self.t_rtx = now + min(pto, rto)  # an earlier RTO bounds it (tcp_rto_delta_us)
            self._pto = True
            return
        self.t_rtx = now + rto
        self._pto = False

    def _loss_probe(self, now: float) -> None:
        """RFC 8985 7.3: the probe timer fired: one new segment if the windows allow, else the
        last segment again; then the RTO. A loss it repairs needs no RTO (TCPLossProbes)."""
        self._pto = False
        self._tlp_out = True
        self.stats.TCPLossProbes += 1
        unsent = seq_diff(seq_add(self._sbuf_seq, len(self._sbuf)), self.snd_nxt)
        room = seq_diff(seq_add(self.snd_una, self.snd_wnd), self.snd_nxt)
        if unsent > 0 and room > 0:
            count = min(unsent, room, self._payload_limit())
            self._send_new(count, ACK | PSH if count == unsent else ACK, now)
        else:
            end = self.fin_seq if self.fin_sent else self.snd_nxt
            start = seq_add(end, -min(self.mss, seq_diff(end, self.snd_una)))
            self._retransmit(start, seq_diff(self.snd_nxt, start), now, track=False)
        self.t_rtx = now + self.rtt.rto

    def _retransmit(self, seq: int, length: int, now: float, rescue: bool = False, track: bool = True) -> bool:
        """tcp_retransmit_skb(): resend up to `length` sequence numbers from `seq` (data, FIN)."""
        buf = self._sbuf
        off = seq_diff(seq, self._sbuf_seq)
        if off < 0:
            return False
        # only what was sent before: never past SND.NXT (the FIN not counted)
        avail = min(len(buf), seq_diff(self.fin_seq if self.fin_sent else self.snd_nxt, self._sbuf_seq)) - off
        count = min(length, avail, self._payload_limit()) if avail > 0 else 0
        align = self._pmtu_align
        if align is not None and count:
            base, old_mss, end_seq = align
            off_old = seq_diff(seq, base)
            if 0 <= off_old < seq_diff(end_seq, base):
                count = min(count, old_mss - off_old % old_mss)  # stay within the old segment
            else:
                self._pmtu_align = None
        flags = ACK
        end = seq_add(seq, count)
        if self.fin_sent and end == self.fin_seq and length > count:
            flags = ACK | FIN
        elif count == 0:
            return False
        if count and count == avail:
            flags |= PSH
        self._xmit(seq, flags, bytes(buf[off:off + count]), now, self._options(now))
        self.stats.RetransSegs += 1
        self.total_retrans += 1
        self.bytes_retrans += count
        self.bytes_sent += count
        self._rtt_seq = None  # Karn: no timing across a retransmission
        if self.sb is not None and track:
            self.sb.on_transmit(seq, count + (1 if flags & FIN else 0), rescue)
        if self.t_rtx is None:
            self._arm_rto(now)
        return True

    def _xmit_retransmits(self, now: float) -> None:
        """tcp_xmit_retransmit_queue(): RFC 6675 NextSeg rules 1, 3, 4 while pipe < cwnd."""
        sb = self.sb
        if sb is None:
            return
        cwnd_bytes = self.cc.cwnd * self.mss
        unsent = max(0, seq_diff(seq_add(self._sbuf_seq, len(self._sbuf)), self.snd_nxt))
        window_end = seq_add(self.snd_una, self.snd_wnd)
        while sb.pipe() < cwnd_bytes:
            # rule 2 (new data) before rules 3 and 4: the new-data loop of _write_xmit sends it
            nxt = sb.next_seg(unsent, window_end)
            if nxt is None or nxt.rule == 2:
                return
            if not self._retransmit(nxt.seq, nxt.length, now, rescue=nxt.rule == 4):
                return

    def _enter_loss(self, now: float, reduce_cwnd: bool = True) -> None:
        """tcp_enter_loss(): everything in flight is lost (RFC 6675 5.1); cwnd to 1 on an RTO,
        kept for a PMTU drop (tcp_simple_retransmit)."""
        cc = self.cc
        cwnd, ssthresh = cc.cwnd, cc.ssthresh
        cc.on_retransmission_timeout(now, self.snd_nxt)
        if not reduce_cwnd:
            cc.cwnd, cc.ssthresh = cwnd, ssthresh
        if self.sb is not None:
            self.sb.on_rto()
        self.dupacks = 0
        self._rtt_seq = None
