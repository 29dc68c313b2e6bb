"""ZeroMQ plumbing every process shares: endpoints, frame batches, data ports, control channel.

Before changing this file, read docs/design.md ("Data plane framing" and
"Control channel") and /work/shared/reference/baselines.md: joining frames into
one message is the 3-5x lever, and polling before every recv halves throughput
(poll once, then drain with NOBLOCK until `zmq.Again`).

Nothing here knows about devices or protocols:

* endpoints: `ipc_endpoint`, `endpoint_path`, `cleanup_endpoint`;
* frame batches: `pack_frames` / `unpack_frames` (2-byte big-endian length per
  frame, several frames per ZeroMQ message) and `FrameBatcher`, which drains
  queued frames into as few messages as possible without ever waiting;
* `DataPort`: the NIC end of an attachment (a DEALER whose routing id is the
  attachment name, e.g. ``h1:eth0``);
* the msgpack control channel: `ControlServer` (ROUTER + op handlers) and
  `ControlClient` (DEALER with a timeout, so a frozen peer cannot hang us).
"""
from __future__ import annotations

import errno as errno_codes
import os
import struct
import time
from collections import deque
from typing import Any, Callable, Iterable, Mapping, Sequence

import msgpack
import zmq

# AF_UNIX sun_path is 108 bytes including the terminating NUL.
MAX_IPC_PATH = 107
MAX_FRAME_LENGTH = 0xFFFF  # the length prefix is 2 bytes
# A message holds at most this many bytes of frames, so a long backlog still
# leaves in pieces the receiver can interleave with other work.
MAX_BATCH_BYTES = 256 * 1024
# ZeroMQ's queue on each side of a data pipe, in messages (each up to
# MAX_BATCH_BYTES of frames). The emulated queue is the port's `queue` (tc's
# limit); this is the wire behind it, so it stays small: 64 messages bound
# what a frozen or slow peer can pile up to 16 MiB a side (ZeroMQ's default,
# 1000, allowed 250 MiB and seconds of hidden backlog).
DATA_HIGH_WATER_MARK = 64
HELLO = b""

_LENGTH = struct.Struct("!H")
_length_at = _LENGTH.unpack_from
# Precomputed prefixes: measured fastest of int.to_bytes, struct.pack and a
# table lookup (~90 ns/frame vs ~140-160 ns; bench numbers in the report).
_PREFIX = tuple(n.to_bytes(2, "big") for n in range(MAX_FRAME_LENGTH + 1))


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


# ----------------------------------------------------------------- frame batches

class BatchError(ValueError):
    """A data-plane message whose length prefixes do not add up to its size.

    The bus's own error (the bus imports nothing of `nodes/`): a `ValueError`
    like the codecs' `WireError`, with the same `protocol` ("batch") and
    `reason` attributes. Every receiver catches it by name, drops the whole
    message and counts it (`malformed_batches` on a device,
    `rx_malformed_batches` on a NIC); it never escapes an event loop.
    """

    def __init__(self, reason: str) -> None:
        super().__init__(f"batch: {reason}")
        self.protocol = "batch"
        self.reason = reason


def pack_frames(frames: Iterable[bytes | bytearray | memoryview]) -> bytes:
    """Join frames into one data-plane message: each frame preceded by its 2-byte big-endian length."""
    parts: list[bytes | bytearray | memoryview] = []
    append = parts.append
    prefix = _PREFIX
    for frame in frames:
        try:
            append(prefix[len(frame)])
        except IndexError:
            raise ValueError(f"frame of {len(frame)} bytes does not fit a 2-byte length prefix") from None
        append(frame)
    return b"".join(parts)


def unpack_frames(message: bytes | bytearray | memoryview) -> list[bytes]:
    """Split a data-plane message into frames; raises `BatchError` if the prefixes do not add up.

    An empty message is a hello and yields no frames. Callers in an event
    loop catch `BatchError`, count the message as malformed and drop it whole:
    a batch with a broken prefix cannot be trusted past the break.
    """
    frames: list[bytes] = []
    append = frames.append
    end = len(message)
    offset = 0
    if isinstance(message, memoryview):
        message = message.tobytes()
    try:
        while offset < end:
            (length,) = _length_at(message, offset)
            start = offset + 2
            offset = start + length
            append(message[start:offset])
    except struct.error:
        raise BatchError(f"truncated length prefix at offset {offset} of {end}") from None
    if offset != end:
        raise BatchError(f"last frame claims {offset - end} bytes beyond the {end}-byte message")
    return frames


def count_frames(message: bytes | bytearray | memoryview) -> int:
    """How many frames a data-plane message holds, checked like `unpack_frames` but without copying any.

    What a NIC with a full ring needs: the frames are dropped, only counted.
    """
    end = len(message)
    offset = 0
    count = 0
    try:
        while offset < end:
            offset += 2 + _length_at(message, offset)[0]
            count += 1
    except struct.error:
        raise BatchError(f"truncated length prefix at offset {offset} of {end}") from None
    if offset != end:
        raise BatchError(f"last frame claims {offset - end} bytes beyond the {end}-byte message")
    return count


class FrameBatcher:
    """Frames queued during one event-loop pass, sent as few messages as possible by `flush`.

    The loop calls `flush()` once per pass, after draining its inputs: a lone
    frame therefore leaves in the same pass it was queued (batching never
    waits); under load everything queued in the pass shares one message.
    `send(message) -> bool` returns False when the message could not be queued
    (peer's high-water mark reached); its frames are then counted in `dropped`.
    `messages`, `frames`, `payload` (bytes of the frames, without length
    prefixes) and `dropped` count every send, including the ones `append`
    makes on its own when a batch reaches `max_bytes`: owners read their
    transmit counters from here.
    """

    __slots__ = ("_send", "_parts", "_frames", "_bytes", "max_bytes", "messages", "frames", "payload", "dropped")

    def __init__(self, send: Callable[[bytes], bool], max_bytes: int = MAX_BATCH_BYTES) -> None:
        self._send = send
        self._parts: list[bytes | memoryview] = []
        self._frames = 0
        self._bytes = 0
        self.max_bytes = max_bytes
        self.messages = 0
        self.frames = 0
        self.payload = 0
        self.dropped = 0

    def __len__(self) -> int:
        return self._frames

    def append(self, frame: bytes | memoryview) -> None:
        """Queue one frame (flushing first if the pending message would grow past `max_bytes`)."""
        length = len(frame)
        if length > MAX_FRAME_LENGTH:
            raise ValueError(f"frame of {length} bytes does not fit a 2-byte length prefix")
        if self._bytes + length > self.max_bytes and self._frames:
            self.flush()
        self._parts.append(_PREFIX[length])
        self._parts.append(frame)
        self._frames += 1
        self._bytes += length + 2

    def extend(self, frames: list[bytes] | list[bytes | memoryview]) -> int:
        """Queue several frames (as `append` each, in order); returns their total length in bytes.

        One check for the whole batch when it fits the pending message, which
        is the common case: a node's tx queue drained once per loop pass.
        """
        lengths = list(map(len, frames))
        size = sum(lengths)
        count = len(lengths)
        if not count:
            return 0
        if self._bytes + size + 2 * count > self.max_bytes or max(lengths) > MAX_FRAME_LENGTH:
            for frame in frames:
                self.append(frame)
            return size
        parts = self._parts
        prefix = _PREFIX
        for length, frame in zip(lengths, frames):
            parts.append(prefix[length])
            parts.append(frame)
        self._frames += count
        self._bytes += size + 2 * count
        return size

    def append_packed(self, message: bytes, frame_count: int) -> None:
        """Queue an already packed message as is (a relay forwarding a whole batch unchanged)."""
        if self._bytes + len(message) > self.max_bytes and self._frames:
            self.flush()
        self._parts.append(message)
        self._frames += frame_count
        self._bytes += len(message)

    def flush(self) -> int:
        """Send everything queued; returns the number of frames that were sent."""
        count = self._frames
        if not count:
            return 0
        parts = self._parts
        message = parts[0] if len(parts) == 1 else b"".join(parts)
        self._parts = []
        self._frames = 0
        self._bytes = 0
        if self._send(message):
            self.messages += 1
            self.frames += count
            self.payload += len(message) - 2 * count
            return count
        self.dropped += count
        return 0

    def clear(self) -> int:
        """Discard everything queued; returns how many frames were discarded."""
        count = self._frames
        self._parts = []
        self._frames = 0
        self._bytes = 0
        return count


# -------------------------------------------------------------------- data ports

class DataPort:
    """The NIC end of an attachment: a DEALER, routing id = attachment name, connected to a device.

    Sends a hello (empty message) on connect; `keepalive(now)` repeats it every
    `KEEPALIVE_INTERVAL` so a restarted device relearns the port. `receive()`
    is called after the event loop's poll reported the socket readable and
    drains it with NOBLOCK (no poll per message: see baselines.md).
    """

    KEEPALIVE_INTERVAL = 5.0
    HIGH_WATER_MARK = DATA_HIGH_WATER_MARK

    def __init__(self, context: zmq.Context, endpoint: str, attachment: str, *, now: float | None = None) -> None:
        self.endpoint = endpoint
        self.attachment = attachment
        self.socket = context.socket(zmq.DEALER)
        self.socket.setsockopt(zmq.ROUTING_ID, attachment.encode())
        self.socket.setsockopt(zmq.LINGER, 0)
        self.socket.setsockopt(zmq.SNDHWM, self.HIGH_WATER_MARK)
        self.socket.setsockopt(zmq.RCVHWM, self.HIGH_WATER_MARK)
        self.socket.connect(endpoint)
        self.rx = {"rx_packets": 0, "rx_bytes": 0, "rx_malformed_batches": 0}  # the tx side is the batcher's
        self.batcher = FrameBatcher(self._send_message)
        self._last_hello = time.monotonic() if now is None else now
        self.hello()

    def fileno(self) -> int:
        return self.socket.getsockopt(zmq.FD)

    def hello(self) -> None:
        """Announce the attachment to the device (it creates the port if new)."""
        try:
            self.socket.send(HELLO, zmq.NOBLOCK)
        except zmq.Again:
            pass  # the queue toward the device is full of frames: it knows us already

    def keepalive(self, now: float) -> None:
        """Send a hello if the last one is older than `KEEPALIVE_INTERVAL`."""
        if now - self._last_hello >= self.KEEPALIVE_INTERVAL:
            self._last_hello = now
            self.hello()

    def _send_message(self, message: bytes) -> bool:
        # Copied, not zero-copy: a zero-copy send of a large batch makes pyzmq's
        # garbage-collector thread take the GIL to release it, which measured no
        # cheaper than libzmq copying the bytes (and small ones are copied anyway).
        try:
            self.socket.send(message, zmq.NOBLOCK)
            return True
        except zmq.Again:
            return False

    def queue(self, frame: bytes | memoryview) -> None:
        """Queue a frame; it leaves at the next `flush()` (same loop pass)."""
        self.batcher.append(frame)

    @property
    def counters(self) -> dict[str, int]:
        """Like `ip -s link`: tx from the batcher (which sees every send), rx counted by `receive`."""
        batcher = self.batcher
        return {"tx_packets": batcher.frames, "tx_bytes": batcher.payload, "tx_dropped": batcher.dropped, **self.rx}

    def flush(self) -> None:
        """Send what `queue` collected as one message (or a few if large)."""
        if self.batcher._frames:
            self.batcher.flush()

    def send_frames(self, frames: Iterable[bytes | memoryview]) -> int:
        """Queue and flush `frames` at once; returns how many were dropped (queue full)."""
        if not isinstance(frames, list):
            frames = list(frames)
        batcher = self.batcher
        if len(frames) == 1 and not batcher._frames and len(frames[0]) <= MAX_FRAME_LENGTH:
            # A lone frame, the latency path (an echo, a SYN): straight out, no batch to build.
            frame = frames[0]
            if self._send_message(_PREFIX[len(frame)] + frame):
                batcher.messages += 1
                batcher.frames += 1
                batcher.payload += len(frame)
                return 0
            batcher.dropped += 1
            return 1
        before = batcher.dropped
        batcher.extend(frames)
        self.flush()
        return batcher.dropped - before

    def receive(self, max_messages: int = 256) -> list[bytes]:
        """Drain up to `max_messages` waiting messages without blocking; returns their frames."""
        frames: list[bytes] = []
        recv = self.socket.recv
        counters = self.rx
        for _ in range(max_messages):
            try:
                message = recv(zmq.NOBLOCK)
            except zmq.Again:
                break
            if not message:
                continue  # devices do not send hellos today; tolerate them
            try:
                batch = unpack_frames(message)
            except BatchError:
                counters["rx_malformed_batches"] += 1
                continue
            counters["rx_packets"] += len(batch)
            counters["rx_bytes"] += len(message) - 2 * len(batch)
            frames.extend(batch)
        return frames

    def close(self) -> None:
        self.socket.close(linger=0)


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

    def __init__(self, context: zmq.Context, endpoint: str, handlers: dict[str, Callable[..., Any]] | None = None) -> None:
        self.endpoint = endpoint
        self.handlers: dict[str, Callable[..., Any]] = dict(handlers or {})
        self.socket = context.socket(zmq.ROUTER)
        self.socket.setsockopt(zmq.LINGER, 0)
        self.socket.bind(endpoint)
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
        # A short linger lets the reply to `shutdown` leave before the process exits.
        self.socket.close(linger=200)
        if unlink:
            cleanup_endpoint(self.endpoint)


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

    def __init__(self, endpoint: str, timeout: float = 2.0, context: zmq.Context | None = None) -> None:
        self.endpoint = endpoint
        self.timeout = timeout
        self._context = context if context is not None else zmq.Context.instance()
        self._socket: zmq.Socket | None = None

    def _connect(self) -> zmq.Socket:
        if self._socket is None:
            socket = self._context.socket(zmq.DEALER)
            socket.setsockopt(zmq.LINGER, 0)
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
