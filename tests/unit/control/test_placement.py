"""`placement:` and `cluster:` in topology files, and the partitioner of control/placement.py."""
from __future__ import annotations

import textwrap

import pytest

from control.placement import (
    DEFAULT_NODE_MEMORY, Placement, PlacementError, RayNodeInfo, capacity_of, place, placement_problems,
)
from control.plan import build_plan
from control.topology import ClusterOptions, PlacementPin
from tests.unit.control.test_topology import parse, problems

GiB = 1 << 30

# Three LANs of eight or nine hosts behind routers on a core switch, and a p2p link: 30 nodes.
THIRTY = textwrap.dedent("""
    name: thirty
    segments:
      core: {kind: switch}
      lan1: {kind: switch}
      lan2: {kind: switch}
      lan3: {kind: hub}
    nodes:
""") + "".join(textwrap.indent(textwrap.dedent(f"""
    r{i}:
      kind: router
      interfaces:
        eth0: {{segment: lan{i}, ip: 10.{i}.0.1/24}}
        eth1: {{segment: core, ip: 10.0.0.{i}/24}}
"""), "  ") for i in (1, 2, 3)) + "".join(textwrap.indent(textwrap.dedent(f"""
    h{i}{j}:
      kind: host
      interfaces:
        eth0: {{segment: lan{i}, ip: 10.{i}.0.{10 + j}/24}}
"""), "  ") for i in (1, 2, 3) for j in range(1, 9 + (i == 3))) + textwrap.indent(textwrap.dedent("""
    s1:
      kind: host
      interfaces:
        eth0: {link: wan, ip: 10.9.0.1/30}
    s2:
      kind: host
      interfaces:
        eth0: {link: wan, ip: 10.9.0.2/30}
"""), "  ")




def cluster(count: int = 3, cpus: float = 2, memory: float | None = 8 * GiB, ip=None, **extra) -> list[RayNodeInfo]:
    nodes = []
    for index in range(count):
        resources = {"CPU": cpus, f"m{index}": 1.0, **extra.get(f"m{index}", {})}
        if memory is not None:
            resources["memory"] = memory
        nodes.append(RayNodeInfo(f"id{index}", ip or f"10.200.0.{index + 1}", resources, f"box{index}"))
    return nodes


def with_placement(text: str, placement: str) -> str:
    return text + "placement:\n" + textwrap.indent(textwrap.dedent(placement).lstrip("\n"), "  ")


# -- the YAML sections ---------------------------------------------------------------------------

def test_placement_and_cluster_sections_reach_the_model():
    topology = parse(with_placement(THIRTY, """
        h11: 10.200.0.2
        lan3: rack1
        wan: m0
    """) + "cluster: {encrypt: false}\n")
    assert topology.placement == {"h11": PlacementPin("10.200.0.2"), "lan3": PlacementPin("rack1"),
                                  "wan": PlacementPin("m0")}
    assert topology.placement["h11"].is_address and not topology.placement["lan3"].is_address
    assert topology.placement["lan3"].where.path == "placement.lan3"
    assert topology.cluster == ClusterOptions(encrypt=False)


def test_without_the_sections_there_are_no_pins_and_encryption_is_on():
    topology = parse(THIRTY)
    assert topology.placement == {} and topology.cluster.encrypt is True
    assert parse(THIRTY + "cluster:\n").cluster.encrypt is True
    assert parse(THIRTY + "placement: {}\n").placement == {}


def test_placement_problems_are_reported_at_their_lines():
    text = with_placement(THIRTY, """
        zz9: 10.200.0.2
        lan2: 10.200.0.300
        h11: 5
        h12: CPU
        h13: "rack 1"
        h14: node:10.0.0.1
    """) + "cluster:\n  encrypt: 'no'\n  encrpyt: false\n"
    lines = text.splitlines()
    first = lines.index("placement:") + 1
    assert problems(text) == [
        f"t.yaml:{first + 1}: placement.zz9: no node or segment named 'zz9'",
        f"t.yaml:{first + 2}: placement.lan2: '10.200.0.300' is not an IPv4 address",
        f"t.yaml:{first + 3}: placement.h11: expected a Ray node's IP address or the name of a custom resource it "
        "offers, got an integer 5",
        f"t.yaml:{first + 4}: placement.h12: 'CPU' is a resource every Ray node has; give a Ray node's IP address or "
        "a custom resource (ray start --resources '{\"rack1\": 1}')",
        f"t.yaml:{first + 5}: placement.h13: resource name 'rack 1' contains white space",
        f"t.yaml:{first + 6}: placement.h14: 'node:10.0.0.1' is a resource every Ray node has; give a Ray node's IP "
        "address or a custom resource (ray start --resources '{\"rack1\": 1}')",
        f"t.yaml:{first + 8}: cluster.encrypt: encrypt must be true or false, got 'no'",
        f"t.yaml:{first + 9}: cluster.encrpyt: unknown key (did you mean 'encrypt'?)",
    ]


def test_wrong_shapes_of_the_sections():
    assert problems(THIRTY + "placement: [h1]\n")[0].endswith("placement: expected a mapping, got a list")
    assert problems(THIRTY + "cluster: true\n")[0].endswith("cluster: expected a mapping, got a boolean")
    assert problems(with_placement(THIRTY, "r1x: m0\n")) == [
        f"t.yaml:{len(THIRTY.splitlines()) + 2}: placement.r1x: no node or segment named 'r1x' (did you mean 'r1'?)"]


def test_a_single_machine_plan_ignores_placement_and_cluster(tmp_path):
    plain = build_plan(parse(THIRTY), str(tmp_path))
    pinned = build_plan(parse(with_placement(THIRTY, "h11: 10.0.0.9\nlan1: rack1\n") + "cluster: {encrypt: false}\n"),
                        str(tmp_path))
    assert [(p.name, p.kind, p.config) for p in plain.processes] == [(p.name, p.kind, p.config) for p in pinned.processes]


# -- capacity ------------------------------------------------------------------------------------

def test_capacity_is_the_smaller_of_the_cpu_and_the_memory_bound():
    laptop = RayNodeInfo("a", "10.0.0.1", {"CPU": 2.0, "memory": 24 * GiB})
    assert capacity_of(laptop) == 1000                          # 2 CPUs x 500
    small = RayNodeInfo("b", "10.0.0.2", {"CPU": 8.0, "memory": 1 * GiB})
    assert capacity_of(small) == GiB // DEFAULT_NODE_MEMORY     # 204: memory bound
    assert capacity_of(RayNodeInfo("c", "10.0.0.3", {"CPU": 1.0})) == 500      # no memory figure: CPU only
    assert capacity_of(RayNodeInfo("d", "10.0.0.4", {"memory": 8 * GiB})) == 0  # no CPU: holds nothing
    assert capacity_of(laptop, node_memory=100 * (1 << 20), processes_per_cpu=1000) == 245


def test_ray_node_info_from_ray_nodes_entry():
    entry = {"NodeID": "abc", "Alive": True, "NodeManagerAddress": "10.0.0.7", "NodeManagerHostname": "box7",
             "Resources": {"CPU": 4.0, "memory": 1e9, "rack1": 1.0}}
    assert RayNodeInfo.from_ray(entry) == RayNodeInfo("abc", "10.0.0.7", {"CPU": 4.0, "memory": 1e9, "rack1": 1.0}, "box7")


def test_a_topology_larger_than_the_cluster_is_refused():
    with pytest.raises(PlacementError) as error:
        place(parse(THIRTY), cluster(3, cpus=0.02))             # 10 processes each: 30 < 35
    assert str(error.value) == ("t.yaml:1: the topology needs 35 processes (30 nodes, 5 devices); the Ray cluster has "
                                "room for 30 (10.200.0.1 (box0): 10, 10.200.0.2 (box1): 10, 10.200.0.3 (box2): 10)")


def test_a_ray_node_without_cpu_gets_nothing():
    nodes = cluster(3)
    nodes[1].resources["CPU"] = 0
    placement = place(parse(THIRTY), nodes)
    assert placement.load[1] == 0 and 1 not in placement.machine_of.values()
    assert placement.load[0] > 0 and placement.load[2] > 0


# -- the partitioner -----------------------------------------------------------------------------

def independent_load(topology, placement: Placement, machines: int) -> list[int]:
    """Processes per machine counted from machine_of alone: nodes, a device per machine of a switch, p2p at home."""
    load = [0] * machines
    for machine in placement.machine_of.values():
        load[machine] += 1
    for name, segment in topology.segments.items():
        held = [placement.machine_of[i.node] for i in segment.attachments]
        machines_of = placement.segment_machines[name]
        assert len(set(machines_of)) == len(machines_of)
        assert set(held) - {machines_of[0]} == set(machines_of[1:])      # the home, then every other machine used
        if held and name not in topology.placement:
            home = max(sorted(set(held)), key=held.count)
            assert machines_of[0] == home                       # most members; ties: lowest index
        for machine in machines_of[:1] if segment.kind == "p2p" else machines_of:
            load[machine] += 1
    return load


def test_thirty_nodes_over_three_ray_nodes_use_all_three_and_keep_the_lans_hosts_together():
    topology = parse(THIRTY)
    placement = place(topology, cluster(3))
    assert sorted(placement.machine_of) == sorted(topology.nodes) and len(topology.nodes) == 30
    assert all(load > 0 for load in placement.load)
    assert placement.load == independent_load(topology, placement, 3)
    assert max(placement.load) - min(placement.load) <= 4
    for lan in (1, 2, 3):
        assert len({placement.machine_of[h] for h in topology.nodes if h.startswith(f"h{lan}")}) == 1
    # The routers join the LANs to the core: two machine boundaries cross segments, whichever they are.
    assert len(placement.spread_segments) <= 2 and placement.cut_links <= 3
    assert placement.machine_of["s1"] == placement.machine_of["s2"]


def test_pins_by_address_and_by_resource():
    topology = parse(with_placement(THIRTY, """
        h11: 10.200.0.3
        lan2: m0
        r2: m2
    """))
    placement = place(topology, cluster(3))
    assert placement.machine_of["h11"] == 2
    assert placement.home_of("lan2") == 0
    assert all(placement.machine_of[f"h2{j}"] == 0 for j in range(1, 9))    # a pinned segment pins its members
    assert placement.machine_of["r2"] == 2                                  # ... unless they are pinned elsewhere
    assert placement.segment_machines["lan2"] == [0, 2]


def test_a_resource_offered_by_several_ray_nodes_spreads_its_pins():
    topology = parse(with_placement(THIRTY, "lan1: rack\nlan2: rack\n"))
    nodes = cluster(3, ip="127.0.0.1", m0={"rack": 1.0}, m1={"rack": 1.0})
    placement = place(topology, nodes)
    assert {placement.home_of("lan1"), placement.home_of("lan2")} == {0, 1}
    nodes_by_address = cluster(3, ip="127.0.0.1")        # all Ray nodes of ray.cluster_utils share one address
    assert placement_problems(parse(with_placement(THIRTY, "h11: 127.0.0.1\n")), nodes_by_address) == []


def test_pins_that_match_no_ray_node_are_file_line_problems():
    text = with_placement(THIRTY, """
        h11: 10.200.0.9
        lan1: rack7
    """)
    first = text.splitlines().index("placement:") + 1
    topology = parse(text)
    assert placement_problems(topology, cluster(2)) == [
        f"t.yaml:{first + 1}: placement.h11: no Ray node has address 10.200.0.9 (Ray nodes: 10.200.0.1, 10.200.0.2)",
        f"t.yaml:{first + 2}: placement.lan1: no Ray node offers the resource 'rack7' (custom resources in the cluster: "
        "m0, m1; ray start --resources '{\"rack7\": 1}')",
    ]
    with pytest.raises(PlacementError) as error:
        place(topology, cluster(2))
    assert [p.path for p in error.value.problems] == ["placement.h11", "placement.lan1"]


def test_pins_beyond_a_ray_nodes_capacity_are_reported_at_the_first_pin():
    text = with_placement(THIRTY, "lan1: m0\nlan2: m0\n")
    first = text.splitlines().index("placement:") + 1
    nodes = cluster(3, cpus=0.03)                              # 15 processes each
    assert placement_problems(parse(text), nodes) == [
        f"t.yaml:{first + 1}: placement.lan1: pins put 20 processes (lan1, lan2) on Ray node 10.200.0.1 (box0), "
        "which has room for 15"]


def test_the_same_inputs_give_the_same_placement():
    first = place(parse(THIRTY), cluster(3))
    again = place(parse(THIRTY), cluster(3))
    assert first == again


def test_devices_on_a_machine_are_named_after_their_segment_and_the_machine():
    placement = place(parse(THIRTY), cluster(3))
    names = [name for machine in range(3) for name, _ in placement.devices_on(machine)]
    assert sorted(n for n in names if "." not in n) == ["core", "lan1", "lan2", "lan3", "wan"]
    extra = sorted(n for n in names if "." in n)
    assert extra == sorted(f"{s}.{m}" for s in placement.spread_segments for m in placement.segment_machines[s][1:])
    assert extra and "wan" not in placement.spread_segments


def test_member_less_segments_and_segment_links_get_a_home_beside_their_neighbours():
    topology = parse(THIRTY.replace("  lan3: {kind: hub}\n", "  lan3: {kind: hub}\n  spine: {kind: switch}\n")
                     + "links:\n  - [spine, lan1]\n")
    placement = place(topology, cluster(3))
    assert placement.segment_machines["spine"] == [placement.home_of("lan1")]


def test_one_ray_node_holds_everything():
    topology = parse(THIRTY)
    placement = place(topology, cluster(1))
    assert set(placement.machine_of.values()) == {0} and placement.cut_links == 0
    assert placement.load == [35] and placement.spread_segments == []
