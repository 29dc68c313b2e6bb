"""TcpConnection: RST and SYN rules (RFC 9293 3.10.7.4, RFC 5961 challenge ACKs)."""
from __future__ import annotations

import errno

from nodes.tcp.states import TCP_CLOSE, TCP_ESTABLISHED, TCP_SYN_RECV, TcpConfig
from nodes.wire.tcp import MssOption
from tests.unit.nodes.tcp.connpair import ACK, FIN, PSH, RST, SYN, Endpoint, established, seg


def test_rst_at_rcv_nxt_resets():
    ep = established()
    ep.deliver(seg(5001, 0, RST))
    conn = ep.conn
    assert conn.state == TCP_CLOSE and conn.error == errno.ECONNRESET
    assert ep.stats.EstabResets == 1 and ep.stats.CurrEstab == 0 and ep.take() == []


def test_rst_in_window_gets_challenge_ack():
    """RFC 5961 3.2: in the window but not RCV.NXT -> ACK, connection unchanged."""
    ep = established()
    ep.deliver(seg(5100, 0, RST))
    header, _ = ep.one()
    assert (header.flags, header.seq, header.ack) == (ACK, 1001, 5001)
    assert ep.conn.state == TCP_ESTABLISHED and ep.stats.TCPChallengeACK == 1


def test_rst_out_of_window_is_dropped_silently():
    ep = established()
    ep.deliver(seg(5001 + 10_000_000, 0, RST))
    ep.deliver(seg(4000, 0, RST))
    assert ep.take() == [] and ep.conn.state == TCP_ESTABLISHED


def test_syn_in_window_gets_challenge_ack():
    """RFC 5961 4.2: any SYN on a synchronized connection -> challenge ACK."""
    ep = established()
    ep.deliver(seg(5001, 0, SYN, 65535, (MssOption(1460),)))
    header, _ = ep.one()
    assert (header.flags, header.ack) == (ACK, 5001)
    assert ep.conn.state == TCP_ESTABLISHED and ep.stats.TCPChallengeACK == 1


def test_challenge_acks_are_rate_limited_per_connection():
    """tcp_send_challenge_ack: one per tcp_invalid_ratelimit (500 ms) and connection."""
    ep = established()
    for _ in range(10):
        ep.deliver(seg(5100, 0, RST))
    assert len(ep.take()) == 1 and ep.stats.TCPChallengeACK == 1
    ep.now += 0.6
    ep.deliver(seg(5100, 0, RST))
    assert len(ep.take()) == 1


def test_challenge_ack_limit_a_second():
    ep = established(TcpConfig(challenge_ack_limit=1))
    ep.deliver(seg(5100, 0, RST))
    ep.now += 0.5
    ep.deliver(seg(5100, 0, RST))
    assert len(ep.take()) == 1  # the second in the same second: over the limit
    ep.now += 0.6
    ep.deliver(seg(5100, 0, RST))
    assert len(ep.take()) == 1


def test_out_of_window_acks_are_rate_limited():
    """tcp_oow_rate_limited: pure ACKs out of the window get one dup ACK per 500 ms (no ACK
    loops); segments with data always get theirs."""
    ep = established()
    for _ in range(5):
        ep.deliver(seg(4000, 1001))
    assert len(ep.take()) == 1
    for _ in range(3):
        ep.deliver(seg(4000, 1001, ACK | PSH), b"old")
    assert len(ep.take()) == 3


def test_rst_in_close_wait_gives_epipe():
    ep = established()
    ep.deliver(seg(5001, 1001, ACK | FIN))
    ep.deliver(seg(5002, 0, RST))
    assert ep.conn.state == TCP_CLOSE and ep.conn.error == errno.EPIPE


def test_ack_of_unsent_data_is_challenged_and_dropped():
    """RFC 5961 5.2: SEG.ACK > SND.NXT -> ACK and drop (the data too)."""
    ep = established()
    ep.deliver(seg(5001, 9999, ACK | PSH), b"data")
    header, _ = ep.one()
    assert header.ack == 5001 and ep.conn.readable == 0


def test_unacceptable_segment_gets_ack():
    """RFC 9293 3.10.7.4 first check: an old duplicate is answered with <SEQ=SND.NXT><ACK=RCV.NXT>."""
    ep = established()
    ep.deliver(seg(4000, 1001, ACK | PSH), b"old")
    header, _ = ep.one()
    assert (header.flags, header.seq, header.ack) == (ACK, 1001, 5001)


def test_segment_without_ack_is_dropped():
    ep = established()
    ep.deliver(seg(5001, 0, PSH), b"no ack")
    assert ep.conn.readable == 0 and ep.take() == []


def test_rst_in_syn_recv_closes():
    ep = Endpoint(isn=9000)
    ep.conn.accept_syn(seg(300, 0, SYN, 65535, (MssOption(1460),)), 0.0)
    ep.take()
    assert ep.conn.state == TCP_SYN_RECV
    ep.deliver(seg(301, 0, RST))
    assert ep.conn.state == TCP_CLOSE and ep.stats.AttemptFails == 1
