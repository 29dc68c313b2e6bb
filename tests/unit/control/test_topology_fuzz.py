"""Whatever a topology file contains, validation answers with a Topology or a TopologyError, nothing else."""
from __future__ import annotations

from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st

from control.topology import Topology, TopologyError, parse_topology

ROOT = Path(__file__).parents[3]
SOURCES = [p.read_text() for p in sorted((ROOT / "topologies").glob("*.yaml")) if "500" not in p.name]
SOURCES += [p.read_text() for p in sorted((ROOT / "tests/unit/control/broken").glob("*.yaml"))]
VALUES = ["", "~", "[]", "{}", "[1, 2]", "{a: 1}", "-1", "0", "1.5", "true", '"x"', "h1", "lan1", "10.0.0.1/24",
          "10.0.0.0/8", "1e400", ".nan", '"02:00:00:00:00:01"', "!!binary aGVsbG8=", "*x", "&x 1", "? a", "{{}}",
          "99999999999999999999", '"h{n:03d}"', '"h{x}"', '"h{n!r}"', "[[a, b]]", "2024-01-01", "default via 10.0.0.1",
          "!!set {a, b}", "'h{n:>40}'", "{count: 3, name: 'g{n}', segment: lan1, ip_pool: 10.7.0.0/24}"]

mutation = st.tuples(st.integers(0, 10_000), st.sampled_from(["replace value", "delete", "duplicate", "cut"]),
                     st.sampled_from(VALUES), st.integers(0, 200))


@settings(max_examples=300, deadline=None)
@given(st.sampled_from(SOURCES), st.lists(mutation, min_size=1, max_size=4))
def test_mutated_topologies_give_a_model_or_a_topology_error(source, mutations):
    lines = source.splitlines()
    for index, kind, value, cut in mutations:
        if not lines:
            break
        index %= len(lines)
        line = lines[index]
        if kind == "replace value" and ":" in line:
            lines[index] = line[: line.index(":") + 1] + " " + value
        elif kind == "delete":
            del lines[index]
        elif kind == "duplicate":
            lines.insert(index, lines[(index + cut) % len(lines)])
        else:
            lines[index] = line[: cut % (len(line) + 1)]
    try:
        result = parse_topology("\n".join(lines), "f.yaml")
    except TopologyError as error:
        assert error.problems and all(p.file == "f.yaml" for p in error.problems)
        assert str(error).startswith("f.yaml")
    else:
        assert isinstance(result, Topology)
