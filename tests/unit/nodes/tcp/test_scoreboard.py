"""The SACK scoreboard: loss marking, pipe, NextSeg's rules, recovery and RTO bookkeeping."""
from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from nodes.tcp.scoreboard import NextSegment, Scoreboard, ScoreboardStats

ISS = 5000
MSS = 100


def sent(segments: int = 10, iss: int = ISS, mss: int = MSS) -> Scoreboard:
    """A scoreboard after `segments` full segments went out from `iss`."""
    board = Scoreboard(iss, mss)
    for index in range(segments):
        board.on_transmit((iss + index * mss) % 2**32, mss)
    return board


def sack(board: Scoreboard, *ranges: tuple[int, int], ack: int | None = None):
    """An ACK at SND.UNA (or `ack`) carrying SACK blocks given as offsets from ISS."""
    blocks = [((ISS + a) % 2**32, (ISS + b) % 2**32) for a, b in ranges]
    return board.on_ack(board.snd_una if ack is None else ack, blocks)


def test_transmissions_move_high_data():
    board = sent(10)
    assert board.high_data == ISS + 1000
    assert board.pipe() == 1000
    assert board.next_seg() is None


def test_sacked_ranges_merge_and_count_newly_sacked_bytes():
    board = sent(10)
    assert sack(board, (200, 300)).newly_sacked == 100
    assert sack(board, (300, 400), (200, 300)).newly_sacked == 100
    assert board.sacked_ranges() == [(ISS + 200, ISS + 400)]
    assert board.sacked_bytes == 200


def test_one_sacked_segment_above_is_not_loss():
    board = sent(10)
    sack(board, (100, 200))
    assert not board.is_lost(ISS)


def test_more_than_two_segments_sacked_above_mark_loss():
    board = sent(10)
    sack(board, (100, 300))
    assert not board.is_lost(ISS)                # exactly (DupThresh - 1) * SMSS: not yet
    sack(board, (300, 301))
    assert board.is_lost(ISS)
    assert not board.is_lost(ISS + 150)          # SACKed bytes are never lost
    assert not board.is_lost(ISS + 400)          # nothing SACKed above


def test_three_discontiguous_sacked_runs_mark_loss_whatever_their_size():
    board = Scoreboard(ISS, mss=1000)
    board.on_transmit(ISS, 1000)
    sack(board, (100, 110), (300, 310))
    assert not board.is_lost(ISS)
    sack(board, (500, 510))
    assert board.is_lost(ISS)
    assert board.is_lost(ISS + 50)
    assert not board.is_lost(ISS + 200)          # only two runs above it


def test_pipe_leaves_out_sacked_and_lost_bytes_and_counts_retransmissions():
    board = sent(10)
    sack(board, (100, 400))
    assert board.is_lost(ISS)
    assert board.pipe() == 600                  # 400..1000 in flight; 0..100 lost
    board.enter_recovery()
    board.on_transmit(ISS, 100)                  # the retransmission of the lost segment
    assert board.high_rxt == ISS + 100
    assert board.pipe() == 700


def test_duplicate_acks_are_counted_and_trigger_recovery():
    board = sent(10)
    for start in (100, 150, 200):
        assert sack(board, (start, start + 50)).duplicate
    assert board.dup_acks == 3
    assert not board.is_lost(ISS)                # 150 bytes SACKed: IsLost alone would wait
    assert board.should_enter_recovery
    # An ACK without new SACK information is no duplicate (RFC 6675 section 2).
    assert not sack(board, (100, 250)).duplicate


def test_is_lost_alone_triggers_recovery():
    board = sent(10)
    sack(board, (100, 400))
    assert board.dup_acks == 1
    assert board.should_enter_recovery


def test_cumulative_ack_forgets_sacked_ranges_below_it():
    board = sent(10)
    sack(board, (100, 300))
    info = board.on_ack(ISS + 200)
    assert info.acked == 200
    assert board.sacked_ranges() == [(ISS + 200, ISS + 300)]
    assert board.dup_acks == 0


def test_next_seg_rule_1_retransmits_the_first_lost_hole_up_to_the_sacked_data():
    board = sent(10)
    sack(board, (60, 400))
    board.enter_recovery()
    assert board.next_seg() == NextSegment(ISS, 60, 1)
    board.on_transmit(ISS, 60)
    assert board.next_seg() is None or board.next_seg().rule != 1


def test_next_seg_rule_2_sends_new_data_within_the_window():
    board = sent(10)
    sack(board, (100, 400))
    board.enter_recovery()
    board.on_transmit(ISS, 100)
    assert board.next_seg(unsent=500, window_end=ISS + 1050) == NextSegment(ISS + 1000, 50, 2)
    assert board.next_seg(unsent=30) == NextSegment(ISS + 1000, 30, 2)


def test_next_seg_rule_3_retransmits_a_hole_below_sacked_data_not_yet_lost():
    board = sent(10)
    sack(board, (100, 400), (600, 700))
    board.enter_recovery()
    board.on_transmit(ISS, 100)
    assert not board.is_lost(ISS + 400)
    assert board.next_seg(unsent=0) == NextSegment(ISS + 400, 100, 3)
    board.on_transmit(ISS + 400, 100)
    assert board.next_seg(unsent=0) == NextSegment(ISS + 500, 100, 3)


def test_next_seg_rule_4_rescues_the_tail_once_per_recovery():
    board = sent(10)
    sack(board, (100, 400))
    board.enter_recovery()
    board.on_transmit(ISS, 100)
    rescue = board.next_seg(unsent=0)
    assert rescue == NextSegment(ISS + 900, 100, 4)
    board.on_transmit(rescue.seq, rescue.length, rescue=True)
    assert board.high_rxt == ISS + 100          # rule 4 leaves HighRxt alone
    assert board.rescue_rxt == board.recovery_point == ISS + 1000
    assert board.next_seg(unsent=0) is None


def test_recovery_ends_when_the_recovery_point_is_acknowledged():
    board = sent(10)
    sack(board, (100, 400))
    board.enter_recovery()
    assert board.recovery_point == ISS + 1000
    board.on_transmit(ISS + 1000, 100)           # new data during recovery
    assert not board.on_ack(ISS + 900).recovery_ended
    assert board.on_ack(ISS + 1000).recovery_ended
    assert not board.in_recovery


def test_rto_keeps_sacks_marks_the_rest_lost_and_restarts_from_snd_una():
    board = sent(10)
    sack(board, (200, 300))
    board.enter_recovery()
    board.on_transmit(ISS, 100)
    assert board.on_rto() is False
    assert board.sacked_ranges() == [(ISS + 200, ISS + 300)]
    assert not board.in_recovery
    assert board.pipe() == 0                     # everything unSACKed is lost, none resent
    assert board.next_seg() == NextSegment(ISS, 100, 1)
    board.on_transmit(ISS, 100)
    assert board.pipe() == 100
    assert board.next_seg() == NextSegment(ISS + 100, 100, 1)
    # RFC 6675 section 5.1: no new recovery until the RTO's RecoveryPoint is acknowledged.
    for start in (400, 500, 600):
        sack(board, (start, start + 10))
    assert not board.should_enter_recovery


def test_rto_clears_the_scoreboard_when_the_receiver_reneged():
    board = sent(10)
    sack(board, (0, 100), (200, 300))           # SND.UNA itself SACKed, yet not ACKed
    assert board.on_rto() is True
    assert board.sacked_ranges() == []
    assert board.stats.TCPSACKReneging == 1


def test_dsack_blocks_are_reported_and_left_off_the_scoreboard():
    board = sent(10)
    board.on_ack(ISS + 300)
    info = sack(board, (100, 200))               # below the cumulative ACK
    assert info.dsack == (ISS + 100, ISS + 200)
    info = sack(board, (500, 550), (500, 700))   # inside the second block
    assert info.dsack == (ISS + 500, ISS + 550)
    assert board.sacked_ranges() == [(ISS + 500, ISS + 700)]
    assert board.stats.TCPDSACKRecv == 2


def test_invalid_sack_blocks_are_discarded():
    board = sent(10)
    sack(board, (900, 1100), (300, 200))
    assert board.sacked_ranges() == []
    assert board.stats == ScoreboardStats(TCPSACKDiscard=2)


def test_ack_beyond_snd_nxt_is_the_callers_mistake():
    board = sent(1)
    with pytest.raises(ValueError):
        board.on_ack(ISS + 200)


def test_scoreboard_works_across_the_wrap():
    iss = 2**32 - 250
    board = Scoreboard(iss, MSS)
    for index in range(5):
        board.on_transmit((iss + index * MSS) % 2**32, MSS)
    blocks = [((iss + 100) % 2**32, (iss + 400) % 2**32)]
    board.on_ack(iss, blocks)
    assert board.sacked_ranges() == blocks
    assert board.is_lost(iss)
    board.enter_recovery()
    assert board.next_seg() == NextSegment(iss, 100, 1)
    board.on_ack((iss + 400) % 2**32)
    assert board.snd_una == 150
    assert board.sacked_ranges() == []


def _rfc_is_lost(sacked: set[int], seq: int, high: int, mss: int) -> bool:
    """RFC 6675 IsLost, octet by octet: DupThresh runs, or > 2 * SMSS SACKed, above `seq`."""
    above = [octet for octet in range(seq + 1, high) if octet in sacked]
    runs = sum(1 for octet in above if octet - 1 not in sacked)
    return runs >= 3 or len(above) > 2 * mss


@settings(max_examples=80, deadline=None)
@given(iss=st.one_of(st.integers(2**32 - 300, 2**32 - 1), st.integers(0, 2**32 - 1)),
       blocks=st.lists(st.tuples(st.integers(0, 199), st.integers(1, 40)), max_size=6),
       retransmitted=st.integers(0, 60))
def test_is_lost_pipe_and_rule_1_match_the_rfc_octet_by_octet(iss, blocks, retransmitted):
    mss = 10
    board = Scoreboard(iss, mss)
    board.on_transmit(iss, 200)
    sack_blocks = [((iss + a) % 2**32, (iss + min(a + n, 200)) % 2**32) for a, n in blocks]
    board.on_ack(iss, sack_blocks)
    sacked = {offset for start, end in board.sacked_ranges()
              for offset in range((start - iss) % 2**32, (end - iss) % 2**32)}
    board.enter_recovery()
    if retransmitted:
        board.on_transmit(iss, retransmitted)
    lost = {octet for octet in range(200)
            if octet not in sacked and _rfc_is_lost(sacked, octet, 200, mss)}
    for octet in range(0, 200, 7):
        assert board.is_lost((iss + octet) % 2**32) == (octet in lost)
    expected_pipe = sum((octet not in lost) + (octet < retransmitted)
                        for octet in range(200) if octet not in sacked)
    assert board.pipe() == expected_pipe
    rule_1 = [octet for octet in sorted(lost) if octet >= retransmitted]
    segment = board.next_seg()
    if rule_1:
        assert segment is not None and segment.rule == 1
        assert segment.seq == (iss + rule_1[0]) % 2**32
    else:
        assert segment is None or segment.rule != 1
