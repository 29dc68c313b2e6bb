"""PcapWriter / read_pcap: exact bytes, independent readers (scapy, tshark), truncation, signals."""
from __future__ import annotations

import os
import signal
import struct
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from bus.pcap import (
    FILE_HEADER_LENGTH,
    LINKTYPE_ETHERNET,
    PCAP_MAGIC_MICROSECONDS,
    PCAP_MAGIC_NANOSECONDS,
    RECORD_HEADER_LENGTH,
    PcapError,
    PcapHeader,
    PcapWriter,
    read_pcap,
    read_pcap_header,
    repair_pcap,
)
from tests.conftest import require_tool
from tests.waiting import wait_for

REPO = Path(__file__).resolve().parents[3]

# An ARP request from 02:00:00:00:00:01 (10.0.0.1) for 10.0.0.2, padded to 60 bytes.
ARP_FRAME = bytes.fromhex(
    "ffffffffffff" "020000000001" "0806"
    "0001" "0800" "06" "04" "0001" "020000000001" "0a000001" "000000000000" "0a000002"
) + bytes(18)

T0 = 1_700_000_000_123_456_789  # ns since the epoch


def sample_frames(count: int) -> list[bytes]:
    return [ARP_FRAME[:12] + b"\x08\x00" + bytes([i % 256]) * (46 + i) for i in range(count)]


def test_file_header_bytes_are_exact(tmp_path):
    path = tmp_path / "empty.pcap"
    PcapWriter(path).close()
    assert path.read_bytes() == bytes.fromhex(
        "4d3cb2a1"   # magic 0xA1B23C4D little-endian: nanosecond timestamps
        "0200" "0400"  # version 2.4
        "00000000"   # thiszone
        "00000000"   # sigfigs
        "ffff0000"   # snaplen 65535
        "01000000"   # LINKTYPE_ETHERNET
    )
    assert list(read_pcap(path)) == []


def test_header_is_on_disk_as_soon_as_the_writer_opens(tmp_path):
    path = tmp_path / "open.pcap"
    writer = PcapWriter(path, snaplen=1600)
    try:
        assert read_pcap_header(path) == PcapHeader((2, 4), 1600, LINKTYPE_ETHERNET, True, False)
    finally:
        writer.close()


def test_record_bytes_are_exact(tmp_path):
    path = tmp_path / "one.pcap"
    with PcapWriter(path) as writer:
        writer.write(ARP_FRAME, T0)
    record = path.read_bytes()[FILE_HEADER_LENGTH:]
    assert record[:RECORD_HEADER_LENGTH] == bytes.fromhex(
        "00f15365"   # seconds 1700000000
        "15cd5b07"   # 123456789 ns
        "3c000000"   # captured 60
        "3c000000"   # original 60
    )
    assert record[RECORD_HEADER_LENGTH:] == ARP_FRAME


def test_frames_longer_than_snaplen_are_cut_but_keep_their_length(tmp_path):
    path = tmp_path / "snap.pcap"
    with PcapWriter(path, snaplen=64) as writer:
        writer.write(bytes(range(100)), T0)
        writer.write(memoryview(bytes(range(64))), T0 + 1)
    raw = path.read_bytes()
    assert struct.unpack_from("<II", raw, FILE_HEADER_LENGTH + 8) == (64, 100)
    assert list(read_pcap(path)) == [(T0, bytes(range(64))), (T0 + 1, bytes(range(64)))]


def test_round_trip_through_read_pcap(tmp_path):
    path = tmp_path / "many.pcap"
    frames = sample_frames(300)
    with PcapWriter(path) as writer:
        for i, frame in enumerate(frames):
            writer.write(frame, T0 + i * 1001)
    assert list(read_pcap(path)) == [(T0 + i * 1001, f) for i, f in enumerate(frames)]


def test_scapy_reads_count_contents_and_nanosecond_timestamps(tmp_path):
    from scapy.layers.l2 import ARP, Ether
    from scapy.utils import rdpcap

    path = tmp_path / "scapy.pcap"
    with PcapWriter(path) as writer:
        writer.write(ARP_FRAME, T0)
        writer.write(ARP_FRAME, T0 + 1)             # one nanosecond later
        writer.write(sample_frames(3)[2], T0 + 2_000_000_000)
    packets = rdpcap(str(path))
    assert len(packets) == 3
    assert bytes(packets[0]) == ARP_FRAME
    assert packets[0][Ether].src == "02:00:00:00:00:01" and packets[0][ARP].pdst == "10.0.0.2"
    assert bytes(packets[2]) == sample_frames(3)[2]
    # scapy keeps the nanoseconds in a Decimal: compare exactly, not as floats
    assert [int(p.time * 1_000_000_000) for p in packets] == [T0, T0 + 1, T0 + 2_000_000_000]


@pytest.mark.timeout(30)
def test_tshark_reads_our_file(tmp_path):
    tshark = require_tool("tshark")
    path = tmp_path / "tshark.pcap"
    with PcapWriter(path) as writer:
        writer.write(ARP_FRAME, T0)
        writer.write(ARP_FRAME, T0 + 5)
    result = subprocess.run(
        [tshark, "-r", str(path), "-T", "fields", "-e", "frame.time_epoch", "-e", "arp.dst.proto_ipv4",
         "-e", "frame.len"],
        capture_output=True, text=True, timeout=25, env={**os.environ, "HOME": str(tmp_path)},
    )
    assert result.returncode == 0, result.stderr
    lines = [line.split("\t") for line in result.stdout.splitlines()]
    assert lines == [["1700000000.123456789", "10.0.0.2", "60"], ["1700000000.123456794", "10.0.0.2", "60"]]


# --- buffering and flushing ---------------------------------------------------------------

def test_records_are_buffered_until_a_flush(tmp_path):
    path = tmp_path / "buffered.pcap"
    writer = PcapWriter(path, flush_records=1000)
    try:
        writer.write(ARP_FRAME, T0)
        assert writer.pending == 1
        assert path.stat().st_size == FILE_HEADER_LENGTH
        writer.flush()
        assert writer.pending == 0 and writer.records_written == 1
        assert list(read_pcap(path)) == [(T0, ARP_FRAME)]
    finally:
        writer.close()


def test_maybe_flush_writes_after_the_interval(tmp_path):
    path = tmp_path / "timed.pcap"
    writer = PcapWriter(path, flush_interval=0.1, flush_records=1000)
    try:
        assert writer.next_flush_deadline() is None
        writer.write(ARP_FRAME, T0)
        writer.maybe_flush(10.0)                     # first flush: nothing has waited before
        assert len(list(read_pcap(path))) == 1
        writer.write(ARP_FRAME, T0 + 1)
        assert writer.next_flush_deadline() == pytest.approx(10.1)
        writer.maybe_flush(10.05)
        assert len(list(read_pcap(path))) == 1       # not yet: 50 ms
        writer.maybe_flush(10.1)
        assert len(list(read_pcap(path))) == 2
        assert writer.next_flush_deadline() is None
    finally:
        writer.close()


def test_a_full_buffer_flushes_by_itself(tmp_path):
    path = tmp_path / "count.pcap"
    writer = PcapWriter(path, flush_records=10)
    try:
        for i in range(25):
            writer.write(ARP_FRAME, T0 + i)
        assert len(list(read_pcap(path))) == 20 and writer.pending == 5
    finally:
        writer.close()
    assert len(list(read_pcap(path))) == 25


def test_a_byte_limit_also_flushes(tmp_path):
    path = tmp_path / "bytes.pcap"
    with PcapWriter(path, flush_records=10_000, flush_bytes=1000) as writer:
        for i in range(20):
            writer.write(bytes(100), T0 + i)
        assert writer.pending < 10


def test_short_writes_are_resumed_where_they_stopped(tmp_path, monkeypatch):
    path = tmp_path / "short.pcap"
    real_writev = os.writev
    monkeypatch.setattr(os, "writev", lambda fd, parts: real_writev(fd, [b"".join(bytes(p) for p in parts)[:7]]))
    frames = sample_frames(20)
    with PcapWriter(path, snaplen=50) as writer:
        for i, frame in enumerate(frames):
            writer.write(frame, T0 + i)
    monkeypatch.undo()
    assert list(read_pcap(path)) == [(T0 + i, f[:50]) for i, f in enumerate(frames)]


def test_one_flush_of_more_records_than_writev_takes(tmp_path):
    path = tmp_path / "big.pcap"
    with PcapWriter(path, flush_records=10_000, flush_bytes=1 << 30) as writer:
        for i in range(1500):                        # 3000 parts: three writev calls
            writer.write(ARP_FRAME, T0 + i)
        writer.flush()
        assert writer.records_written == 1500
        assert writer.bytes_written == path.stat().st_size == FILE_HEADER_LENGTH + 1500 * (16 + 60)
    assert [t for t, _ in read_pcap(path)] == [T0 + i for i in range(1500)]


def test_the_callers_buffer_can_be_reused_right_after_write(tmp_path):
    path = tmp_path / "reuse.pcap"
    buffer = bytearray(ARP_FRAME)
    with PcapWriter(path) as writer:
        writer.write(memoryview(buffer), T0)
        buffer[:] = bytes(len(buffer))
    assert list(read_pcap(path)) == [(T0, ARP_FRAME)]


def test_close_is_idempotent_and_writing_after_it_raises(tmp_path):
    path = tmp_path / "closed.pcap"
    writer = PcapWriter(path)
    writer.write(ARP_FRAME, T0)
    writer.close()
    writer.close()
    assert writer.closed
    with pytest.raises(ValueError, match="closed"):
        writer.write(ARP_FRAME, T0)
    assert len(list(read_pcap(path))) == 1


@pytest.mark.parametrize("timestamp", [-1, (1 << 32) * 1_000_000_000])
def test_timestamps_outside_pcap_range_raise(tmp_path, timestamp):
    with PcapWriter(tmp_path / "range.pcap") as writer:
        with pytest.raises(ValueError, match="does not fit"):
            writer.write(ARP_FRAME, timestamp)


@pytest.mark.parametrize("snaplen", [0, -1, 262145, "65535"])
def test_bad_snaplen_raises(tmp_path, snaplen):
    with pytest.raises(ValueError, match="snaplen"):
        PcapWriter(tmp_path / "bad.pcap", snaplen=snaplen)
    assert not (tmp_path / "bad.pcap").exists()


def test_a_failed_write_is_rolled_back_to_whole_records(tmp_path, monkeypatch):
    path = tmp_path / "full.pcap"
    writer = PcapWriter(path, flush_records=1000)
    writer.write(ARP_FRAME, T0)
    writer.flush()
    writer.write(ARP_FRAME, T0 + 1)
    writer.write(ARP_FRAME, T0 + 2)
    real_writev = os.writev

    def disk_fills_up(fd, parts):
        if fd == writer._fd:
            if sum(map(len, parts)) > 30:
                return real_writev(fd, [bytes(b"".join(parts))[:30]])   # a partial write, then ...
            raise OSError(28, "No space left on device")
        return real_writev(fd, parts)

    monkeypatch.setattr(os, "writev", disk_fills_up)
    with pytest.raises(OSError):
        writer.flush()
    monkeypatch.undo()
    assert list(read_pcap(path)) == [(T0, ARP_FRAME)]      # strict read: no half record left
    writer.close()                                         # the buffered records are retried
    assert [t for t, _ in read_pcap(path)] == [T0, T0 + 1, T0 + 2]


def test_close_from_a_signal_handler_halfway_through_write_leaves_no_half_record(tmp_path):
    """A Python signal handler runs between two lines; run close() exactly where it hurts most."""
    import inspect

    path = tmp_path / "handler.pcap"
    writer = PcapWriter(path, flush_records=1000)
    writer.write(ARP_FRAME, T0)
    source, first_line = inspect.getsourcelines(PcapWriter.write)
    (offset,) = [i for i, line in enumerate(source) if line.strip() == "parts.append(frame)"]
    frame_line = first_line + offset                  # the record header is buffered, the frame not yet
    fired = []

    def tracer(frame, event, arg):
        if frame.f_code is PcapWriter.write.__code__:
            def line_tracer(frame, event, arg):
                if event == "line" and frame.f_lineno == frame_line and not fired:
                    fired.append(True)
                    writer.close()                    # what the device's SIGTERM path does
                return line_tracer
            return line_tracer
        return None

    previous = sys.gettrace()
    sys.settrace(tracer)
    try:
        writer.write(ARP_FRAME, T0 + 1)
    finally:
        sys.settrace(previous)
    assert fired and writer.closed
    assert list(read_pcap(path)) == [(T0, ARP_FRAME)]   # strict: the interrupted record is not there


# --- reading malformed files --------------------------------------------------------------

def write_capture(path: Path, count: int = 3) -> bytes:
    with PcapWriter(path) as writer:
        for i, frame in enumerate(sample_frames(count)):
            writer.write(frame, T0 + i)
    return path.read_bytes()


@pytest.mark.parametrize("cut, message", [
    (-1, "truncated record at offset"),
    (-50, "truncated record at offset"),
    (-(46 + 2 + 14) - 8, "truncated record header at offset"),
])
def test_truncated_file_is_detected(tmp_path, cut, message):
    path = tmp_path / "cut.pcap"
    raw = write_capture(path)
    path.write_bytes(raw[:cut])
    with pytest.raises(PcapError, match=message):
        list(read_pcap(path))
    assert len(list(read_pcap(path, allow_truncated_tail=True))) == 2


def test_repair_cuts_only_a_half_written_last_record(tmp_path):
    path = tmp_path / "cut.pcap"
    raw = write_capture(path)
    assert repair_pcap(path) == 0 and path.read_bytes() == raw
    path.write_bytes(raw[:-10])
    removed = repair_pcap(path)
    assert removed == RECORD_HEADER_LENGTH + len(sample_frames(3)[2]) - 10
    assert path.read_bytes() == raw[:len(raw) - 10 - removed]
    assert len(list(read_pcap(path))) == 2


def test_repair_refuses_damage_before_the_tail(tmp_path):
    path = tmp_path / "bad.pcap"
    raw = bytearray(write_capture(path))
    raw[FILE_HEADER_LENGTH + 8:FILE_HEADER_LENGTH + 12] = struct.pack("<I", 1 << 30)
    path.write_bytes(bytes(raw))
    with pytest.raises(PcapError, match="not a record boundary"):
        repair_pcap(path)
    assert path.read_bytes() == bytes(raw)


@pytest.mark.parametrize("raw, message", [
    (b"", "too short for a pcap file header"),
    (b"\x4d\x3c\xb2\xa1\x02\x00", "too short for a pcap file header"),
    (b"\x0a\x0d\x0d\x0a" + bytes(20), "is not a pcap file"),
    (struct.pack("<IHHiIII", PCAP_MAGIC_NANOSECONDS, 1, 0, 0, 0, 65535, 1), "version 1.0"),
])
def test_malformed_headers_raise(tmp_path, raw, message):
    path = tmp_path / "bad.pcap"
    path.write_bytes(raw)
    with pytest.raises(PcapError, match=message):
        list(read_pcap(path))


@pytest.mark.parametrize("record, message", [
    (struct.pack("<IIII", 0, 1_000_000_000, 0, 0), "sub-second field"),
    (struct.pack("<IIII", 0, 0, 300_000, 300_000), "not a record boundary"),
    (struct.pack("<IIII", 0, 0, 10, 5) + bytes(10), "captured 10 bytes of a 5-byte frame"),
])
def test_malformed_records_raise(tmp_path, record, message):
    path = tmp_path / "bad.pcap"
    path.write_bytes(struct.pack("<IHHiIII", PCAP_MAGIC_NANOSECONDS, 2, 4, 0, 0, 65535, 1) + record)
    with pytest.raises(PcapError, match=message):
        list(read_pcap(path))


def test_reads_big_endian_microsecond_files(tmp_path):
    path = tmp_path / "usec.pcap"
    path.write_bytes(struct.pack(">IHHiIII", PCAP_MAGIC_MICROSECONDS, 2, 4, 0, 0, 96, 1)
                     + struct.pack(">IIII", 5, 250_000, 4, 60) + b"abcd")
    assert read_pcap_header(path) == PcapHeader((2, 4), 96, 1, False, True)
    assert list(read_pcap(path)) == [(5_250_000_000, b"abcd")]


# --- signals: the file stays whole when the writer's process is stopped ----------------

_CHILD = textwrap.dedent("""
    import signal, sys, time
    sys.path.insert(0, {repo!r})
    from bus.pcap import PcapWriter
    writer = PcapWriter({path!r}, flush_records={flush_records})
    def on_term(signum, frame):
        writer.close()
        sys.exit(0)
    signal.signal(signal.SIGTERM, on_term)
    frame = bytes(range(256)) + bytes(44)               # 300 bytes: records straddle pages
    i = 0
    print("ready", flush=True)
    while True:
        writer.write(frame, 1_700_000_000_000_000_000 + i)
        i += 1
""")


CHILD_RECORD = RECORD_HEADER_LENGTH + 300               # each record the child writes


def run_writer_and_signal(tmp_path: Path, sig: int, flush_records: int) -> Path:
    path = tmp_path / "killed.pcap"
    code = _CHILD.format(repo=str(REPO), path=str(path), flush_records=flush_records)
    child = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE)
    try:
        assert child.stdout.readline() == b"ready\n"
        # the writer has flushed more records than the test needs to see
        wait_for(lambda: path.exists() and path.stat().st_size >= FILE_HEADER_LENGTH + (flush_records + 1) * CHILD_RECORD,
                 timeout=10, interval=0.005)
        child.send_signal(sig)
        child.wait(timeout=10)
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
        child.stdout.close()
    assert child.returncode == (0 if sig == signal.SIGTERM else -sig)
    return path


@pytest.mark.integration
@pytest.mark.timeout(30)
def test_sigterm_leaves_a_complete_file(tmp_path):
    path = run_writer_and_signal(tmp_path, signal.SIGTERM, flush_records=64)
    records = list(read_pcap(path))                      # strict: every record whole
    assert len(records) > 64
    assert [t for t, _ in records] == [1_700_000_000_000_000_000 + i for i in range(len(records))]


@pytest.mark.integration
@pytest.mark.timeout(30)
def test_sigkill_leaves_a_readable_prefix_that_repair_makes_strict(tmp_path):
    path = run_writer_and_signal(tmp_path, signal.SIGKILL, flush_records=7)
    records = list(read_pcap(path, allow_truncated_tail=True))
    assert len(records) >= 7
    assert [t for t, _ in records] == [1_700_000_000_000_000_000 + i for i in range(len(records))]
    assert all(frame == bytes(range(256)) + bytes(44) for _, frame in records)
    repair_pcap(path)
    assert list(read_pcap(path)) == records
