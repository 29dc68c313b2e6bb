"""Placement: which Ray node runs each emulated node and segment device (pure; never imports ray).

Before changing this file, read docs/cluster.md "Placement and the partitioner"
(what counts, the priorities, the algorithm) and docs/topology.md (the
`placement:` section). A segment spread over machines becomes one device per
machine joined by trunks, a point-to-point link is one device on its home
machine, `links:` join the segments' home devices.

Priorities: pins > capacity > balance > whole segments > few cut links > few
remote ports. The algorithm:

1. Capacity: each Ray node holds min(CPU * `processes_per_cpu`,
   memory / `node_memory`) emulated processes (a node kernel or a device),
   from Ray's resource dict ("CPU", "memory" in bytes).
2. Pins (`placement:`): an IP names the Ray nodes with that address, a
   resource name those offering it; among several, the one with the lowest
   pinned load per capacity. A pinned segment pins its members not pinned
   themselves (node pins first, then segments in `placement:` order).
3. Atoms: nodes and switch/hub segments joined by interfaces (a component
   of that bipartite graph; point-to-point links and `links:` join atoms
   but do not merge them). Every process is laid out in one sequence,
   depth-first over the atom graph, depth-first inside each atom (a device,
   its single-homed members, then routers towards further segments).
4. Balanced cut: machine i gets a share of the unpinned processes
   proportional to its capacity. The k-1 cut points of the sequence are
   chosen near the ideal boundaries (within `imbalance` of the share), at the
   cheapest place: fewest segments spread, then fewest links cut, then fewest
   members away from their segment's home.
5. Refinement: moves of whole atoms, of a spread segment's members on one
   machine, then of single nodes, accepted only when they strictly improve
   (over capacity, out of balance, segments spread, links cut, remote
   members), compared in that order; until no move helps.

A segment no node attaches to sits with its nearest linked segment.
Deterministic: no randomness, everything iterated in topology order.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Iterable

from .topology_model import Problem, Topology, Where

MiB = 1 << 20
DEFAULT_NODE_MEMORY = 5 * MiB        # one node kernel or device process: ~4-5 MiB resident (issue 16)
DEFAULT_PROCESSES_PER_CPU = 500      # a share of a core each: a 2-CPU laptop holds 1,000 processes
DEFAULT_IMBALANCE = 0.2              # a machine's load may differ from its share by 20 % (+1)
MAX_PASSES = 30


@dataclass
class RayNodeInfo:
    """One Ray node as `ray.nodes()` reports it."""

    node_id: str
    ip: str
    resources: dict[str, float]      # Ray's resource dict: "CPU", "memory" (bytes), custom ones
    hostname: str = ""

    @classmethod
    def from_ray(cls, entry: dict[str, Any]) -> "RayNodeInfo":
        """From one entry of `ray.nodes()` (keys NodeID, NodeManagerAddress, Resources, NodeManagerHostname)."""
        return cls(str(entry["NodeID"]), str(entry["NodeManagerAddress"]), dict(entry.get("Resources") or {}),
                   str(entry.get("NodeManagerHostname") or ""))

    @property
    def label(self) -> str:
        return f"{self.ip} ({self.hostname})" if self.hostname and self.hostname != self.ip else self.ip


def capacity_of(node: RayNodeInfo, node_memory: int = DEFAULT_NODE_MEMORY,
                processes_per_cpu: float = DEFAULT_PROCESSES_PER_CPU) -> int:
    """Emulated processes a Ray node holds: min of the CPU and the memory bound (no "memory": CPU only)."""
    by_cpu = math.floor(float(node.resources.get("CPU", 0)) * processes_per_cpu + 1e-9)
    memory = node.resources.get("memory")
    by_memory = by_cpu if memory is None else math.floor(float(memory) / node_memory)
    return max(0, min(by_cpu, by_memory))


class PlacementError(ValueError):
    """The topology cannot be placed on these Ray nodes; `problems` as topology problems (FILE:LINE)."""

    def __init__(self, problems: list[Problem]) -> None:
        super().__init__("\n".join(str(p) for p in problems))
        self.problems = problems


@dataclass
class Placement:
    """Where everything runs: indexes into the `nodes` list given to `place`."""

    machine_of: dict[str, int]                       # every topology node -> Ray node index
    segment_machines: dict[str, list[int]]           # every segment -> its machines, home first
    cut_links: int                                   # sum of (machines - 1) of segments + cut p2p and links:
    load: list[int] = field(default_factory=list)    # processes (node kernels + devices) per Ray node
    capacity: list[int] = field(default_factory=list)
    spread_segments: list[str] = field(default_factory=list)   # switches/hubs on several machines
    remote_ports: int = 0                            # attachments not on their segment's home machine
    p2p_links: frozenset[str] = frozenset()          # segments that are point-to-point links (one device)

    def home_of(self, segment: str) -> int:
        return self.segment_machines[segment][0]

    def nodes_on(self, machine: int) -> list[str]:
        return [name for name, where in self.machine_of.items() if where == machine]

    def devices_on(self, machine: int) -> list[tuple[str, str]]:
        """(process name, segment) of the devices on `machine`: the home keeps the name, others `seg.<index>`."""
        result = []
        for segment, machines in self.segment_machines.items():
            if machines[0] == machine:
                result.append((segment, segment))
            elif machine in machines and segment not in self.p2p_links:
                result.append((f"{segment}.{machine}", segment))
        return result


def place(topology: Topology, nodes: list[RayNodeInfo], *, node_memory: int = DEFAULT_NODE_MEMORY,
          processes_per_cpu: float = DEFAULT_PROCESSES_PER_CPU, imbalance: float = DEFAULT_IMBALANCE) -> Placement:
    """Place every node and segment device of `topology` on `nodes`; `PlacementError` when it cannot."""
    capacity = [capacity_of(n, node_memory, processes_per_cpu) for n in nodes]
    state = _State(topology, len(nodes), capacity)
    problems = _resolve_pins(state, topology, nodes)
    where = Where(1, "")
    if not nodes:
        problems.append(Problem(topology.source, 1, "", "the Ray cluster has no node"))
    elif state.total > sum(capacity):
        problems.append(Problem(topology.source, where.line, "", f"the topology needs {state.total} processes "
                                f"({len(topology.nodes)} nodes, {len(topology.segments)} devices); the Ray cluster "
                                f"has room for {sum(capacity)} ({_rooms(nodes, capacity)})"))
    if problems:
        raise PlacementError(problems)
    state.set_bounds(imbalance)
    _initial_cut(state, imbalance)
    state.refine()
    load = list(state.load)
    over = [i for i in range(len(nodes)) if load[i] > capacity[i]]
    if over:
        raise PlacementError([Problem(topology.source, 1, "", "cannot place the topology within capacity: " + "; ".join(
            f"{nodes[i].label} would hold {load[i]} processes, room for {capacity[i]}" for i in over))])
    return state.result(load)


def placement_problems(topology: Topology, nodes: list[RayNodeInfo], **options: Any) -> list[str]:
    """`netemu check --cluster`: pins to no Ray node, capacity exceeded; "FILE:LINE: placement.h1: ..." lines."""
    try:
        place(topology, nodes, **options)
    except PlacementError as error:
        return [str(p) for p in error.problems]
    return []


def _rooms(nodes: list[RayNodeInfo], capacity: list[int]) -> str:
    return ", ".join(f"{n.label}: {c}" for n, c in zip(nodes, capacity))


def _resolve_pins(state: "_State", topology: Topology, nodes: list[RayNodeInfo]) -> list[Problem]:
    """Fix pinned nodes and segment homes to one Ray node each; problems for targets no Ray node matches."""
    problems: list[Problem] = []
    pinned_load = [0] * len(nodes)
    firsts: dict[int, list[str]] = {}
    pins = topology.placement
    order = [n for n in pins if n in topology.nodes] + [s for s in pins if s in topology.segments]
    for name in order:
        pin = pins[name]
        if pin.is_address:
            allowed = [i for i, n in enumerate(nodes) if n.ip == pin.target]
            if not allowed:
                known = ", ".join(sorted({n.ip for n in nodes})) or "none"
                problems.append(_problem(topology, pin.where, f"no Ray node has address {pin.target} (Ray nodes: {known})"))
                continue
        else:
            allowed = [i for i, n in enumerate(nodes) if float(n.resources.get(pin.target, 0)) > 0]
            if not allowed:
                custom = sorted({r for n in nodes for r in n.resources if not _builtin_resource(r)})
                problems.append(_problem(topology, pin.where, f"no Ray node offers the resource {pin.target!r} "
                                         f"(custom resources in the cluster: {', '.join(custom) or 'none'}; "
                                         f"ray start --resources '{{\"{pin.target}\": 1}}')"))
                continue
        if name in topology.nodes:
            members = [name]
        else:
            members = [n for n in state.members_of(name) if n not in state.pinned]
        machine = min(allowed, key=lambda i: (pinned_load[i] / max(state.capacity[i], 1e-9), i))
        for member in members:
            state.pinned[member] = machine
        if name in topology.segments:
            state.pinned_home[name] = machine
        pinned_load[machine] += len(members) + (name in topology.segments)
        firsts.setdefault(machine, []).append(name)
    if problems:
        return sorted(problems, key=lambda p: p.line or 0)
    state.pinned_load = pinned_load
    for machine, load in enumerate(pinned_load):
        if load > state.capacity[machine]:
            names = firsts[machine]
            shown = ", ".join(names[:5]) + (f" and {len(names) - 5} more" if len(names) > 5 else "")
            problems.append(_problem(topology, pins[names[0]].where, f"pins put {load} processes ({shown}) on Ray node "
                                     f"{nodes[machine].label}, which has room for {state.capacity[machine]}"))
    return sorted(problems, key=lambda p: p.line or 0)


def _builtin_resource(name: str) -> bool:
    return name in ("CPU", "GPU", "memory", "object_store_memory") or name.startswith("node:") or \
        name.startswith("accelerator_type:")


def _problem(topology: Topology, where: Where, message: str) -> Problem:
    return Problem(topology.source, where.line, where.path, message)



Item = tuple[str, str]   # ("n", node name) or ("d", segment name): one emulated process of the sequence


class _State:
    """The partitioner's working state: counts of attachments per segment and machine, loads, totals."""

    def __init__(self, topology: Topology, k: int, capacity: list[int]) -> None:
        self.k, self.capacity = k, capacity
        self.topology = topology
        self.node_names = list(topology.nodes)
        self.segments = list(topology.segments)
        self.p2p = frozenset(s for s, seg in topology.segments.items() if seg.kind == "p2p")
        self.node_devices = {n: [i.device for i in node.interfaces.values() if i.device in topology.segments]
                             for n, node in topology.nodes.items()}
        self.members: dict[str, list[str]] = {s: [] for s in self.segments}
        for node, devices in self.node_devices.items():
            for device in dict.fromkeys(devices):
                self.members[device].append(node)
        self.links = [(l.a, l.b) for l in topology.links if l.a in self.members and l.b in self.members]
        self.seg_links: dict[str, list[int]] = {s: [] for s in self.segments}
        for index, (a, b) in enumerate(self.links):
            self.seg_links[a].append(index)
            self.seg_links[b].append(index)
        self.count = {s: [0] * k for s in self.segments}
        self.pinned: dict[str, int] = {}
        self.pinned_home: dict[str, int] = {}
        self.pinned_load = [0] * k
        self.machine: dict[str, int] = {}
        self.empty_home: dict[str, int] = {}
        self.follows: dict[str, str] = {}          # member-less segment -> the segment whose home it takes
        self.followers: dict[str, list[str]] = {}
        self.total = len(self.node_names) + len(self.segments)
        self.load = [0] * k
        self.hi = list(capacity)
        self.lo = [0] * k
        self.spread = self.cut = self.remote = 0

    def members_of(self, segment: str) -> list[str]:
        return self.members[segment]

    def set_bounds(self, imbalance: float) -> None:
        """Balance bounds: each machine's share of all processes, proportional to capacity, +-imbalance (+1)."""
        room = sum(self.capacity)
        self.share = [self.total * c / room for c in self.capacity]
        self.hi = [min(c, math.floor(t * (1 + imbalance)) + 1) for c, t in zip(self.capacity, self.share)]
        self.lo = [max(1 if t >= 1 else 0, math.ceil(t * (1 - imbalance)) - 1) for t in self.share]

    # -- one segment's measures ----------------------------------------------------------------
    def anchor_empty_segments(self) -> None:
        """A segment no node attaches to sits with the nearest segment (over `links:`) that has members or a pin."""
        anchored = [s for s in self.segments if self.members[s] or s in self.pinned_home]
        queue = [(s, s) for s in anchored]
        reached = set(anchored)
        for segment, anchor in queue:                 # breadth first, in topology order
            for index in self.seg_links[segment]:
                for other in self.links[index]:
                    if other not in reached:
                        reached.add(other)
                        self.follows[other] = anchor
                        self.followers.setdefault(anchor, []).append(other)
                        queue.append((other, anchor))

    def home(self, segment: str) -> int:
        if segment in self.pinned_home:
            return self.pinned_home[segment]
        if segment in self.follows:
            return self.home(self.follows[segment])
        counts = self.count[segment]
        if not any(counts):
            return self.empty_home.get(segment, 0)
        return max(range(self.k), key=lambda m: (counts[m], -m))

    def machines(self, segment: str) -> list[int]:
        home, counts = self.home(segment), self.count[segment]
        return [home] + [m for m in range(self.k) if counts[m] and m != home]

    def _measure(self, segments: Iterable[str], links: Iterable[int]) -> tuple[int, int, int, list[int]]:
        spread = cut = remote = 0
        load = [0] * self.k
        for segment in segments:
            machines = self.machines(segment)
            counts = self.count[segment]
            remote += sum(counts) - counts[machines[0]]
            if segment in self.p2p:
                cut += len(machines) - 1
                load[machines[0]] += 1
            else:
                spread += len(machines) - 1
                for m in machines:
                    load[m] += 1
        for index in links:
            a, b = self.links[index]
            cut += self.home(a) != self.home(b)
        return spread, cut, remote, load

    def objective(self) -> tuple[int, int, int, int, int]:
        over = sum(max(0, l - c) for l, c in zip(self.load, self.capacity))
        off = sum(max(0, l - h) + max(0, lo - l) for l, h, lo in zip(self.load, self.hi, self.lo))
        return over, off, self.spread, self.cut, self.remote

    def recompute(self) -> None:
        """Counts, loads and totals from `machine` and `empty_home`."""
        self.count = {s: [0] * self.k for s in self.segments}
        self.load = [0] * self.k
        for node, machine in self.machine.items():
            self.load[machine] += 1
            for device in self.node_devices[node]:
                self.count[device][machine] += 1
        self.spread, self.cut, self.remote, devices = self._measure(self.segments, range(len(self.links)))
        self.load = [a + b for a, b in zip(self.load, devices)]

    # -- moves -----------------------------------------------------------------------------------
    def _apply(self, nodes: list[str], targets: list[int], empties: list[str], homes: list[int]) -> None:
        for node, target in zip(nodes, targets):
            source = self.machine[node]
            self.load[source] -= 1
            self.load[target] += 1
            for device in self.node_devices[node]:
                self.count[device][source] -= 1
                self.count[device][target] += 1
            self.machine[node] = target
        for segment, home in zip(empties, homes):
            self.empty_home[segment] = home

    def try_move(self, nodes: list[str], target: int, empties: list[str] = ()) -> bool:
        """Move `nodes` (and member-less segments' homes) to `target` if that strictly improves the objective."""
        nodes = [n for n in nodes if self.machine[n] != target]
        empties = [e for e in empties if self.empty_home.get(e) != target]
        if not nodes and not empties:
            return False
        touched = [d for n in nodes for d in self.node_devices[n]] + list(empties)
        segments = list(dict.fromkeys(touched + [f for d in touched for f in self.followers.get(d, ())]))
        links = sorted({i for s in segments for i in self.seg_links[s]})
        before_objective = self.objective()
        before = self._measure(segments, links)
        sources = [self.machine[n] for n in nodes]
        old_homes = [self.empty_home.get(e, 0) for e in empties]
        self._apply(nodes, [target] * len(nodes), empties, [target] * len(empties))
        after = self._measure(segments, links)
        self._account(before, after)
        if self.objective() < before_objective:
            return True
        self._account(after, before)
        self._apply(nodes, sources, empties, old_homes)
        return False

    def _account(self, before: tuple, after: tuple) -> None:
        self.spread += after[0] - before[0]
        self.cut += after[1] - before[1]
        self.remote += after[2] - before[2]
        self.load = [l - b + a for l, b, a in zip(self.load, before[3], after[3])]

    def refine(self) -> None:
        """Local moves (whole atoms, a spread segment's members on one machine, single nodes) while they help."""
        everything = list(range(self.k))
        for _ in range(MAX_PASSES):
            moved = False
            for atom in self.atoms:
                free = [n for n in atom if n in self.machine and n not in self.pinned]
                empties = [s for s in atom if s in self.empty_home and s not in self.pinned_home]
                by_machine: dict[int, list[str]] = {}
                for n in free:
                    by_machine.setdefault(self.machine[n], []).append(n)
                for segment in empties:
                    by_machine.setdefault(self.empty_home[segment], [])
                for source, group in sorted(by_machine.items(), key=lambda item: (-len(item[1]), item[0])):
                    homes = [s for s in empties if self.empty_home[s] == source]
                    if any(self.try_move(group, target, homes) for target in everything if target != source):
                        moved = True
                        break
            for segment in self.segments:
                machines = self.machines(segment)
                if segment in self.p2p or len(machines) < 2:
                    continue
                for source in reversed(machines):
                    group = [n for n in self.members[segment] if self.machine[n] == source and n not in self.pinned]
                    leaves = [n for n in group if set(self.node_devices[n]) == {segment}]
                    for nodes in (leaves, group) if leaves != group else (group,):
                        if nodes and any(self.try_move(nodes, target) for target in machines if target != source):
                            moved = True
                            break
            for node in self.node_names:
                if node in self.pinned:
                    continue
                source = self.machine[node]
                stressed = self.load[source] > self.hi[source] or self.load[source] < self.lo[source]
                candidates = everything if stressed else dict.fromkeys(
                    m for d in self.node_devices[node] for m in self.machines(d))
                if any(self.try_move([node], target) for target in candidates if target != source):
                    moved = True
            if not moved:
                return

    def result(self, load: list[int]) -> Placement:
        segment_machines = {s: self.machines(s) for s in self.segments}
        spread = [s for s, m in segment_machines.items() if len(m) > 1 and s not in self.p2p]
        return Placement(dict(self.machine), segment_machines, self.spread + self.cut, load, list(self.capacity),
                         spread, self.remote, self.p2p)


def _sequence(state: _State) -> tuple[list[Item], list[list[str]]]:
    """Every process in one depth-first order (atoms contiguous); and the atoms (names of nodes and segments)."""
    switched = {s for s in state.segments if s not in state.p2p}
    parent: dict[Item, Item] = {}

    def find(item: Item) -> Item:
        while parent.setdefault(item, item) != item:
            parent[item] = parent[parent[item]]
            item = parent[item]
        return item

    for node, devices in state.node_devices.items():
        for device in devices:
            if device in switched:
                parent[find(("n", node))] = find(("d", device))
    roots = [("d", s) for s in state.segments if s in switched] + [("n", n) for n in state.node_names]
    atoms: dict[Item, list[Item]] = {}
    for item in roots:
        atoms.setdefault(find(item), []).append(item)
    seen: set[Item] = set()
    order: list[Item] = []

    def walk(start: Item) -> list[Item]:
        out: list[Item] = []
        stack = [start]
        while stack:
            item = stack.pop()
            if item in seen:
                continue
            seen.add(item)
            out.append(item)
            kind, name = item
            if kind == "d":
                leaves = [n for n in state.members[name] if ("n", n) not in seen
                          and all(d == name or d in state.p2p for d in state.node_devices[n])]
                children = [("n", n) for n in state.members[name] if ("n", n) not in seen and n not in leaves]
                for leaf in leaves:
                    seen.add(("n", leaf))
                    out.append(("n", leaf))
                    out.extend(_p2p_items(state, leaf, seen))
            else:
                out.extend(_p2p_items(state, name, seen))
                children = [("d", d) for d in dict.fromkeys(state.node_devices[name]) if d in switched and ("d", d) not in seen]
            stack.extend(reversed(children))
        return out

    done: set[Item] = set()
    for root in roots:
        if find(root) in done:
            continue
        stack = [(find(root), root)]
        while stack:
            atom, entry = stack.pop()
            if atom in done:
                continue
            done.add(atom)
            part = walk(entry)
            order.extend(part)
            children = []
            for kind, name in part:
                if kind == "n":
                    for device in state.node_devices[name]:
                        if device in state.p2p:
                            children += [(find(("n", m)), ("n", m)) for m in state.members[device] if m != name]
                elif kind == "d" and name in switched:
                    for index in state.seg_links[name]:
                        other = [s for s in state.links[index] if s != name]
                        children += [(find(("d", o)), ("d", o)) for o in other]
            stack.extend(reversed([c for c in children if c[0] not in done]))
    names = [[name for _, name in atom] for atom in atoms.values()]
    return order, names


def _p2p_items(state: _State, node: str, seen: set[Item]) -> list[Item]:
    items = [("d", d) for d in dict.fromkeys(state.node_devices[node]) if d in state.p2p and ("d", d) not in seen]
    seen.update(items)
    return items


def _initial_cut(state: _State, imbalance: float) -> None:
    """Cut the sequence of unpinned processes into consecutive runs, one per machine, at cheap places."""
    order, state.atoms = _sequence(state)
    state.anchor_empty_segments()
    k = state.k
    for node, machine in state.pinned.items():
        state.machine[node] = machine
    items = [(kind, name) for kind, name in order
             if not (kind == "n" and name in state.pinned) and not (kind == "d" and name in state.pinned_home)]
    length = len(items)
    position = {item: index for index, item in enumerate(items)}
    spread, cut, remote = [0] * (length + 2), [0] * (length + 2), [0] * (length + 2)

    def span(table: list[int], first: int, last: int, amount: int = 1) -> None:
        if last > first:          # breaks j in first+1..last separate position first from position last
            table[first + 1] += amount
            table[last + 1] -= amount

    for segment in state.segments:
        places = sorted(position[("n", n)] for n in state.members[segment] if ("n", n) in position)
        mine = places + ([position[("d", segment)]] if ("d", segment) in position else [])
        if len(mine) > 1:
            span(cut if segment in state.p2p else spread, min(mine), max(mine))
        for index in range(len(places) - 1):
            span(remote, places[index], places[index + 1], min(index + 1, len(places) - index - 1))
    for a, b in state.links:
        if ("d", a) in position and ("d", b) in position:
            first, last = sorted((position[("d", a)], position[("d", b)]))
            span(cut, first, last)
    for table in (spread, cut, remote):
        for index in range(1, len(table)):
            table[index] += table[index - 1]
    wanted = [max(0.0, t - p) for t, p in zip(state.share, state.pinned_load)]
    if not sum(wanted):
        wanted = [max(0.0, c - p) for c, p in zip(state.capacity, state.pinned_load)]
    room = sum(wanted) or 1.0
    targets = [length * w / room for w in wanted]
    previous, boundary = 0, 0.0
    breaks = []
    for m in range(k - 1):
        boundary += targets[m]
        if targets[m] <= 0:
            breaks.append(previous)
            continue
        tolerance = imbalance * min(targets[m], targets[m + 1] or targets[m]) + 0.5
        free = state.capacity[m] - state.pinned_load[m]
        low = max(previous, math.ceil(boundary - tolerance))
        high = min(length, math.floor(boundary + tolerance), previous + max(free, 0))
        if low > high:
            low = high = min(max(previous, round(boundary)), length, previous + max(free, 0))
        best = min(range(low, high + 1), key=lambda j: (spread[j], cut[j], remote[j], abs(j - boundary), j))
        breaks.append(best)
        previous = best
    breaks.append(length)
    start = 0
    for m, end in enumerate(breaks):
        for kind, name in items[start:end]:
            if kind == "n":
                state.machine[name] = m
            elif not state.members[name] and name not in state.follows:
                state.empty_home[name] = m
        start = end
    for segment, home in state.pinned_home.items():
        state.empty_home.setdefault(segment, home)
    state.recompute()
