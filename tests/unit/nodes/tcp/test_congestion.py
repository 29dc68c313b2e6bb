"""Congestion control: slow start, avoidance, NewReno recovery, RTO, idle restart, CUBIC, registry."""
from __future__ import annotations

import errno

import pytest
from hypothesis import given
from hypothesis import strategies as st

from nodes.tcp.congestion import (
    DEFAULT,
    INFINITE_SSTHRESH,
    INITIAL_WINDOW,
    AckOutcome,
    CongestionState,
    Cubic,
    Reno,
    available,
    create,
)

ALGORITHMS = [Reno, Cubic]
RTT = 0.1
MASK = 0xFFFFFFFF


def ack_one_round(cc, now: float, rtt: float = RTT, per_ack: int = 1) -> float:
    """ACK a full window, `per_ack` segments an ACK, spread evenly over one RTT; return the end."""
    acks = max(cc.cwnd // per_ack, 1)
    for i in range(acks):
        cc.on_ack(now + (i + 1) * rtt / acks, 0, per_ack, rtt)
    return now + rtt


def in_avoidance(cls, cwnd: int):
    cc = cls()
    cc.cwnd = cwnd
    cc.ssthresh = cwnd
    return cc


# ---- slow start and congestion avoidance (RFC 5681 3.1, Linux's tcp_slow_start/_cong_avoid_ai) ----


@pytest.mark.parametrize("cls", ALGORITHMS)
def test_a_new_connection_starts_with_ten_segments_and_infinite_ssthresh(cls):
    cc = cls()
    assert (cc.cwnd, cc.ssthresh, cc.state) == (10, INFINITE_SSTHRESH, CongestionState.OPEN)
    assert INITIAL_WINDOW == 10
    assert cc.in_slow_start


@pytest.mark.parametrize("cls", ALGORITHMS)
def test_slow_start_doubles_cwnd_every_round_trip(cls):
    cc = cls()
    now = 0.0
    windows = []
    for _ in range(4):
        now = ack_one_round(cc, now)
        windows.append(cc.cwnd)
    assert windows == [20, 40, 80, 160]


@pytest.mark.parametrize("cls", ALGORITHMS)
def test_slow_start_counts_segments_acked_not_acks(cls):
    delayed = cls()
    ack_one_round(delayed, 0.0, per_ack=2)  # delayed ACKs: 5 ACKs of 2 segments
    assert delayed.cwnd == 20
    stretch = cls()
    assert stretch.on_ack(0.1, 0, 4, RTT) is AckOutcome.NORMAL
    assert stretch.cwnd == 14


def test_slow_start_stops_at_ssthresh_and_the_rest_counts_towards_avoidance():
    cc = Reno()
    cc.cwnd, cc.ssthresh = 8, 10
    cc.on_ack(0.0, 0, 5)
    assert (cc.cwnd, cc.cwnd_count) == (10, 3)
    assert not cc.in_slow_start


def test_reno_avoidance_adds_one_segment_per_round_trip():
    cc = in_avoidance(Reno, 20)
    now = 0.0
    windows = []
    for _ in range(10):
        now = ack_one_round(cc, now)
        windows.append(cc.cwnd)
    assert windows == list(range(21, 31))


def test_avoidance_counts_a_stretch_ack_in_full():
    cc = in_avoidance(Reno, 10)
    cc.on_ack(0.0, 0, 25)  # tcp_cong_avoid_ai: two increments of 10, 5 carried over
    assert (cc.cwnd, cc.cwnd_count) == (12, 5)


@pytest.mark.parametrize("cls", ALGORITHMS)
def test_cwnd_does_not_grow_when_the_application_limits_sending(cls):
    cc = cls()
    cc.on_ack(0.1, 0, 5, RTT, cwnd_limited=False)
    assert cc.cwnd == 10
    avoiding = in_avoidance(cls, 30)
    for i in range(100):
        avoiding.on_ack(0.01 * i, 0, 1, RTT, cwnd_limited=False)
    assert avoiding.cwnd == 30


@pytest.mark.parametrize("cls", ALGORITHMS)
def test_negative_acked_is_a_caller_error(cls):
    with pytest.raises(ValueError):
        cls().on_ack(0.0, 0, -1)


# ---- fast retransmit and NewReno recovery (RFC 5681 3.2, RFC 6582 3.2) ----


def test_reno_halves_on_three_duplicate_acks_and_inflates_per_further_one():
    cc = in_avoidance(Reno, 40)
    assert cc.enter_recovery(1.0, snd_nxt=50_000) is True
    assert (cc.state, cc.ssthresh, cc.cwnd, cc.recover) == (
        CongestionState.RECOVERY, 20, 23, 50_000,
    )
    for _ in range(5):
        cc.on_duplicate_ack(1.01)
    assert cc.cwnd == 28
    assert cc.on_ack(1.1, 50_000, 40, RTT) is AckOutcome.RECOVERED
    assert (cc.state, cc.cwnd, cc.ssthresh) == (CongestionState.OPEN, 20, 20)


def test_full_ack_with_flight_size_takes_rfc_6582s_first_option():
    cc = in_avoidance(Reno, 40)
    cc.enter_recovery(1.0, snd_nxt=1000)
    assert cc.on_ack(1.1, 1000, 30, flight_size=4) is AckOutcome.RECOVERED
    assert cc.cwnd == 5  # min(ssthresh 20, max(FlightSize, 1) + 1)
    big = in_avoidance(Reno, 40)
    big.enter_recovery(1.0, snd_nxt=1000)
    big.on_ack(1.1, 1000, 30, flight_size=50)
    assert big.cwnd == 20


def test_partial_ack_deflates_by_what_it_acked_plus_one_and_asks_for_a_retransmission():
    cc = in_avoidance(Reno, 40)
    cc.enter_recovery(1.0, snd_nxt=100_000)
    for _ in range(7):
        cc.on_duplicate_ack(1.0)
    assert cc.cwnd == 30
    assert cc.on_ack(1.1, 60_000, 5) is AckOutcome.PARTIAL
    assert cc.cwnd == 26
    assert cc.on_ack(1.2, 60_100, 0) is AckOutcome.PARTIAL  # less than a segment: no change
    assert cc.cwnd == 26
    assert cc.state is CongestionState.RECOVERY
    assert cc.on_ack(1.3, 100_000, 20) is AckOutcome.RECOVERED


def test_no_second_recovery_while_one_is_under_way():
    cc = in_avoidance(Reno, 40)
    assert cc.enter_recovery(1.0, snd_nxt=1000)
    assert cc.enter_recovery(1.1, snd_nxt=2000) is False
    assert (cc.ssthresh, cc.recover) == (20, 1000)


def test_sack_recovery_sets_cwnd_to_ssthresh_without_inflation():
    cc = in_avoidance(Reno, 40)
    cc.enter_recovery(1.0, snd_nxt=1000, sack=True)
    assert cc.cwnd == 20
    cc.on_duplicate_ack(1.0)
    assert cc.on_ack(1.1, 500, 3) is AckOutcome.PARTIAL
    assert cc.cwnd == 20


def test_no_growth_during_recovery():
    cc = in_avoidance(Reno, 40)
    cc.enter_recovery(1.0, snd_nxt=10_000, sack=True)
    for i in range(100):
        cc.on_ack(1.0 + i / 1000, i, 1)
    assert cc.cwnd == 20


@pytest.mark.parametrize(("cls", "after"), [(Reno, 50), (Cubic, 70)])
def test_a_loss_multiplies_the_window_by_beta(cls, after):
    cc = in_avoidance(cls, 100)
    cc.enter_recovery(0.0, snd_nxt=1, sack=True)
    assert (cc.ssthresh, cc.cwnd) == (after, after)


@pytest.mark.parametrize("cls", ALGORITHMS)
def test_ssthresh_never_falls_below_two_segments(cls):
    cc = in_avoidance(cls, 2)
    cc.enter_recovery(0.0, snd_nxt=1)
    assert cc.ssthresh == 2


@given(
    snd_nxt=st.integers(0, MASK),
    outstanding=st.integers(1, 1 << 30),
    acked_fraction=st.floats(0, 1, exclude_max=True),
)
def test_partial_and_full_acks_are_told_apart_across_the_wrap(snd_nxt, outstanding, acked_fraction):
    snd_una = (snd_nxt - outstanding) & MASK
    partial = (snd_una + int(outstanding * acked_fraction)) & MASK
    cc = in_avoidance(Reno, 40)
    cc.enter_recovery(0.0, snd_nxt)
    assert cc.on_ack(0.1, partial, 0) is AckOutcome.PARTIAL
    assert cc.on_ack(0.2, snd_nxt, 1) is AckOutcome.RECOVERED


# ---- retransmission timeout (RFC 5681 3.1, RFC 6582 3.2 step 4, Linux's tcp_enter_loss) ----


@pytest.mark.parametrize(("cls", "ssthresh"), [(Reno, 20), (Cubic, 28)])
def test_rto_sets_cwnd_to_one_segment(cls, ssthresh):
    cc = in_avoidance(cls, 40)
    cc.on_retransmission_timeout(5.0, snd_nxt=9000)
    assert (cc.state, cc.cwnd, cc.ssthresh, cc.recover) == (
        CongestionState.LOSS, 1, ssthresh, 9000,
    )


@pytest.mark.parametrize("cls", ALGORITHMS)
def test_after_an_rto_slow_start_resumes_from_one_and_a_full_ack_ends_the_loss(cls):
    cc = in_avoidance(cls, 40)
    cc.on_retransmission_timeout(5.0, snd_nxt=9000)
    assert cc.enter_recovery(5.1, snd_nxt=9000) is False  # RFC 6582 4: no fast retransmit now
    assert cc.on_ack(5.2, 1000, 1) is AckOutcome.NORMAL
    assert cc.on_ack(5.3, 2000, 2) is AckOutcome.NORMAL
    assert (cc.cwnd, cc.state) == (4, CongestionState.LOSS)
    assert cc.on_ack(5.4, 9000, 4) is AckOutcome.RECOVERED
    assert (cc.cwnd, cc.state) == (8, CongestionState.OPEN)


@pytest.mark.parametrize("cls", ALGORITHMS)
def test_a_backed_off_rto_does_not_lower_ssthresh_again(cls):
    cc = in_avoidance(cls, 40)
    cc.on_retransmission_timeout(5.0, snd_nxt=9000)
    first = cc.ssthresh
    cc.on_retransmission_timeout(6.0, snd_nxt=9000)
    assert (cc.cwnd, cc.ssthresh) == (1, first)


def test_an_rto_during_recovery_keeps_the_ssthresh_recovery_set():
    cc = in_avoidance(Reno, 40)
    cc.enter_recovery(1.0, snd_nxt=5000)
    cc.on_retransmission_timeout(2.0, snd_nxt=6000)
    assert (cc.state, cc.cwnd, cc.ssthresh, cc.recover) == (CongestionState.LOSS, 1, 20, 6000)


# ---- restart after idle (RFC 5681 4.1, Linux's tcp_cwnd_restart) ----


def test_idle_longer_than_rto_halves_cwnd_per_rto_down_to_the_initial_window():
    cc = in_avoidance(Reno, 80)
    cc.ssthresh = 50
    cc.on_idle_restart(10.0, idle=0.6, rto=0.2)
    assert (cc.cwnd, cc.ssthresh) == (20, 60)  # 80 -> 40 -> 20; ssthresh keeps 3/4 of 80
    long_idle = in_avoidance(Reno, 80)
    long_idle.on_idle_restart(10.0, idle=100.0, rto=0.2)
    assert long_idle.cwnd == 10


def test_short_idle_or_the_knob_off_keeps_cwnd():
    short = in_avoidance(Reno, 80)
    short.on_idle_restart(10.0, idle=0.2, rto=0.2)
    off = in_avoidance(Reno, 80)
    off.on_idle_restart(10.0, idle=60.0, rto=0.2, slow_start_after_idle=False)
    assert (short.cwnd, short.ssthresh, off.cwnd) == (80, 80, 80)


def test_idle_restart_never_raises_a_small_window():
    cc = in_avoidance(Reno, 4)
    cc.on_idle_restart(10.0, idle=5.0, rto=0.2)
    assert cc.cwnd == 4


# ---- CUBIC (RFC 9438) ----


def rfc_w_cubic(t: float, w_max: float, cwnd_epoch: float) -> float:
    """RFC 9438 (1) and (2), written out independently of the module."""
    k = ((w_max - cwnd_epoch) / 0.4) ** (1 / 3)
    return 0.4 * (t - k) ** 3 + w_max


def cubic_after_loss_at(w_max: int, rtt: float = RTT) -> tuple[Cubic, float]:
    """A CUBIC flow that lost at `w_max` (first loss) and just left recovery at time `rtt`."""
    cc = Cubic()
    cc.cwnd = w_max
    cc.enter_recovery(0.0, snd_nxt=1000)
    assert cc.on_ack(rtt, 1000, 10, rtt) is AckOutcome.RECOVERED
    return cc, rtt


def test_cubic_window_follows_the_rfc_curve():
    cc, now = cubic_after_loss_at(100)
    assert (cc.cwnd, cc.w_max) == (70, 100)
    samples = {}
    while now < 8.0:
        now = ack_one_round(cc, now)
        samples[now - cc.epoch_start] = cc.cwnd
    checked = 0
    for t, cwnd in samples.items():
        expected = rfc_w_cubic(t, 100, 70)
        # Each ACK aims at W_cubic one RTT ahead, growing at most as the curve does in an RTT.
        ahead = rfc_w_cubic(t + RTT, 100, 70)
        assert expected - 1.5 <= cwnd <= max(ahead, expected) + 1.5, (t, cwnd, expected)
        checked += 1
    assert checked >= 70
    # The plateau around K = cbrt(75) ~ 4.2 s stays near W_max, then the convex region leaves it.
    assert 98 <= samples[min(samples, key=lambda t: abs(t - 4.2))] <= 102
    assert samples[max(samples)] > 115


def test_cubic_follows_the_rfc_curve_at_a_longer_rtt_too():
    slow, now = cubic_after_loss_at(200, rtt=0.2)
    while now < 3.0:
        now = ack_one_round(slow, now, rtt=0.2)
    t = now - slow.epoch_start
    assert abs(slow.cwnd - rfc_w_cubic(t, 200, 140)) <= 2


def test_cubic_follows_the_reno_friendly_estimate_when_it_is_larger():
    rtt = 0.005
    cc, now = cubic_after_loss_at(100, rtt=rtt)
    while now < 1.0:
        now = ack_one_round(cc, now, rtt=rtt)
    t = now - cc.epoch_start
    assert rfc_w_cubic(t, 100, 70) < 88
    # RFC 9438 (4): W_est grows by alpha = 3 * 0.3 / 1.7 segments per RTT from 70.
    rounds = t / rtt
    reno_friendly = 70 + 3 * 0.3 / 1.7 * rounds
    assert abs(cc.cwnd - reno_friendly) <= 0.05 * reno_friendly
    assert abs(cc.w_est - cc.cwnd) <= 2


def test_cubic_fast_convergence_lowers_w_max_when_losing_below_it():
    cc = in_avoidance(Cubic, 100)
    cc.enter_recovery(0.0, snd_nxt=1, sack=True)
    cc.on_ack(0.1, 1, 1)
    cc.cwnd = 80
    cc.enter_recovery(1.0, snd_nxt=2, sack=True)
    assert cc.w_max == pytest.approx(80 * 1.7 / 2)
    assert cc.ssthresh == 56


def test_cubic_without_loss_history_grows_at_most_five_percent_a_round_trip():
    cc = in_avoidance(Cubic, 100)
    now = 0.0
    for _ in range(3):
        now = ack_one_round(cc, now)
    assert cc.cnt == 20
    assert cc.cwnd == 115


def test_cubic_does_not_count_idle_time_into_its_epoch():
    cc, now = cubic_after_loss_at(100)
    now = ack_one_round(cc, now)
    start = cc.epoch_start
    cc.on_idle_restart(now + 2.0, idle=2.0, rto=0.2, slow_start_after_idle=False)
    assert cc.epoch_start == pytest.approx(start + 2.0)
    cc.on_idle_restart(now + 3.0, idle=50.0, rto=0.2, slow_start_after_idle=False)
    assert cc.epoch_start == pytest.approx(now + 3.0)  # never in the future


def test_cubic_rto_forgets_the_curve():
    cc, now = cubic_after_loss_at(100)
    ack_one_round(cc, now)
    before = cc.cwnd
    cc.on_retransmission_timeout(2.0, snd_nxt=5000)
    assert (cc.w_max, cc.epoch_start, cc.min_rtt, cc.cwnd) == (0, None, None, 1)
    assert cc.ssthresh == int(before * 0.7)


def test_cubic_ignores_rtt_samples_just_after_an_epoch_starts():
    cc, now = cubic_after_loss_at(100)
    assert cc.min_rtt == RTT
    now = ack_one_round(cc, now)
    cc.on_ack(now, 0, 1, 0.01)
    assert cc.min_rtt == RTT
    cc.on_ack(cc.epoch_start + 1.5, 0, 1, 0.01)
    assert cc.min_rtt == 0.01


# ---- invariants over any sequence of events ----

EVENTS = st.lists(
    st.one_of(
        st.tuples(st.just("ack"), st.integers(0, 64), st.booleans()),
        st.tuples(st.just("dupack")),
        st.tuples(st.just("recovery"), st.booleans()),
        st.tuples(st.just("rto")),
        st.tuples(st.just("idle"), st.floats(0, 10)),
    ),
    max_size=60,
)


@pytest.mark.parametrize("cls", ALGORITHMS)
@given(events=EVENTS)
def test_windows_stay_sane_over_any_events(cls, events):
    cc = cls()
    now, snd_una, snd_nxt = 0.0, (1 << 32) - 5000, (1 << 32) - 5000
    for event in events:
        now += 0.01
        snd_nxt = (snd_nxt + 3000) & MASK
        if event[0] == "ack":
            snd_una = (snd_una + event[1] * 100) & MASK
            if event[2]:
                snd_una = snd_nxt
            cc.on_ack(now, snd_una, event[1], 0.05)
        elif event[0] == "dupack":
            cc.on_duplicate_ack(now)
        elif event[0] == "recovery":
            cc.enter_recovery(now, snd_nxt, sack=event[1])
        elif event[0] == "rto":
            cc.on_retransmission_timeout(now, snd_nxt)
        else:
            cc.on_idle_restart(now, event[1], 0.2)
        assert cc.cwnd >= 1
        assert 2 <= cc.ssthresh <= INFINITE_SSTHRESH
        assert (cc.state is CongestionState.OPEN) or cc.recover is not None


# ---- the registry (TCP_CONGESTION, net.ipv4.tcp_congestion_control) ----


def test_the_registry_names_reno_and_cubic_with_cubic_the_default():
    assert available() == ("reno", "cubic")
    assert DEFAULT == "cubic"
    assert type(create()) is Cubic
    assert type(create("reno")) is Reno
    assert create("cubic").name == "cubic"


def test_each_create_gives_a_fresh_window():
    first = create("reno")
    first.cwnd = 99
    assert create("reno").cwnd == 10
    assert create("cubic", initial_window=4).cwnd == 4


def test_an_unknown_algorithm_is_enoent_as_in_linux():
    with pytest.raises(OSError) as raised:
        create("bbr")
    assert raised.value.errno == errno.ENOENT
    with pytest.raises(ValueError):
        create("reno", initial_window=0)


def _slow_start_rounds(cc, rtts, start: float = 0.0, seq: int = 1000) -> tuple[float, int]:
    """ACK one window per round trip, each ACK one segment with that round's RTT as its sample;
    SND.NXT moves a window ahead each round (as a sender in slow start)."""
    now = start
    snd_una = seq
    for rtt in rtts:
        window = cc.cwnd
        snd_nxt = snd_una + window
        for _ in range(window):
            now += rtt / window
            snd_una += 1
            cc.on_ack(now, snd_una, 1, rtt, snd_nxt=snd_nxt + window)
    return now, snd_una


def test_cubic_hystart_ends_slow_start_when_a_round_trip_time_rises():
    # hystart_update (HYSTART_DELAY): from 16 segments on, a round whose first 8 samples all
    # exceed the minimum RTT by more than max(min_rtt/8, 4 ms) ends slow start at that cwnd
    cc = Cubic()
    _slow_start_rounds(cc, [0.010, 0.010, 0.010])  # cwnd 10 -> 80, no queue
    assert cc.in_slow_start and not cc.hystart_found
    _slow_start_rounds(cc, [0.0155], seq=10_000)   # +5.5 ms: above the 4 ms floor
    # found after the round's first 8 samples: ssthresh is the cwnd then, not the doubled 160
    assert cc.hystart_found and not cc.in_slow_start and 80 < cc.ssthresh <= 90


def test_cubic_hystart_ignores_a_rise_below_its_threshold_and_small_windows():
    cc = Cubic()
    _slow_start_rounds(cc, [0.010, 0.010, 0.013, 0.013])  # +3 ms < 4 ms
    assert cc.in_slow_start and not cc.hystart_found
    small = Cubic(initial_window=4)
    _slow_start_rounds(small, [0.010])                # cwnd 4 -> 8
    _slow_start_rounds(small, [0.050], seq=5000)      # a 40 ms rise while cwnd is 8..15: below hystart_low_window
    assert not small.hystart_found and small.in_slow_start and small.cwnd == 16


def test_reno_has_no_hystart():
    cc = Reno()
    _slow_start_rounds(cc, [0.010, 0.010, 0.010, 0.030])
    assert cc.in_slow_start
