"""FIB and route cache: ip-route semantics, longest-prefix match, cache accounting, PMTU."""
from __future__ import annotations

import errno

import pytest

from nodes.route import Fib, Route
from nodes.route_cache import DstEntry, RouteCache
from nodes.wire.addresses import IPv4Address

A = IPv4Address


def route(dst: str, **kwargs) -> Route:
    spec = {"dst": dst, **kwargs}
    return Route.from_config(spec)


@pytest.fixture
def fib() -> Fib:
    """A router: eth0 10.0.1.1/24, eth1 10.0.2.1/24."""
    fib = Fib()
    fib.add_address("eth0", "10.0.1.1", 24)
    fib.add_address("eth1", "10.0.2.1", 24)
    return fib


def lookup(fib: Fib, dst: str) -> Route | None:
    return fib.lookup(A(dst))


# ------------------------------------------------------------------ Route value


def test_route_derives_scope_and_table_like_iproute2():
    assert route("10.0.0.0/8", gateway="10.0.1.254").scope == "global"
    assert route("10.0.0.0/8", dev="eth0").scope == "link"
    local = route("10.0.1.1/32", dev="eth0", type="local")
    assert (local.scope, local.table) == ("host", "local")
    assert route("10.0.1.255/32", dev="eth0", type="broadcast").table == "local"
    assert route("10.9.0.0/16", type="blackhole").scope == "global"


def test_route_with_host_bits_set_is_invalid():
    with pytest.raises(OSError) as info:
        route("10.0.1.7/24", dev="eth0")
    assert info.value.errno == errno.EINVAL


def test_route_without_gateway_or_dev_is_invalid():
    with pytest.raises(OSError) as info:
        Route(A("10.0.0.0"), 8)
    assert info.value.errno == errno.EINVAL


def test_route_formats_like_ip_route_show():
    assert str(route("default", gateway="10.0.1.254", dev="eth0", metric=100, protocol="static")) == \
        "default via 10.0.1.254 dev eth0 proto static metric 100"
    assert str(route("10.0.1.0/24", dev="eth0", protocol="kernel", src="10.0.1.1")) == \
        "10.0.1.0/24 dev eth0 proto kernel scope link src 10.0.1.1"
    assert str(route("10.9.0.0/16", type="unreachable")) == "unreachable 10.9.0.0/16"
    assert str(route("10.0.1.1/32", dev="eth0", type="local")) == "local 10.0.1.1 dev eth0 scope host"


def test_reject_routes_carry_the_errno_a_send_fails_with():
    assert route("10.9.0.0/16", type="blackhole").error == errno.EINVAL
    assert route("10.9.0.0/16", type="unreachable").error == errno.EHOSTUNREACH
    assert route("10.9.0.0/16", type="prohibit").error == errno.EACCES
    assert route("10.9.0.0/16", dev="eth0").error is None


# ------------------------------------------------------------------ lookup


def test_longest_prefix_wins_across_overlapping_prefixes(fib):
    fib.add(route("0.0.0.0/0", gateway="10.0.1.254"))
    fib.add(route("172.16.0.0/12", gateway="10.0.1.253"))
    fib.add(route("172.16.5.0/24", gateway="10.0.2.253"))
    fib.add(route("172.16.5.128/25", gateway="10.0.2.252"))
    fib.add(route("172.16.5.200/32", gateway="10.0.2.251"))
    assert lookup(fib, "172.16.5.200").gateway == A("10.0.2.251")
    assert lookup(fib, "172.16.5.201").gateway == A("10.0.2.252")
    assert lookup(fib, "172.16.5.127").gateway == A("10.0.2.253")
    assert lookup(fib, "172.31.255.255").gateway == A("10.0.1.253")
    assert lookup(fib, "172.32.0.0").gateway == A("10.0.1.254")
    assert lookup(fib, "10.0.2.77").dev == "eth1"


def test_without_a_default_route_unknown_destinations_have_no_route(fib):
    assert lookup(fib, "8.8.8.8") is None


def test_default_route_catches_everything_else(fib):
    fib.add(route("default", gateway="10.0.2.254"))
    found = lookup(fib, "8.8.8.8")
    assert (found.gateway, found.dev, found.destination) == (A("10.0.2.254"), "eth1", "default")


def test_lowest_metric_wins_among_equal_prefixes_regardless_of_insertion_order(fib):
    fib.add(route("192.168.0.0/16", gateway="10.0.1.2", metric=200))
    fib.add(route("192.168.0.0/16", gateway="10.0.2.2", metric=50))
    fib.add(route("192.168.0.0/16", gateway="10.0.1.3", metric=100))
    assert lookup(fib, "192.168.3.4").gateway == A("10.0.2.2")
    fib.delete("192.168.0.0/16", metric=50)
    assert lookup(fib, "192.168.3.4").gateway == A("10.0.1.3")


def test_longer_prefix_beats_lower_metric(fib):
    fib.add(route("192.168.0.0/16", gateway="10.0.1.2", metric=0))
    fib.add(route("192.168.1.0/24", gateway="10.0.2.2", metric=1000))
    assert lookup(fib, "192.168.1.1").gateway == A("10.0.2.2")


def test_local_table_is_consulted_before_main(fib):
    # A main-table host route for our own address must not shadow the local entry.
    fib.add(route("10.0.1.1/32", gateway="10.0.2.9"))
    found = lookup(fib, "10.0.1.1")
    assert (found.type, found.table, found.dev) == ("local", "local", "eth0")
    assert lookup(fib, "10.0.1.255").type == "broadcast"
    assert lookup(fib, "127.0.0.1").type == "local"
    assert lookup(fib, "127.1.2.3").type == "local"
    assert lookup(fib, "10.0.1.2").type == "unicast"


def test_address_type_classifies_like_inet_addr_type(fib):
    assert fib.address_type(A("10.0.1.1")) == "local"
    assert fib.address_type(A("10.0.1.255")) == "broadcast"
    assert fib.address_type(A("255.255.255.255")) == "broadcast"
    assert fib.address_type(A("224.0.0.1")) == "multicast"
    assert fib.address_type(A("10.0.1.2")) == "unicast"


def test_reject_routes_are_returned_by_lookup(fib):
    fib.add(route("10.66.0.0/16", type="blackhole"))
    fib.add(route("10.77.0.0/16", type="unreachable"))
    assert lookup(fib, "10.66.1.1").error == errno.EINVAL
    assert lookup(fib, "10.77.1.1").error == errno.EHOSTUNREACH


# ------------------------------------------------------------------ add/delete/replace


def test_adding_the_same_slot_twice_is_file_exists(fib):
    fib.add(route("192.168.0.0/16", gateway="10.0.1.2"))
    with pytest.raises(FileExistsError):
        fib.add(route("192.168.0.0/16", gateway="10.0.1.2"))
    # Linux without multipath: another gateway in the same slot (same metric) is also EEXIST.
    with pytest.raises(FileExistsError):
        fib.add(route("192.168.0.0/16", gateway="10.0.1.3"))
    fib.add(route("192.168.0.0/16", gateway="10.0.1.3", metric=5))
    assert len([r for r in fib.routes() if r["dst"] == "192.168.0.0/16"]) == 2


def test_replace_overwrites_the_slot_or_creates_it(fib):
    fib.replace(route("192.168.0.0/16", gateway="10.0.1.2"))
    fib.replace(route("192.168.0.0/16", gateway="10.0.2.2"))
    rows = [r for r in fib.routes() if r["dst"] == "192.168.0.0/16"]
    assert [(r["gateway"], r["dev"]) for r in rows] == [("10.0.2.2", "eth1")]


def test_delete_removes_the_first_match_and_missing_is_esrch(fib):
    fib.add(route("192.168.0.0/16", gateway="10.0.1.2"))
    deleted = fib.delete("192.168.0.0/16")
    assert deleted.gateway == A("10.0.1.2")
    assert lookup(fib, "192.168.1.1") is None
    with pytest.raises(ProcessLookupError) as info:
        fib.delete("192.168.0.0/16")
    assert info.value.errno == errno.ESRCH


def test_delete_only_matches_the_given_attributes(fib):
    fib.add(route("192.168.0.0/16", gateway="10.0.1.2"))
    with pytest.raises(ProcessLookupError):
        fib.delete("192.168.0.0/16", gateway="10.0.1.99")
    with pytest.raises(ProcessLookupError):
        fib.delete("192.168.0.0/16", dev="eth1")
    fib.delete("192.168.0.0/16", gateway="10.0.1.2", dev="eth0")
    fib.add(route("default", gateway="10.0.1.2"))
    fib.delete("default")
    assert fib.routes() == [r for r in fib.routes() if r["dst"] != "default"]


def test_gateway_must_be_on_link(fib):
    with pytest.raises(OSError) as info:
        fib.add(route("192.168.0.0/16", gateway="10.0.3.1"))
    assert info.value.errno == errno.ENETUNREACH
    # On-link, but not through the dev given.
    with pytest.raises(OSError) as info:
        fib.add(route("192.168.0.0/16", gateway="10.0.1.2", dev="eth1"))
    assert info.value.errno == errno.ENETUNREACH


def test_gateway_reached_only_through_another_gateway_is_not_on_link(fib):
    fib.add(route("10.0.3.0/24", gateway="10.0.1.2"))
    with pytest.raises(OSError) as info:
        fib.add(route("192.168.0.0/16", gateway="10.0.3.1"))
    assert info.value.errno == errno.ENETUNREACH


def test_gateway_on_a_manual_dev_route_is_on_link(fib):
    fib.add(route("10.0.3.0/24", dev="eth1"))
    assert fib.add(route("192.168.0.0/16", gateway="10.0.3.1")).dev == "eth1"


def test_onlink_skips_the_gateway_check(fib):
    added = fib.add(route("192.168.0.0/16", gateway="10.9.9.9", dev="eth0", onlink=True))
    assert lookup(fib, "192.168.0.1") == added


def test_dev_is_inferred_from_the_connected_route_of_the_gateway(fib):
    added = fib.add(route("192.168.0.0/16", gateway="10.0.2.7"))
    assert added.dev == "eth1"
    assert lookup(fib, "192.168.0.1").dev == "eth1"


def test_unknown_dev_is_enodev(fib):
    with pytest.raises(OSError) as info:
        fib.add(route("192.168.0.0/16", dev="eth9"))
    assert info.value.errno == errno.ENODEV


@pytest.mark.parametrize("operation", [
    lambda fib: fib.link_down("eth9"),
    lambda fib: fib.link_up("eth9"),
    lambda fib: fib.set_mtu("eth9", 1400),
    lambda fib: fib.remove_address("eth9", "10.0.9.1"),
])
def test_link_operations_on_an_unknown_device_are_enodev(fib, operation):
    generation = fib.generation
    with pytest.raises(OSError) as info:
        operation(fib)
    assert info.value.errno == errno.ENODEV
    assert fib.generation == generation


def test_routes_show_as_plain_dicts(fib):
    fib.add(route("default", gateway="10.0.1.254", metric=10, protocol="static"))
    rows = fib.routes()
    assert rows[0] == {
        "dst": "default", "type": "unicast", "table": "main", "gateway": "10.0.1.254", "dev": "eth0",
        "protocol": "static", "scope": "global", "prefsrc": None, "metric": 10, "mtu": None, "flags": [],
    }
    assert [r["dst"] for r in rows] == ["default", "10.0.1.0/24", "10.0.2.0/24"]


# ------------------------------------------------------------------ addresses and links


def test_address_creates_connected_local_and_broadcast_routes():
    fib = Fib()
    fib.add_address("eth0", "10.0.1.10", 24)
    assert fib.show() == ["10.0.1.0/24 dev eth0 proto kernel scope link src 10.0.1.10"]
    assert fib.show("local") == [
        "local 10.0.1.10 dev eth0 proto kernel scope host src 10.0.1.10",
        "broadcast 10.0.1.255 dev eth0 proto kernel scope link src 10.0.1.10",
        "local 127.0.0.0/8 dev lo proto kernel scope host src 127.0.0.1",
        "local 127.0.0.1 dev lo proto kernel scope host src 127.0.0.1",
        "broadcast 127.255.255.255 dev lo proto kernel scope link src 127.0.0.1",
    ]


def test_point_to_point_and_host_addresses_have_no_broadcast_route():
    fib = Fib(loopback=False)
    fib.add_address("eth0", "10.0.0.0", 31)
    fib.add_address("eth1", "192.0.2.1", 32)
    assert fib.show("all") == [
        "local 10.0.0.0 dev eth0 proto kernel scope host src 10.0.0.0",
        "local 192.0.2.1 dev eth1 proto kernel scope host src 192.0.2.1",
        "10.0.0.0/31 dev eth0 proto kernel scope link src 10.0.0.0",
    ]


def test_secondary_address_adds_no_second_connected_route_and_is_promoted_on_removal():
    fib = Fib(loopback=False)
    fib.add_address("eth0", "10.0.1.10", 24)
    fib.add_address("eth0", "10.0.1.20", 24)
    assert fib.show() == ["10.0.1.0/24 dev eth0 proto kernel scope link src 10.0.1.10"]
    fib.remove_address("eth0", "10.0.1.10", 24)
    assert fib.show() == ["10.0.1.0/24 dev eth0 proto kernel scope link src 10.0.1.20"]
    assert lookup(fib, "10.0.1.10") .type == "unicast"
    assert lookup(fib, "10.0.1.20").type == "local"


def test_duplicate_address_is_file_exists_and_missing_is_eaddrnotavail(fib):
    with pytest.raises(FileExistsError):
        fib.add_address("eth0", "10.0.1.1", 24)
    with pytest.raises(OSError) as info:
        fib.remove_address("eth0", "10.0.1.99")
    assert info.value.errno == errno.EADDRNOTAVAIL


def test_removing_an_address_removes_its_routes_and_routes_preferring_it(fib):
    fib.add(route("192.168.0.0/16", dev="eth1", src="10.0.2.1"))
    fib.remove_address("eth1", "10.0.2.1")
    assert fib.show() == ["10.0.1.0/24 dev eth0 proto kernel scope link src 10.0.1.1"]
    assert lookup(fib, "10.0.2.1") is None
    assert lookup(fib, "10.0.2.255") is None


def test_link_down_withdraws_connected_routes_and_up_restores_them(fib):
    before = fib.show("all")
    fib.link_down("eth1")
    assert "10.0.2.0/24 dev eth1 proto kernel scope link src 10.0.2.1" not in fib.show()
    assert lookup(fib, "10.0.2.7") is None
    assert lookup(fib, "10.0.2.255") is None
    # Our own address on a down link stays local, as in Linux.
    assert lookup(fib, "10.0.2.1").type == "local"
    assert not fib.is_up("eth1")
    fib.link_up("eth1")
    assert fib.show("all") == before
    assert lookup(fib, "10.0.2.7").dev == "eth1"


def test_static_routes_through_a_down_link_are_skipped_and_flagged(fib):
    fib.add(route("192.168.0.0/24", gateway="10.0.2.2"))
    fib.add(route("192.168.0.0/16", gateway="10.0.1.2"))
    fib.add(route("192.168.0.0/24", gateway="10.0.1.3", metric=100))
    fib.link_down("eth1")
    assert "192.168.0.0/24 via 10.0.2.2 dev eth1 linkdown" in fib.show()
    # The backup with a higher metric takes over, not the shorter prefix.
    assert lookup(fib, "192.168.0.9").gateway == A("10.0.1.3")
    fib.delete("192.168.0.0/24", metric=100)
    assert lookup(fib, "192.168.0.9").gateway == A("10.0.1.2")
    fib.link_up("eth1")
    assert lookup(fib, "192.168.0.9").gateway == A("10.0.2.2")
    assert "192.168.0.0/24 via 10.0.2.2 dev eth1" in fib.show()


def test_gateway_on_a_down_link_cannot_be_added(fib):
    fib.link_down("eth1")
    with pytest.raises(OSError) as info:
        fib.add(route("192.168.0.0/16", gateway="10.0.2.2"))
    assert info.value.errno == errno.ENETUNREACH


def test_link_up_restores_a_connected_route_deleted_by_hand(fib):
    fib.delete("10.0.2.0/24")
    fib.link_down("eth1")
    fib.link_up("eth1")
    assert lookup(fib, "10.0.2.7").dev == "eth1"


# ------------------------------------------------------------------ source selection


def test_source_is_the_routes_src_when_set(fib):
    r = fib.add(route("192.168.0.0/16", gateway="10.0.2.2", src="10.0.1.1"))
    assert fib.select_source(r, A("192.168.0.1")) == A("10.0.1.1")


def test_source_is_the_egress_address_in_the_next_hops_subnet():
    fib = Fib(loopback=False)
    fib.add_address("eth0", "10.0.1.10", 24)
    fib.add_address("eth0", "10.0.9.10", 24)
    fib.add_address("eth0", "10.0.9.20", 24)  # secondary: never chosen over its primary
    via_nine = fib.add(route("192.168.0.0/16", gateway="10.0.9.1"))
    assert fib.select_source(via_nine, A("192.168.0.1")) == A("10.0.9.10")
    on_link = fib.lookup(A("10.0.9.77"))
    assert fib.select_source(on_link, A("10.0.9.77")) == A("10.0.9.10")


def test_source_falls_back_to_the_first_address_of_the_egress_device():
    fib = Fib(loopback=False)
    fib.add_address("eth0", "10.0.1.10", 24)
    fib.add_address("eth0", "10.0.9.10", 24)
    onlink = fib.add(route("192.168.0.0/16", gateway="172.16.0.1", dev="eth0", onlink=True))
    assert fib.select_source(onlink, A("192.168.0.1")) == A("10.0.1.10")


def test_source_for_an_unnumbered_device_is_borrowed_from_another():
    fib = Fib()
    fib.add_address("eth0", "10.0.1.10", 24)
    fib.add_device("tun0")
    r = fib.add(route("192.168.0.0/16", dev="tun0"))
    assert fib.select_source(r, A("192.168.0.1")) == A("10.0.1.10")


def test_source_for_a_local_destination_is_that_address(fib):
    assert fib.select_source(lookup(fib, "10.0.2.1"), A("10.0.2.1")) == A("10.0.2.1")
    assert fib.select_source(lookup(fib, "127.0.0.5"), A("127.0.0.5")) == A("127.0.0.1")


# ------------------------------------------------------------------ route cache


@pytest.fixture
def cache(fib) -> RouteCache:
    fib.add(route("default", gateway="10.0.1.254"))
    return RouteCache(fib, max_size=3)


def test_cache_entry_holds_the_routing_decision(cache):
    entry = cache.lookup(A("8.8.8.8"), now=5.0)
    assert isinstance(entry, DstEntry)
    assert (entry.dst, entry.next_hop, entry.dev, entry.src, entry.pmtu, entry.type) == \
        (A("8.8.8.8"), A("10.0.1.254"), "eth0", A("10.0.1.1"), 1500, "unicast")
    on_link = cache.lookup(A("10.0.2.9"), now=5.0)
    assert (on_link.next_hop, on_link.dev, on_link.src) == (A("10.0.2.9"), "eth1", A("10.0.2.1"))


def test_cache_counts_hits_and_misses(cache):
    first = cache.lookup(A("8.8.8.8"), 1.0)
    second = cache.lookup(A("8.8.8.8"), 2.0)
    assert second is first
    assert (second.use_count, second.last_use) == (2, 2.0)
    cache.lookup(A("8.8.4.4"), 3.0)
    assert cache.stats() == {"entries": 2, "hits": 1, "misses": 2, "evictions": 0, "invalidations": 0}


def test_unroutable_destination_is_a_miss_and_not_cached():
    fib = Fib()
    cache = RouteCache(fib)
    assert cache.lookup(A("8.8.8.8"), 0.0) is None
    assert cache.lookup(A("8.8.8.8"), 0.0) is None
    assert cache.stats() == {"entries": 0, "hits": 0, "misses": 2, "evictions": 0, "invalidations": 0}


def test_cache_evicts_the_least_recently_used_entry(cache):
    for octet in (1, 2, 3):
        cache.lookup(A(f"8.8.8.{octet}"), 0.0)
    cache.lookup(A("8.8.8.1"), 1.0)  # 8.8.8.2 is now the least recently used
    cache.lookup(A("8.8.8.4"), 2.0)
    assert [row["dst"] for row in cache.show(2.0)] == ["8.8.8.3", "8.8.8.1", "8.8.8.4"]
    assert cache.stats()["evictions"] == 1
    cache.lookup(A("8.8.8.2"), 3.0)
    assert cache.stats()["misses"] == 5


@pytest.mark.parametrize("change", [
    pytest.param(lambda fib: fib.add(route("8.8.0.0/16", gateway="10.0.2.254")), id="route add"),
    pytest.param(lambda fib: fib.replace(route("default", gateway="10.0.2.254")), id="route replace"),
    pytest.param(lambda fib: fib.delete("default"), id="route del"),
    pytest.param(lambda fib: fib.add_address("eth2", "10.0.3.1", 24), id="addr add"),
    pytest.param(lambda fib: fib.remove_address("eth1", "10.0.2.1"), id="addr del"),
    pytest.param(lambda fib: fib.link_down("eth1"), id="link down"),
    pytest.param(lambda fib: fib.set_mtu("eth0", 1400), id="link mtu"),
    pytest.param(lambda fib: fib.add_device("eth7"), id="new device"),
])
def test_every_fib_or_interface_change_invalidates_the_cache(cache, change):
    cache.lookup(A("8.8.8.8"), 0.0)
    cache.lookup(A("10.0.2.9"), 0.0)
    change(cache.fib)
    cache.lookup(A("8.8.8.8"), 1.0)
    stats = cache.stats()
    assert (stats["hits"], stats["misses"], stats["invalidations"]) == (0, 3, 2)
    assert "10.0.2.9" not in [row["dst"] for row in cache.show(1.0)]


def test_link_up_invalidates_the_cache(cache):
    cache.fib.link_down("eth1")
    assert cache.lookup(A("10.0.2.9"), 0.0).dev == "eth0"  # via the default route meanwhile
    cache.fib.link_up("eth1")
    assert cache.lookup(A("10.0.2.9"), 1.0).dev == "eth1"


def test_rerouted_destination_gets_the_new_route_after_invalidation(cache):
    assert cache.lookup(A("8.8.8.8"), 0.0).next_hop == A("10.0.1.254")
    cache.fib.add(route("8.8.8.0/24", gateway="10.0.2.254"))
    entry = cache.lookup(A("8.8.8.8"), 1.0)
    assert (entry.next_hop, entry.dev, entry.src) == (A("10.0.2.254"), "eth1", A("10.0.2.1"))


def test_flush_empties_the_cache(cache):
    cache.lookup(A("8.8.8.8"), 0.0)
    cache.flush()
    assert len(cache) == 0
    cache.lookup(A("8.8.8.8"), 1.0)
    assert cache.stats() == {"entries": 1, "hits": 0, "misses": 2, "evictions": 0, "invalidations": 1}


def test_path_mtu_comes_from_the_device_or_a_route_mtu(cache):
    cache.fib.set_mtu("eth1", 9000)
    assert cache.path_mtu(A("10.0.2.9"), 0.0) == 9000
    cache.fib.add(route("10.0.2.128/25", dev="eth1", mtu=1280))
    assert cache.path_mtu(A("10.0.2.200"), 0.0) == 1280
    assert cache.path_mtu(A("127.0.0.1"), 0.0) == 65536


def test_frag_needed_lowers_the_path_mtu_until_it_expires(cache):
    assert cache.update_pmtu(A("8.8.8.8"), 1400, now=100.0) == 1400
    entry = cache.lookup(A("8.8.8.8"), 101.0)
    assert (entry.pmtu, entry.pmtu_expires) == (1400, 700.0)
    assert cache.show(101.0)[0]["expires"] == pytest.approx(599.0)
    # Other destinations through the same gateway keep the device MTU (keyed by destination).
    assert cache.path_mtu(A("8.8.4.4"), 101.0) == 1500
    assert cache.path_mtu(A("8.8.8.8"), 699.9) == 1400
    assert cache.path_mtu(A("8.8.8.8"), 700.0) == 1500
    assert cache.lookup(A("8.8.8.8"), 700.0).pmtu_expires is None


def test_frag_needed_never_raises_the_path_mtu_and_is_floored(cache):
    cache.update_pmtu(A("8.8.8.8"), 1400, now=0.0)
    assert cache.update_pmtu(A("8.8.8.8"), 1450, now=1.0) == 1400
    assert cache.update_pmtu(A("8.8.8.8"), 68, now=2.0) == 552
    assert cache.lookup(A("8.8.8.8"), 3.0).pmtu_expires == 602.0


def test_learned_path_mtu_survives_a_routing_change_but_not_a_flush(cache):
    cache.update_pmtu(A("8.8.8.8"), 1400, now=0.0)
    cache.fib.add(route("9.0.0.0/8", gateway="10.0.1.254"))
    assert cache.path_mtu(A("8.8.8.8"), 1.0) == 1400
    cache.flush()
    assert cache.path_mtu(A("8.8.8.8"), 2.0) == 1500


def test_learned_path_mtu_survives_eviction_and_expires_while_uncached(cache):
    cache.update_pmtu(A("8.8.8.8"), 1400, now=0.0)
    for octet in (1, 2, 3):
        cache.lookup(A(f"9.9.9.{octet}"), 1.0)
    assert cache.path_mtu(A("8.8.8.8"), 2.0) == 1400
    for octet in (1, 2, 3):
        cache.lookup(A(f"9.9.9.{octet}"), 3.0)
    assert cache.path_mtu(A("8.8.8.8"), 601.0) == 1500


def test_update_pmtu_for_an_unroutable_destination_is_none():
    assert RouteCache(Fib()).update_pmtu(A("8.8.8.8"), 1400, 0.0) is None


def test_cache_show_lists_entries_like_ip_route_show_cache(cache):
    cache.lookup(A("8.8.8.8"), 1.0)
    cache.lookup(A("8.8.8.8"), 2.0)
    assert cache.show(4.0) == [{
        "dst": "8.8.8.8", "type": "unicast", "gateway": "10.0.1.254", "redirected": False, "dev": "eth0",
        "src": "10.0.1.1", "mtu": 1500, "expires": None, "used": 2, "age": 2.0,
    }]
