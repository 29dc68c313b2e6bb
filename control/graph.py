"""`netemu graph`: draw a topology (nodes, segments, addresses) to SVG or PNG.

networkx lays the graph out and matplotlib renders it (both from the `graph`
extra). Hosts are circles, routers squares, switches and hubs diamonds,
point-to-point links plain edges, a segment's Linux TAP device a triangle; each
node is labelled with its addresses.
"""
from __future__ import annotations

import os
from pathlib import Path

from .topology_model import Topology

_STYLE = {
    "host": {"node_shape": "o", "node_color": "#9ecae1"},
    "router": {"node_shape": "s", "node_color": "#fdae6b"},
    "switch": {"node_shape": "D", "node_color": "#a1d99b"},
    "hub": {"node_shape": "h", "node_color": "#d9d9d9"},
    "tap": {"node_shape": "^", "node_color": "#fcbba1"},
}


def build_graph(topology: Topology):  # -> networkx.Graph
    """The topology as a networkx graph: nodes and switch/hub segments are vertices."""
    import networkx as nx

    graph = nx.Graph()
    for name, node in topology.nodes.items():
        label = name + "\n" + "\n".join(f"{i.name} {i.ip}" for i in node.interfaces.values())
        graph.add_node(name, kind=node.kind, label=label)
    for name, segment in topology.segments.items():
        if segment.kind == "p2p":
            ends = segment.attachments
            if len(ends) == 2:
                graph.add_edge(ends[0].node, ends[1].node, label=name)
            continue
        graph.add_node(name, kind=segment.kind, label=f"{name}\n({segment.kind})")
        for interface in segment.attachments:
            graph.add_edge(interface.node, name, label=interface.name)
        if segment.tap is not None:
            vertex = f"tap@{segment.tap.device}@{name}"  # '@' is in no topology name
            graph.add_node(vertex, kind="tap", label=f"Linux {segment.tap.device}\n({segment.tap.netns or 'host'})")
            graph.add_edge(vertex, name, label="tap")
    for link in topology.links:
        graph.add_edge(link.a, link.b, label="link")
    return graph


def draw(topology: Topology, output: str | os.PathLike[str]) -> Path:
    """Write the drawing to `output` (.svg or .png); returns its path."""
    path = Path(output)
    suffix = path.suffix.lower()
    if suffix not in (".svg", ".png"):
        raise ValueError(f"{path}: choose an .svg or .png file name")
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        import networkx as nx
    except ImportError as error:
        raise ImportError(f"drawing needs networkx and matplotlib: pip install 'netemu[graph]' ({error})") from None
    graph = build_graph(topology)
    size = max(6.0, min(40.0, 1.2 * len(graph) ** 0.5 * 2))
    figure, axes = plt.subplots(figsize=(size, size * 0.75))
    layout = nx.spring_layout(graph, seed=1, k=1.5 / max(1, len(graph)) ** 0.5)
    for kind, style in _STYLE.items():
        members = [n for n, data in graph.nodes(data=True) if data["kind"] == kind]
        if members:
            nx.draw_networkx_nodes(graph, layout, nodelist=members, ax=axes, node_size=900, **style)
    nx.draw_networkx_edges(graph, layout, ax=axes, edge_color="#636363")
    font = 7 if len(graph) <= 60 else 4
    nx.draw_networkx_labels(graph, layout, labels=nx.get_node_attributes(graph, "label"), ax=axes, font_size=font)
    if len(graph) <= 60:
        nx.draw_networkx_edge_labels(graph, layout, edge_labels=nx.get_edge_attributes(graph, "label"), ax=axes,
                                     font_size=font - 1)
    axes.set_title(topology.name)
    axes.axis("off")
    figure.tight_layout()
    figure.savefig(path, format=suffix[1:])
    plt.close(figure)
    return path
