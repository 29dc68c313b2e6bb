"""NeighTable: NUD states and timers, queueing, ARP input rules, gc and eviction, with a fake clock."""
from __future__ import annotations

import errno
import random

import pytest

from nodes.neigh import (
    DELAY,
    FAILED,
    INCOMPLETE,
    PERMANENT,
    PROBE,
    REACHABLE,
    STALE,
    NeighParams,
    NeighTable,
    ResolutionFailed,
    SendArpReply,
    SendArpRequest,
    TransmitQueued,
    gratuitous_arp,
)
from nodes.skbuff import PACKET_BROADCAST, PACKET_HOST, PACKET_OTHERHOST
from nodes.sysctl import ETH_FRAME_TRUESIZE
from nodes.wire.addresses import BROADCAST_MAC, ZERO_MAC, IPv4Address, MacAddress
from nodes.wire.arp import ARP_REPLY, ARP_REQUEST, ArpPacket

from .fakes import FakeClock, run_timers

DEV = "eth0"
OUR_IP = IPv4Address("10.0.0.1")
OUR_MAC = MacAddress("02:00:00:00:00:01")
PEER = IPv4Address("10.0.0.2")
PEER_MAC = MacAddress("02:00:00:00:00:02")
NEW_MAC = MacAddress("02:00:00:00:00:22")
OTHER = IPv4Address("10.0.0.3")
OTHER_MAC = MacAddress("02:00:00:00:00:03")


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


def make_table(**knobs) -> NeighTable:
    return NeighTable(NeighParams(**knobs), local_addresses={OUR_IP})


def reply(sender_ip=PEER, sender_mac=PEER_MAC) -> ArpPacket:
    return ArpPacket.reply(sender_mac, sender_ip, OUR_MAC, OUR_IP)


def request(sender_ip=PEER, sender_mac=PEER_MAC, target_ip=OUR_IP) -> ArpPacket:
    return ArpPacket.request(sender_mac, sender_ip, target_ip)


def reachable_peer(table: NeighTable, clock: FakeClock, *packets) -> list:
    """Resolve PEER through a miss and a unicast reply; returns the effects of the reply."""
    for packet in packets or ("p0",):
        table.enqueue(PEER, DEV, packet, clock.now)
    return table.arp_input(reply(), DEV, clock.now)


# -- miss and INCOMPLETE --------------------------------------------------------------

def test_miss_creates_incomplete_entry_queues_packet_and_broadcasts_request(clock):
    table = make_table()
    assert table.lookup(PEER, DEV, clock.now) is None
    effects = table.enqueue(PEER, DEV, "p1", clock.now)
    assert effects == [SendArpRequest(DEV, PEER, BROADCAST_MAC)]
    entry = table.get(PEER, DEV)
    assert (entry.state, entry.mac, entry.probes, list(entry.queue)) == (INCOMPLETE, None, 1, ["p1"])
    assert table.lookup(PEER, DEV, clock.now) is None
    assert table.next_timer() == clock.now + 1.0


def test_second_packet_while_incomplete_sends_no_second_request(clock):
    table = make_table()
    table.enqueue(PEER, DEV, "p1", clock.now)
    clock.advance(0.5)
    assert table.enqueue(PEER, DEV, "p2", clock.now) == []
    assert list(table.get(PEER, DEV).queue) == ["p1", "p2"]
    assert table.stats.mcast_probes_sent == 1


def test_incomplete_retries_each_retrans_time_then_fails_with_queued_packets(clock):
    table = make_table()
    start = clock.now
    table.enqueue(PEER, DEV, "p1", clock.now)
    table.enqueue(PEER, DEV, "p2", clock.now)
    fired = run_timers(table, clock, start + 10)
    assert fired == [
        (start + 1, SendArpRequest(DEV, PEER, BROADCAST_MAC)),
        (start + 2, SendArpRequest(DEV, PEER, BROADCAST_MAC)),
        (start + 3, ResolutionFailed(DEV, PEER, ("p1", "p2"))),
    ]
    entry = table.get(PEER, DEV)
    assert (entry.state, entry.mac, len(entry.queue)) == (FAILED, None, 0)
    assert table.stats.res_failed == 1
    assert table.stats.mcast_probes_sent == 3


def test_retry_count_and_spacing_follow_the_knobs(clock):
    table = make_table(retrans_time=0.25, mcast_solicit=5)
    start = clock.now
    table.enqueue(PEER, DEV, "p1", clock.now)
    fired = run_timers(table, clock, start + 10)
    requests = [when - start for when, effect in fired if isinstance(effect, SendArpRequest)]
    assert requests == [0.25, 0.5, 0.75, 1.0]  # the first of five went out at enqueue
    assert [when - start for when, effect in fired if isinstance(effect, ResolutionFailed)] == [1.25]


def test_mcast_solicit_zero_fails_at_once(clock):
    table = make_table(mcast_solicit=0)
    assert table.enqueue(PEER, DEV, "p1", clock.now) == [ResolutionFailed(DEV, PEER, ("p1",))]
    assert table.get(PEER, DEV).state is FAILED


def test_late_tick_sends_one_request_not_a_burst(clock):
    table = make_table()
    start = clock.now
    table.enqueue(PEER, DEV, "p1", clock.now)
    assert table.tick(start + 2.5) == [SendArpRequest(DEV, PEER, BROADCAST_MAC)]
    assert table.next_timer() == start + 3.5


def test_tick_before_deadline_does_nothing(clock):
    table = make_table()
    table.enqueue(PEER, DEV, "p1", clock.now)
    assert table.tick(clock.now + 0.999) == []
    assert table.get(PEER, DEV).probes == 1


def test_next_timer_is_none_for_empty_table():
    assert make_table().next_timer() is None


def test_failed_entry_restarts_resolution_on_new_packet(clock):
    table = make_table()
    table.enqueue(PEER, DEV, "p1", clock.now)
    run_timers(table, clock, clock.now + 3)
    assert table.get(PEER, DEV).state is FAILED
    assert table.lookup(PEER, DEV, clock.now) is None
    effects = table.enqueue(PEER, DEV, "p2", clock.now)
    assert effects == [SendArpRequest(DEV, PEER, BROADCAST_MAC)]
    entry = table.get(PEER, DEV)
    assert (entry.state, entry.probes, list(entry.queue)) == (INCOMPLETE, 1, ["p2"])


def test_queue_overflow_drops_oldest_and_counts(clock):
    table = make_table(unres_qlen_bytes=3 * ETH_FRAME_TRUESIZE)  # three full frames (opaque packets cost one)
    for packet in ("p1", "p2", "p3", "p4", "p5"):
        table.enqueue(PEER, DEV, packet, clock.now)
    assert list(table.get(PEER, DEV).queue) == ["p3", "p4", "p5"]
    assert table.stats.unresolved_discards == 2
    assert table.arp_input(reply(), DEV, clock.now) == [TransmitQueued(DEV, PEER_MAC, ("p3", "p4", "p5"))]


def test_unres_qlen_zero_still_keeps_the_newest_packet(clock):
    # __neigh_event_send drops older packets while over the limit, then queues the new one anyway.
    table = make_table(unres_qlen_bytes=0)
    assert table.enqueue(PEER, DEV, "p1", clock.now) == [SendArpRequest(DEV, PEER, BROADCAST_MAC)]
    table.enqueue(PEER, DEV, "p2", clock.now)
    assert table.stats.unresolved_discards == 1
    assert table.arp_input(reply(), DEV, clock.now) == [TransmitQueued(DEV, PEER_MAC, ("p2",))]
    assert table.lookup(PEER, DEV, clock.now) == PEER_MAC


def test_enqueue_to_resolved_entry_transmits_at_once(clock):
    table = make_table()
    reachable_peer(table, clock)
    assert table.enqueue(PEER, DEV, "late", clock.now) == [TransmitQueued(DEV, PEER_MAC, ("late",))]


# -- resolution ---------------------------------------------------------------------

def test_pending_packets_flushed_in_order_when_reply_arrives(clock):
    table = make_table()
    effects = reachable_peer(table, clock, "p1", "p2", "p3")
    assert effects == [TransmitQueued(DEV, PEER_MAC, ("p1", "p2", "p3"))]
    entry = table.get(PEER, DEV)
    assert (entry.state, entry.mac, entry.probes, len(entry.queue)) == (REACHABLE, PEER_MAC, 0, 0)
    assert table.lookup(PEER, DEV, clock.now) == PEER_MAC
    assert table.next_timer() == clock.now + 30.0  # no more requests: only the reachability timer


def test_reply_for_incomplete_entry_stops_retries(clock):
    table = make_table()
    table.enqueue(PEER, DEV, "p1", clock.now)
    clock.advance(1.5)
    table.arp_input(reply(), DEV, clock.now)
    fired = run_timers(table, clock, clock.now + 10)
    assert not [effect for _, effect in fired if isinstance(effect, (SendArpRequest, ResolutionFailed))]


def test_broadcast_reply_resolves_to_stale_not_reachable(clock):
    table = make_table()
    table.enqueue(PEER, DEV, "p1", clock.now)
    effects = table.arp_input(reply(), DEV, clock.now, pkt_type=PACKET_BROADCAST)
    assert effects == [TransmitQueued(DEV, PEER_MAC, ("p1",))]
    # flushed through a STALE entry: Linux's output path then moves it to DELAY
    assert table.get(PEER, DEV).state is DELAY


# -- REACHABLE, STALE, DELAY, PROBE ---------------------------------------------------------

def test_unused_reachable_entry_becomes_stale_after_reachable_time(clock):
    table = make_table()
    start = clock.now
    reachable_peer(table, clock)
    assert run_timers(table, clock, start + 29.9) == []
    assert table.get(PEER, DEV).state is REACHABLE
    assert run_timers(table, clock, start + 30) == []
    entry = table.get(PEER, DEV)
    assert (entry.state, entry.mac, entry.last_updated) == (STALE, PEER_MAC, start + 30)


def test_reachable_entry_used_recently_goes_to_delay_at_expiry(clock):
    table = make_table()
    start = clock.now
    reachable_peer(table, clock)
    clock.set(start + 28)
    assert table.lookup(PEER, DEV, clock.now) == PEER_MAC
    run_timers(table, clock, start + 30)
    assert table.get(PEER, DEV).state is DELAY
    assert table.next_timer() == start + 35


def test_stale_entry_used_moves_to_delay_and_still_gives_its_mac(clock):
    table = make_table()
    start = clock.now
    reachable_peer(table, clock)
    run_timers(table, clock, start + 40)
    assert table.get(PEER, DEV).state is STALE
    assert table.lookup(PEER, DEV, clock.now) == PEER_MAC
    assert table.get(PEER, DEV).state is DELAY
    assert table.next_timer() == start + 45


def test_delay_without_confirmation_probes_unicast_then_fails(clock):
    table = make_table()
    start = clock.now
    reachable_peer(table, clock)
    run_timers(table, clock, start + 40)
    table.lookup(PEER, DEV, clock.now)  # STALE -> DELAY at +40
    fired = run_timers(table, clock, start + 60)
    probe = SendArpRequest(DEV, PEER, PEER_MAC)
    assert fired == [(start + 45, probe), (start + 46, probe), (start + 47, probe),
                     (start + 48, ResolutionFailed(DEV, PEER, ()))]
    assert table.stats.ucast_probes_sent == 3
    assert table.stats.res_failed == 1
    assert table.get(PEER, DEV).state is FAILED


def test_probe_state_still_sends_to_old_mac(clock):
    table = make_table()
    start = clock.now
    reachable_peer(table, clock)
    run_timers(table, clock, start + 40)
    table.lookup(PEER, DEV, clock.now)
    run_timers(table, clock, start + 45)
    assert table.get(PEER, DEV).state is PROBE
    assert table.lookup(PEER, DEV, clock.now) == PEER_MAC


def test_reply_during_probe_makes_entry_reachable(clock):
    table = make_table()
    start = clock.now
    reachable_peer(table, clock)
    run_timers(table, clock, start + 40)
    table.lookup(PEER, DEV, clock.now)
    run_timers(table, clock, start + 46.5)  # PROBE since +45: past locktime, so a new MAC is taken
    assert table.arp_input(reply(sender_mac=NEW_MAC), DEV, clock.now) == []
    entry = table.get(PEER, DEV)
    assert (entry.state, entry.mac, entry.probes) == (REACHABLE, NEW_MAC, 0)
    fired = run_timers(table, clock, start + 60)
    assert fired == []


def test_confirm_during_delay_returns_to_reachable_without_probing(clock):
    table = make_table()
    start = clock.now
    reachable_peer(table, clock)
    run_timers(table, clock, start + 40)
    table.lookup(PEER, DEV, clock.now)
    clock.advance(2)
    table.confirm(PEER, clock.now)  # e.g. an ACK arrived
    assert run_timers(table, clock, start + 45) == []
    assert table.get(PEER, DEV).state is REACHABLE
    assert table.next_timer() == start + 42 + 30
    assert table.stats.ucast_probes_sent == 0


def test_confirm_during_probe_makes_entry_reachable_at_next_retransmit(clock):
    table = make_table()
    start = clock.now
    reachable_peer(table, clock)
    run_timers(table, clock, start + 40)
    table.lookup(PEER, DEV, clock.now)
    run_timers(table, clock, start + 45.2)
    table.confirm(PEER, clock.now)
    assert run_timers(table, clock, start + 46) == []
    assert table.get(PEER, DEV).state is REACHABLE
    assert table.stats.ucast_probes_sent == 1


def test_confirm_keeps_reachable_entry_reachable_past_base_time(clock):
    table = make_table()
    start = clock.now
    reachable_peer(table, clock)
    clock.set(start + 20)
    table.confirm(PEER, clock.now, dev=DEV)
    run_timers(table, clock, start + 49)
    assert table.get(PEER, DEV).state is REACHABLE
    assert table.next_timer() == start + 50


def test_confirm_without_device_finds_entry_on_any_device(clock):
    table = make_table()
    table.add(PEER, "eth1", PEER_MAC, clock.now, state=REACHABLE)
    clock.advance(10)
    table.confirm(PEER, clock.now)
    assert table.get(PEER, "eth1").last_confirmed == clock.now


def test_confirm_of_unknown_address_changes_nothing(clock):
    table = make_table()
    table.confirm(PEER, clock.now)
    assert len(table) == 0


def test_reachable_time_is_randomised_with_injected_rng(clock):
    seed = 7
    expected = 30.0 * random.Random(seed).uniform(0.5, 1.5)
    table = NeighTable(local_addresses={OUR_IP}, rng=random.Random(seed))
    reachable_peer(table, clock)
    assert table.next_timer() == pytest.approx(clock.now + expected)
    assert 15.0 <= expected <= 45.0 and expected != 30.0


def test_reachable_time_is_redrawn_after_300_seconds(clock):
    table = NeighTable(local_addresses={OUR_IP}, rng=random.Random(3))
    table.add(PEER, DEV, PEER_MAC, clock.now, state=REACHABLE)
    first = table.next_timer() - clock.now
    clock.advance(400)
    table.add(PEER, DEV, PEER_MAC, clock.now, state=REACHABLE)
    second = table.next_timer() - clock.now
    clock.advance(10)
    table.add(PEER, DEV, PEER_MAC, clock.now, state=REACHABLE)
    assert table.next_timer() - clock.now == pytest.approx(second)  # not redrawn within 300 s
    assert second != pytest.approx(first)


def test_new_entry_does_not_count_as_confirmed(clock):
    # A sender learnt from its request is used at once: DELAY must end in PROBE, not REACHABLE.
    table = make_table()
    start = clock.now
    table.arp_input(request(), DEV, clock.now, pkt_type=PACKET_BROADCAST)
    table.lookup(PEER, DEV, clock.now)
    fired = run_timers(table, clock, start + 5)
    assert fired == [(start + 5, SendArpRequest(DEV, PEER, PEER_MAC))]


# -- ARP input ---------------------------------------------------------------------------

def test_request_for_us_learns_sender_as_stale_and_replies(clock):
    table = make_table()
    effects = table.arp_input(request(), DEV, clock.now, pkt_type=PACKET_BROADCAST)
    assert effects == [SendArpReply(DEV, OUR_IP, PEER, PEER_MAC)]
    entry = table.get(PEER, DEV)
    assert (entry.state, entry.mac) == (STALE, PEER_MAC)
    assert (table.stats.rcv_probes_mcast, table.stats.rcv_probes_ucast, table.stats.replies_sent) == (1, 0, 1)


def test_unicast_request_for_us_counts_as_ucast_probe(clock):
    table = make_table()
    table.arp_input(request(), DEV, clock.now, pkt_type=PACKET_HOST)
    assert (table.stats.rcv_probes_mcast, table.stats.rcv_probes_ucast) == (0, 1)


def test_request_for_us_answers_for_any_local_address(clock):
    second = IPv4Address("192.168.9.1")
    table = make_table()
    table.local_addresses.add(second)
    effects = table.arp_input(request(target_ip=second), DEV, clock.now, pkt_type=PACKET_BROADCAST)
    assert effects == [SendArpReply(DEV, second, PEER, PEER_MAC)]


def test_request_from_pending_neighbour_flushes_its_queue_then_replies(clock):
    table = make_table()
    table.enqueue(PEER, DEV, "p1", clock.now)
    table.enqueue(PEER, DEV, "p2", clock.now)
    effects = table.arp_input(request(), DEV, clock.now, pkt_type=PACKET_BROADCAST)
    assert effects == [TransmitQueued(DEV, PEER_MAC, ("p1", "p2")), SendArpReply(DEV, OUR_IP, PEER, PEER_MAC)]
    assert table.get(PEER, DEV).state is DELAY  # STALE, used by the flush
    assert run_timers(table, clock, clock.now + 1.5) == []  # broadcast retries stopped


def test_request_for_another_host_creates_no_entry(clock):
    table = make_table()
    assert table.arp_input(request(target_ip=OTHER), DEV, clock.now, pkt_type=PACKET_BROADCAST) == []
    assert len(table) == 0
    assert table.stats.allocs == 0


def test_request_for_another_host_updates_existing_entry(clock):
    table = make_table()
    reachable_peer(table, clock)
    clock.advance(1.5)  # past locktime
    table.arp_input(request(sender_mac=NEW_MAC, target_ip=OTHER), DEV, clock.now, pkt_type=PACKET_BROADCAST)
    entry = table.get(PEER, DEV)
    assert (entry.state, entry.mac, entry.last_updated) == (STALE, NEW_MAC, clock.now)


def test_request_for_another_host_resolves_pending_entry(clock):
    table = make_table()
    table.enqueue(PEER, DEV, "p1", clock.now)
    effects = table.arp_input(request(target_ip=OTHER), DEV, clock.now, pkt_type=PACKET_BROADCAST)
    assert effects == [TransmitQueued(DEV, PEER_MAC, ("p1",))]


def test_stale_news_with_same_mac_keeps_reachable_state(clock):
    table = make_table()
    reachable_peer(table, clock)
    updated = table.get(PEER, DEV).last_updated
    clock.advance(3)
    assert table.arp_input(request(target_ip=OTHER), DEV, clock.now, pkt_type=PACKET_BROADCAST) == []
    entry = table.get(PEER, DEV)
    assert (entry.state, entry.last_updated) == (REACHABLE, updated)


def test_unsolicited_reply_creates_no_entry(clock):
    table = make_table()
    assert table.arp_input(reply(), DEV, clock.now) == []
    assert len(table) == 0


def test_gratuitous_arp_updates_existing_entry(clock):
    table = make_table()
    reachable_peer(table, clock)
    _, announcement = gratuitous_arp(NEW_MAC, PEER)
    assert table.arp_input(announcement, DEV, clock.now, pkt_type=PACKET_BROADCAST) == []
    entry = table.get(PEER, DEV)
    assert (entry.state, entry.mac) == (STALE, NEW_MAC)


def test_gratuitous_arp_for_unknown_address_creates_nothing(clock):
    table = make_table()
    _, announcement = gratuitous_arp(OTHER_MAC, OTHER)
    assert table.arp_input(announcement, DEV, clock.now, pkt_type=PACKET_BROADCAST) == []
    assert len(table) == 0


def test_arp_from_our_own_address_is_ignored_and_counted(clock):
    table = make_table()
    _, conflict = gratuitous_arp(OTHER_MAC, OUR_IP)
    assert table.arp_input(conflict, DEV, clock.now, pkt_type=PACKET_BROADCAST) == []
    assert table.arp_input(request(sender_ip=OUR_IP, target_ip=OUR_IP), DEV, clock.now) == []
    assert len(table) == 0
    assert table.stats.rcv_from_own_address == 2
    assert table.stats.replies_sent == 0


@pytest.mark.parametrize("sender_mac", [BROADCAST_MAC, MacAddress("01:00:5e:00:00:01"), MacAddress("33:33:00:00:00:01")])
def test_group_sender_mac_is_ignored_and_counted(clock, sender_mac):
    table = make_table()
    table.enqueue(PEER, DEV, "p1", clock.now)
    assert table.arp_input(reply(sender_mac=sender_mac), DEV, clock.now) == []
    assert table.arp_input(request(sender_mac=sender_mac), DEV, clock.now) == []
    assert table.get(PEER, DEV).state is INCOMPLETE
    assert table.stats.rcv_invalid == 2


@pytest.mark.parametrize("packet", [
    ArpPacket(3, PEER_MAC, PEER, ZERO_MAC, OUR_IP),  # RARP request opcode
    ArpPacket(ARP_REQUEST, PEER_MAC, IPv4Address("224.0.0.1"), ZERO_MAC, OUR_IP),
    ArpPacket(ARP_REQUEST, PEER_MAC, IPv4Address("127.0.0.1"), ZERO_MAC, OUR_IP),
    ArpPacket(ARP_REQUEST, PEER_MAC, IPv4Address("255.255.255.255"), ZERO_MAC, OUR_IP),
    ArpPacket(ARP_REQUEST, PEER_MAC, PEER, ZERO_MAC, IPv4Address("239.1.1.1")),
    ArpPacket(ARP_REPLY, PEER_MAC, PEER, OUR_MAC, IPv4Address("127.0.0.1")),
])
def test_invalid_operation_or_addresses_are_ignored_and_counted(clock, packet):
    table = make_table()
    table.enqueue(PEER, DEV, "p1", clock.now)
    assert table.arp_input(packet, DEV, clock.now) == []
    assert table.get(PEER, DEV).state is INCOMPLETE
    assert table.stats.rcv_invalid == 1


def test_address_probe_with_zero_sender_gets_reply_but_no_entry(clock):
    table = make_table()
    probe = ArpPacket.request(PEER_MAC, IPv4Address(0), OUR_IP)  # RFC 5227 duplicate address detection
    effects = table.arp_input(probe, DEV, clock.now, pkt_type=PACKET_BROADCAST)
    assert effects == [SendArpReply(DEV, OUR_IP, IPv4Address(0), PEER_MAC)]
    assert len(table) == 0


def test_arp_for_another_host_at_link_layer_is_ignored(clock):
    table = make_table()
    table.enqueue(PEER, DEV, "p1", clock.now)
    assert table.arp_input(reply(), DEV, clock.now, pkt_type=PACKET_OTHERHOST) == []
    assert table.get(PEER, DEV).state is INCOMPLETE


def test_entries_are_per_device(clock):
    table = make_table()
    table.enqueue(PEER, "eth1", "p1", clock.now)
    assert table.arp_input(reply(), DEV, clock.now) == []  # the reply came in on another interface
    assert table.get(PEER, "eth1").state is INCOMPLETE
    assert table.get(PEER, DEV) is None


# -- permanent entries and administration --------------------------------------------

def test_permanent_entry_is_immune_to_arp_input_and_ageing(clock):
    table = make_table()
    table.add("10.0.0.2", DEV, "02:00:00:00:00:02", clock.now)
    assert table.next_timer() is None
    table.arp_input(reply(sender_mac=NEW_MAC), DEV, clock.now)
    table.arp_input(request(sender_mac=NEW_MAC), DEV, clock.now, pkt_type=PACKET_BROADCAST)
    clock.advance(10_000)
    assert table.tick(clock.now) == []
    entry = table.get(PEER, DEV)
    assert (entry.state, entry.mac) == (PERMANENT, PEER_MAC)
    assert table.lookup(PEER, DEV, clock.now) == PEER_MAC
    assert table.get(PEER, DEV).state is PERMANENT


def test_permanent_entry_survives_flush_and_eviction(clock):
    table = make_table(gc_thresh3=2)
    table.add(PEER, DEV, PEER_MAC, clock.now - 100)
    table.add(OTHER, DEV, OTHER_MAC, clock.now, state=STALE)
    assert table.flush() == []
    assert table.get(OTHER, DEV) is None and table.get(PEER, DEV) is not None
    table.add(OTHER, DEV, OTHER_MAC, clock.now, state=STALE)
    table.enqueue(IPv4Address("10.0.0.9"), DEV, "p", clock.now)
    assert table.get(PEER, DEV) is not None and table.get(OTHER, DEV) is None


def test_add_permanent_flushes_waiting_packets(clock):
    table = make_table()
    table.enqueue(PEER, DEV, "p1", clock.now)
    assert table.add(PEER, DEV, PEER_MAC, clock.now) == [TransmitQueued(DEV, PEER_MAC, ("p1",))]
    assert table.get(PEER, DEV).state is PERMANENT
    assert run_timers(table, clock, clock.now + 5) == []  # the INCOMPLETE retry timer is gone


def test_add_rejects_states_it_cannot_set(clock):
    with pytest.raises(ValueError):
        make_table().add(PEER, DEV, PEER_MAC, clock.now, state=INCOMPLETE)


def test_delete_removes_entry_and_returns_waiting_packets(clock):
    table = make_table()
    table.enqueue(PEER, DEV, "p1", clock.now)
    assert table.delete(PEER, DEV) == [ResolutionFailed(DEV, PEER, ("p1",))]
    assert table.get(PEER, DEV) is None
    assert table.next_timer() is None


def test_delete_unknown_entry_raises_enoent():
    with pytest.raises(FileNotFoundError) as caught:
        make_table().delete(PEER, DEV)
    assert caught.value.errno == errno.ENOENT


def test_flush_by_device_leaves_other_devices(clock):
    table = make_table()
    table.add(PEER, DEV, PEER_MAC, clock.now, state=REACHABLE)
    table.add(PEER, "eth1", PEER_MAC, clock.now, state=REACHABLE)
    table.flush(dev="eth1")
    assert table.get(PEER, DEV) is not None and table.get(PEER, "eth1") is None


# -- garbage collection and eviction ---------------------------------------------------

def test_stale_entry_removed_after_gc_stale_time_unused(clock):
    table = make_table()
    start = clock.now
    table.arp_input(request(), DEV, clock.now, pkt_type=PACKET_BROADCAST)  # STALE, used at start
    run_timers(table, clock, start + 59.9)
    assert table.get(PEER, DEV) is not None
    run_timers(table, clock, start + 60)
    assert table.get(PEER, DEV) is None
    assert (table.stats.allocs, table.stats.destroys, table.stats.entries) == (1, 1, 0)
    assert table.next_timer() is None


def test_failed_entry_removed_after_gc_stale_time(clock):
    table = make_table()
    start = clock.now
    table.enqueue(PEER, DEV, "p1", clock.now)
    run_timers(table, clock, start + 59.9)
    assert table.get(PEER, DEV).state is FAILED
    run_timers(table, clock, start + 60)
    assert table.get(PEER, DEV) is None


def test_stale_entry_refreshed_by_use_is_not_collected(clock):
    table = make_table()
    start = clock.now
    reachable_peer(table, clock)
    run_timers(table, clock, start + 50)  # STALE since +30, last used at start
    table.arp_input(request(target_ip=OTHER), DEV, clock.now, pkt_type=PACKET_BROADCAST)  # same MAC
    clock.set(start + 55)
    table.lookup(PEER, DEV, clock.now)
    table.arp_input(reply(), DEV, clock.now + 1)  # DELAY -> REACHABLE
    run_timers(table, clock, start + 61)
    assert table.get(PEER, DEV).state is REACHABLE


def test_full_table_evicts_least_recently_used_entry(clock):
    table = make_table(gc_thresh3=3)
    addresses = [IPv4Address(f"10.0.1.{n}") for n in range(1, 4)]
    for n, ip in enumerate(addresses):
        table.add(ip, DEV, MacAddress(n + 10), clock.now + n, state=STALE)
    table.lookup(addresses[0], DEV, clock.now + 5)  # the oldest becomes the most recently used
    table.enqueue(PEER, DEV, "p", clock.now + 6)
    assert table.get(addresses[1], DEV) is None
    assert table.get(addresses[0], DEV) is not None and table.get(addresses[2], DEV) is not None
    assert len(table) == 3
    assert table.stats.forced_gc_runs == 1


def test_eviction_spares_entries_with_queued_packets(clock):
    table = make_table(gc_thresh3=2)
    table.enqueue(OTHER, DEV, "waiting", clock.now)  # oldest, but has a packet queued
    table.add(IPv4Address("10.0.0.7"), DEV, OTHER_MAC, clock.now + 1, state=STALE)
    effects = table.enqueue(PEER, DEV, "p", clock.now + 2)
    assert effects == [SendArpRequest(DEV, PEER, BROADCAST_MAC)]
    assert table.get(OTHER, DEV) is not None
    assert table.get(IPv4Address("10.0.0.7"), DEV) is None


def test_eviction_of_waiting_entry_when_no_other_returns_its_packets(clock):
    table = make_table(gc_thresh3=1)
    table.enqueue(OTHER, DEV, "waiting", clock.now)
    effects = table.enqueue(PEER, DEV, "p", clock.now + 1)
    assert effects == [ResolutionFailed(DEV, OTHER, ("waiting",)), SendArpRequest(DEV, PEER, BROADCAST_MAC)]
    assert table.get(OTHER, DEV) is None


def test_table_full_of_permanent_entries_refuses_new_ones(clock):
    table = make_table(gc_thresh3=1)
    table.add(OTHER, DEV, OTHER_MAC, clock.now)
    assert table.enqueue(PEER, DEV, "p", clock.now) == [ResolutionFailed(DEV, PEER, ("p",))]
    assert table.get(PEER, DEV) is None
    with pytest.raises(OSError) as caught:
        table.add(PEER, DEV, PEER_MAC, clock.now)
    assert caught.value.errno == errno.ENOBUFS
    # arp_process answers only when neigh_event_ns found or made the sender's entry
    assert table.arp_input(request(), DEV, clock.now, pkt_type=PACKET_BROADCAST) == []
    assert table.stats.table_fulls == 3
    assert table.stats.replies_sent == 0


# -- counters, table view, packets -----------------------------------------------------------

def test_counters_after_a_resolution_and_a_failure(clock):
    table = make_table()
    table.lookup(PEER, DEV, clock.now)
    reachable_peer(table, clock, "p1")
    table.lookup(PEER, DEV, clock.now)
    table.lookup(OTHER, DEV, clock.now)
    table.enqueue(OTHER, DEV, "p2", clock.now)
    run_timers(table, clock, clock.now + 3)
    table.arp_input(request(), DEV, clock.now, pkt_type=PACKET_BROADCAST)
    assert table.stats.as_dict() == {
        "entries": 2, "allocs": 2, "destroys": 0, "lookups": 3, "hits": 1, "res_failed": 1,
        "rcv_probes_mcast": 1, "rcv_probes_ucast": 0, "forced_gc_runs": 0, "unresolved_discards": 0,
        "table_fulls": 0, "mcast_probes_sent": 4, "ucast_probes_sent": 0, "replies_sent": 1,
        "rcv_from_own_address": 0, "rcv_invalid": 0, "locktime_ignored": 0,
    }


def test_table_rows_look_like_ip_neigh_show(clock):
    table = make_table()
    start = clock.now
    reachable_peer(table, clock)
    table.enqueue(OTHER, DEV, "p", clock.now)
    table.add("10.0.0.9", "eth1", "02:00:00:00:00:09", clock.now)
    clock.set(start + 2)
    rows = table.table(clock.now)
    assert rows == [
        {"ip": "10.0.0.2", "dev": "eth0", "lladdr": "02:00:00:00:00:02", "state": "REACHABLE",
         "used": 2.0, "confirmed": 2.0, "updated": 2.0, "probes": 0, "queue_len": 0},
        {"ip": "10.0.0.3", "dev": "eth0", "lladdr": None, "state": "INCOMPLETE",
         "used": 2.0, "confirmed": 62.0, "updated": 2.0, "probes": 1, "queue_len": 1},
        {"ip": "10.0.0.9", "dev": "eth1", "lladdr": "02:00:00:00:00:09", "state": "PERMANENT",
         "used": 2.0, "confirmed": 2.0, "updated": 2.0, "probes": 0, "queue_len": 0},
    ]


def test_effects_build_the_arp_packets_linux_sends():
    request_effect = SendArpRequest(DEV, PEER, BROADCAST_MAC)
    built = ArpPacket.parse(request_effect.packet(OUR_MAC, OUR_IP).build())
    assert built == ArpPacket(ARP_REQUEST, OUR_MAC, OUR_IP, ZERO_MAC, PEER)
    reply_effect = SendArpReply(DEV, OUR_IP, PEER, PEER_MAC)
    built = ArpPacket.parse(reply_effect.packet(OUR_MAC).build())
    assert built == ArpPacket(ARP_REPLY, OUR_MAC, OUR_IP, PEER_MAC, PEER)


def test_gratuitous_arp_is_a_broadcast_announcement():
    destination, packet = gratuitous_arp(OUR_MAC, OUR_IP)
    assert destination == BROADCAST_MAC
    assert ArpPacket.parse(packet.build()) == ArpPacket(ARP_REQUEST, OUR_MAC, OUR_IP, ZERO_MAC, OUR_IP)


@pytest.mark.parametrize("knobs", [
    {"retrans_time": 0}, {"base_reachable_time": -1}, {"delay_first_probe_time": -1},
    {"gc_stale_time": 0}, {"unres_qlen_bytes": -1}, {"ucast_solicit": -1}, {"gc_thresh3": 0},
])
def test_params_reject_values_that_would_stall_timers(knobs):
    with pytest.raises(ValueError):
        NeighParams(**knobs)


def test_two_tables_resolve_each_other_over_real_arp_bytes(clock):
    """h1 resolves h2: request and reply go through build/parse, as the kernel would carry them."""
    h1 = NeighTable(local_addresses={OUR_IP})
    h2 = NeighTable(local_addresses={PEER})
    macs = {"h1": OUR_MAC, "h2": PEER_MAC}

    def carry(effects, source):
        """Turn effects into received ARP packets for the other side, as kernel.py will."""
        delivered = []
        for effect in effects:
            if isinstance(effect, SendArpRequest):
                wire = effect.packet(macs[source], OUR_IP if source == "h1" else PEER).build()
                pkt_type = PACKET_BROADCAST if effect.dst_mac == BROADCAST_MAC else PACKET_HOST
                delivered.append((ArpPacket.parse(wire), pkt_type))
            elif isinstance(effect, SendArpReply):
                delivered.append((ArpPacket.parse(effect.packet(macs[source]).build()), PACKET_HOST))
        return delivered

    effects = h1.enqueue(PEER, DEV, "syn", clock.now)
    [(request_packet, pkt_type)] = carry(effects, "h1")
    effects = h2.arp_input(request_packet, DEV, clock.now, pkt_type)
    assert h2.get(OUR_IP, DEV).mac == OUR_MAC
    [(reply_packet, pkt_type)] = carry(effects, "h2")
    assert h1.arp_input(reply_packet, DEV, clock.now, pkt_type) == [TransmitQueued(DEV, PEER_MAC, ("syn",))]
    assert h1.get(PEER, DEV).state is REACHABLE
