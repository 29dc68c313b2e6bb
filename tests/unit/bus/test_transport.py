"""Frame batches, endpoints and the control channel (in-process sockets, no child processes)."""
from __future__ import annotations

import errno
import os
import threading
import time

import msgpack
import pytest
import zmq
from hypothesis import given, settings
from hypothesis import strategies as st

from bus.transport import (
    MAX_IPC_PATH,
    BatchError,
    ControlClient,
    ControlError,
    ControlServer,
    ControlTimeout,
    DataPort,
    FrameBatcher,
    cleanup_endpoint,
    count_frames,
    endpoint_path,
    ipc_endpoint,
    pack_frames,
    unpack_frames,
)
from tests.waiting import wait_for


# ------------------------------------------------------------------ batches

def test_pack_frames_prefixes_each_frame_with_its_big_endian_length():
    assert pack_frames([b"abc", b"", b"\x01" * 258]) == b"\x00\x03abc" + b"\x00\x00" + b"\x01\x02" + b"\x01" * 258


def test_unpack_frames_round_trips_a_batch():
    frames = [bytes([i]) * (14 + i * 97) for i in range(20)]
    assert unpack_frames(pack_frames(frames)) == frames


def test_empty_message_is_a_hello_with_no_frames():
    assert unpack_frames(b"") == []
    assert pack_frames([]) == b""


def test_unpack_accepts_memoryview_and_returns_bytes():
    frames = unpack_frames(memoryview(pack_frames([b"x" * 20, b"y" * 30])))
    assert frames == [b"x" * 20, b"y" * 30]
    assert all(type(f) is bytes for f in frames)


@pytest.mark.parametrize("message", [
    b"\x00",                       # half a length prefix
    b"\x00\x05abc",                # frame shorter than its prefix says
    b"\x00\x03abc\x00",            # trailing half prefix after a good frame
    b"\x00\x03abc\x00\x09abcd",    # second frame truncated
])
def test_malformed_batches_raise_batch_error_a_value_error_of_the_bus(message):
    with pytest.raises(BatchError) as caught:
        unpack_frames(message)
    assert isinstance(caught.value, ValueError)
    assert caught.value.protocol == "batch" and caught.value.reason
    with pytest.raises(BatchError):
        count_frames(message)


def test_pack_refuses_a_frame_too_long_for_the_prefix():
    with pytest.raises(ValueError):
        pack_frames([bytes(0x10000)])


@settings(max_examples=200, deadline=None)
@given(st.lists(st.binary(max_size=300), max_size=40))
def test_pack_unpack_round_trip_property(frames):
    assert unpack_frames(pack_frames(frames)) == frames


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=200))
def test_unpack_of_garbage_returns_frames_or_raises_batch_error(garbage):
    try:
        frames = unpack_frames(garbage)
    except BatchError:
        return
    assert pack_frames(frames) == garbage


def test_frame_batcher_sends_everything_queued_in_one_message():
    sent: list[bytes] = []
    batcher = FrameBatcher(lambda m: sent.append(m) or True)
    for i in range(5):
        batcher.append(bytes([i]) * 20)
    assert batcher.flush() == 5
    assert len(sent) == 1 and unpack_frames(sent[0]) == [bytes([i]) * 20 for i in range(5)]
    assert batcher.flush() == 0 and len(sent) == 1


def test_frame_batcher_sends_a_lone_frame_on_the_first_flush():
    sent: list[bytes] = []
    batcher = FrameBatcher(lambda m: sent.append(m) or True)
    batcher.append(b"f" * 60)
    batcher.flush()
    assert sent == [b"\x00\x3c" + b"f" * 60]


def test_frame_batcher_splits_at_max_bytes():
    sent: list[bytes] = []
    batcher = FrameBatcher(lambda m: sent.append(m) or True, max_bytes=3000)
    for _ in range(5):
        batcher.append(bytes(1000))
    batcher.flush()
    assert [len(unpack_frames(m)) for m in sent] == [2, 2, 1]


def test_frame_batcher_counts_frames_of_a_refused_message_as_dropped():
    batcher = FrameBatcher(lambda m: False)
    batcher.append(bytes(60))
    batcher.append(bytes(60))
    assert batcher.flush() == 0
    assert batcher.dropped == 2 and batcher.frames == 0


def test_frame_batcher_counts_the_sends_append_makes_when_a_batch_fills_up():
    verdicts = iter([True, False, True])  # the second message finds the queue full
    batcher = FrameBatcher(lambda m: next(verdicts), max_bytes=3000)
    for size in (1500, 1400, 1000, 1800, 1500):
        batcher.append(bytes(size))  # 1500+1400 | 1000+1800 | 1500: two sends happen inside append
    assert (batcher.messages, batcher.frames, batcher.payload, batcher.dropped) == (1, 2, 2900, 2)
    assert batcher.flush() == 1
    assert (batcher.messages, batcher.frames, batcher.payload, batcher.dropped) == (2, 3, 4400, 2)


def test_frame_batcher_passes_packed_messages_through_unchanged():
    sent: list[bytes] = []
    batcher = FrameBatcher(lambda m: sent.append(m) or True)
    packed = pack_frames([b"a" * 20, b"b" * 20])
    batcher.append_packed(packed, 2)
    batcher.append(b"c" * 20)
    assert batcher.flush() == 3
    assert unpack_frames(sent[0]) == [b"a" * 20, b"b" * 20, b"c" * 20]


# ---------------------------------------------------------------- endpoints

def test_ipc_endpoint_joins_run_dir_and_name(tmp_path):
    assert ipc_endpoint(tmp_path, "lan1.data") == f"ipc://{tmp_path}/lan1.data"


def test_ipc_endpoint_refuses_paths_longer_than_af_unix_allows(tmp_path):
    with pytest.raises(ValueError, match="107"):
        ipc_endpoint(tmp_path, "x" * MAX_IPC_PATH)


def test_endpoint_path_only_for_ipc_files():
    assert endpoint_path("ipc:///tmp/a.ctl") == "/tmp/a.ctl"
    assert endpoint_path("tcp://127.0.0.1:5555") is None
    assert endpoint_path("ipc://@abstract") is None


def test_cleanup_endpoint_unlinks_the_socket_file_and_tolerates_absence(tmp_path):
    endpoint = ipc_endpoint(tmp_path, "x.ctl")
    context = zmq.Context()
    try:
        socket = context.socket(zmq.ROUTER)
        socket.bind(endpoint)
        socket.close(linger=0)
    finally:
        context.term()
    assert (tmp_path / "x.ctl").exists()
    cleanup_endpoint(endpoint)
    assert not (tmp_path / "x.ctl").exists()
    cleanup_endpoint(endpoint)  # second time: nothing to do, no error


# ----------------------------------------------------------- control channel

@pytest.fixture
def context():
    context = zmq.Context()
    yield context
    context.destroy(linger=0)


class _ServerThread:
    """A ControlServer answering from a thread, the way a process loop would."""

    def __init__(self, context, endpoint, handlers):
        self.server = ControlServer(context, endpoint, handlers)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self):
        while not self._stop.is_set():
            if self.server.socket.poll(20):
                self.server.handle_pending()

    def close(self):
        self._stop.set()
        self._thread.join(2)
        self.server.close()


@pytest.fixture
def server(context, tmp_path):
    def fail_with_errno():
        raise FileExistsError(errno.EEXIST, "route exists")

    handlers = {
        "status": lambda: {"name": "x", "pid": os.getpid()},
        "add": lambda a, b=1: a + b,
        "boom": lambda: 1 / 0,
        "eexist": fail_with_errno,
        "unencodable": lambda: object(),
    }
    running = _ServerThread(context, ipc_endpoint(tmp_path, "t.ctl"), handlers)
    yield running
    running.close()


def test_control_call_returns_the_handler_result(server, context):
    with ControlClient(server.server.endpoint, timeout=2, context=context) as client:
        assert client.call("status")["pid"] == os.getpid()
        assert client.call("add", a=2, b=3) == 5
        assert client.call("add", a=2) == 3


def test_handler_exception_becomes_an_error_reply_and_the_server_keeps_serving(server, context):
    with ControlClient(server.server.endpoint, timeout=2, context=context) as client:
        with pytest.raises(ControlError, match="division by zero") as caught:
            client.call("boom")
        assert caught.value.errno is None and caught.value.op == "boom"
        assert client.call("add", a=1) == 2
    assert server.server.errors == 1


def test_error_reply_carries_the_exception_errno(server, context):
    with ControlClient(server.server.endpoint, timeout=2, context=context) as client:
        with pytest.raises(ControlError) as caught:
            client.call("eexist")
    assert caught.value.errno == errno.EEXIST and "route exists" in str(caught.value)


def test_unknown_op_and_bad_arguments_are_error_replies(server, context):
    with ControlClient(server.server.endpoint, timeout=2, context=context) as client:
        with pytest.raises(ControlError, match="unknown op 'nope'") as caught:
            client.call("nope")
        assert caught.value.errno == errno.EOPNOTSUPP
        with pytest.raises(ControlError, match="unexpected keyword"):
            client.call("add", a=1, c=2)


def test_unencodable_result_is_an_error_reply(server, context):
    with ControlClient(server.server.endpoint, timeout=2, context=context) as client:
        with pytest.raises(ControlError, match="cannot be encoded"):
            client.call("unencodable")


def test_garbage_requests_get_error_replies_from_a_plain_dealer(server, context):
    dealer = context.socket(zmq.DEALER)
    dealer.setsockopt(zmq.LINGER, 0)
    dealer.connect(server.server.endpoint)
    try:
        for garbage in (b"\xc1", msgpack.packb([1, 2]), msgpack.packb({"op": 3})):
            dealer.send(garbage)  # no empty delimiter: a bare DEALER client
            assert dealer.poll(2000)
            reply = msgpack.unpackb(dealer.recv(), raw=False)
            assert reply["ok"] is False and reply["errno"] == errno.EINVAL
    finally:
        dealer.close()


def test_req_clients_are_answered_too(server, context):
    req = context.socket(zmq.REQ)
    req.setsockopt(zmq.LINGER, 0)
    req.connect(server.server.endpoint)
    try:
        req.send(msgpack.packb({"op": "add", "a": 40, "b": 2}))
        assert req.poll(2000)
        assert msgpack.unpackb(req.recv(), raw=False) == {"ok": True, "result": 42}
    finally:
        req.close()


def test_call_times_out_against_a_silent_peer_and_recovers(context, tmp_path):
    endpoint = ipc_endpoint(tmp_path, "silent.ctl")
    silent = context.socket(zmq.ROUTER)  # bound but never answers, like a SIGSTOPped process
    silent.setsockopt(zmq.LINGER, 0)
    silent.bind(endpoint)
    client = ControlClient(endpoint, timeout=0.2, context=context)
    try:
        start = time.monotonic()
        with pytest.raises(ControlTimeout) as caught:
            client.call("status")
        elapsed = time.monotonic() - start
        assert elapsed >= 0.15  # it waited for its timeout...
        assert elapsed < 2.0    # ...and came back: a timeout, not a hang (10x, for a loaded machine)
        assert isinstance(caught.value, TimeoutError) and isinstance(caught.value, ControlError)
        # Once the peer answers again (here: a live server on the same endpoint), so does the client.
        silent.close()
        cleanup_endpoint(endpoint)
        live = _ServerThread(context, endpoint, {"status": lambda: "alive"})
        try:
            client.timeout = 2
            assert client.call("status") == "alive"
        finally:
            live.close()
    finally:
        client.close()
        cleanup_endpoint(endpoint)


def test_call_to_an_endpoint_nobody_bound_times_out(context, tmp_path):
    with ControlClient(ipc_endpoint(tmp_path, "nobody.ctl"), timeout=0.1, context=context) as client:
        with pytest.raises(ControlTimeout, match="no reply to 'status'"):
            client.call("status")


def test_stale_reply_after_timeout_is_never_returned_for_the_next_call(context, tmp_path):
    endpoint = ipc_endpoint(tmp_path, "slow.ctl")
    router = context.socket(zmq.ROUTER)
    router.setsockopt(zmq.LINGER, 0)
    router.bind(endpoint)
    client = ControlClient(endpoint, timeout=0.2, context=context)
    try:
        with pytest.raises(ControlTimeout):
            client.call("first")
        identity, *envelope, _ = router.recv_multipart()
        # Late answer to the first call goes to the abandoned socket.
        router.send_multipart([identity, *envelope, msgpack.packb({"ok": True, "result": "first"})])

        def answer_second():
            while True:
                parts = router.recv_multipart()
                request = msgpack.unpackb(parts[-1], raw=False)
                if request["op"] == "second":
                    router.send_multipart([*parts[:-1], msgpack.packb({"ok": True, "result": "second"})])
                    return

        responder = threading.Thread(target=answer_second, daemon=True)
        responder.start()
        assert client.call("second") == "second"
        responder.join(2)
    finally:
        client.close()
        router.close()
        cleanup_endpoint(endpoint)


# --------------------------------------------------------------- data ports

def test_data_port_says_hello_then_sends_batches_under_its_attachment_name(context, tmp_path):
    endpoint = ipc_endpoint(tmp_path, "d.data")
    router = context.socket(zmq.ROUTER)
    router.setsockopt(zmq.LINGER, 0)
    router.bind(endpoint)
    port = DataPort(context, endpoint, "h1:eth0")
    try:
        assert router.poll(2000)
        assert router.recv_multipart() == [b"h1:eth0", b""]
        assert port.send_frames([b"a" * 60, b"b" * 60]) == 0
        assert router.poll(2000)
        identity, message = router.recv_multipart()
        assert identity == b"h1:eth0" and unpack_frames(message) == [b"a" * 60, b"b" * 60]
        assert port.counters["tx_packets"] == 2 and port.counters["tx_bytes"] == 120
        router.send_multipart([b"h1:eth0", pack_frames([b"c" * 60])])
        router.send_multipart([b"h1:eth0", b"\x00\x09short"])  # malformed: counted, skipped
        router.send_multipart([b"h1:eth0", pack_frames([b"d" * 60])])
        received: list[bytes] = []

        def both_received() -> bool:
            if port.socket.poll(100):
                received.extend(port.receive())
            return len(received) >= 2

        wait_for(both_received, timeout=5, interval=0)
        assert received == [b"c" * 60, b"d" * 60]
        assert port.counters["rx_malformed_batches"] == 1 and port.counters["rx_packets"] == 2
    finally:
        port.close()
        router.close()


def test_frame_batcher_extend_is_append_for_each_frame():
    by_append: list[bytes] = []
    by_extend: list[bytes] = []
    one = FrameBatcher(lambda m: by_append.append(m) or True, max_bytes=3000)
    other = FrameBatcher(lambda m: by_extend.append(m) or True, max_bytes=3000)
    frames = [bytes([i]) * (200 + 150 * i) for i in range(8)]
    one.append(b"x" * 100)
    other.append(b"x" * 100)
    for frame in frames:
        one.append(frame)
    assert other.extend(frames) == sum(map(len, frames))
    assert len(other) == len(one)
    one.flush()
    other.flush()
    assert by_extend == by_append and len(by_append) > 1  # split at max_bytes the same way


def test_frame_batcher_extend_refuses_a_frame_too_long_for_the_prefix():
    batcher = FrameBatcher(lambda m: True, max_bytes=1 << 20)
    with pytest.raises(ValueError):
        batcher.extend([bytes(10), bytes(0x10000)])


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=300))
def test_count_frames_agrees_with_unpack_frames(message):
    try:
        expected = len(unpack_frames(message))
    except BatchError:
        with pytest.raises(BatchError):
            count_frames(message)
    else:
        assert count_frames(message) == expected
    batch = pack_frames([message, b"", message[:7]])
    assert count_frames(batch) == 3


def test_data_port_counts_every_message_of_a_large_batch_sent_or_refused(context, tmp_path):
    port = DataPort(context, ipc_endpoint(tmp_path, "d.data"), "h1:eth0")
    try:
        verdicts = iter([False, True, True, True])  # the first 256 KiB message finds the queue full
        port.batcher._send = lambda message: next(verdicts)
        frames = [bytes(1500)] * 400  # 174 frames fill a message: three messages
        dropped = port.send_frames(frames)
        assert dropped == port.batcher.dropped == 174
        counters = port.counters
        assert (counters["tx_packets"], counters["tx_dropped"], counters["tx_bytes"]) == (226, 174, 226 * 1500)
        assert port.send_frames([bytes(60)]) == 0  # the lone-frame path adds to the same totals
        counters = port.counters
        assert (counters["tx_packets"], counters["tx_dropped"], counters["tx_bytes"]) == (227, 174, 226 * 1500 + 60)
    finally:
        port.close()


def test_data_port_sends_a_lone_frame_as_one_framed_message_and_counts_it(context, tmp_path):
    endpoint = ipc_endpoint(tmp_path, "d.data")
    router = context.socket(zmq.ROUTER)
    router.setsockopt(zmq.LINGER, 0)
    router.bind(endpoint)
    port = DataPort(context, endpoint, "h1:eth0")
    try:
        assert router.poll(2000) and router.recv_multipart() == [b"h1:eth0", b""]
        assert port.send_frames([memoryview(b"m" * 70)]) == 0
        assert port.send_frames(iter([b"i" * 60])) == 0
        for expected in (b"m" * 70, b"i" * 60):
            assert router.poll(2000)
            identity, message = router.recv_multipart()
            assert unpack_frames(message) == [expected]
        assert port.counters["tx_packets"] == 2 and port.counters["tx_bytes"] == 130
        assert port.batcher.messages == 2 and port.batcher.frames == 2 and len(port.batcher) == 0
    finally:
        port.close()
        router.close()


def test_holds_one_frame_tells_a_lone_frame_from_a_batch_and_from_garbage():
    from bus.transport import holds_one_frame, pack_frames
    frame = bytes(range(60))
    assert holds_one_frame(pack_frames([frame]))
    assert not holds_one_frame(pack_frames([frame, frame]))
    assert not holds_one_frame(pack_frames([frame])[:-1])  # truncated
    assert not holds_one_frame(b"") and not holds_one_frame(b"\x00")
