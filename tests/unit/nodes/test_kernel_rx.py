"""The kernel's NIC "interrupt" with NAPI and without: what reaches the rx ring, what is dropped, what is processed.

In-process: a ROUTER bound by the test plays the bus device; the kernel's
data port connects to it. No child processes.
"""
from __future__ import annotations

import pytest
import zmq

from bus.transport import ipc_endpoint, pack_frames
from nodes.kernel import Kernel

MAC = "02:00:00:00:00:01"


@pytest.fixture
def wired_kernel(tmp_path):
    """A kernel with eth0 (an 8-frame rx ring) on a fake device; yields (kernel, send).

    The device is bound on inproc:// in the kernel's own ZeroMQ context: a message
    sent there is in the kernel's pipe when send() returns (no I/O thread between),
    so `send` needs no wait before the test reads the wire.
    """
    context = zmq.Context()
    data = f"inproc://dev.data-{id(context)}"
    device = context.socket(zmq.ROUTER)
    device.setsockopt(zmq.LINGER, 0)
    device.bind(data)
    kernel = Kernel({"name": "h1", "control": ipc_endpoint(tmp_path, "h1.ctl"),
                     "interfaces": [{"name": "eth0", "mac": MAC, "ip": "10.0.0.1/24", "endpoint": data,
                                     "attachment": "h1:eth0", "rx_ring_size": 8}]}, context=context)
    assert device.poll(2000) and device.recv_multipart() == [b"h1:eth0", b""]  # the hello

    def send(*messages: bytes) -> None:
        for message in messages:
            device.send_multipart([b"h1:eth0", message])
        assert kernel.ports["eth0"].socket.poll(0)  # inproc: already queued at the kernel's end

    try:
        yield kernel, send
    finally:
        kernel.close()
        device.close()
        context.term()


def _junk(count: int) -> bytes:
    """Frames to our MAC with an unknown ethertype: each costs a receive, none an answer."""
    frame = bytes.fromhex(MAC.replace(":", "")) + bytes.fromhex("020000000099") + b"\x88\xb5" + bytes(46)
    return pack_frames([frame] * count)


def test_with_napi_frames_beyond_the_ring_are_dropped_as_rx_missed_and_the_wire_is_drained(wired_kernel):
    kernel, send = wired_kernel
    send(_junk(5), _junk(5), _junk(5))
    port, device = kernel.ports["eth0"], kernel.stack.devices["eth0"]
    kernel._nic_readable(port, device)
    assert len(device.rx_ring) == 8
    assert device.stats.rx_missed_errors == 7  # 2 of the second message, all of the third
    assert port.counters["rx_packets"] == 15
    assert not port.socket.poll(0)  # nothing left queued on the wire
    kernel._softirq()
    assert device.stats.rx_packets == 8 and device.stats.rx_nohandler == 8


def test_without_napi_every_frame_is_processed_even_a_batch_longer_than_the_ring(wired_kernel):
    kernel, send = wired_kernel
    kernel.op_sysctl("net.core.napi", 0)
    send(_junk(20), _junk(3))
    port, device = kernel.ports["eth0"], kernel.stack.devices["eth0"]
    kernel._nic_readable(port, device)
    assert device.stats.rx_packets == 23 and device.stats.rx_missed_errors == 0
    assert not device.rx_ring and not kernel.stack.rx_pending
    assert kernel.stack.napi.stat.time_squeeze == 0


def test_a_malformed_batch_is_counted_and_the_next_one_still_read(wired_kernel):
    kernel, send = wired_kernel
    send(b"\x00\x40short", _junk(2))
    port, device = kernel.ports["eth0"], kernel.stack.devices["eth0"]
    kernel._nic_readable(port, device)
    assert port.counters["rx_malformed_batches"] == 1 and device.stats.rx_errors == 1
    assert len(device.rx_ring) == 2


def test_a_node_coming_up_says_hello_and_announces_nothing(tmp_path):
    context = zmq.Context()
    data = ipc_endpoint(tmp_path, "dev.data")
    device = context.socket(zmq.ROUTER)
    device.setsockopt(zmq.LINGER, 0)
    device.bind(data)
    kernel = Kernel({"name": "h1", "control": ipc_endpoint(tmp_path, "h1.ctl"),
                     "interfaces": [{"name": "eth0", "mac": MAC, "ip": "10.0.0.1/24", "endpoint": data,
                                     "attachment": "h1:eth0"}]}, context=context)
    try:
        for _ in range(3):
            kernel.loop.run_once(0)
        assert device.poll(2000) and device.recv_multipart() == [b"h1:eth0", b""]
        assert not device.poll(200)  # no gratuitous ARP (Linux's default arp_notify = 0)
        assert kernel.stack.devices["eth0"].stats.tx_packets == 0
    finally:
        kernel.close()
        device.close()
        context.term()


def test_a_stack_timer_armed_during_a_pass_runs_on_the_next_one(wired_kernel):
    kernel, _ = wired_kernel
    fired = []
    kernel.loop.run_once(0)
    kernel.stack.call_at(kernel.clock(), fired.append)  # as a control request would, between passes
    kernel.loop.run_once(0)  # the pass in which it was armed: the deadline is learnt at its end
    kernel.loop.run_once(0)
    assert len(fired) == 1
