"""CURVE security for every tcp:// socket of an emulation: keys, ZAP authentication, refusal logs.

Before changing this file, read ZeroMQ's zmq_curve(7) and RFC 26 (CurveZMQ),
RFC 27 (ZAP) and zmq_socket_monitor(3); docs/design.md ("Cross-machine
links: CURVE and trunks").

* `CurveKeys`: one server and one client keypair (z85 text) per emulation,
  made by the controller and put into every process config as
  ``config["curve"]``; `prepare_process` hands it to `use`.
* `keys_for(endpoint)`: the keys for a tcp:// endpoint (the controller's
  `register`ed ones first, then the process default); None for ipc://,
  which never uses CURVE.
* `secure_client(socket, endpoint)` / `bind(socket, endpoint)`: configure a
  socket before it connects / bind it as a CURVE server. A server's context
  gets a `ZapHandler` (bound before the first server binds: without a handler
  libzmq would let any client with the server key in) that accepts only the
  emulation's client key, and each server socket a monitor for handshakes
  that fail before ZAP (plaintext peer, wrong server key). Both are logged at
  WARNING as ``refused unauthenticated peer ADDRESS on ENDPOINT``.
* `companions(socket)`: the ZAP and monitor sockets a loop must poll along
  with a server socket; `bus.runtime.EventLoop.add_reader` adds them itself,
  so devices and node kernels need no code of their own. `serve_in_thread`
  polls them for a process without a loop (tests, in-process use).
"""
from __future__ import annotations

import contextlib
import itertools
import logging
import os
import socket as pysocket
import struct
import threading
import time
from dataclasses import dataclass
from typing import Any, Callable, Iterable, Iterator, Mapping

import zmq
import zmq.utils.z85

__all__ = ["CurveKeys", "ZAP_ENDPOINT", "ZapHandler", "bind", "companions", "is_tcp", "keys_for", "register",
           "release", "secure_client", "secure_server", "serve_in_thread", "unregister", "use", "zap_handler"]

log = logging.getLogger("netemu.curve")

ZAP_ENDPOINT = "inproc://zeromq.zap.01"  # RFC 27: where libzmq sends a context's ZAP requests
Z85_KEY_LENGTH = 40
REFUSAL_LOG_INTERVAL = 30.0  # a refused peer reconnects every 100 ms: one line per peer per interval
_MONITOR_EVENTS = (zmq.EVENT_ACCEPTED | zmq.EVENT_DISCONNECTED | zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL
                   | zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL)
_EVENT = struct.Struct("=HI")  # zmq_socket_monitor(3): 16-bit event, 32-bit value, then the endpoint frame


@dataclass(frozen=True)
class CurveKeys:
    """The keys of one emulation: servers hold the server pair, clients the client pair (z85 text)."""

    server_public: str
    server_secret: str
    client_public: str
    client_secret: str

    def __post_init__(self) -> None:
        for field, value in self.as_dict().items():
            if not isinstance(value, str) or len(value) != Z85_KEY_LENGTH:
                raise ValueError(f"curve.{field} must be a {Z85_KEY_LENGTH}-character z85 key")

    @classmethod
    def generate(cls) -> "CurveKeys":
        server_public, server_secret = zmq.curve_keypair()
        client_public, client_secret = zmq.curve_keypair()
        return cls(server_public.decode(), server_secret.decode(), client_public.decode(), client_secret.decode())

    def as_dict(self) -> dict[str, str]:
        return {"server_public": self.server_public, "server_secret": self.server_secret,
                "client_public": self.client_public, "client_secret": self.client_secret}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "CurveKeys":
        return cls(**{key: data[key] for key in ("server_public", "server_secret", "client_public", "client_secret")})

    def __repr__(self) -> str:  # never print secrets into a log
        return f"CurveKeys(server_public={self.server_public!r}, client_public={self.client_public!r})"


# ------------------------------------------------------------------ which keys

_default: CurveKeys | None = None
_registry: dict[str, CurveKeys] = {}


def use(keys: CurveKeys | Mapping[str, Any] | None) -> None:
    """Set the process's keys (from its config's "curve"), used for every tcp:// endpoint not registered."""
    global _default
    _default = CurveKeys.from_dict(keys) if isinstance(keys, Mapping) else keys


def register(endpoints: Iterable[str], keys: CurveKeys) -> None:
    """The controller's keys for these exact endpoints (its emulation's processes)."""
    for endpoint in endpoints:
        _registry[endpoint] = keys


def unregister(endpoints: Iterable[str]) -> None:
    for endpoint in endpoints:
        _registry.pop(endpoint, None)


def is_tcp(endpoint: str) -> bool:
    return endpoint.startswith("tcp://")


def keys_for(endpoint: str) -> CurveKeys | None:
    """The keys for `endpoint`: registered ones, else the process default; None for non-tcp endpoints."""
    if not is_tcp(endpoint):
        return None
    return _registry.get(endpoint, _default)


def secure_client(socket: zmq.Socket, endpoint: str, keys: CurveKeys | None = None) -> bool:
    """Make `socket` a CURVE client before it connects to a tcp:// `endpoint` (keys default to `keys_for`).

    False (socket untouched) for ipc:// and when there are no keys.
    """
    keys = keys if keys is not None else keys_for(endpoint)
    if keys is None or not is_tcp(endpoint):
        return False
    socket.curve_serverkey = keys.server_public.encode()  # zmq_curve(7): the client must know the server key
    socket.curve_publickey = keys.client_public.encode()
    socket.curve_secretkey = keys.client_secret.encode()
    return True


# ---------------------------------------------------------------- the servers

def _peer_of(fd: int, local_port: int) -> str | None:
    """The remote address of an accepted connection's fd (None if it is gone or not ours any more)."""
    try:
        probe = pysocket.socket(fileno=os.dup(fd))
    except OSError:
        return None
    try:
        local, peer = probe.getsockname(), probe.getpeername()
        if not isinstance(local, tuple) or local[1] != local_port:
            return None  # the fd number was reused by something else
        return f"{peer[0]}:{peer[1]}"
    except OSError:
        return None
    finally:
        probe.close()


class _Server:
    """One CURVE server socket: its endpoint, its monitor, the peers it has accepted (fd -> address)."""

    def __init__(self, handler: "ZapHandler", socket: zmq.Socket, endpoint: str, client_public: bytes) -> None:
        self.handler = handler
        self.socket = socket
        self.endpoint = endpoint
        self.client_public = client_public
        self.domain = f"netemu.{next(ZapHandler._domains)}"
        self.peers: dict[int, str | None] = {}
        self.failure: str | None = None
        self.monitor: zmq.Socket | None = None
        try:
            self.monitor = socket.get_monitor_socket(_MONITOR_EVENTS)
        except zmq.ZMQError:  # monitors are best effort: ZAP still guards the door
            self.monitor = None

    @property
    def local_port(self) -> int:
        return int(self.endpoint.rsplit(":", 1)[-1]) if self.endpoint.rsplit(":", 1)[-1].isdigit() else -1

    def handle_monitor(self) -> None:
        """Drain monitor events: a handshake failure is logged with the peer of the connection it closes."""
        monitor = self.monitor
        if monitor is None:
            return
        while True:
            try:
                parts = monitor.recv_multipart(zmq.NOBLOCK)
            except zmq.Again:
                return
            if len(parts) < 2 or len(parts[0]) < _EVENT.size:
                continue
            event, value = _EVENT.unpack_from(parts[0])
            if event == zmq.EVENT_ACCEPTED:
                self.peers[value] = _peer_of(value, self.local_port)  # value: the accepted connection's fd
            elif event == zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL:
                self.failure = _handshake_reason(value)
            elif event == zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL:  # value: an errno (a peer that hung up)
                self.failure = f"handshake failed: {os.strerror(value)} (not a CURVE peer of this emulation?)"
            elif event == zmq.EVENT_DISCONNECTED:  # value: the fd; follows the failure of the same engine
                peer = self.peers.pop(value, None)
                if self.failure is not None:
                    self.handler.refused(peer or "(address unknown)", self.endpoint, self.failure)
                    self.failure = None

    def close(self) -> None:
        if self.monitor is not None:
            with contextlib.suppress(zmq.ZMQError):
                self.socket.disable_monitor()
            self.monitor.close(linger=0)
            self.monitor = None


def _handshake_reason(value: int) -> str:
    if value == zmq.PROTOCOL_ERROR_ZMTP_MECHANISM_MISMATCH:
        return "handshake failed: not CURVE (a plaintext peer?)"
    if value == zmq.PROTOCOL_ERROR_ZMTP_CRYPTOGRAPHIC:
        return "handshake failed: cannot decrypt (wrong server key?)"
    return f"handshake failed: zmq protocol error {value:#x}"


class ZapHandler:
    """The RFC 27 handler of one zmq.Context: a REP on inproc://zeromq.zap.01 answering CURVE handshakes.

    Each server socket gets its own ZAP domain, mapped to its endpoint and the
    one client key it accepts. `handle_pending` answers what is waiting
    (NOBLOCK); whoever polls the process's sockets calls it when `socket` is
    readable.
    """

    _domains = itertools.count(1)

    def __init__(self, context: zmq.Context) -> None:
        self.context = context
        self.socket = context.socket(zmq.REP)
        self.socket.setsockopt(zmq.LINGER, 0)
        self.socket.bind(ZAP_ENDPOINT)
        self.servers: dict[zmq.Socket, _Server] = {}
        self._domains_to_servers: dict[bytes, _Server] = {}
        self._logged: dict[tuple[str, str, str], float] = {}
        self.refusals = 0
        self.accepted = 0

    def add(self, socket: zmq.Socket, endpoint: str, keys: CurveKeys) -> _Server:
        server = _Server(self, socket, endpoint, zmq.utils.z85.decode(keys.client_public.encode()))
        self.servers[socket] = server
        self._domains_to_servers[server.domain.encode()] = server
        return server

    def remove(self, socket: zmq.Socket) -> None:
        server = self.servers.pop(socket, None)
        if server is not None:
            self._domains_to_servers.pop(server.domain.encode(), None)
            server.close()

    def handle_pending(self) -> int:
        """Answer every waiting ZAP request; returns how many."""
        answered = 0
        while True:
            try:
                request = self.socket.recv_multipart(zmq.NOBLOCK)
            except zmq.Again:
                return answered
            self.socket.send_multipart(self._answer(request))
            answered += 1

    def _answer(self, request: list[bytes]) -> list[bytes]:
        # RFC 27: version, request id, domain, address, identity, mechanism, credentials...
        if len(request) < 6:
            return [b"1.0", request[1] if len(request) > 1 else b"", b"500", b"malformed ZAP request", b"", b""]
        version, request_id, domain, address, _identity, mechanism = request[:6]
        server = self._domains_to_servers.get(domain)
        endpoint = server.endpoint if server is not None else f"(ZAP domain {domain.decode(errors='replace')})"
        peer = address.decode(errors="replace")
        if mechanism == b"CURVE" and server is not None and request[6:7] == [server.client_public]:
            self.accepted += 1
            return [b"1.0", request_id, b"200", b"OK", b"netemu", b""]
        self.refused(peer, endpoint, "unknown client key" if mechanism == b"CURVE" else f"mechanism {mechanism!r}")
        return [b"1.0", request_id, b"400", b"unknown client key", b"", b""]

    def refused(self, peer: str, endpoint: str, reason: str) -> None:
        """Log a refusal at WARNING, at most once per `REFUSAL_LOG_INTERVAL` per (peer host, endpoint, reason)."""
        self.refusals += 1
        host = peer.rsplit(":", 1)[0] if peer.count(":") == 1 else peer
        key = (host, endpoint, reason)
        now = time.monotonic()
        last = self._logged.get(key)
        if last is not None and now - last < REFUSAL_LOG_INTERVAL:
            return
        self._logged[key] = now
        log.warning("refused unauthenticated peer %s on %s (%s)", peer, endpoint, reason)

    def companions_of(self, socket: zmq.Socket) -> list[tuple[zmq.Socket, Callable[[], Any]]]:
        server = self.servers.get(socket)
        if server is None:
            return []
        pairs: list[tuple[zmq.Socket, Callable[[], Any]]] = [(self.socket, self.handle_pending)]
        if server.monitor is not None:
            pairs.append((server.monitor, server.handle_monitor))
        return pairs

    def close(self) -> None:
        for socket in list(self.servers):
            self.remove(socket)
        self.socket.close(linger=0)


_handlers: dict[zmq.Context, ZapHandler] = {}


def zap_handler(context: zmq.Context) -> ZapHandler | None:
    """The ZAP handler installed in `context` (None before its first CURVE server)."""
    return _handlers.get(context)


def secure_server(socket: zmq.Socket, endpoint: str, keys: CurveKeys | None = None) -> bool:
    """Make `socket` a CURVE server for tcp:// `endpoint`, BEFORE it binds; False (untouched) without keys."""
    keys = keys if keys is not None else keys_for(endpoint)
    if keys is None or not is_tcp(endpoint):
        return False
    context = socket.context
    handler = _handlers.get(context)
    if handler is None:
        handler = _handlers[context] = ZapHandler(context)  # bound before the server: see the module docstring
    server = handler.add(socket, endpoint, keys)
    socket.curve_server = 1
    socket.curve_secretkey = keys.server_secret.encode()
    socket.curve_publickey = keys.server_public.encode()
    socket.zap_domain = server.domain.encode()
    # zmq_setsockopt(3) ZMQ_ZAP_ENFORCE_DOMAIN: no handler answering means refuse, never "let in".
    with contextlib.suppress(AttributeError, zmq.ZMQError):
        socket.setsockopt(zmq.ZAP_ENFORCE_DOMAIN, 1)
    return True


def bind(socket: zmq.Socket, endpoint: str, keys: CurveKeys | None = None) -> str:
    """Bind `socket` to `endpoint`, as a CURVE server when tcp:// and keyed; returns the bound endpoint
    (a tcp port 0 resolved to the port the kernel chose)."""
    secured = secure_server(socket, endpoint, keys)
    try:
        socket.bind(endpoint)
    except zmq.ZMQError:
        release(socket)
        raise
    if not is_tcp(endpoint):
        return endpoint
    bound = socket.getsockopt_string(zmq.LAST_ENDPOINT)
    if secured:
        _handlers[socket.context].servers[socket].endpoint = bound
    return bound


# A process of a cluster emulation answers control requests on tcp:// (CURVE), and also on an
# ipc:// endpoint of its own machine for the node's tools (ip, ss, sysctl), which hold no keys:
# config["control_local"], set up by bus.runtime.prepare_process.
_local_twins: dict[str, str] = {}


def add_local_twin(endpoint: str | None, local: str | None) -> None:
    """Servers bound on tcp:// `endpoint` also listen, unencrypted, on ipc:// `local` (same machine)."""
    if endpoint and local:
        if not local.startswith("ipc://"):
            raise ValueError(f"a local twin must be an ipc:// endpoint, not {local!r}")
        _local_twins[endpoint] = local


def local_twin(endpoint: str) -> str | None:
    return _local_twins.get(endpoint)


def release(socket: zmq.Socket) -> None:
    """Forget a server socket (call before closing it, after its loop stopped polling it). The context's
    ZAP handler closes with its last server, so `context.term()` does not wait for it."""
    context = socket.context
    handler = _handlers.get(context)
    if handler is None:
        return
    handler.remove(socket)
    if not handler.servers:
        handler.close()
        del _handlers[context]


def companions(socket: Any) -> list[tuple[zmq.Socket, Callable[[], Any]]]:
    """What a loop polling CURVE server `socket` must poll too: its context's ZAP handler, its monitor."""
    if not isinstance(socket, zmq.Socket) or not _handlers:
        return []
    handler = _handlers.get(socket.context)
    return handler.companions_of(socket) if handler is not None else []


@contextlib.contextmanager
def serve_in_thread(context: zmq.Context, interval: float = 0.05) -> Iterator[ZapHandler | None]:
    """Answer `context`'s ZAP requests and monitor events in a thread, for code without an event loop.

    The thread owns the handler's sockets while it runs: nothing else may poll them meanwhile.
    """
    handler = _handlers.get(context)
    if handler is None:
        yield None
        return
    stopping = threading.Event()

    def serve() -> None:
        while not stopping.is_set():
            poller = zmq.Poller()
            callbacks = {}
            for server in list(handler.servers):
                for companion, callback in handler.companions_of(server):
                    poller.register(companion, zmq.POLLIN)
                    callbacks[companion] = callback
            for companion, _ in poller.poll(int(interval * 1000)):
                callbacks[companion]()

    thread = threading.Thread(target=serve, name="netemu-zap", daemon=True)
    thread.start()
    try:
        yield handler
    finally:
        stopping.set()
        thread.join()
