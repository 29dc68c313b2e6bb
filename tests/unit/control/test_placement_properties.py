"""Properties of the partitioner (control/placement.py) over random topologies and random Ray clusters."""
from __future__ import annotations

from dataclasses import dataclass

from hypothesis import assume, given, settings
from hypothesis import strategies as st

from control.placement import PlacementError, RayNodeInfo, capacity_of, place
from control.topology import PlacementPin, parse_topology

GiB = 1 << 30


@dataclass
class Shape:
    """A random topology: switch segments with hosts, routers between segments, p2p edge pairs, links."""

    hosts: list[int]                      # hosts per segment
    routers: list[tuple[int, int]]        # a router on two segments
    edges: list[tuple[int, int]]          # two edge routers, one on each segment, joined by a p2p link
    links: list[int | None]               # segment i (> 0) linked to segment links[i] (< i), or not
    lonely: int                           # segments no node attaches to, linked to segment 0
    pairs: int                            # host pairs joined only by a p2p link

    def yaml(self) -> str:
        lines = ["name: random", "segments:"]
        count = len(self.hosts)
        lines += [f"  s{i}: {{kind: {'hub' if i % 3 == 2 else 'switch'}}}" for i in range(count + self.lonely)]
        lines.append("nodes:")
        used = [1] * count

        def nic(segment: int) -> str:
            used[segment] += 1
            return f"{{segment: s{segment}, ip: 10.{segment}.{used[segment] // 250}.{used[segment] % 250 + 1}/16}}"

        for i, hosts in enumerate(self.hosts):
            for j in range(hosts):
                lines += [f"  h{i}x{j}:", "    kind: host", "    interfaces:", f"      eth0: {nic(i)}"]
        for r, (a, b) in enumerate(self.routers):
            lines += [f"  r{r}:", "    kind: router", "    interfaces:", f"      eth0: {nic(a)}", f"      eth1: {nic(b)}"]
        for e, (a, b) in enumerate(self.edges):
            for side, segment in ((1, a), (2, b)):
                lines += [f"  e{e}y{side}:", "    kind: router", "    interfaces:", f"      eth0: {nic(segment)}",
                          f"      eth1: {{link: w{e}, ip: 172.16.{e}.{side}/30}}"]
        for p in range(self.pairs):
            for side in (1, 2):
                lines += [f"  p{p}y{side}:", "    kind: host", "    interfaces:",
                          f"      eth0: {{link: q{p}, ip: 172.17.{p}.{side}/30}}"]
        pairs = [(i, j) for i, j in enumerate(self.links) if j is not None and i > 0]
        pairs += [(count + i, 0) for i in range(self.lonely)]
        if pairs:
            lines.append("links:")
            lines += [f"  - [s{i}, s{j}]" for i, j in pairs]
        return "\n".join(lines) + "\n"


@st.composite
def shapes(draw, routers: bool = True, max_segments: int = 9, max_hosts: int = 7) -> Shape:
    count = draw(st.integers(1, max_segments))
    segment = st.integers(0, count - 1)
    two = st.tuples(segment, segment).filter(lambda p: p[0] != p[1]) if count > 1 else st.nothing()
    return Shape(
        hosts=draw(st.lists(st.integers(0, max_hosts), min_size=count, max_size=count)),
        routers=draw(st.lists(two, max_size=4)) if routers and count > 1 else [],
        edges=draw(st.lists(two, max_size=4)) if count > 1 else [],
        links=[None] + [draw(st.one_of(st.none(), st.integers(0, i - 1))) for i in range(1, count)],
        lonely=draw(st.integers(0, 2)),
        pairs=draw(st.integers(0, 2)),
    )


def ray_nodes(cpus: list[float], **resources) -> list[RayNodeInfo]:
    return [RayNodeInfo(f"id{i}", f"10.250.0.{i + 1}", {"CPU": cpu, "memory": 64 * GiB, f"m{i}": 1.0})
            for i, cpu in enumerate(cpus)]


def cut_of(topology, machine_of: dict[str, int], home_of) -> tuple[int, int]:
    """(segments spread: sum of their machines - 1, all cuts: that plus p2p links and links: across machines)."""
    spread = cut = 0
    for name, segment in topology.segments.items():
        machines = {machine_of[i.node] for i in segment.attachments} | {home_of(name)}
        if segment.kind == "p2p":
            cut += len(machines) - 1
        else:
            spread += len(machines) - 1
    return spread, spread + cut + sum(home_of(link.a) != home_of(link.b) for link in topology.links)


def round_robin(topology, k: int) -> tuple[tuple[int, int], list[int]]:
    """Node i on machine i % k (topology order): its (spread, cut) and its load per machine."""
    machine_of = {name: index % k for index, name in enumerate(topology.nodes)}

    def home_of(segment: str) -> int:
        held = [machine_of[i.node] for i in topology.segments[segment].attachments]
        return max(sorted(set(held)), key=held.count) if held else 0
    load = [0] * k
    for machine in machine_of.values():
        load[machine] += 1
    for name, segment in topology.segments.items():
        machines = {machine_of[i.node] for i in segment.attachments} | {home_of(name)}
        for machine in {home_of(name)} if segment.kind == "p2p" else machines:
            load[machine] += 1
    return cut_of(topology, machine_of, home_of), load


def atoms(topology) -> dict[str, int]:
    """Groups that share a machine unless a switch or hub spreads: nodes joined through them, and member-less
    segments with their linked neighbours (at most: a chain of them may merge two groups here)."""
    parent = {name: name for name in [*topology.nodes, *topology.segments]}

    def find(name: str) -> str:
        while parent[name] != name:
            name = parent[name]
        return name
    for name, segment in topology.segments.items():
        for interface in segment.attachments:
            if segment.kind != "p2p":
                parent[find(interface.node)] = find(name)
    for link in topology.links:         # a segment no node attaches to sits with its linked neighbour
        if not topology.segments[link.a].attachments or not topology.segments[link.b].attachments:
            parent[find(link.a)] = find(link.b)
    groups = [find(n) for n, s in topology.segments.items() if s.kind != "p2p"] + [find(n) for n in topology.nodes]
    return {group: groups.count(group) for group in groups}


def processes(topology) -> int:
    return len(topology.nodes) + len(topology.segments)


clusters = st.lists(st.sampled_from([0.5, 1.0, 2.0, 4.0]), min_size=1, max_size=5)


@settings(max_examples=300, deadline=None)
@given(shapes(), clusters, st.sampled_from([0.9, 1.0, 1.3, 2.0, 10.0]), st.data())
def test_every_node_placed_pins_kept_capacity_respected_and_deterministic(shape, cpus, room, data):
    topology = parse_topology(shape.yaml(), "r.yaml")
    k = len(cpus)
    per_cpu = max(1.0, room * processes(topology) / sum(cpus))
    names = sorted([*topology.nodes, *topology.segments])
    pins = data.draw(st.dictionaries(st.sampled_from(names), st.integers(0, k - 1), max_size=3))
    for name, machine in pins.items():
        target = f"m{machine}" if data.draw(st.booleans()) else f"10.250.0.{machine + 1}"
        topology.placement[name] = PlacementPin(target)
    nodes = ray_nodes(cpus)
    capacity = [capacity_of(n, processes_per_cpu=per_cpu) for n in nodes]
    try:
        placement = place(topology, nodes, processes_per_cpu=per_cpu)
    except PlacementError as error:
        assert error.problems and all(str(p).startswith("r.yaml:") for p in error.problems)
        # Refused only when it cannot fit: too little room in all, under pins, or for the devices of spread segments.
        spare = sum(capacity) - processes(topology)
        assert pins or spare < (k - 1) * len(topology.segments)
        return
    assert sorted(placement.machine_of) == sorted(topology.nodes)
    assert all(0 <= m < k for m in placement.machine_of.values())
    assert set(placement.segment_machines) == set(topology.segments)
    claimed = {name: machine for name, machine in pins.items() if name in topology.nodes}
    for name, machine in pins.items():
        if name in topology.segments:          # pins its members, unless pinned already (node pins first)
            assert placement.segment_machines[name][0] == machine
            for interface in topology.segments[name].attachments:
                claimed.setdefault(interface.node, machine)
    for name, machine in claimed.items():
        assert placement.machine_of[name] == machine
    assert all(load <= room for load, room in zip(placement.load, capacity))
    assert placement.capacity == capacity
    spread, cut = cut_of(topology, placement.machine_of, placement.home_of)
    assert placement.cut_links == cut
    assert spread == sum(len(placement.segment_machines[s]) - 1 for s in placement.spread_segments)
    assert place(topology, nodes, processes_per_cpu=per_cpu) == placement


def atoms_weight(shape: Shape) -> int:
    """Processes of the largest group that must share a machine for no segment to spread (no routers)."""
    weights = [1 + hosts for hosts in shape.hosts]
    for a, b in shape.edges:
        weights[a] += 2          # the edge router and, at worst, the p2p device
        weights[b] += 2
    return max(weights + [3])


@st.composite
def many_small_segments(draw) -> tuple[Shape, int]:
    k = draw(st.integers(1, 4))
    count = draw(st.integers(6 * k, 40))
    segment = st.integers(0, count - 1)
    return Shape(hosts=draw(st.lists(st.integers(0, 3), min_size=count, max_size=count)), routers=[],
                 edges=draw(st.lists(st.tuples(segment, segment).filter(lambda p: p[0] != p[1]), max_size=4)),
                 links=[None] + [draw(st.one_of(st.none(), st.integers(0, i - 1))) for i in range(1, count)],
                 lonely=draw(st.integers(0, 2)), pairs=draw(st.integers(0, 2))), k


@settings(max_examples=300, deadline=None)
@given(many_small_segments())
def test_segments_stay_whole_when_balance_allows(case):
    shape, k = case
    topology = parse_topology(shape.yaml(), "r.yaml")
    share = processes(topology) / k
    placement = place(topology, ray_nodes([2.0] * k))
    assert placement.spread_segments == [], (placement.load, share, atoms_weight(shape))
    assert all(load > 0 for load in placement.load)


@settings(max_examples=300, deadline=None)
@given(shapes(), st.integers(1, 5))
def test_all_machines_used_with_as_many_segments_and_balanced_capacity(shape, k):
    topology = parse_topology(shape.yaml(), "r.yaml")
    groups = atoms(topology)
    assume(len(groups) >= k)
    placement = place(topology, ray_nodes([2.0] * k))
    assert all(load > 0 for load in placement.load), placement.load
    # Balanced within 20 % (+1) or the largest group, give or take a node's own devices.
    bound = max(processes(topology) / k * 1.2 + 1, max(groups.values()))
    bound += max([len(n.interfaces) for n in topology.nodes.values()] + [0])
    assert max(placement.load) <= bound, (placement.load, bound)


@settings(max_examples=300, deadline=None)
@given(shapes(), st.integers(1, 5))
def test_cuts_no_worse_than_round_robin(shape, k):
    topology = parse_topology(shape.yaml(), "r.yaml")
    assume(len(topology.nodes) >= 2 * k)
    baseline, load = round_robin(topology, k)
    share = processes(topology) / k
    assume(max(load) <= share * 1.2 + 1 and min(load) >= share * 0.8 - 1)    # balanced as placement wants it
    placement = place(topology, ray_nodes([2.0] * k))
    # In the partitioner's order of concerns: segments spread first, then every cut link.
    assert cut_of(topology, placement.machine_of, placement.home_of) <= baseline
