"""TcpConnection: opening (RFC 9293 3.5, 3.10.7.3), option negotiation, SYN retransmission."""
from __future__ import annotations

import errno

from nodes.tcp.states import (
    TCP_CLOSE,
    TCP_ESTABLISHED,
    TCP_SYN_RECV,
    TCP_SYN_SENT,
    TcpConfig,
)
from nodes.wire.tcp import (
    NOP,
    SACK_PERMITTED,
    MssOption,
    SackOption,
    TimestampOption,
    WindowScaleOption,
)
from tests.unit.nodes.tcp.connpair import ACK, FIN, RST, SYN, Endpoint, established, seg

LINUX_SYN = (MssOption(1460), SACK_PERMITTED, TimestampOption(0, 0), NOP, WindowScaleOption(7))


def test_connect_sends_linux_syn():
    ep = Endpoint(isn=1000, ts_offset=5)
    ep.conn.connect(0.25)
    header, payload = ep.one()
    assert header.flags == SYN and header.seq == 1000 and header.ack == 0 and payload == b""
    assert header.options == (MssOption(1460), SACK_PERMITTED, TimestampOption(255, 0), NOP, WindowScaleOption(7))
    assert 0 < header.window <= 65535
    assert ep.conn.state == TCP_SYN_SENT
    assert ep.stats.ActiveOpens == 1
    assert ep.conn.next_timer() == 1.25  # RFC 6298 2.1: the initial RTO is 1 s


def test_syn_ack_establishes_and_acks():
    ep = Endpoint(isn=1000)
    ep.conn.connect(0.0)
    ep.take()
    ep.now = 0.03
    ep.deliver(seg(5000, 1001, SYN | ACK, 29200, (MssOption(1000), SACK_PERMITTED)))
    header, _ = ep.one()
    assert (header.flags, header.seq, header.ack) == (ACK, 1001, 5001)
    assert header.options == ()  # no timestamps: the peer did not offer them
    conn = ep.conn
    assert conn.state == TCP_ESTABLISHED and ep.stats.CurrEstab == 1
    assert conn.mss == 1000 and conn.sack_on and not conn.ts_on
    assert conn.snd_wnd == 29200 and conn.snd_wscale == 0 and conn.rcv_wscale == 0
    assert abs(conn.rtt.srtt - 0.03) < 1e-6
    assert ep.changes[-1] == TCP_ESTABLISHED


def test_syn_ack_without_options_falls_back():
    """RFC 9293 3.7.1: no MSS option means 536; no option is used unless both sent it."""
    ep = established(peer_options=())
    conn = ep.conn
    assert conn.mss == 536 and not conn.sack_on and not conn.ts_on
    assert conn.snd_wscale == conn.rcv_wscale == 0
    conn.send(b"x" * 2000, ep.now)
    sizes = [len(p) for _, p in ep.take()]
    assert sizes == [536, 536, 536, 392]


def test_window_scale_and_timestamps_negotiated():
    ep = Endpoint(isn=1000, ts_offset=0)
    ep.conn.connect(0.0)
    ep.take()
    ep.now = 0.02
    ep.deliver(seg(5000, 1001, SYN | ACK, 65535,
                   (MssOption(1460), SACK_PERMITTED, TimestampOption(777, 0), NOP, WindowScaleOption(2))))
    header, _ = ep.one()
    assert header.options == (NOP, NOP, TimestampOption(20, 777))
    conn = ep.conn
    assert conn.snd_wscale == 2 and conn.rcv_wscale == 7 and conn.mss == 1448
    # Linux: the first window is the SYN's 64240 (rcv_ssthresh), aligned up to the scale
    assert header.window == 502
    ep.deliver(seg(5001, 1001, ACK, 100, (NOP, NOP, TimestampOption(800, 20))))
    assert conn.snd_wnd == 400  # the peer's window field shifted by its scale (RFC 7323 2.3)
    assert conn.info(ep.now)["options"] == "ts sack wscale:2,7"


def test_syn_ack_with_bad_ack_gets_rst():
    """RFC 9293 3.10.7.3: an ACK outside ISS < SEG.ACK <= SND.NXT: <SEQ=SEG.ACK><CTL=RST>."""
    ep = Endpoint(isn=1000)
    ep.conn.connect(0.0)
    ep.take()
    ep.deliver(seg(5000, 3000, SYN | ACK))
    header, _ = ep.one()
    assert (header.flags, header.seq) == (RST, 3000)
    assert ep.conn.state == TCP_SYN_SENT and ep.stats.OutRsts == 1


def test_rst_in_syn_sent_refuses():
    ep = Endpoint(isn=1000)
    ep.conn.connect(0.0)
    ep.take()
    ep.deliver(seg(0, 999, RST | ACK))  # ACK unacceptable: ignored
    assert ep.conn.state == TCP_SYN_SENT
    ep.deliver(seg(0, 0, RST))  # no ACK: ignored (RFC 9293 3.10.7.3)
    assert ep.conn.state == TCP_SYN_SENT
    ep.deliver(seg(0, 1001, RST | ACK))
    assert ep.conn.state == TCP_CLOSE and ep.conn.error == errno.ECONNREFUSED
    assert ep.stats.AttemptFails == 1 and ep.take() == []
    assert ep.conn.take_error() == errno.ECONNREFUSED and ep.conn.error == 0


def test_syn_retransmission_backoff_then_etimedout():
    config = TcpConfig(syn_retries=3)
    ep = Endpoint(config, isn=1000)
    ep.conn.connect(0.0)
    ep.take()
    waits = []
    for _ in range(3):
        waits.append(ep.run_timer())
        header, _ = ep.one()
        assert header.flags == SYN and header.seq == 1000
    assert waits == [1.0, 2.0, 4.0]
    assert ep.run_timer() == 8.0
    assert ep.take() == []
    assert ep.conn.state == TCP_CLOSE and ep.conn.error == errno.ETIMEDOUT
    assert ep.stats.AttemptFails == 1 and ep.stats.TCPAbortOnTimeout == 1 and ep.stats.RetransSegs == 3


def test_syn_ack_after_retransmitted_syn_uses_fallback_rto():
    """Karn (RFC 6298 5.7): no sample from a retransmitted SYN; the RTO becomes 3 s."""
    ep = Endpoint(isn=1000)
    ep.conn.connect(0.0)
    ep.run_timer()
    ep.take()
    ep.now = 1.5
    ep.deliver(seg(5000, 1001, SYN | ACK, 65535, (MssOption(1460),)))
    assert ep.conn.state == TCP_ESTABLISHED
    assert ep.conn.rtt.srtt is None and ep.conn.rtt.rto == 3.0


def test_simultaneous_open():
    """RFC 9293 figure 8: SYN-SENT + SYN -> SYN-RECV (SYN-ACK with our ISN), ACK -> ESTABLISHED."""
    ep = Endpoint(isn=1000)
    ep.conn.connect(0.0)
    ep.take()
    ep.deliver(seg(5000, 0, SYN, 65535, (MssOption(1400),)))
    header, _ = ep.one()
    assert (header.flags, header.seq, header.ack) == (SYN | ACK, 1000, 5001)
    assert ep.conn.state == TCP_SYN_RECV
    ep.deliver(seg(5001, 1001, ACK))
    assert ep.conn.state == TCP_ESTABLISHED and ep.conn.mss == 1400
    assert ep.stats.PassiveOpens == 0 and ep.stats.ActiveOpens == 1


def test_simultaneous_open_with_syn_acks_crossing():
    """Both SYN-ACKs cross: the peer's SYN-ACK in SYN-RECV completes the handshake
    (tcp_validate_incoming's exception to the SYN challenge)."""
    ep = Endpoint(isn=1000)
    ep.conn.connect(0.0)
    ep.deliver(seg(5000, 0, SYN, 65535, (MssOption(1400),)))
    ep.take()
    ep.deliver(seg(5000, 1001, SYN | ACK, 65535, (MssOption(1400),)))
    assert ep.conn.state == TCP_ESTABLISHED


def passive(config=None, options=(MssOption(1460), SACK_PERMITTED), **kwargs):
    ep = Endpoint(config, isn=9000, **kwargs)
    ep.conn.accept_syn(seg(300, 0, SYN, 65535, options, src=40000, dst=80), 0.0)
    return ep


def test_passive_open():
    ep = passive()
    header, _ = ep.one()
    assert (header.flags, header.seq, header.ack) == (SYN | ACK, 9000, 301)
    # offer_syn_ack: MSS always, SACK-permitted as the peer offered; no timestamps, no scale
    assert header.options == (MssOption(1460), NOP, NOP, SACK_PERMITTED)
    assert ep.conn.state == TCP_SYN_RECV and ep.stats.PassiveOpens == 0
    ep.now = 0.02
    ep.deliver(seg(301, 9001, ACK, 500, src=40000, dst=80))
    assert ep.conn.state == TCP_ESTABLISHED and ep.stats.PassiveOpens == 1 and ep.stats.CurrEstab == 1
    assert ep.conn.snd_wnd == 500 and ep.take() == []
    assert abs(ep.conn.rtt.srtt - 0.02) < 1e-6


def test_passive_open_bad_ack_resets():
    ep = passive()
    ep.take()
    ep.deliver(seg(301, 12345, ACK, src=40000, dst=80))
    header, _ = ep.one()
    assert (header.flags, header.seq) == (RST, 12345)
    assert ep.conn.state == TCP_SYN_RECV


def test_passive_open_retransmitted_syn_resends_syn_ack():
    ep = passive()
    ep.take()
    ep.deliver(seg(300, 0, SYN, 65535, (MssOption(1460),), src=40000, dst=80))
    header, _ = ep.one()
    assert (header.flags, header.seq, header.ack) == (SYN | ACK, 9000, 301)


def test_syn_ack_retransmission_and_give_up():
    ep = passive(TcpConfig(synack_retries=2))
    ep.take()
    assert ep.run_timer() == 1.0
    assert ep.one()[0].flags == SYN | ACK
    assert ep.run_timer() == 2.0
    assert ep.one()[0].flags == SYN | ACK
    ep.run_timer()
    assert ep.conn.state == TCP_CLOSE and ep.stats.AttemptFails == 1


def test_passive_open_with_timestamps_echoes():
    ep = passive(options=(MssOption(1460), SACK_PERMITTED, TimestampOption(4242, 0), NOP, WindowScaleOption(7)),
                 ts_offset=0)
    header, _ = ep.one()
    assert header.options == (MssOption(1460), SACK_PERMITTED, TimestampOption(0, 4242), NOP, WindowScaleOption(7))


def test_data_on_syn_sent_is_queued_until_established():
    ep = Endpoint(isn=1000)
    ep.conn.connect(0.0)
    ep.take()
    assert ep.conn.send(b"early", 0.0) == 5
    assert ep.take() == []
    ep.now = 0.01
    ep.deliver(seg(5000, 1001, SYN | ACK, 65535, (MssOption(1460),)))
    out = ep.take()
    assert [(h.flags, h.seq, p) for h, p in out] == [(ACK, 1001, b""), (ACK | 0x08, 1001, b"early")]


def test_fin_on_syn_ack_is_ignored_before_sequence():
    ep = established()
    ep.deliver(seg(5001, 1001, ACK | FIN))
    assert ep.conn.at_eof
    sack_less = [h for h, _ in ep.take() if h.option(SackOption)]
    assert sack_less == []


def test_close_in_syn_recv_sends_fin_once_established():
    """RFC 9293 3.10.4: CLOSE in SYN-RECEIVED queues a FIN for after the handshake."""
    ep = Endpoint(isn=1000)
    ep.conn.connect(0.0)
    ep.deliver(seg(5000, 0, SYN, 65535, (MssOption(1400),)))
    ep.take()
    ep.conn.close(0.0)
    assert ep.take() == []
    ep.deliver(seg(5001, 1001, ACK))
    header, _ = ep.one()
    assert (header.flags, header.seq) == (ACK | FIN, 1001)
    from nodes.tcp.states import TCP_FIN_WAIT1

    assert ep.conn.state == TCP_FIN_WAIT1


def test_shutdown_in_syn_sent_closes():
    """tcp_shutdown: SYN-SENT goes to CLOSED (tcp_close_state's table)."""
    ep = Endpoint(isn=1000)
    ep.conn.connect(0.0)
    ep.take()
    ep.conn.shutdown_send(0.0)
    assert ep.conn.state == TCP_CLOSE and ep.take() == []
