"""`python -m bench launch`: start, ping, measure memory and tear down 10, 100 and 500 nodes.

Before changing this file, read control/emulation.py, control/supervisor.py,
control/zygote.py and docs/design.md ("Measured baselines": fresh
interpreters against forks of a pre-imported parent, and Mininet's figures).

Each size is one switch tree generated in memory (`generate: switch_tree`,
at most 32 hosts per switch, like topologies/generated_500.yaml) run with
the scenario API:

* ready: `Emulation.start()`, from the call until every process answers and
  every interface is attached to its switch;
* pings: 10 and 100 nodes run Mininet's pingall (every ordered pair, one
  echo each); 500 nodes would be 250k pings, so every host pings one server
  (h1), 100 hosts at a time, and the server pings every host back, all at once;
* memory: PSS (`memory_full_info().pss`) summed over every process of the
  emulation, zygote included, after the pings, when the nodes are idle;
* teardown: `Emulation.stop()`, until every process is reaped and the run
  directory is gone.

Baseline, in the same run: the zygote alone forking N processes whose
target does nothing (`idle_target`), the floor this design can reach: time
until every pid is known, PSS of them all, time to stop them. Reference
anchor (docs/design.md, "Measured baselines"; not measured here): Mininet
2.3 builds and starts 100 hosts in 2.3 s and stops them in 2.7 s.
"""
from __future__ import annotations

import os
import signal
import tempfile
import threading
import time
from typing import Any

import psutil

from control.emulation import Emulation, call_concurrently
from control.supervisor import DEFAULT_TARGET_MODULES
from control.topology import parse_topology
from control.topology_model import Topology
from control.zygote import ZygoteClient

from .harness import Row

SIZES = (10, 100, 500)
FULL_PINGALL_UP_TO = 100
PING_TIMEOUT = 5.0  # s: under a flat 500-host ARP storm a first reply can take seconds
PING_WAVE = 100  # hosts pinging the server at once (500 nodes)
MIB = 1024 * 1024
MININET_START_100 = 2.3
MININET_STOP_100 = 2.7


def topology(nodes: int) -> Topology:
    """`nodes` hosts on one switch tree with at most 32 hosts (33 ports with the uplink) per switch."""
    depth, fanout = (1, 2) if nodes <= 16 else (1, 4) if nodes <= 112 else (2, 4)
    text = f"""name: bench-launch-{nodes}
generate:
  - switch_tree:
      name: "s{{n}}"
      depth: {depth}
      fanout: {fanout}
      hosts: {{count: {nodes}, name: "h{{n}}", ip_pool: 10.0.0.0/16}}
"""
    return parse_topology(text, f"<bench launch {nodes}>")


def pss(pids: list[int]) -> int:
    """Sum of PSS over `pids` (bytes); processes that are gone count 0."""
    total = 0
    for pid in pids:
        try:
            total += psutil.Process(pid).memory_full_info().pss
        except psutil.Error:
            pass
    return total


def _ping_server_and_back(net: Emulation, timeout: float, wave: int = PING_WAVE) -> tuple[int, int]:
    """Every host pings h1 (`wave` hosts at a time), then h1 pings every host at once; returns (answered, sent).

    Each host's first ping is an ARP broadcast that every other host must
    look at: 500 at once is a 250k-delivery storm during which the server,
    one process of 500 busy ones, gets a 1/500 share of the CPU. Waves keep
    the storm's total but let the server answer each wave in time.
    """
    hosts = net.hosts
    server, others = hosts[0], hosts[1:]
    supervisor = net.supervisor
    args = {"count": 1, "interval": 0.2, "timeout": timeout}
    there: list[Any] = []
    for start in range(0, len(others), wave):
        there += call_concurrently([(supervisor[h].control, "ping", {"dst": server, **args})
                                    for h in others[start:start + wave]], timeout + 30.0)
    back = call_concurrently([(supervisor[server].control, "ping", {"dst": h, **args}) for h in others],
                             timeout + 30.0)
    answered = sum(1 for reply in there + back if isinstance(reply, dict) and reply["received"] == 1)
    return answered, len(there) + len(back)


def emulation_figures(nodes: int) -> dict[str, Any]:
    """Ready time, ping results, PSS after the pings and teardown time of one emulation."""
    net = Emulation(topology(nodes), name=f"bench-launch-{nodes}-{os.getpid()}", handle_signals=False)
    began = time.monotonic()
    net.start()
    ready = time.monotonic() - began
    try:
        began = time.monotonic()
        if nodes <= FULL_PINGALL_UP_TO:
            results = net.pingall(count=1, timeout=PING_TIMEOUT)
            answered = sum(1 for r in results.values() if not isinstance(r, Exception) and r.received == 1)
            sent = len(results)
            how = "pingall"
        else:
            answered, sent = _ping_server_and_back(net, PING_TIMEOUT)
            how = f"every host to h1 ({PING_WAVE} at a time) and h1 to every host"
        ping_seconds = time.monotonic() - began
        time.sleep(1.0)  # idle again: replies sent, queues empty
        pids = [h.pid for h in net.supervisor.processes.values() if h.pid and h.alive]
        zygote = net.supervisor.zygote_pid
        memory = pss(pids + ([zygote] if zygote else []))
        processes = len(pids) + 1
    finally:
        began = time.monotonic()
        net.stop()
        teardown = time.monotonic() - began
    return {"ready": ready, "teardown": teardown, "pss": memory, "processes": processes,
            "answered": answered, "sent": sent, "ping_seconds": ping_seconds, "how": how}


def idle_target(config: dict[str, Any]) -> int:
    """A forked process that does nothing until SIGTERM: the floor of what a node can cost."""
    signal.pause()
    return 0


def zygote_figures(count: int) -> dict[str, Any]:
    """Fork `count` idle processes from a zygote pre-imported like the emulation's; time and PSS."""
    exits = threading.Semaphore(0)
    client = ZygoteClient(lambda pid, code, sig: exits.release(), lambda: None)
    with tempfile.TemporaryDirectory(prefix="netemu-bench-") as directory:
        log = os.path.join(directory, "zygote.log")
        client.start(log, list(DEFAULT_TARGET_MODULES))
        try:
            began = time.monotonic()
            requests = [client.request({"op": "spawn", "target": f"{__name__}:idle_target",
                                        "config": {"name": f"idle{i}"}, "log": os.path.join(directory, "idle.log")})
                        for i in range(count)]
            pids = [request.wait(30.0)["pid"] for request in requests]
            forked = time.monotonic() - began
            time.sleep(1.0)
            memory = pss(pids + [client.pid])
        finally:
            began = time.monotonic()
            client.stop()
            teardown = time.monotonic() - began
    return {"forked": forked, "pss": memory, "teardown": teardown}


def run() -> list[Row]:
    rows: list[Row] = []
    for nodes in SIZES:
        floor = zygote_figures(nodes)
        figures = emulation_figures(nodes)
        ready_target = {100: "<= 2 s", 500: "<= 10 s"}.get(nodes, "")
        anchor = f"; Mininet 2.3: {MININET_START_100} s for 100 hosts" if nodes == 100 else ""
        rows.append(Row(f"{nodes} nodes: start to ready", figures["ready"], "s", floor["forked"],
                        "zygote forks as many idle processes", f"{ready_target}{anchor}".lstrip("; ")))
        per_node = figures["pss"] / nodes / MIB
        rows.append(Row(f"{nodes} nodes: PSS per node after pings", per_node, "MiB", floor["pss"] / nodes / MIB,
                        "idle forks, per process",
                        f"<= 5 MiB (total {figures['pss'] / MIB:,.0f} MiB over {figures['processes']} processes)"))
        anchor = f"; Mininet 2.3: {MININET_STOP_100} s for 100 hosts" if nodes == 100 else ""
        rows.append(Row(f"{nodes} nodes: teardown", figures["teardown"], "s", floor["teardown"],
                        "zygote stops its idle forks", f"<= 3 s{anchor}"))
        rows.append(Row(f"{nodes} nodes: pings answered", figures["answered"], "pings", figures["sent"],
                        "pings sent", f"{figures['how']}, in {figures['ping_seconds']:.1f} s"))
    return rows
