"""IPv4 fragmentation and reassembly: RFC 791 boundaries, Linux ipq rules, fake clock, scapy as oracle."""
from __future__ import annotations

import dataclasses
import errno
import itertools
import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from nodes.ip_fragment import (
    FRAGMENT_OVERHEAD,
    ExpiredQueue,
    FragmentationNeeded,
    Outcome,
    ReassemblyQueues,
    copied_options,
    fragment,
)
from nodes.wire.addresses import IPv4Address
from nodes.wire.ipv4 import IPv4Header

A = IPv4Address
UDP = 17
PAYLOAD = bytes(random.Random(4).getrandbits(8) for _ in range(4000))
# Options: loose source route (type 131, copied), record route (7, not copied), NOP (not copied).
LSRR = bytes([131, 7, 4]) + A("10.0.9.1").packed
RECORD_ROUTE = bytes([7, 7, 4]) + bytes(4)
OPTIONS = LSRR + RECORD_ROUTE + bytes([1])


def header(**changes) -> IPv4Header:
    base = IPv4Header(A("10.0.1.10"), A("10.0.2.10"), UDP, identification=0x1234)
    return dataclasses.replace(base, **changes)


def wire_round_trip(pieces):
    """Serialise and parse every fragment, as a receiver sees them."""
    out = []
    for piece_header, data in pieces:
        raw = piece_header.build(data)
        parsed = IPv4Header.parse(raw, verify_checksum=True)
        out.append((parsed, raw[parsed.header_length:parsed.total_length]))
    return out


def reassemble(pieces, queues: ReassemblyQueues | None = None, now: float = 0.0):
    queues = queues or ReassemblyQueues()
    results = [queues.add(h, d, now) for h, d in pieces]
    return queues, results


# ------------------------------------------------------------------ fragment()


@pytest.mark.parametrize("mtu", [68, 69, 75, 296, 576, 577, 1006, 1280, 1499, 1500, 2000])
def test_fragments_fit_the_mtu_and_carry_multiples_of_8(mtu):
    pieces = fragment(header(ttl=9, tos=0x20), PAYLOAD, mtu)
    data_room = (mtu - 20) & ~7
    assert len(pieces) == -(-len(PAYLOAD) // data_room)
    position = 0
    for index, (piece, data) in enumerate(pieces):
        last = index == len(pieces) - 1
        assert piece.total_length == 20 + len(data) <= mtu
        assert piece.fragment_offset == position
        assert piece.more_fragments is not last
        assert len(data) == (len(PAYLOAD) - position if last else data_room)
        assert (piece.identification, piece.src, piece.dst, piece.protocol, piece.ttl, piece.tos) == \
            (0x1234, A("10.0.1.10"), A("10.0.2.10"), UDP, 9, 0x20)
        position += len(data)
    assert b"".join(bytes(d) for _, d in pieces) == PAYLOAD


def test_fragment_data_are_slices_of_the_payload_not_copies():
    payload = bytearray(PAYLOAD)
    pieces = fragment(header(), payload, 1500)
    assert all(data.obj is payload for _, data in pieces)
    payload[1480] = payload[1480] ^ 0xFF
    assert pieces[1][1][0] == payload[1480]


def test_datagram_that_fits_comes_back_unchanged():
    original = header()
    [(piece, data)] = fragment(original, PAYLOAD[:1480], 1500)
    assert piece is original
    assert bytes(data) == PAYLOAD[:1480]


def test_dont_fragment_raises_fragmentation_needed_with_the_mtu():
    with pytest.raises(FragmentationNeeded) as info:
        fragment(header(dont_fragment=True), PAYLOAD, 1500)
    assert (info.value.mtu, info.value.errno) == (1500, errno.EMSGSIZE)
    assert fragment(header(dont_fragment=True), PAYLOAD[:1480], 1500)[0][0].dont_fragment


def test_mtu_below_the_ipv4_minimum_is_refused():
    with pytest.raises(ValueError):
        fragment(header(), PAYLOAD, 67)
    with pytest.raises(ValueError):  # 60-byte header: 68 leaves exactly 8 bytes, 67 none
        fragment(header(options=bytes([1]) * 40), PAYLOAD, 67)
    assert len(fragment(header(options=bytes([1]) * 40), PAYLOAD[:16], 68)) == 2


def test_refragmenting_a_middle_fragment_keeps_offset_base_and_mf():
    middle = fragment(header(), PAYLOAD, 1500)[1]
    pieces = fragment(middle[0], middle[1], 576)
    assert [p.fragment_offset for p, _ in pieces] == [1480, 2032, 2584]
    assert [p.more_fragments for p, _ in pieces] == [True, True, True]
    assert sum(len(d) for _, d in pieces) == 1480


def test_refragmenting_the_last_fragment_clears_mf_only_on_its_last_piece():
    last = fragment(header(), PAYLOAD, 1500)[-1]
    pieces = fragment(last[0], last[1], 576)
    assert [p.fragment_offset for p, _ in pieces] == [2960, 3512]
    assert [p.more_fragments for p, _ in pieces] == [True, False]


def test_copied_options_keep_only_options_with_the_copy_flag():
    security = bytes([130, 11]) + bytes(9)
    assert copied_options(OPTIONS) == LSRR
    assert copied_options(RECORD_ROUTE + security + bytes([0, 0])) == security
    assert copied_options(bytes([1, 1, 0, 0])) == b""


def test_first_fragment_keeps_all_options_later_ones_only_copied_ones():
    pieces = fragment(header(options=OPTIONS), PAYLOAD[:200], 100)
    first, *later = [p for p, _ in pieces]
    assert (first.options, first.header_length) == (OPTIONS, 36)
    assert all(p.options == LSRR and p.header_length == 28 for p in later)
    # Room for data is computed from each fragment's own header length.
    assert [len(d) for _, d in pieces] == [64, 72, 64]
    assert all(p.total_length <= 100 for p in (first, *later))


def test_fragments_with_options_survive_the_wire_and_reassemble():
    pieces = wire_round_trip(fragment(header(options=OPTIONS), PAYLOAD, 576))
    assert pieces[0][0].options == OPTIONS + bytes(1)  # padded to a multiple of 4 on the wire
    assert pieces[1][0].options == LSRR + bytes(1)
    _, results = reassemble(pieces)
    datagram = results[-1].datagram
    assert datagram is not None
    assert datagram[0].options == OPTIONS + bytes(1)
    assert datagram[1] == PAYLOAD


# ------------------------------------------------------------------ scapy as oracle


def test_fragments_match_scapy_fragment():
    from scapy.all import IP, Raw, fragment as scapy_fragment, raw

    packet = IP(src="10.0.1.10", dst="10.0.2.10", id=0x1234, proto=UDP) / Raw(PAYLOAD)
    expected = [IP(raw(f)) for f in scapy_fragment(packet, fragsize=1480)]
    ours = [IP(h.build(d)) for h, d in fragment(header(), PAYLOAD, 1500)]
    assert [(p.frag, int(p.flags), p.len, raw(p.payload)) for p in ours] == \
        [(p.frag, int(p.flags), p.len, raw(p.payload)) for p in expected]


def test_scapy_defragments_our_fragments():
    from scapy.all import IP, defragment, raw

    pieces = fragment(header(), PAYLOAD, 576)
    [whole] = defragment([IP(h.build(d)) for h, d in pieces])  # scapy wants them in order
    assert raw(whole[IP].payload) == PAYLOAD


def test_we_reassemble_scapy_fragments():
    from scapy.all import IP, Raw, fragment as scapy_fragment, raw

    packet = IP(src="10.0.1.10", dst="10.0.2.10", id=9, proto=UDP) / Raw(PAYLOAD)
    received = []
    for piece in scapy_fragment(packet, fragsize=552):
        parsed = IPv4Header.parse(raw(piece), verify_checksum=True)
        received.append((parsed, raw(piece)[parsed.header_length:parsed.total_length]))
    _, results = reassemble(received[::-1])
    assert results[-1].datagram[1] == PAYLOAD


# ------------------------------------------------------------------ reassembly orders


FOUR = wire_round_trip(fragment(header(), PAYLOAD[:2000], 556))  # 536 + 536 + 536 + 392


def test_four_fragments_reassemble_in_every_order():
    assert [len(d) for _, d in FOUR] == [536, 536, 536, 392]
    queues = ReassemblyQueues()
    for order in itertools.permutations(FOUR):
        results = [queues.add(h, d, 0.0) for h, d in order]
        assert [r.outcome for r in results] == [Outcome.QUEUED] * 3 + [Outcome.COMPLETE]
        reassembled_header, payload = results[-1].datagram
        assert payload == PAYLOAD[:2000]
        assert (reassembled_header.more_fragments, reassembled_header.fragment_offset,
                reassembled_header.total_length) == (False, 0, 2020)
    assert queues.counters == {"ReasmReqds": 96, "ReasmOKs": 24, "ReasmFails": 0, "ReasmTimeout": 0,
                               "ReasmOverlaps": 0, "ReasmDuplicates": 0}
    assert (len(queues), queues.memory) == (0, 0)


def test_reassembled_datagram_rebuilds_to_the_original_bytes():
    original = header(ttl=17, tos=0x10)
    _, results = reassemble(wire_round_trip(fragment(original, PAYLOAD, 1500))[::-1])
    reassembled_header, payload = results[-1].datagram
    assert reassembled_header.build(payload) == original.build(PAYLOAD)


def test_shuffled_with_duplicates_completes_once_and_ignores_exact_duplicates():
    rng = random.Random(7)
    pieces = wire_round_trip(fragment(header(), PAYLOAD, 296))
    stream = pieces + rng.sample(pieces, 10)
    rng.shuffle(stream)
    queues = ReassemblyQueues()
    results = [queues.add(h, d, 0.0) for h, d in stream]
    complete = [r for r in results if r.outcome is Outcome.COMPLETE]
    assert len(complete) == 1 and complete[0].payload == PAYLOAD
    after = results.index(complete[0])
    before = results[:after]
    duplicates_before = len(before) - len({h.fragment_offset for h, _ in stream[:after]})
    assert sum(r.outcome is Outcome.DUPLICATE for r in before) == duplicates_before
    # Duplicates arriving after completion open a new queue that will time out.
    assert queues.counters["ReasmOKs"] == 1
    assert queues.counters["ReasmReqds"] == len(stream)
    assert queues.counters["ReasmFails"] == 0


def test_exact_duplicate_is_ignored_and_not_counted_as_failure():
    queues = ReassemblyQueues()
    assert queues.add(*FOUR[1], 0.0).outcome is Outcome.QUEUED
    assert queues.add(*FOUR[1], 0.0).outcome is Outcome.DUPLICATE
    assert queues.memory == 536 + FRAGMENT_OVERHEAD
    assert queues.counters == {"ReasmReqds": 2, "ReasmOKs": 0, "ReasmFails": 0, "ReasmTimeout": 0,
                               "ReasmOverlaps": 0, "ReasmDuplicates": 1}


def test_datagrams_with_different_keys_do_not_mix():
    queues = ReassemblyQueues()
    other_id = [(dataclasses.replace(h, identification=0x4321), d) for h, d in FOUR]
    other_protocol = [(dataclasses.replace(h, protocol=6), d) for h, d in FOUR]
    for trio in zip(FOUR[:3], other_id[:3], other_protocol[:3]):
        for h, d in trio:
            assert queues.add(h, d, 0.0).outcome is Outcome.QUEUED
    assert len(queues) == 3
    assert queues.add(*other_protocol[3], 0.0).datagram[0].protocol == 6
    assert len(queues) == 2


# ------------------------------------------------------------------ drops


def piece_at(offset: int, length: int, more: bool = True, **changes):
    return header(fragment_offset=offset, more_fragments=more, **changes), PAYLOAD[offset:offset + length]


@pytest.mark.parametrize("second", [
    pytest.param(piece_at(8, 16), id="overlaps the start of the next"),
    pytest.param(piece_at(16, 40), id="same offset longer"),
    pytest.param(piece_at(8, 64), id="covers"),
    pytest.param(piece_at(8, 24), id="starts before, ends inside"),
    pytest.param(piece_at(40, 16, more=False), id="last overlapping the end"),
])
def test_overlapping_fragment_drops_the_whole_datagram(second):
    assert (second[0].fragment_offset, len(second[1])) != (16, 32), "an exact duplicate is not an overlap"
    queues = ReassemblyQueues()
    assert queues.add(*piece_at(16, 32), 0.0).outcome is Outcome.QUEUED
    result = queues.add(*second, 0.0)
    assert (result.outcome, result.reason) == (Outcome.DROPPED, "overlap")
    assert (len(queues), queues.memory) == (0, 0)
    assert queues.counters == {"ReasmReqds": 2, "ReasmOKs": 0, "ReasmFails": 1, "ReasmTimeout": 0,
                               "ReasmOverlaps": 1, "ReasmDuplicates": 0}


def test_after_an_overlap_drop_the_remaining_fragments_cannot_complete():
    queues = ReassemblyQueues()
    queues.add(*FOUR[0], 0.0)
    queues.add(*piece_at(520, 100), 0.0)
    results = [queues.add(h, d, 0.0) for h, d in FOUR[1:]]
    assert all(r.outcome is Outcome.QUEUED for r in results)
    assert queues.counters["ReasmOKs"] == 0


@pytest.mark.parametrize("pieces", [
    pytest.param([piece_at(8, 40, more=False), piece_at(8, 48, more=False)], id="two lasts disagree"),
    pytest.param([piece_at(48, 8, more=False), piece_at(48, 16)], id="data beyond the known end"),
    pytest.param([piece_at(64, 8), piece_at(8, 16, more=False)], id="last ends before data seen"),
    pytest.param([piece_at(8, 4)], id="non-last shorter than 8"),
])
def test_inconsistent_lengths_drop_the_datagram(pieces):
    queues = ReassemblyQueues()
    results = [queues.add(h, d, 0.0) for h, d in pieces]
    assert (results[-1].outcome, results[-1].reason) == (Outcome.DROPPED, "inconsistent length")
    assert queues.counters["ReasmFails"] == 1 and queues.counters["ReasmOverlaps"] == 0
    assert len(queues) == 0


def test_non_last_fragment_is_trimmed_to_a_multiple_of_8():
    queues = ReassemblyQueues()
    assert queues.add(*piece_at(0, 13), 0.0).outcome is Outcome.QUEUED
    result = queues.add(*piece_at(8, 8, more=False), 0.0)
    assert result.payload == PAYLOAD[:16]


def test_datagram_longer_than_65535_bytes_is_dropped():
    queues = ReassemblyQueues()
    big = header(fragment_offset=65528, more_fragments=False)
    result = queues.add(big, bytes(100), 0.0)
    assert (result.outcome, result.reason) == (Outcome.DROPPED, "oversize")
    assert queues.counters["ReasmFails"] == 1
    # Fits only without options: 65515 data bytes plus a 24-byte first header is too long.
    queues.add(header(options=bytes(4), more_fragments=True), bytes(65512), 0.0)
    result = queues.add(header(fragment_offset=65512, more_fragments=False), bytes(3), 0.0)
    assert (result.outcome, result.reason) == (Outcome.DROPPED, "oversize")
    assert queues.counters["ReasmFails"] == 2 and len(queues) == 0


def test_a_whole_datagram_is_not_a_fragment():
    with pytest.raises(ValueError):
        ReassemblyQueues().add(header(), PAYLOAD[:100], 0.0)


# ------------------------------------------------------------------ timeout


def test_queue_expires_after_ipfrag_time_from_its_first_fragment_with_fragment_zero():
    queues = ReassemblyQueues()
    queues.add(*FOUR[0], 100.0)
    queues.add(*FOUR[2], 110.0)  # later fragments do not extend the timer
    assert queues.next_timer() == 130.0
    assert queues.tick(129.9) == []
    [expired] = queues.tick(130.0)
    assert isinstance(expired, ExpiredQueue)
    assert expired.key == (A("10.0.1.10"), A("10.0.2.10"), UDP, 0x1234)
    assert expired.first_header.fragment_offset == 0 and expired.first_header.more_fragments
    assert expired.quoted() == FOUR[0][0].build(FOUR[0][1])  # ip_expire hands icmp_send all of fragment 0
    assert expired.quoted(8) == FOUR[0][0].build(FOUR[0][1])[:28]
    assert queues.counters == {"ReasmReqds": 2, "ReasmOKs": 0, "ReasmFails": 1, "ReasmTimeout": 1,
                               "ReasmOverlaps": 0, "ReasmDuplicates": 0}
    assert (len(queues), queues.memory, queues.next_timer()) == (0, 0, None)


def test_queue_without_fragment_zero_expires_without_a_quote():
    queues = ReassemblyQueues(ipfrag_time=5.0)
    queues.add(*FOUR[3], 0.0)
    [expired] = queues.tick(5.0)
    assert (expired.first_header, expired.first_payload, expired.quoted()) == (None, None, None)


def test_tick_expires_only_the_queues_that_are_due():
    queues = ReassemblyQueues()
    late = [(dataclasses.replace(h, identification=2), d) for h, d in FOUR]
    queues.add(*FOUR[0], 0.0)
    queues.add(*late[0], 20.0)
    assert [e.key[3] for e in queues.tick(35.0)] == [0x1234]
    assert queues.next_timer() == 50.0
    assert [r.outcome for r in (queues.add(h, d, 40.0) for h, d in late[1:])] == \
        [Outcome.QUEUED, Outcome.QUEUED, Outcome.COMPLETE]
    assert queues.next_timer() is None


def test_table_lists_queues_for_the_control_endpoint():
    queues = ReassemblyQueues()
    queues.add(*FOUR[1], 3.0)
    queues.add(*FOUR[3], 4.0)
    assert queues.table(10.0) == [{
        "src": "10.0.1.10", "dst": "10.0.2.10", "protocol": UDP, "id": 0x1234, "fragments": 2,
        "bytes": 928, "length": 2000, "memory": 928 + 2 * FRAGMENT_OVERHEAD, "age": 7.0, "expires_in": 23.0,
    }]


# ------------------------------------------------------------------ memory limit


def datagram_pieces(identification: int):
    return [(dataclasses.replace(h, identification=identification), d) for h, d in FOUR]


def test_memory_above_high_threshold_evicts_oldest_queues_down_to_low():
    cost = 536 + FRAGMENT_OVERHEAD
    queues = ReassemblyQueues(ipfrag_high_thresh=3 * cost - 1, ipfrag_low_thresh=cost)
    assert queues.add(*datagram_pieces(1)[0], 0.0).outcome is Outcome.QUEUED
    assert queues.add(*datagram_pieces(2)[0], 1.0).outcome is Outcome.QUEUED
    assert queues.memory == 2 * cost
    assert queues.add(*datagram_pieces(3)[0], 2.0).outcome is Outcome.QUEUED
    assert [row["id"] for row in queues.table(2.0)] == [3]
    assert queues.memory == cost
    assert queues.counters == {"ReasmReqds": 3, "ReasmOKs": 0, "ReasmFails": 2, "ReasmTimeout": 0,
                               "ReasmOverlaps": 0, "ReasmDuplicates": 0}
    # The survivor still completes (with room to do so).
    queues.ipfrag_high_thresh = 10 * cost
    results = [queues.add(h, d, 3.0) for h, d in datagram_pieces(3)[1:]]
    assert results[-1].payload == PAYLOAD[:2000]


def test_fragment_whose_own_queue_is_evicted_is_reported_dropped():
    queues = ReassemblyQueues(ipfrag_high_thresh=100, ipfrag_low_thresh=50)
    result = queues.add(*FOUR[0], 0.0)
    assert (result.outcome, result.reason) == (Outcome.DROPPED, "memory")
    assert (len(queues), queues.memory, queues.counters["ReasmFails"]) == (0, 0, 1)


def test_completing_a_datagram_frees_its_memory_before_any_eviction():
    cost = 536 + FRAGMENT_OVERHEAD
    queues = ReassemblyQueues(ipfrag_high_thresh=3 * cost + 392 + FRAGMENT_OVERHEAD - 1, ipfrag_low_thresh=0)
    results = [queues.add(h, d, 0.0) for h, d in FOUR]
    assert results[-1].outcome is Outcome.COMPLETE
    assert queues.counters["ReasmFails"] == 0


# ------------------------------------------------------------------ end to end


def test_4000_byte_datagram_fragmented_at_1500_then_576_reassembles_byte_identical():
    original = header(options=OPTIONS, identification=0xBEEF)
    first_hop = fragment(original, PAYLOAD, 1500)
    # First: 36-byte header + 1464; later: 28-byte header (only LSRR copied) + 1472, then 1064.
    assert [h.total_length for h, _ in first_hop] == [1500, 1500, 1092]
    second_hop = [piece for h, d in wire_round_trip(first_hop) for piece in fragment(h, d, 576)]
    assert all(h.total_length <= 576 for h, _ in second_hop)
    received = wire_round_trip(second_hop)
    random.Random(1).shuffle(received)
    queues, results = reassemble(received)
    assert [r.outcome for r in results].count(Outcome.COMPLETE) == 1
    assert results[-1].outcome is Outcome.COMPLETE
    reassembled_header, payload = results[-1].datagram
    assert payload == PAYLOAD
    assert reassembled_header.build(payload) == original.build(PAYLOAD)
    assert queues.counters == {"ReasmReqds": len(second_hop), "ReasmOKs": 1, "ReasmFails": 0,
                               "ReasmTimeout": 0, "ReasmOverlaps": 0, "ReasmDuplicates": 0}


# ------------------------------------------------------------------ properties


@settings(max_examples=150, deadline=None)
@given(
    size=st.integers(1, 6000),
    mtus=st.lists(st.integers(68, 1600), min_size=1, max_size=3),
    seed=st.integers(0, 2**32 - 1),
    duplicates=st.integers(0, 5),
)
def test_any_fragmentation_in_any_order_with_duplicates_reassembles_exactly(size, mtus, seed, duplicates):
    payload = PAYLOAD[:size] if size <= len(PAYLOAD) else (PAYLOAD * 2)[:size]
    pieces = [(header(), memoryview(payload))]
    for mtu in mtus:  # fragmented again at every hop
        pieces = [p for h, d in pieces for p in fragment(h, d, mtu)]
    rng = random.Random(seed)
    stream = pieces + [rng.choice(pieces) for _ in range(duplicates)]
    rng.shuffle(stream)
    queues = ReassemblyQueues()
    results = [queues.add(h, d, 0.0) if h.is_fragment else None for h, d in stream]
    if len(pieces) == 1:
        return  # never fragmented: nothing to reassemble
    complete = [r for r in results if r is not None and r.outcome is Outcome.COMPLETE]
    assert complete and complete[0].payload == payload
    assert queues.counters["ReasmFails"] == queues.counters["ReasmOverlaps"] == 0


@settings(max_examples=150, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 8191), st.integers(0, 200), st.booleans(), st.integers(0, 2)),
                min_size=1, max_size=30))
def test_arbitrary_fragments_never_crash_and_memory_stays_accounted(fragments):
    queues = ReassemblyQueues(ipfrag_high_thresh=4000, ipfrag_low_thresh=2000)
    for step, (units, length, more, identification) in enumerate(fragments):
        if units == 0 and not more:
            more = True
        h = header(fragment_offset=units * 8, more_fragments=more, identification=identification)
        result = queues.add(h, PAYLOAD[:length], float(step))
        assert isinstance(result.outcome, Outcome)
        assert queues.memory == sum(row["memory"] for row in queues.table(float(step)))
        assert queues.memory <= 4000 or len(queues) == 0
        queues.tick(float(step))
    counters = queues.counters
    assert counters["ReasmReqds"] == len(fragments)
    assert counters["ReasmOverlaps"] <= counters["ReasmFails"]


def test_refragmenting_a_fragment_that_ends_past_64_kib_is_refused_not_built():
    """Found by the frame fuzzer: a forged fragment at offset 65528 forwarded onto a smaller MTU
    made pieces whose offsets overflow the 13-bit field (a WireError inside the router)."""
    late = header(fragment_offset=65528, more_fragments=False)
    with pytest.raises(ValueError, match="past 65535"):
        fragment(late, bytes(574), 552)
    assert len(fragment(header(fragment_offset=64000), bytes(1000), 552)) == 2  # ends before 64 KiB: fine
