"""TcpConnection: data transfer: segmentation, PSH, Nagle, delayed ACK, windows, persist,
sequence wrap (RFC 9293 3.8, RFC 1122 4.2.3)."""
from __future__ import annotations

import pytest

from nodes.tcp.states import TcpConfig
from nodes.wire.tcp import MssOption, SackOption, SACK_PERMITTED
from tests.unit.nodes.tcp.connpair import ACK, FIN, PSH, established, seg


def test_segmentation_and_psh_on_last():
    ep = established()
    conn = ep.conn
    assert conn.send(b"d" * 4000, ep.now) == 4000
    out = ep.take()
    assert [(h.flags, h.seq, len(p)) for h, p in out] == [
        (ACK, 1001, 1460), (ACK, 2461, 1460), (ACK | PSH, 3921, 1080)]
    assert all(h.ack == 5001 for h, _ in out)
    assert conn.info(ep.now)["bytes_sent"] == 4000 and conn.send_queue_bytes == 4000


def test_initial_window_is_ten_segments():
    ep = established()
    conn = ep.conn
    conn.set_buffers(None, 100_000)
    conn.send(b"w" * 20 * 1460, ep.now)
    assert len(ep.take()) == 10  # RFC 6928
    ep.now += 0.01
    ep.deliver(seg(5001, 1001 + 2 * 1460))
    assert len(ep.take()) == 4  # slow start: 2 acked -> cwnd 12, 8 in flight


def test_send_buffer_limits_send():
    ep = established(sndbuf=3000)
    conn = ep.conn
    assert conn.send_space == 3000
    assert conn.send(b"x" * 5000, ep.now) == 3000
    assert conn.send_space == 0 and conn.send(b"y", ep.now) == 0
    assert conn.send(b"forced", ep.now, force=True) == 6
    ep.take()
    ep.deliver(seg(5001, 1001 + 1460))
    assert conn.send_space == 1460 - 6


def test_nagle_holds_small_segment_until_ack():
    """RFC 1122 4.2.3.4 (Linux's Minshall variant): one small segment unacked at a time."""
    ep = established()
    conn = ep.conn
    conn.send(b"a", ep.now)
    assert [p for _, p in ep.take()] == [b"a"]
    conn.send(b"b", ep.now)
    conn.send(b"c", ep.now)
    assert ep.take() == []
    ep.deliver(seg(5001, 1002))
    assert [p for _, p in ep.take()] == [b"bc"]


def test_nodelay_sends_at_once():
    ep = established()
    conn = ep.conn
    conn.nodelay = True
    conn.send(b"a", ep.now)
    conn.send(b"b", ep.now)
    assert [p for _, p in ep.take()] == [b"a", b"b"]


def test_push_after_nodelay_sends_what_nagle_held():
    ep = established()
    conn = ep.conn
    conn.send(b"a", ep.now)
    conn.send(b"b", ep.now)
    assert [p for _, p in ep.take()] == [b"a"]
    conn.nodelay = True
    conn.push(ep.now)  # tcp_sock_set_nodelay -> tcp_push_pending_frames
    assert [p for _, p in ep.take()] == [b"b"]


def test_nagle_lets_full_segments_go():
    ep = established()
    conn = ep.conn
    conn.send(b"a", ep.now)
    ep.take()
    conn.send(b"f" * 1500, ep.now)
    assert [len(p) for _, p in ep.take()] == [1460]  # the 40-byte tail waits


def test_cork_holds_partial_segments_until_close():
    ep = established()
    conn = ep.conn
    conn.cork = True
    conn.send(b"x" * 100, ep.now)
    assert ep.take() == []
    conn.close(ep.now)
    assert [(h.flags, len(p)) for h, p in ep.take()] == [(ACK | PSH | FIN, 100)]


def quick_acks(ep, seq=5001, size=1000):
    """Linux starts in quick-ACK mode (tcp_incr_quickack): min(rcv_wnd / (2 * rcv_mss), 16)
    data segments are ACKed at once, 10 ms apart. Returns the next sequence number."""
    for _ in range(16):
        ep.advance(0.01)
        ep.deliver(seg(seq, 1001, ACK | PSH), b"q" * size)
        seq += size
        assert ep.one()[0].ack == seq
        ep.conn.recv(1 << 20, ep.now)
    return seq


def test_quick_ack_mode_then_delayed_ack_after_40ms():
    ep = established()
    seq = quick_acks(ep)
    ep.advance(0.01)
    ep.deliver(seg(seq, 1001, ACK | PSH), b"y" * 1000)
    assert ep.take() == []
    assert ep.conn.next_timer() == pytest.approx(ep.now + 0.04)
    ep.advance(0.039)
    assert ep.take() == []
    ep.advance(0.002)
    header, _ = ep.one()
    assert header.ack == seq + 1000 and ep.stats.DelayedACKs == 1


def test_every_second_full_segment_is_acked_at_once():
    ep = established()
    seq = quick_acks(ep)
    ep.advance(0.01)
    ep.deliver(seg(seq, 1001), b"1" * 1000)
    assert ep.take() == []
    ep.deliver(seg(seq + 1000, 1001), b"2" * 1000)
    header, _ = ep.one()
    assert header.ack == seq + 2000
    assert ep.conn.next_timer() is None


def test_out_of_order_restarts_quick_ack_mode():
    ep = established()
    seq = quick_acks(ep)
    ep.deliver(seg(seq + 1000, 1001), b"2" * 1000)
    assert ep.one()[0].ack == seq
    ep.deliver(seg(seq, 1001), b"1" * 1000)
    assert ep.one()[0].ack == seq + 2000
    ep.conn.recv(1 << 20, ep.now)
    ep.advance(0.01)
    ep.deliver(seg(seq + 2000, 1001), b"3" * 100)
    assert ep.one()[0].ack == seq + 2100  # quick again (tcp_enter_quickack_mode)


def test_quickack_acks_every_segment():
    ep = established()
    ep.conn.quickack = True
    ep.deliver(seg(5001, 1001), b"1" * 100)
    assert ep.one()[0].ack == 5101


def test_data_piggybacks_pending_ack():
    ep = established()
    conn = ep.conn
    seq = quick_acks(ep)
    ep.advance(0.01)
    ep.deliver(seg(seq, 1001, ACK | PSH), b"ping")
    conn.send(b"pong", ep.now)
    header, payload = ep.one()
    assert header.ack == seq + 4 and payload == b"pong"
    assert conn.next_timer() is not None and conn.t_delack is None


def test_out_of_order_gets_immediate_duplicate_ack_with_sack():
    ep = established(peer_options=(MssOption(1460), SACK_PERMITTED))
    ep.deliver(seg(5001 + 1000, 1001), b"later")
    header, _ = ep.one()
    assert header.ack == 5001 and header.option(SackOption).blocks == ((6001, 6006),)
    ep.deliver(seg(5001, 1001), b"e" * 1000)
    header, _ = ep.one()  # the gap filled: ACK at once, no SACK left
    assert header.ack == 6006 and header.option(SackOption) is None
    assert ep.conn.recv(10_000, ep.now) == b"e" * 1000 + b"later"
    assert ep.stats.TCPOFOQueue == 1


def test_duplicate_data_gets_dsack():
    ep = established(peer_options=(MssOption(1460), SACK_PERMITTED))
    ep.deliver(seg(5001, 1001), b"dup")
    ep.take()
    ep.deliver(seg(5001, 1001), b"dup")
    header, _ = ep.one()
    assert header.option(SackOption).blocks == ((5001, 5004),)  # RFC 2883


def test_receive_window_shrinks_with_unread_data_and_reopens():
    """The window is half the free buffer (tcp_space), never shrinking its right edge; below
    one MSS it is 0 (receiver SWS avoidance, RFC 1122 4.2.3.3); reading opens it again."""
    ep = established(rcvbuf=8000, peer_options=(MssOption(1000),))
    conn = ep.conn
    seq, right_edge, windows = 5001, 5001 + conn.rcv_wnd, []
    while seq < right_edge:
        size = min(1000, right_edge - seq)
        ep.deliver(seg(seq, 1001), b"a" * size)
        seq += size
        ep.advance(0.05)  # a delayed ACK, if any
        for header, _ in ep.take():
            windows.append(header.window)
            right_edge = header.ack + header.window
        assert right_edge >= seq
    assert windows[-1] == 0 and windows == sorted(windows, reverse=True)
    # a segment beyond the zero window is dropped and answered
    ep.deliver(seg(seq, 1001), b"e" * 100)
    header, _ = ep.one()
    assert header.ack == seq and header.window == 0 and ep.stats.TCPZeroWindowDrop == 1
    unread = conn.readable
    # reading a little keeps the window shut
    assert len(conn.recv(200, ep.now)) == 200
    assert ep.take() == []
    # reading enough sends a window update (tcp_cleanup_rbuf)
    assert len(conn.recv(unread, ep.now)) == unread - 200
    header, _ = ep.one()
    assert header.window >= 1000 and header.ack == seq


def test_zero_window_persist_probes_with_backoff():
    ep = established()
    conn = ep.conn
    ep.deliver(seg(5001, 1001, ACK, 0))
    assert conn.snd_wnd == 0
    conn.send(b"p" * 100, ep.now)
    assert ep.take() == []
    rto = conn.rtt.rto
    assert ep.run_timer() == pytest.approx(rto)
    header, payload = ep.one()
    assert (header.seq, payload) == (1000, b"")  # tcp_xmit_probe_skb: SND.UNA - 1
    ep.deliver(seg(5001, 1001, ACK, 0))  # the answer: still closed
    assert ep.run_timer() == pytest.approx(2 * rto)
    ep.one()
    assert ep.run_timer() == pytest.approx(4 * rto)
    ep.one()
    assert conn.info(ep.now)["probes"] == 2  # unanswered since the last ACK (tcp_ack resets it)
    ep.deliver(seg(5001, 1001, ACK, 1000))
    header, payload = ep.one()
    assert payload == b"p" * 100 and conn.t_persist is None


def test_small_window_sender_sws_avoidance():
    """RFC 1122 4.2.3.4: don't send less than a full segment into a small window; the
    persist timer then sends what fits."""
    ep = established()
    conn = ep.conn
    ep.deliver(seg(5001, 1001, ACK | PSH, 60000), b"z")
    ep.deliver(seg(5002, 1001, ACK, 100))  # a newer segment (SEG.SEQ > SND.WL1) shrinks the window
    assert conn.snd_wnd == 100
    ep.advance(0.05)  # the delayed ACK of b"z"
    ep.take()
    conn.send(b"s" * 3000, ep.now)
    assert ep.take() == []
    ep.run_timer()
    header, payload = ep.one()
    assert payload == b"s" * 100 and header.flags == ACK | PSH  # tcp_write_wakeup pushes


def test_sequence_wrap():
    """ISN just below 2**32: data and ACKs across the wrap."""
    isn = 2**32 - 1500
    ep = established(isn=isn, peer_isn=2**32 - 10)
    conn = ep.conn
    conn.nodelay = True
    conn.send(b"w" * 3000, ep.now)
    out = ep.take()
    assert [h.seq for h, _ in out] == [2**32 - 1499, (2**32 - 1499 + 1460) % 2**32, (2**32 - 1499 + 2920) % 2**32]
    ep.deliver(seg(2**32 - 9, (isn + 1 + 3000) % 2**32), b"r" * 100)
    assert conn.snd_una == (isn + 3001) % 2**32 and conn.send_queue_bytes == 0
    assert conn.recv(1000, ep.now) == b"r" * 100
    ep.deliver(seg(91, (isn + 3001) % 2**32, ACK | FIN))
    assert conn.at_eof


def test_info_fields():
    ep = established()
    info = ep.conn.info(ep.now)
    for key in ("state", "retransmits", "probes", "backoff", "options", "rto", "ato", "snd_mss", "rcv_mss",
                "advmss", "pmtu", "rtt", "rttvar", "snd_ssthresh", "snd_cwnd", "rcv_space", "rcv_ssthresh",
                "snd_wnd", "rcv_wnd", "bytes_sent", "bytes_retrans", "bytes_acked", "bytes_received",
                "segs_out", "segs_in", "data_segs_out", "data_segs_in", "total_retrans", "lost", "sacked",
                "unacked", "reordering", "last_data_sent", "last_data_recv", "last_ack_recv", "min_rtt",
                "delivered", "busy_time", "congestion", "notsent_bytes"):
        assert key in info
    assert info["snd_cwnd"] == 10 and info["congestion"] == "cubic" and info["snd_mss"] == 1460


def test_set_congestion():
    ep = established(TcpConfig(congestion="reno"))
    conn = ep.conn
    assert conn.congestion_name == "reno"
    conn.set_congestion("cubic")
    assert conn.congestion_name == "cubic" and conn.cc.cwnd == 10
    with pytest.raises(OSError):
        conn.set_congestion("vegas")


def test_recv_peek():
    ep = established()
    ep.deliver(seg(5001, 1001, ACK | PSH), b"peekaboo")
    assert ep.conn.recv(4, ep.now, peek=True) == b"peek"
    assert ep.conn.readable == 8
    assert ep.conn.recv(100, ep.now) == b"peekaboo"


def _bulk(rcvbuf=None, size=3_000_000):
    from nodes.tcp.states import TCP_ESTABLISHED
    from tests.unit.nodes.tcp.connpair import Impairment, Pair

    pair = Pair(seed=3, impair=Impairment(delay=0.005), rcvbuf=rcvbuf)
    pair.a.connect(pair.now)
    data = bytes(size)
    sent = [0]

    def pump():
        if pair.a.state == TCP_ESTABLISHED and sent[0] < size:
            sent[0] += pair.a.send(data[sent[0]:sent[0] + 65536], pair.now)
        return len(pair.received["b"]) == size

    assert pair.run(until=100, condition=pump)
    return pair


def test_receive_buffer_autotuning_grows_the_window():
    """tcp_rcv_space_adjust: a reader keeping up at 10 ms RTT lets the buffer (and window) grow
    past the initial 64 KiB, up to tcp_rmem[2]."""
    pair = _bulk()
    b = pair.b
    assert b.rcvbuf > 131072 and b.rcv_wnd > 65535
    assert b.rcvbuf <= TcpConfig().rmem_max


def test_locked_receive_buffer_is_not_tuned():
    pair = _bulk(rcvbuf=131072, size=500_000)
    assert pair.b.rcvbuf == 131072 and pair.b.rcv_wnd <= 65536


def test_fin_ahead_of_missing_data_is_sacked_and_waits():
    """An out-of-order FIN is queued like data (tcp_data_queue_ofo): SACKed as one number; when
    the hole fills, data and FIN are ACKed at once and the state moves (RFC 9293 3.10.7.4)."""
    from nodes.tcp.states import TCP_CLOSE_WAIT, TCP_ESTABLISHED

    ep = established(peer_options=(MssOption(1460), SACK_PERMITTED))
    conn = ep.conn
    ep.deliver(seg(5101, 1001, ACK | FIN))
    header, _ = ep.one()
    assert header.ack == 5001 and header.option(SackOption).blocks == ((5101, 5102),)
    assert conn.state == TCP_ESTABLISHED and not conn.at_eof
    ep.deliver(seg(5001, 1001, ACK | PSH), b"h" * 100)
    header, _ = ep.one()
    assert header.ack == 5102 and header.option(SackOption) is None
    assert conn.state == TCP_CLOSE_WAIT and conn.recv(1000, ep.now) == b"h" * 100 and conn.at_eof


def test_unanswered_zero_window_probes_give_up():
    from nodes.tcp.states import TCP_CLOSE

    ep = established(TcpConfig(retries2=3))
    conn = ep.conn
    ep.deliver(seg(5001, 1001, ACK, 0))
    conn.send(b"p", ep.now)
    while conn.state != TCP_CLOSE:
        ep.run_timer()
    assert len(ep.take()) == 3 and conn.error == 110  # three probes, then ETIMEDOUT
