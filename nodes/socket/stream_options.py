"""SOL_TCP options of a stream socket (do_tcp_setsockopt / do_tcp_getsockopt, net/ipv4/tcp.c)
and struct tcp_info: `TcpSocketOptions`, StreamSocket's mixin.

The values live on the socket, so options set before connect() or on a listener reach the
connection when it exists (`apply_tcp_options`, called by TCP for a new connection) and a
listener's children (`inherit_tcp_options`, as sk_clone_lock copies them).

Imports constants only."""
from __future__ import annotations

import errno
import struct
from typing import Any

from .constants import (
    _INT, TCP_CONGESTION, TCP_CORK, TCP_DEFER_ACCEPT, TCP_FASTOPEN, TCP_INFO, TCP_KEEPCNT, TCP_KEEPIDLE,
    TCP_KEEPINTVL, TCP_LINGER2, TCP_LISTEN, TCP_MAXSEG, TCP_NODELAY, TCP_NOTSENT_LOWAT, TCP_QUICKACK, TCP_SYNCNT,
    TCP_USER_TIMEOUT, TCP_WINDOW_CLAMP, _error,
)

TCP_MIN_MSS = 88            # include/net/tcp.h: the smallest TCP_MAXSEG accepted
MAX_TCP_WINDOW = 32767      # ... and the largest
TCP_MSS_DEFAULT = 536
TCP_CA_NAME_MAX = 16
MAX_TCP_KEEPIDLE = 32767
MAX_TCP_KEEPINTVL = 32767
MAX_TCP_KEEPCNT = 127
MAX_TCP_SYNCNT = 127

# struct tcp_info (include/uapi/linux/tcp.h, Linux 6.x), up to tcpi_total_rto_time
_TCP_INFO = struct.Struct("=8B24I4Q6I4Q2I2Q6I2HI")
TCP_INFO_SIZE = _TCP_INFO.size
# tcpi_options bits
TCPI_OPT_TIMESTAMPS, TCPI_OPT_SACK, TCPI_OPT_WSCALE = 1, 2, 4
# tcpi_ca_state
_CA_STATES = {"open": 0, "disorder": 1, "cwr": 2, "recovery": 3, "loss": 4}


def pack_tcp_info(info: dict) -> bytes:
    """struct tcp_info from a connection's `info()` (times in µs, the last_* ages in ms)."""
    def us(key: str) -> int:
        return max(int(round(float(info.get(key) or 0) * 1e6)), 0) & 0xFFFFFFFF

    def ms(key: str) -> int:
        return max(int(float(info.get(key) or 0) * 1e3), 0) & 0xFFFFFFFF

    def n(key: str) -> int:
        return int(info.get(key) or 0)

    words = str(info.get("options", "")).split()
    options = 0
    snd_wscale = rcv_wscale = 0
    for word in words:
        if word == "ts":
            options |= TCPI_OPT_TIMESTAMPS
        elif word == "sack":
            options |= TCPI_OPT_SACK
        elif word.startswith("wscale:"):
            options |= TCPI_OPT_WSCALE
            snd, _, rcv = word[7:].partition(",")
            snd_wscale, rcv_wscale = int(snd or 0), int(rcv or 0)
    ca_state = _CA_STATES.get(str(info.get("ca_state", "open")).lower(), 0)
    return _TCP_INFO.pack(
        n("state"), ca_state, n("retransmits") & 0xFF, n("probes") & 0xFF, n("backoff") & 0xFF, options,
        (snd_wscale & 0xF) | (rcv_wscale & 0xF) << 4, 0,
        us("rto"), us("ato"), n("snd_mss"), n("rcv_mss"), n("unacked"), n("sacked"), n("lost"), n("retrans"), 0,
        ms("last_data_sent"), 0, ms("last_data_recv"), ms("last_ack_recv"),
        n("pmtu"), n("rcv_ssthresh"), us("rtt"), us("rttvar"), min(n("snd_ssthresh"), 0xFFFFFFFF),
        n("snd_cwnd"), n("advmss"), n("reordering") or 3, 0, n("rcv_space"), n("total_retrans"),
        0, 0, n("bytes_acked"), n("bytes_received"),
        n("segs_out") & 0xFFFFFFFF, n("segs_in") & 0xFFFFFFFF, n("notsent_bytes"), us("min_rtt"),
        n("data_segs_in") & 0xFFFFFFFF, n("data_segs_out") & 0xFFFFFFFF,
        0, ms("busy_time") * 1000, 0, 0,
        n("delivered") & 0xFFFFFFFF, 0, n("bytes_sent"), n("bytes_retrans"),
        0, 0, 0, n("snd_wnd") & 0xFFFFFFFF, n("rcv_wnd") & 0xFFFFFFFF, 0, 0, 0, 0,
    )


class TcpSocketOptions:
    """do_tcp_setsockopt / do_tcp_getsockopt for `StreamSocket` (which inherits them).

    Reads `self.proto` (the transport: `conn(sock)`, `info(sock)`, `congestion_available()`)."""

    proto: Any
    state: int

    def _init_tcp_options(self) -> None:
        self.nodelay = False
        self.cork = False
        self.quickack = True
        self.keepidle = 0.0          # 0: the sysctl's (tcp_keepalive_time)
        self.keepintvl = 0.0
        self.keepcnt = 0
        self.syncnt = 0
        self.linger2 = 0
        self.defer_accept = 0
        self.window_clamp = 0
        self.user_timeout = 0.0
        self.notsent_lowat = 0
        self.fastopen = 0
        self.tcp_maxseg = 0
        self.congestion: str | None = None
        self.tcp_rcvbuf: int | None = None     # SO_RCVBUF set by the user (SOCK_RCVBUF_LOCK)
        self.tcp_sndbuf: int | None = None

    # -------------------------------------------------------------- to the connection

    _COPIED = ("nodelay", "cork", "quickack", "keepidle", "keepintvl", "keepcnt", "syncnt", "linger2", "defer_accept",
               "window_clamp", "user_timeout", "notsent_lowat", "fastopen", "tcp_maxseg", "congestion", "tcp_rcvbuf",
               "tcp_sndbuf", "keepalive", "linger", "tos", "rcvbuf", "sndbuf", "priority", "reuseaddr", "reuseport",
               "rcvtimeo", "sndtimeo", "uid", "privileged")

    def inherit_tcp_options(self, child: Any) -> None:
        """sk_clone_lock: a listener's options are its children's."""
        for name in self._COPIED:
            if hasattr(self, name):
                setattr(child, name, getattr(self, name))

    def apply_tcp_options(self, conn: Any) -> None:
        """Everything the connection reads of its socket's options, set on it now."""
        conn.nodelay = self.nodelay
        conn.cork = self.cork
        # TCP_QUICKACK is not copied: on Linux it only leaves pingpong mode for a moment (getsockopt says 1)
        conn.keepalive = bool(getattr(self, "keepalive", False))
        if self.keepidle:
            conn.keepidle = self.keepidle
        if self.keepintvl:
            conn.keepintvl = self.keepintvl
        if self.keepcnt:
            conn.keepcnt = self.keepcnt
        conn.user_mss = self.tcp_maxseg
        conn.user_timeout = self.user_timeout
        if self.congestion is not None:
            conn.set_congestion(self.congestion)
        if self.tcp_rcvbuf is not None or self.tcp_sndbuf is not None:
            setter = getattr(conn, "set_buffers", None)
            if setter is not None:
                setter(self.tcp_rcvbuf, self.tcp_sndbuf)

    def _sync_connection(self) -> None:
        conn = self.proto.conn(self) if hasattr(self.proto, "conn") else None
        if conn is not None:
            self.apply_tcp_options(conn)
            settle = getattr(self.proto, "settle_socket", None)
            if settle is not None:
                settle(self)  # a timer the option armed (keepalive) joins the heap

    @property
    def linger_timeout(self) -> float | None:
        """SO_LINGER as seconds, or None when off (struct linger: l_onoff, l_linger)."""
        onoff, seconds = struct.unpack("=ii", bytes(getattr(self, "linger", bytes(8)))[:8])
        return float(seconds) if onoff else None

    # -------------------------------------------------------------- setsockopt

    def _set_tcp_option(self, option: int, value: "int | bytes") -> None:
        if option == TCP_CONGESTION:
            name = (value if isinstance(value, (bytes, bytearray, memoryview)) else b"")
            name = bytes(name).split(b"\0", 1)[0].decode("ascii", "replace")
            available = self.proto.congestion_available() if hasattr(self.proto, "congestion_available") else ()
            if name not in available:
                raise _error(errno.ENOENT)  # tcp_set_congestion_control: no such algorithm
            self.congestion = name
            self._sync_connection()
            return
        number = self._tcp_int(value)
        push = False
        if option == TCP_NODELAY:
            self.nodelay = bool(number)
            push = self.nodelay  # tcp_sock_set_nodelay: what Nagle held goes now
        elif option == TCP_MAXSEG:
            if number and not TCP_MIN_MSS <= number <= MAX_TCP_WINDOW:
                raise _error(errno.EINVAL)
            self.tcp_maxseg = number
        elif option == TCP_CORK:
            self.cork = bool(number)
            push = not self.cork  # __tcp_sock_set_cork: uncorking pushes
        elif option == TCP_KEEPIDLE:
            if not 1 <= number <= MAX_TCP_KEEPIDLE:
                raise _error(errno.EINVAL)
            self.keepidle = float(number)
        elif option == TCP_KEEPINTVL:
            if not 1 <= number <= MAX_TCP_KEEPINTVL:
                raise _error(errno.EINVAL)
            self.keepintvl = float(number)
        elif option == TCP_KEEPCNT:
            if not 1 <= number <= MAX_TCP_KEEPCNT:
                raise _error(errno.EINVAL)
            self.keepcnt = number
        elif option == TCP_SYNCNT:
            if not 1 <= number <= MAX_TCP_SYNCNT:
                raise _error(errno.EINVAL)
            self.syncnt = number
        elif option == TCP_LINGER2:
            self.linger2 = number
        elif option == TCP_DEFER_ACCEPT:
            self.defer_accept = max(number, 0)
        elif option == TCP_WINDOW_CLAMP:
            if number and number < 1152:  # SOCK_MIN_RCVBUF / 2
                number = 1152
            self.window_clamp = number
        elif option == TCP_QUICKACK:
            self.quickack = bool(number)
        elif option == TCP_USER_TIMEOUT:
            if number < 0:
                raise _error(errno.EINVAL)
            self.user_timeout = number / 1000.0
        elif option == TCP_NOTSENT_LOWAT:
            self.notsent_lowat = number
        elif option == TCP_FASTOPEN:
            if self.state not in (TCP_LISTEN, 7):
                raise _error(errno.EINVAL)
            self.fastopen = number
        else:
            raise _error(errno.ENOPROTOOPT)
        self._sync_connection()
        if push and hasattr(self.proto, "push"):
            self.proto.push(self)

    @staticmethod
    def _tcp_int(value: "int | bytes") -> int:
        """do_tcp_setsockopt: optlen < sizeof(int) is EINVAL."""
        if isinstance(value, int):
            return value
        raw = bytes(value)
        if len(raw) < 4:
            raise _error(errno.EINVAL)
        return _INT.unpack_from(raw)[0]

    # -------------------------------------------------------------- getsockopt

    def _get_tcp_option(self, option: int) -> "int | bytes":
        conn = self.proto.conn(self) if hasattr(self.proto, "conn") else None
        if option == TCP_INFO:
            info = self.proto.info(self) if hasattr(self.proto, "info") else None
            return pack_tcp_info(info or {"state": self.state})
        if option == TCP_CONGESTION:
            name = conn.congestion_name if conn is not None else (self.congestion or self.proto.congestion_default())
            return name.encode("ascii").ljust(TCP_CA_NAME_MAX, b"\0")
        if option == TCP_MAXSEG:
            if conn is not None and conn.state not in (TCP_LISTEN, 7):
                info = self.proto.info(self) or {}
                return int(info.get("snd_mss") or TCP_MSS_DEFAULT)
            return self.tcp_maxseg or TCP_MSS_DEFAULT
        if option == TCP_KEEPIDLE:
            return int(self.keepidle or self.proto.config.keepalive_time)
        if option == TCP_KEEPINTVL:
            return int(self.keepintvl or self.proto.config.keepalive_intvl)
        if option == TCP_KEEPCNT:
            return int(self.keepcnt or self.proto.config.keepalive_probes)
        if option == TCP_SYNCNT:
            return int(self.syncnt or self.proto.config.syn_retries)
        if option == TCP_USER_TIMEOUT:
            return int(self.user_timeout * 1000)
        values = {TCP_NODELAY: int(self.nodelay), TCP_CORK: int(self.cork), TCP_QUICKACK: int(self.quickack),
                  TCP_LINGER2: self.linger2, TCP_DEFER_ACCEPT: self.defer_accept,
                  TCP_WINDOW_CLAMP: self.window_clamp, TCP_NOTSENT_LOWAT: self.notsent_lowat,
                  TCP_FASTOPEN: self.fastopen}
        if option in values:
            return values[option]
        raise _error(errno.ENOPROTOOPT)
