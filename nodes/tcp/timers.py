"""A connection's timers: retransmission (SYN, SYN-ACK, data, FIN), persist, delayed ACK,
keepalive, FIN-WAIT-2 and TIME-WAIT.

Part of `TcpConnection` (see nodes/tcp/connection.py); read RFC 6298 5 (the retransmission
timer), RFC 1122 4.2.2.17 (zero-window probes), 4.2.3.2 (delayed ACK), 4.2.3.6 (keepalive)
and Linux's net/ipv4/tcp_timer.c (tcp_retransmit_timer, tcp_write_timeout,
retransmits_timed_out, tcp_probe_timer, tcp_delack_timer, tcp_keepalive_timer) before
changing it. Deadlines are absolute times (seconds) or None.
"""
from __future__ import annotations

import errno

from nodes.tcp.rtt import retries_timeout
from nodes.tcp.seq import seq_add, seq_diff
from nodes.tcp.states import (
    TCP_CLOSE,
    TCP_CLOSE_WAIT,
    TCP_ESTABLISHED,
    TCP_FIN_WAIT1,
    TCP_SYN_RECV,
    TCP_SYN_SENT,
)
from nodes.wire.tcp import ACK, PSH

_KEEPALIVE_STATES = frozenset((TCP_ESTABLISHED, TCP_CLOSE_WAIT, TCP_FIN_WAIT1))
_TCP_ORPHAN_RETRIES = 8  # tcp_orphan_retries(): 0 means 8


class TimerMixin:
    """The timers of TcpConnection."""

    __slots__ = ()

    def next_timer(self) -> float | None:
        """The earliest deadline, or None."""
        if self.keepalive:
            if self.t_keep is None and self.state in _KEEPALIVE_STATES:
                self.t_keep = self.last_rcv + self.keepidle
        elif self.t_keep is not None:
            self.t_keep = None
        best = self.t_rtx
        for deadline in (self.t_delack, self.t_persist, self.t_keep, self.t_wait):
            if deadline is not None and (best is None or deadline < best):
                best = deadline
        return best

    def tick(self, now: float) -> None:
        """Run whatever is due at `now`."""
        fired = False
        deadline = self.t_delack
        if deadline is not None and now >= deadline:
            self.t_delack = None
            if self.ack_pending and self.rq is not None and self.state != TCP_CLOSE:
                # tcp_delack_timer_handler: a missed delayed ACK leaves ping-pong mode or inflates ato
                if self._pingpong:
                    self._pingpong = False
                    self._ato = self.config.delack_min
                else:
                    self._ato = min(2 * (self._ato or self.config.delack_min), self.rtt.rto)
                self.stats.DelayedACKs += 1
                self._send_ack(now)
        deadline = self.t_rtx
        if deadline is not None and now >= deadline:
            self.t_rtx = None
            self._retransmit_timer(now)
            fired = True
        deadline = self.t_persist
        if deadline is not None and now >= deadline:
            self.t_persist = None
            self._probe_timer(now)
            fired = True
        deadline = self.t_keep
        if deadline is not None and now >= deadline:
            self.t_keep = None
            self._keepalive_timer(now)
            fired = True
        deadline = self.t_wait
        if deadline is not None and now >= deadline:
            self.t_wait = None
            self._done()  # FIN-WAIT-2 timeout (tcp_fin_timeout) or the end of TIME-WAIT
            fired = True
        if fired:
            self._on_change(self)

    # -- retransmission ------------------------------------------------------------------
    def _give_up(self, now: float, *, reset: bool = False) -> None:
        """tcp_write_err(): ETIMEDOUT (or the soft error ICMP left), CLOSED."""
        self.stats.TCPAbortOnTimeout += 1
        if reset:
            self._send_active_reset(now)
        self._done(self.soft_error or errno.ETIMEDOUT)

    def _timed_out(self, now: float, boundary: int, rto_base: float) -> bool:
        """retransmits_timed_out(): the time since the first retransmission against
        tcp_model_timeout(boundary), or TCP_USER_TIMEOUT when set."""
        stamp = self.retrans_stamp
        if stamp is None:
            return False
        limit = self.user_timeout or retries_timeout(boundary, rto_base, self.config.rto_max)
        return now - stamp >= limit

    def _retransmit_timer(self, now: float) -> None:
        """tcp_retransmit_timer(): resend, back off (RFC 6298 5.4-5.6), or give up."""
        state = self.state
        config = self.config
        if state == TCP_SYN_SENT or state == TCP_SYN_RECV:
            limit = config.syn_retries if state == TCP_SYN_SENT else config.synack_retries
            if self.retransmits >= limit or (self.user_timeout and now - self.start_time >= self.user_timeout):
                self._give_up(now)
                return
            self.retransmits += 1
            self.stats.TCPTimeouts += 1
            self.stats.RetransSegs += 1
            self.total_retrans += 1
            self.rtt.on_timeout()
            self._send_syn(now)
            self.t_rtx = now + self.rtt.rto
            return
        if state == TCP_CLOSE or self.snd_una == self.snd_nxt:
            return
        if self._pto:
            self._loss_probe(now)
            return
        if self.retrans_stamp is None:
            self.retrans_stamp = now - self.rtt.rto
        boundary = (config.orphan_retries or _TCP_ORPHAN_RETRIES) if self.orphan else config.retries2
        if self._timed_out(now, boundary, config.rto_min):
            self._give_up(now)
            return
        self.stats.TCPTimeouts += 1
        self._enter_loss(now)
        self.rtt.on_timeout()
        self.retransmits += 1
        self.t_rtx = None
        self._write_xmit(now)
        if self.snd_una != self.snd_nxt:
            rto = self.rtt.rto
            if self.user_timeout:
                # tcp_clamp_rto_to_user_timeout: never wait past the user timeout
                rto = max(min(rto, self.user_timeout - (now - self.retrans_stamp)), 0.001)
            self.t_rtx = now + rto

    # -- zero-window probes ----------------------------------------------------------------
    def _probe_timer(self, now: float) -> None:
        """tcp_probe_timer() / tcp_write_wakeup(): probe a zero (or too small) window."""
        if self.state == TCP_CLOSE or self.snd_una != self.snd_nxt:
            self._persist_backoff = 0
            return
        unsent = seq_diff(seq_add(self._sbuf_seq, len(self._sbuf)), self.snd_nxt)
        if unsent <= 0:
            self._persist_backoff = 0
            return
        config = self.config
        max_probes = (config.orphan_retries or _TCP_ORPHAN_RETRIES) if self.orphan else config.retries2
        if not self.probes:
            self._probe_start = now
        if self.probes >= max_probes or (self.user_timeout and now - self._probe_start >= self.user_timeout):
            self._give_up(now)  # tcp_probe_timer: retries2 unanswered probes, or TCP_USER_TIMEOUT
            return
        room = seq_diff(seq_add(self.snd_una, self.snd_wnd), self.snd_nxt)
        if room > 0:
            # tcp_write_wakeup: the window opened a little; send what fits, SWS or not.
            count = min(room, unsent, self.mss)
            self._send_new(count, ACK | PSH, now)  # tcp_write_wakeup pushes what it sends
        else:
            self._send_probe(now)
        self.probes += 1
        self._persist_backoff += 1
        if self.snd_una == self.snd_nxt:
            self.t_persist = now + min(self.rtt.rto * (1 << min(self._persist_backoff, 20)), config.rto_max)

    # -- keepalive -------------------------------------------------------------------------
    def _keepalive_timer(self, now: float) -> None:
        """tcp_keepalive_timer(): after keepidle of silence, keepcnt probes keepintvl apart."""
        if not self.keepalive or self.state not in _KEEPALIVE_STATES:
            return
        if self.snd_una != self.snd_nxt or len(self._sbuf) > seq_diff(self.snd_nxt, self._sbuf_seq):
            self.t_keep = now + self.keepidle  # data in flight: the retransmission timer watches
            return
        elapsed = now - self.last_rcv
        if elapsed < self.keepidle - 1e-9:
            self.t_keep = self.last_rcv + self.keepidle
            return
        if (self.user_timeout and elapsed >= self.user_timeout and self.keep_probes) or (
                not self.user_timeout and self.keep_probes >= self.keepcnt):
            self._give_up(now, reset=True)
            return
        self._send_probe(now)
        self.keep_probes += 1
        self.t_keep = now + self.keepintvl
