"""ICMP redirects in a running emulation (issue 14, item 10): a router redirecting a host to a better
gateway on the same LAN, and the host's route cache showing it (`ip route show cache`)."""
from __future__ import annotations

from pathlib import Path

import pytest

from control import render
from control.emulation import Emulation

from .helpers import private_run_base

pytestmark = pytest.mark.timeout(120)

TOPOLOGY = Path(__file__).with_name("redirect_lan.yaml")


def test_a_router_redirects_the_host_to_the_better_gateway_on_its_lan():
    with private_run_base(), Emulation(TOPOLOGY, name="scn-redirect") as net:
        result = net["h1"].ping("h2", count=3, interval=0.2)
        assert result.received == 3 and result.errors == []
        assert net["r1"].counters()["Icmp"]["OutRedirects"] == 1
        assert net["r1"].counters()["Ip"]["ForwDatagrams"] == 1  # the echoes after the first went to r2
        assert net["h1"].counters()["Icmp"]["InRedirects"] == 1
        (row,) = [row for row in net["h1"].route_cache()["entries"] if row["dst"] == "10.0.2.10"]
        assert (row["gateway"], row["redirected"]) == ("10.0.1.2", True)
        shown = render.ip_route_cache(net["h1"].route_cache())
        line = shown.index("10.0.2.10 via 10.0.1.2 dev eth0 src 10.0.1.10")
        assert shown[line + 1].startswith("    cache <redirected> used ")
