"""Pluggable congestion control, after Linux's struct tcp_congestion_ops: Reno and CUBIC.

Before changing this file, read RFC 5681 (slow start, congestion avoidance, fast
retransmit/recovery), RFC 6582 (NewReno: partial ACKs and `recover`), RFC 6928 (initial window
10), RFC 9438 (CUBIC), and Linux's tcp_slow_start()/tcp_cong_avoid_ai()/tcp_reno_*() in
net/ipv4/tcp_cong.c, tcp_enter_recovery()/tcp_enter_loss()/tcp_end_cwnd_reduction() in
net/ipv4/tcp_input.c and tcp_timer.c, tcp_cwnd_restart() in net/ipv4/tcp_output.c, and
net/ipv4/tcp_cubic.c.

The connection reports events; the algorithm keeps `cwnd` and `ssthresh` in segments, as Linux
does (snd_cwnd, snd_ssthresh), so the sender may have `cwnd - pipe` more segments in flight:

    on_ack(now, ack, acked, rtt)        SND.UNA advanced, `acked` segments newly delivered
    on_duplicate_ack(now)               a further duplicate ACK during fast recovery
    enter_recovery(now, snd_nxt)        3 duplicate ACKs (or SACK loss, RFC 6675): fast recovery
    on_retransmission_timeout(now, snd_nxt)   the RTO fired: cwnd to 1 segment
    on_idle_restart(now, idle, rto)     about to send after the connection was idle

The states follow Linux's icsk_ca_state, only the three this needs:

    OPEN --enter_recovery--> RECOVERY --ACK >= recover--> OPEN
    OPEN or RECOVERY --on_retransmission_timeout--> LOSS --ACK >= recover--> OPEN

`recover` is SND.NXT when recovery (or loss) began, Linux's tp->high_seq: one past RFC 6582's
"highest sequence number transmitted", so a "full ACK" is `SEG.ACK >= recover`. Duplicate ACKs
while in LOSS or RECOVERY never start another recovery: that is RFC 6582's reason for `recover`
(section 3.2 step 2 and section 4), met as Linux meets it, by the state.

An algorithm overrides the hooks of tcp_congestion_ops: `ssthresh_after_loss` (.ssthresh),
`cong_avoid` (.cong_avoid), `pkts_acked` (.pkts_acked, the RTT sample), `set_state`
(.set_state) and `cwnd_event` (.cwnd_event). Algorithms are chosen by name (`create`), as
setsockopt(TCP_CONGESTION) or net.ipv4.tcp_congestion_control choose them; "cubic" is the
default, as in Linux.

Not modelled: Linux's Proportional Rate Reduction (RFC 6937) during recovery (this follows
RFC 6582's window inflation instead, or RFC 6675's cwnd = ssthresh with SACK); undo of a
spurious reduction (tcp_try_undo_*, .undo_cwnd, F-RTO); ECN's CWR state; the Disorder state;
CUBIC's HyStart (slow start ends at ssthresh or a loss only); snd_cwnd_clamp;
tcp_cwnd_validate()'s decay of an application-limited window (RFC 7661), beyond taking
`cwnd_limited` from the caller.
"""
from __future__ import annotations

import enum
import errno

from nodes.tcp.seq import seq_ge, seq_gt

# RFC 6928 / Linux's TCP_INIT_CWND: the initial window, in segments.
INITIAL_WINDOW = 10
# Linux's TCP_INFINITE_SSTHRESH: ssthresh before the first loss, "arbitrarily high" (RFC 5681 3.1).
INFINITE_SSTHRESH = 0x7FFFFFFF
# RFC 5681 3.2 step 3: cwnd = ssthresh + 3*SMSS on entering fast recovery after 3 duplicate ACKs.
DUPLICATE_ACK_THRESHOLD = 3


class CongestionState(enum.Enum):
    """Linux's icsk_ca_state, the values this module uses (TCP_CA_Open, _Recovery, _Loss)."""

    OPEN = "Open"
    RECOVERY = "Recovery"
    LOSS = "Loss"


class CwndEvent(enum.Enum):
    """Linux's enum tcp_ca_event, the ones the connection can report here."""

    TX_START = "tx_start"  # first transmission with nothing in flight (CA_EVENT_TX_START)
    CWND_RESTART = "cwnd_restart"  # cwnd reduced after idle (CA_EVENT_CWND_RESTART)


class AckOutcome(enum.Enum):
    """What an ACK meant for loss recovery; the connection acts on PARTIAL."""

    NORMAL = "normal"  # not in recovery or loss
    PARTIAL = "partial"  # in recovery, short of `recover`: retransmit the first unacked segment
    RECOVERED = "recovered"  # the ACK covered `recover`: recovery or loss is over


class CongestionControl:
    """The window every algorithm shares, and the event handling of tcp_input.c around it.

    This base class is Reno's arithmetic (tcp_reno_ssthresh, tcp_reno_cong_avoid); subclasses
    override the hooks. Attributes read by `ss -ti`: `cwnd`, `ssthresh`, `state`.
    """

    name = "reno"
    __slots__ = (
        "initial_window", "cwnd", "ssthresh", "cwnd_count", "state", "recover", "_inflating", "snd_una", "snd_nxt",
    )

    def __init__(self, initial_window: int = INITIAL_WINDOW) -> None:
        if initial_window < 1:
            raise ValueError("the initial window is at least one segment")
        self.initial_window = initial_window
        self.cwnd = initial_window
        self.ssthresh = INFINITE_SSTHRESH
        # Linux's snd_cwnd_cnt: segments ACKed towards the next +1 in congestion avoidance.
        self.cwnd_count = 0
        self.state = CongestionState.OPEN
        self.recover: int | None = None
        # RFC 6582 inflates cwnd per duplicate ACK; RFC 6675 (SACK) does not.
        self._inflating = False
        self.snd_una = self.snd_nxt = 0  # as the last on_ack saw them (for the algorithms' hooks)

    def __repr__(self) -> str:
        return (
            f"<{type(self).__name__} {self.state.value} cwnd={self.cwnd}"
            f" ssthresh={self.ssthresh}>"
        )

    @property
    def in_slow_start(self) -> bool:
        """cwnd < ssthresh (RFC 5681 3.1; Linux's tcp_in_slow_start)."""
        return self.cwnd < self.ssthresh

    # ---- the window arithmetic of tcp_cong.c, shared by every algorithm ----

    def slow_start(self, acked: int) -> int:
        """Grow cwnd by the segments ACKed, up to ssthresh; return the ACKed segments left over.

        Linux's tcp_slow_start(): counting segments acknowledged rather than ACKs received is
        RFC 3465's appropriate byte counting with an unbounded L, so a stretch ACK of 4 segments
        grows cwnd by 4; what exceeds ssthresh goes on to congestion avoidance.
        """
        cwnd = min(self.cwnd + acked, self.ssthresh)
        acked -= cwnd - self.cwnd
        self.cwnd = cwnd
        return acked

    def cong_avoid_ai(self, w: int, acked: int) -> None:
        """Add one segment to cwnd per `w` segments ACKed (Linux's tcp_cong_avoid_ai()).

        With `w == cwnd` this is RFC 5681 3.1's one SMSS per RTT, counted in segments ACKed
        (RFC 3465 3.1) rather than the per-ACK `SMSS*SMSS/cwnd` approximation.
        """
        w = max(w, 1)
        if self.cwnd_count >= w:
            self.cwnd_count = 0
            self.cwnd += 1
        self.cwnd_count += acked
        if self.cwnd_count >= w:
            delta, self.cwnd_count = divmod(self.cwnd_count, w)
            self.cwnd += delta

    # ---- the tcp_congestion_ops hooks ----

    def ssthresh_after_loss(self) -> int:
        """The ssthresh to set on a loss (.ssthresh; Linux's tcp_reno_ssthresh()).

        RFC 5681 (4) says max(FlightSize / 2, 2*SMSS); Linux halves cwnd instead, which is the
        same when the sender was cwnd-limited.
        """
        return max(self.cwnd >> 1, 2)

    def cong_avoid(self, now: float, acked: int) -> None:
        """Grow cwnd for `acked` segments delivered (.cong_avoid; tcp_reno_cong_avoid())."""
        if self.in_slow_start:
            acked = self.slow_start(acked)
            if not acked:
                return
        self.cong_avoid_ai(self.cwnd, acked)

    def pkts_acked(self, now: float, acked: int, rtt: float | None) -> None:
        """An ACK delivered `acked` segments, with this RTT sample if any (.pkts_acked)."""

    def set_state(self, state: CongestionState) -> None:
        """The state is about to become `state` (.set_state)."""

    def cwnd_event(self, now: float, event: CwndEvent, idle: float) -> None:
        """An event of the connection's sending (.cwnd_event); `idle` is seconds since the last send."""

    # ---- events the connection reports (tcp_input.c, tcp_output.c, tcp_timer.c) ----

    def on_ack(
        self,
        now: float,
        ack: int,
        acked: int,
        rtt: float | None = None,
        *,
        cwnd_limited: bool = True,
        flight_size: int | None = None,
        snd_nxt: int | None = None,
    ) -> AckOutcome:
        """An ACK advanced SND.UNA to `ack`, newly delivering `acked` segments.

        `acked` counts segments cumulatively acknowledged (plus newly SACKed ones if the caller
        counts them, as Linux's acked_sacked). `rtt` is the RTT sample this ACK gave, in seconds,
        or None (Karn). `cwnd_limited` is False when the application, not cwnd, limited the
        sending: then cwnd does not grow (RFC 7661; Linux's tcp_is_cwnd_limited()).
        `flight_size` (segments in flight after this ACK) selects RFC 6582 3.2 step 3's first
        option when recovery ends; without it cwnd becomes ssthresh, as Linux's
        tcp_end_cwnd_reduction() does. `snd_nxt` (SND.NXT now) lets an algorithm count round
        trips (CUBIC's HyStart); `snd_una` and `snd_nxt` are kept for the hooks.
        """
        if acked < 0:
            raise ValueError("acked counts segments newly delivered, never negative")
        self.snd_una, self.snd_nxt = ack, snd_nxt if snd_nxt is not None else ack
        if acked or rtt is not None:
            self.pkts_acked(now, acked, rtt)
        state = self.state
        if state is CongestionState.OPEN:
            if cwnd_limited and acked:
                self.cong_avoid(now, acked)
            return AckOutcome.NORMAL
        assert self.recover is not None
        full_ack = seq_ge(ack, self.recover)
        if state is CongestionState.LOSS:
            # After an RTO the window grows by slow start from 1 (RFC 5681 3.1) while the
            # sender retransmits what was in flight; Linux's tcp_may_raise_cwnd() allows it.
            if cwnd_limited and acked:
                self.cong_avoid(now, acked)
            if full_ack:
                self._set_state(CongestionState.OPEN)
                return AckOutcome.RECOVERED
            return AckOutcome.NORMAL
        if full_ack:
            # RFC 6582 3.2 step 3, full acknowledgment: deflate the window.
            if flight_size is not None:
                self.cwnd = min(self.ssthresh, max(flight_size, 1) + 1)
            else:
                self.cwnd = self.ssthresh
            self.cwnd_count = 0
            self._set_state(CongestionState.OPEN)
            return AckOutcome.RECOVERED
        if self._inflating:
            # RFC 6582 3.2 step 3, partial acknowledgment: deflate by the data ACKed, add back
            # one SMSS if at least one was ACKed, so about ssthresh stays in flight.
            self.cwnd = max(self.cwnd - acked + (1 if acked else 0), 1)
        return AckOutcome.PARTIAL

    def on_duplicate_ack(self, now: float) -> None:
        """A duplicate ACK after fast recovery began: inflate cwnd by one (RFC 5681 3.2 step 4).

        Each duplicate ACK says a segment left the network. Outside recovery, or when recovery
        follows RFC 6675 (SACK), nothing changes here.
        """
        if self.state is CongestionState.RECOVERY and self._inflating:
            self.cwnd += 1

    def enter_recovery(self, now: float, snd_nxt: int, *, sack: bool = False) -> bool:
        """Fast retransmit: enter fast recovery, unless already in RECOVERY or LOSS.

        RFC 6582 3.2 step 2 (RFC 5681 3.2 steps 2-3): ssthresh from the algorithm,
        `recover = SND.NXT`, and cwnd = ssthresh + 3 for the three duplicate ACKs that left
        the network. With `sack=True` (loss detected by RFC 6675's scoreboard) cwnd = ssthresh
        and the scoreboard's pipe governs sending instead (RFC 6675 5 step 4.2).
        Returns whether recovery began; the caller then retransmits the first unacked segment.
        Linux: tcp_enter_recovery() with tcp_init_cwnd_reduction().
        """
        if self.state is not CongestionState.OPEN:
            return False
        self.ssthresh = self.ssthresh_after_loss()
        self.cwnd_count = 0
        self.recover = snd_nxt
        self._inflating = not sack
        self.cwnd = self.ssthresh if sack else self.ssthresh + DUPLICATE_ACK_THRESHOLD
        self._set_state(CongestionState.RECOVERY)
        return True

    def on_retransmission_timeout(self, now: float, snd_nxt: int) -> None:
        """The retransmission timer fired: cwnd = 1 segment, the loss window (RFC 5681 3.1).

        ssthresh is lowered once per loss episode: not again on a backed-off RTO of the same
        episode (RFC 5681 (4) applies to a segment "not yet resent by way of the retransmission
        timer"), nor when RECOVERY already lowered it, as in Linux's tcp_enter_loss().
        `recover` becomes SND.NXT (RFC 6582 3.2 step 4; Linux's high_seq).
        """
        if self.state is CongestionState.OPEN:
            self.ssthresh = self.ssthresh_after_loss()
        self.cwnd = 1
        self.cwnd_count = 0
        self.recover = snd_nxt
        self._inflating = False
        self._set_state(CongestionState.LOSS)

    def on_idle_restart(
        self, now: float, idle: float, rto: float, *, slow_start_after_idle: bool = True
    ) -> None:
        """The connection sends with nothing in flight after `idle` seconds without sending.

        With net.ipv4.tcp_slow_start_after_idle (default 1), an idle period longer than the RTO
        restarts from at most the initial window, halving cwnd once per RTO idle
        (RFC 5681 4.1, RFC 2861; Linux's tcp_slow_start_after_idle_check() and
        tcp_cwnd_restart()), after keeping 3/4 of the old cwnd in ssthresh
        (tcp_current_ssthresh()). Then the algorithm hears CA_EVENT_TX_START.
        """
        if slow_start_after_idle and idle > rto > 0:
            self.cwnd_event(now, CwndEvent.CWND_RESTART, idle)
            if self.state is CongestionState.OPEN:
                self.ssthresh = max(self.ssthresh, (self.cwnd >> 1) + (self.cwnd >> 2))
            restart_cwnd = min(self.initial_window, self.cwnd)
            cwnd = self.cwnd
            remaining = idle - rto
            while remaining > 0 and cwnd > restart_cwnd:
                cwnd >>= 1
                remaining -= rto
            self.cwnd = max(cwnd, restart_cwnd)
            self.cwnd_count = 0
        self.cwnd_event(now, CwndEvent.TX_START, idle)

    def _set_state(self, state: CongestionState) -> None:
        """Linux's tcp_set_ca_state(): tell the algorithm, then change."""
        self.set_state(state)
        self.state = state


class Reno(CongestionControl):
    """Reno with NewReno recovery: Linux's "reno" (tcp_reno_*; recovery lives in tcp_input.c)."""

    name = "reno"
    __slots__ = ()


class Cubic(CongestionControl):
    """CUBIC (RFC 9438), with Linux's tcp_cubic.c choices, and HyStart's delay detection.

    After a loss at window W_max, cwnd follows W_cubic(t) = C*(t - K)**3 + W_max, with
    K = cbrt((W_max - cwnd_epoch) / C), t the time since the epoch began (the first ACK in
    congestion avoidance). As Linux's bictcp_update(), each ACK aims at W_cubic one minimum RTT
    ahead by setting how many segments must be ACKed per +1 of cwnd (`cnt`), at least 2 (so
    at most 1.5*cwnd per RTT, RFC 9438 4.2), and at most 20 while no loss was seen (Linux: 5%
    of cwnd per RTT). The Reno-friendly estimate W_est grows by alpha = 3(1 - beta)/(1 + beta)
    per RTT (RFC 9438 4.3); when it is larger, cwnd follows it instead.

    Linux's choices kept over the RFC: alpha stays fixed when W_est passes W_max (RFC 9438 4.3
    lets it become 1); an RTO forgets W_max and the minimum RTT (bictcp_reset in
    cubictcp_state); RTT samples within 1 s of an epoch's start are ignored (cubictcp_acked).
    The time is float seconds, not jiffies, so the curve is the RFC's without Linux's
    fixed-point rounding.

    HyStart (Ha and Rhee 2011; Linux's hystart_update with HYSTART_DELAY): in slow start from 16
    segments on, each round trip's minimum RTT over its first 8 samples is compared with the
    connection's minimum; once it exceeds it by an eighth (clamped to 4..16 ms) a queue is
    building, and slow start ends there (ssthresh = cwnd) instead of at the first loss.
    HyStart's ACK-train detection is left out: it times ACK spacing to 2 ms, which the
    emulator's batching does not keep.
    """

    name = "cubic"
    C = 0.4  # RFC 9438 4.1; Linux's bic_scale 41 / 1024
    BETA = 0.7  # RFC 9438 4.6; Linux's beta 717 / 1024
    ALPHA = 3 * (1 - BETA) / (1 + BETA)  # RFC 9438 4.3, Linux's beta_scale
    FAST_CONVERGENCE = True  # RFC 9438 4.7, Linux's fast_convergence=1
    TCP_FRIENDLINESS = True  # RFC 9438 4.3, Linux's tcp_friendliness=1
    # Linux caps growth at cwnd/20 per RTT while no loss was seen (last_max_cwnd == 0).
    NO_HISTORY_CNT = 20
    HYSTART = True  # Linux's hystart=1 (here: delay detection only)
    HYSTART_LOW_WINDOW = 16  # hystart_low_window
    HYSTART_MIN_SAMPLES = 8  # HYSTART_MIN_SAMPLES
    HYSTART_DELAY_MIN, HYSTART_DELAY_MAX = 0.004, 0.016  # HYSTART_DELAY_MIN/MAX (4 ms, 16 ms)
    __slots__ = ("w_max", "epoch_start", "k", "origin", "w_est", "min_rtt", "cnt",
                 "round_end", "round_min", "round_samples", "hystart_found")

    def __init__(self, initial_window: int = INITIAL_WINDOW) -> None:
        super().__init__(initial_window)
        self._reset()

    def _reset(self) -> None:
        """Forget the curve (Linux's bictcp_reset())."""
        self.w_max = 0.0  # last_max_cwnd: the window at the last loss, after fast convergence
        self.epoch_start: float | None = None  # epoch_start
        self.k = 0.0  # bic_K, in seconds
        self.origin = 0.0  # bic_origin_point: W_max, or cwnd when above it
        self.w_est = 0.0  # tcp_cwnd: the Reno-friendly estimate (RFC 9438 4.3)
        self.min_rtt: float | None = None  # delay_min
        self.cnt = 0  # segments to ACK per +1 of cwnd
        self.round_end: int | None = None  # end_seq: the round trip ends when SND.UNA passes it
        self.round_min = float("inf")  # curr_rtt: this round's minimum over its first samples
        self.round_samples = 0  # sample_cnt
        self.hystart_found = False  # found: slow start ended by HyStart

    def w_cubic(self, t: float) -> float:
        """RFC 9438 (1): the window `t` seconds into the current epoch."""
        return self.C * (t - self.k) ** 3 + self.origin

    def ssthresh_after_loss(self) -> int:
        """Multiplicative decrease by beta 0.7, with fast convergence (RFC 9438 4.6, 4.7).

        Linux's cubictcp_recalc_ssthresh(): a loss below the previous W_max means a new flow
        competes, so W_max is lowered further, to cwnd * (1 + beta) / 2.
        """
        self.epoch_start = None
        if self.cwnd < self.w_max and self.FAST_CONVERGENCE:
            self.w_max = self.cwnd * (1 + self.BETA) / 2
        else:
            self.w_max = float(self.cwnd)
        return max(int(self.cwnd * self.BETA), 2)

    def cong_avoid(self, now: float, acked: int) -> None:
        """Slow start below ssthresh, then the cubic curve (Linux's cubictcp_cong_avoid())."""
        if self.in_slow_start:
            acked = self.slow_start(acked)
            if not acked:
                return
        self._update(now, acked)
        self.cong_avoid_ai(self.cnt, acked)

    def _update(self, now: float, acked: int) -> None:
        """Set `cnt` from the cubic curve and the Reno-friendly estimate (bictcp_update())."""
        cwnd = self.cwnd
        if self.epoch_start is None:
            # RFC 9438 4.2: a new epoch; Linux starts it at the first ACK in avoidance.
            self.epoch_start = now
            self.w_est = float(cwnd)
            if self.w_max <= cwnd:
                self.k = 0.0
                self.origin = float(cwnd)
            else:
                self.k = ((self.w_max - cwnd) / self.C) ** (1 / 3)
                self.origin = self.w_max
        # Aim one RTT ahead: RFC 9438 4.2's W_cubic(t + RTT), Linux's t + delay_min.
        t = now - self.epoch_start + (self.min_rtt or 0.0)
        target = self.w_cubic(t)
        if target > cwnd:
            cnt = int(cwnd / (target - cwnd))
        else:
            cnt = 100 * cwnd  # at or above the curve: grow very slowly
        if self.w_max == 0 and cnt > self.NO_HISTORY_CNT:
            cnt = self.NO_HISTORY_CNT
        if self.TCP_FRIENDLINESS:
            # RFC 9438 4.3: W_est += alpha * segments_acked / cwnd.
            self.w_est += self.ALPHA * acked / cwnd
            if self.w_est > cwnd:
                cnt = min(cnt, int(cwnd / (self.w_est - cwnd)))
        self.cnt = max(cnt, 2)

    def pkts_acked(self, now: float, acked: int, rtt: float | None) -> None:
        """Keep the minimum RTT the curve aims ahead by (Linux's cubictcp_acked())."""
        if rtt is None or rtt <= 0:
            return
        # Linux: "Discard delay samples right after fast recovery".
        if self.epoch_start is not None and now - self.epoch_start < 1.0:
            return
        if self.min_rtt is None or rtt < self.min_rtt:
            self.min_rtt = rtt
        if self.HYSTART and self.in_slow_start and self.cwnd >= self.HYSTART_LOW_WINDOW and not self.hystart_found:
            self._hystart_update(rtt)

    def _hystart_update(self, rtt: float) -> None:
        """hystart_update(), HYSTART_DELAY: leave slow start when a round's RTT rises (a queue builds)."""
        if self.round_end is None or seq_gt(self.snd_una, self.round_end):
            # bictcp_hystart_reset: a new round trip, to end with what is sent now
            self.round_end = self.snd_nxt
            self.round_min = float("inf")
            self.round_samples = 0
        self.round_min = min(self.round_min, rtt)
        if self.round_samples < self.HYSTART_MIN_SAMPLES:
            self.round_samples += 1
            return
        base = self.min_rtt or rtt
        threshold = min(max(base / 8, self.HYSTART_DELAY_MIN), self.HYSTART_DELAY_MAX)  # HYSTART_DELAY_THRESH
        if self.round_min > base + threshold:
            self.hystart_found = True
            self.ssthresh = self.cwnd  # slow start ends here (LINUX_MIB_TCPHYSTARTDELAYDETECT)

    def set_state(self, state: CongestionState) -> None:
        """An RTO forgets the curve and HyStart's round (Linux's cubictcp_state() on TCP_CA_Loss)."""
        if state is CongestionState.LOSS:
            self._reset()

    def cwnd_event(self, now: float, event: CwndEvent, idle: float) -> None:
        """Idle time does not count as epoch time (cubictcp_cwnd_event(), RFC 9438 5.8)."""
        if event is CwndEvent.TX_START and self.epoch_start is not None and idle > 0:
            self.epoch_start = min(self.epoch_start + idle, now)


# Registration order, as /proc/sys/net/ipv4/tcp_available_congestion_control lists them.
_ALGORITHMS: dict[str, type[CongestionControl]] = {cls.name: cls for cls in (Reno, Cubic)}
DEFAULT = "cubic"  # net.ipv4.tcp_congestion_control's default in Linux


def available() -> tuple[str, ...]:
    """The algorithms' names (tcp_available_congestion_control)."""
    return tuple(_ALGORITHMS)


def create(name: str = DEFAULT, initial_window: int = INITIAL_WINDOW) -> CongestionControl:
    """A fresh instance of the algorithm `name`, as setsockopt(TCP_CONGESTION) picks one.

    An unknown name raises OSError(ENOENT), the errno of Linux's tcp_set_congestion_control().
    """
    try:
        cls = _ALGORITHMS[name]
    except KeyError:
        raise OSError(errno.ENOENT, f"no TCP congestion control named {name!r}") from None
    return cls(initial_window)
