"""SkBuff: headroom/tailroom bookkeeping, zero-copy push/pull, the two counted copies."""
from __future__ import annotations

import pytest

from nodes.skbuff import (
    HEADROOM_GROWTH_PAD,
    MAX_HEADER,
    PACKET_HOST,
    SKB_TRUESIZE_OVERHEAD,
    SkBuff,
    SkbuffError,
)

ETH, IP, TCP = 14, 20, 20
FRAME = bytes(range(14)) + bytes(range(100, 120)) + bytes(range(200, 220)) + b"payload"


def build_tcp_packet(payload: bytes, headroom: int = MAX_HEADER) -> SkBuff:
    skb = SkBuff.alloc(len(payload), headroom)
    skb.put_data(payload)
    skb.push(TCP)[:] = b"T" * TCP
    skb.reset_transport_header()
    skb.push(IP)[:] = b"I" * IP
    skb.reset_network_header()
    skb.push(ETH)[:] = b"E" * ETH
    skb.reset_mac_header()
    return skb


# -- allocation and reserve --------------------------------------------------

def test_alloc_gives_empty_buffer_with_requested_rooms():
    skb = SkBuff.alloc(100, 64)
    assert (len(skb), skb.len, skb.headroom, skb.tailroom) == (0, 0, 64, 100)
    assert (skb.head, skb.data_offset, skb.tail, skb.end) == (0, 64, 64, 164)
    assert skb.truesize == 164 + SKB_TRUESIZE_OVERHEAD
    assert skb.writable and skb.copies == 0


def test_alloc_rejects_negative_sizes():
    with pytest.raises(SkbuffError):
        SkBuff.alloc(-1)
    with pytest.raises(SkbuffError):
        SkBuff.alloc(10, -1)


def test_reserve_moves_data_and_tail_on_empty_buffer():
    skb = SkBuff.alloc(100)
    skb.reserve(40)
    assert (skb.headroom, skb.tailroom, len(skb)) == (40, 60, 0)


def test_reserve_refused_once_buffer_holds_data():
    skb = SkBuff.alloc(100)
    skb.put(1)
    with pytest.raises(SkbuffError):
        skb.reserve(10)


def test_reserve_beyond_tailroom_refused():
    skb = SkBuff.alloc(10)
    with pytest.raises(SkbuffError):
        skb.reserve(11)
    assert skb.headroom == 0


def test_skbuff_error_is_a_value_error():
    assert issubclass(SkbuffError, ValueError)


# -- put / push / pull / trim bounds -------------------------------------------

def test_put_appends_and_returns_writable_view_of_new_bytes():
    skb = SkBuff.alloc(10, 4)
    view = skb.put(3)
    view[:] = b"abc"
    assert skb.tobytes() == b"abc"
    assert (skb.tailroom, len(skb)) == (7, 3)


def test_put_beyond_tailroom_raises_and_changes_nothing():
    skb = SkBuff.alloc(4)
    skb.put(3)
    with pytest.raises(SkbuffError):
        skb.put(2)
    assert len(skb) == 3


def test_push_prepends_header_in_headroom():
    skb = SkBuff.alloc(3, 10)
    skb.put_data(b"xyz")
    skb.push(2)[:] = b"hd"
    assert skb.tobytes() == b"hdxyz"
    assert (skb.headroom, len(skb), skb.copies) == (8, 5, 0)


def test_pull_strips_header_and_returns_its_bytes():
    skb = SkBuff.from_frame(FRAME)
    stripped = skb.pull(ETH)
    assert bytes(stripped) == FRAME[:ETH]
    assert skb.tobytes() == FRAME[ETH:]
    assert skb.headroom == ETH


def test_pull_of_whole_packet_leaves_it_empty():
    skb = SkBuff.from_frame(b"abc")
    skb.pull(3)
    assert len(skb) == 0 and skb.tobytes() == b""


def test_over_pull_raises_and_leaves_packet_intact():
    skb = SkBuff.from_frame(b"abcd")
    with pytest.raises(SkbuffError):
        skb.pull(5)
    assert skb.tobytes() == b"abcd"


@pytest.mark.parametrize("operation", ["pull", "push", "put"])
def test_negative_lengths_refused(operation):
    skb = SkBuff.alloc(10, 10)
    skb.put(5)
    with pytest.raises(SkbuffError):
        getattr(skb, operation)(-1)
    assert (skb.headroom, len(skb)) == (10, 5)


def test_trim_cuts_from_the_tail():
    skb = SkBuff.from_frame(b"datagram" + b"\x00" * 6)  # Ethernet padding after the datagram
    skb.trim(8)
    assert skb.tobytes() == b"datagram"
    assert skb.tailroom == 6


def test_trim_longer_than_packet_is_a_no_op():
    skb = SkBuff.from_frame(b"abc")
    skb.trim(10)
    assert skb.tobytes() == b"abc"


def test_trim_to_negative_refused():
    with pytest.raises(SkbuffError):
        SkBuff.from_frame(b"abc").trim(-1)


# -- transmit path: no payload copy --------------------------------------------

def test_transmit_path_pushes_headers_without_copying_payload():
    skb = SkBuff.alloc(7, MAX_HEADER)
    storage = skb.buffer
    skb.put_data(b"payload")
    for size in (TCP, IP, ETH):
        skb.push(size)
    assert skb.buffer is storage
    assert skb.copies == 0
    assert skb.tobytes()[-7:] == b"payload"
    assert len(skb) == 7 + TCP + IP + ETH


def test_header_offsets_survive_pushes_and_pulls():
    skb = build_tcp_packet(b"data")
    mac, network, transport = skb.mac_header, skb.network_header, skb.transport_header
    assert bytes(skb.mac_header_view()[:ETH]) == b"E" * ETH
    skb.pull(ETH)
    skb.pull(IP)
    assert (skb.mac_header, skb.network_header, skb.transport_header) == (mac, network, transport)
    assert bytes(skb.network_header_view()[:IP]) == b"I" * IP
    assert bytes(skb.transport_header_view()) == b"T" * TCP + b"data"
    assert skb.network_offset == -IP
    skb.push(IP)
    assert skb.network_offset == 0


def test_unset_header_offset_raises():
    skb = SkBuff.alloc(10)
    with pytest.raises(SkbuffError):
        skb.network_header_view()
    with pytest.raises(SkbuffError):
        skb.network_offset


# -- headroom growth --------------------------------------------------------------

def test_push_beyond_headroom_reallocates_once_and_keeps_contents():
    skb = SkBuff.alloc(4, 10)
    old_storage = skb.buffer
    skb.put_data(b"data")
    skb.push(8)[:] = b"H" * 8
    skb.reset_network_header()
    network_before = skb.network_header
    skb.push(6)[:] = b"M" * 6  # only 2 bytes of headroom left
    assert skb.buffer is not old_storage
    assert skb.copies == 1
    assert skb.tobytes() == b"M" * 6 + b"H" * 8 + b"data"
    assert skb.headroom == HEADROOM_GROWTH_PAD
    # the offset moved with the bytes it points at
    assert skb.network_header != network_before
    assert bytes(skb.network_header_view()) == b"H" * 8 + b"data"


def test_growth_pad_avoids_a_second_reallocation_for_a_small_push():
    skb = SkBuff.alloc(1, 0)
    skb.put(1)
    skb.push(4)
    skb.push(HEADROOM_GROWTH_PAD)
    assert skb.copies == 1
    assert len(skb) == 5 + HEADROOM_GROWTH_PAD


# -- receive path: from_frame and copy-on-write ------------------------------------

def test_from_frame_does_not_copy_bytes():
    skb = SkBuff.from_frame(FRAME, dev="eth0", now=12.5)
    assert skb.buffer is FRAME
    assert (skb.dev, skb.tstamp, skb.pkt_type, skb.mac_header) == ("eth0", 12.5, PACKET_HOST, 0)
    assert not skb.writable
    assert skb.headroom == 0 and skb.tailroom == 0


def test_from_frame_accepts_memoryview_slice_of_a_batch_without_copy():
    batch = b"\x00\x05hello\x00\x03abc"
    skb = SkBuff.from_frame(memoryview(batch)[2:7])
    assert skb.tobytes() == b"hello"
    assert skb.data.obj is batch


def test_pulls_on_read_only_frame_need_no_copy():
    skb = SkBuff.from_frame(FRAME)
    skb.pull(ETH)
    skb.reset_network_header()
    skb.pull(IP)
    skb.reset_transport_header()
    skb.pull(TCP)
    assert skb.tobytes() == b"payload"
    assert skb.copies == 0 and skb.buffer is FRAME


def test_read_only_views_refuse_writes():
    skb = SkBuff.from_frame(FRAME)
    with pytest.raises(TypeError):
        skb.data[0] = 1


def test_make_writable_copies_exactly_once():
    skb = SkBuff.from_frame(FRAME)
    skb.pull(ETH)
    skb.reset_network_header()
    assert skb.make_writable() is True
    assert skb.make_writable() is False
    assert skb.copies == 1
    assert isinstance(skb.buffer, bytearray) and skb.writable
    skb.network_header_view()[8] = 63  # rewrite the TTL in place, as forwarding does
    assert skb.tobytes()[8] == 63
    assert FRAME[ETH + 8] == 108  # the received frame itself is untouched
    assert skb.tobytes()[:8] == FRAME[ETH:ETH + 8]


def test_make_writable_on_bytearray_frame_does_not_copy():
    frame = bytearray(FRAME)
    skb = SkBuff.from_frame(frame)
    assert skb.make_writable() is False
    assert skb.buffer is frame and skb.copies == 0


def test_push_on_read_only_frame_copies_on_write_once():
    skb = SkBuff.from_frame(FRAME)
    skb.pull(ETH)
    skb.push(ETH)[:] = b"N" * ETH  # forwarding: new Ethernet header over the old one
    assert skb.copies == 1
    assert skb.tobytes() == b"N" * ETH + FRAME[ETH:]


def test_put_on_read_only_frame_copies_on_write_once():
    skb = SkBuff.from_frame(FRAME)
    skb.trim(10)
    skb.put(2)[:] = b"zz"
    assert skb.copies == 1
    assert skb.tobytes() == FRAME[:10] + b"zz"


# -- metadata and copy --------------------------------------------------------------

def test_copy_is_independent_and_keeps_metadata():
    skb = build_tcp_packet(b"data")
    skb.dev, skb.protocol, skb.pkt_type, skb.cb = "eth1", 0x0800, 1, {"frag": 3}
    clone = skb.copy()
    clone.data[0] = 0
    assert skb.tobytes()[0] == ord("E")
    assert (clone.dev, clone.protocol, clone.pkt_type, clone.cb) == ("eth1", 0x0800, 1, {"frag": 3})
    assert (clone.mac_header, clone.network_header, clone.transport_header) == (
        skb.mac_header, skb.network_header, skb.transport_header)
    assert clone.tobytes()[1:] == skb.tobytes()[1:]


def test_slots_reject_unknown_attributes():
    with pytest.raises(AttributeError):
        SkBuff.alloc(1).colour = "red"


def test_repr_mentions_sizes():
    text = repr(SkBuff.from_frame(b"abc", dev="eth0"))
    assert "len=3" in text and "eth0" in text and "ro" in text


def test_from_payload_is_alloc_then_put_data():
    payload = memoryview(b"payload bytes")
    made = SkBuff.from_payload(payload, 40, dev="eth0", now=2.5)
    reference = SkBuff.alloc(len(payload), 40, dev="eth0", now=2.5)
    reference.put_data(payload)
    for field in ("data_offset", "tail", "end", "dev", "tstamp", "headroom", "tailroom"):
        assert getattr(made, field) == getattr(reference, field)
    assert made.tobytes() == b"payload bytes" and made.writable
    made.push(4)[:] = b"head"
    assert made.tobytes() == b"headpayload bytes"
    with pytest.raises(SkbuffError):
        SkBuff.from_payload(b"x", -1)
