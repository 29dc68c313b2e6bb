"""ZeroMQ plumbing every process shares: endpoints, the data plane's names, the control channel.

Before changing this file, read docs/design.md ("Data plane framing",
"Control channel" and "Measured baselines": joining frames into one message
is the 3-5x lever, and polling before every recv halves throughput, so poll
once, then drain with NOBLOCK until `zmq.Again`).

Nothing here knows about devices or protocols:

* endpoints: `ipc_endpoint`, `endpoint_path`, `cleanup_endpoint`;
* the data plane, written in bus/dataplane.py and imported from here by
  everyone (this module is its contract's name): `pack_frames` /
  `unpack_frames` / `count_frames` and `BatchError`, `FrameBatcher`, and
  `DataPort`, the NIC end of an attachment;
* the msgpack control channel: `ControlServer` (ROUTER + op handlers) and
  `ControlClient` (DEALER with a timeout, so a frozen peer cannot hang us);
  on tcp:// endpoints both use CURVE when keyed (bus/curve.py).
"""
from __future__ import annotations

import errno as errno_codes
import os
import time
from collections import deque
from typing import Any, Callable, Mapping, Sequence

import msgpack
import zmq

from . import curve
from .dataplane import (DATA_HIGH_WATER_MARK, HELLO, MAX_BATCH_BYTES, MAX_FRAME_LENGTH, BatchError, DataPort,
                        FrameBatcher, count_frames, holds_one_frame, pack_frames, unpack_frames)

__all__ = [
    # endpoints
    "MAX_IPC_PATH", "ipc_endpoint", "endpoint_path", "cleanup_endpoint",
    # the data plane (bus/dataplane.py)
    "DATA_HIGH_WATER_MARK", "HELLO", "MAX_BATCH_BYTES", "MAX_FRAME_LENGTH", "BatchError", "DataPort",
    "FrameBatcher", "count_frames", "holds_one_frame", "pack_frames", "unpack_frames",
    # the control channel
    "ControlClient", "ControlError", "ControlServer", "ControlTimeout", "Deferred",
]

# AF_UNIX sun_path is 108 bytes including the terminating NUL.
MAX_IPC_PATH = 107


# --------------------------------------------------------------------- endpoints

def ipc_endpoint(run_dir: str | os.PathLike[str], name: str) -> str:
    """The ipc endpoint for socket file `name` in `run_dir`; refuses paths too long for AF_UNIX."""
    path = os.path.join(os.fspath(run_dir), name)
    if len(os.fsencode(path)) > MAX_IPC_PATH:
        raise ValueError(f"ipc path {path!r} is longer than {MAX_IPC_PATH} bytes (AF_UNIX limit): use a shorter run directory")
    return f"ipc://{path}"


def endpoint_path(endpoint: str) -> str | None:
    """The socket file behind an ``ipc://`` endpoint, None for other transports."""
    if endpoint.startswith("ipc://"):
        path = endpoint[len("ipc://"):]
        # "ipc://@name" is Linux's abstract namespace: no file to clean up.
        return path if path and not path.startswith("@") else None
    return None


def cleanup_endpoint(endpoint: str) -> None:
    """Unlink the socket file of an ipc endpoint this process bound (missing file is fine)."""
    path = endpoint_path(endpoint)
    if path is None:
        return
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass


# --------------------------------------------------------------- control channel

class ControlError(Exception):
    """A control request failed: the peer answered ``ok: false``, or the reply was unusable."""

    def __init__(self, message: str, errno: int | None = None, op: str | None = None) -> None:
        super().__init__(message)
        self.errno = errno
        self.op = op


class ControlTimeout(ControlError, TimeoutError):
    """The peer did not answer in time (dead, frozen with SIGSTOP, or not started yet)."""


def _reply_error(exception: BaseException) -> dict[str, Any]:
    code = getattr(exception, "errno", None)
    # An OSError's errno travels in its own field: the text is its strerror, not "[Errno N] ...".
    text = exception.strerror if isinstance(exception, OSError) and exception.strerror else str(exception)
    if isinstance(exception, OSError) and exception.strerror and exception.filename is not None:
        text = f"{os.fsdecode(exception.filename)}: {text}"  # which file, as tcpdump -w or cp say it
    return {"ok": False, "error": text or type(exception).__name__, "errno": code if isinstance(code, int) else None}


class Deferred:
    """A reply that comes later: a handler returns one and calls `resolve`/`reject` when done.

    Long operations (a ping of several seconds) must not block the process's
    loop; the server keeps the requester's envelope and answers on completion.
    """

    __slots__ = ("_callback", "_outcome")

    def __init__(self) -> None:
        self._callback: Callable[[dict[str, Any]], None] | None = None
        self._outcome: dict[str, Any] | None = None

    def resolve(self, result: Any) -> None:
        self._settle({"ok": True, "result": result})

    def reject(self, exception: BaseException) -> None:
        self._settle(_reply_error(exception))

    def _settle(self, reply: dict[str, Any]) -> None:
        if self._outcome is not None:
            return
        self._outcome = reply
        if self._callback is not None:
            self._callback(reply)

    def _on_settled(self, callback: Callable[[dict[str, Any]], None]) -> None:
        self._callback = callback
        if self._outcome is not None:
            callback(self._outcome)


class ControlServer:
    """A ROUTER answering msgpack ``{"op": ..., **args}`` requests with registered handlers.

    `handle_pending()` is called when the loop's poll reports the socket
    readable. A handler is called as ``handler(**args)``; whatever it raises
    becomes an ``ok: false`` reply with the exception's errno, so a bad request
    never takes the process down. Works with REQ, DEALER (with or without the
    empty delimiter) and `ControlClient`: the whole envelope is echoed back.
    """

    def __init__(self, context: zmq.Context, endpoint: str, handlers: dict[str, Callable[..., Any]] | None = None,
                 *, keys: curve.CurveKeys | None = None) -> None:
        self.handlers: dict[str, Callable[..., Any]] = dict(handlers or {})
        self.socket = context.socket(zmq.ROUTER)
        self.socket.setsockopt(zmq.LINGER, 0)
        # Its keyless ipc:// twin first: libzmq copies a socket's options into each listener when it
        # binds (zmq_setsockopt(3)), so the CURVE options set next apply to the tcp:// listener only.
        self.local = curve.local_twin(endpoint)
        if self.local is not None:
            self.socket.bind(self.local)
        # tcp:// with keys (`keys`, else bus.curve.keys_for): a CURVE server; a port 0 resolved.
        self.endpoint = curve.bind(self.socket, endpoint, keys)
        self.requests = 0
        self.errors = 0

    def register(self, op: str, handler: Callable[..., Any]) -> None:
        self.handlers[op] = handler

    def dispatch(self, payload: bytes) -> dict[str, Any]:
        """Decode one request and run its handler; returns the reply dict (never raises)."""
        try:
            request = msgpack.unpackb(payload, raw=False)
        except Exception as exc:  # msgpack raises several unrelated types for garbage
            return {"ok": False, "error": f"request is not msgpack: {exc}", "errno": errno_codes.EINVAL}
        if not isinstance(request, dict) or not isinstance(request.get("op"), str):
            return {"ok": False, "error": "request must be a map with a string 'op'", "errno": errno_codes.EINVAL}
        op = request.pop("op")
        handler = self.handlers.get(op)
        if handler is None:
            return {"ok": False, "error": f"unknown op {op!r} (known: {', '.join(sorted(self.handlers))})", "errno": errno_codes.EOPNOTSUPP}
        if not all(isinstance(key, str) for key in request):
            return {"ok": False, "error": "argument names must be strings", "errno": errno_codes.EINVAL}
        try:
            return {"ok": True, "result": handler(**request)}
        except Exception as exc:
            return _reply_error(exc)

    def handle_pending(self, max_requests: int = 64) -> int:
        """Answer the requests waiting on the socket; returns how many were answered."""
        handled = 0
        for _ in range(max_requests):
            try:
                parts = self.socket.recv_multipart(zmq.NOBLOCK)
            except zmq.Again:
                break
            if len(parts) < 2:
                continue  # a ROUTER always prepends the identity; nothing to answer
            reply = self.dispatch(parts[-1])
            self.requests += 1
            handled += 1
            if reply["ok"] and isinstance(reply["result"], Deferred):
                envelope = parts[:-1]
                reply["result"]._on_settled(lambda late, envelope=envelope: self._send_reply(envelope, late))
                continue
            self._send_reply(parts[:-1], reply)
        return handled

    def _send_reply(self, envelope: list[bytes], reply: dict[str, Any]) -> None:
        if not reply["ok"]:
            self.errors += 1
        try:
            encoded = msgpack.packb(reply, use_bin_type=True)
        except Exception as exc:
            self.errors += 1
            encoded = msgpack.packb({"ok": False, "error": f"result cannot be encoded: {exc}", "errno": None}, use_bin_type=True)
        try:
            self.socket.send_multipart([*envelope, encoded], zmq.NOBLOCK)
        except zmq.ZMQError:
            pass  # the client went away or is not reading: its problem, not ours

    def close(self, *, unlink: bool = True) -> None:
        curve.release(self.socket)
        # A short linger lets the reply to `shutdown` leave before the process exits.
        self.socket.close(linger=200)
        if unlink:
            cleanup_endpoint(self.endpoint)
            if self.local is not None:
                cleanup_endpoint(self.local)


def _encode_request(op: str, args: Mapping[str, Any] | None) -> bytes:
    """The request body. It travels as ``[b"", body]``: the empty delimiter is the
    envelope a REQ would send, so REP servers answer a DEALER too."""
    return msgpack.packb({**(args or {}), "op": op}, use_bin_type=True)


def _decode_reply(endpoint: str, op: str, payload: bytes) -> Any:
    """The `result` of a reply body; raises ControlError for ``ok: false`` or garbage."""
    try:
        reply = msgpack.unpackb(payload, raw=False)
    except Exception as exc:
        raise ControlError(f"{endpoint}: undecodable reply to {op!r}: {exc}", None, op) from None
    if not isinstance(reply, dict) or "ok" not in reply:
        raise ControlError(f"{endpoint}: malformed reply to {op!r}: {reply!r}", None, op)
    if not reply["ok"]:
        raise ControlError(str(reply.get("error", "unknown error")), reply.get("errno"), op)
    return reply.get("result")


class ControlClient:
    """Calls ops on one process's control endpoint; never blocks longer than `timeout` seconds.

    A DEALER rather than a REQ: after a timeout the socket is thrown away and
    a fresh one is used for the next call (the "lazy pirate" pattern), so a
    late reply to an abandoned request can never be taken for the next answer.
    Not thread-safe: one client per thread.
    """

    def __init__(self, endpoint: str, timeout: float = 2.0, context: zmq.Context | None = None, *,
                 keys: curve.CurveKeys | None = None) -> None:
        self.endpoint = endpoint
        self.keys = keys  # None: bus.curve.keys_for(endpoint) (tcp:// only)
        self.timeout = timeout
        self._context = context if context is not None else zmq.Context.instance()
        self._socket: zmq.Socket | None = None

    def _connect(self) -> zmq.Socket:
        if self._socket is None:
            socket = self._context.socket(zmq.DEALER)
            socket.setsockopt(zmq.LINGER, 0)
            curve.secure_client(socket, self.endpoint, self.keys)
            socket.connect(self.endpoint)
            self._socket = socket
        return self._socket

    def call(self, op: str, /, **args: Any) -> Any:
        """Run `op` with `args` on the peer; returns its result or raises ControlError/ControlTimeout."""
        return self.request(op, args)

    def request(self, op: str, args: dict[str, Any] | None = None, timeout: float | None = None) -> Any:
        """Like `call`, with the arguments as a dict and an optional per-call timeout."""
        timeout = self.timeout if timeout is None else timeout
        payload = _encode_request(op, args)
        socket = self._connect()
        deadline = time.monotonic() + timeout
        try:
            socket.send_multipart([b"", payload], zmq.NOBLOCK)  # the envelope: see _encode_request
        except zmq.Again:
            self._reset()
            raise ControlTimeout(f"{self.endpoint}: cannot queue {op!r} (peer not accepting)", errno_codes.ETIMEDOUT, op) from None
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0 or not socket.poll(max(1, int(remaining * 1000 + 0.999)), zmq.POLLIN):
                self._reset()
                raise ControlTimeout(f"{self.endpoint}: no reply to {op!r} within {timeout:g} s", errno_codes.ETIMEDOUT, op)
            parts = socket.recv_multipart(zmq.NOBLOCK)
            if parts and parts[-1]:
                break
        return _decode_reply(self.endpoint, op, parts[-1])

    def _reset(self) -> None:
        if self._socket is not None:
            self._socket.close(linger=0)
            self._socket = None

    def close(self) -> None:
        self._reset()

    def __enter__(self) -> "ControlClient":
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    @staticmethod
    def fan_out(requests: Sequence[tuple[str, str, Mapping[str, Any] | None]], timeout: float, *,
                context: zmq.Context | None = None, on_reply: Callable[[int, Any], None] | None = None,
                skip: Callable[[int], bool] | None = None, abort: Callable[[], bool] | None = None,
                retry_interval: float | None = None, window: int = 256) -> list[Any]:
        """Send every ``(endpoint, op, args)`` at once; the outcomes, in the order of `requests`.

        An outcome is the reply's result, or the ControlError it stands for (an
        ``ok: false`` reply, garbage, or a ControlTimeout for a request not
        answered by `timeout`, skipped or aborted): never raised, so one dead
        process does not hide the answers of the others. One DEALER per request
        in flight, at most `window` at once (sockets cost file descriptors), one
        poller; a request unanswered after `retry_interval` goes again on a fresh
        socket (for peers that may not be bound yet). `on_reply(index, outcome)`
        runs as each answer arrives; `skip(index)` drops a request (e.g. its
        process exited); `abort()` ends the wait early.
        """
        context = context if context is not None else zmq.Context.instance()
        outcomes: list[Any] = [None] * len(requests)
        answered = [False] * len(requests)
        bodies = [_encode_request(op, args) for _, op, args in requests]
        waiting = deque(range(len(requests)))
        in_flight: dict[zmq.Socket, tuple[int, float]] = {}
        poller = zmq.Poller()
        deadline = time.monotonic() + timeout
        polls_briefly = skip is not None or abort is not None

        def send(index: int) -> None:
            sock = context.socket(zmq.DEALER)
            sock.setsockopt(zmq.LINGER, 0)
            sock.setsockopt(zmq.RECONNECT_IVL, 20)  # the endpoint may not be bound yet
            curve.secure_client(sock, requests[index][0])  # keys by endpoint: bus.curve.register
            sock.connect(requests[index][0])
            sock.send_multipart([b"", bodies[index]])
            in_flight[sock] = (index, time.monotonic())
            poller.register(sock, zmq.POLLIN)

        def drop(sock: zmq.Socket) -> int:
            poller.unregister(sock)
            sock.close(linger=0)
            return in_flight.pop(sock)[0]

        try:
            while waiting or in_flight:
                now = time.monotonic()
                if now >= deadline or (abort is not None and abort()):
                    break
                while waiting and len(in_flight) < window:
                    index = waiting.popleft()
                    if skip is None or not skip(index):
                        send(index)
                for sock, (index, sent_at) in list(in_flight.items()):
                    if skip is not None and skip(index):
                        drop(sock)
                    elif retry_interval is not None and now - sent_at >= retry_interval:
                        drop(sock)
                        send(index)
                if not in_flight:
                    continue
                wait = deadline - now
                if polls_briefly:
                    wait = min(wait, 0.05)
                if retry_interval is not None:
                    wait = min(wait, retry_interval)
                for sock, _ in poller.poll(max(1, int(wait * 1000))):
                    try:
                        parts = sock.recv_multipart(zmq.NOBLOCK)
                    except zmq.Again:
                        continue
                    if not parts or not parts[-1]:
                        continue
                    index = drop(sock)
                    endpoint, op, _ = requests[index]
                    try:
                        outcomes[index] = _decode_reply(endpoint, op, parts[-1])
                    except ControlError as exc:
                        outcomes[index] = exc
                    answered[index] = True
                    if on_reply is not None:
                        on_reply(index, outcomes[index])
        finally:
            for sock in list(in_flight):
                drop(sock)
        for index, (endpoint, op, _) in enumerate(requests):
            if not answered[index]:
                outcomes[index] = ControlTimeout(f"{endpoint}: no reply to {op!r} within {timeout:g} s",
                                                 errno_codes.ETIMEDOUT, op)
        return outcomes
