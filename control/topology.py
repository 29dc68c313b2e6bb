"""Topology files: YAML in, a validated `Topology` model out (no processes here).

Before changing this file, read docs/topology.md (the format, naming scheme
and every check) and docs/design.md (what the model feeds: the process
configs of `control/plan.py`).

The work is split by stage:

* `topology_yaml`: YAML with line numbers and duplicate-key detection;
* `topology_parse`: one section/key at a time (types, unknown keys, syntax);
* `topology_generate`: the compact `generate:` section;
* `topology_check`: what needs the whole topology (references, duplicates,
  subnets, routes, loops, automatic MACs);
* `topology_model`: the dataclasses.

`load_topology` raises `TopologyError` listing every problem, each as
``FILE:LINE: path.to.key: problem``; `netemu check` prints it and exits 1.
"""
from __future__ import annotations

import os
from typing import Any

from bus.shaping import format_link_params

from .topology_check import auto_mac, check_topology, l2_domains
from .topology_generate import expand_generators
from .topology_model import (
    ArpEntry, ClusterOptions, Interface, Node, PlacementPin, Problem, Route, Segment, SegmentLink, Topology, TopologyError,
    Where,
)
from .topology_parse import (
    MAX_TOPOLOGY_NAME_LENGTH, Report, check_keys, check_name, expect_map, parse_cluster, parse_link_values, parse_node,
    parse_placement, parse_segment, parse_segment_link, parse_sysctl, type_name,
)
from .topology_yaml import LocatedList, YamlSyntaxError, load_located

__all__ = [
    "ArpEntry", "ClusterOptions", "Interface", "Node", "PlacementPin", "Problem", "Route", "Segment", "SegmentLink", "Topology", "TopologyError",
    "Where", "auto_mac", "format_summary", "l2_domains", "load_topology", "parse_topology",
]

TOP_LEVEL_KEYS = ("name", "description", "defaults", "segments", "nodes", "links", "generate", "placement", "cluster")


def load_topology(path: str | os.PathLike[str]) -> Topology:
    """Read and validate a topology file; `TopologyError` lists every problem."""
    filename = os.fspath(path)
    try:
        with open(filename, encoding="utf-8") as file:
            text = file.read()
    except (OSError, UnicodeDecodeError) as error:
        reason = error.strerror if isinstance(error, OSError) and error.strerror else str(error)
        raise TopologyError([Problem(filename, None, "", f"cannot read the file: {reason}")]) from None
    return parse_topology(text, filename)


def parse_topology(text: str, filename: str = "<string>") -> Topology:
    """Validate topology YAML given as text; `filename` only labels the problems."""
    try:
        data = load_located(text)
    except YamlSyntaxError as error:
        raise TopologyError([Problem(filename, error.line, "", error.message)]) from None
    report = Report(filename)
    root_where = Where(1, "")
    if not isinstance(data, dict):
        what = "the file is empty" if data is None else f"expected a mapping (name:, nodes:, ...), got {type_name(data)}"
        raise TopologyError([Problem(filename, 1, "", what)])
    root = expect_map(report, data, root_where, empty_ok=False)
    check_keys(report, root, root_where, TOP_LEVEL_KEYS, required=("name",))
    if "nodes" not in root and "generate" not in root:
        report.add(root_where.child(root.line, "nodes"), "missing (required, or a generate: section)")
    name = root.get("name", "")
    if "name" in root:
        check_name(report, name, root_where.child(root.line_of("name"), "name"), "topology", MAX_TOPOLOGY_NAME_LENGTH)
    if "description" in root and not isinstance(root["description"], str):
        report.add(root_where.child(root.line_of("description"), "description"),
                   f"expected text, got {type_name(root['description'])}")
    topology = Topology(name if isinstance(name, str) else str(name), filename)

    _parse_defaults(topology, root, report)
    _parse_section(root, "segments", report, lambda key, value, where: _add_segment(topology, key, value, where, report))
    _parse_section(root, "nodes", report, lambda key, value, where: _add_node(topology, key, value, where, report))
    if "links" in root:
        links_where = Where(root.line_of("links"), "links")
        links = root["links"]
        if not isinstance(links, LocatedList):
            report.add(links_where, f"expected a list of segment pairs like [[lan1, lan2]], got {type_name(links)}")
        else:
            for index, item in enumerate(links):
                link = parse_segment_link(report, item, Where(links.line_of(index), f"links[{index}]"))
                if link is not None:
                    topology.links.append(link)
    if "generate" in root:
        expand_generators(topology, root["generate"], Where(root.line_of("generate"), "generate"), report)
    # Only runs across Ray nodes (docs/cluster.md) use these; a single-machine run ignores them.
    if "placement" in root:
        topology.placement = parse_placement(report, root["placement"], Where(root.line_of("placement"), "placement"))
    if "cluster" in root:
        topology.cluster = parse_cluster(report, root["cluster"], Where(root.line_of("cluster"), "cluster"))
    check_topology(topology, report)
    if report:
        raise TopologyError(report.problems())
    return topology


def _parse_defaults(topology: Topology, root: Any, report: Report) -> None:
    if "defaults" not in root:
        return
    where = Where(root.line_of("defaults"), "defaults")
    defaults = expect_map(report, root["defaults"], where)
    if defaults is None:
        return
    check_keys(report, defaults, where, ("link", "sysctl"))
    if "link" in defaults:
        link_where = where.child(defaults.line_of("link"), "link")
        link = expect_map(report, defaults["link"], link_where)
        if link is not None:
            topology.defaults_link = parse_link_values(report, link, link_where, keys=list(link))
    if "sysctl" in defaults:
        topology.defaults_sysctl = parse_sysctl(report, defaults["sysctl"], where.child(defaults.line_of("sysctl"), "sysctl"))


def _parse_section(root: Any, section: str, report: Report, add) -> None:
    """Call `add(name, value, where)` for each entry of a top-level mapping section."""
    if section not in root:
        return
    where = Where(root.line_of(section), section)
    entries = expect_map(report, root[section], where)
    for key, value in (entries or {}).items():
        add(key, value, where.child(entries.line_of(key), str(key)))


def _add_segment(topology: Topology, name: Any, value: Any, where: Where, report: Report) -> None:
    segment = parse_segment(report, name, value, where) if check_name(report, name, where, "segment") else None
    if segment is not None:
        topology.segments[name] = segment
    elif isinstance(name, str):
        report.broken_names.add(name)


def _add_node(topology: Topology, name: Any, value: Any, where: Where, report: Report) -> None:
    if check_name(report, name, where, "node"):
        node = parse_node(report, name, value, where, topology.defaults_sysctl)
        if node is not None:
            topology.nodes[name] = node


def format_summary(topology: Topology, detail_limit: int = 40) -> str:
    """A human summary for `netemu check`: counts, then devices and nodes (up to `detail_limit`)."""
    nodes = list(topology.nodes.values())
    hosts = sum(1 for n in nodes if n.kind == "host")
    kinds = {kind: sum(1 for s in topology.segments.values() if s.kind == kind) for kind in ("switch", "hub", "p2p")}
    lines = [
        f"{topology.name}: {_count(len(nodes), 'node')} ({_count(hosts, 'host')}, {_count(len(nodes) - hosts, 'router')}), "
        f"{_count(kinds['switch'], 'switch', 'switches')}, {_count(kinds['hub'], 'hub')}, "
        f"{_count(kinds['p2p'], 'point-to-point link')}, {_count(len(topology.links), 'segment link')}"
    ]

    def shaped(params: dict[str, Any]) -> str:
        shown = format_link_params({k: v for k, v in params.items() if k != "mtu"})
        return " ".join(f"{k} {v}" for k, v in shown.items())

    segments = list(topology.segments.values())
    lines.append("segments:")
    for segment in segments[:detail_limit]:
        ports = " ".join(i.attachment for i in segment.attachments[:8])
        if len(segment.attachments) > 8:
            ports += f" (+{len(segment.attachments) - 8} more)"
        if segment.tap is not None:
            ports += f" tap@{segment.tap.device} (Linux TAP, netns {segment.tap.netns or 'of the host'})"
        extra = shaped(segment.params)
        lines.append(f"  {segment.name:<12} {segment.kind:<6} {ports}" + (f"  [{extra}]" if extra else ""))
    if len(segments) > detail_limit:
        lines.append(f"  ... and {len(segments) - detail_limit} more")
    for link in topology.links[:detail_limit]:
        extra = shaped(link.params)
        lines.append(f"  link {link.a} ~ {link.b}" + (f"  [{extra}]" if extra else ""))
    if len(topology.links) > detail_limit:
        lines.append(f"  ... and {len(topology.links) - detail_limit} more links")
    lines.append("nodes:")
    for node in nodes[:detail_limit]:
        forward = ", ip_forward" if node.ip_forward else ""
        lines.append(f"  {node.name} ({node.kind}{forward})")
        for interface in node.interfaces.values():
            extra = shaped(interface.params)
            lines.append(f"    {interface.name:<6} {interface.ip:<18} {interface.mac}  {interface.device}"
                         f"  mtu {interface.mtu}" + (f"  [{extra}]" if extra else ""))
        for route in node.routes:
            lines.append(f"    route {route}")
    if len(nodes) > detail_limit:
        lines.append(f"  ... and {len(nodes) - detail_limit} more")
    return "\n".join(lines)


def _count(number: int, singular: str, plural: str | None = None) -> str:
    return f"{number} {singular if number == 1 else plural or singular + 's'}"
