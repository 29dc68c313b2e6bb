"""One TCP connection (RFC 9293), sans-I/O: Linux's struct tcp_sock and its timers.

Before changing this package's connection, read RFC 9293 section 3.10 (event processing),
RFC 5961 (RST/SYN/ACK attacks: challenge ACKs), RFC 7323, RFC 2018/6675, RFC 5681/6582,
RFC 6298, RFC 1122 4.2.3 (Nagle, SWS, delayed ACK, keepalive) and Linux's net/ipv4/tcp.c
(tcp_close, tcp_shutdown, tcp_recvmsg's tcp_cleanup_rbuf, tcp_get_info), tcp_input.c
(tcp_rcv_state_process, tcp_rcv_synsent_state_process, tcp_validate_incoming, tcp_ack,
tcp_fin, tcp_data_queue, __tcp_ack_snd_check), tcp_output.c (tcp_write_xmit,
__tcp_select_window, tcp_send_fin, tcp_xmit_probe_skb) and tcp_timer.c.

The class is split by concern over five modules, all methods of one object:

    connection.py   construction, the user calls (connect, send, recv, close...), info()
    input.py        a segment arrives (RFC 9293 3.10.7): header prediction, the general path,
                    data, FIN, delayed ACKs, receive-buffer autotuning
    ack.py          ACK processing: window, RTT, congestion control, NewReno/SACK recovery
    output.py       what leaves: tcp_write_xmit, retransmissions, tail loss probes, ACKs, RSTs,
                    the receive window
    timers.py       retransmission/SYN/persist/delayed-ACK/keepalive/FIN-WAIT-2/TIME-WAIT

Sans-I/O: every call takes `now` (seconds); segments leave through `transmit(conn, header,
payload)`; `on_change(conn)` says something a socket can observe may have changed.

The send buffer is one bytearray holding every byte from SND.UNA (unacked, then unsent);
deleting its head is O(1) in CPython, so an ACK costs no copy. Retransmissions take slices
of it; per-segment state is not kept (RTT from timestamps, or one timed segment as RFC 6298
with Karn's rule; loss state on the SACK scoreboard).

Not modelled: urgent data (delivered in line), TCP Fast Open, ECN, RACK (loss is detected
by RFC 6675's DupThresh and the RTO; the tail loss probe of RFC 8985 7 is here), PRR, undo of
spurious retransmissions (D-SACK, F-RTO), SO_LINGER with a non-zero time (close never blocks
here: the layer decides), TCP_DEFER_ACCEPT, MD5/AO, the SYN-SENT data of a SYN-ACK.
"""
from __future__ import annotations

import errno
from typing import Callable

from nodes.tcp import congestion
from nodes.tcp.input import InputMixin
from nodes.tcp.options import OptionSettings, TimestampState
from nodes.tcp.output import OutputMixin
from nodes.tcp.rtt import RttEstimator
from nodes.tcp.seq import SEQ_MASK, between, seq_add, seq_diff
from nodes.tcp.states import (
    CURR_ESTAB_STATES,
    STATE_NAMES,
    TCP_CLOSE,
    TCP_CLOSE_WAIT,
    TCP_CLOSING,
    TCP_ESTABLISHED,
    TCP_FIN_WAIT1,
    TCP_FIN_WAIT2,
    TCP_LAST_ACK,
    TCP_SYN_RECV,
    TCP_SYN_SENT,
    TCP_TIME_WAIT,
    TcpConfig,
    TcpStats,
)
from nodes.tcp.timers import TimerMixin

# ip_rt_min_pmtu: a frag-needed below it lowers the path MTU only to 552 (512 + 40)
_MIN_PMTU = 552

# tcp_need_reset(): states in which an abort tells the peer with a RST.
_RESET_STATES = frozenset((TCP_ESTABLISHED, TCP_CLOSE_WAIT, TCP_FIN_WAIT1, TCP_FIN_WAIT2, TCP_SYN_RECV))


class TcpConnection(InputMixin, OutputMixin, TimerMixin):
    """One connection from SYN-SENT or SYN-RECV to CLOSED (see the module docstring)."""

    __slots__ = (
        "config", "stats", "local_ip", "local_port", "remote_ip", "remote_port", "path_mtu",
        "_transmit", "_on_change", "state", "error", "soft_error", "passive", "orphan",
        # send sequence space (RFC 9293 3.3.1)
        "iss", "snd_una", "snd_nxt", "snd_wnd", "max_snd_wnd", "snd_wl1", "snd_wl2", "snd_sml",
        "_sbuf", "_sbuf_seq", "sndbuf", "_sndbuf_locked", "fin_queued", "fin_sent", "fin_seq",
        # receive sequence space
        "irs", "rcv_wnd", "rcv_wup", "rq", "rcvbuf", "rcv_mss", "rcv_ssthresh", "_rcvbuf_locked", "_pmtu_align",
        # options
        "_settings", "_offer", "_neg", "_ts", "ts_on", "sack_on", "snd_wscale", "rcv_wscale",
        "mss", "advmss", "window_clamp", "syn_tsval",
        # reliability and congestion
        "rtt", "cc", "sb", "dupacks", "retransmits", "retrans_stamp", "_rtt_seq", "_rtt_time",
        "_cwnd_limited", "probes", "_persist_backoff", "keep_probes", "_chal_time", "_chal_count", "_oow_time", "_probe_start",
        "ack_pending", "_quick", "_ato", "_lrcvtime", "_pingpong",
        "_rcv_rtt", "_rrtt_seq", "_rrtt_time", "_copied", "_rcvq_mark", "_rcvq_time", "_rcvq_space",
        # timers (deadlines, seconds, or None)
        "t_rtx", "t_persist", "t_delack", "t_keep", "t_wait", "_pto", "_tlp_out",
        # socket options
        "nodelay", "cork", "keepalive", "keepidle", "keepintvl", "keepcnt", "user_mss", "linger",
        "quickack", "user_timeout",
        # statistics (ss -ti)
        "bytes_sent", "bytes_retrans", "bytes_acked", "bytes_received", "segs_out", "segs_in",
        "data_segs_out", "data_segs_in", "total_retrans", "last_data_sent", "last_data_recv",
        "last_ack_recv", "last_rcv", "min_rtt", "delivered", "start_time",
    )

    def __init__(
        self,
        config: TcpConfig,
        stats: TcpStats,
        local_ip: int,
        local_port: int,
        remote_ip: int,
        remote_port: int,
        *,
        isn: int,
        ts_offset: int,
        path_mtu: int,
        transmit: Callable,
        on_change: Callable,
        rcvbuf: int | None = None,
        sndbuf: int | None = None,
    ) -> None:
        self.config = config
        self.stats = stats
        self.local_ip = local_ip
        self.local_port = local_port
        self.remote_ip = remote_ip
        self.remote_port = remote_port
        self.path_mtu = path_mtu
        self._transmit = transmit
        self._on_change = on_change
        self.state = TCP_CLOSE
        self.error = 0
        self.soft_error = 0
        self.passive = False
        self.orphan = False
        isn &= SEQ_MASK
        self.iss = isn
        self.snd_una = self.snd_nxt = isn
        self.snd_wnd = self.max_snd_wnd = 0
        self.snd_wl1 = self.snd_wl2 = 0
        self.snd_sml = isn
        self._sbuf = bytearray()
        self._sbuf_seq = seq_add(isn, 1)
        self._sndbuf_locked = sndbuf is not None
        self.sndbuf = sndbuf if sndbuf is not None else config.wmem
        self.fin_queued = self.fin_sent = False
        self.fin_seq = 0
        self.irs = 0
        self.rcv_wnd = self.rcv_wup = 0
        self.rq = None
        self.rcvbuf = rcvbuf if rcvbuf is not None else config.rmem
        self._rcvbuf_locked = rcvbuf is not None
        self.rcv_mss = 536
        self.rcv_ssthresh = 0
        self._pmtu_align = None
        self._settings = OptionSettings(config.timestamps, config.window_scaling, config.sack)
        self._offer = None
        self._neg = None
        self._ts = TimestampState(offset=ts_offset)
        self.ts_on = self.sack_on = False
        self.snd_wscale = self.rcv_wscale = 0
        self.mss = 536
        self.advmss = max(path_mtu - 40, 256)
        self.window_clamp = 65535
        self.syn_tsval = 0
        self.rtt = RttEstimator(config.rto_min, config.rto_max, config.rto_initial)
        self.cc = congestion.create(config.congestion, config.initial_cwnd)
        self.sb = None
        self.dupacks = 0
        self.retransmits = 0
        self.retrans_stamp = None
        self._rtt_seq = None
        self._rtt_time = 0.0
        self._cwnd_limited = False
        self.probes = 0
        self._persist_backoff = 0
        self.keep_probes = 0
        self._chal_time = -1.0
        self._chal_count = 0
        self._oow_time = float("-inf")
        self._probe_start = 0.0
        self.ack_pending = False
        self._quick = 0
        self._ato = 0.0
        self._lrcvtime = 0.0
        self._pingpong = False
        self._rcv_rtt = 0.0
        self._rrtt_seq = None
        self._rrtt_time = 0.0
        self._copied = self._rcvq_mark = self._rcvq_space = 0
        self._rcvq_time = 0.0
        self.t_rtx = self.t_persist = self.t_delack = self.t_keep = self.t_wait = None
        self._pto = False  # t_rtx is a tail loss probe's timeout, not the RTO
        self._tlp_out = False
        self.nodelay = False
        self.cork = False
        self.keepalive = False
        self.keepidle = config.keepalive_time
        self.keepintvl = config.keepalive_intvl
        self.keepcnt = config.keepalive_probes
        self.user_mss = 0
        self.linger = None
        self.quickack = False
        self.user_timeout = 0.0
        self.bytes_sent = self.bytes_retrans = self.bytes_acked = self.bytes_received = 0
        self.segs_out = self.segs_in = self.data_segs_out = self.data_segs_in = 0
        self.total_retrans = 0
        self.last_data_sent = self.last_data_recv = self.last_ack_recv = self.last_rcv = 0.0
        self.min_rtt = None
        self.delivered = 0
        self.start_time = 0.0

    def __repr__(self) -> str:
        return (f"<TcpConnection {STATE_NAMES.get(self.state, self.state)} "
                f"{self.local_port}->{self.remote_port}>")

    # -- state ---------------------------------------------------------------------------
    def _set_state(self, new: int) -> None:
        """tcp_set_state(): CurrEstab by state, EstabResets and AttemptFails on the way to CLOSED."""
        old = self.state
        if old == new:
            return
        stats = self.stats
        if old in CURR_ESTAB_STATES:
            stats.CurrEstab -= 1
        if new in CURR_ESTAB_STATES:
            stats.CurrEstab += 1
        if new == TCP_CLOSE:
            if old == TCP_ESTABLISHED or old == TCP_CLOSE_WAIT:
                stats.EstabResets += 1
            elif old == TCP_SYN_SENT or old == TCP_SYN_RECV:
                stats.AttemptFails += 1
            self.t_rtx = self.t_persist = self.t_delack = self.t_keep = self.t_wait = None
        elif new == TCP_TIME_WAIT:
            stats.TW += 1
            self.t_rtx = self.t_persist = self.t_delack = self.t_keep = None
        self.state = new

    def _done(self, err: int = 0) -> None:
        """tcp_done(): CLOSED, with `err` as the socket's error if given."""
        if err:
            self.error = err
        self._set_state(TCP_CLOSE)

    # -- opening -------------------------------------------------------------------------
    def connect(self, now: float, *, user_mss: int = 0) -> None:
        """Active open (RFC 9293 3.10.1): send a SYN, SYN-SENT."""
        if self.state != TCP_CLOSE:
            raise OSError(errno.EISCONN, "connection already started")
        if user_mss:
            self.user_mss = user_mss
        self.start_time = self._rtt_time = now
        self.last_rcv = now
        self._offer = self._make_offer()
        self.stats.ActiveOpens += 1
        self._set_state(TCP_SYN_SENT)
        self.snd_nxt = seq_add(self.iss, 1)
        self.syn_tsval = self._tsval(now)
        self._send_syn(now)
        self.t_rtx = now + self.rtt.rto

    def accept_syn(self, syn, now: float, *, user_mss: int = 0) -> None:
        """Passive open: answer a listener's SYN with a SYN-ACK, SYN-RECV (tcp_conn_request)."""
        if self.state != TCP_CLOSE:
            raise OSError(errno.EISCONN, "connection already started")
        if user_mss:
            self.user_mss = user_mss
        self.passive = True
        self.start_time = self._rtt_time = now
        self.last_rcv = now
        self.segs_in += 1
        peer = self._parse_peer_syn(syn)
        self._offer = self._make_offer(peer)
        self._syn_received(syn, peer, now)
        self._set_state(TCP_SYN_RECV)
        self.snd_nxt = seq_add(self.iss, 1)
        self.syn_tsval = self._tsval(now)
        self._send_syn(now)
        self.t_rtx = now + self.rtt.rto

    # -- user data -----------------------------------------------------------------------
    @property
    def send_space(self) -> int:
        """sk_stream_wspace: send buffer room left (unacked and unsent bytes count)."""
        return max(0, self.sndbuf - len(self._sbuf))

    @property
    def send_queue_bytes(self) -> int:
        """Bytes not yet acknowledged (ss's Send-Q: unacked plus unsent)."""
        return len(self._sbuf)

    @property
    def notsent_bytes(self) -> int:
        sent = seq_diff(self.snd_nxt, self._sbuf_seq)
        return max(0, len(self._sbuf) - max(sent, 0))

    def send(self, data, now: float, *, force: bool = False) -> int:
        """Queue bytes to send (tcp_sendmsg) and push what the windows allow; bytes taken."""
        state = self.state
        if self.fin_queued or state not in (TCP_SYN_SENT, TCP_SYN_RECV, TCP_ESTABLISHED, TCP_CLOSE_WAIT):
            return 0
        count = len(data)
        if not force:
            room = self.sndbuf - len(self._sbuf)
            if room <= 0:
                return 0
            if count > room:
                data = memoryview(data)[:room]
                count = room
        if not count:
            return 0
        self._sbuf += data
        if state == TCP_ESTABLISHED or state == TCP_CLOSE_WAIT:
            self._write_xmit(now)
        return count

    def push(self, now: float) -> None:
        """tcp_push_pending_frames(): send what the windows allow now. The socket layer calls it
        after turning TCP_NODELAY on or TCP_CORK off (tcp_sock_set_nodelay / _cork)."""
        self._write_xmit(now)

    @property
    def readable(self) -> int:
        rq = self.rq
        return rq.readable if rq is not None else 0

    @property
    def at_eof(self) -> bool:
        """The peer's FIN arrived and every byte before it was read."""
        rq = self.rq
        return rq is not None and rq.fin_received and not rq.readable

    @property
    def fin_received(self) -> bool:
        """The peer's FIN arrived, read or not (Linux's RCV_SHUTDOWN, set by tcp_fin)."""
        rq = self.rq
        return rq is not None and rq.fin_received

    def recv(self, max_bytes: int, now: float, *, peek: bool = False) -> bytes:
        """In-order bytes (b"" when none wait); reading may send a window update (tcp_cleanup_rbuf)."""
        rq = self.rq
        if rq is None or not rq.readable or max_bytes <= 0:
            return b""
        if peek:
            return rq.peek(max_bytes)
        data = rq.read(max_bytes)
        if self.config.moderate_rcvbuf and not self._rcvbuf_locked:
            self._rcv_space_adjust(now, len(data))
        if self.state in (TCP_ESTABLISHED, TCP_FIN_WAIT1, TCP_FIN_WAIT2) and not rq.fin_received:
            # tcp_cleanup_rbuf: ACK when the window would at least double.
            now_window = max(0, seq_diff(seq_add(self.rcv_wup, self.rcv_wnd), rq.rcv_nxt))
            if 2 * now_window <= self.window_clamp:
                new_window = self._window_candidate()
                if new_window and new_window >= 2 * now_window:
                    self._send_ack(now)
        return data

    def _rcv_space_adjust(self, now: float, count: int) -> None:
        """tcp_rcv_space_adjust() (receive-buffer autotuning): once per receiver RTT, grow the
        buffer to hold twice what the application read in the last RTT, up to tcp_rmem[2]."""
        self._copied += count
        rtt = self._rcv_rtt
        if not rtt or now - self._rcvq_time < rtt:
            return
        copied = self._copied - self._rcvq_mark
        space = self._rcvq_space
        if copied > space and space > 0:
            rcvwin = 2 * copied + 16 * self.advmss
            rcvwin += 2 * (rcvwin * (copied - space) // space)
            rcvbuf = min(2 * rcvwin, self.config.rmem_max)  # tcp_space_from_win
            if rcvbuf > self.rcvbuf:
                self.rcvbuf = rcvbuf
                self.rq.buffer_size = rcvbuf
                self.rq.ofo_limit = rcvbuf
            self._rcvq_space = copied
        self._rcvq_mark = self._copied
        self._rcvq_time = now

    # -- closing -------------------------------------------------------------------------
    def shutdown_send(self, now: float) -> None:
        """SHUT_WR (tcp_shutdown): a FIN after the queued bytes."""
        state = self.state
        if state == TCP_SYN_SENT:
            self._done()
            self._on_change(self)
            return
        if state in (TCP_ESTABLISHED, TCP_SYN_RECV, TCP_CLOSE_WAIT) and not self.fin_queued:
            self._queue_fin(now)

    def _queue_fin(self, now: float) -> None:
        """tcp_close_state() + tcp_send_fin(): ESTABLISHED -> FIN-WAIT-1, CLOSE-WAIT -> LAST-ACK."""
        self.fin_queued = True
        state = self.state
        if state == TCP_ESTABLISHED:
            self._set_state(TCP_FIN_WAIT1)
        elif state == TCP_CLOSE_WAIT:
            self._set_state(TCP_LAST_ACK)
        else:
            return  # SYN-RECV: the FIN goes once the handshake completes
        self._write_xmit(now)

    def close(self, now: float) -> None:
        """tcp_close(): RST with unread data or SO_LINGER 0, else a FIN; the connection goes on
        orphaned (FIN-WAIT-2 timeout, TIME-WAIT) until CLOSED."""
        state = self.state
        self.orphan = True
        if state == TCP_CLOSE or state == TCP_TIME_WAIT:
            return
        rq = self.rq
        if state == TCP_SYN_SENT:
            self._done()
        elif rq is not None and rq.readable:
            # RFC 9293 3.10.4 / tcp_close: unread data means the peer must know it was lost.
            self.stats.TCPAbortOnClose += 1
            self._send_active_reset(now)
            self._done()
        elif self.linger is not None and self.linger == 0:
            self.stats.TCPAbortOnLinger += 1
            if state in _RESET_STATES:
                self._send_active_reset(now)
            self._done()
        else:
            if state in (TCP_ESTABLISHED, TCP_CLOSE_WAIT, TCP_SYN_RECV) and not self.fin_queued:
                self._queue_fin(now)
            if self.state == TCP_FIN_WAIT2 and self.t_wait is None:
                self.t_wait = now + self.config.fin_timeout
        self._on_change(self)

    def abort(self, now: float, send_rst: bool = True) -> None:
        """tcp_disconnect(): RST (in the states that need one), CLOSED, ECONNRESET."""
        state = self.state
        if state == TCP_CLOSE:
            return
        if send_rst and state in _RESET_STATES:
            self._send_active_reset(now)
        if state != TCP_TIME_WAIT:
            self.error = errno.ECONNRESET
        self._done()
        self._on_change(self)

    def take_error(self) -> int:
        """SO_ERROR: the pending error, cleared."""
        err = self.error
        self.error = 0
        return err

    # -- ICMP ----------------------------------------------------------------------------
    def icmp_error(self, type_: int, code: int, next_hop_mtu: int, now: float, *, seq: int | None = None) -> None:
        """tcp_v4_err(): frag-needed lowers the path MTU; unreachable aborts a connect.

        `seq` is the sequence number the ICMP message quotes, when the layer has it: one outside
        SND.UNA..SND.NXT is stale or forged and ignored (RFC 5927 4.1, OutOfWindowIcmps)."""
        state = self.state
        if state == TCP_CLOSE or state == TCP_TIME_WAIT:
            return
        if seq is not None and not between(seq & SEQ_MASK, self.snd_una, self.snd_nxt):
            return
        if type_ == 3 and code == 4:
            self._mtu_reduced(next_hop_mtu, now)
            return
        if type_ == 3:
            err = _UNREACH_ERRNO.get(code, errno.EHOSTUNREACH)
        elif type_ == 11:
            err = errno.EHOSTUNREACH
        elif type_ == 12:
            err = errno.EPROTO
        else:
            return
        if state == TCP_SYN_SENT or state == TCP_SYN_RECV:
            self._done(err)
            self._on_change(self)
        else:
            self.soft_error = err

    def _mtu_reduced(self, mtu: int, now: float) -> None:
        """tcp_v4_mtu_reduced() + tcp_simple_retransmit(): a smaller MSS, resend what is in flight."""
        if mtu <= 0 or mtu >= self.path_mtu:
            return
        self.path_mtu = max(mtu, _MIN_PMTU)
        neg = self._neg
        if neg is None:
            return
        old = self.mss
        self.mss = max(neg.send_mss_for_path_mtu(self.path_mtu), 8)
        if self.sb is not None:
            self.sb.mss = self.mss
        if self.mss < old and self.snd_una != self.snd_nxt and self.state not in (TCP_SYN_SENT, TCP_SYN_RECV):
            # tcp_simple_retransmit: each segment in flight is cut to the new MSS (tcp_fragment)
            self._pmtu_align = (self.snd_una, old, self.snd_nxt)
            self._enter_loss(now, reduce_cwnd=False)
            self._write_xmit(now)

    # -- socket options ------------------------------------------------------------------
    def set_buffers(self, rcvbuf: int | None, sndbuf: int | None) -> None:
        """SO_RCVBUF / SO_SNDBUF (already doubled by the socket layer, as Linux does)."""
        if rcvbuf is not None:
            self.rcvbuf = rcvbuf
            self._rcvbuf_locked = True
            if self.rq is not None:
                self.rq.buffer_size = max(rcvbuf, 1)
        if sndbuf is not None:
            self.sndbuf = sndbuf
            self._sndbuf_locked = True

    def set_congestion(self, name: str) -> None:
        """TCP_CONGESTION: a fresh algorithm keeping cwnd and ssthresh (OSError ENOENT if unknown)."""
        if name == self.cc.name:
            return
        new = congestion.create(name, self.config.initial_cwnd)
        old = self.cc
        new.cwnd, new.ssthresh = old.cwnd, old.ssthresh
        self.cc = new

    @property
    def congestion_name(self) -> str:
        return self.cc.name

    # -- ss -ti ----------------------------------------------------------------------------
    def info(self, now: float) -> dict:
        """tcp_get_info(): what `ss -ti` and TCP_INFO show."""
        rtt = self.rtt
        neg = self._neg
        sb = self.sb
        srtt = rtt.srtt
        return {
            "state": self.state,
            "retransmits": self.retransmits,
            "probes": self.probes,
            "backoff": rtt.backoff or self._persist_backoff,  # icsk_backoff counts zero-window probes too
            "options": neg.ss_options() if neg is not None else "",
            "rto": rtt.rto,
            "ato": self.config.delack_min,
            "snd_mss": self.mss,
            "rcv_mss": self.rcv_mss,
            "advmss": self.advmss,
            "pmtu": self.path_mtu,
            "rtt": srtt if srtt is not None else 0.0,
            "rttvar": rtt.rttvar,
            "snd_ssthresh": self.cc.ssthresh,
            "snd_cwnd": self.cc.cwnd,
            "rcv_space": self._rcvq_space,
            "rcv_ssthresh": self.rcv_ssthresh,
            "snd_wnd": self.snd_wnd,
            "rcv_wnd": self.rcv_wnd,
            "bytes_sent": self.bytes_sent,
            "bytes_retrans": self.bytes_retrans,
            "bytes_acked": self.bytes_acked,
            "bytes_received": self.bytes_received,
            "segs_out": self.segs_out,
            "segs_in": self.segs_in,
            "data_segs_out": self.data_segs_out,
            "data_segs_in": self.data_segs_in,
            "total_retrans": self.total_retrans,
            "lost": 0 if sb is None else (seq_diff(self.snd_nxt, self.snd_una) + self.mss - 1) // self.mss
            if self.cc.state is congestion.CongestionState.LOSS else 0,
            "sacked": 0 if sb is None else (sb.sacked_bytes + self.mss - 1) // self.mss,
            "unacked": (seq_diff(self.snd_nxt, self.snd_una) + self.mss - 1) // self.mss,
            "reordering": 3,
            "last_data_sent": now - self.last_data_sent if self.last_data_sent else 0.0,
            "last_data_recv": now - self.last_data_recv if self.last_data_recv else 0.0,
            "last_ack_recv": now - self.last_ack_recv if self.last_ack_recv else 0.0,
            "min_rtt": self.min_rtt if self.min_rtt is not None else 0.0,
            "delivered": self.delivered,
            "busy_time": now - self.start_time if self.start_time else 0.0,
            "congestion": self.cc.name,
            "notsent_bytes": self.notsent_bytes,
        }


# icmp_err_convert[] (net/ipv4/icmp.c) for destination unreachable codes 0..15.
_UNREACH_ERRNO = {
    0: errno.ENETUNREACH, 1: errno.EHOSTUNREACH, 2: errno.ENOPROTOOPT, 3: errno.ECONNREFUSED,
    4: errno.EMSGSIZE, 5: errno.EOPNOTSUPP, 6: errno.ENETUNREACH, 7: errno.EHOSTDOWN,
    8: errno.ENONET, 9: errno.ENETUNREACH, 10: errno.EHOSTUNREACH, 11: errno.ENETUNREACH,
    12: errno.EHOSTUNREACH, 13: errno.EHOSTUNREACH, 14: errno.EHOSTUNREACH, 15: errno.EHOSTUNREACH,
}

__all__ = ["TcpConnection", "TCP_CLOSING", "TCP_LAST_ACK"]
