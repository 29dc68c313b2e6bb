"""Every example topology, started for real: pingall, traceroute, the lossy WAN's loss rate.

`generated_500` is only loaded and planned here (the benchmark starts it).
"""
from __future__ import annotations

import pytest

from control.emulation import Emulation
from control.plan import build_plan
from control.topology import load_topology

from .helpers import lossy_pairs, topology

SMALL_EXAMPLES = ["single_lan", "two_lans", "router_chain", "campus"]


@pytest.mark.timeout(60)
@pytest.mark.parametrize("example", SMALL_EXAMPLES)
def test_pingall_is_loss_free(example):
    with Emulation(topology(example), name=f"scn-topo-{example.replace('_', '-')}") as net:
        results = net.pingall(count=2)
        hosts = net.hosts
        assert len(results) == len(hosts) * (len(hosts) - 1)
        assert lossy_pairs(results) == {}


@pytest.mark.timeout(120)
def test_pingall_on_generated_100_is_loss_free():
    with Emulation(topology("generated_100"), name="scn-topo-gen100") as net:
        assert len(net.hosts) == 99
        results = net.pingall()
        assert len(results) == 99 * 98
        assert lossy_pairs(results) == {}


@pytest.mark.timeout(60)
def test_traceroute_across_router_chain_shows_one_hop_per_router():
    with Emulation(topology("router_chain"), name="scn-topo-trace") as net:
        hops = net["h1"].traceroute("h2", wait=1.0)
        assert [hop.address for hop in hops] == ["10.0.1.1", "10.255.0.2", "10.255.0.6", "10.0.2.10"]
        assert [hop.hop for hop in hops] == [1, 2, 3, 4]
        assert all(any(rtt is not None for rtt in hop.rtts) for hop in hops)
        back = net["h2"].traceroute("h1", wait=1.0)
        assert [hop.address for hop in back] == ["10.0.2.1", "10.255.0.5", "10.255.0.1", "10.0.1.10"]


@pytest.mark.timeout(60)
def test_lossy_wan_answers_every_pair_with_a_plausible_loss_rate():
    with Emulation(topology("lossy_wan"), name="scn-topo-wan", seed=7) as net:
        results = net.pingall(count=5, timeout=1.0)
        site = {name: name[0] for name in net.hosts}
        assert [pair for pair, r in results.items() if isinstance(r, Exception) or r.received == 0] == []
        # Inside a site nothing is lost; only the WAN drops.
        assert [pair for pair, r in results.items() if site[pair[0]] == site[pair[1]] and r.received != r.sent] == []
        across = [r for pair, r in results.items() if site[pair[0]] != site[pair[1]]]
        assert min(min(r.rtts) for r in across) >= 100.0  # 50 ms each way

        long_run = net["a1"].ping("b1", count=200, interval=0.005, timeout=1.0)
        sent = long_run.sent + sum(r.sent for r in across)
        lost = sent - long_run.received - sum(r.received for r in across)
        # An echo crosses the WAN twice: 1 - 0.98**2 = 3.96% of 240 is 9.5 +- 3.0.
        assert sent == 240
        assert 1 <= lost <= 24, f"{lost} of {sent} echoes lost"

        wan = net.link("ra", "eth1").stats()
        dropped = wan["ingress"]["dropped_loss"] + wan["egress"]["dropped_loss"]
        carried = wan["ingress"]["tx_packets"] + wan["egress"]["tx_packets"]
        assert 0.002 <= dropped / (dropped + carried) <= 0.06, wan


@pytest.mark.timeout(60)
def test_generated_500_loads_and_plans_without_starting():
    model = load_topology(topology("generated_500"))
    plan = build_plan(model, "/tmp/netemu-0/generated-500", seed=1)
    assert len(plan.nodes) == 500
    assert len(plan.devices) == 22
    controls = [process.control for process in plan.processes]
    assert len(set(controls)) == len(controls)
    hosts = [process for process in plan.nodes if process.kind == "host"]
    assert len(hosts) == 499
    assert all(process.config["routes"] for process in hosts)
    tree = {name: segment for name, segment in model.segments.items() if name != "servers"}
    assert sum(len(segment.attachments) for segment in tree.values()) == 497 + 1  # the hosts and r1
    assert max(len(segment.attachments) for segment in tree.values()) <= 32
