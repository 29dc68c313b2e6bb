"""Capture files in the classic libpcap format, nanosecond timestamps, LINKTYPE_ETHERNET.

Before changing this file, read the pcap file format (draft-ietf-opsawg-pcap:
file header, packet record, magic 0xA1B23C4D for nanosecond resolution) and
the LINKTYPE registry (1 = Ethernet, frames without FCS -- what our wires
carry).

`PcapWriter` is used by a bus device on its hot path, so it buffers records
and writes them with one `os.writev` per flush (of up to 512 records). The file is always a valid
capture up to its last flush:

* a record enters the buffer whole before it counts as complete, and a flush
  writes only complete records, so even a signal handler that closes the
  writer halfway through `write` leaves no half record;
* a flush runs with the asynchronous termination signals blocked, so SIGTERM
  (handled or not) cannot land between two chunks of a record; the device
  calls `close()` from its SIGTERM path and the file ends cleanly;
* a failed write (disk full) is rolled back with `ftruncate` to the last
  complete record;
* SIGKILL cannot be blocked, and Linux does cut a write to a regular file
  short on a fatal signal (between pages, so mid-record): a writer killed
  that way leaves every earlier flush intact and at most its last record
  cut. Wireshark and `read_pcap(..., allow_truncated_tail=True)` read that
  prefix; `repair_pcap` trims the cut record so the file reads strictly.

`read_pcap` is the strict reader for tests and tools: anything malformed or
truncated raises `PcapError` saying where.
"""
from __future__ import annotations

import math
import os
import signal
import struct
from dataclasses import dataclass
from typing import BinaryIO, Iterator

PCAP_MAGIC_NANOSECONDS = 0xA1B23C4D
PCAP_MAGIC_MICROSECONDS = 0xA1B2C3D4
PCAP_VERSION = (2, 4)
LINKTYPE_ETHERNET = 1
DEFAULT_SNAPLEN = 65535
MAX_SNAPLEN = 262144           # libpcap's MAXIMUM_SNAPLEN: a larger record length means garbage

_FILE_HEADER = struct.Struct("<IHHiIII")   # magic, major, minor, thiszone, sigfigs, snaplen, linktype
_RECORD_HEADER = struct.Struct("<IIII")    # seconds, fraction, captured length, original length
FILE_HEADER_LENGTH = _FILE_HEADER.size
RECORD_HEADER_LENGTH = _RECORD_HEADER.size

# Signals whose handler (or default action) must not run in the middle of a flush.
_DEFERRED_SIGNALS = frozenset({
    signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGQUIT,
    signal.SIGALRM, signal.SIGUSR1, signal.SIGUSR2,
})


_IOV_MAX = min(os.sysconf("SC_IOV_MAX"), 1024)   # parts per writev; Linux allows 1024


class PcapError(ValueError):
    """A capture file that is not a valid pcap, or ends in the middle of a record."""


@dataclass(frozen=True, slots=True)
class PcapHeader:
    """The global header: what `read_pcap_header` reports."""

    version: tuple[int, int]
    snaplen: int
    linktype: int
    nanosecond: bool
    big_endian: bool


class PcapWriter:
    """Appends Ethernet frames to a new pcap file; see the module docstring for the guarantees."""

    def __init__(
        self,
        path: "str | os.PathLike[str]",
        snaplen: int = DEFAULT_SNAPLEN,
        *,
        flush_interval: float = 0.1,
        flush_records: int = 256,
        flush_bytes: int = 1 << 20,
    ) -> None:
        if not isinstance(snaplen, int) or not 1 <= snaplen <= MAX_SNAPLEN:
            raise ValueError(f"snaplen must be an int 1..{MAX_SNAPLEN}, got {snaplen!r}")
        self.path = os.fspath(path)
        self.snaplen = snaplen
        self.flush_interval = flush_interval
        self.flush_records = flush_records
        self.flush_bytes = flush_bytes
        # Header and frame of each record as separate parts for os.writev: one copy
        # fewer than joining them, which halves the cost of capturing 1500-byte frames.
        self._parts: list[bytes] = []
        self._complete = 0              # parts that form whole records
        self._complete_records = 0
        self._complete_bytes = 0
        self._last_flush = -math.inf
        self.records_written = 0        # records handed to the kernel
        self.bytes_written = 0          # file size, header included
        self._fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o644)
        try:
            header = _FILE_HEADER.pack(PCAP_MAGIC_NANOSECONDS, *PCAP_VERSION, 0, 0, snaplen, LINKTYPE_ETHERNET)
            self._write_out([header])
        except BaseException:
            os.close(self._fd)
            self._fd = -1
            raise

    @property
    def closed(self) -> bool:
        return self._fd < 0

    @property
    def pending(self) -> int:
        """Complete records buffered, not yet written."""
        return self._complete_records

    def write(self, frame: "bytes | bytearray | memoryview", timestamp_ns: int) -> None:
        """Buffer one frame captured at `timestamp_ns` (ns since the epoch); cut to `snaplen`."""
        if self._fd < 0:
            raise ValueError(f"write to a closed capture ({self.path})")
        seconds, nanoseconds = divmod(timestamp_ns, 1_000_000_000)
        if not 0 <= seconds <= 0xFFFFFFFF:
            raise ValueError(f"timestamp {timestamp_ns} ns does not fit a pcap record (years 1970..2106)")
        length = len(frame)
        if length > self.snaplen:
            frame = bytes(frame[:self.snaplen])
        elif type(frame) is not bytes:
            frame = bytes(frame)        # the caller may reuse its buffer before we flush
        captured = len(frame)
        parts = self._parts
        parts.append(_RECORD_HEADER.pack(seconds, nanoseconds, captured, length))
        parts.append(frame)
        # Only now is the record whole; a flush from a signal handler before this line skips it.
        self._complete = len(parts)
        self._complete_records += 1
        self._complete_bytes += RECORD_HEADER_LENGTH + captured
        if self._complete_records >= self.flush_records or self._complete_bytes >= self.flush_bytes:
            self.flush()

    def maybe_flush(self, now: float) -> None:
        """Flush if records have waited `flush_interval` seconds since the last timed flush."""
        # Same sum as next_flush_deadline, so a timer set from it always finds work due.
        if self._complete_records and now >= self._last_flush + self.flush_interval:
            self.flush()
            self._last_flush = now

    def next_flush_deadline(self) -> float | None:
        """When `maybe_flush` will next have work (for the device's timer), or None when idle."""
        return self._last_flush + self.flush_interval if self._complete_records else None

    def flush(self) -> None:
        """Hand every complete buffered record to the kernel (one writev per 512 records)."""
        if self._fd < 0 or not self._complete:
            return
        previous_mask = signal.pthread_sigmask(signal.SIG_BLOCK, _DEFERRED_SIGNALS)
        try:
            if self._fd >= 0 and self._complete:     # a handler may have run before the mask
                complete = self._complete
                self._write_out(self._parts[:complete])
                del self._parts[:complete]
                self.records_written += self._complete_records
                self._complete = self._complete_records = self._complete_bytes = 0
        finally:
            signal.pthread_sigmask(signal.SIG_SETMASK, previous_mask)

    def _write_out(self, parts: "list[bytes | memoryview]") -> None:
        """Write all of `parts` (consumed) or, on error, cut the file back to where it was and re-raise."""
        written = 0
        first = 0
        try:
            while first < len(parts):
                count = os.writev(self._fd, parts[first:first + _IOV_MAX])
                written += count
                # Skip what went out; a short write leaves the rest of one part.
                while first < len(parts) and count >= len(parts[first]):
                    count -= len(parts[first])
                    first += 1
                if count:
                    parts[first] = memoryview(parts[first])[count:]
        except BaseException:
            if written:
                os.ftruncate(self._fd, self.bytes_written)
                os.lseek(self._fd, self.bytes_written, os.SEEK_SET)
            raise
        self.bytes_written += written

    def close(self) -> None:
        """Flush and close; safe to call twice and from a signal handler."""
        if self._fd < 0:
            return
        try:
            self.flush()
        finally:
            fd, self._fd = self._fd, -1
            os.close(fd)

    def __enter__(self) -> "PcapWriter":
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


def _parse_file_header(path: str, data: bytes) -> tuple[PcapHeader, struct.Struct]:
    if len(data) < FILE_HEADER_LENGTH:
        raise PcapError(f"{path}: {len(data)} bytes is too short for a pcap file header ({FILE_HEADER_LENGTH})")
    for order in ("<", ">"):
        (magic,) = struct.unpack_from(order + "I", data)
        if magic in (PCAP_MAGIC_NANOSECONDS, PCAP_MAGIC_MICROSECONDS):
            break
    else:
        raise PcapError(f"{path}: magic {data[:4].hex()} is not a pcap file (pcapng is not supported)")
    _, major, minor, _, _, snaplen, linktype = struct.unpack_from(order + "IHHiIII", data)
    if major != 2:
        raise PcapError(f"{path}: pcap version {major}.{minor} is not 2.x")
    header = PcapHeader((major, minor), snaplen, linktype & 0x0FFFFFFF,
                        magic == PCAP_MAGIC_NANOSECONDS, order == ">")
    return header, struct.Struct(order + "IIII")


def read_pcap_header(path: "str | os.PathLike[str]") -> PcapHeader:
    """The global header of a pcap file (raises PcapError if it is not one)."""
    path = os.fspath(path)
    with open(path, "rb") as file:
        return _parse_file_header(path, file.read(FILE_HEADER_LENGTH))[0]


def read_pcap(path: "str | os.PathLike[str]", *, allow_truncated_tail: bool = False) -> Iterator[tuple[int, bytes]]:
    """Yield (timestamp in ns, captured bytes) for every record; PcapError on anything malformed.

    `allow_truncated_tail` stops quietly at a last record cut short (a file
    still being written, or a writer killed mid-write), as Wireshark does.
    """
    path = os.fspath(path)
    with open(path, "rb") as file:
        for _, timestamp_ns, frame in _scan_records(path, file, allow_truncated_tail):
            yield timestamp_ns, frame


def repair_pcap(path: "str | os.PathLike[str]") -> int:
    """Cut a record left half-written by a killed writer; returns the bytes removed.

    For the supervisor after a device died by SIGKILL: afterwards the file
    reads strictly. Damage anywhere but the tail still raises PcapError.
    """
    path = os.fspath(path)
    with open(path, "r+b") as file:
        end = FILE_HEADER_LENGTH
        for end, _, _ in _scan_records(path, file, allow_truncated_tail=True):
            pass
        size = file.seek(0, os.SEEK_END)
        if size > end:
            file.truncate(end)
        return size - end


def _scan_records(path: str, file: BinaryIO, allow_truncated_tail: bool) -> Iterator[tuple[int, int, bytes]]:
    """(offset just past the record, timestamp in ns, frame) for each record of an open file."""
    header, record_struct = _parse_file_header(path, file.read(FILE_HEADER_LENGTH))
    fraction_scale = 1 if header.nanosecond else 1000
    fraction_limit = 1_000_000_000 if header.nanosecond else 1_000_000
    length_limit = max(header.snaplen, MAX_SNAPLEN)
    offset = FILE_HEADER_LENGTH
    while True:
        raw = file.read(RECORD_HEADER_LENGTH)
        if not raw:
            return
        if len(raw) < RECORD_HEADER_LENGTH:
            if allow_truncated_tail:
                return
            raise PcapError(f"{path}: truncated record header at offset {offset} "
                            f"({len(raw)} of {RECORD_HEADER_LENGTH} bytes)")
        seconds, fraction, captured, original = record_struct.unpack(raw)
        if fraction >= fraction_limit:
            raise PcapError(f"{path}: record at offset {offset} has a sub-second field of {fraction}")
        if captured > length_limit:
            raise PcapError(f"{path}: record at offset {offset} claims {captured} bytes "
                            f"(more than {length_limit}): not a record boundary")
        if captured > original:
            raise PcapError(f"{path}: record at offset {offset} captured {captured} bytes "
                            f"of a {original}-byte frame")
        frame = file.read(captured)
        if len(frame) < captured:
            if allow_truncated_tail:
                return
            raise PcapError(f"{path}: truncated record at offset {offset} "
                            f"({len(frame)} of {captured} frame bytes)")
        offset += RECORD_HEADER_LENGTH + captured
        yield offset, seconds * 1_000_000_000 + fraction * fraction_scale, frame
