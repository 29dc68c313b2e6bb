"""`TcpLayer`: one node's TCP (tcp_prot + tcp_hashinfo + tcp_v4_rcv): the port table, the
established and listening tables, listeners' SYN and accept queues, RSTs for segments nobody
wants, the connections' timers, and the socket layer's `StreamProtocol` for SOCK_STREAM.

Before changing this file, read issue 13, RFC 9293 3.10.7.1 (segments to a closed port) and
Linux's net/ipv4/tcp_ipv4.c (tcp_v4_rcv, tcp_v4_send_reset, tcp_v4_err), inet_hashtables.c
(__inet_lookup: established first, then listeners), inet_connection_sock.c
(inet_csk_get_port, inet_csk_bind_conflict, inet_csk_listen_stop) and tcp_minisocks.c
(tcp_check_req: a full accept queue drops the handshake's last ACK).

The connection itself (`TcpConnection`, nodes/tcp/connection.py) is sans-I/O; this layer is its
world: it computes checksums, hands segments to IPv4, finds the connection of every segment, and
keeps one heap of the connections' next deadlines (the stack asks `next_timer` every loop pass).

Sockets are the socket layer's `StreamSocket`s, used structurally (this layer sits below
nodes/socket/ and may not import it): the layer reads `sock.address/port/peer/reuseaddr/...`,
sets `sock.state`, `sock.sk_err`, `sock.shutdown_mask`, calls `sock._wake()`, and for a
listener `listener.new_child(...)` / `listener.enqueue_accept(child)`.
"""
from __future__ import annotations

import errno
import heapq
import itertools
from collections import deque
from random import Random
from typing import Any

from ..ipv4 import Datagram, IPv4Layer
from ..skbuff import PACKET_HOST
from ..sysctl import Sysctl
from ..wire.addresses import IPv4Address
from ..wire.errors import WireError
from ..wire.icmp import IcmpMessage, QuotedDatagram
from ..wire.tcp import ACK, FIN, IPPROTO_TCP, RST, SYN, TcpHeader, checksum_ok
from .congestion import available
from .connection import TcpConnection
from .options import timestamp_offset
from .ports import TcpPorts, _Bind, _error
from .seq import IsnGenerator, between
from .states import (
    STATE_NAMES, TCP_CLOSE, TCP_CLOSE_WAIT, TCP_ESTABLISHED, TCP_LISTEN, TCP_SYN_RECV, TCP_SYN_SENT,
    TcpConfig, TcpStats,
)
from .sysctl_config import config_from_sysctl

SHUTDOWN_MASK = 3  # RCV_SHUTDOWN | SEND_SHUTDOWN
RCV_SHUTDOWN = 1
# TCP small queues (tcp_small_queue_check), by frames: TCP fills a device's transmit queue up to
# this many frames per loop pass, the rest waits for the next pass (the device's txqueuelen is 1000:
# one ACK burst opening a large window would overflow it and the peer's receive ring at once)
TSQ_FRAMES = 128


class TcpLayer(TcpPorts):
    """One node's TCP: see the module docstring. The socket layer's StreamProtocol for IPPROTO_TCP."""

    def __init__(self, ipv4: IPv4Layer, sysctl: Sysctl, rng: Random) -> None:
        self.ipv4 = ipv4
        self.sysctl = sysctl
        self.rng = rng
        self.stats = TcpStats()
        self.isn = IsnGenerator(bytes(rng.getrandbits(8) for _ in range(16)))
        self._ts_secret = bytes(rng.getrandbits(8) for _ in range(16))
        self.ehash: dict[tuple[int, int, int, int], TcpConnection] = {}   # (laddr, lport, raddr, rport)
        self.listeners: dict[int, list[Any]] = {}                          # port -> listening sockets
        self.bhash: dict[int, list[_Bind]] = {}                            # port -> holders
        self.sock_of: dict[TcpConnection, Any] = {}                        # connection -> its socket
        self.conn_of: dict[int, TcpConnection] = {}                        # id(sock) -> connection
        self.bind_of: dict[TcpConnection, _Bind] = {}
        self.listener_of: dict[TcpConnection, Any] = {}                    # a child not yet accepted
        self.syn_queue: dict[int, int] = {}                                # id(listener) -> SYN-RECV children
        self._timers: list[tuple[float, int, TcpConnection]] = []
        self._deadline: dict[TcpConnection, float] = {}
        self._sequence = itertools.count()
        self._config: TcpConfig | None = None
        self._held: deque[tuple[int, bytes, int, int]] = deque()   # TSQ: segments waiting for queue room
        self._route_cache = ipv4.route_cache
        self._devices = ipv4.devices
        ipv4.add_protocol(IPPROTO_TCP, self.receive, self.error, own_pmtu=True)  # tcp_v4_err vets the MTU

    # ------------------------------------------------------------------ configuration

    @property
    def config(self) -> TcpConfig:
        """The knobs as they are now (read at every new connection: `sysctl -w` applies to the next)."""
        return config_from_sysctl(self.sysctl)

    # ------------------------------------------------------------------ StreamProtocol

    def listen(self, sock: Any) -> None:
        """inet_csk_listen_start: the port is checked again as a listener's (no SO_REUSEADDR sharing)."""
        holder = getattr(sock, "tcp_bind", None)
        for other in self.bhash.get(sock.port, ()):
            if other is not holder and other.listening and self._conflict(other, sock.address, sock, listen=True):
                raise _error(errno.EADDRINUSE)
        if holder is not None:
            holder.reuseaddr, holder.reuseport = bool(sock.reuseaddr), bool(sock.reuseport)
        self.listeners.setdefault(sock.port, []).insert(0, sock)
        self.syn_queue[id(sock)] = 0

    def connect(self, sock: Any, address: int, port: int, now: float) -> None:
        """tcp_v4_connect: route, source address, a port if none, the 4-tuple unique, SYN."""
        self._now = now
        if address == 0:
            address = sock.address or 0x7F000001
        entry = self.ipv4.route_output(address, now, src=sock.address or None)
        if entry.type in ("broadcast", "multicast"):
            raise _error(errno.ENETUNREACH)
        local = sock.address or (int(entry.src) if entry.src is not None else address)
        if not sock.port:
            sock.port = self._connect_port(sock, local, address, port)
        key = (local, sock.port, address, port)
        if key in self.ehash:
            raise _error(errno.EADDRNOTAVAIL)  # __inet_check_established
        conn = self._new_connection(key, entry.pmtu, sock, now)
        self._adopt(conn, sock)
        sock.source = local
        sock.state = TCP_SYN_SENT
        conn.connect(now, user_mss=getattr(sock, "tcp_maxseg", 0))
        self._settle(conn)

    def _new_connection(self, key: tuple[int, int, int, int], path_mtu: int, sock: Any, now: float) -> TcpConnection:
        """A connection in the established table, with `sock`'s options (its own, or its listener's)."""
        local, lport, remote, rport = key
        conn = TcpConnection(
            self.config, self.stats, local, lport, remote, rport,
            isn=self.isn.isn(local, lport, remote, rport, now),
            ts_offset=timestamp_offset(self._ts_secret, local, remote),
            path_mtu=path_mtu, transmit=self._transmit, on_change=self._on_change,
            rcvbuf=getattr(sock, "tcp_rcvbuf", None), sndbuf=getattr(sock, "tcp_sndbuf", None))
        self.ehash[key] = conn
        apply = getattr(sock, "apply_tcp_options", None)
        if apply is not None:
            apply(conn)
        return conn

    def _adopt(self, conn: TcpConnection, sock: Any) -> None:
        """`sock` is `conn`'s socket from now on; its port binding is the connection's too."""
        self.sock_of[conn] = sock
        self.conn_of[id(sock)] = conn
        holder = getattr(sock, "tcp_bind", None)
        if holder is not None:
            holder.conn = conn
            self.bind_of[conn] = holder

    def conn(self, sock: Any) -> TcpConnection | None:
        return self.conn_of.get(id(sock))

    def sendmsg(self, sock: Any, data: bytes, flags: int, now: float) -> int:
        self._now = now
        conn = self.conn_of.get(id(sock))
        if conn is None:
            raise _error(errno.ENOTCONN)
        taken = conn.send(data, now)
        self._settle(conn)
        if not taken and data:
            raise _error(errno.EAGAIN)
        return taken

    def send_forced(self, sock: Any, data: bytes, now: float) -> int:
        """Every byte, beyond the send buffer: what a program wrote before it closed its end."""
        self._now = now
        conn = self.conn_of.get(id(sock))
        if conn is None or not data:
            return 0
        taken = conn.send(data, now, force=True)
        self._settle(conn)
        return taken

    def recvmsg(self, sock: Any, bufsize: int, flags: int, now: float) -> bytes:
        self._now = now
        conn = self.conn_of.get(id(sock))
        if conn is None:
            return b""
        data = conn.recv(bufsize, now, peek=bool(flags & 2))  # MSG_PEEK
        self._settle(conn)
        if data or conn.at_eof or bufsize == 0:
            return data
        raise _error(errno.EAGAIN)

    def send_room(self, sock: Any) -> int:
        conn = self.conn_of.get(id(sock))
        return conn.send_space if conn is not None else 0

    def recv_ready(self, sock: Any) -> bool:
        conn = self.conn_of.get(id(sock))
        return conn is not None and (conn.readable > 0 or conn.at_eof)

    def shutdown(self, sock: Any, how: int, now: float) -> None:
        """tcp_shutdown: SHUT_WR (or RDWR) sends FIN after the queued bytes; a listener stops listening."""
        self._now = now
        if sock.state == TCP_LISTEN:
            self._stop_listening(sock, now)
            return
        conn = self.conn_of.get(id(sock))
        if conn is not None and how in (1, 2):
            conn.shutdown_send(now)
            self._settle(conn)

    def close(self, sock: Any, now: float) -> None:
        """tcp_close: a listener's unaccepted children are reset; a connection closes (FIN or RST) and
        lives on orphaned until CLOSED, holding its port; a socket without one gives the port back."""
        self._now = now
        if sock.state == TCP_LISTEN or id(sock) in self.syn_queue:
            self._stop_listening(sock, now)
        conn = self.conn_of.pop(id(sock), None)
        holder = getattr(sock, "tcp_bind", None)
        if conn is None:
            self._put_port(holder)
            sock.tcp_bind = None
            return
        self.sock_of[conn] = None
        if holder is not None:
            holder.sock = None
        linger = getattr(sock, "linger_timeout", None)
        if linger is not None:
            conn.linger = linger
        if conn.state != TCP_CLOSE:
            conn.close(now)
        self._settle(conn)

    def disconnect(self, sock: Any, now: float) -> None:
        """tcp_disconnect (connect(AF_UNSPEC)): the connection is reset; an autobound port is given back."""
        self._now = now
        conn = self.conn_of.pop(id(sock), None)
        if conn is not None:
            self.sock_of[conn] = None
            if conn.state not in (TCP_CLOSE, TCP_LISTEN):
                conn.abort(now)
            self._settle(conn)
        if getattr(sock, "tcp_autobound", False):
            self._put_port(sock.tcp_bind)
            sock.tcp_bind, sock.port, sock.tcp_autobound = None, 0, False

    def settle_socket(self, sock: Any) -> None:
        """After a socket option changed its connection: re-arm its timers."""
        conn = self.conn_of.get(id(sock))
        if conn is not None:
            self._settle(conn)

    def push(self, sock: Any) -> None:
        """tcp_push_pending_frames, after TCP_NODELAY on or TCP_CORK off."""
        conn = self.conn_of.get(id(sock))
        if conn is not None:
            conn.push(self._now)
            self._settle(conn)

    def info(self, sock: Any) -> dict | None:
        conn = self.conn_of.get(id(sock))
        return conn.info(self._now) if conn is not None else None

    def congestion_available(self) -> tuple[str, ...]:
        return available()

    def congestion_default(self) -> str:
        return self.config.congestion

    def describe_socket(self, sock: Any) -> dict:
        conn = self.conn_of.get(id(sock))
        if conn is None:
            return {"recv_q": len(sock.accept_queue) if sock.state == TCP_LISTEN else 0,
                    "send_q": sock.backlog if sock.state == TCP_LISTEN else 0}
        row = self.describe(conn, self._now)
        row.pop("proto", None)
        return row

    def _stop_listening(self, sock: Any, now: float) -> None:
        """inet_csk_listen_stop: children still in the handshake are reset and forgotten."""
        listeners = self.listeners.get(sock.port)
        if listeners is not None and sock in listeners:
            listeners.remove(sock)
            if not listeners:
                del self.listeners[sock.port]
        self.syn_queue.pop(id(sock), None)
        for child, listener in list(self.listener_of.items()):
            if listener is sock:
                del self.listener_of[child]
                child.abort(now)
                self._settle(child)

    # ------------------------------------------------------------------ the connections' world

    def _transmit(self, conn: TcpConnection, header: TcpHeader, payload: "bytes | memoryview") -> None:
        segment = header.build(payload, conn.local_ip, conn.remote_ip)
        self.stats.OutSegs += 1
        tos = getattr(self.sock_of.get(conn), "tos", 0) or 0
        if self._held or self._queue_full(conn.remote_ip):
            # TCP small queues: the device already holds TSQ_FRAMES; the segment waits here and
            # leaves in a later pass (`tick`), instead of overflowing the queue in one burst
            self._held.append((conn.remote_ip, segment, conn.local_ip, tos))
            return
        self.ipv4.output(conn.remote_ip, IPPROTO_TCP, segment, self._now, src=conn.local_ip, tos=tos,
                         dont_fragment=True)

    def _queue_full(self, destination: int) -> bool:
        entry = self._route_cache.lookup(destination, self._now)
        if entry is None or entry.dev is None:
            return False
        device = self._devices.get(entry.dev)
        return device is not None and len(device.tx_queue) >= TSQ_FRAMES

    def _release_held(self, now: float) -> None:
        """TSQ's tasklet: what waited goes while the device queue has room (order kept)."""
        held = self._held
        while held and not self._queue_full(held[0][0]):
            destination, segment, source, tos = held.popleft()
            try:
                self.ipv4.output(destination, IPPROTO_TCP, segment, now, src=source, tos=tos, dont_fragment=True)
            except OSError:
                pass  # no route, link down: lost like any segment; TCP retransmits

    _now = 0.0

    def _on_change(self, conn: TcpConnection) -> None:
        """A connection's observable state moved: mirror it on its socket and wake the front end."""
        sock = self.sock_of.get(conn)
        listener = self.listener_of.get(conn)
        state = conn.state
        if listener is not None:
            if state == TCP_SYN_RECV:
                return
            del self.listener_of[conn]
            self.syn_queue[id(listener)] = max(self.syn_queue.get(id(listener), 1) - 1, 0)
            if state in (TCP_ESTABLISHED, TCP_CLOSE_WAIT) and listener.state == TCP_LISTEN:
                child = listener.new_child(conn.local_ip, conn.local_port, conn.remote_ip, conn.remote_port)
                child.set_state(state)
                inherit = getattr(listener, "inherit_tcp_options", None)
                if inherit is not None:
                    inherit(child)  # sk_clone_lock: SO_REUSEADDR and friends first, the port holder reads them
                holder = _Bind(conn.local_port, conn.local_ip, child)   # inet_csk_clone_lock: __inet_inherit_port
                self.bhash.setdefault(conn.local_port, []).append(holder)
                child.tcp_bind = holder
                self._adopt(conn, child)
                if not listener.enqueue_accept(child):
                    conn.abort(self._now)  # raced: the queue filled (checked before the ACK is taken)
                return
            sock = None
        if state == TCP_CLOSE:
            self._unhash(conn)
        if sock is None:
            return
        if conn.error:
            sock.sk_err = conn.take_error()
        if state == TCP_CLOSE:
            sock.shutdown_mask = SHUTDOWN_MASK  # tcp_done
        elif conn.fin_received:
            sock.shutdown_mask |= RCV_SHUTDOWN  # tcp_fin
        sock.set_state(state)

    def _unhash(self, conn: TcpConnection) -> None:
        key = (conn.local_ip, conn.local_port, conn.remote_ip, conn.remote_port)
        if self.ehash.get(key) is conn:
            del self.ehash[key]
        self.listener_of.pop(conn, None)
        holder = self.bind_of.pop(conn, None)
        sock = self.sock_of.get(conn)
        if holder is not None:
            holder.conn = None
            if sock is None or getattr(sock, "tcp_autobound", False):
                # orphans give the port back; so does an autobound socket (inet_put_port in tcp_set_state)
                self._put_port(holder)
                if sock is not None:
                    sock.tcp_bind = None
        if sock is None:
            self.sock_of.pop(conn, None)
            self._deadline.pop(conn, None)

    def _settle(self, conn: TcpConnection) -> None:
        """After every call into a connection: (re)arm its place in the timer heap."""
        deadline = conn.next_timer()
        if deadline is None:
            self._deadline.pop(conn, None)
            return
        known = self._deadline.get(conn)
        if known is None or deadline < known:
            self._deadline[conn] = deadline
            heapq.heappush(self._timers, (deadline, next(self._sequence), conn))

    def next_timer(self) -> float | None:
        if self._held:
            return self._now  # due at once: the next pass sends what TSQ held back
        timers = self._timers
        while timers:
            deadline, _, conn = timers[0]
            if self._deadline.get(conn) == deadline:
                return deadline
            heapq.heappop(timers)  # stale: re-armed earlier, or the connection is gone
        return None

    def tick(self, now: float) -> None:
        self._now = now
        if self._held:
            self._release_held(now)
        timers = self._timers
        while timers and timers[0][0] <= now:
            deadline, _, conn = heapq.heappop(timers)
            if self._deadline.get(conn) != deadline:
                continue
            del self._deadline[conn]
            conn.tick(now)
            self._settle(conn)

    # ------------------------------------------------------------------ input

    def receive(self, datagram: Datagram, now: float) -> None:
        """tcp_v4_rcv: check, find the connection (established first, then a listener) or reset."""
        self._now = now
        stats = self.stats
        if datagram.pkt_type != PACKET_HOST:
            return  # tcp_v4_rcv: only PACKET_HOST (a broadcast frame or address is dropped)
        payload = datagram.payload
        if len(payload) < 20:
            stats.InErrs += 1
            return
        if not checksum_ok(payload, datagram.src, datagram.dst):
            stats.InCsumErrors += 1
            stats.InErrs += 1
            return
        try:
            header = TcpHeader.parse(payload)
        except WireError:
            stats.InErrs += 1
            return
        stats.InSegs += 1
        src, dst = int(datagram.src), int(datagram.dst)
        data = payload[header.header_length:]
        conn = self.ehash.get((dst, header.dst_port, src, header.src_port))
        if conn is not None:
            listener = self.listener_of.get(conn)
            if listener is not None and header.flags & ACK and conn.state == TCP_SYN_RECV \
                    and len(listener.accept_queue) > listener.backlog:
                stats.ListenOverflows += 1  # tcp_check_req: the accept queue is full, the ACK is dropped
                stats.ListenDrops += 1
                return
            reopen = conn.receive(header, data, now)
            self._settle(conn)
            if not reopen:
                return
            # tcp_v4_rcv's TCP_TW_SYN: a new SYN ended a TIME-WAIT; the listener takes it
        listener = self._listener(dst, header.dst_port)
        if listener is not None:
            self._listen_input(listener, header, src, dst, now)
            return
        self._send_reset(header, len(data), src, dst, now)

    def _listener(self, address: int, port: int) -> Any:
        """__inet_lookup_listener: a socket bound to the address before a wildcard one."""
        best = None
        for sock in self.listeners.get(port, ()):
            if sock.address == address:
                return sock
            if not sock.address and best is None and not getattr(sock, "v6only", False):
                best = sock
        return best

    def _listen_input(self, listener: Any, header: TcpHeader, src: int, dst: int, now: float) -> None:
        """tcp_v4_conn_request (RFC 9293 3.10.7.2): a SYN makes a child in SYN-RECV; an ACK gets RST."""
        flags = header.flags
        if flags & RST:
            return
        if flags & ACK:
            self._send_reset(header, 0, src, dst, now)
            return
        if not flags & SYN:
            return
        stats = self.stats
        # inet_csk_reqsk_queue_is_full / sk_acceptq_is_full: drop the SYN, never reset it
        if len(listener.accept_queue) > listener.backlog:
            stats.ListenOverflows += 1
            stats.ListenDrops += 1
            return
        if self.syn_queue.get(id(listener), 0) >= max(listener.backlog, 1) or \
                self.syn_queue.get(id(listener), 0) >= self.config.max_syn_backlog:
            stats.ListenDrops += 1
            return
        try:
            entry = self.ipv4.route_output(src, now, src=dst)
        except OSError:
            stats.ListenDrops += 1
            return
        key = (dst, header.dst_port, src, header.src_port)
        conn = self._new_connection(key, entry.pmtu, listener, now)   # the listener's options
        self.sock_of[conn] = None                 # no socket until the handshake completes
        self.listener_of[conn] = listener
        self.syn_queue[id(listener)] = self.syn_queue.get(id(listener), 0) + 1
        conn.accept_syn(header, now, user_mss=getattr(listener, "tcp_maxseg", 0))
        self._settle(conn)

    def _send_reset(self, header: TcpHeader, length: int, src: int, dst: int, now: float) -> None:
        """tcp_v4_send_reset (RFC 9293 3.10.7.1): never for a RST; seq from the ACK, else ack covering it."""
        if header.flags & RST:
            return
        if header.flags & ACK:
            reply = TcpHeader(header.dst_port, header.src_port, header.ack, 0, RST, 0)
        else:
            end = header.seq + length + (1 if header.flags & SYN else 0) + (1 if header.flags & FIN else 0)
            reply = TcpHeader(header.dst_port, header.src_port, 0, end & 0xFFFFFFFF, RST | ACK, 0)
        segment = reply.build(b"", dst, src)
        self.stats.OutRsts += 1
        self.stats.OutSegs += 1
        try:
            self.ipv4.output(src, IPPROTO_TCP, segment, now, src=dst)
        except OSError:
            pass

    def error(self, message: IcmpMessage, quoted: QuotedDatagram, datagram: Datagram, now: float) -> None:
        """tcp_v4_err: an ICMP error about a segment we sent goes to its connection."""
        self._now = now
        transport = quoted.transport_bytes
        if len(transport) < 8:
            return
        sport = int.from_bytes(transport[0:2], "big")
        dport = int.from_bytes(transport[2:4], "big")
        conn = self.ehash.get((int(quoted.header.src), sport, int(quoted.header.dst), dport))
        if conn is None:
            return
        if message.type not in (3, 11, 12):
            return  # source quench, redirects: nothing for TCP (tcp_v4_err)
        seq = int.from_bytes(transport[4:8], "big")  # the quoted segment's: stale or forged ones are ignored
        if message.type == 3 and message.code == 4 and between(seq, conn.snd_una, conn.snd_nxt):
            # tcp_v4_err -> tcp_v4_mtu_reduced: the route learns the path MTU only from a believable error
            self.ipv4.update_pmtu(int(quoted.header.dst), message.next_hop_mtu, now)
        conn.icmp_error(message.type, message.code, message.next_hop_mtu, now, seq=seq)
        self._settle(conn)

    # ------------------------------------------------------------------ tables

    def table(self, now: float | None = None) -> list[dict]:
        """`ss -tan` rows of connections without a socket (orphans, TIME-WAIT, children in SYN-RECV)."""
        rows = []
        for conn in list(self.ehash.values()):
            if self.sock_of.get(conn) is None:
                rows.append(self.describe(conn, now))
        return rows

    def describe(self, conn: TcpConnection, now: float | None = None) -> dict:
        row = {
            "proto": "tcp",
            "local": f"{IPv4Address.from_wire(conn.local_ip)}:{conn.local_port}",
            "peer": f"{IPv4Address.from_wire(conn.remote_ip)}:{conn.remote_port}",
            "state": STATE_NAMES.get(conn.state, str(conn.state)),
            "recv_q": conn.readable,
            "send_q": conn.send_queue_bytes,
            "drops": 0,
        }
        if now is not None:
            row["info"] = conn.info(now)
        return row

    def counters(self) -> dict[str, int]:
        return self.stats.snmp()

    def ext_counters(self) -> dict[str, int]:
        """TcpExt (/proc/net/netstat): the counters beyond the Tcp: line."""
        snmp = self.stats.snmp()
        return {name: value for name, value in self.stats.as_dict().items() if name not in snmp}
