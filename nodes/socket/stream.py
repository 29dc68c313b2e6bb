"""SOCK_STREAM's socket-layer half: `StreamSocket` (bind, listen and the accept queue, accept,
connect, shutdown, states) and `StreamProtocol`, what the transport (TCP) plugs in.

Imports inet and what it builds on."""
from __future__ import annotations

import errno
from collections import deque
from typing import Any, Iterable, Protocol

from .cmsg import Message
from .constants import (
    AF_INET, AF_INET6, AF_UNSPEC, POLLERR, POLLHUP, POLLIN, POLLOUT, POLLRDHUP, POLLRDNORM, POLLWRNORM,
    RCV_SHUTDOWN, SEND_SHUTDOWN, SHUT_RD, SHUT_RDWR, SHUT_WR, SOMAXCONN, TCP_CLOSE, TCP_ESTABLISHED, TCP_LISTEN,
    TCP_SYN_SENT, _error,
)
from .inet import InetSocket, LayerView


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


class StreamSocket(InetSocket):
    """SOCK_STREAM's socket-layer half (inet_stream_ops): bind, listen/accept queue, shutdown, states.

    The transport behind `protocol` completes connections: it calls
    `enqueue_accept(child)` on a listener (False when the backlog is full:
    sk_acceptq_is_full) and `set_state` on a connecting socket."""

    kind = "tcp"

    def __init__(self, layer: LayerView, family: int, type_: int, protocol: int, proto: StreamProtocol) -> None:
        super().__init__(layer, family, type_, protocol)
        self.proto = proto
        self.address = 0
        self.port = 0
        self.v6_any = False
        self.backlog = 0  # sk_max_ack_backlog
        self.accept_queue: deque["StreamSocket"] = deque()

    def _local(self) -> tuple[int, int, bool]:
        return self.address, self.port, self.v6_any

    def _bound_port(self) -> int:
        return self.port

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
        if self.state not in (TCP_CLOSE, TCP_LISTEN):
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
        self._check_open()
        target = self._destination(address)
        if self.state == TCP_ESTABLISHED:
            raise _error(errno.EISCONN)
        if self.state == TCP_SYN_SENT:
            raise _error(errno.EALREADY)
        if self.state == TCP_LISTEN:
            raise _error(errno.EINVAL)
        assert target.address is not None
        # __inet_stream_connect: the transport starts the handshake (TCP_SYN_SENT) and later moves the
        # state on; the front end answers a non-blocking connect EINPROGRESS and waits on `on_ready`.
        self.peer = (target.address, target.port)
        try:
            self.proto.connect(self, target.address, target.port, now)
        except OSError:
            self.peer = None
            raise

    def set_state(self, state: int) -> None:
        self.state = state
        self._wake()

    def poll(self) -> int:
        """tcp_poll, the socket layer's part: a listener is readable with connections to accept."""
        if self.state == TCP_LISTEN:
            return POLLIN | POLLRDNORM if self.accept_queue else 0
        mask = POLLERR if self.sk_err else 0
        if self.shutdown_mask == RCV_SHUTDOWN | SEND_SHUTDOWN or (self.state == TCP_CLOSE and self.peer is not None):
            mask |= POLLHUP
        if self.shutdown_mask & RCV_SHUTDOWN:
            mask |= POLLIN | POLLRDNORM | POLLRDHUP
        if self.recv_ready():
            mask |= POLLIN | POLLRDNORM
        if self.send_room() > 0:
            mask |= POLLOUT | POLLWRNORM
        return mask

    def shutdown(self, how: int, now: float) -> None:
        self._check_open()
        if how not in (SHUT_RD, SHUT_WR, SHUT_RDWR):
            raise _error(errno.EINVAL)
        if self.state == TCP_CLOSE:
            self.shutdown_mask |= how + 1
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
        if self.closed or self.state != TCP_ESTABLISHED or self.shutdown_mask & SEND_SHUTDOWN:
            return 0
        return self.proto.send_room(self)

    def recv_ready(self) -> bool:
        return self.state == TCP_ESTABLISHED and self.proto.recv_ready(self)

    def sendmsg(self, data: bytes, address: Any, now: float, flags: int = 0,
                ancillary: Iterable[tuple[int, int, bytes]] = ()) -> int:
        """inet_sendmsg -> the transport; EPIPE after SHUT_WR, ENOTCONN before the connection (tcp_sendmsg)."""
        self._check_open()
        if self.sk_err:
            raise _error(self._take_error())
        if self.shutdown_mask & SEND_SHUTDOWN:
            raise _error(errno.EPIPE)
        if self.state != TCP_ESTABLISHED:
            raise _error(errno.EPIPE if self.state == TCP_CLOSE and self.peer is not None else errno.ENOTCONN)
        return self.proto.sendmsg(self, bytes(data), flags, now)

    def recvmsg(self, bufsize: int, now: float, flags: int = 0) -> Message:
        """inet_recvmsg -> the transport; ENOTCONN before the connection, EINVAL on a listener."""
        self._check_open()
        if self.state == TCP_LISTEN:
            raise _error(errno.ENOTCONN)
        if self.sk_err:
            raise _error(self._take_error())
        if self.state != TCP_ESTABLISHED:
            if self.shutdown_mask & RCV_SHUTDOWN or self.peer is not None:
                return Message(b"", None, 0, [], 0)
            raise _error(errno.ENOTCONN)
        data = self.proto.recvmsg(self, bufsize, flags, now)
        return Message(data, None, 0, [], len(data))

    def _unhash(self, now: float) -> None:
        for child in self.accept_queue:
            child.close(now)
        self.accept_queue.clear()
        self.proto.close(self, now)
