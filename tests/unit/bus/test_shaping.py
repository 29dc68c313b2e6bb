"""Shaper: tbf-like serialization, netem delay/jitter/loss/duplicate/corrupt/reorder, queue, up/down.

Fake clock and seeded RNGs throughout; statistical checks use 4-sigma
binomial bounds, so they pin the rate without being flaky for the seeds used.
"""
from __future__ import annotations

import math
import random

import pytest

from bus.shaping import LinkParamError, LinkParams, Shaper


def make(seed: int = 1, **canonical) -> Shaper:
    return Shaper(LinkParams(**canonical), random.Random(seed))


def frames(count: int, size: int = 100) -> list[bytes]:
    """Distinct frames: the index in the first 4 bytes, so order can be checked."""
    return [i.to_bytes(4, "big") + bytes(size - 4) for i in range(count)]


def index(frame: bytes) -> int:
    return int.from_bytes(frame[:4], "big")


def drain(shaper: Shaper) -> list[tuple[float, bytes]]:
    """(departure time, frame) for everything held, stepping the fake clock deadline by deadline."""
    out = []
    while (deadline := shaper.next_deadline()) is not None:
        ready = shaper.pop_ready(deadline)
        assert ready, "next_deadline promised a frame"
        out.extend((deadline, frame) for frame in ready)
    return out


def within_binomial(count: int, trials: int, probability: float, sigmas: float = 4.0) -> bool:
    mean = trials * probability
    sigma = math.sqrt(trials * probability * (1 - probability))
    return abs(count - mean) <= sigmas * sigma


def burst_lengths(lost: list[bool]) -> list[int]:
    bursts, run = [], 0
    for flag in lost:
        if flag:
            run += 1
        elif run:
            bursts.append(run)
            run = 0
    if run:
        bursts.append(run)
    return bursts


# --- serialization (rate) -----------------------------------------------------------------

def test_back_to_back_frames_depart_at_exact_serialization_intervals():
    shaper = make(rate=10_000_000)                  # 10 Mbit/s: 1500 B take 1.2 ms
    for frame in frames(5, size=1500):
        shaper.offer(frame, 1.0)
    departures = [t for t, _ in drain(shaper)]
    assert departures == pytest.approx([1.0 + 0.0012 * k for k in range(1, 6)], abs=1e-12)


def test_serialization_time_scales_with_frame_length():
    shaper = make(rate=8_000)                       # 1 byte per millisecond
    shaper.offer(bytes(64), 0.0)
    shaper.offer(bytes(1000), 0.0)
    assert [t for t, _ in drain(shaper)] == pytest.approx([0.064, 1.064], abs=1e-12)


def test_an_idle_link_builds_no_burst_credit():
    shaper = make(rate=10_000_000)
    shaper.offer(bytes(1500), 0.0)
    assert shaper.pop_ready(0.0012) == [bytes(1500)]
    # Long idle, then two frames at once: tbf with a one-frame bucket sends them 1.2 ms apart.
    shaper.offer(bytes(1500), 5.0)
    shaper.offer(bytes(1500), 5.0)
    assert [t for t, _ in drain(shaper)] == pytest.approx([5.0012, 5.0024], abs=1e-12)


def test_a_frame_arriving_while_the_wire_is_busy_waits_for_it():
    shaper = make(rate=10_000_000)
    shaper.offer(bytes(1500), 0.0)                  # on the wire until 1.2 ms
    shaper.offer(bytes(1500), 0.0005)               # starts at 1.2 ms, not at 0.5 ms
    assert [t for t, _ in drain(shaper)] == pytest.approx([0.0012, 0.0024], abs=1e-12)


# --- delay line ---------------------------------------------------------------------------

def test_every_frame_departs_delay_after_it_was_offered():
    shaper = make(delay=0.010)
    sent = frames(20)
    for k, frame in enumerate(sent):
        shaper.offer(frame, k * 0.001)
    out = drain(shaper)
    assert [frame for _, frame in out] == sent
    assert [t for t, _ in out] == pytest.approx([k * 0.001 + 0.010 for k in range(20)], abs=1e-12)


def test_nothing_leaves_before_its_departure_time():
    shaper = make(delay=0.010)
    shaper.offer(b"a" * 60, 1.0)
    assert shaper.pop_ready(1.0099) == []
    assert shaper.next_deadline() == pytest.approx(1.010)
    assert shaper.pop_ready(1.010) == [b"a" * 60]
    assert shaper.next_deadline() is None
    assert shaper.pop_ready(2.0) == []


def test_delay_is_added_after_serialization():
    shaper = make(rate=10_000_000, delay=0.005)
    shaper.offer(bytes(1500), 0.0)
    shaper.offer(bytes(1500), 0.0)
    assert [t for t, _ in drain(shaper)] == pytest.approx([0.0062, 0.0074], abs=1e-12)


# --- jitter -------------------------------------------------------------------------------

def test_jitter_stays_within_bounds_and_never_reorders():
    shaper = make(seed=7, delay=0.010, jitter=0.004, queue=10**6)
    sent = frames(2000)
    offered_at = {}
    for k, frame in enumerate(sent):
        now = k * 0.0005                             # 0.5 ms apart: jitter would reorder if allowed
        offered_at[index(frame)] = now
        shaper.offer(frame, now)
    out = drain(shaper)
    assert [frame for _, frame in out] == sent       # order kept
    extra = [t - offered_at[index(frame)] for t, frame in out]
    assert all(0.006 - 1e-12 <= e <= 0.014 + 1e-12 for e in extra)
    assert max(extra) - min(extra) > 0.006           # the jitter is really there


def test_jitter_is_uniform_around_the_delay_when_frames_are_far_apart():
    shaper = make(seed=3, delay=0.050, jitter=0.010)
    extra = []
    for k in range(4000):
        now = k * 1.0                                # far apart: the in-order clamp never bites
        shaper.offer(b"x" * 60, now)
        deadline = shaper.next_deadline()
        extra.append(deadline - now)
        shaper.pop_ready(deadline)
    mean = sum(extra) / len(extra)
    assert mean == pytest.approx(0.050, abs=4 * 0.010 / math.sqrt(3) / math.sqrt(4000))
    # uniform on [-j, j] has standard deviation j / sqrt(3)
    deviation = math.sqrt(sum((e - mean) ** 2 for e in extra) / len(extra))
    assert deviation == pytest.approx(0.010 / math.sqrt(3), rel=0.05)
    assert min(extra) >= 0.040 and max(extra) <= 0.060


def test_jitter_larger_than_delay_never_departs_before_serialization_ends():
    shaper = make(seed=5, rate=1_000_000, delay=0.001, jitter=0.010)
    for k in range(500):
        shaper.offer(bytes(125), k * 1.0)            # 1 ms on the wire
        deadline = shaper.next_deadline()
        assert deadline >= k * 1.0 + 0.001 - 1e-12
        shaper.pop_ready(deadline)


# --- reorder ------------------------------------------------------------------------------

def test_reorder_sends_the_configured_share_immediately():
    trials, share = 10_000, 0.25
    shaper = make(seed=11, delay=0.010, reorder=share, queue=10**6)
    sent = frames(trials)
    offered_at = {}
    for k, frame in enumerate(sent):
        offered_at[index(frame)] = k * 0.001
        shaper.offer(frame, k * 0.001)
    out = drain(shaper)
    immediate = sum(1 for t, frame in out if t == offered_at[index(frame)])
    delayed = sum(1 for t, frame in out if t == pytest.approx(offered_at[index(frame)] + 0.010, abs=1e-12))
    assert immediate + delayed == trials
    assert shaper.counters["reordered"] == immediate
    assert within_binomial(immediate, trials, share)
    received = [index(frame) for _, frame in out]
    assert received != sorted(received)              # really out of order
    assert sorted(received) == list(range(trials))   # nothing lost or duplicated


def test_without_reorder_frames_keep_their_order():
    shaper = make(seed=2, rate=50_000_000, delay=0.003, jitter=0.002, loss=0.1, duplicate=0.1, queue=10**6)
    for k, frame in enumerate(frames(3000)):
        shaper.offer(frame, k * 0.0001)
    received = [index(frame) for _, frame in drain(shaper)]
    assert received == sorted(received)
    assert shaper.counters["reordered"] == 0


def test_reorder_needs_a_delay_to_overtake():
    shaper = make(seed=1, reorder=0.5)
    for k, frame in enumerate(frames(100)):
        shaper.offer(frame, k * 0.001)
    assert [index(f) for _, f in drain(shaper)] == list(range(100))
    assert shaper.counters["reordered"] == 0


def test_a_reordered_frame_still_waits_for_the_wire():
    shaper = make(seed=1, rate=10_000_000, delay=0.010, reorder=1.0)
    shaper.offer(bytes(1500), 0.0)
    shaper.offer(bytes(1500), 0.0)
    assert [t for t, _ in drain(shaper)] == pytest.approx([0.0012, 0.0024], abs=1e-12)


# --- loss ---------------------------------------------------------------------------------

def offer_and_record_losses(shaper: Shaper, trials: int) -> list[bool]:
    lost = []
    for k in range(trials):
        before = shaper.dropped_loss
        shaper.offer(b"x" * 60, float(k))
        lost.append(shaper.dropped_loss != before)
        shaper.pop_ready(float(k))
    return lost


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_loss_rate_within_binomial_bounds(seed):
    shaper = make(seed=seed, loss=0.05)
    lost = offer_and_record_losses(shaper, 10_000)
    assert within_binomial(sum(lost), 10_000, 0.05)
    assert shaper.counters["dropped_loss"] == sum(lost)
    assert shaper.counters["tx_packets"] == 10_000 - sum(lost)


def test_correlated_loss_is_burstier_at_the_same_rate():
    trials, loss, correlation = 50_000, 0.10, 0.5
    independent = offer_and_record_losses(make(seed=4, loss=loss), trials)
    bursty = offer_and_record_losses(make(seed=4, loss=loss, loss_correlation=correlation), trials)
    mean_independent = sum(burst_lengths(independent)) / len(burst_lengths(independent))
    mean_bursty = sum(burst_lengths(bursty)) / len(burst_lengths(bursty))
    # Markov chain: mean burst 1/((1-c)(1-p)) = 2.22 frames against 1/(1-p) = 1.11 without correlation.
    assert mean_independent == pytest.approx(1 / (1 - loss), rel=0.05)
    assert mean_bursty == pytest.approx(1 / ((1 - correlation) * (1 - loss)), rel=0.08)
    # ... and the loss rate stays what was asked (bursts widen the spread: tolerance 10%).
    assert sum(bursty) / trials == pytest.approx(loss, rel=0.10)


def test_total_loss_drops_everything_and_no_loss_drops_nothing():
    assert all(offer_and_record_losses(make(loss=1.0), 200))
    assert not any(offer_and_record_losses(make(loss=0.0), 200))


def test_the_same_seed_replays_the_same_losses():
    first = offer_and_record_losses(make(seed=9, loss=0.2, loss_correlation=0.3), 500)
    second = offer_and_record_losses(make(seed=9, loss=0.2, loss_correlation=0.3), 500)
    assert first == second
    shaper = make(seed=123, loss=0.2, loss_correlation=0.3)
    shaper.set_seed(9)
    assert offer_and_record_losses(shaper, 500) == first


# --- duplicate and corrupt ----------------------------------------------------------------

def test_duplicate_rate_and_copies_follow_the_original():
    trials = 10_000
    shaper = make(seed=6, duplicate=0.10, delay=0.001, queue=10**6)
    for k, frame in enumerate(frames(trials)):
        shaper.offer(frame, k * 0.01)
    received = [index(frame) for _, frame in drain(shaper)]
    duplicated = shaper.counters["duplicated"]
    assert within_binomial(duplicated, trials, 0.10)
    assert len(received) == trials + duplicated
    assert received == sorted(received)              # each copy right behind its original
    assert sum(1 for a, b in zip(received, received[1:]) if a == b) == duplicated


def test_duplicate_copy_takes_its_own_turn_on_the_wire():
    shaper = make(seed=1, duplicate=1.0, rate=10_000_000)
    shaper.offer(bytes(1500), 0.0)
    assert [t for t, _ in drain(shaper)] == pytest.approx([0.0012, 0.0024], abs=1e-12)
    assert shaper.counters["tx_packets"] == 2


def test_corrupt_flips_exactly_one_bit_at_the_configured_rate():
    trials = 10_000
    shaper = make(seed=8, corrupt=0.05)
    original = bytes(range(64))
    kept = bytes(original)
    flipped_bits = []
    for k in range(trials):
        shaper.offer(original, float(k))
        (out,) = shaper.pop_ready(float(k))
        difference = int.from_bytes(out, "big") ^ int.from_bytes(original, "big")
        assert bin(difference).count("1") in (0, 1)
        if difference:
            assert len(out) == len(original)
            flipped_bits.append(difference.bit_length())
    assert original == kept                          # the caller's frame is untouched
    assert shaper.counters["corrupted"] == len(flipped_bits)
    assert within_binomial(len(flipped_bits), trials, 0.05)


def test_corrupted_bits_cover_the_whole_frame():
    shaper = make(seed=10, corrupt=1.0)
    original = bytes(16)
    seen = set()
    for k in range(2000):
        shaper.offer(original, float(k))
        (out,) = shaper.pop_ready(float(k))
        seen.add(int.from_bytes(out, "big").bit_length())
    assert seen == set(range(1, 129))                # every one of the 128 bits gets hit


def test_an_empty_frame_cannot_be_corrupted():
    shaper = make(corrupt=1.0)
    shaper.offer(b"", 0.0)
    assert shaper.pop_ready(0.0) == [b""]
    assert shaper.counters["corrupted"] == 0


# --- queue limit --------------------------------------------------------------------------

def test_queue_limit_tail_drops_counting_frames_in_the_delay_line():
    shaper = make(queue=5, delay=1.0)
    sent = frames(8)
    for frame in sent:
        shaper.offer(frame, 0.0)
    assert shaper.counters["dropped_queue"] == 3
    assert shaper.counters["backlog"] == 5
    assert shaper.pop_ready(1.0) == sent[:5]        # the first five, the tail was dropped
    shaper.offer(sent[7], 1.0)                      # room again
    assert shaper.counters["backlog"] == 1


def test_queue_limit_counts_frames_waiting_for_the_wire():
    shaper = make(queue=3, rate=8_000)
    for frame in frames(5, size=10):
        shaper.offer(frame, 0.0)
    assert (shaper.backlog, shaper.counters["dropped_queue"]) == (3, 2)


def test_a_duplicate_that_finds_the_queue_full_is_tail_dropped():
    shaper = make(seed=1, queue=1, duplicate=1.0, delay=0.1)
    shaper.offer(b"a" * 60, 0.0)
    assert shaper.counters == {
        "tx_packets": 0, "tx_bytes": 0, "dropped_down": 0, "dropped_queue": 1, "dropped_loss": 0,
        "duplicated": 0, "corrupted": 0, "reordered": 0, "backlog": 1,
    }


# --- up / down ----------------------------------------------------------------------------

def test_down_drops_everything_and_up_restores():
    shaper = make(delay=0.010)
    shaper.offer(b"a" * 60, 0.0)
    shaper.offer(b"b" * 60, 0.0)
    shaper.update(up=False)
    assert shaper.backlog == 0                      # frames on the wire are lost with it
    shaper.offer(b"c" * 60, 0.001)
    assert shaper.pop_ready(1.0) == []
    assert shaper.counters["dropped_down"] == 3
    shaper.update(up=True)
    shaper.offer(b"d" * 60, 2.0)
    assert shaper.pop_ready(2.010) == [b"d" * 60]
    assert shaper.counters["dropped_down"] == 3


def test_setting_down_twice_counts_held_frames_once():
    shaper = make(delay=0.010)
    shaper.offer(b"a" * 60, 0.0)
    shaper.update(up=False)
    shaper.update(up=False, delay=0.02)
    assert shaper.counters["dropped_down"] == 1


# --- run-time updates ---------------------------------------------------------------------

def test_update_delay_to_zero_removes_it_for_new_frames_only():
    shaper = make(delay=0.100)
    shaper.offer(b"old" + bytes(57), 0.0)
    shaper.update(delay=0.0)
    shaper.offer(b"new" + bytes(57), 0.001)
    assert shaper.pop_ready(0.001) == [b"new" + bytes(57)]   # not stuck behind the old frame
    assert shaper.next_deadline() == pytest.approx(0.100)    # the old one keeps its time
    assert shaper.pop_ready(0.100) == [b"old" + bytes(57)]


def test_update_rate_to_zero_removes_serialization_for_new_frames():
    shaper = make(rate=8_000)                        # 1 byte per millisecond
    shaper.offer(bytes(1000), 0.0)                   # leaves at 1.0 s
    shaper.update(rate=0)
    shaper.offer(bytes(10), 0.5)
    assert shaper.pop_ready(0.5) == [bytes(10)]
    assert shaper.pop_ready(1.0) == [bytes(1000)]


@pytest.mark.parametrize("impairment", [{"loss": 1.0}, {"duplicate": 1.0}, {"corrupt": 1.0}, {"jitter": 0.5}])
def test_update_back_to_zero_really_removes_the_impairment(impairment):
    shaper = make(seed=3, **impairment)
    key = next(iter(impairment))
    shaper.update(**{key: 0.0})
    sent = frames(50)
    for k, frame in enumerate(sent):
        shaper.offer(frame, k * 0.001)
        assert shaper.pop_ready(k * 0.001) == [frame]
    assert shaper.params == LinkParams()


def test_update_of_a_non_timing_parameter_keeps_the_order():
    shaper = make(seed=12, delay=0.010, jitter=0.005, queue=10**6)
    for k, frame in enumerate(frames(400)):
        if k == 200:
            shaper.update(loss=0.0, corrupt=0.0, queue=2000)
        shaper.offer(frame, k * 0.0001)
    received = [index(f) for _, f in drain(shaper)]
    assert received == list(range(400))


def test_update_rejects_bad_values_and_keeps_the_old_ones():
    shaper = make(delay=0.010)
    with pytest.raises(LinkParamError):
        shaper.update(loss=5)
    with pytest.raises(LinkParamError):
        shaper.update(dealy=0.1)
    assert shaper.params == LinkParams(delay=0.010)


def test_set_params_replaces_everything():
    shaper = make(delay=0.010, loss=0.5)
    shaper.set_params(LinkParams(rate=8_000))
    shaper.offer(bytes(10), 0.0)
    assert drain(shaper) == [(pytest.approx(0.010), bytes(10))]


# --- passthrough, counters, deadlines -----------------------------------------------------

def test_passthrough_only_without_impairments():
    shaper = make()
    assert shaper.passthrough
    for key, value in [("rate", 1000), ("delay", 0.001), ("jitter", 0.001), ("loss", 0.01),
                       ("duplicate", 0.01), ("corrupt", 0.01), ("reorder", 0.01)]:
        shaper.update(**{key: value})
        assert not shaper.passthrough, key
        shaper.update(**{key: 0})
        assert shaper.passthrough, key
    shaper.update(up=False, queue=10, mtu=9000, loss_correlation=0.5)
    assert shaper.passthrough                        # device-level knobs need no shaper


def test_passthrough_waits_until_held_frames_are_out():
    shaper = make(delay=0.010)
    shaper.offer(b"a" * 60, 0.0)
    shaper.update(delay=0.0)
    assert not shaper.passthrough                    # the device must keep draining us
    shaper.pop_ready(0.010)
    assert shaper.passthrough


def test_counters_count_what_left():
    shaper = make(delay=0.001)
    shaper.offer(bytes(100), 0.0)
    shaper.offer(bytes(60), 0.0)
    assert shaper.counters["backlog"] == 2 and shaper.counters["tx_packets"] == 0
    shaper.pop_ready(0.001)
    assert shaper.counters == {
        "tx_packets": 2, "tx_bytes": 160, "dropped_down": 0, "dropped_queue": 0, "dropped_loss": 0,
        "duplicated": 0, "corrupted": 0, "reordered": 0, "backlog": 0,
    }


def test_next_deadline_sees_overtaking_frames():
    shaper = make(delay=0.100)
    shaper.offer(b"slow" + bytes(56), 0.0)
    shaper.update(delay=0.010)
    shaper.offer(b"fast" + bytes(56), 0.001)
    assert shaper.next_deadline() == pytest.approx(0.011)
    assert shaper.pop_ready(0.011) == [b"fast" + bytes(56)]
    assert shaper.next_deadline() == pytest.approx(0.100)


def test_frames_due_at_once_come_out_in_departure_order():
    stepped, at_once = (make(seed=1, delay=0.010, reorder=0.5) for _ in range(2))
    for k, frame in enumerate(frames(200)):
        stepped.offer(frame, k * 0.0001)
        at_once.offer(frame, k * 0.0001)
    out = drain(stepped)
    batch = at_once.pop_ready(10.0)                  # everything at once: same order as stepping
    assert [index(f) for f in batch] == [index(f) for _, f in out]


def test_default_construction_is_a_passthrough_with_a_fixed_seed():
    shaper = Shaper()
    assert shaper.passthrough and shaper.params == LinkParams()
