"""No packet of death (issue 10): a host pings a router that has no route back to it.

Before the fix one such ping killed the router process (an OSError ENETUNREACH raised by the
echo reply out of the receive path). Linux counts the failed reply and drops it.
"""
from __future__ import annotations

import pytest

from control.emulation import Emulation

from .helpers import topology

pytestmark = pytest.mark.timeout(90)


def test_a_router_without_a_return_route_stays_up_and_counts_out_no_routes():
    with Emulation(topology("router_chain"), name="scn-no-return-route") as net:
        r2 = net["r2"]
        pid = r2.pid
        assert net["h1"].ping("10.255.0.2", count=1, timeout=2).received == 1  # r2 answers at first
        before = r2.counters()
        r2.delete_route("10.0.1.0/24", gateway="10.255.0.1")

        result = net["h1"].ping("10.255.0.2", count=3, interval=0.2, timeout=1)

        assert result.received == 0
        after = net.wait_for(lambda: (c := r2.counters())["Icmp"]["InEchos"] - before["Icmp"]["InEchos"] >= 3 and c)
        assert after["Icmp"]["InEchos"] - before["Icmp"]["InEchos"] == 3
        assert after["Ip"]["OutNoRoutes"] - before["Ip"]["OutNoRoutes"] == 3
        assert after["Icmp"]["OutErrors"] - before["Icmp"]["OutErrors"] == 3
        assert after["Icmp"]["OutEchoReps"] == before["Icmp"]["OutEchoReps"]
        assert after["softnet"]["rx_exceptions"] == 0
        assert r2.pid == pid and net.crashes == []

        r2.add_route("10.0.1.0/24", gateway="10.255.0.1")
        assert net["h1"].ping("10.255.0.2", count=1, timeout=2).received == 1
