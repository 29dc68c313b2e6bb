"""Link shaping inside a real device process: rate, delay, loss, reproducible seeds."""
from __future__ import annotations

import statistics
import struct
import time

import pytest

from bus.testing import DeviceProcess, FakeNic, make_frame
from tests.waiting import wait_for

pytestmark = pytest.mark.timeout(60)

A, B = 1, 2


@pytest.fixture
def pair(run_dir):
    """A switch with two NICs that already know each other (no flooding in the measurements)."""
    with DeviceProcess("switch", run_dir, name="sw") as device, \
            FakeNic(device.data, "a:eth0") as a, FakeNic(device.data, "b:eth0") as b:
        device.wait_attached(2)
        a.send(make_frame("ff:ff:ff:ff:ff:ff", A, size=60))
        b.send(make_frame("ff:ff:ff:ff:ff:ff", B, size=60))
        assert len(a.recv()) == 1 and len(b.recv()) == 1
        yield device, a, b


@pytest.mark.parametrize("rate", [10_000_000, 50_000_000])
def test_rate_limit_holds_frames_to_the_configured_rate(pair, rate):
    device, a, b = pair
    count = int(rate * 0.4 / (1514 * 8))  # ~0.4 s of traffic
    device.call("set_port", port="b:eth0", rate=rate, queue=count + 10)
    frames = [make_frame(B, A, struct.pack("!I", i), size=1514) for i in range(count)]
    for start in range(0, count, 32):
        a.send(*frames[start:start + 32])
    arrivals: list[float] = []

    def all_arrived() -> bool:
        got = b.recv(1, timeout=0.5)
        arrivals.extend([time.monotonic()] * len(got))
        return len(arrivals) >= count

    wait_for(all_arrived, timeout=20, interval=0)
    assert len(arrivals) == count
    measured = (count - 1) * 1514 * 8 / (arrivals[-1] - arrivals[0])
    # Physics: the token bucket never lets more than the rate through (10% for the first
    # frame's burst and timer granularity). The lower bound only says "shaped, not stalled":
    # a loaded machine may deliver late, and precision is bench/'s business.
    assert measured <= rate * 1.1, f"measured {measured / 1e6:.2f} Mbit/s for {rate / 1e6:.0f}"
    assert measured >= rate * 0.5, f"measured {measured / 1e6:.2f} Mbit/s for {rate / 1e6:.0f}"
    assert device.port_stats("b:eth0")["egress"]["tx_packets"] == count


def one_way_delays(sender: FakeNic, receiver: FakeNic, dst: int, src: int, samples: int) -> list[float]:
    delays = []
    for i in range(samples):
        sent = time.monotonic()
        sender.send(make_frame(dst, src, struct.pack("!I", i), size=60))
        assert len(receiver.recv(1, timeout=1)) == 1
        delays.append(time.monotonic() - sent)
    return delays


def test_delay_on_one_port_applies_to_both_directions_of_that_port(pair):
    device, a, b = pair
    device.call("set_port", port="b:eth0", delay=0.020)
    to_b = one_way_delays(a, b, B, A, 15)
    from_b = one_way_delays(b, a, A, B, 15)
    for delays in (to_b, from_b):
        assert min(delays) >= 0.020  # physics: no frame overtakes its delay
        # generous: the delay plus scheduling slack on a loaded machine (precision is bench/'s)
        assert statistics.median(delays) <= 0.020 + 0.050, [round(d * 1000, 2) for d in delays]
    device.call("set_port", port="b:eth0", delay=0.0)
    # removed: with the delay still there, every sample would be >= 20 ms
    assert statistics.median(one_way_delays(a, b, B, A, 5)) < 0.020


def received_indices(device: DeviceProcess, a: FakeNic, b: FakeNic, count: int) -> list[int]:
    """Indices of the frames b got out of `count` sent by a, once the device decided on each."""
    offered = device.port_stats("a:eth0")["rx_packets"]
    lost = device.port_stats("b:eth0")["dropped_loss"]
    frames = [make_frame(B, A, struct.pack("!I", i), size=60) for i in range(count)]
    for start in range(0, count, 50):
        a.send(*frames[start:start + 50])
    wait_for(lambda: device.port_stats("a:eth0")["rx_packets"] >= offered + count)
    delivered = count - (device.port_stats("b:eth0")["dropped_loss"] - lost)
    got = b.recv(delivered, timeout=10)
    return [struct.unpack_from("!I", frame, 14)[0] for frame in got]


def test_loss_drops_about_the_configured_share_and_set_seed_replays_it(pair):
    device, a, b = pair
    device.call("set_port", port="b:eth0", loss=0.3)
    device.call("set_seed", seed=7)
    first = received_indices(device, a, b, 400)
    assert 0.6 * 400 <= len(first) <= 0.8 * 400
    assert device.port_stats("b:eth0")["dropped_loss"] == 400 - len(first)
    device.call("set_seed", seed=7)
    assert received_indices(device, a, b, 400) == first
    device.call("set_seed", seed=8)
    assert received_indices(device, a, b, 400) != first


def test_queue_limit_tail_drops_under_a_slow_rate(pair):
    device, a, b = pair
    device.call("set_port", port="b:eth0", rate=1_000_000, queue=5)
    offered = device.port_stats("a:eth0")["rx_packets"]
    a.send(*[make_frame(B, A, size=1000) for _ in range(20)])
    wait_for(lambda: device.port_stats("a:eth0")["rx_packets"] >= offered + 20)  # the device saw all 20
    assert device.port_stats("b:eth0")["dropped_queue"] == 15
    assert len(b.recv(5, timeout=2)) == 5
