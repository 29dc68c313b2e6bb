from nodes.nic import NapiScheduler, NetDevice, make_loopback
from nodes.wire.addresses import MacAddress


def device(name="eth0", **kwargs):
    return NetDevice(name=name, mac=MacAddress("02:00:00:00:00:01"), **kwargs)


def fill(dev, scheduler, count, tag=b""):
    for i in range(count):
        dev.rx_enqueue(tag + i.to_bytes(4, "big"))
    scheduler.schedule(dev)


def test_full_rx_ring_drops_newest_and_counts_rx_missed_errors():
    dev = device(rx_ring_size=4)
    accepted = [dev.rx_enqueue(bytes([i])) for i in range(6)]
    assert accepted == [True] * 4 + [False] * 2
    assert dev.stats.rx_missed_errors == 2
    assert list(dev.rx_ring) == [bytes([i]) for i in range(4)]


def test_full_tx_queue_drops_and_counts_tx_dropped():
    dev = device(txqueuelen=2)
    assert [dev.tx_enqueue(b"x" * 60) for _ in range(3)] == [True, True, False]
    assert dev.stats.tx_dropped == 1
    assert dev.stats.tx_packets == 2 and dev.stats.tx_bytes == 120
    assert dev.tx_drain() == [b"x" * 60] * 2 and not dev.tx_queue


def test_down_device_drops_both_ways():
    dev = device()
    dev.admin_up = False
    assert not dev.rx_enqueue(b"a") and not dev.tx_enqueue(b"b")
    assert dev.stats.rx_dropped == 1 and dev.stats.tx_dropped == 1
    dev.admin_up, dev.carrier = True, False
    assert not dev.tx_enqueue(b"b")
    assert dev.stats.tx_carrier_errors == 1


def test_weight_limits_frames_per_device_per_visit_round_robin():
    scheduler = NapiScheduler(netdev_budget=300)
    a, b = device("a", weight=2), device("b", weight=2)
    fill(a, scheduler, 5, b"a")
    fill(b, scheduler, 3, b"b")
    order = []
    scheduler.run(lambda dev, frame, now: order.append(dev.name), 0.0)
    assert order == ["a", "a", "b", "b", "a", "a", "b", "a"]
    assert not a.napi_scheduled and not b.napi_scheduled and not scheduler.pending
    assert a.stats.rx_packets == 5 and b.stats.rx_packets == 3


def test_netdev_budget_bounds_a_round_and_counts_time_squeeze():
    scheduler = NapiScheduler(netdev_budget=10)
    a = device("a", weight=64, rx_ring_size=100)
    fill(a, scheduler, 25)
    seen = []
    assert scheduler.run(lambda dev, frame, now: seen.append(frame), 0.0) == 10
    assert scheduler.pending and a.napi_scheduled
    assert scheduler.stat.time_squeeze == 1
    assert scheduler.run(lambda dev, frame, now: seen.append(frame), 0.0) == 10
    assert scheduler.run(lambda dev, frame, now: seen.append(frame), 0.0) == 5
    assert seen == [i.to_bytes(4, "big") for i in range(25)]
    assert not scheduler.pending and scheduler.stat.processed == 25 and scheduler.stat.rounds == 3


def test_napi_off_processes_everything_in_one_round():
    scheduler = NapiScheduler(netdev_budget=10, enabled=False)
    a = device("a", rx_ring_size=1000)
    fill(a, scheduler, 500)
    assert scheduler.run(lambda dev, frame, now: None, 0.0) == 500
    assert scheduler.stat.time_squeeze == 0


def test_schedule_is_idempotent():
    scheduler = NapiScheduler()
    a = device("a")
    a.rx_enqueue(b"x")
    scheduler.schedule(a)
    scheduler.schedule(a)
    assert len(scheduler.poll_list) == 1


def test_loopback_has_127_0_0_1_slash_8():
    lo = make_loopback()
    described = lo.describe()
    assert described["name"] == "lo" and "LOOPBACK" in described["flags"]
    assert described["addresses"] == [{"address": "127.0.0.1", "prefix_length": 8, "broadcast": "127.255.255.255"}]


def test_batch_enqueue_takes_what_fits_and_counts_the_rest_as_rx_missed_errors():
    dev = device(rx_ring_size=4)
    dev.rx_enqueue(b"first")
    assert dev.rx_enqueue_many([bytes([i]) for i in range(5)]) == 3
    assert list(dev.rx_ring) == [b"first", b"\x00", b"\x01", b"\x02"]
    assert dev.stats.rx_missed_errors == 2
    assert dev.rx_enqueue_many([b"late"]) == 0 and dev.stats.rx_missed_errors == 3


def test_batch_enqueue_on_a_down_device_counts_every_frame_as_rx_dropped():
    dev = device()
    dev.carrier = False
    assert dev.rx_enqueue_many([b"a", b"b", b"c"]) == 0
    assert dev.stats.rx_dropped == 3 and not dev.rx_ring
