"""TcpConnection: closing (RFC 9293 3.6, 3.10.4-3.10.5), TIME-WAIT, FIN retransmission, aborts."""
from __future__ import annotations

import errno

import pytest

from nodes.tcp.states import (
    TCP_CLOSE,
    TCP_CLOSE_WAIT,
    TCP_CLOSING,
    TCP_ESTABLISHED,
    TCP_FIN_WAIT1,
    TCP_FIN_WAIT2,
    TCP_LAST_ACK,
    TCP_TIME_WAIT,
    TcpConfig,
)
from tests.unit.nodes.tcp.connpair import ACK, FIN, PSH, RST, SYN, established, seg


def test_active_close_through_time_wait():
    ep = established(TcpConfig(time_wait=2.0))
    conn = ep.conn
    conn.shutdown_send(ep.now)
    header, _ = ep.one()
    assert (header.flags, header.seq, header.ack) == (ACK | FIN, 1001, 5001)
    assert conn.state == TCP_FIN_WAIT1
    ep.deliver(seg(5001, 1002))
    assert conn.state == TCP_FIN_WAIT2 and ep.take() == []
    assert conn.next_timer() is None  # not orphaned: FIN-WAIT-2 lasts
    ep.deliver(seg(5001, 1002, ACK | FIN))
    header, _ = ep.one()
    assert (header.flags, header.seq, header.ack) == (ACK, 1002, 5002)
    assert conn.state == TCP_TIME_WAIT and ep.stats.TW == 1 and conn.at_eof
    ep.advance(1.0)
    # RFC 9293 3.6.1: a retransmitted FIN is acknowledged and restarts the 2 MSL timer
    ep.deliver(seg(5001, 1002, ACK | FIN))
    assert ep.one()[0].ack == 5002
    ep.advance(1.9)
    assert conn.state == TCP_TIME_WAIT
    ep.advance(0.2)
    assert conn.state == TCP_CLOSE and conn.error == 0 and ep.stats.CurrEstab == 0
    assert ep.stats.EstabResets == 0


def test_passive_close_with_delayed_ack_of_fin():
    ep = established()
    conn = ep.conn
    ep.deliver(seg(5001, 1001, ACK | FIN))
    assert conn.state == TCP_CLOSE_WAIT and conn.at_eof and conn.recv(100, ep.now) == b""
    assert ep.take() == []  # tcp_fin enters pingpong mode: the ACK is delayed
    conn.close(ep.now)
    header, _ = ep.one()
    assert (header.flags, header.seq, header.ack) == (ACK | FIN, 1001, 5002)
    assert conn.state == TCP_LAST_ACK and ep.stats.CurrEstab == 0
    ep.deliver(seg(5002, 1002))
    assert conn.state == TCP_CLOSE and conn.error == 0 and ep.stats.EstabResets == 0


def test_fin_ack_delayed_ack_fires():
    """tcp_send_delayed_ack with ato still 0 (no data came): the timer fires at once."""
    ep = established()
    ep.deliver(seg(5001, 1001, ACK | FIN))
    assert ep.conn.next_timer() == ep.now
    ep.advance(0.0)
    header, _ = ep.one()
    assert (header.flags, header.ack) == (ACK, 5002)
    assert ep.stats.DelayedACKs == 1


def test_fin_after_data_is_acked_after_ato():
    ep = established()
    ep.deliver(seg(5001, 1001, ACK | PSH), b"data")
    ep.take()  # quick ACK
    ep.now += 0.1
    ep.deliver(seg(5005, 1001, ACK | FIN))
    assert ep.take() == [] and ep.conn.next_timer() == pytest.approx(ep.now + 0.04)


def test_simultaneous_close_through_closing():
    ep = established()
    conn = ep.conn
    conn.close(ep.now)
    ep.take()
    ep.deliver(seg(5001, 1001, ACK | FIN))  # the peer's FIN, our FIN not yet acknowledged
    assert conn.state == TCP_CLOSING
    assert ep.one()[0].ack == 5002
    ep.deliver(seg(5002, 1002))
    assert conn.state == TCP_TIME_WAIT


def test_fin_acking_our_fin_goes_to_time_wait():
    ep = established()
    ep.conn.close(ep.now)
    ep.take()
    ep.deliver(seg(5001, 1002, ACK | FIN))
    assert ep.conn.state == TCP_TIME_WAIT


def test_fin_retransmitted_on_rto():
    ep = established()
    conn = ep.conn
    conn.send(b"abc", ep.now)
    conn.close(ep.now)
    out = ep.take()
    assert [(h.flags, h.seq, p) for h, p in out] == [(ACK | PSH, 1001, b"abc"), (ACK | FIN, 1004, b"")]
    ep.deliver(seg(5001, 1004))  # the data, not the FIN
    assert conn.state == TCP_FIN_WAIT1
    ep.run_timer()
    header, payload = ep.one()
    assert (header.flags, header.seq, payload) == (ACK | FIN, 1004, b"")
    ep.deliver(seg(5001, 1005))
    assert conn.state == TCP_FIN_WAIT2


def test_orphan_fin_wait2_timeout():
    ep = established(TcpConfig(fin_timeout=30.0))
    conn = ep.conn
    conn.close(ep.now)
    ep.take()
    ep.deliver(seg(5001, 1002))
    assert conn.state == TCP_FIN_WAIT2
    ep.advance(29.9)
    assert conn.state == TCP_FIN_WAIT2
    ep.advance(0.2)
    assert conn.state == TCP_CLOSE


def test_close_after_shutdown_arms_fin_wait2_timer():
    ep = established(TcpConfig(fin_timeout=5.0))
    conn = ep.conn
    conn.shutdown_send(ep.now)
    ep.deliver(seg(5001, 1002))
    conn.close(ep.now)
    ep.advance(5.1)
    assert conn.state == TCP_CLOSE


def test_half_close_still_receives():
    ep = established()
    conn = ep.conn
    conn.shutdown_send(ep.now)
    ep.deliver(seg(5001, 1002))
    ep.take()
    ep.deliver(seg(5001, 1002, ACK | PSH, payload_window := 65535), b"still here")
    assert payload_window and conn.recv(100, ep.now) == b"still here"
    assert conn.state == TCP_FIN_WAIT2


def test_close_with_unread_data_sends_rst():
    """RFC 9293 3.10.4 / tcp_close: unread data -> RST, not FIN (TCPAbortOnClose)."""
    ep = established()
    conn = ep.conn
    ep.deliver(seg(5001, 1001, ACK | PSH), b"unread")
    ep.take()
    conn.close(ep.now)
    header, _ = ep.one()
    assert (header.flags, header.seq, header.ack) == (RST | ACK, 1001, 5007)
    assert conn.state == TCP_CLOSE and ep.stats.TCPAbortOnClose == 1 and ep.stats.OutRsts == 1
    assert ep.stats.EstabResets == 1


def test_linger_zero_sends_rst():
    ep = established()
    conn = ep.conn
    conn.linger = 0
    conn.close(ep.now)
    header, _ = ep.one()
    assert header.flags == RST | ACK
    assert conn.state == TCP_CLOSE and ep.stats.TCPAbortOnLinger == 1


def test_close_in_syn_sent_sends_nothing():
    from tests.unit.nodes.tcp.connpair import Endpoint

    ep = Endpoint(isn=1000)
    ep.conn.connect(0.0)
    ep.take()
    ep.conn.close(0.1)
    assert ep.conn.state == TCP_CLOSE and ep.take() == [] and ep.stats.AttemptFails == 1


def test_orphan_receiving_new_data_resets():
    ep = established()
    conn = ep.conn
    conn.close(ep.now)
    ep.take()
    ep.deliver(seg(5001, 1002, ACK | PSH), b"late")
    header, _ = ep.one()
    assert (header.flags, header.seq) == (RST, 1002)  # tcp_v4_send_reset: <SEQ=SEG.ACK><CTL=RST>
    assert conn.state == TCP_CLOSE and ep.stats.TCPAbortOnData == 1


def test_abort_sends_rst_and_sets_econnreset():
    ep = established()
    ep.conn.abort(ep.now)
    assert ep.one()[0].flags == RST | ACK
    assert ep.conn.state == TCP_CLOSE and ep.conn.error == errno.ECONNRESET


def test_time_wait_rst_kills_unless_rfc1337():
    for rfc1337, final in ((False, TCP_CLOSE), (True, TCP_TIME_WAIT)):
        ep = established(TcpConfig(rfc1337=rfc1337))
        ep.conn.close(ep.now)
        ep.deliver(seg(5001, 1002, ACK | FIN))
        ep.take()
        ep.deliver(seg(5002, 0, RST))
        assert ep.conn.state == final


def test_time_wait_new_syn_hands_over():
    ep = established()
    ep.conn.close(ep.now)
    ep.deliver(seg(5001, 1002, ACK | FIN))
    ep.take()
    assert ep.deliver(seg(90000, 0, SYN)) is True
    assert ep.conn.state == TCP_CLOSE


def test_states_seen_by_on_change():
    ep = established()
    ep.conn.close(ep.now)
    ep.deliver(seg(5001, 1002, ACK | FIN))
    assert ep.changes[0] == TCP_ESTABLISHED and TCP_FIN_WAIT1 in ep.changes and ep.changes[-1] == TCP_TIME_WAIT


def test_close_wait_reacks_a_retransmitted_fin_and_drops_new_data():
    ep = established()
    ep.deliver(seg(5001, 1001, ACK | FIN))
    ep.advance(0.0)
    ep.take()
    ep.deliver(seg(5001, 1001, ACK | FIN))  # the FIN again: our ACK was lost
    assert ep.one()[0].ack == 5002
    ep.deliver(seg(5002, 1001, ACK | PSH), b"after FIN")  # cannot exist: dropped
    assert ep.take() == [] and ep.conn.readable == 0
