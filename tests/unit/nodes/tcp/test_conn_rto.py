"""TcpConnection: the retransmission timer (RFC 6298), backoff, giving up (tcp_write_timeout)."""
from __future__ import annotations

import errno

import pytest

from nodes.tcp.rtt import retries_timeout
from nodes.tcp.states import TCP_CLOSE, TCP_ESTABLISHED, TcpConfig
from tests.unit.nodes.tcp.connpair import ACK, PSH, established, seg


def test_rto_after_handshake_sample():
    """RTT 10 ms: RTO = SRTT + max(4*RTTVAR, rto_min) = 0.01 + 0.2 (Linux's tcp_set_rto)."""
    ep = established(rtt=0.01)
    conn = ep.conn
    conn.send(b"x" * 100, ep.now)
    header, payload = ep.one()
    assert (header.seq, payload) == (1001, b"x" * 100)
    assert conn.next_timer() == pytest.approx(ep.now + 0.21)
    waited = ep.run_timer()
    assert waited == pytest.approx(0.21)
    header, payload = ep.one()
    assert (header.seq, payload) == (1001, b"x" * 100)
    assert ep.stats.RetransSegs == 1 and ep.stats.TCPTimeouts == 1
    assert conn.cc.cwnd == 1
    # RFC 6298 5.5: the timer backs off
    assert ep.run_timer() == pytest.approx(0.42)
    assert ep.run_timer() == pytest.approx(0.84)
    info = conn.info(ep.now)
    assert info["retransmits"] == 3 and info["backoff"] == 3 and info["total_retrans"] == 3


def test_ack_stops_timer_and_restarts_for_rest():
    ep = established()
    conn = ep.conn
    conn.nodelay = True
    conn.send(b"a" * 1460 * 3, ep.now)
    assert len(ep.take()) == 3
    ep.now += 0.01
    ep.deliver(seg(5001, 1001 + 1460))
    # RFC 6298 5.3: restart on an ACK of new data
    assert conn.next_timer() == pytest.approx(ep.now + conn.rtt.rto)
    ep.deliver(seg(5001, 1001 + 3 * 1460))
    assert conn.next_timer() is None  # 5.2: all acknowledged
    assert ep.stats.TCPPureAcks == 2


def test_only_one_segment_retransmitted_per_rto_then_slow_start():
    ep = established()
    conn = ep.conn
    conn.send(b"b" * 1460 * 5, ep.now)
    assert len(ep.take()) == 5
    ep.run_timer()
    out = ep.take()
    assert [(h.seq, len(p)) for h, p in out] == [(1001, 1460)]
    ep.now += 0.01
    ep.deliver(seg(5001, 1001 + 1460))
    # cwnd 2 after one ACK in slow start (Loss): the next two lost segments go
    out = ep.take()
    assert [(h.seq, len(p)) for h, p in out] == [(1001 + 1460, 1460), (1001 + 2920, 1460)]
    assert ep.stats.RetransSegs == 3


def test_gives_up_after_retries2_with_etimedout():
    config = TcpConfig(retries2=5)
    ep = established(config)
    conn = ep.conn
    conn.send(b"z" * 10, ep.now)
    ep.take()
    start = ep.now
    while conn.state != TCP_CLOSE:
        ep.run_timer()
    # retransmits_timed_out: the first timer after tcp_model_timeout(5, 200 ms) = 12.6 s has
    # passed since the segment was sent (timers at 0.21, 0.63, 1.47, 3.15, 6.51, 13.23 s)
    assert retries_timeout(5) == pytest.approx(12.6)
    assert ep.now - start == pytest.approx(13.23)
    assert ep.stats.RetransSegs == 5
    assert conn.error == errno.ETIMEDOUT
    assert ep.stats.TCPAbortOnTimeout == 1 and ep.stats.EstabResets == 1


def test_soft_error_reported_on_timeout():
    config = TcpConfig(retries2=2)
    ep = established(config)
    conn = ep.conn
    conn.send(b"z" * 10, ep.now)
    conn.icmp_error(3, 1, 0, ep.now)  # host unreachable on an established connection: soft
    assert conn.state == TCP_ESTABLISHED and conn.error == 0
    while conn.state != TCP_CLOSE:
        ep.run_timer()
    assert conn.error == errno.EHOSTUNREACH


def test_user_timeout_overrides_retries():
    ep = established()
    conn = ep.conn
    conn.user_timeout = 2.0
    conn.send(b"q", ep.now)
    start = ep.now
    while conn.state != TCP_CLOSE:
        ep.run_timer()
    assert 2.0 <= ep.now - start < 4.0 and conn.error == errno.ETIMEDOUT


def test_transmit_oserror_is_a_lost_segment():
    ep = established()
    conn = ep.conn
    real = conn._transmit

    def down(c, h, p):
        raise OSError(errno.ENETUNREACH, "link down")

    conn._transmit = down
    assert conn.send(b"data", ep.now) == 4
    conn._transmit = real
    ep.run_timer()
    header, payload = ep.one()
    assert payload == b"data" and header.flags == ACK | PSH
