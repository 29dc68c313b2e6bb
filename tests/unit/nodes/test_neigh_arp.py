"""ARP input as Linux's arp_process/neigh_update/arp_constructor do it, and the table's bounds and knobs.

NOARP entries for broadcast and multicast addresses, locktime, gratuitous-ARP
override, off-link and 0.0.0.0 senders, memory under a flood, and the knobs
read from the sysctl table. Fake clock throughout.
"""
from __future__ import annotations

import dataclasses
import random

import pytest

from nodes.neigh import (
    NOARP,
    REACHABLE,
    STALE,
    NeighParams,
    NeighTable,
    SendArpReply,
    SendArpRequest,
    TransmitQueued,
    gratuitous_arp,
)
from nodes.neigh_entry import SYSCTL_FIELDS, SYSCTL_PREFIX
from nodes.skbuff import PACKET_BROADCAST, PACKET_HOST
from nodes.sysctl import KNOBS, Sysctl
from nodes.wire.addresses import BROADCAST_MAC, IPv4Address, MacAddress
from nodes.wire.arp import ARP_REPLY, ARP_REQUEST, ArpPacket

from .fakes import FakeClock, run_timers

DEV = "eth0"
OUR_IP = IPv4Address("10.0.0.1")
OUR_MAC = MacAddress("02:00:00:00:00:01")
SUBNET_BROADCAST = IPv4Address("10.0.0.255")
PEER = IPv4Address("10.0.0.2")
PEER_MAC = MacAddress("02:00:00:00:00:02")
NEW_MAC = MacAddress("02:00:00:00:00:22")
THIRD_MAC = MacAddress("02:00:00:00:00:33")
OTHER = IPv4Address("10.0.0.3")


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


def make_table(**knobs) -> NeighTable:
    return NeighTable(NeighParams(**knobs), local_addresses={OUR_IP}, broadcast_addresses={SUBNET_BROADCAST})


def reply(sender_ip=PEER, sender_mac=PEER_MAC) -> ArpPacket:
    return ArpPacket.reply(sender_mac, sender_ip, OUR_MAC, OUR_IP)


def request(sender_ip=PEER, sender_mac=PEER_MAC, target_ip=OUR_IP) -> ArpPacket:
    return ArpPacket.request(sender_mac, sender_ip, target_ip)


def reachable_peer(table: NeighTable, clock: FakeClock) -> None:
    table.enqueue(PEER, DEV, "p0", clock.now)
    table.arp_input(reply(), DEV, clock.now)
    assert table.get(PEER, DEV).state is REACHABLE


# -- NOARP: broadcast and multicast addresses (arp_constructor) ------------------------------

def test_broadcast_addresses_default_to_empty_and_keep_limited_broadcast_known(clock):
    table = NeighTable()
    assert table.broadcast_addresses == set()
    assert table.lookup(IPv4Address("255.255.255.255"), DEV, clock.now) == BROADCAST_MAC


def test_subnet_broadcast_is_a_noarp_entry_with_the_broadcast_mac(clock):
    table = make_table()
    assert table.lookup(SUBNET_BROADCAST, DEV, clock.now) == BROADCAST_MAC
    entry = table.get(SUBNET_BROADCAST, DEV)
    assert (entry.state, entry.mac, len(entry.queue)) == (NOARP, BROADCAST_MAC, 0)
    assert table.stats.mcast_probes_sent == 0
    assert table.lookup(SUBNET_BROADCAST, DEV, clock.now) == BROADCAST_MAC  # now a hit
    assert [row["state"] for row in table.table(clock.now)] == ["NOARP"]


@pytest.mark.parametrize(("group", "mac"), [
    ("224.0.0.251", "01:00:5e:00:00:fb"),
    ("239.129.1.2", "01:00:5e:01:01:02"),  # only the low 23 bits map (RFC 1112 6.4)
    ("224.0.0.1", "01:00:5e:00:00:01"),
])
def test_multicast_maps_to_01_00_5e_without_asking(clock, group, mac):
    table = make_table()
    assert table.lookup(IPv4Address(group), DEV, clock.now) == MacAddress(mac)
    assert table.get(IPv4Address(group), DEV).state is NOARP
    assert table.next_timer() == clock.now + 60  # only its gc timer, no request


def test_enqueue_to_a_noarp_address_transmits_at_once(clock):
    table = make_table()
    assert table.enqueue(SUBNET_BROADCAST, DEV, "p", clock.now) == [TransmitQueued(DEV, BROADCAST_MAC, ("p",))]
    group = IPv4Address("239.1.1.1")
    assert table.enqueue(group, DEV, "q", clock.now) == [TransmitQueued(DEV, MacAddress("01:00:5e:01:01:01"), ("q",))]


@pytest.mark.parametrize("sender", [SUBNET_BROADCAST, IPv4Address("255.255.255.255"), IPv4Address("224.0.0.1")])
def test_arp_claiming_a_broadcast_or_multicast_sender_changes_nothing(clock, sender):
    table = make_table()
    expected = table.lookup(sender, DEV, clock.now)  # the NOARP entry exists
    clock.advance(5)
    packets = [request(sender_ip=sender), reply(sender_ip=sender), gratuitous_arp(PEER_MAC, sender)[1],
               request(sender_ip=sender, target_ip=OTHER)]
    for packet in packets:
        for pkt_type in (PACKET_HOST, PACKET_BROADCAST):
            assert table.arp_input(packet, DEV, clock.now, pkt_type) == []  # no reply either
    entry = table.get(sender, DEV)
    assert (entry.state, entry.mac, len(table)) == (NOARP, expected, 1)
    assert table.stats.rcv_invalid == 8
    assert table.stats.replies_sent == 0


def test_broadcast_sender_creates_no_entry(clock):
    table = make_table()
    assert table.arp_input(request(sender_ip=SUBNET_BROADCAST), DEV, clock.now, PACKET_BROADCAST) == []
    assert len(table) == 0


def test_broadcast_addresses_set_later_are_used(clock):
    table = NeighTable(local_addresses={OUR_IP})
    table.broadcast_addresses = {int(SUBNET_BROADCAST)}  # as stack._refresh_addresses will set it
    assert table.lookup(SUBNET_BROADCAST, DEV, clock.now) == BROADCAST_MAC


def test_noarp_entry_is_collected_when_unused_and_kept_while_used(clock):
    table = make_table()
    start = clock.now
    table.lookup(SUBNET_BROADCAST, DEV, clock.now)
    table.lookup(IPv4Address("224.0.0.9"), DEV, clock.now)
    clock.set(start + 50)
    table.lookup(SUBNET_BROADCAST, DEV, clock.now)
    run_timers(table, clock, start + 60)
    assert table.get(IPv4Address("224.0.0.9"), DEV) is None
    assert table.get(SUBNET_BROADCAST, DEV).state is NOARP
    run_timers(table, clock, start + 110)
    assert len(table) == 0


def test_noarp_entry_on_a_full_table_evicts_only_idle_entries(clock):
    table = make_table(gc_thresh3=1)
    table.enqueue(PEER, DEV, "waiting", clock.now)
    assert table.lookup(SUBNET_BROADCAST, DEV, clock.now) == BROADCAST_MAC  # used, not remembered
    assert table.get(SUBNET_BROADCAST, DEV) is None
    assert list(table.get(PEER, DEV).queue) == ["waiting"]


def test_confirm_leaves_noarp_entries_alone(clock):
    table = make_table()
    table.lookup(SUBNET_BROADCAST, DEV, clock.now)
    before = table.get(SUBNET_BROADCAST, DEV).last_confirmed
    table.confirm(SUBNET_BROADCAST, clock.now + 1)
    assert table.get(SUBNET_BROADCAST, DEV).last_confirmed == before


# -- locktime (arp_process "use the FIRST one", neigh_update without OVERRIDE) ----------------

def test_new_mac_within_locktime_is_ignored(clock):
    table = make_table()
    reachable_peer(table, clock)
    clock.advance(0.5)
    assert table.arp_input(reply(sender_mac=NEW_MAC), DEV, clock.now) == []
    table.arp_input(request(sender_mac=NEW_MAC, target_ip=OTHER), DEV, clock.now, PACKET_BROADCAST)
    entry = table.get(PEER, DEV)
    assert (entry.state, entry.mac) == (REACHABLE, PEER_MAC)
    assert table.stats.locktime_ignored == 2


def test_locktime_boundary_is_strict_as_time_after(clock):
    table = make_table()
    reachable_peer(table, clock)
    updated = table.get(PEER, DEV).last_updated
    table.arp_input(reply(sender_mac=NEW_MAC), DEV, updated + 1.0)
    assert table.get(PEER, DEV).mac == PEER_MAC  # exactly locktime later: not yet
    table.arp_input(reply(sender_mac=NEW_MAC), DEV, updated + 1.01)
    entry = table.get(PEER, DEV)
    assert (entry.state, entry.mac, entry.last_updated) == (REACHABLE, NEW_MAC, updated + 1.01)


def test_first_of_several_back_to_back_replies_wins(clock):
    table = make_table()
    table.enqueue(PEER, DEV, "p1", clock.now)
    assert table.arp_input(reply(), DEV, clock.now) == [TransmitQueued(DEV, PEER_MAC, ("p1",))]
    clock.advance(0.2)
    assert table.arp_input(reply(sender_mac=NEW_MAC), DEV, clock.now) == []  # a second proxy, slower
    assert table.lookup(PEER, DEV, clock.now) == PEER_MAC


def test_locktime_knob_sets_the_window(clock):
    table = make_table(locktime=3.0)
    reachable_peer(table, clock)
    start = clock.now
    table.arp_input(reply(sender_mac=NEW_MAC), DEV, start + 2.5)
    assert table.get(PEER, DEV).mac == PEER_MAC
    table.arp_input(reply(sender_mac=NEW_MAC), DEV, start + 3.5)
    assert table.get(PEER, DEV).mac == NEW_MAC


def test_locktime_zero_takes_any_later_update(clock):
    table = make_table(locktime=0)
    reachable_peer(table, clock)
    table.arp_input(reply(sender_mac=NEW_MAC), DEV, clock.now + 0.001)
    assert table.get(PEER, DEV).mac == NEW_MAC


def test_updates_that_change_nothing_do_not_move_the_locktime_window(clock):
    table = make_table()
    reachable_peer(table, clock)
    start = clock.now
    # same MAC again and again: neigh_update changes nothing, so `updated` stays
    table.arp_input(request(target_ip=OTHER), DEV, start + 0.6, PACKET_BROADCAST)
    table.arp_input(reply(), DEV, start + 0.9)
    assert table.get(PEER, DEV).last_updated == start
    table.arp_input(reply(sender_mac=NEW_MAC), DEV, start + 1.1)
    assert table.get(PEER, DEV).mac == NEW_MAC


def test_ignored_unicast_reply_still_confirms_the_entry(clock):
    # neigh_update sets `confirmed` for a NUD_CONNECTED update before it checks OVERRIDE.
    table = make_table()
    reachable_peer(table, clock)
    clock.advance(0.5)
    table.arp_input(reply(sender_mac=NEW_MAC), DEV, clock.now)
    entry = table.get(PEER, DEV)
    assert (entry.mac, entry.last_confirmed) == (PEER_MAC, clock.now)


def test_gratuitous_request_overrides_within_locktime(clock):
    table = make_table()
    reachable_peer(table, clock)
    clock.advance(0.1)
    _, announcement = gratuitous_arp(NEW_MAC, PEER)
    assert table.arp_input(announcement, DEV, clock.now, PACKET_BROADCAST) == []
    entry = table.get(PEER, DEV)
    assert (entry.state, entry.mac) == (STALE, NEW_MAC)
    assert table.stats.locktime_ignored == 0


def test_gratuitous_reply_overrides_only_when_its_target_mac_is_its_sender_mac(clock):
    table = make_table()
    reachable_peer(table, clock)
    clock.advance(0.1)
    not_garp = ArpPacket(ARP_REPLY, NEW_MAC, PEER, BROADCAST_MAC, PEER)  # arp_is_garp: tha != sha
    table.arp_input(not_garp, DEV, clock.now, PACKET_BROADCAST)
    assert table.get(PEER, DEV).mac == PEER_MAC
    garp = ArpPacket(ARP_REPLY, NEW_MAC, PEER, NEW_MAC, PEER)
    table.arp_input(garp, DEV, clock.now, PACKET_BROADCAST)
    entry = table.get(PEER, DEV)
    assert (entry.state, entry.mac) == (STALE, NEW_MAC)


def test_request_for_us_overrides_within_locktime(clock):
    # neigh_event_ns always passes NEIGH_UPDATE_F_OVERRIDE.
    table = make_table()
    reachable_peer(table, clock)
    clock.advance(0.1)
    effects = table.arp_input(request(sender_mac=NEW_MAC), DEV, clock.now, PACKET_BROADCAST)
    assert effects == [SendArpReply(DEV, OUR_IP, PEER, NEW_MAC)]
    entry = table.get(PEER, DEV)
    assert (entry.state, entry.mac) == (STALE, NEW_MAC)


def test_new_mac_unconfirms_the_entry(clock):
    table = make_table()
    reachable_peer(table, clock)
    clock.advance(2)
    table.arp_input(request(sender_mac=NEW_MAC, target_ip=OTHER), DEV, clock.now, PACKET_BROADCAST)
    entry = table.get(PEER, DEV)
    assert (entry.state, entry.mac) == (STALE, NEW_MAC)
    assert entry.last_confirmed == clock.now - 60  # 2 * base_reachable_time back, as neigh_update
    table.lookup(PEER, DEV, clock.now)
    fired = run_timers(table, clock, clock.now + 5)
    assert fired == [(clock.now, SendArpRequest(DEV, PEER, NEW_MAC))]  # DELAY ends in PROBE


# -- senders: off-link, 0.0.0.0, unsolicited ---------------------------------------------------

def test_request_for_us_from_an_off_link_sender_is_learnt_and_answered(clock):
    # arp_process with rp_filter=0: ip_route_input accepts the source, neigh_event_ns learns it.
    table = make_table()
    far = IPv4Address("192.168.7.7")
    effects = table.arp_input(request(sender_ip=far), DEV, clock.now, PACKET_BROADCAST)
    assert effects == [SendArpReply(DEV, OUR_IP, far, PEER_MAC)]
    assert (table.get(far, DEV).state, table.get(far, DEV).mac) == (STALE, PEER_MAC)


def test_unsolicited_reply_from_an_off_link_sender_creates_nothing(clock):
    table = make_table()
    assert table.arp_input(reply(sender_ip=IPv4Address("192.168.7.7")), DEV, clock.now) == []
    assert len(table) == 0


def test_address_probe_for_another_host_is_neither_answered_nor_learnt(clock):
    table = make_table()
    probe = ArpPacket.request(PEER_MAC, IPv4Address(0), OTHER)
    assert table.arp_input(probe, DEV, clock.now, PACKET_BROADCAST) == []
    assert len(table) == 0


def test_address_probe_does_not_touch_an_existing_entry(clock):
    table = make_table()
    reachable_peer(table, clock)
    clock.advance(5)
    probe = ArpPacket.request(NEW_MAC, IPv4Address(0), OUR_IP)
    assert table.arp_input(probe, DEV, clock.now, PACKET_BROADCAST) == [SendArpReply(DEV, OUR_IP, IPv4Address(0), NEW_MAC)]
    assert table.get(PEER, DEV).mac == PEER_MAC
    assert len(table) == 1


# -- bounded memory --------------------------------------------------------------------------

def random_sender(rng: random.Random) -> IPv4Address:
    return IPv4Address(0x0A000000 | rng.randrange(2, 0xFFFFFE))  # 10/8, not ours, not broadcast


def test_flood_of_requests_from_random_senders_stays_within_gc_thresh3(clock):
    rng = random.Random(1)
    table = make_table(gc_thresh3=64)
    for n in range(5000):
        sender = random_sender(rng)
        mac = MacAddress(0x020000000000 | n)
        table.arp_input(request(sender_ip=sender, sender_mac=mac), DEV, clock.now, PACKET_BROADCAST)
        assert len(table) <= 64
        clock.advance(0.001)
    assert table.stats.entries == len(table) == 64
    assert table.stats.forced_gc_runs >= 5000 - 64
    assert len(table._timers) <= 2 * 64 + 64  # superseded heap items do not pile up either
    run_timers(table, clock, clock.now + 120)
    assert len(table) == 0 and table.next_timer() is None


def test_flood_of_unsolicited_arp_from_random_senders_creates_nothing(clock):
    rng = random.Random(2)
    table = make_table()
    for n in range(2000):
        sender = random_sender(rng)
        mac = MacAddress(0x020000000000 | n)
        table.arp_input(reply(sender_ip=sender, sender_mac=mac), DEV, clock.now)
        table.arp_input(gratuitous_arp(mac, sender)[1], DEV, clock.now, PACKET_BROADCAST)
        table.arp_input(request(sender_ip=sender, sender_mac=mac, target_ip=OTHER), DEV, clock.now, PACKET_BROADCAST)
    assert len(table) == 0 and table.stats.allocs == 0


def test_repeated_updates_of_one_entry_keep_the_timer_heap_small(clock):
    table = make_table(locktime=0)
    reachable_peer(table, clock)
    for n in range(3000):
        clock.advance(0.01)
        mac = NEW_MAC if n % 2 else THIRD_MAC
        table.arp_input(request(sender_mac=mac, target_ip=OTHER), DEV, clock.now, PACKET_BROADCAST)
        table.lookup(PEER, DEV, clock.now)
    assert len(table._timers) <= 2 * len(table) + 64


# -- knobs: the sysctl table is the one source ------------------------------------------------

def test_default_params_are_the_sysctl_defaults():
    assert NeighParams() == NeighParams.from_sysctl(Sysctl())
    params = NeighParams()
    assert (params.retrans_time, params.base_reachable_time, params.locktime) == (1.0, 30.0, 1.0)
    assert (params.unres_qlen, params.gc_thresh3, params.delay_first_probe_time) == (101, 1024, 5.0)
    assert params.unres_qlen_bytes == 212992  # Linux's default since 3.3 (SK_WMEM_MAX)


def test_every_param_has_a_knob_and_every_neighbour_knob_a_param():
    assert set(SYSCTL_FIELDS) == {f.name for f in dataclasses.fields(NeighParams)}
    knobs = {name[len(SYSCTL_PREFIX):] for name, knob in KNOBS.items()
             if name.startswith(SYSCTL_PREFIX) and knob.view_of is None}  # unres_qlen is a view of unres_qlen_bytes
    assert knobs == {knob for knob, _ in SYSCTL_FIELDS.values()}


def test_from_sysctl_converts_units():
    sysctl = Sysctl({
        SYSCTL_PREFIX + "retrans_time_ms": 250, SYSCTL_PREFIX + "base_reachable_time_ms": 5000,
        SYSCTL_PREFIX + "locktime": 250, SYSCTL_PREFIX + "gc_stale_time": 7,
        SYSCTL_PREFIX + "gc_thresh3": 16, SYSCTL_PREFIX + "unres_qlen": 9,
    })
    params = NeighParams.from_sysctl(sysctl)
    assert (params.retrans_time, params.base_reachable_time, params.locktime) == (0.25, 5.0, 2.5)
    assert (params.gc_stale_time, params.gc_thresh3, params.unres_qlen) == (7.0, 16, 9)


def test_negative_locktime_is_rejected():
    with pytest.raises(ValueError):
        NeighParams(locktime=-1)


def test_requests_and_replies_are_the_only_operations(clock):
    table = make_table()
    assert table.arp_input(ArpPacket(ARP_REQUEST, PEER_MAC, PEER, BROADCAST_MAC, OUR_IP), DEV, clock.now) != []
    assert table.arp_input(ArpPacket(4, PEER_MAC, PEER, OUR_MAC, OUR_IP), DEV, clock.now) == []  # RARP reply


def test_every_sysctl_value_in_range_makes_valid_params():
    """`sysctl -w` accepts the knob's range, so NeighParams must accept it too (kernel._apply_sysctl)."""
    for knob, _ in SYSCTL_FIELDS.values():
        minimum = KNOBS[SYSCTL_PREFIX + knob].minimum
        NeighParams.from_sysctl(Sysctl({SYSCTL_PREFIX + knob: minimum}))


def test_zero_delay_first_probe_time_probes_at_the_next_tick(clock):
    table = make_table(delay_first_probe_time=0)
    table.add(PEER, DEV, PEER_MAC, clock.now, state=STALE)
    assert table.lookup(PEER, DEV, clock.now) == PEER_MAC
    assert run_timers(table, clock, clock.now) == [(clock.now, SendArpRequest(DEV, PEER, PEER_MAC))]
    assert table.next_timer() == clock.now + 1.0
