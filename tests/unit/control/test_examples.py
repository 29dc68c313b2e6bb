"""Every example topology loads cleanly and every node reaches every host, both ways."""
from __future__ import annotations

from pathlib import Path

import pytest

from control.plan import build_plan
from control.topology import load_topology
from nodes.wire.addresses import IPv4Address

from .routesim import RouteSimulator, unreachable_pairs

TOPOLOGIES = Path(__file__).parents[3] / "topologies"
EXAMPLES = sorted(TOPOLOGIES.glob("*.yaml"))

EXPECTED_COUNTS = {  # file: (nodes, hosts, routers, switches, hubs, p2p links)
    "two_lans.yaml": (3, 2, 1, 1, 1, 0),
    "single_lan.yaml": (4, 4, 0, 1, 0, 0),
    "router_chain.yaml": (5, 2, 3, 2, 0, 2),
    "lossy_wan.yaml": (6, 4, 2, 2, 0, 1),
    "campus.yaml": (13, 10, 3, 2, 0, 2),
    "generated_100.yaml": (100, 99, 1, 3, 0, 0),
    "generated_500.yaml": (500, 499, 1, 22, 0, 0),
    "racks.yaml": (30, 27, 3, 4, 0, 1),
}


def test_two_lans_is_the_network_the_readme_describes():
    # README: the default topology; its YAML under "Topologies"; the 14 ms round trip h1 -> h2.
    topology = load_topology(TOPOLOGIES / "two_lans.yaml")
    assert topology.name == "two-lans"
    assert {name: (s.kind, s.params) for name, s in topology.segments.items()} == {
        "lan1": ("switch", {}), "lan2": ("hub", {"delay": 0.002})}
    nodes = topology.nodes
    assert {name: node.kind for name, node in nodes.items()} == {"h1": "host", "r1": "router", "h2": "host"}
    wiring = {i.attachment: (i.device, i.ip, i.mtu) for node in nodes.values() for i in node.interfaces.values()}
    assert wiring == {"h1:eth0": ("lan1", "10.0.1.10/24", 1500), "r1:eth0": ("lan1", "10.0.1.1/24", 1500),
                      "r1:eth1": ("lan2", "10.0.2.1/24", 1500), "h2:eth0": ("lan2", "10.0.2.10/24", 1500)}
    assert nodes["r1"].interfaces["eth1"].params == {"rate": 100_000_000, "delay": 0.005}
    assert [str(r) for r in nodes["h1"].routes] == ["default via 10.0.1.1"]
    assert [str(r) for r in nodes["h2"].routes] == ["default via 10.0.2.1"]
    assert nodes["r1"].ip_forward and not nodes["h1"].ip_forward and not nodes["h2"].ip_forward
    # h1 reaches h2 through r1, and the shaping met on the way is 5 ms (r1's port) + 2 ms
    # (h2's port on lan2) each way: the README's 14 ms of round trip.
    walk = RouteSimulator(topology).walk("h1", int(IPv4Address(topology.hosts["h2"])))
    assert walk.ok and walk.hops == ("r1", "h2")
    one_way = nodes["r1"].interfaces["eth1"].params["delay"] + topology.segments["lan2"].params["delay"]
    assert 2 * one_way == pytest.approx(0.014)


def test_every_example_is_listed_here():
    assert sorted(p.name for p in EXAMPLES) == sorted(EXPECTED_COUNTS)


@pytest.mark.parametrize("path", EXAMPLES, ids=[p.stem for p in EXAMPLES])
def test_example_loads_with_the_expected_shape(path: Path):
    topology = load_topology(path)
    nodes = list(topology.nodes.values())
    kinds = [s.kind for s in topology.segments.values()]
    shape = (len(nodes), sum(n.kind == "host" for n in nodes), sum(n.kind == "router" for n in nodes),
             kinds.count("switch"), kinds.count("hub"), kinds.count("p2p"))
    assert shape == EXPECTED_COUNTS[path.name]
    build_plan(topology, "/tmp/netemu-1000/example")


@pytest.mark.parametrize("path", EXAMPLES, ids=[p.stem for p in EXAMPLES])
def test_every_node_reaches_every_host_and_gets_the_reply(path: Path):
    assert unreachable_pairs(load_topology(path)) == []


@pytest.mark.parametrize("name", ["router_chain.yaml", "campus.yaml", "lossy_wan.yaml", "two_lans.yaml"])
def test_every_node_reaches_every_interface_address(name: str):
    # Traceroute's replies come from router interfaces: those must be reachable too.
    topology = load_topology(TOPOLOGIES / name)
    addresses = [int(i.address) for i in topology.interfaces()]
    assert unreachable_pairs(topology, destinations=addresses) == []


def test_traceroute_through_the_router_chain_shows_each_router():
    topology = load_topology(TOPOLOGIES / "router_chain.yaml")
    simulator = RouteSimulator(topology)
    walk = simulator.walk("h1", int(IPv4Address(topology.hosts["h2"])))
    assert walk.ok and walk.hops == ("r1", "r2", "r3", "h2")
    back = simulator.walk("h2", walk.source)
    assert back.ok and back.hops == ("r3", "r2", "r1", "h1")
