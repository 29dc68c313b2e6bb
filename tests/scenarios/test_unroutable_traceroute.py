"""Issue 14 item 9, as the scenario API and Debian's traceroute show it: a router looks up the route
before it checks the TTL, so tracing an unroutable address ends at the first router with !N."""
from __future__ import annotations

import pytest

from control.emulation import Emulation
from tests.conftest import require_tool, require_trap

from .helpers import private_run_base, topology

pytestmark = pytest.mark.timeout(90)


@pytest.fixture(scope="module")
def net():
    with private_run_base(), Emulation(topology("two_lans"), name="scn-unroutable") as emulation:
        yield emulation


def test_the_kernels_traceroute_to_an_unroutable_address_stops_at_the_router(net):
    hops = net["h1"].traceroute("192.0.2.1", max_hops=5, wait=2.0)
    assert [(hop.hop, hop.address) for hop in hops] == [(1, "10.0.1.1")]
    assert hops[0].marks and all(mark == "!N" for mark in hops[0].marks), hops


def test_debian_traceroute_to_an_unroutable_address_shows_one_hop_with_bang_n(net):
    require_trap()
    require_tool("traceroute")
    result = net["h1"].run(["traceroute", "-n", "-w", "2", "-m", "5", "192.0.2.1"], capture_output=True,
                           text=True, timeout=60)
    lines = result.stdout.splitlines()[1:]
    assert len(lines) == 1, result.stdout
    words = lines[0].split()
    assert words[:2] == ["1", "10.0.1.1"] and "!N" in words, result.stdout
