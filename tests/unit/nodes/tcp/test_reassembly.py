"""The receive queue: in-order data, the out-of-order queue, duplicates, limits, SACK blocks."""
from __future__ import annotations

import random

from hypothesis import given, settings
from hypothesis import strategies as st

from nodes.tcp.reassembly import (
    Arrival,
    ReassemblyStats,
    ReceiveQueue,
    max_sack_blocks,
)

ISN = 1000
PAYLOAD = bytes(range(256)) * 40


def chunk(offset: int, length: int) -> bytes:
    return PAYLOAD[offset:offset + length]


def test_in_order_segments_advance_rcv_nxt_and_are_readable():
    queue = ReceiveQueue(ISN, buffer_size=4096)
    assert queue.receive(ISN, chunk(0, 100)) == Arrival(in_order=100)
    assert queue.receive(ISN + 100, chunk(100, 50)) == Arrival(in_order=50)
    assert queue.rcv_nxt == ISN + 150
    assert queue.readable == 150
    assert queue.read(60) == chunk(0, 60)
    assert queue.read() == chunk(60, 90)
    assert queue.readable == 0
    assert queue.sack_blocks() == []


def test_receive_window_is_the_buffer_less_unread_bytes_and_reading_reopens_it():
    queue = ReceiveQueue(ISN, buffer_size=1000)
    queue.receive(ISN, chunk(0, 300))
    assert (queue.receive_window, queue.free_space) == (700, 700)
    queue.receive(ISN + 500, chunk(500, 100))
    # Out-of-order bytes lie inside the window: its right edge stays put, memory is used.
    assert (queue.receive_window, queue.free_space) == (700, 600)
    queue.read(300)
    assert (queue.receive_window, queue.free_space) == (1000, 900)


def test_out_of_order_segment_waits_until_the_gap_fills():
    queue = ReceiveQueue(ISN, buffer_size=4096)
    arrival = queue.receive(ISN + 100, chunk(100, 100))
    assert arrival == Arrival(out_of_order=100)
    assert queue.rcv_nxt == ISN
    assert queue.readable == 0
    assert queue.ofo_bytes == 100
    arrival = queue.receive(ISN, chunk(0, 100))
    assert arrival == Arrival(in_order=200, filled_gap=True)
    assert queue.rcv_nxt == ISN + 200
    assert queue.read() == chunk(0, 200)
    assert queue.ofo_bytes == 0
    assert queue.stats.TCPOFOQueue == 1


def test_adjacent_out_of_order_segments_coalesce_into_one_block():
    queue = ReceiveQueue(ISN, buffer_size=4096)
    queue.receive(ISN + 300, chunk(300, 100))
    queue.receive(ISN + 100, chunk(100, 100))
    queue.receive(ISN + 200, chunk(200, 100))
    assert queue.ofo_segments == 1
    assert queue.sack_blocks() == [(ISN + 100, ISN + 400)]


def test_duplicate_below_rcv_nxt_is_dsacked_once():
    queue = ReceiveQueue(ISN, buffer_size=4096)
    queue.receive(ISN, chunk(0, 200))
    arrival = queue.receive(ISN + 50, chunk(50, 100))
    assert arrival == Arrival(duplicate=100)
    assert queue.sack_blocks() == [(ISN + 50, ISN + 150)]
    queue.clear_dsack()
    assert queue.sack_blocks() == []
    assert queue.stats.TCPDSACKOldSent == 1
    assert queue.read() == chunk(0, 200)


def test_segment_straddling_rcv_nxt_keeps_only_its_new_tail():
    queue = ReceiveQueue(ISN, buffer_size=4096)
    queue.receive(ISN, chunk(0, 100))
    arrival = queue.receive(ISN + 60, chunk(60, 100))
    assert arrival == Arrival(in_order=60, duplicate=40)
    assert queue.read() == chunk(0, 160)
    assert queue.sack_blocks() == [(ISN + 60, ISN + 100)]


def test_out_of_order_duplicate_is_dropped_and_its_block_reported_first():
    queue = ReceiveQueue(ISN, buffer_size=4096)
    queue.receive(ISN + 100, chunk(100, 100))
    queue.receive(ISN + 300, chunk(300, 100))
    arrival = queue.receive(ISN + 120, chunk(120, 50))
    assert arrival == Arrival(duplicate=50)
    assert queue.stats.TCPOFOMerge == 1
    assert queue.ofo_bytes == 200
    # RFC 2883: the D-SACK block, then the block holding it (the most recent segment).
    assert queue.sack_blocks() == [(ISN + 120, ISN + 170), (ISN + 100, ISN + 200),
                                   (ISN + 300, ISN + 400)]


def test_overlapping_segment_fills_only_the_hole_and_dsacks_the_overlap():
    queue = ReceiveQueue(ISN, buffer_size=4096)
    queue.receive(ISN + 100, chunk(100, 100))
    queue.receive(ISN + 300, chunk(300, 100))
    arrival = queue.receive(ISN + 150, chunk(150, 200))   # covers 150..350
    assert arrival == Arrival(out_of_order=100, duplicate=100)
    assert queue.ofo_segments == 1
    assert queue.ofo_bytes == 300
    blocks = queue.sack_blocks()
    assert blocks[0] == (ISN + 150, ISN + 200)   # first overlap wins (one D-SACK block)
    assert blocks[1:] == [(ISN + 100, ISN + 400)]
    queue.clear_dsack()
    queue.receive(ISN, chunk(0, 100))
    assert queue.read() == chunk(0, 400)


def test_in_order_segment_covering_queued_data_dsacks_it_and_pulls_the_rest():
    queue = ReceiveQueue(ISN, buffer_size=4096)
    queue.receive(ISN + 100, chunk(100, 100))
    arrival = queue.receive(ISN, chunk(0, 150))
    assert arrival == Arrival(in_order=200, duplicate=50, filled_gap=True)
    assert queue.sack_blocks() == [(ISN + 100, ISN + 150)]
    assert queue.read() == chunk(0, 200)


def test_data_beyond_the_receive_buffer_is_cut():
    queue = ReceiveQueue(ISN, buffer_size=300)
    queue.receive(ISN, chunk(0, 200))
    arrival = queue.receive(ISN + 200, chunk(200, 200))
    assert arrival == Arrival(in_order=100, dropped=100)
    assert queue.receive_window == 0
    assert queue.receive(ISN + 300, chunk(300, 10)) == Arrival(dropped=10)
    assert queue.stats.TCPRcvQDrop == 2


def test_queue_limit_prunes_the_highest_runs_first():
    queue = ReceiveQueue(ISN, buffer_size=10000, ofo_limit=300)
    queue.receive(ISN + 1000, chunk(1000, 100))
    queue.receive(ISN + 2000, chunk(2000, 100))
    queue.receive(ISN + 3000, chunk(3000, 100))
    arrival = queue.receive(ISN + 500, chunk(500, 100))
    # tcp_prune_ofo_queue: the run farthest from RCV.NXT goes to make room.
    assert arrival == Arrival(out_of_order=100)
    assert queue.stats.OfoPruned == 1
    assert sorted(queue.sack_blocks()) == [(ISN + 500, ISN + 600), (ISN + 1000, ISN + 1100),
                                           (ISN + 2000, ISN + 2100)]


def test_queue_limit_drops_a_segment_above_everything_queued():
    queue = ReceiveQueue(ISN, buffer_size=10000, ofo_limit=250)
    queue.receive(ISN + 100, chunk(100, 100))
    queue.receive(ISN + 300, chunk(300, 100))
    arrival = queue.receive(ISN + 600, chunk(600, 100))
    assert arrival == Arrival(out_of_order=50, dropped=50)
    assert queue.ofo_bytes == 250
    assert queue.stats.TCPOFODrop == 1
    assert queue.stats.OfoPruned == 0
    assert queue.sack_blocks()[0] == (ISN + 600, ISN + 650)


def test_sack_blocks_most_recent_first_and_at_most_the_limit():
    queue = ReceiveQueue(ISN, buffer_size=10000)
    for start in (100, 300, 500, 700, 900):
        queue.receive(ISN + start, chunk(start, 50))
    assert queue.sack_blocks(4) == [(ISN + 900, ISN + 950), (ISN + 700, ISN + 750),
                                    (ISN + 500, ISN + 550), (ISN + 300, ISN + 350)]
    # A segment extending an old block makes it the first again (RFC 2018 section 4).
    queue.receive(ISN + 150, chunk(150, 50))
    assert queue.sack_blocks(max_sack_blocks(timestamps=True)) == [
        (ISN + 100, ISN + 200), (ISN + 900, ISN + 950), (ISN + 700, ISN + 750)]
    assert max_sack_blocks(timestamps=False) == 4


def test_blocks_at_or_below_rcv_nxt_are_never_reported():
    queue = ReceiveQueue(ISN, buffer_size=10000)
    queue.receive(ISN + 100, chunk(100, 100))
    queue.receive(ISN + 300, chunk(300, 100))
    queue.receive(ISN, chunk(0, 100))
    assert queue.sack_blocks() == [(ISN + 300, ISN + 400)]


def test_dsack_disabled_reports_no_duplicate_block():
    queue = ReceiveQueue(ISN, buffer_size=1000, dsack=False)
    queue.receive(ISN, chunk(0, 100))
    queue.receive(ISN, chunk(0, 100))
    assert queue.sack_blocks() == []
    assert queue.stats == ReassemblyStats()


def test_fin_in_order_advances_rcv_nxt_by_one():
    queue = ReceiveQueue(ISN, buffer_size=1000)
    arrival = queue.receive(ISN, chunk(0, 10), fin=True)
    assert arrival == Arrival(in_order=10, fin=True)
    assert queue.rcv_nxt == ISN + 11
    assert queue.fin_received
    # The retransmitted FIN is a duplicate.
    assert queue.receive(ISN, chunk(0, 10), fin=True).fin is False


def test_out_of_order_fin_is_delivered_when_the_gap_fills():
    queue = ReceiveQueue(ISN, buffer_size=1000)
    assert queue.receive(ISN + 10, chunk(10, 10), fin=True).fin is False
    assert not queue.fin_received
    arrival = queue.receive(ISN, chunk(0, 10))
    assert arrival == Arrival(in_order=20, filled_gap=True, fin=True)
    assert queue.rcv_nxt == ISN + 21
    assert queue.read() == chunk(0, 20)


def test_bare_fin_is_accepted_with_a_zero_window():
    queue = ReceiveQueue(ISN, buffer_size=10)
    queue.receive(ISN, chunk(0, 10))
    assert queue.receive_window == 0
    assert queue.receive(ISN + 10, b"", fin=True) == Arrival(fin=True)


def test_bytes_after_the_fin_are_dropped():
    queue = ReceiveQueue(ISN, buffer_size=1000)
    queue.receive(ISN + 10, b"", fin=True)
    queue.receive(ISN, chunk(0, 30))
    assert queue.rcv_nxt == ISN + 11
    assert queue.read() == chunk(0, 10)


def test_stats_are_exact_after_a_mixed_sequence():
    queue = ReceiveQueue(ISN, buffer_size=1000)
    queue.receive(ISN + 100, chunk(100, 100))   # ofo
    queue.receive(ISN + 100, chunk(100, 100))   # ofo duplicate
    queue.receive(ISN, chunk(0, 100))           # fills the gap
    queue.receive(ISN, chunk(0, 50))            # old duplicate
    assert queue.stats == ReassemblyStats(TCPOFOQueue=1, TCPOFOMerge=1, TCPDSACKOfoSent=1,
                                          TCPDSACKOldSent=1)


def test_sequence_space_wraps_across_zero():
    start = 2**32 - 150
    queue = ReceiveQueue(start, buffer_size=4096)
    queue.receive((start + 200) % 2**32, chunk(200, 100))
    assert queue.sack_blocks() == [(50, 150)]
    queue.receive(start, chunk(0, 200))
    assert queue.rcv_nxt == 150
    assert queue.read() == chunk(0, 300)


@settings(max_examples=60, deadline=None)
@given(isn=st.one_of(st.integers(2**32 - 4000, 2**32 - 1), st.integers(0, 2**32 - 1)),
       seed=st.integers(0, 2**16),
       ofo_limit=st.sampled_from([None, 700, 2000]))
def test_any_arrival_order_with_duplicates_delivers_the_stream_exactly(isn, seed, ofo_limit):
    """Whatever order, overlap and duplication, the reader sees the stream once, in order."""
    rng = random.Random(seed)
    total = 3000
    cuts = sorted(rng.sample(range(1, total), 25))
    segments = [(a, b) for a, b in zip([0] + cuts, cuts + [total])]
    segments += [(max(0, a - rng.randint(0, 80)), min(total, b + rng.randint(0, 80)))
                 for a, b in rng.sample(segments, 10)]
    queue = ReceiveQueue(isn, buffer_size=4096, ofo_limit=ofo_limit)
    received = bytearray()
    pending = list(segments)
    while queue.rcv_nxt != (isn + total) % 2**32:
        rng.shuffle(pending)
        for a, b in pending:
            queue.receive((isn + a) % 2**32, chunk(a, b - a))
            queue.clear_dsack()
            blocks = queue.sack_blocks()
            assert len(blocks) <= 4
            for left, right in blocks:   # every SACK block lies wholly above RCV.NXT
                assert 0 < (left - queue.rcv_nxt) % 2**32 < (right - queue.rcv_nxt) % 2**32
            assert queue.ofo_bytes <= (ofo_limit or 4096)
            received += queue.read(rng.randint(0, 500))
    received += queue.read()
    assert bytes(received) == chunk(0, total)
