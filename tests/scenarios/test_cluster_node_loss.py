"""A Ray node lost with everything on it (its raylet and workers gone, as when a machine dies):
its emulated nodes are reported dead within 2 s, the rest keeps running, and the teardown
still ends cleanly (docs/cluster.md, "Faults and teardown")."""
from __future__ import annotations

import time

import psutil
import pytest

from control.emulation import Emulation
from control.topology import parse_topology
from tests.waiting import wait_for

from .helpers import private_run_base, wait_gone
from .ray_cluster import ray_cluster

pytestmark = [pytest.mark.timeout(180), pytest.mark.integration]

TOPOLOGY = """
name: lossy
segments:
  lan: {kind: switch}
placement: {h1: m0, h2: m0, h3: m1, h4: m1}
nodes:
  h1: {kind: host, interfaces: {eth0: {segment: lan, ip: 10.0.0.1/24}}}
  h2: {kind: host, interfaces: {eth0: {segment: lan, ip: 10.0.0.2/24}}}
  h3: {kind: host, interfaces: {eth0: {segment: lan, ip: 10.0.0.3/24}}}
  h4: {kind: host, interfaces: {eth0: {segment: lan, ip: 10.0.0.4/24}}}
"""


def test_a_lost_ray_node_is_reported_within_two_seconds():
    with private_run_base(), ray_cluster(2) as cluster:
        net = Emulation(parse_topology(TOPOLOGY, "lossy.yaml"), cluster=cluster.address)
        with net:
            assert net.pingall(count=1, timeout=2.0)[("h1", "h3")].received == 1
            victims = ["h3", "h4", "lan.1"]
            assert all(net.plan.machine_of[name] == 1 for name in victims)
            processes = [psutil.Process(net.supervisor[name].pid) for name in victims]
            for name in victims:
                net.expect_crash(name)
            worker = next(node for node in cluster.cluster.worker_nodes)
            agent = psutil.Process(net.cluster.session.agents[1].started["pid"])
            cluster.cluster.remove_node(worker, allow_graceful=False)  # SIGKILL: raylet and workers
            # The agent's worker outlives its raylet by a moment (it answers polls meanwhile): the
            # machine is lost when the agent is, and that is when the clock starts.
            wait_for(lambda: not wait_gone([agent], 0.0), timeout=10.0, interval=0.005)
            lost_at = time.monotonic()
            wait_for(lambda: not any(net.supervisor[n].alive for n in victims), timeout=5.0, interval=0.01)
            reported = time.monotonic() - lost_at
            assert reported <= 2.0, f"reported after {reported:.2f} s"
            assert not wait_gone(processes, 10.0), "the lost machine's processes outlived it"
            assert net["h1"].ping("h2", count=1, timeout=2.0).received == 1
            assert net.status()["cluster"]["machines"]["1"]["lost"]
