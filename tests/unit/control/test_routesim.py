"""The static-route simulator the example tests rely on must itself catch broken routing."""
from __future__ import annotations

import textwrap

from control.topology import parse_topology
from nodes.wire.addresses import IPv4Address

from .routesim import RouteSimulator, unreachable_pairs

BASE = """
name: t
segments:
  lan1: {}
  lan2: {}
nodes:
  h1:
    kind: host
    interfaces: {eth0: {segment: lan1, ip: 10.0.1.10/24%(h1_params)s}}
    routes: [%(h1_routes)s]
  r1:
    kind: %(r1_kind)s
    interfaces:
      eth0: {segment: lan1, ip: 10.0.1.1/24}
      eth1: {segment: lan2, ip: 10.0.2.1/24}
    routes: [%(r1_routes)s]
  h2:
    kind: host
    interfaces: {eth0: {segment: lan2, ip: 10.0.2.10/24}}
    routes: [%(h2_routes)s]
"""
GOOD = {"h1_params": "", "h1_routes": "default via 10.0.1.1", "r1_kind": "router", "r1_routes": "",
        "h2_routes": "default via 10.0.2.1"}


def failures(**changes: str) -> list[str]:
    text = BASE % {**GOOD, **changes}
    return unreachable_pairs(parse_topology(textwrap.dedent(text)))


def test_working_topology_has_no_failures():
    assert failures() == []


def test_host_without_a_route_cannot_leave_its_subnet():
    assert failures(h1_routes="") == [
        "h1 -> 10.0.2.1: h1: no route to 10.0.2.1",       # r1's other interface (host name r1-eth1)
        "h1 -> 10.0.2.10: h1: no route to 10.0.2.10",
        "h2 -> 10.0.1.10: reply to 10.0.2.10 lost: h1: no route to 10.0.2.10",
    ]


def test_a_missing_return_route_loses_the_reply():
    result = failures(h2_routes="10.0.3.0/24 via 10.0.2.1")
    assert "h1 -> 10.0.2.10: reply to 10.0.1.10 lost: h2: no route to 10.0.1.10" in result
    assert "h2 -> 10.0.1.10: h2: no route to 10.0.1.10" in result


def test_a_host_in_the_middle_does_not_forward():
    result = failures(r1_kind="host")
    assert "h1 -> 10.0.2.10: r1: not forwarding (ip_forward=0)" in result


def test_a_link_that_is_down_breaks_the_path():
    result = failures(h1_params=", up: false")
    assert "h1 -> 10.0.1.1: h1: link down towards r1:eth0" in result


def test_a_routing_loop_is_detected():
    text = BASE % {**GOOD, "r1_routes": "10.0.9.0/24 via 10.0.2.10", "h2_routes": "default via 10.0.2.1"}
    topology = parse_topology(textwrap.dedent(text).replace("kind: host\n    interfaces: {eth0: {segment: lan2",
                                                          "kind: router\n    interfaces: {eth0: {segment: lan2"))
    walk = RouteSimulator(topology).walk("h1", int(IPv4Address("10.0.9.1")))
    assert not walk.ok and "loop" in walk.reason


def test_same_subnet_on_unlinked_segments_is_unreachable():
    text = """
        name: t
        segments: {a: {}, b: {}}
        nodes:
          h1: {kind: host, interfaces: {eth0: {segment: a, ip: 10.0.0.1/24}}}
          h2: {kind: host, interfaces: {eth0: {segment: b, ip: 10.0.0.2/24}}}
    """
    topology = parse_topology(textwrap.dedent(text))
    assert unreachable_pairs(topology)[0] == "h1 -> 10.0.0.2: h1: next hop 10.0.0.2 is not reachable from eth0"
    linked = parse_topology(textwrap.dedent(text).replace("nodes:", "links: [[a, b]]\nnodes:"))
    assert unreachable_pairs(linked) == []


def test_a_gateway_nobody_holds_is_a_dead_end():
    result = failures(h1_routes="default via 10.0.1.99")
    assert "h1 -> 10.0.2.10: h1: nobody holds next hop 10.0.1.99" in result
