"""control/render.py against fixed tables: the exact text iproute2 6.x, iputils ping and traceroute print.

The expected strings were checked against `ip` from iproute2 6.1 on Linux
(trailing blanks, which iproute2 leaves at some line ends, removed) and
against iputils' and traceroute's printf formats. The `ip` tables come from
the node's own `ip` (nodes/tools/ip_format.py); here they are pinned as the
netemu> CLI prints them. netemu's own additions (`attached to PORT`,
`(queued N)`, the route cache's counters) are pinned in tests of their own.
"""
from __future__ import annotations

import copy

import pytest

from control import render


def _stats(**values: int) -> dict[str, int]:
    names = ("rx_packets", "rx_bytes", "rx_errors", "rx_dropped", "rx_missed_errors", "rx_nohandler", "multicast",
             "tx_packets", "tx_bytes", "tx_errors", "tx_dropped", "tx_carrier_errors")
    return {name: values.get(name, 0) for name in names}


LOOPBACK = {
    "ifindex": 1, "name": "lo", "flags": ["LOOPBACK", "UP", "LOWER_UP"], "mtu": 65536, "state": "UNKNOWN",
    "mac": "00:00:00:00:00:00", "link_type": "loopback", "txqueuelen": 1000,
    "addresses": [{"address": "127.0.0.1", "prefix_length": 8, "broadcast": "127.255.255.255"}],
    "stats": _stats(rx_packets=29, rx_bytes=3193, tx_packets=29, tx_bytes=3193),
}
ETH0 = {
    "ifindex": 2, "name": "eth0", "flags": ["BROADCAST", "MULTICAST", "UP", "LOWER_UP"], "mtu": 1500, "state": "UP",
    "mac": "02:00:0a:00:01:0a", "link_type": "ether", "txqueuelen": 1000,
    "addresses": [{"address": "10.0.1.10", "prefix_length": 24, "broadcast": "10.0.1.255"}],
    "stats": _stats(rx_packets=3085, rx_bytes=96261489, tx_packets=1805, tx_bytes=201400),
}


# -- ip addr ---------------------------------------------------------------------------


def test_ip_addr_prints_loopback_and_ethernet_like_iproute2():
    assert render.ip_addr([LOOPBACK, ETH0]) == [
        "1: lo: <LOOPBACK,UP,LOWER_UP> mtu 65536 qdisc noqueue state UNKNOWN group default qlen 1000",
        "    link/loopback 00:00:00:00:00:00 brd 00:00:00:00:00:00",
        "    inet 127.0.0.1/8 scope host lo",
        "       valid_lft forever preferred_lft forever",
        "2: eth0: <BROADCAST,MULTICAST,UP,LOWER_UP> mtu 1500 qdisc pfifo_fast state UP group default qlen 1000",
        "    link/ether 02:00:0a:00:01:0a brd ff:ff:ff:ff:ff:ff",
        "    inet 10.0.1.10/24 brd 10.0.1.255 scope global eth0",
        "       valid_lft forever preferred_lft forever",
    ]


def test_ip_addr_of_a_down_interface_without_address_has_no_inet_line():
    down = dict(ETH0, flags=["BROADCAST", "MULTICAST"], state="DOWN", addresses=[], txqueuelen=500)
    assert render.ip_addr([down]) == [
        "2: eth0: <BROADCAST,MULTICAST> mtu 1500 qdisc pfifo_fast state DOWN group default qlen 500",
        "    link/ether 02:00:0a:00:01:0a brd ff:ff:ff:ff:ff:ff",
    ]


def test_ip_addr_omits_brd_when_the_address_has_no_broadcast():
    point_to_point = dict(ETH0, addresses=[{"address": "10.255.0.1", "prefix_length": 31, "broadcast": None}])
    assert render.ip_addr([point_to_point])[2] == "    inet 10.255.0.1/31 scope global eth0"


def test_ip_addr_gives_a_31_or_32_no_brd_though_the_kernel_reports_one():
    # The node's `interfaces` op reports every address's broadcast; Linux sets none for /31 and /32.
    narrow = dict(ETH0, addresses=[{"address": "10.255.0.1", "prefix_length": 31, "broadcast": "10.255.0.1"},
                                   {"address": "10.9.9.9", "prefix_length": 32, "broadcast": "10.9.9.9"}])
    assert render.ip_addr([narrow])[2:] == [
        "    inet 10.255.0.1/31 scope global eth0",
        "       valid_lft forever preferred_lft forever",
        "    inet 10.9.9.9/32 scope global eth0",
        "       valid_lft forever preferred_lft forever",
    ]


def test_ip_addr_shows_every_address_of_an_interface():
    two = dict(ETH0, addresses=ETH0["addresses"] + [{"address": "10.0.9.1", "prefix_length": 16,
                                                      "broadcast": "10.0.255.255"}])
    assert render.ip_addr([two])[2:] == [
        "    inet 10.0.1.10/24 brd 10.0.1.255 scope global eth0",
        "       valid_lft forever preferred_lft forever",
        "    inet 10.0.9.1/16 brd 10.0.255.255 scope global eth0",
        "       valid_lft forever preferred_lft forever",
    ]


def test_ip_addr_prints_a_qdisc_the_kernel_reports():
    assert render.ip_addr([dict(ETH0, qdisc="noop")])[0].startswith("2: eth0: <BROADCAST,MULTICAST,UP,LOWER_UP> mtu 1500 qdisc noop state UP")


# -- ip link ---------------------------------------------------------------------------


def test_ip_s_link_sizes_columns_like_iproute2():
    assert render.ip_link([LOOPBACK, ETH0], statistics=True) == [
        "1: lo: <LOOPBACK,UP,LOWER_UP> mtu 65536 qdisc noqueue state UNKNOWN mode DEFAULT group default qlen 1000",
        "    link/loopback 00:00:00:00:00:00 brd 00:00:00:00:00:00",
        "    RX:  bytes packets errors dropped  missed   mcast",
        "          3193      29      0       0       0       0",
        "    TX:  bytes packets errors dropped carrier collsns",
        "          3193      29      0       0       0       0",
        "2: eth0: <BROADCAST,MULTICAST,UP,LOWER_UP> mtu 1500 qdisc pfifo_fast state UP mode DEFAULT group default qlen 1000",
        "    link/ether 02:00:0a:00:01:0a brd ff:ff:ff:ff:ff:ff",
        "    RX:  bytes packets errors dropped  missed   mcast",
        "      96261489    3085      0       0       0       0",
        "    TX:  bytes packets errors dropped carrier collsns",
        "        201400    1805      0       0       0       0",
    ]


def test_ip_s_link_widens_a_column_for_a_long_number_in_rx_or_tx():
    busy = dict(ETH0, stats=_stats(rx_bytes=12345678901, rx_packets=123456789, tx_dropped=12345678))
    assert render.ip_link([busy])[2:] == [
        "    RX:   bytes   packets errors  dropped  missed   mcast",
        "    12345678901 123456789      0        0       0       0",
        "    TX:   bytes   packets errors  dropped carrier collsns",
        "              0         0      0 12345678       0       0",
    ]


def test_ip_link_without_s_has_no_counters():
    assert render.ip_link([LOOPBACK], statistics=False) == [
        "1: lo: <LOOPBACK,UP,LOWER_UP> mtu 65536 qdisc noqueue state UNKNOWN mode DEFAULT group default qlen 1000",
        "    link/loopback 00:00:00:00:00:00 brd 00:00:00:00:00:00",
    ]


def test_ip_link_names_the_segment_port_as_a_netemu_addition():
    attached = dict(ETH0, attachment="h1:eth0")
    assert render.ip_link([attached], statistics=False)[1] == (
        "    link/ether 02:00:0a:00:01:0a brd ff:ff:ff:ff:ff:ff attached to h1:eth0")


# -- ip route --------------------------------------------------------------------------


def _route(dst: str, **fields) -> dict:
    route = {"dst": dst, "type": "unicast", "table": "main", "gateway": None, "dev": "eth0", "protocol": "boot",
             "scope": "global", "prefsrc": None, "metric": 0, "mtu": None, "flags": []}
    route.update(fields)
    return route


MAIN = [
    _route("default", gateway="10.0.1.1"),
    _route("10.0.1.0/24", protocol="kernel", scope="link", prefsrc="10.0.1.10"),
]
LOCAL = [
    _route("10.0.1.10", type="local", table="local", protocol="kernel", scope="host", prefsrc="10.0.1.10"),
    _route("10.0.1.255", type="broadcast", table="local", protocol="kernel", scope="link", prefsrc="10.0.1.10"),
    _route("127.0.0.0/8", type="local", table="local", dev="lo", protocol="kernel", scope="host", prefsrc="127.0.0.1"),
]


def test_ip_route_prints_the_main_table_like_iproute2():
    assert render.ip_route(MAIN) == [
        "default via 10.0.1.1 dev eth0",
        "10.0.1.0/24 dev eth0 proto kernel scope link src 10.0.1.10",
    ]


def test_ip_route_show_table_local_does_not_repeat_the_table_name():
    assert render.ip_route(LOCAL, table="local") == [
        "local 10.0.1.10 dev eth0 proto kernel scope host src 10.0.1.10",
        "broadcast 10.0.1.255 dev eth0 proto kernel scope link src 10.0.1.10",
        "local 127.0.0.0/8 dev lo proto kernel scope host src 127.0.0.1",
    ]


def test_ip_route_show_table_all_names_every_table_but_main():
    assert render.ip_route(MAIN + LOCAL[:1], table="all") == [
        "default via 10.0.1.1 dev eth0",
        "10.0.1.0/24 dev eth0 proto kernel scope link src 10.0.1.10",
        "local 10.0.1.10 dev eth0 table local proto kernel scope host src 10.0.1.10",
    ]


def test_ip_route_prints_static_protocol_metric_flags_and_mtu_in_iproute2_order():
    route = _route("10.9.0.0/16", gateway="10.0.1.1", protocol="static", metric=20, flags=["onlink"], mtu=1400)
    assert render.ip_route([route]) == ["10.9.0.0/16 via 10.0.1.1 dev eth0 proto static metric 20 onlink mtu 1400"]


def test_ip_route_of_an_unreachable_route_leads_with_its_type():
    route = _route("10.66.0.0/16", type="unreachable", dev=None)
    assert render.ip_route([route]) == ["unreachable 10.66.0.0/16"]


def test_ip_route_leaves_out_an_empty_protocol_scope_or_table():
    route = _route("10.9.0.0/16", gateway="10.0.1.1", protocol="", scope="", table="")
    assert render.ip_route([route], table="all") == ["10.9.0.0/16 via 10.0.1.1 dev eth0"]


def test_ip_route_of_an_empty_table_is_empty():
    assert render.ip_route([]) == []


# -- ip route show cache (no iproute2 counterpart since Linux 3.6 removed the cache) ----


def test_ip_route_cache_lists_entries_and_counters():
    cache = {"entries": [
        {"dst": "10.0.2.10", "type": "unicast", "gateway": "10.255.0.2", "dev": "eth1", "src": "10.255.0.1",
         "mtu": 1500, "expires": None, "used": 11, "age": 1.51},
        {"dst": "10.0.1.10", "type": "unicast", "gateway": None, "dev": "eth0", "src": "10.0.1.1",
         "mtu": 1400, "expires": 598.6, "used": 23, "age": 1.0},
    ], "stats": {"entries": 2, "hits": 43, "misses": 5, "evictions": 0, "invalidations": 0}}
    assert render.ip_route_cache(cache) == [
        "10.0.2.10 via 10.255.0.2 dev eth1 src 10.255.0.1",
        "    cache  used 11 age 1.5sec mtu 1500",
        "10.0.1.10 dev eth0 src 10.0.1.1",
        "    cache  used 23 age 1.0sec mtu 1400 expires 599sec",
        "stats: entries 2 hits 43 misses 5 evictions 0 invalidations 0",
    ]


def test_ip_route_cache_when_empty_shows_only_counters_or_nothing():
    assert render.ip_route_cache({"entries": [], "stats": {"entries": 0}}) == ["stats: entries 0"]
    assert render.ip_route_cache({"entries": []}) == []


# -- ip neigh --------------------------------------------------------------------------


def test_ip_neigh_prints_resolved_incomplete_and_failed_entries_like_iproute2():
    entries = [
        {"ip": "10.0.1.1", "dev": "eth0", "lladdr": "02:00:0a:00:01:01", "state": "REACHABLE", "queue_len": 0},
        {"ip": "10.0.2.1", "dev": "eth0", "lladdr": "02:00:00:00:02:01", "state": "PERMANENT", "queue_len": 0},
        {"ip": "10.0.1.7", "dev": "eth0", "lladdr": "02:00:0a:00:01:07", "state": "STALE"},
        {"ip": "10.0.1.99", "dev": "eth0", "lladdr": None, "state": "FAILED", "queue_len": 0},
    ]
    assert render.ip_neigh(entries) == [
        "10.0.1.1 dev eth0 lladdr 02:00:0a:00:01:01 REACHABLE",
        "10.0.2.1 dev eth0 lladdr 02:00:00:00:02:01 PERMANENT",
        "10.0.1.7 dev eth0 lladdr 02:00:0a:00:01:07 STALE",
        "10.0.1.99 dev eth0 FAILED",
    ]


def test_ip_neigh_leaves_out_noarp_entries_like_iproute2():
    entries = [
        {"ip": "10.0.1.1", "dev": "eth0", "lladdr": "02:00:0a:00:01:01", "state": "REACHABLE", "queue_len": 0},
        {"ip": "10.0.1.255", "dev": "eth0", "lladdr": "ff:ff:ff:ff:ff:ff", "state": "NOARP", "queue_len": 0},
    ]
    assert render.ip_neigh(entries) == ["10.0.1.1 dev eth0 lladdr 02:00:0a:00:01:01 REACHABLE"]


def test_ip_neigh_shows_queued_packets_of_an_unresolved_entry_as_a_netemu_addition():
    entry = {"ip": "10.0.1.99", "dev": "eth0", "lladdr": None, "state": "INCOMPLETE", "queue_len": 2}
    assert render.ip_neigh([entry]) == ["10.0.1.99 dev eth0 INCOMPLETE (queued 2)"]


# -- ping ------------------------------------------------------------------------------


def _ping(**fields) -> dict:
    result = {"destination": "10.0.2.10", "size": 56, "transmitted": 3, "received": 3, "duplicates": 0,
              "errors": 0, "loss_percent": 0.0, "time_ms": 420.4,
              "replies": [{"seq": 1, "from": "10.0.2.10", "bytes": 64, "ttl": 63, "rtt_ms": 17.006},
                          {"seq": 2, "from": "10.0.2.10", "bytes": 64, "ttl": 63, "rtt_ms": 18.486},
                          {"seq": 3, "from": "10.0.2.10", "bytes": 64, "ttl": 63, "rtt_ms": 18.394}],
              "error_replies": [], "send_error": None,
              "rtt_min": 17.006, "rtt_avg": 17.962, "rtt_max": 18.486, "rtt_mdev": 0.677}
    result.update(fields)
    return result


def test_ping_by_name_prints_what_iputils_ping_n_prints():
    assert render.ping(_ping(), "h2") == [
        "PING h2 (10.0.2.10) 56(84) bytes of data.",
        "64 bytes from 10.0.2.10: icmp_seq=1 ttl=63 time=17.0 ms",
        "64 bytes from 10.0.2.10: icmp_seq=2 ttl=63 time=18.5 ms",
        "64 bytes from 10.0.2.10: icmp_seq=3 ttl=63 time=18.4 ms",
        "",
        "--- h2 ping statistics ---",
        "3 packets transmitted, 3 received, 0% packet loss, time 420ms",
        "rtt min/avg/max/mdev = 17.006/17.962/18.486/0.677 ms",
    ]


def test_ping_by_address_repeats_the_address_like_iputils():
    lines = render.ping(_ping(), "10.0.2.10")
    assert lines[0] == "PING 10.0.2.10 (10.0.2.10) 56(84) bytes of data."
    assert lines[5] == "--- 10.0.2.10 ping statistics ---"
    assert render.ping(_ping())[0] == "PING 10.0.2.10 (10.0.2.10) 56(84) bytes of data."


@pytest.mark.parametrize(("rtt_ms", "shown"), [
    (0.04, "0.040"), (0.123, "0.123"), (0.9994, "0.999"), (1.0, "1.00"), (1.5, "1.50"), (9.994, "9.99"),
    (9.995, "10.0"), (17.0, "17.0"), (17.06, "17.1"), (99.94, "99.9"), (99.95, "100"), (123.456, "123"),
    (1000.4, "1000"),
])
def test_ping_time_keeps_three_significant_digits_like_iputils(rtt_ms, shown):
    result = _ping(transmitted=1, received=1, replies=[{"seq": 1, "from": "10.0.2.10", "bytes": 64, "ttl": 64,
                                                       "rtt_ms": rtt_ms}])
    assert render.ping(result)[1] == f"64 bytes from 10.0.2.10: icmp_seq=1 ttl=64 time={shown} ms"


def test_ping_statistics_round_time_half_up_and_print_loss_with_g():
    result = _ping(transmitted=3, received=2, time_ms=2002.5, replies=_ping()["replies"][:2], loss_percent=33.33)
    assert render.ping(result, "h2")[-2:] == [
        "3 packets transmitted, 2 received, 33.3333% packet loss, time 2003ms",
        "rtt min/avg/max/mdev = 17.006/17.962/18.486/0.677 ms",
    ]


def test_ping_without_replies_has_no_rtt_line():
    result = _ping(transmitted=1, received=0, loss_percent=100.0, time_ms=501.2, replies=[])
    for key in ("rtt_min", "rtt_avg", "rtt_max", "rtt_mdev"):
        del result[key]
    assert render.ping(result, "h2") == [
        "PING h2 (10.0.2.10) 56(84) bytes of data.",
        "",
        "--- h2 ping statistics ---",
        "1 packets transmitted, 0 received, 100% packet loss, time 501ms",
    ]


def test_ping_interleaves_icmp_errors_by_sequence_and_counts_them():
    result = _ping(destination="10.9.9.9", transmitted=3, received=1, errors=2, time_ms=2003.0,
                   replies=[{"seq": 2, "from": "10.9.9.9", "bytes": 64, "ttl": 62, "rtt_ms": 3.2}],
                   error_replies=[{"seq": 3, "from": "10.0.1.1", "type": 3, "code": 0,
                                   "error": "Destination Net Unreachable"},
                                  {"seq": 1, "from": "10.0.1.10", "type": 3, "code": 1,
                                   "error": "Destination Host Unreachable"}],
                   rtt_min=3.2, rtt_avg=3.2, rtt_max=3.2, rtt_mdev=0.0)
    assert render.ping(result) == [
        "PING 10.9.9.9 (10.9.9.9) 56(84) bytes of data.",
        "From 10.0.1.10 icmp_seq=1 Destination Host Unreachable",
        "64 bytes from 10.9.9.9: icmp_seq=2 ttl=62 time=3.20 ms",
        "From 10.0.1.1 icmp_seq=3 Destination Net Unreachable",
        "",
        "--- 10.9.9.9 ping statistics ---",
        "3 packets transmitted, 1 received, +2 errors, 66.6667% packet loss, time 2003ms",
        "rtt min/avg/max/mdev = 3.200/3.200/3.200/0.000 ms",
    ]


def test_ping_counts_duplicates_before_errors():
    result = _ping(duplicates=1, errors=1)
    assert render.ping(result, "h2")[6] == (
        "3 packets transmitted, 3 received, +1 duplicates, +1 errors, 0% packet loss, time 420ms")


def test_ping_that_cannot_send_prints_only_the_connect_error_like_iputils():
    result = _ping(destination="10.9.9.9", transmitted=1, received=0, loss_percent=100.0, time_ms=0.0,
                   replies=[], send_error="Network is unreachable")
    assert render.ping(result, "10.9.9.9") == ["ping: connect: Network is unreachable"]


def test_ping_of_larger_size_counts_header_bytes():
    result = _ping(size=1000, transmitted=1, received=1,
                   replies=[{"seq": 1, "from": "10.0.2.10", "bytes": 1008, "ttl": 63, "rtt_ms": 0.5}])
    lines = render.ping(result, "h2")
    assert lines[0] == "PING h2 (10.0.2.10) 1000(1028) bytes of data."
    assert lines[1] == "1008 bytes from 10.0.2.10: icmp_seq=1 ttl=63 time=0.500 ms"


def test_ping_does_not_modify_its_input():
    result = _ping()
    before = copy.deepcopy(result)
    render.ping(result, "h2")
    assert result == before


# -- traceroute ------------------------------------------------------------------------


def _probe(address: str, rtt_ms: float, mark: str | None = None) -> dict:
    probe = {"address": address, "rtt_ms": rtt_ms}
    if mark:
        probe["mark"] = mark
    return probe


def test_traceroute_prints_one_line_per_hop_like_traceroute_n():
    result = {"destination": "10.0.2.10", "max_hops": 30, "reached": True, "send_error": None, "hops": [
        {"hop": 1, "address": "10.0.1.1", "probes": [_probe("10.0.1.1", 1.18), _probe("10.0.1.1", 1.2),
                                                     _probe("10.0.1.1", 1.254)]},
        {"hop": 2, "address": "10.255.0.2", "probes": [_probe("10.255.0.2", 2.113), None, _probe("10.255.0.2", 2.5)]},
        {"hop": 3, "address": None, "probes": [None, None, None]},
        {"hop": 10, "address": "10.0.2.10", "probes": [_probe("10.0.2.10", 12.0)] * 3},
    ]}
    assert render.traceroute(result, "h2") == [
        "traceroute to h2 (10.0.2.10), 30 hops max, 60 byte packets",
        " 1  10.0.1.1  1.180 ms  1.200 ms  1.254 ms",
        " 2  10.255.0.2  2.113 ms *  2.500 ms",
        " 3  * * *",
        "10  10.0.2.10  12.000 ms  12.000 ms  12.000 ms",
    ]


def test_traceroute_repeats_the_address_when_it_changes_or_follows_only_stars():
    result = {"destination": "10.0.2.10", "max_hops": 5, "reached": False, "send_error": None, "hops": [
        {"hop": 1, "address": "10.0.1.1", "probes": [_probe("10.0.1.1", 1.0), _probe("10.0.1.2", 2.0),
                                                     _probe("10.0.1.2", 3.0)]},
        {"hop": 2, "address": "10.0.1.3", "probes": [None, _probe("10.0.1.3", 4.0), None]},
    ]}
    assert render.traceroute(result, "10.0.2.10")[1:] == [
        " 1  10.0.1.1  1.000 ms 10.0.1.2  2.000 ms  3.000 ms",
        " 2  * 10.0.1.3  4.000 ms *",
    ]


def test_traceroute_marks_unreachables_after_the_time():
    result = {"destination": "10.0.2.99", "max_hops": 30, "reached": True, "send_error": None, "hops": [
        {"hop": 1, "address": "10.0.1.1", "probes": [_probe("10.0.1.1", 3001.2, "!H")] * 3},
    ]}
    assert render.traceroute(result)[1] == " 1  10.0.1.1  3001.200 ms !H  3001.200 ms !H  3001.200 ms !H"


def test_traceroute_header_with_an_address_and_a_send_error():
    result = {"destination": "10.9.9.9", "max_hops": 3, "reached": False, "hops": [],
              "send_error": "Network is unreachable"}
    assert render.traceroute(result, "10.9.9.9") == [
        "traceroute to 10.9.9.9 (10.9.9.9), 3 hops max, 60 byte packets",
        "traceroute: Network is unreachable",
    ]


def test_capture_stopped_says_how_many_frames_went_where():
    assert render.capture_stopped("lan1", {"path": "/tmp/a.pcap", "frames": 4}) == \
        "capture of lan1 stopped: 4 frames in /tmp/a.pcap"
    assert render.capture_stopped("lan1", {"path": "/tmp/a.pcap", "frames": 1}) == \
        "capture of lan1 stopped: 1 frame in /tmp/a.pcap"
    assert render.capture_stopped("lan2", None) == "no capture was running on lan2"
