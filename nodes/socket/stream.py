"""SOCK_STREAM's socket-layer half: `StreamSocket` (bind, listen and the accept queue, accept,
connect, shutdown, states) and `StreamProtocol`, what the transport (TCP) plugs in.

Imports inet and what it builds on."""
from __future__ import annotations

import errno
from collections import deque
from typing import Any, Iterable, Protocol

from .cmsg import Message
from .constants import (
    AF_INET, AF_INET6, AF_UNSPEC, MSG_ERRQUEUE, MSG_OOB, POLLERR, POLLHUP, POLLIN, POLLOUT, POLLRDHUP, POLLRDNORM,
    POLLWRNORM, RCV_SHUTDOWN, SEND_SHUTDOWN, SHUT_RD, SHUT_RDWR, SHUT_WR, SO_KEEPALIVE, SO_RCVBUF, SO_RCVBUFFORCE,
    SO_SNDBUF, SO_SNDBUFFORCE, SOL_SOCKET, SOL_TCP, SOMAXCONN, TCP_CLOSE, TCP_CLOSE_WAIT, TCP_CLOSING,
    TCP_ESTABLISHED, TCP_FIN_WAIT1, TCP_FIN_WAIT2, TCP_LAST_ACK, TCP_LISTEN, TCP_SYN_RECV, TCP_SYN_SENT,
    TCP_TIME_WAIT, _error,
)
from .inet import InetSocket, LayerView
from .stream_options import TcpSocketOptions

# the states of a connection that was established (socket->state SS_CONNECTED)
CONNECTED_STATES = frozenset((TCP_ESTABLISHED, TCP_CLOSE_WAIT, TCP_FIN_WAIT1, TCP_FIN_WAIT2, TCP_CLOSING,
                              TCP_LAST_ACK, TCP_TIME_WAIT))


class StreamProtocol(Protocol):
    """What a stream transport (TCP) gives the socket layer: Linux's struct proto for SOCK_STREAM.

    A typing Protocol: TCP sits below this layer (icmp | udp | tcp) and cannot import
    it, so it satisfies these methods structurally; the composition root registers it.

    Registered with `SocketLayer.register_protosw(SOCK_STREAM, IPPROTO_TCP, protocol)`.
    The socket layer keeps states, the accept queue and shutdown; the protocol
    keeps its port table (inet_csk_get_port: `get_port` returns the port or raises
    EADDRINUSE, `close` gives it back), connections and byte streams. It moves
    a connecting socket on with `sock.set_state(TCP_ESTABLISHED)` (or sets
    `sock.sk_err` and TCP_CLOSE), hands a listener its new connections with
    `listener.enqueue_accept(child)`, and calls `sock._wake()` whenever
    `recv_ready`/`send_room` change: the front ends wait on that."""

    def get_port(self, sock: "StreamSocket", address: int, port: int) -> int:
        raise NotImplementedError

    def listen(self, sock: "StreamSocket") -> None:
        raise NotImplementedError

    def connect(self, sock: "StreamSocket", address: int, port: int, now: float) -> None:
        """Start the handshake; raise EINPROGRESS-free errors only (the front end decides blocking)."""
        raise NotImplementedError

    def sendmsg(self, sock: "StreamSocket", data: bytes, flags: int, now: float) -> int:
        """Bytes taken into the send buffer (fewer than offered when it fills); EAGAIN when none fit."""
        raise NotImplementedError

    def recvmsg(self, sock: "StreamSocket", bufsize: int, flags: int, now: float) -> bytes:
        """Up to `bufsize` bytes in order; b"" at the peer's FIN; EAGAIN when none wait."""
        raise NotImplementedError

    def send_room(self, sock: "StreamSocket") -> int:
        """Free space in the send buffer (sk_stream_wspace)."""
        raise NotImplementedError

    def recv_ready(self, sock: "StreamSocket") -> bool:
        raise NotImplementedError

    def shutdown(self, sock: "StreamSocket", how: int, now: float) -> None:
        raise NotImplementedError

    def close(self, sock: "StreamSocket", now: float) -> None:
        raise NotImplementedError


class StreamSocket(TcpSocketOptions, InetSocket):
    """SOCK_STREAM's socket-layer half (inet_stream_ops + tcp_poll/tcp_recvmsg/tcp_sendmsg's checks):
    bind, listen and the accept queue, shutdown, readiness; the bytes are the transport's.

    `state` is the connection's TCP state (Linux's sk_state), set by the transport; the
    transport completes connections: it calls `enqueue_accept(child)` on a listener (False
    when the backlog is full: sk_acceptq_is_full) for a child made by `new_child`."""

    kind = "tcp"

    def __init__(self, layer: LayerView, family: int, type_: int, protocol: int, proto: StreamProtocol) -> None:
        super().__init__(layer, family, type_, protocol)
        self.proto = proto
        self.address = 0
        self.port = 0
        self.source = 0
        self.v6_any = False
        self.backlog = 0  # sk_max_ack_backlog
        self.accept_queue: deque["StreamSocket"] = deque()
        self.connected = False  # SS_CONNECTED: a connection was established once (SOCK_DONE after it ends)
        self.tcp_bind: Any = None
        self.tcp_autobound = False
        sysctl = layer.sysctl
        self.rcvbuf = sysctl.get("net.ipv4.tcp_rmem", (0, 131072, 0))[1]   # tcp_init_sock: tcp_rmem[1]
        self.sndbuf = sysctl.get("net.ipv4.tcp_wmem", (0, 16384, 0))[1]
        self._init_tcp_options()

    def _local(self) -> tuple[int, int, bool]:
        return self.address or self.source, self.port, self.v6_any and not self.source

    def _bound_port(self) -> int:
        return self.port

    def new_child(self, address: int, port: int, peer_address: int, peer_port: int) -> "StreamSocket":
        """inet_csk_clone_lock: the socket of a connection this listener accepted (not yet in any table)."""
        child = StreamSocket(self.layer, self.family, self.type, self.protocol, self.proto)
        child.address, child.port, child.source = address, port, address
        child.peer = (peer_address, peer_port)
        child.connected = True
        child.privileged, child.uid = getattr(self, "privileged", True), getattr(self, "uid", 0)
        return child

    def bind(self, address: Any) -> None:
        self._check_open()
        target = self._addr(address)
        if self.family == AF_INET6:
            if target.family != AF_INET6:
                raise _error(errno.EAFNOSUPPORT)
            if target.address is None:
                raise _error(errno.EADDRNOTAVAIL)
        elif target.family != AF_INET and not (target.family == AF_UNSPEC and target.address == 0):
            raise _error(errno.EAFNOSUPPORT)
        if target.address and self.layer.ipv4.address_type(target.address) not in ("local", "broadcast", "multicast"):
            raise _error(errno.EADDRNOTAVAIL)
        if target.port and target.port < self.layer.sysctl["net.ipv4.ip_unprivileged_port_start"] and not self.privileged:
            raise _error(errno.EACCES)
        if self.port or self.state != TCP_CLOSE:
            raise _error(errno.EINVAL)
        self.port = self.proto.get_port(self, target.address, target.port)
        self.address = target.address
        self.v6_any = target.v6_any
        self.bind_address_locked = bool(target.address)
        self.bind_port_locked = bool(target.port)

    def listen(self, backlog: int) -> None:
        """inet_listen: EINVAL unless closed or listening; autobinds; the backlog capped at somaxconn."""
        self._check_open()
        if self.state not in (TCP_CLOSE, TCP_LISTEN) or self.connected:
            raise _error(errno.EINVAL)
        self.backlog = min(max(backlog, 0), SOMAXCONN)
        if self.state != TCP_LISTEN:
            if not self.port:
                self.port = self.proto.get_port(self, self.address, 0)
                self.v6_any = self.family == AF_INET6
            self.proto.listen(self)
            self.state = TCP_LISTEN

    def enqueue_accept(self, child: "StreamSocket") -> bool:
        """inet_csk_reqsk_queue_add: False when full (sk_acceptq_is_full: more than the backlog waiting)."""
        if self.state != TCP_LISTEN or len(self.accept_queue) > self.backlog:
            return False
        self.accept_queue.append(child)
        self._wake()
        return True

    def accept(self) -> "StreamSocket":
        """inet_accept: EINVAL unless listening, EAGAIN while the queue is empty."""
        self._check_open()
        if self.state != TCP_LISTEN:
            raise _error(errno.EINVAL)
        if not self.accept_queue:
            raise _error(errno.EAGAIN)
        child = self.accept_queue.popleft()
        self.layer.sockets.add(child)
        return child

    def connect(self, address: Any, now: float) -> None:
        """__inet_stream_connect: EISCONN once connected, EALREADY while connecting, EINVAL when listening."""
        self._check_open()
        target = self._destination(address)
        if self.state == TCP_LISTEN:
            raise _error(errno.EINVAL)
        if self.state in (TCP_SYN_SENT, TCP_SYN_RECV):
            raise _error(errno.EALREADY)
        if self.connected:
            raise _error(errno.EISCONN)
        if target.family == AF_UNSPEC and not target.address:
            # inet_stream_connect: AF_UNSPEC disconnects (tcp_disconnect: RST, CLOSE); the socket can connect again
            disconnect = getattr(self.proto, "disconnect", None)
            if disconnect is not None:
                disconnect(self, now)
            self.peer = None
            self.connected = False
            self.state = TCP_CLOSE
            self.shutdown_mask = 0
            return
        assert target.address is not None
        # the transport starts the handshake (TCP_SYN_SENT) and later moves the state on; the front
        # end answers a non-blocking connect EINPROGRESS and waits on `on_ready`.
        self.peer = (target.address, target.port)
        self.sk_err = 0
        self.shutdown_mask = 0
        try:
            self.proto.connect(self, target.address, target.port, now)
        except OSError:
            self.peer = None
            raise

    def set_state(self, state: int) -> None:
        self.state = state
        if state in CONNECTED_STATES:
            self.connected = True
        self._wake()

    def poll(self) -> int:
        """tcp_poll."""
        state = self.state
        if state == TCP_LISTEN:
            return POLLIN | POLLRDNORM if self.accept_queue else 0
        mask = 0
        if self.shutdown_mask == RCV_SHUTDOWN | SEND_SHUTDOWN or state == TCP_CLOSE:
            mask |= POLLHUP
        if self.shutdown_mask & RCV_SHUTDOWN:
            mask |= POLLIN | POLLRDNORM | POLLRDHUP
        if state != TCP_SYN_SENT and state != TCP_SYN_RECV:
            if self.proto.recv_ready(self):
                mask |= POLLIN | POLLRDNORM
            if not self.shutdown_mask & SEND_SHUTDOWN:
                if state != TCP_CLOSE and self.proto.send_room(self) > 0:
                    mask |= POLLOUT | POLLWRNORM
            else:
                mask |= POLLOUT | POLLWRNORM  # tcp_poll: a shut writer never blocks (its write fails at once)
        if self.sk_err:
            mask |= POLLERR
        return mask

    def shutdown(self, how: int, now: float) -> None:
        """inet_shutdown."""
        self._check_open()
        if how not in (SHUT_RD, SHUT_WR, SHUT_RDWR):
            raise _error(errno.EINVAL)
        if self.state == TCP_CLOSE:
            self.shutdown_mask |= how + 1
            self._wake()
            raise _error(errno.ENOTCONN)
        if self.state == TCP_LISTEN:
            if (how + 1) & RCV_SHUTDOWN:  # inet_shutdown: a listener stops listening
                self.proto.shutdown(self, how, now)
                self.state = TCP_CLOSE
                self.accept_queue.clear()
            self._wake()
            return
        self.shutdown_mask |= how + 1
        self.proto.shutdown(self, how, now)
        self._wake()

    def send_room(self) -> int:
        if self.closed or self.state not in (TCP_ESTABLISHED, TCP_CLOSE_WAIT) or self.shutdown_mask & SEND_SHUTDOWN:
            return 0
        return self.proto.send_room(self)

    def recv_ready(self) -> bool:
        return self.state != TCP_LISTEN and self.proto.recv_ready(self)

    def sendmsg(self, data: bytes, address: Any, now: float, flags: int = 0,
                ancillary: Iterable[tuple[int, int, bytes]] = ()) -> int:
        """tcp_sendmsg: the error first, EPIPE after SHUT_WR or without a connection, EAGAIN while
        connecting or when the send buffer is full (the front end waits)."""
        self._check_open()
        if flags & MSG_OOB:
            raise _error(errno.EOPNOTSUPP)
        if self.sk_err:
            raise _error(self._take_error())
        if self.shutdown_mask & SEND_SHUTDOWN:
            raise _error(errno.EPIPE)
        if self.state in (TCP_SYN_SENT, TCP_SYN_RECV):
            raise _error(errno.EAGAIN)  # sk_stream_wait_connect
        if self.state not in (TCP_ESTABLISHED, TCP_CLOSE_WAIT):
            raise _error(errno.EPIPE)
        return self.proto.sendmsg(self, bytes(data), flags, now)

    def send_on_close(self, data: bytes, now: float) -> int:
        """What the program wrote before it closed its end: every byte, beyond the send buffer."""
        if self.closed or not data or self.state not in (TCP_ESTABLISHED, TCP_CLOSE_WAIT):
            return 0
        return self.proto.send_forced(self, bytes(data), now)

    def recvmsg(self, bufsize: int, now: float, flags: int = 0) -> Message:
        """tcp_recvmsg: bytes first, then the error, then 0 at EOF; ENOTCONN unconnected, EAGAIN else."""
        self._check_open()
        if bufsize < 0:
            raise _error(errno.EINVAL)
        if flags & MSG_ERRQUEUE:
            return self._recv_error(bufsize, flags)
        if flags & MSG_OOB:
            raise _error(errno.EINVAL)  # no urgent data: tcp_recv_urg
        if self.state == TCP_LISTEN:
            raise _error(errno.ENOTCONN)
        eof = False
        if self.proto.recv_ready(self) and self.state not in (TCP_SYN_SENT, TCP_SYN_RECV):
            data = self.proto.recvmsg(self, bufsize, flags, now)
            if data or bufsize == 0:
                return Message(data, None, 0, [], len(data))
            eof = True  # ready without bytes: the peer's FIN
        if self.sk_err:
            raise _error(self._take_error())
        if eof or self.shutdown_mask & RCV_SHUTDOWN:
            return Message(b"", None, 0, [], 0)
        if self.state == TCP_CLOSE:
            if self.connected:
                return Message(b"", None, 0, [], 0)  # SOCK_DONE
            raise _error(errno.ENOTCONN)
        raise _error(errno.EAGAIN)

    def getpeername(self) -> tuple:
        """inet_getname(peer=1): ENOTCONN without a peer, or in CLOSE and SYN-SENT."""
        self._check_open()
        if self.peer is None or self.state in (TCP_CLOSE, TCP_SYN_SENT) or self.state == TCP_LISTEN:
            raise _error(errno.ENOTCONN)
        return self._sockaddr(*self.peer)

    # ------------------------------------------------------------ options

    def setsockopt(self, level: int, option: int, value: "int | bytes") -> None:
        self._check_open()
        if level == SOL_TCP:
            self._set_tcp_option(option, value)
            return
        super().setsockopt(level, option, value)
        if level == SOL_SOCKET:
            if option in (SO_RCVBUF, SO_RCVBUFFORCE):
                self.tcp_rcvbuf = self.rcvbuf   # SOCK_RCVBUF_LOCK: no autotuning
            elif option in (SO_SNDBUF, SO_SNDBUFFORCE):
                self.tcp_sndbuf = self.sndbuf
            if option in (SO_KEEPALIVE, SO_RCVBUF, SO_SNDBUF, SO_RCVBUFFORCE, SO_SNDBUFFORCE):
                self._sync_connection()

    def getsockopt(self, level: int, option: int) -> "int | bytes":
        self._check_open()
        if level == SOL_TCP:
            return self._get_tcp_option(option)
        return super().getsockopt(level, option)

    def _unhash(self, now: float) -> None:
        disconnect = getattr(self.proto, "disconnect", None)
        for child in self.accept_queue:
            if disconnect is not None:
                disconnect(child, now)  # inet_csk_listen_stop -> inet_child_forget: an established child is reset
            child.close(now)
        self.accept_queue.clear()
        self.proto.close(self, now)

    def describe(self) -> dict:
        row = super().describe()
        describe = getattr(self.proto, "describe_socket", None)
        if describe is not None:
            row.update(describe(self))
        return row
