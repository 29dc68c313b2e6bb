"""TcpConnection: fast retransmit, NewReno (RFC 6582), SACK recovery (RFC 6675), PMTU (RFC 1191),
ICMP errors, keepalive."""
from __future__ import annotations

import errno

import pytest

from nodes.tcp.congestion import CongestionState
from nodes.tcp.states import TCP_CLOSE, TCP_ESTABLISHED, TcpConfig
from nodes.wire.tcp import SACK_PERMITTED, MssOption
from tests.unit.nodes.tcp.connpair import ACK, RST, Endpoint, established, seg

MSS = 1460
UNA = 1001


def at(n: int) -> int:
    """The sequence number of the n-th full segment (0-based)."""
    return UNA + n * MSS


def flight(ep, queued=30, segments=10):
    """Queue `queued` full segments; the initial window sends the first `segments`."""
    conn = ep.conn
    conn.set_buffers(None, 1 << 20)
    conn.send(b"s" * queued * MSS, ep.now)
    out = ep.take()
    assert [h.seq for h, _ in out] == [at(n) for n in range(segments)]
    return conn


def test_newreno_fast_retransmit_partial_and_full_ack():
    ep = established(TcpConfig(congestion="reno"))
    conn = flight(ep)
    ep.now += 0.01
    # segment 2 and 5 are lost; segments 0, 1 are acked, then 3 duplicate ACKs
    ep.deliver(seg(5001, at(2)))
    assert [h.seq for h, _ in ep.take()] == [at(n) for n in range(10, 14)]  # slow start: cwnd 12
    assert conn.cc.cwnd == 12
    for n in range(2):
        ep.deliver(seg(5001, at(2)))
        assert ep.take() == []
    ep.deliver(seg(5001, at(2)))
    out = ep.take()
    assert [(h.seq, len(p)) for h, p in out] == [(at(2), MSS)]  # RFC 5681 3.2 step 2
    cc = conn.cc
    assert cc.state is CongestionState.RECOVERY and cc.ssthresh == 6 and cc.cwnd == 9
    assert cc.recover == at(14)
    assert ep.stats.TCPRenoRecovery == 1 and ep.stats.TCPFastRetrans == 1
    # more duplicate ACKs inflate cwnd (step 4): new data goes once cwnd exceeds the 12 in flight
    for n in range(4):
        ep.deliver(seg(5001, at(2)))
    assert [h.seq for h, _ in ep.take()] == [at(14)]
    assert cc.cwnd == 13
    # a partial ACK up to the second hole: retransmit it at once (RFC 6582 3.2 step 3),
    # deflate by the 3 segments ACKed, add one back: cwnd 11, 10 in flight -> one new segment
    ep.deliver(seg(5001, at(5)))
    assert [h.seq for h, _ in ep.take()] == [at(5), at(15)]
    assert cc.state is CongestionState.RECOVERY and cc.cwnd == 11
    assert ep.stats.RetransSegs == 2
    # the full ACK (covering `recover`) ends recovery: cwnd = ssthresh
    ep.deliver(seg(5001, at(16)))
    assert cc.state is CongestionState.OPEN and cc.cwnd == 6


def test_sack_recovery_retransmits_holes():
    ep = established(peer_options=(MssOption(MSS), SACK_PERMITTED))
    conn = flight(ep)
    ep.now += 0.01
    # segment 0 lost; 1, 2, 3 arrive and are SACKed
    for n in (1, 2):
        ep.deliver(seg(5001, UNA, ACK, 65535, (_sack((at(1), at(n + 1))),)))
    # the SACKed segments left the network: new data may go (pipe < cwnd), no retransmission yet
    assert at(0) not in [h.seq for h, _ in ep.take()]
    ep.deliver(seg(5001, UNA, ACK, 65535, (_sack((at(1), at(4))),)))
    out = ep.take()
    assert out and out[0][0].seq == at(0) and len(out[0][1]) == MSS  # DupThresh SACKed segments
    assert conn.cc.state is CongestionState.RECOVERY
    assert ep.stats.TCPSackRecovery == 1
    # the retransmission fills the hole: recovery ends at RecoveryPoint
    assert conn.cc.recover == conn.snd_nxt
    ep.deliver(seg(5001, conn.snd_nxt))
    assert conn.cc.state is CongestionState.OPEN and conn.sb.in_recovery is False


def test_sack_recovery_with_two_holes():
    ep = established(peer_options=(MssOption(MSS), SACK_PERMITTED))
    conn = flight(ep)
    ep.now += 0.01
    blocks = ((at(1), at(3)), (at(4), at(8)))
    ep.deliver(seg(5001, UNA, ACK, 65535, (_sack(blocks[1], blocks[0]),)))
    sent = sorted(h.seq for h, _ in ep.take())
    assert at(0) in sent and at(3) in sent  # both lost segments (RFC 6675 IsLost) go out
    assert conn.stats.RetransSegs >= 2


def test_rto_after_sack_keeps_sacked_data():
    ep = established(peer_options=(MssOption(MSS), SACK_PERMITTED))
    conn = flight(ep, queued=4, segments=4)
    ep.now += 0.01
    ep.deliver(seg(5001, UNA, ACK, 65535, (_sack((at(2), at(4))),)))
    assert conn.sb.sacked_bytes == 2 * MSS
    ep.take()
    ep.run_timer()  # first the tail loss probe: the last segment
    assert [h.seq for h, _ in ep.take()] == [at(3)] and ep.stats.TCPLossProbes == 1
    ep.run_timer()  # then the RTO
    out = ep.take()
    assert [h.seq for h, _ in out] == [at(0)] and ep.stats.TCPTimeouts == 1
    ep.deliver(seg(5001, at(1), ACK, 65535, (_sack((at(2), at(4))),)))
    out = ep.take()
    assert [h.seq for h, _ in out] == [at(1)]  # not the SACKed segments 2 and 3


def _sack(*blocks):
    from nodes.wire.tcp import SackOption

    return SackOption(tuple(blocks))


def test_pmtu_frag_needed_lowers_mss_and_retransmits():
    ep = established()
    conn = flight(ep, queued=3, segments=3)
    conn.icmp_error(3, 4, 1200, ep.now)
    assert conn.path_mtu == 1200 and conn.mss == 1160
    out = ep.take()
    assert out and all(len(p) <= 1160 for _, p in out) and out[0][0].seq == UNA
    assert conn.cc.cwnd == 10  # tcp_simple_retransmit keeps the window
    conn.icmp_error(3, 4, 1400, ep.now)  # larger than the current: ignored
    assert conn.path_mtu == 1200


def test_pmtu_below_minimum_is_clamped():
    ep = established()
    conn = flight(ep, queued=1, segments=1)
    conn.icmp_error(3, 4, 300, ep.now)
    assert conn.path_mtu == 552 and conn.mss == 512  # ip_rt_min_pmtu
    assert [len(p) for _, p in ep.take()] == [512, 512, 436]


@pytest.mark.parametrize("code, err", [(3, errno.ECONNREFUSED), (1, errno.EHOSTUNREACH), (0, errno.ENETUNREACH),
                                       (13, errno.EHOSTUNREACH)])
def test_unreachable_during_connect_aborts(code, err):
    ep = Endpoint(isn=1000)
    ep.conn.connect(0.0)
    ep.conn.icmp_error(3, code, 0, 0.1)
    assert ep.conn.state == TCP_CLOSE and ep.conn.error == err and ep.stats.AttemptFails == 1


def test_unreachable_when_established_is_soft():
    ep = established()
    ep.conn.icmp_error(3, 3, 0, ep.now)
    assert ep.conn.state == TCP_ESTABLISHED and ep.conn.error == 0 and ep.conn.soft_error == errno.ECONNREFUSED


def test_keepalive_probes_then_gives_up():
    ep = established()
    conn = ep.conn
    conn.keepalive = True
    conn.keepidle, conn.keepintvl, conn.keepcnt = 10.0, 2.0, 3
    assert conn.next_timer() == pytest.approx(ep.now + 10.0)
    ep.run_timer()
    header, _ = ep.one()
    assert (header.seq, header.ack) == (1000, 5001)  # SND.UNA - 1: the peer must answer
    ep.deliver(seg(5001, 1001))  # answered: idle starts again
    assert conn.next_timer() == pytest.approx(ep.now + 2.0)
    ep.run_timer()
    assert ep.take() == []  # not idle long enough: re-armed for last receive + keepidle
    start = ep.now
    for _ in range(3):
        ep.run_timer()
        ep.one()
    ep.run_timer()
    header, _ = ep.one()
    assert header.flags == RST | ACK
    assert conn.state == TCP_CLOSE and conn.error == errno.ETIMEDOUT
    assert ep.now - start == pytest.approx(8.0 + 2 * 3 - 2.0 + 0.0, abs=2.1)


def test_keepalive_off_has_no_timer():
    ep = established()
    assert ep.conn.next_timer() is None


def test_tail_loss_probe_repairs_a_lost_last_segment():
    """RFC 8985 7: with SACK, 2 SRTT after the last ACK the last segment goes again, before the RTO."""
    ep = established(peer_options=(MssOption(MSS), SACK_PERMITTED), rtt=0.01)
    conn = flight(ep, queued=5, segments=5)
    ep.now += 0.01
    ep.deliver(seg(5001, at(4)))  # the fifth is lost
    srtt = conn.rtt.srtt
    pto = conn.next_timer() - ep.now
    # one segment out: room for a delayed ACK, but never later than the RTO would be
    assert pto == pytest.approx(min(2 * srtt + 0.2, conn.rtt.rto))
    ep.run_timer()
    header, payload = ep.one()
    assert header.seq == at(4) and len(payload) == MSS
    assert ep.stats.TCPLossProbes == 1 and ep.stats.TCPTimeouts == 0
    assert conn.next_timer() == pytest.approx(ep.now + conn.rtt.rto)
    ep.deliver(seg(5001, at(5)))
    assert conn.next_timer() is None and conn.cc.cwnd >= 10


def test_loss_probe_sends_new_data_when_it_can():
    ep = established(peer_options=(MssOption(MSS), SACK_PERMITTED), rtt=0.01)
    conn = flight(ep, queued=12, segments=10)
    ep.now += 0.001
    ep.deliver(seg(5001, at(9)))  # 9 acked: cwnd 19, the 2 queued go at once
    assert [h.seq for h, _ in ep.take()] == [at(10), at(11)]
    conn.send(b"n" * 100, ep.now)  # Nagle holds it? no: nothing small is out
    ep.take()
    ep.run_timer()
    assert ep.stats.TCPLossProbes == 1


def test_no_loss_probe_without_sack():
    ep = established(rtt=0.01)
    conn = flight(ep, queued=2, segments=2)
    assert conn.next_timer() == pytest.approx(ep.now + conn.rtt.rto)


def test_icmp_quoting_acknowledged_data_is_ignored():
    """RFC 5927 4.1 / tcp_v4_err: the quoted sequence number must lie in SND.UNA..SND.NXT."""
    ep = established()
    conn = flight(ep, queued=2, segments=2)
    conn.icmp_error(3, 4, 1200, ep.now, seq=UNA - 100)
    assert conn.path_mtu == 1500 and ep.take() == []
    conn.icmp_error(3, 4, 1200, ep.now, seq=UNA)
    assert conn.path_mtu == 1200


def test_user_timeout_clamps_the_last_rto():
    ep = established(rtt=0.01)
    conn = ep.conn
    conn.user_timeout = 1.0
    conn.send(b"u" * 100, ep.now)
    ep.take()
    start = ep.now
    times = []
    while conn.state != TCP_CLOSE:
        ep.run_timer()
        times.append(round(ep.now - start, 3))
    assert times == [0.21, 0.63, 1.0]  # the third timer clamped to the 1 s limit
    assert ep.stats.RetransSegs == 2 and conn.error == errno.ETIMEDOUT


def test_fast_retransmit_never_sends_past_snd_nxt():
    """A retransmission covers only what was sent: bytes queued behind SND.NXT (held by the
    peer's window) stay unsent, or the peer would acknowledge data we never sent."""
    ep = established(TcpConfig(congestion="reno"), window=3 * MSS)
    conn = ep.conn
    conn.send(b"x" * 5 * MSS, ep.now)
    assert len(ep.take()) == 3  # the window: 3 segments
    for _ in range(3):
        ep.deliver(seg(5001, at(0), ACK, 3 * MSS))
    out = ep.take()
    assert [(h.seq, len(p)) for h, p in out] == [(at(0), MSS)]
    conn.mss = 2 * MSS  # even with a larger MSS (PMTU up, say): never beyond SND.NXT
    conn._retransmit(at(2), 2 * MSS, ep.now)
    assert [(h.seq, len(p)) for h, p in ep.take()] == [(at(2), MSS)]
