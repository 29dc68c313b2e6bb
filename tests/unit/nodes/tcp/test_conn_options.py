"""TcpConnection: option negotiation matrix and fallbacks (RFC 7323, RFC 2018, RFC 9293 3.7.1),
timestamps on every segment, PAWS, SACK blocks beside timestamps."""
from __future__ import annotations

import itertools

import pytest

from nodes.tcp.states import TcpConfig
from nodes.wire.tcp import (
    NOP,
    SACK_PERMITTED,
    MssOption,
    SackOption,
    SackPermittedOption,
    TimestampOption,
    WindowScaleOption,
)
from tests.unit.nodes.tcp.connpair import ACK, PSH, SYN, Endpoint, established, seg


@pytest.mark.parametrize("ours, theirs", list(itertools.product(itertools.product((False, True), repeat=3),
                                                                 itertools.product((False, True), repeat=3))))
def test_negotiation_matrix(ours, theirs):
    """Each option is used only if both SYNs carried it; the SYN offers what our knobs allow."""
    ts, ws, sack = ours
    peer_ts, peer_ws, peer_sack = theirs
    ep = Endpoint(TcpConfig(timestamps=ts, window_scaling=ws, sack=sack), isn=1000, ts_offset=0)
    ep.conn.connect(0.0)
    syn, _ = ep.one()
    kinds = {type(option) for option in syn.options}
    assert (TimestampOption in kinds, WindowScaleOption in kinds, SackPermittedOption in kinds) == ours
    options = [MssOption(1200)]
    if peer_sack:
        options.append(SACK_PERMITTED)
    if peer_ts:
        options.append(TimestampOption(50, 0))
    if peer_ws:
        options += [NOP, WindowScaleOption(3)]
    ep.now = 0.01
    ep.deliver(seg(5000, 1001, SYN | ACK, 1000, tuple(options)))
    conn = ep.conn
    assert conn.ts_on == (ts and peer_ts)
    assert conn.sack_on == (sack and peer_sack)
    assert (conn.snd_wscale, conn.rcv_wscale != 0) == ((3, True) if ws and peer_ws else (0, False))
    assert conn.mss == 1200 - (12 if conn.ts_on else 0)
    ack, _ = ep.one()
    assert (TimestampOption in {type(o) for o in ack.options}) == conn.ts_on
    # the peer's next window is scaled only when both agreed
    ep.deliver(seg(5001, 1001, ACK, 1000, (NOP, NOP, TimestampOption(60, ack.options[2].value)) if conn.ts_on else ()))
    assert conn.snd_wnd == (1000 << 3 if conn.snd_wscale else 1000)


def test_user_mss_clamps():
    ep = Endpoint(isn=1000)
    ep.conn.connect(0.0, user_mss=1000)
    syn, _ = ep.one()
    assert syn.option(MssOption).mss == 1000
    ep.deliver(seg(5000, 1001, SYN | ACK, 65535, (MssOption(1460),)))
    assert ep.conn.mss == 1000


def test_path_mtu_sets_advertised_mss():
    ep = Endpoint(isn=1000, path_mtu=9000)
    ep.conn.connect(0.0)
    assert ep.one()[0].option(MssOption).mss == 8960


TS_PEER = (MssOption(1460), SACK_PERMITTED, TimestampOption(1000, 0), NOP, WindowScaleOption(7))


def ts(value, echo=0):
    return (NOP, NOP, TimestampOption(value, echo))


def test_timestamps_echo_ts_recent():
    ep = established(peer_options=TS_PEER, ts_offset=0)
    conn = ep.conn
    ep.deliver(seg(5001, 1001, ACK | PSH, 1000, ts(1005, 10)), b"abc")
    header, _ = ep.one()  # quick ACK
    assert header.option(TimestampOption) == TimestampOption(10, 1005)
    assert conn.recv(10, ep.now) == b"abc"


def test_paws_drops_old_timestamp_with_duplicate_ack():
    """RFC 7323 5.3 R1: a segment whose TSval is older than TS.Recent is dropped, and ACKed."""
    ep = established(peer_options=TS_PEER, ts_offset=0)
    conn = ep.conn
    ep.deliver(seg(5001, 1001, ACK | PSH, 1000, ts(2000)), b"new")
    ep.take()
    ep.deliver(seg(5004, 1001, ACK | PSH, 1000, ts(1500)), b"old")
    header, _ = ep.one()
    assert header.ack == 5004 and conn.readable == 3 and ep.stats.PAWSEstab == 1
    # a RST is not subject to PAWS (RFC 7323 5.3: it goes to the RST checks)
    ep.deliver(seg(5004, 0, 0x04, 0, ts(1500)))
    assert conn.state == 7


def test_ts_recent_not_updated_beyond_last_ack_sent():
    """RFC 7323 4.3: TS.Recent only from a segment at or before Last.ACK.sent."""
    ep = established(peer_options=TS_PEER, ts_offset=0)
    conn = ep.conn
    before = conn._ts.ts_recent
    ep.deliver(seg(5001 + 1000, 1001, ACK, 1000, ts(3000)), b"x" * 10)  # out of order
    assert conn._ts.ts_recent == before
    header, _ = ep.one()
    assert header.option(TimestampOption).echo == before


def test_sack_blocks_beside_timestamps_at_most_three():
    ep = established(peer_options=TS_PEER, ts_offset=0)
    conn = ep.conn
    for n in range(4):
        ep.deliver(seg(5001 + 100 + n * 200, 1001, ACK, 1000, ts(1001 + n)), b"s" * 100)
    header, _ = ep.take()[-1]
    blocks = header.option(SackOption).blocks
    assert len(blocks) == 3  # RFC 2018 3: 3 blocks fit beside timestamps
    assert blocks[0] == (5001 + 700, 5001 + 800)  # the most recent first (RFC 2018 4)
    assert conn.mss == 1448


def test_data_segment_with_sack_option_is_shorter():
    """tcp_current_mss: while SACK blocks ride on our segments, the payload shrinks to fit."""
    ep = established(peer_options=(MssOption(1460), SACK_PERMITTED))
    conn = ep.conn
    ep.deliver(seg(5001 + 500, 1001), b"z" * 10)
    ep.take()
    conn.set_buffers(None, 100_000)
    conn.send(b"d" * 3000, ep.now)
    out = ep.take()
    assert all(h.header_length + len(p) <= 1480 for h, p in out)
    assert out[0][0].option(SackOption) is not None and len(out[0][1]) == 1460 - 12
