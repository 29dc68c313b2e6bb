"""A bus device's running capture: the pcap file, its timestamps and its periodic flush.

Before changing this file, read bus/pcap.py (what `PcapWriter` guarantees
about a file cut short) and docs/design.md ("Bus device": where in the data
path frames are captured).

A device captures each frame once, as the segment carried it: after ingress
shaping, before forwarding (a flood to N ports is one record). The device's
loop runs on a monotonic clock; records carry wall-clock nanoseconds, so the
offset between the two is taken once when the device starts. The writer
buffers records; a timer flushes them every `FLUSH_INTERVAL` seconds so a
capture read while it runs is at most that far behind. `bus.pcap` is
imported on the first capture: devices that never capture do not pay for it.
"""
from __future__ import annotations

from typing import Any

from .runtime import EventLoop

FLUSH_INTERVAL = 0.1


class Capture:
    """One pcap file a device writes, from `capture_start` until `close` (`capture_stop` or exit)."""

    __slots__ = ("path", "writer", "loop", "wall_offset_ns")

    def __init__(self, path: str, loop: EventLoop, wall_offset_ns: int) -> None:
        from .pcap import PcapWriter  # imported here: only capturing devices pay for it

        self.writer: Any = PcapWriter(path)
        self.path = str(path)
        self.loop = loop
        self.wall_offset_ns = wall_offset_ns
        loop.call_later(FLUSH_INTERVAL, self._flush)

    def write(self, frames: list[bytes], now: float) -> None:
        """Record `frames`, all carried at loop time `now`."""
        timestamp = self.wall_offset_ns + int(now * 1e9)
        write = self.writer.write
        for frame in frames:
            write(frame, timestamp)

    def _flush(self) -> None:
        if self.writer is not None:
            self.writer.flush()
            self.loop.call_later(FLUSH_INTERVAL, self._flush)

    def close(self) -> dict[str, Any]:
        """Finish the file; returns its path and how many frames it holds."""
        writer, self.writer = self.writer, None
        if writer is None:
            return {"path": self.path, "frames": 0}
        writer.close()
        return {"path": self.path, "frames": writer.records_written}
