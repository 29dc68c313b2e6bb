"""Sequence arithmetic modulo 2**32 and RFC 6528 ISNs (nodes/tcp/seq.py)."""
from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from nodes.tcp.seq import (
    ISN_CLOCK_TICK,
    SEQ_MASK,
    IsnGenerator,
    ack_acceptable,
    after,
    before,
    between,
    linux_sequence_acceptable,
    segment_acceptable,
    seq_add,
    seq_diff,
    seq_ge,
    seq_gt,
    seq_in_window,
    seq_le,
    seq_lt,
    seq_sub,
)
from nodes.wire.addresses import IPv4Address

seqs = st.integers(0, SEQ_MASK)
# Distances a real connection can produce: below 2**31 (the ambiguous half-way point excluded).
distances = st.integers(1, (1 << 31) - 1)
# Numbers near the wrap, where a plain `<` goes wrong.
near_wrap = st.integers(-70_000, 70_000).map(lambda d: d & SEQ_MASK)


# -- arithmetic ----------------------------------------------------------------------------


def test_add_and_sub_wrap_at_2_to_the_32():
    assert seq_add(SEQ_MASK, 1) == 0
    assert seq_add(SEQ_MASK - 9, 20) == 10
    assert seq_sub(5, 10) == SEQ_MASK - 4
    assert seq_add(0, -1) == SEQ_MASK


def test_diff_is_signed_across_the_wrap():
    assert seq_diff(5, SEQ_MASK - 4) == 10
    assert seq_diff(SEQ_MASK - 4, 5) == -10
    assert seq_diff(7, 7) == 0
    assert seq_diff(1 << 31, 0) == -(1 << 31)  # the half-way point is read as negative, like (s32)


@given(seqs, st.integers(-(1 << 31), (1 << 31) - 1))
def test_diff_undoes_add(a, n):
    assert seq_diff(seq_add(a, n), a) == n


@given(seqs, st.integers(0, SEQ_MASK))
def test_sub_undoes_add(a, n):
    assert seq_sub(seq_add(a, n), n) == a
    assert 0 <= seq_add(a, n) <= SEQ_MASK


# -- comparisons ---------------------------------------------------------------------------


def test_comparisons_across_the_wrap():
    top, bottom = SEQ_MASK - 1, 3
    assert seq_lt(top, bottom) and seq_le(top, bottom)
    assert seq_gt(bottom, top) and seq_ge(bottom, top)
    assert not seq_lt(bottom, top) and not seq_gt(top, bottom)
    assert seq_le(bottom, bottom) and seq_ge(bottom, bottom)
    assert not seq_lt(bottom, bottom) and not seq_gt(bottom, bottom)


def test_linux_names_are_the_same_functions():
    assert before(SEQ_MASK, 0) and after(0, SEQ_MASK)
    assert not before(0, SEQ_MASK)


def test_numbers_half_the_space_apart_are_each_before_the_other_as_in_linux():
    # (s32)(a - b) < 0 and (s32)(b - a) < 0 both hold when |a - b| == 2**31.
    a, b = 10, 10 + (1 << 31)
    assert seq_lt(a, b) and seq_lt(b, a)
    assert seq_gt(a, b) and seq_gt(b, a)


@given(seqs, distances)
def test_order_follows_the_distance_wherever_the_wrap_falls(a, d):
    b = seq_add(a, d)
    assert seq_lt(a, b) and seq_le(a, b) and not seq_ge(a, b) and not seq_gt(a, b)
    assert seq_gt(b, a) and seq_ge(b, a) and not seq_le(b, a) and not seq_lt(b, a)


@given(seqs, seqs)
def test_exactly_one_of_less_equal_greater_away_from_the_half_way_point(a, b):
    if seq_sub(a, b) == 1 << 31:
        return
    assert [seq_lt(a, b), a == b, seq_gt(a, b)].count(True) == 1
    assert seq_le(a, b) == (seq_lt(a, b) or a == b)
    assert seq_ge(a, b) == (seq_gt(a, b) or a == b)


@given(near_wrap, st.integers(1, 60_000), st.integers(1, 60_000))
def test_order_is_transitive_within_a_window_at_the_wrap(a, d1, d2):
    b = seq_add(a, d1)
    c = seq_add(b, d2)
    assert seq_lt(a, b) and seq_lt(b, c) and seq_lt(a, c)


# -- between and windows -------------------------------------------------------------------


def test_between_is_inclusive_and_wraps():
    assert between(SEQ_MASK, SEQ_MASK - 1, 2)
    assert between(0, SEQ_MASK - 1, 2)
    assert between(2, SEQ_MASK - 1, 2)
    assert between(SEQ_MASK - 1, SEQ_MASK - 1, 2)
    assert not between(3, SEQ_MASK - 1, 2)
    assert not between(SEQ_MASK - 2, SEQ_MASK - 1, 2)


def test_between_holds_for_ranges_longer_than_half_the_space():
    low, high = 100, seq_add(100, 3 << 30)
    middle = seq_add(100, 1 << 31)
    assert between(middle, low, high)
    assert not (seq_le(low, middle) and seq_le(middle, high))  # what two comparisons would say


@given(seqs, st.integers(0, SEQ_MASK), st.integers(0, SEQ_MASK))
def test_between_is_offset_within_length(low, length, offset):
    high = seq_add(low, length)
    assert between(seq_add(low, offset), low, high) == (offset <= length)


@given(seqs, st.integers(0, 1 << 30), st.integers(0, 1 << 31))
def test_in_window_is_half_open(left, size, offset):
    assert seq_in_window(seq_add(left, offset), left, size) == (offset < size)


def test_in_window_at_the_wrap():
    left = SEQ_MASK - 99
    assert seq_in_window(left, left, 200)
    assert seq_in_window(0, left, 200)
    assert seq_in_window(99, left, 200)
    assert not seq_in_window(100, left, 200)
    assert not seq_in_window(left - 1, left, 200)
    assert not seq_in_window(left, left, 0)


# -- RFC 9293 3.4: acceptable segments -----------------------------------------------------

RCV_NXT = SEQ_MASK - 9  # the window straddles the wrap in every case below


@pytest.mark.parametrize(
    "seg_seq_offset, seg_len, rcv_wnd, acceptable",
    [
        # length 0, window 0: only SEG.SEQ = RCV.NXT
        (0, 0, 0, True),
        (1, 0, 0, False),
        (-1, 0, 0, False),
        # length 0, window > 0: RCV.NXT =< SEG.SEQ < RCV.NXT+RCV.WND
        (0, 0, 20, True),
        (19, 0, 20, True),
        (20, 0, 20, False),
        (-1, 0, 20, False),
        # length > 0, window 0: never
        (0, 1, 0, False),
        (0, 100, 0, False),
        # length > 0, window > 0: first or last octet in the window
        (0, 5, 20, True),
        (19, 5, 20, True),  # starts in the window, runs past it
        (-4, 5, 20, True),  # starts before, last octet is RCV.NXT
        (-5, 5, 20, False),  # ends just before RCV.NXT: all old
        (20, 1, 20, False),  # starts at the right edge
        (-10, 100, 20, False),  # covers the window but neither end is in it (RFC's letter)
    ],
)
def test_segment_acceptability_table(seg_seq_offset, seg_len, rcv_wnd, acceptable):
    seg_seq = seq_add(RCV_NXT, seg_seq_offset)
    assert segment_acceptable(seg_seq, seg_len, RCV_NXT, rcv_wnd) is acceptable


def test_segment_acceptability_rejects_negative_lengths():
    with pytest.raises(ValueError):
        segment_acceptable(0, -1, 0, 10)
    with pytest.raises(ValueError):
        segment_acceptable(0, 1, 0, -10)


@given(seqs, st.integers(0, 1 << 16), st.integers(1, 1 << 30), st.integers(-(1 << 20), 1 << 20))
def test_acceptability_is_translation_invariant(rcv_nxt, seg_len, rcv_wnd, offset):
    """Moving everything by the same amount (across the wrap or not) never changes the answer."""
    seg_seq = seq_add(rcv_nxt, offset)
    shift = 1 << 31
    assert segment_acceptable(seg_seq, seg_len, rcv_nxt, rcv_wnd) == segment_acceptable(
        seq_add(seg_seq, shift), seg_len, seq_add(rcv_nxt, shift), rcv_wnd
    )
    # And it matches the table computed on plain integers.
    first_in = 0 <= offset < rcv_wnd
    last_in = 0 <= offset + seg_len - 1 < rcv_wnd
    expected = first_in if seg_len == 0 else (first_in or last_in)
    assert segment_acceptable(seg_seq, seg_len, rcv_nxt, rcv_wnd) == expected


def test_linux_accepts_what_ends_after_rcv_wup_and_starts_at_most_at_the_right_edge():
    rcv_wup, rcv_nxt, window = SEQ_MASK - 99, SEQ_MASK - 49, 100
    # ends between rcv_wup and rcv_nxt: old for the RFC, kept by Linux for its ACK
    assert linux_sequence_acceptable(rcv_wup, seq_add(rcv_wup, 10), rcv_wup, rcv_nxt, window)
    assert not segment_acceptable(rcv_wup, 10, rcv_nxt, window)
    # ends before rcv_wup: dropped
    assert not linux_sequence_acceptable(seq_sub(rcv_wup, 20), seq_sub(rcv_wup, 1), rcv_wup, rcv_nxt, window)
    # a pure ACK at the right edge, past the wrap
    edge = seq_add(rcv_nxt, window)
    assert edge < rcv_nxt  # the edge wrapped
    assert linux_sequence_acceptable(edge, edge, rcv_wup, rcv_nxt, window)
    assert not segment_acceptable(edge, 0, rcv_nxt, window)
    assert not linux_sequence_acceptable(seq_add(edge, 1), seq_add(edge, 1), rcv_wup, rcv_nxt, window)


def test_ack_acceptable_is_snd_una_exclusive_snd_nxt_inclusive():
    snd_una, snd_nxt = SEQ_MASK - 4, 5
    assert not ack_acceptable(snd_una, snd_una, snd_nxt)
    assert ack_acceptable(seq_add(snd_una, 1), snd_una, snd_nxt)
    assert ack_acceptable(0, snd_una, snd_nxt)
    assert ack_acceptable(snd_nxt, snd_una, snd_nxt)
    assert not ack_acceptable(6, snd_una, snd_nxt)


# -- RFC 6528 ISNs -------------------------------------------------------------------------

H1, H2 = IPv4Address("10.0.0.1"), IPv4Address("10.0.1.2")


def test_isn_is_deterministic_for_a_secret_and_differs_between_secrets():
    one, same, other = IsnGenerator(b"k" * 16), IsnGenerator(b"k" * 16), IsnGenerator(b"j" * 16)
    assert one.isn(H1, 40000, H2, 80, 12.5) == same.isn(H1, 40000, H2, 80, 12.5)
    assert one.isn(H1, 40000, H2, 80, 12.5) != other.isn(H1, 40000, H2, 80, 12.5)


def test_isn_advances_one_per_4_microseconds_for_one_tuple():
    gen = IsnGenerator(b"secret")
    first = gen.isn(H1, 40000, H2, 80, 100.0)
    assert seq_diff(gen.isn(H1, 40000, H2, 80, 100.0 + 1.0), first) == 250_000
    assert seq_diff(gen.isn(H1, 40000, H2, 80, 100.0 + 1000 * ISN_CLOCK_TICK), first) == 1000


def test_isn_wraps_modulo_2_to_the_32_after_about_4_77_hours():
    gen = IsnGenerator(b"secret")
    period = (1 << 32) * ISN_CLOCK_TICK
    assert 4.77 * 3600 < period < 4.78 * 3600
    a = gen.isn(H1, 1, H2, 2, 0.0)
    assert gen.isn(H1, 1, H2, 2, period) == a
    assert 0 <= gen.isn(H1, 1, H2, 2, period * 7.3) <= SEQ_MASK


def test_isn_depends_on_every_field_of_the_tuple():
    gen = IsnGenerator(b"secret")
    base = gen.isn(H1, 40000, H2, 80, 5.0)
    variants = [
        gen.isn(H2, 40000, H1, 80, 5.0),  # addresses swapped
        gen.isn(H1, 40001, H2, 80, 5.0),
        gen.isn(H1, 40000, H2, 81, 5.0),
        gen.isn(H1, 80, H2, 40000, 5.0),  # ports swapped
        gen.isn(IPv4Address("10.0.0.3"), 40000, H2, 80, 5.0),
    ]
    assert base not in variants
    assert len(set(variants)) == len(variants)


@given(st.integers(0, SEQ_MASK), st.integers(0, 0xFFFF), st.integers(0, SEQ_MASK), st.integers(0, 0xFFFF),
       st.floats(0, 1e9, allow_nan=False))
def test_isn_is_a_32_bit_number(saddr, sport, daddr, dport, now):
    assert 0 <= IsnGenerator(b"x").isn(saddr, sport, daddr, dport, now) <= SEQ_MASK


def test_isn_misuse_raises_value_error():
    gen = IsnGenerator(b"secret")
    with pytest.raises(ValueError):
        gen.isn(H1, 70000, H2, 80, 0.0)
    with pytest.raises(ValueError):
        gen.isn(1 << 32, 1, H2, 80, 0.0)
    with pytest.raises(ValueError):
        IsnGenerator(b"")
    with pytest.raises(ValueError):
        IsnGenerator(b"x" * 33)


def test_random_secrets_differ():
    a, b = IsnGenerator.with_random_secret(), IsnGenerator.with_random_secret()
    assert a.isn(H1, 1, H2, 2, 0.0) != b.isn(H1, 1, H2, 2, 0.0)


def test_timestamp_offset_is_per_address_pair_and_not_the_isn_hash():
    gen = IsnGenerator(b"secret")
    off = gen.timestamp_offset(H1, H2)
    assert off == gen.timestamp_offset(H1, H2)
    assert off != gen.timestamp_offset(H2, H1)
    assert 0 <= off <= SEQ_MASK
    assert off != gen.isn(H1, 0, H2, 0, 0.0)
    with pytest.raises(ValueError):
        gen.timestamp_offset(-1, H2)
