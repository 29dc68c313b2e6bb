"""The data plane's framing: frame batches and the NIC end of an attachment.

Before changing this file, read docs/design.md ("Data plane framing" for the
contract, "Measured baselines" for the figures behind it: one ZeroMQ message
per frame caps a hop at ~210k frames/s of 1514 B, 32 frames joined into one
message reach ~790k; a poll before every recv halves throughput).

Everyone imports these names from `bus.transport`, which re-exports them;
this module holds them so each file of the bus has one role. Nothing here
knows about devices, protocols or the control channel:

* `pack_frames` / `unpack_frames` / `count_frames`: a message is one or more
  frames, each preceded by its 2-byte big-endian length; a message whose
  prefixes do not add up raises `BatchError` (the bus's own `ValueError`),
  which every receiver catches, counts and drops;
* `FrameBatcher`: frames queued during one loop pass, drained into as few
  messages as possible without ever waiting;
* `DataPort`: the NIC end of an attachment (a DEALER whose routing id is the
  attachment name, e.g. ``h1:eth0``).
"""
from __future__ import annotations

import struct
import time
from typing import Callable, Iterable

import zmq
import zmq.backend

from . import curve

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

_NOBLOCK = int(zmq.NOBLOCK)
_backend_send = zmq.backend.Socket.send  # pyzmq's Socket.send minus its Python wrapper

_LENGTH = struct.Struct("!H")
_length_at = _LENGTH.unpack_from
# Precomputed prefixes: measured fastest of int.to_bytes, struct.pack and a
# table lookup (~90 ns/frame vs ~140-160 ns; bench numbers in the report).
_PREFIX = tuple(n.to_bytes(2, "big") for n in range(MAX_FRAME_LENGTH + 1))


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


def holds_one_frame(message: bytes | bytearray | memoryview) -> bool:
    """True when `message` is exactly one frame (its length prefix covers the rest): what a
    sender flushes when idle. A receiver that got one need not ask for more before it polls again."""
    return len(message) >= 2 and ((message[0] << 8) | message[1]) + 2 == len(message)


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

    def retarget(self, send: Callable[[bytes], bool]) -> None:
        """Send through `send` from now on (a device port reached through another socket), counters kept."""
        self._send = send

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
    drains it with NOBLOCK (no poll per message: docs/design.md, "Measured baselines").
    """

    KEEPALIVE_INTERVAL = 5.0
    HIGH_WATER_MARK = DATA_HIGH_WATER_MARK

    def __init__(self, context: zmq.Context, endpoint: str, attachment: str, *, now: float | None = None,
                 keys: curve.CurveKeys | None = None) -> None:
        self.endpoint = endpoint
        self.attachment = attachment
        self.socket = context.socket(zmq.DEALER)
        self.socket.setsockopt(zmq.ROUTING_ID, attachment.encode())
        self.socket.setsockopt(zmq.LINGER, 0)
        self.socket.setsockopt(zmq.SNDHWM, self.HIGH_WATER_MARK)
        self.socket.setsockopt(zmq.RCVHWM, self.HIGH_WATER_MARK)
        curve.secure_client(self.socket, endpoint, keys)  # a tcp:// device (a p2p link's far end): CURVE when keyed
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

    def send_frame(self, frame: bytes | memoryview) -> int:
        """`send_frames([frame])` for one frame: 1 if it was dropped (queue full), else 0.

        The latency path (an echo, a SYN): with nothing batched the frame goes
        straight out through the backend's send, without the list, the checks
        and the two Python frames of `send_frames` and pyzmq's `Socket.send`.
        """
        batcher = self.batcher
        length = len(frame)
        if batcher._frames or length > MAX_FRAME_LENGTH:
            return self.send_frames([frame])
        try:
            _backend_send(self.socket, _PREFIX[length] + frame, _NOBLOCK)
        except zmq.Again:
            batcher.dropped += 1
            return 1
        batcher.messages += 1
        batcher.frames += 1
        batcher.payload += length
        return 0

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
