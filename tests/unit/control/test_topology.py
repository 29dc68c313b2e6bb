"""The topology model: what a valid file parses into, and the checks that need one key."""
from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from control.topology import (
    TopologyError, auto_mac, format_summary, l2_domains, load_topology, parse_topology,
)
from control.topology_parse import parse_route
from control.topology_yaml import YamlSyntaxError, load_located
from nodes.wire.addresses import IPv4Address

TOPOLOGIES = Path(__file__).parents[3] / "topologies"


def parse(text: str):
    return parse_topology(textwrap.dedent(text), "t.yaml")


def problems(text: str) -> list[str]:
    with pytest.raises(TopologyError) as error:
        parse(text)
    return str(error.value).splitlines()


LAN = textwrap.dedent("""
    name: t
    segments:
      lan1: {kind: switch}
    nodes:
      h1:
        kind: host
        interfaces:
          eth0: {segment: lan1, ip: 10.0.0.1/24}
""")


def with_lan(extra: str) -> str:
    """The one-host LAN followed by more top-level YAML."""
    return LAN + textwrap.dedent(extra)


# --- two-lans, the reference file --------------------------------------------------------------

@pytest.fixture(scope="module")
def two_lans():
    return load_topology(TOPOLOGIES / "two_lans.yaml")


def test_two_lans_has_the_nodes_segments_and_kinds_written(two_lans):
    assert two_lans.name == "two-lans"
    assert list(two_lans.nodes) == ["h1", "r1", "h2"]
    assert {n: s.kind for n, s in two_lans.segments.items()} == {"lan1": "switch", "lan2": "hub"}
    assert [i.attachment for i in two_lans.segments["lan2"].attachments] == ["r1:eth1", "h2:eth0"]


def test_two_lans_router_forwards_and_hosts_do_not(two_lans):
    assert two_lans.nodes["r1"].ip_forward
    assert not two_lans.nodes["h1"].ip_forward and not two_lans.nodes["h2"].ip_forward
    assert two_lans.nodes["h2"].sysctl == {"net.ipv4.ip_forward": 0, "net.ipv4.icmp_ratelimit": 1000}


def test_two_lans_macs_are_explicit_or_derived_from_the_address(two_lans):
    macs = {i.attachment: (i.mac, i.mac_auto) for i in two_lans.interfaces()}
    assert macs == {
        "h1:eth0": ("02:00:0a:00:01:0a", True),
        "r1:eth0": ("02:00:0a:00:01:01", True),
        "r1:eth1": ("02:00:00:00:02:01", False),
        "h2:eth0": ("02:00:00:00:02:10", False),
    }


def test_two_lans_link_params_merge_defaults_segment_interface(two_lans):
    r1_eth1 = two_lans.nodes["r1"].interfaces["eth1"]
    h2_eth0 = two_lans.nodes["h2"].interfaces["eth0"]
    h1_eth0 = two_lans.nodes["h1"].interfaces["eth0"]
    assert two_lans.defaults_link == {"mtu": 1500}
    assert two_lans.segments["lan2"].params == {"delay": 0.002}
    assert r1_eth1.params == {"rate": 100_000_000, "delay": 0.005}
    merged = two_lans.link_params(r1_eth1)
    assert (merged["rate"], merged["delay"], merged["mtu"], merged["loss"], merged["up"]) == (100_000_000, 0.005, 1500, 0.0, True)
    assert two_lans.link_params(h2_eth0)["delay"] == 0.002
    assert two_lans.link_params(h1_eth0)["delay"] == 0.0
    assert r1_eth1.mtu == 1500


def test_two_lans_routes_arp_and_hosts(two_lans):
    assert [r.as_dict() for r in two_lans.nodes["h1"].routes] == [
        {"dst": "0.0.0.0/0", "gateway": "10.0.1.1", "dev": None, "metric": 0, "src": None}]
    assert [a.as_dict() for a in two_lans.nodes["h2"].arp] == [
        {"ip": "10.0.2.1", "mac": "02:00:00:00:02:01", "dev": "eth0"}]
    assert two_lans.hosts == {
        "h1": "10.0.1.10", "h1-eth0": "10.0.1.10",
        "r1": "10.0.1.1", "r1-eth0": "10.0.1.1", "r1-eth1": "10.0.2.1",
        "h2": "10.0.2.10", "h2-eth0": "10.0.2.10",
    }


def test_summary_lists_counts_devices_and_nodes(two_lans):
    summary = format_summary(two_lans)
    assert summary.splitlines()[0] == ("two-lans: 3 nodes (2 hosts, 1 router), 1 switch, 1 hub, "
                                       "0 point-to-point links, 0 segment links")
    assert "  lan2         hub    r1:eth1 h2:eth0  [delay 2ms]" in summary
    assert "    eth1   10.0.2.1/24        02:00:00:00:02:01  lan2  mtu 1500  [rate 100Mbit delay 5ms]" in summary
    assert "    route default via 10.0.1.1" in summary


def test_summary_of_a_large_topology_is_cut_short():
    summary = format_summary(load_topology(TOPOLOGIES / "generated_500.yaml"), detail_limit=5)
    assert "  ... and 495 more" in summary
    assert len(summary.splitlines()) < 40


# --- values and defaults ------------------------------------------------------------------------

def test_segment_kind_defaults_to_switch_with_802_1d_aging():
    topology = parse(LAN.replace("lan1: {kind: switch}", "lan1:"))
    segment = topology.segments["lan1"]
    assert (segment.kind, segment.aging, segment.max_entries) == ("switch", 300.0, 8192)


def test_sysctl_overrides_the_kind_default_for_ip_forward():
    topology = parse(LAN + "    sysctl: {net.ipv4.ip_forward: true}\n")
    assert topology.nodes["h1"].ip_forward
    router = parse(LAN.replace("kind: host", "kind: router") + "    sysctl: {net.ipv4.ip_forward: 0}\n")
    assert not router.nodes["h1"].ip_forward


def test_defaults_sysctl_apply_to_every_node_below_node_sysctl():
    text = LAN.replace("segments:", "defaults:\n  sysctl: {net.ipv4.ip_default_ttl: 32, net.ipv4.icmp_ratelimit: 0}\nsegments:")
    topology = parse(text + "    sysctl: {net.ipv4.icmp_ratelimit: 250}\n")
    assert topology.nodes["h1"].sysctl == {
        "net.ipv4.ip_forward": 0, "net.ipv4.ip_default_ttl": 32, "net.ipv4.icmp_ratelimit": 250}


def test_point_to_point_link_becomes_a_p2p_device_with_both_ends():
    topology = load_topology(TOPOLOGIES / "router_chain.yaml")
    link = topology.segments["r1-r2"]
    assert link.kind == "p2p" and link.implicit
    assert [i.attachment for i in link.attachments] == ["r1:eth1", "r2:eth0"]


def test_a_31_link_may_use_both_addresses():
    text = """
        name: t
        nodes:
          r1: {kind: router, interfaces: {eth0: {link: w, ip: 10.9.0.0/31}}}
          r2: {kind: router, interfaces: {eth0: {link: w, ip: 10.9.0.1/31}}}
    """
    topology = parse(text)
    assert [str(i.address) for i in topology.interfaces()] == ["10.9.0.0", "10.9.0.1"]


def test_yaml_merge_keys_and_anchors_are_allowed():
    text = """
        name: t
        segments:
          lan1: {kind: switch}
        nodes:
          h1: &host
            kind: host
            interfaces: {eth0: {segment: lan1, ip: 10.0.0.1/24}}
            routes: [default via 10.0.0.254]
          h2:
            <<: *host
            interfaces: {eth0: {segment: lan1, ip: 10.0.0.2/24}}
          gw: {kind: router, interfaces: {eth0: {segment: lan1, ip: 10.0.0.254/24}}}
    """
    topology = parse(text)
    assert [str(r) for r in topology.nodes["h2"].routes] == ["default via 10.0.0.254"]
    assert topology.nodes["h2"].interfaces["eth0"].ip == "10.0.0.2/24"


def test_segment_links_accept_both_spellings_and_make_one_broadcast_domain():
    text = """
        name: t
        segments: {a: {}, b: {kind: hub}, c: {}, d: {}}
        links:
          - [a, b]
          - {between: [b, c], delay: 1ms}
        nodes:
          h1: {kind: host, interfaces: {eth0: {segment: a, ip: 10.0.0.1/24}}}
    """
    topology = parse(text)
    assert [(l.a, l.b, l.params, l.attachment) for l in topology.links] == [
        ("a", "b", {}, "a~b"), ("b", "c", {"delay": 0.001}, "b~c")]
    domains = l2_domains(topology)
    assert domains["a"] == domains["b"] == domains["c"] != domains["d"]


def test_auto_mac_is_locally_administered_unicast_and_spells_the_address():
    mac = auto_mac(IPv4Address("192.168.1.200"))
    assert mac == "02:00:c0:a8:01:c8"
    assert int(mac[:2], 16) & 0b11 == 0b10


# --- single-key checks not in the corpus ---------------------------------------------------------

def test_unquoted_mac_is_read_as_text_not_as_a_base_60_number():
    text = LAN.replace("ip: 10.0.0.1/24}", "ip: 10.0.0.1/24, mac: 12:34:56:78:9a:bc}")
    assert parse(text).nodes["h1"].interfaces["eth0"].mac == "12:34:56:78:9a:bc"


def test_unhashable_key_is_a_syntax_problem_with_its_line():
    assert problems("name: t\n? [a, b]\n: 1\n") == ["t.yaml:2: a mapping key must be a plain value, not a mapping or list"]


def test_missing_file_is_reported_like_any_problem(tmp_path):
    missing = tmp_path / "nope.yaml"
    with pytest.raises(TopologyError) as error:
        load_topology(missing)
    assert str(error.value) == f"{missing}: cannot read the file: No such file or directory"


def test_nodes_or_generate_section_is_required():
    assert problems("name: t\n") == ["t.yaml:1: nodes: missing (required, or a generate: section)"]


def test_generated_name_must_be_a_valid_host_name():
    text = with_lan("""
        generate:
          - hosts: {count: 2, name: "H_{n}", segment: lan1, ip_pool: 10.0.0.0/24}
    """)
    assert problems(text) == [
        "t.yaml:12: generate[0].hosts.name: invalid generated name 'H_1': use lower-case letters, digits and '-', "
        "starting with a letter and not ending with '-'"]


def test_generated_hosts_need_one_of_segment_or_segments():
    text = with_lan("""
        generate:
          - hosts: {count: 2, name: "g{n}", ip_pool: 10.0.0.0/24}
    """)
    assert problems(text) == ["t.yaml:12: generate[0].hosts: give exactly one of 'segment: NAME' or 'segments: [NAME, ...]'"]


def test_generated_host_on_a_missing_segment_points_at_the_generator():
    text = with_lan("""
        generate:
          - hosts: {count: 3, name: "g{n}", segment: lan2, ip_pool: 10.0.0.0/24}
    """)
    assert problems(text) == [
        "t.yaml:12: generate[0].hosts.segment: g1.eth0 (and 2 more): no segment named 'lan2' (did you mean 'lan1'?)"]


def test_switch_tree_too_big_is_refused():
    text = with_lan("""
        generate:
          - switch_tree: {name: "s{n}", depth: 8, fanout: 64}
    """)
    assert problems(text) == ["t.yaml:12: generate[0].switch_tree: a tree of depth 8 and fanout 64 has "
                              "285942833483841 switches (limit 5000)"]


# --- generators ----------------------------------------------------------------------------------

def test_generated_100_expands_to_100_nodes_on_three_lans():
    topology = load_topology(TOPOLOGIES / "generated_100.yaml")
    assert len(topology.nodes) == 100
    assert sum(n.kind == "host" for n in topology.nodes.values()) == 99
    assert {s: len(seg.attachments) for s, seg in topology.segments.items()} == {"lan1": 34, "lan2": 34, "lan3": 34}
    h34 = topology.nodes["h34"]
    assert h34.generated and h34.interfaces["eth0"].ip == "10.2.0.2/24"  # .1 is the router's
    assert [str(r) for r in h34.routes] == ["default via 10.2.0.1"]


def test_generated_500_is_a_tree_of_switches_with_no_overfull_switch():
    topology = load_topology(TOPOLOGIES / "generated_500.yaml")
    assert len(topology.nodes) == 500
    switches = [s for s in topology.segments.values() if s.name.startswith("s") and s.name[1:].isdigit()]
    assert len(switches) == 21 and len(topology.links) == 20
    ports = {s.name: len(s.attachments) + sum(s.name in (l.a, l.b) for l in topology.links) for s in switches}
    assert max(ports.values()) <= 33
    leaves = [f"s{n}" for n in range(6, 22)]
    assert sum(ports[leaf] - 1 for leaf in leaves) == 497
    assert all(link.params == {"rate": 10_000_000_000} for link in topology.links)
    assert len(set(l2_domains(topology)[s.name] for s in switches)) == 1


def test_hosts_generator_spreads_hosts_in_blocks_and_skips_used_addresses():
    text = """
        name: t
        segments: {a: {}, b: {}}
        links: [[a, b]]
        nodes:
          r1: {kind: router, interfaces: {eth0: {segment: a, ip: 10.0.0.3/24}}}
        generate:
          - hosts: {count: 4, name: "h{n:02d}", start: 7, segments: [a, b], ip_pool: 10.0.0.0/24,
                    first: 10.0.0.2, gateway: 10.0.0.4, delay: 1ms, interface: net0,
                    routes: [10.9.0.0/16 via 10.0.0.3], sysctl: {net.ipv4.ip_default_ttl: 9}}
    """
    topology = parse(text)
    generated = [n for n in topology.nodes.values() if n.generated]
    assert [n.name for n in generated] == ["h07", "h08", "h09", "h10"]
    assert [n.interfaces["net0"].device for n in generated] == ["a", "a", "b", "b"]
    # .3 is r1's and .4 the gateway: both skipped
    assert [n.interfaces["net0"].ip for n in generated] == ["10.0.0.2/24", "10.0.0.5/24", "10.0.0.6/24", "10.0.0.7/24"]
    assert [str(r) for r in generated[0].routes] == ["default via 10.0.0.4", "10.9.0.0/16 via 10.0.0.3"]
    assert generated[0].interfaces["net0"].params == {"delay": 0.001}
    assert generated[0].sysctl == {"net.ipv4.ip_forward": 0, "net.ipv4.ip_default_ttl": 9}


# --- the YAML layer -----------------------------------------------------------------------------

def test_located_yaml_records_key_lines_and_duplicates():
    data = load_located("a: 1\nb:\n  c: [x, y]\na: 2\n")
    assert data == {"a": 2, "b": {"c": ["x", "y"]}}
    assert data.key_lines == {"a": 1, "b": 2}
    assert data.duplicates == [("a", 4, 1)]
    assert data["b"].line_of("c") == 3
    assert data["b"]["c"].item_lines == [3, 3]


def test_located_yaml_uses_yaml_1_2_numbers():
    data = load_located("a: 1:30\nb: 2024-01-01\nc: 0x10\nd: 1e3\ne: 010\nf: off\n")
    assert data == {"a": "1:30", "b": "2024-01-01", "c": 16, "d": 1000.0, "e": 10, "f": False}


def test_syntax_error_says_where_an_unclosed_bracket_opened():
    with pytest.raises(YamlSyntaxError) as error:
        load_located("a: [1, 2\nb: 3\n")
    assert error.value.line == 2
    assert "opened at line 1" in error.value.message


# --- route grammar ------------------------------------------------------------------------------

@pytest.mark.parametrize("text, expected", [
    ("default via 10.0.1.1", {"dst": "0.0.0.0/0", "gateway": "10.0.1.1", "dev": None, "metric": 0, "src": None}),
    ("10.2.0.0/16 via 10.0.1.2 dev eth1 metric 5 src 10.0.1.10",
     {"dst": "10.2.0.0/16", "gateway": "10.0.1.2", "dev": "eth1", "metric": 5, "src": "10.0.1.10"}),
    ("10.3.0.0/16 dev eth1", {"dst": "10.3.0.0/16", "gateway": None, "dev": "eth1", "metric": 0, "src": None}),
    ("10.3.0.7 via 10.0.0.1", {"dst": "10.3.0.7/32", "gateway": "10.0.0.1", "dev": None, "metric": 0, "src": None}),
])
def test_routes_parse_like_ip_route_add(text, expected):
    route, problem = parse_route(text)
    assert problem == "" and route.as_dict() == expected


@pytest.mark.parametrize("text, problem", [
    ("", "empty route"),
    ("default via 10.0.1.1 via 10.0.1.2", "'via' given twice"),
    ("default via 10.0.1", "via: '10.0.1' is not an IPv4 address"),
    ("10.0.0.0/40 dev eth0", "'10.0.0.0/40': prefix length must be 0..32"),
    ("default dev eth0 mtu 1400", "unknown word 'mtu' in route"),
])
def test_bad_routes_say_what_is_wrong(text, problem):
    route, message = parse_route(text)
    assert route is None and message == problem


def test_a_route_to_add_needs_a_next_hop_one_to_delete_does_not():
    assert parse_route("10.9.0.0/16") == (None, "a route needs 'via GATEWAY' or 'dev INTERFACE'")
    route, problem = parse_route("10.9.0.0/16", require_nexthop=False)
    assert problem == "" and route.as_dict() == {"dst": "10.9.0.0/16", "gateway": None, "dev": None, "metric": 0,
                                                 "src": None}


@pytest.mark.parametrize("text, problem", [
    ("10.9.0.0/16 via", "'via' needs a value"),
    ("10.9.0.1/16 dev eth0", "'10.9.0.1/16' has host bits set (did you mean 10.9.0.0/16?)"),
    ("default gw 10.0.1.1", "unknown word 'gw' in route (did you mean 'via'?)"),
    ("default dev eth0 metric -1", "metric '-1' is not a non-negative integer"),
])
def test_route_problems_a_cli_user_meets(text, problem):
    assert parse_route(text, require_nexthop=False) == (None, problem)
