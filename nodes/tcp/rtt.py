"""The retransmission timeout: RFC 6298's estimator as Linux computes it.

Before changing this file, read RFC 6298 (all of it: it is short), then Linux's
tcp_rtt_estimator(), tcp_set_rto() and tcp_ack_update_rtt() in net/ipv4/tcp_input.c,
tcp_retransmit_timer() and tcp_model_timeout() in net/ipv4/tcp_timer.c, and tcp_get_info()
in net/ipv4/tcp.c for what `ss -ti` shows.

Where Linux differs from the letter of RFC 6298, this follows Linux:

- The state is kept in integer microseconds with Linux's scaling: `srtt_us` holds 8 x SRTT and
  `mdev_us` holds 4 x RTTVAR, so the shifts truncate exactly as the kernel's do.
- RTO = SRTT + `rttvar_us`, where `rttvar_us` is the largest `mdev_us` seen during the current
  flight of data (reset each time SND.UNA passes the SND.NXT recorded when the flight began), and
  never below `rto_min`. So `tcp_rto_min` (200 ms) is a floor on the variance term, not on the
  whole RTO as RFC 6298 2.4's "1 second minimum" is: on a 10 ms path the RTO is about 210 ms.
- A sample below SRTT that is also far below it raises `mdev` by only 1/8 of the usual step
  (the kernel's damping of "RTT dropped", from Eifel work), so a sudden fast ACK does not
  inflate the RTO.
- The variance term decays by a quarter of its distance to the flight's maximum once per flight,
  not per sample.

Times at the API are seconds (float) like the rest of nodes/tcp/; nothing here reads a clock.

Not modelled: jiffies (Linux rounds the RTO up to its timer tick, 1 to 4 ms with HZ 1000..250;
here the RTO is exact to the microsecond), thin-stream linear timeouts
(tcp_thin_linear_timeouts), the linear SYN timeouts of tcp_syn_linear_timeouts, per-route
`rto_min` (the caller passes it), and the SYN-ACK's own timer (tcp_timeout_init's 1 s is the
default here too).
"""
from __future__ import annotations

from .seq import seq_gt

USEC_PER_SEC = 1_000_000

# include/net/tcp.h
TCP_RTO_MIN = 0.2  # HZ / 5; net.ipv4.tcp_rto_min_us defaults to 200000
TCP_RTO_MAX = 120.0  # 120 * HZ; net.ipv4.tcp_rto_max_ms defaults to 120000
TCP_TIMEOUT_INIT = 1.0  # RFC 6298 2.1
TCP_TIMEOUT_FALLBACK = 3.0  # RFC 6298 5.7, RFC 1122's old initial RTO


def _to_us(seconds: float) -> int:
    return int(round(seconds * USEC_PER_SEC))


class RttEstimator:
    """SRTT, RTTVAR and the RTO of one connection, with Karn's rule and exponential backoff.

    Feed it with `on_ack()` for every ACK that advances SND.UNA (it applies Karn's rule) or with
    `sample()` for a measurement already known to be valid; call `on_timeout()` each time the
    retransmission timer fires. `rto` is then the interval to arm the timer with.
    """

    __slots__ = (
        "rto_min",
        "rto_max",
        "backoff",
        "_rto_min_us",
        "_rto_max_us",
        "_srtt_us",
        "_mdev_us",
        "_mdev_max_us",
        "_rttvar_us",
        "_rtt_seq",
        "_rto_us",
    )

    def __init__(
        self,
        rto_min: float = TCP_RTO_MIN,
        rto_max: float = TCP_RTO_MAX,
        rto_initial: float = TCP_TIMEOUT_INIT,
    ) -> None:
        if not 0 < rto_min <= rto_max:
            raise ValueError(f"need 0 < rto_min <= rto_max, got {rto_min} and {rto_max}")
        if not 0 < rto_initial:
            raise ValueError(f"the initial RTO must be positive, got {rto_initial}")
        self.rto_min = rto_min
        self.rto_max = rto_max
        self._rto_min_us = _to_us(rto_min)
        self._rto_max_us = _to_us(rto_max)
        #: icsk_backoff: timeouts since the last valid sample (`ss -ti` shows it when nonzero).
        self.backoff = 0
        self._srtt_us = 0  # 8 x SRTT; 0 means no sample yet
        # tcp_init_sock: mdev starts at the initial timeout, so ss shows rttvar 250 ms before
        # the first sample.
        self._mdev_us = _to_us(rto_initial)
        self._mdev_max_us = 0
        self._rttvar_us = 0
        self._rtt_seq = 0
        self._rto_us = min(_to_us(rto_initial), self._rto_max_us)

    # -- what the connection reads -----------------------------------------------------------

    @property
    def rto(self) -> float:
        """The retransmission timeout to arm now, backoff included (icsk_rto), in seconds."""
        return self._rto_us / USEC_PER_SEC

    @property
    def srtt(self) -> float | None:
        """The smoothed RTT in seconds, or None before the first sample (RFC 6298 2.1)."""
        if self._srtt_us == 0:
            return None
        return (self._srtt_us >> 3) / USEC_PER_SEC

    @property
    def rttvar(self) -> float:
        """RTTVAR, the smoothed mean deviation, in seconds: what `ss -ti` prints after the '/'.

        Linux's tcpi_rttvar is mdev_us >> 2. The RTO does not use it directly but the flight's
        maximum of it, floored at `rto_min` (see `rto_variance`).
        """
        return (self._mdev_us >> 2) / USEC_PER_SEC

    @property
    def rto_variance(self) -> float:
        """The term added to SRTT to make the RTO (Linux's rttvar_us, i.e. 4 x RTTVAR at least)."""
        return self._rttvar_us / USEC_PER_SEC

    @property
    def has_sample(self) -> bool:
        return self._srtt_us != 0

    # -- events ------------------------------------------------------------------------------

    def sample(self, rtt: float, snd_una: int, snd_nxt: int) -> None:
        """Take one valid RTT measurement (seconds) and recompute the RTO; clears the backoff.

        `snd_una` and `snd_nxt` are the connection's after processing the ACK that gave the
        sample: they delimit the flights over which Linux keeps the variance term's maximum.
        The caller is responsible for Karn's rule; `on_ack()` applies it.
        """
        if rtt < 0:
            raise ValueError(f"an RTT is never negative, got {rtt}")
        self._estimate(max(1, _to_us(rtt)), snd_una, snd_nxt)
        self._set_rto()
        # tcp_ack_update_rtt: "RFC6298: only reset backoff on valid RTT measurement."
        self.backoff = 0

    def on_ack(
        self,
        rtt: float | None,
        *,
        retransmitted: bool,
        snd_una: int,
        snd_nxt: int,
        timestamp_rtt: float | None = None,
    ) -> bool:
        """Karn's rule as Linux's tcp_ack_update_rtt() applies it; returns whether a sample was taken.

        Call it for an ACK that acknowledges new data (RFC 7323 4.1's RTTM rule: only such an
        ACK's TSecr may be used). `rtt` is the time since the newest acknowledged segment was
        first sent; `retransmitted` says whether any segment this ACK covers was retransmitted,
        in which case `rtt` is ambiguous and ignored (RFC 6298 3, Karn). `timestamp_rtt` is now
        minus the echoed TSecr, when the peer echoes timestamps: it is unambiguous even after a
        retransmission, so it is used when the segment timing is not. Linux prefers the segment
        timing when both exist, because middleboxes corrupt TSecr.
        """
        if rtt is not None and not retransmitted:
            self.sample(rtt, snd_una, snd_nxt)
            return True
        if timestamp_rtt is not None and timestamp_rtt >= 0:
            self.sample(timestamp_rtt, snd_una, snd_nxt)
            return True
        return False

    def on_timeout(self) -> float:
        """The retransmission timer fired: double the RTO up to `rto_max` (RFC 6298 5.5).

        As tcp_retransmit_timer(): `backoff` counts the timeouts, and the doubled RTO stays in
        force until a valid sample recomputes it from SRTT (RFC 6298 5.7's note on keeping the
        backed-off value). Returns the new RTO in seconds.
        """
        self.backoff += 1
        self._rto_us = min(self._rto_us << 1, self._rto_max_us)
        return self.rto

    def handshake_without_sample(self) -> None:
        """The handshake completed with no valid sample (its SYN or SYN-ACK was retransmitted).

        RFC 6298 5.7: the RTO goes back to 3 seconds for the data that follows, as Linux's
        tcp_init_metrics() does with TCP_TIMEOUT_FALLBACK. No effect once a sample exists.
        """
        if self._srtt_us:
            return
        fallback = _to_us(TCP_TIMEOUT_FALLBACK)
        self._mdev_us = self._mdev_max_us = self._rttvar_us = fallback
        self._rto_us = min(fallback, self._rto_max_us)

    def ss_info(self) -> str:
        """The RTO part of `ss -ti`'s line, as iproute2 prints it: `rto:204 backoff:1 rtt:3.2/1.6`.

        Milliseconds with %g; iproute2 leaves out rto when it is 3000 (the old initial value),
        backoff when 0, and rtt before the first sample.
        """
        parts = []
        rto_ms = self._rto_us / 1000
        if rto_ms and rto_ms != 3000:
            parts.append("rto:%g" % rto_ms)
        if self.backoff:
            parts.append("backoff:%u" % self.backoff)
        if self._srtt_us:
            parts.append("rtt:%g/%g" % ((self._srtt_us >> 3) / 1000, (self._mdev_us >> 2) / 1000))
        return " ".join(parts)

    # -- Linux's arithmetic ------------------------------------------------------------------

    def _estimate(self, measured_us: int, snd_una: int, snd_nxt: int) -> None:
        """tcp_rtt_estimator(): SRTT += (R - SRTT)/8, mdev += (|R - SRTT| - mdev)/4, scaled."""
        m = measured_us
        srtt = self._srtt_us
        if srtt:
            m -= srtt >> 3  # the error of the estimate
            srtt += m  # srtt = 7/8 srtt + 1/8 sample
            if m < 0:
                m = -m
                m -= self._mdev_us >> 2
                # The RTT fell: if by more than the deviation, count only 1/8 of the surprise,
                # so a sudden fast ACK does not inflate the RTO.
                if m > 0:
                    m >>= 3
            else:
                m -= self._mdev_us >> 2
            self._mdev_us += m  # mdev = 3/4 mdev + 1/4 |error|
            if self._mdev_us > self._mdev_max_us:
                self._mdev_max_us = self._mdev_us
                if self._mdev_max_us > self._rttvar_us:
                    self._rttvar_us = self._mdev_max_us
            if seq_gt(snd_una, self._rtt_seq):
                # A flight ended: let the variance term decay toward this flight's maximum.
                if self._mdev_max_us < self._rttvar_us:
                    self._rttvar_us -= (self._rttvar_us - self._mdev_max_us) >> 2
                self._rtt_seq = snd_nxt
                self._mdev_max_us = self._rto_min_us
        else:
            # RFC 6298 2.2: SRTT = R, RTTVAR = R/2, so RTO = 3R (before the rto_min floor).
            srtt = m << 3
            self._mdev_us = m << 1
            self._rttvar_us = max(self._mdev_us, self._rto_min_us)
            self._mdev_max_us = self._rttvar_us
            self._rtt_seq = snd_nxt
        self._srtt_us = max(1, srtt)

    def _set_rto(self) -> None:
        """tcp_set_rto(): RTO = SRTT + variance term, bounded by rto_max (tcp_bound_rto)."""
        self._rto_us = min((self._srtt_us >> 3) + self._rttvar_us, self._rto_max_us)


def retries_timeout(boundary: int, rto_base: float = TCP_RTO_MIN, rto_max: float = TCP_RTO_MAX) -> float:
    """How long `boundary` retransmissions take with pure backoff: Linux's tcp_model_timeout().

    Linux gives up on a connection (ETIMEDOUT) not after tcp_retries2 timeouts but when the time
    since the first retransmission exceeds this, computed from `rto_base` (TCP_RTO_MIN for an
    established connection, the initial RTO for SYNs) doubling up to `rto_max`. For
    tcp_retries2 = 15 that is 924.6 s. Result in seconds.
    """
    if boundary < 0:
        raise ValueError(f"the boundary is a count of retransmissions, got {boundary}")
    base_us = _to_us(rto_base)
    max_us = _to_us(rto_max)
    # ilog2(TCP_RTO_MAX / rto_base): the last retransmission whose timeout is still doubling.
    linear_backoff_thresh = (max_us // base_us).bit_length() - 1
    if boundary <= linear_backoff_thresh:
        timeout_us = ((2 << boundary) - 1) * base_us
    else:
        timeout_us = ((2 << linear_backoff_thresh) - 1) * base_us + (
            boundary - linear_backoff_thresh
        ) * max_us
    return timeout_us / USEC_PER_SEC
