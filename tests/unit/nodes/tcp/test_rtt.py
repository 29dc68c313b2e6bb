"""The RFC 6298 estimator as Linux computes it (nodes/tcp/rtt.py).

Expected values are worked by hand from tcp_rtt_estimator()'s integer arithmetic.
"""
from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from nodes.tcp.rtt import (
    TCP_RTO_MAX,
    TCP_RTO_MIN,
    TCP_TIMEOUT_INIT,
    RttEstimator,
    retries_timeout,
)
from nodes.tcp.seq import SEQ_MASK, seq_add

# One flight per sample: SND.UNA passes the SND.NXT recorded at the previous sample.
UNA, NXT = 1000, 2000


def after_samples(*rtts: float, **kwargs) -> RttEstimator:
    est = RttEstimator(**kwargs)
    for i, rtt in enumerate(rtts):
        est.sample(rtt, snd_una=UNA + 1000 * i + 1, snd_nxt=NXT + 1000 * i)
    return est


def test_linux_defaults():
    assert (TCP_RTO_MIN, TCP_RTO_MAX, TCP_TIMEOUT_INIT) == (0.2, 120.0, 1.0)
    est = RttEstimator()
    assert est.rto == 1.0
    assert est.srtt is None and not est.has_sample
    assert est.rttvar == 0.25  # tcp_init_sock's mdev_us = 1 s, shown as mdev >> 2
    assert est.backoff == 0
    assert est.ss_info() == "rto:1000"


def test_first_sample_gives_three_times_the_rtt():
    est = after_samples(0.1)
    assert est.srtt == 0.1 and est.rttvar == 0.05
    assert est.rto == pytest.approx(0.3)
    assert est.ss_info() == "rto:300 rtt:100/50"


def test_rto_min_floors_the_variance_term_not_the_whole_rto():
    # RFC 6298 would give max(1 s, 30 ms); Linux gives SRTT + 200 ms.
    est = after_samples(0.010)
    assert est.rto == pytest.approx(0.210)
    assert est.rto_variance == pytest.approx(0.2)
    assert est.ss_info() == "rto:210 rtt:10/5"


def test_second_sample_follows_alpha_one_eighth_and_beta_one_quarter():
    est = after_samples(0.1, 0.2)
    assert est.srtt == pytest.approx(0.1125)  # 7/8 * 100 + 1/8 * 200
    assert est.rttvar == pytest.approx(0.0625)  # 3/4 * 50 + 1/4 * 100
    assert est.rto == pytest.approx(0.3625)


def test_a_sudden_drop_in_rtt_raises_the_deviation_by_an_eighth_of_the_usual_step():
    est = after_samples(0.1, 0.01)
    # |error| = 90 ms; the RFC would make RTTVAR 3/4 * 50 + 1/4 * 90 = 60 ms. Linux adds
    # (90 - 50) / 8 = 5 ms to 4 x RTTVAR instead: 205 ms, shown as 51.25 ms.
    assert est.rttvar == pytest.approx(0.05125)
    assert est.srtt == pytest.approx(0.08875)


def test_constant_rtt_converges_to_rtt_plus_rto_min():
    est = after_samples(*[0.05] * 200)
    assert est.srtt == pytest.approx(0.05)
    assert est.rttvar < 1e-5
    assert est.rto == pytest.approx(0.25, abs=1e-5)


def test_the_variance_term_decays_once_per_flight_not_per_sample():
    est = RttEstimator()
    est.sample(1.0, snd_una=1, snd_nxt=100)
    assert est.rto == pytest.approx(3.0)
    for _ in range(4):  # samples within the flight: SND.UNA has not passed 100
        est.sample(1.0, snd_una=50, snd_nxt=150)
    assert est.rttvar < 0.2  # the deviation itself fell from 500 ms
    assert est.rto == pytest.approx(3.0)  # but the RTO keeps the flight's maximum
    est.sample(1.0, snd_una=101, snd_nxt=200)  # the flight ended
    assert est.rto == pytest.approx(3.0)  # the maximum of that flight was still 2 s
    est.sample(1.0, snd_una=201, snd_nxt=300)
    assert est.rto < 3.0


def test_timeouts_double_the_rto_up_to_the_maximum_and_count_backoff():
    est = RttEstimator()
    seen = [est.on_timeout() for _ in range(9)]
    assert seen == [2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 120.0, 120.0, 120.0]
    assert est.backoff == 9
    assert est.ss_info() == "rto:120000 backoff:9"


def test_a_valid_sample_clears_the_backoff_and_recomputes_the_rto():
    est = after_samples(0.1)
    est.on_timeout()
    est.on_timeout()
    assert est.rto == pytest.approx(1.2) and est.backoff == 2
    est.sample(0.1, snd_una=5000, snd_nxt=6000)
    assert est.backoff == 0
    assert est.rto == pytest.approx(0.3)


def test_karn_no_sample_from_a_retransmitted_segment():
    est = after_samples(0.1)
    est.on_timeout()
    before = (est.rto, est.srtt, est.rttvar, est.backoff)
    assert est.on_ack(5.0, retransmitted=True, snd_una=3000, snd_nxt=4000) is False
    assert (est.rto, est.srtt, est.rttvar, est.backoff) == before  # backed-off RTO kept


def test_karn_timestamps_give_a_sample_even_after_retransmission():
    est = RttEstimator()
    est.on_timeout()
    assert est.on_ack(5.0, retransmitted=True, snd_una=1, snd_nxt=1, timestamp_rtt=0.1) is True
    assert est.srtt == pytest.approx(0.1)
    assert est.backoff == 0


def test_segment_timing_is_preferred_to_timestamps_when_both_are_valid():
    est = RttEstimator()
    assert est.on_ack(0.1, retransmitted=False, snd_una=1, snd_nxt=1, timestamp_rtt=0.7) is True
    assert est.srtt == pytest.approx(0.1)


def test_no_timing_at_all_takes_no_sample():
    est = RttEstimator()
    assert est.on_ack(None, retransmitted=False, snd_una=1, snd_nxt=1) is False
    assert est.srtt is None and est.rto == 1.0


def test_rto_min_and_max_are_parameters():
    est = after_samples(0.010, rto_min=0.05, rto_max=10.0)
    assert est.rto == pytest.approx(0.060)
    for _ in range(10):
        est.on_timeout()
    assert est.rto == 10.0
    assert after_samples(30.0, rto_max=10.0).rto == 10.0


def test_misuse_raises_value_error():
    with pytest.raises(ValueError):
        RttEstimator(rto_min=0.0)
    with pytest.raises(ValueError):
        RttEstimator(rto_min=2.0, rto_max=1.0)
    with pytest.raises(ValueError):
        RttEstimator(rto_initial=0.0)
    with pytest.raises(ValueError):
        RttEstimator().sample(-0.1, 0, 0)


def test_a_zero_rtt_counts_as_one_microsecond():
    est = after_samples(0.0)
    assert est.srtt == pytest.approx(1e-6)
    assert est.rto == pytest.approx(0.2, abs=1e-5)


def test_handshake_without_a_sample_falls_back_to_three_seconds():
    est = RttEstimator()
    est.on_timeout()  # the SYN was retransmitted
    est.handshake_without_sample()
    assert est.rto == 3.0
    assert est.ss_info() == "backoff:1"  # iproute2 hides rto:3000
    est.sample(0.1, snd_una=10, snd_nxt=10)
    assert est.rto == pytest.approx(0.3)


def test_handshake_fallback_does_nothing_once_there_is_a_sample():
    est = after_samples(0.1)
    est.handshake_without_sample()
    assert est.rto == pytest.approx(0.3)


# -- properties ----------------------------------------------------------------------------

rtts = st.floats(1e-6, 200.0, allow_nan=False)
events = st.lists(st.one_of(rtts, st.none()), max_size=40)  # None: a timeout


@given(events)
def test_rto_stays_within_bounds_and_backoff_resets_on_samples(sequence):
    est = RttEstimator()
    una = 0
    for event in sequence:
        previous = est.rto
        if event is None:
            est.on_timeout()
            assert est.rto == min(2 * previous, est.rto_max)
        else:
            una += 100
            est.sample(event, snd_una=una, snd_nxt=una + 100)
            assert est.backoff == 0
            assert est.rto >= min(est.rto_max, est.srtt + est.rto_min) - 1e-6
        assert 0 < est.rto <= est.rto_max


@given(st.lists(rtts, min_size=1, max_size=30), st.integers(0, SEQ_MASK))
def test_sequence_numbers_only_matter_relative_to_each_other(samples, shift):
    """The flight bookkeeping uses modular comparisons: shifting every number across the wrap
    changes nothing."""
    plain, shifted = RttEstimator(), RttEstimator()
    for i, rtt in enumerate(samples):
        una, nxt = 1000 + 700 * (i // 3), 3000 + 700 * i  # several samples per flight
        plain.sample(rtt, una, nxt)
        shifted.sample(rtt, seq_add(una, shift), seq_add(nxt, shift))
        assert (plain.rto, plain.srtt, plain.rttvar) == (shifted.rto, shifted.srtt, shifted.rttvar)


@given(st.lists(st.floats(0.001, 10.0, allow_nan=False), min_size=1, max_size=50))
def test_srtt_and_rttvar_follow_rfc_6298_while_the_rtt_never_falls(samples):
    """With non-decreasing samples Linux's damping never applies: SRTT and RTTVAR are RFC
    6298 2.3's, up to microsecond truncation."""
    samples.sort()
    est = RttEstimator()
    srtt = rttvar = None
    for i, r in enumerate(samples):
        r = round(r * 1e6) / 1e6
        est.sample(r, snd_una=i + 1, snd_nxt=i + 1)
        if srtt is None:
            srtt, rttvar = r, r / 2
        else:
            rttvar = 0.75 * rttvar + 0.25 * abs(srtt - r)
            srtt = 0.875 * srtt + 0.125 * r
        assert est.srtt == pytest.approx(srtt, abs=2e-6)
        assert est.rttvar == pytest.approx(rttvar, abs=2e-6)


# -- tcp_model_timeout ---------------------------------------------------------------------


@pytest.mark.parametrize(
    "boundary, rto_base, seconds",
    [
        (0, 0.2, 0.2),
        (1, 0.2, 0.6),
        (9, 0.2, 204.6),  # the last doubling: 200 ms << 9 = 102.4 s < 120 s
        (10, 0.2, 324.6),
        (15, 0.2, 924.6),  # tcp_retries2's default: about 15.4 minutes
        (6, 1.0, 127.0),  # tcp_syn_retries' default: connect() gives up after 127 s
    ],
)
def test_retries_timeout_is_linux_model_timeout(boundary, rto_base, seconds):
    assert retries_timeout(boundary, rto_base) == pytest.approx(seconds)


def test_retries_timeout_rejects_a_negative_count():
    with pytest.raises(ValueError):
        retries_timeout(-1)
