"""The learning bridge's forwarding database, with a fake clock (ports are plain strings)."""
from __future__ import annotations

import pytest

from bus.fdb import FILTERED, FLOOD, ForwardingDatabase

A = bytes.fromhex("020000000001")
B = bytes.fromhex("020000000002")
C = bytes.fromhex("020000000003")
BROADCAST = b"\xff" * 6
MULTICAST = bytes.fromhex("01005e000001")
ZERO = bytes(6)


def mac(n: int) -> bytes:
    return bytes([2, 0]) + n.to_bytes(4, "big")


def test_source_is_learned_on_its_ingress_port():
    fdb = ForwardingDatabase()
    fdb.learn(A, "p1", now=0.0)
    assert fdb.lookup(A, now=0.0) == "p1"
    assert fdb.counters["learned"] == 1


def test_unknown_unicast_destination_is_flooded_and_learns_the_source():
    fdb = ForwardingDatabase()
    assert fdb.resolve(A, B, "p1", now=0.0) is FLOOD
    assert fdb.lookup(A, 0.0) == "p1"
    assert fdb.counters["floods"] == 1


def test_known_destination_is_forwarded_to_its_port_only():
    fdb = ForwardingDatabase()
    fdb.resolve(A, BROADCAST, "p1", now=0.0)
    assert fdb.resolve(B, A, "p2", now=0.1) == "p1"
    assert fdb.resolve(A, B, "p1", now=0.2) == "p2"
    assert fdb.counters["forwarded"] == 2


@pytest.mark.parametrize("destination", [BROADCAST, MULTICAST])
def test_group_destinations_are_always_flooded(destination):
    fdb = ForwardingDatabase()
    fdb.learn(destination[:1] + A[1:], "p3", 0.0)  # even a "learned" group address is not used
    assert fdb.resolve(A, destination, "p1", now=0.0) is FLOOD


@pytest.mark.parametrize("source", [BROADCAST, MULTICAST, ZERO])
def test_group_and_zero_sources_are_never_learned(source):
    fdb = ForwardingDatabase()
    fdb.resolve(source, A, "p1", now=0.0)
    assert len(fdb) == 0 and fdb.lookup(source, 0.0) is None
    assert fdb.counters["group_sources"] == 1 and fdb.counters["learned"] == 0


def test_destination_learned_on_the_ingress_port_is_filtered_never_sent_back():
    fdb = ForwardingDatabase()
    fdb.learn(B, "p1", 0.0)
    assert fdb.resolve(A, B, "p1", now=0.1) is FILTERED
    assert fdb.counters["filtered"] == 1


def test_entry_ages_out_exactly_at_aging_time():
    fdb = ForwardingDatabase(aging_time=300.0)
    fdb.learn(A, "p1", now=10.0)
    assert fdb.lookup(A, now=309.999) == "p1"
    assert fdb.lookup(A, now=310.0) is None  # like Linux has_expired: updated + ageing <= now
    assert fdb.resolve(B, A, "p2", now=310.0) is FLOOD
    assert fdb.age(now=310.0) == 1
    assert len(fdb) == 1 and fdb.counters["aged"] == 1  # B is still there


def test_refreshing_a_station_keeps_it_from_ageing():
    fdb = ForwardingDatabase(aging_time=10.0)
    fdb.learn(A, "p1", now=0.0)
    fdb.learn(B, "p2", now=0.0)
    for t in range(1, 25):
        fdb.learn(A, "p1", now=float(t))
    assert fdb.age(now=24.0) == 1
    assert fdb.lookup(A, 24.0) == "p1" and fdb.lookup(B, 24.0) is None


def test_ageing_sweep_removes_refreshed_but_later_expired_entries():
    fdb = ForwardingDatabase(aging_time=10.0)
    fdb.learn(A, "p1", now=0.0)
    fdb.learn(A, "p1", now=0.5)  # refreshed without reordering (within granularity)
    fdb.learn(B, "p2", now=5.0)
    assert fdb.age(now=10.2) == 0
    assert fdb.age(now=10.5) == 1
    assert fdb.age(now=15.0) == 1 and len(fdb) == 0


def test_zero_aging_time_never_keeps_an_entry_like_linux_ageing_0():
    fdb = ForwardingDatabase(aging_time=0.0)
    fdb.learn(A, "p1", 0.0)
    assert fdb.resolve(B, A, "p2", 0.0) is FLOOD


def test_station_moving_to_another_port_updates_the_entry_and_counts_a_move():
    fdb = ForwardingDatabase()
    fdb.learn(A, "p1", 0.0)
    fdb.learn(A, "p2", 1.0)
    assert fdb.lookup(A, 1.0) == "p2"
    assert fdb.counters["moves"] == 1 and fdb.counters["learned"] == 1
    assert fdb.resolve(B, A, "p1", 1.1) == "p2"


def test_expired_entry_seen_on_another_port_is_a_new_learn_not_a_move():
    fdb = ForwardingDatabase(aging_time=10.0)
    fdb.learn(A, "p1", 0.0)
    fdb.learn(A, "p2", 20.0)
    assert fdb.counters["moves"] == 0 and fdb.counters["learned"] == 2 and fdb.counters["aged"] == 1


def test_table_full_evicts_the_oldest_entry_first():
    fdb = ForwardingDatabase(max_entries=3)
    for n in range(3):
        fdb.learn(mac(n), "p1", now=float(n * 2))
    fdb.learn(mac(0), "p1", now=7.0)  # seen again: now the youngest
    fdb.learn(mac(3), "p2", now=8.0)
    assert len(fdb) == 3
    assert fdb.lookup(mac(1), 8.0) is None  # the least recently seen went
    assert {fdb.lookup(mac(n), 8.0) for n in (0, 2, 3)} == {"p1", "p2"}
    assert fdb.counters["evicted"] == 1


def test_table_never_exceeds_max_entries_under_a_mac_flood():
    fdb = ForwardingDatabase(max_entries=100)
    for n in range(5000):
        fdb.resolve(mac(n), BROADCAST, "p1", now=n * 0.001)
    assert len(fdb) == 100
    assert fdb.counters["evicted"] == 4900
    assert fdb.lookup(mac(4999), 5.0) == "p1" and fdb.lookup(mac(0), 5.0) is None


def test_flush_port_forgets_only_that_ports_stations():
    fdb = ForwardingDatabase()
    fdb.learn(A, "p1", 0.0)
    fdb.learn(B, "p2", 0.0)
    fdb.learn(C, "p1", 0.0)
    assert fdb.flush_port("p1") == 2
    assert fdb.lookup(B, 0.0) == "p2" and len(fdb) == 1


def test_show_lists_live_entries_like_bridge_fdb_show():
    fdb = ForwardingDatabase(aging_time=100.0)
    fdb.learn(B, "p2", 0.0)
    fdb.learn(A, "p1", 50.0)
    assert fdb.show(now=120.0) == [{"mac": "02:00:00:00:00:01", "port": "p1", "age": 70.0, "state": "dynamic"}]


@pytest.mark.parametrize("kwargs", [{"aging_time": -1}, {"max_entries": 0}])
def test_invalid_limits_are_refused(kwargs):
    with pytest.raises(ValueError):
        ForwardingDatabase(**kwargs)
