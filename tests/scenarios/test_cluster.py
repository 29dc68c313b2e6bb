"""One emulation across three Ray nodes (ray.cluster_utils on this machine): docs/cluster.md.

topologies/racks.yaml pins each rack to one machine, so its core segment is a switch per
machine joined by a trunk, and its p2p link wan23 crosses machines. Everything a user does
on one machine must work the same: pingall, capture (merged), link set, kill/restart,
partition, status, programs on a node of another machine (RemoteProcess), TCP across.
"""
from __future__ import annotations

import hashlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

from bus.pcap import read_pcap
from control.emulation import Emulation
from control.remote_exec import RemoteProcess
from tests.conftest import require_tool, require_trap
from tests.waiting import wait_for

from .helpers import LAUNCHER, iperf3_reports, private_run_base, topology, wait_gone
from .ray_cluster import ray_cluster
from .test_tcp_programs import tcp_listening

pytestmark = [pytest.mark.timeout(300), pytest.mark.integration]


@pytest.fixture(scope="module")
def cluster():
    with private_run_base(), ray_cluster(3) as running:
        yield running


@pytest.fixture(scope="module")
def racks(cluster):
    with Emulation(topology("racks"), name="racks", cluster=cluster.address) as net:
        yield net
        ours = agent_pids(net) + [ref.started["zygote_pid"] for ref in net.cluster.session.agents.values()]
        ours += [h.pid for h in net.supervisor.processes.values() if h.alive]
        processes = [psutil.Process(pid) for pid in ours if psutil.pid_exists(pid)]
    assert not wait_gone(processes, 10.0), "teardown left processes on the machines"


def agent_pids(net: Emulation) -> list[int]:
    return [ref.started["pid"] for ref in net.cluster.session.agents.values()]


def icmp_echoes(path: Path) -> list[bytes]:
    """The ICMP echo request/reply frames of a pcap (IPv4, protocol 1, type 8 or 0)."""
    found = []
    for _, frame in read_pcap(path):
        if frame[12:14] == b"\x08\x00" and frame[23] == 1 and frame[34] in (0, 8):
            found.append(frame)
    return found


def test_nodes_are_placed_as_pinned_and_the_core_spans_two_machines(racks):
    plan = racks.plan
    assert {plan.machine_of[n] for n in ("a1", "a9", "r1", "rack1")} == {0}
    assert {plan.machine_of[n] for n in ("b1", "b9", "r2", "rack2")} == {1}
    assert {plan.machine_of[n] for n in ("c1", "c9", "rack3")} == {2}
    assert plan.segment_devices["core"] == ["core", "core.1"] or plan.segment_devices["core"] == ["core", "core.0"]
    status = racks.status()
    machines = status["cluster"]["machines"]
    assert sorted(machines) == ["0", "1", "2"]
    assert all(machine["processes"] for machine in machines.values())
    assert status["processes"]["c5"]["machine"] == 2 and status["processes"]["c5"]["state"] == "ready"


def test_pingall_across_machines(racks):
    results = racks.pingall(count=1, timeout=2.0)
    failed = {pair: r for pair, r in results.items() if isinstance(r, Exception) or r.received != 1}
    assert not failed, f"{len(failed)} of {len(results)} pairs failed, e.g. {list(failed.items())[:3]}"


def test_capture_of_the_spread_core_is_merged_with_each_frame_once(racks, tmp_path):
    path = tmp_path / "core.pcap"
    racks.capture("core", path)
    result = racks["a1"].ping("b1", count=3, interval=0.2)
    assert result.received == 3
    stopped = racks.stop_capture("core")
    assert stopped["path"] == str(path)
    echoes = icmp_echoes(path)
    # a1 -> b1 crosses core once each way: 3 requests and 3 replies, none twice (a trunk carried each)
    assert len(echoes) == 6, len(echoes)
    assert len(set(echoes)) == 6
    timestamps = [ts for ts, _ in read_pcap(path)]
    assert timestamps == sorted(timestamps)
    tshark = require_tool("tshark")
    shown = subprocess.run([tshark, "-r", str(path), "-Y", "icmp"], capture_output=True, text=True, timeout=60)
    assert shown.returncode == 0 and len(shown.stdout.splitlines()) == 6, shown.stdout + shown.stderr


def test_link_set_on_a_port_of_another_machine(racks):
    before = racks["r1"].ping("10.0.0.2", count=2, interval=0.2)
    racks.link("r2", "eth1").set(delay="40ms")
    try:
        slow = racks["r1"].ping("10.0.0.2", count=2, interval=0.2)
        assert slow.received == 2 and min(slow.rtts) >= 40.0 > max(before.rtts), (before, slow)  # ms
    finally:
        racks.link("r2", "eth1").set(delay="0ms")


def test_partition_and_heal_across_machines(racks):
    racks.partition(["a2"], ["c2"])
    assert racks["a2"].ping("c2", count=1, timeout=0.5).received == 0
    racks.heal()
    assert racks["a2"].ping("c2", count=1, timeout=2.0).received == 1


def test_kill_and_restart_a_node_of_another_machine(racks):
    racks.expect_crash("c3")
    racks["c3"].kill()
    assert not racks.supervisor["c3"].alive
    racks["c3"].restart()
    assert racks.supervisor["c3"].alive
    assert racks["a3"].ping("c3", count=1, timeout=2.0).received == 1


def test_exec_on_a_node_of_another_machine_is_popen_like(racks):
    require_trap()
    process = racks["b4"].exec([sys.executable, "-c", "import sys, socket; data = sys.stdin.read(); "
                                "print(socket.gethostname(), len(data)); sys.exit(7)"],
                               stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert isinstance(process, RemoteProcess)
    assert process.pid > 0
    out, err = process.communicate("x" * 100_000, timeout=60)
    assert (out, process.returncode) == ("b4 100000\n", 7), err
    ping = racks["c4"].run(["ping", "-c", "1", "-W", "2", "a4"], capture_output=True, text=True, timeout=60)
    assert ping.returncode == 0 and "1 received" in ping.stdout, ping.stdout + ping.stderr
    # the node's own tools reach its kernel on its machine (the keyless ipc twin of its control endpoint)
    shown = racks["c4"].run(["ip", "-4", "addr", "show", "eth0"], capture_output=True, text=True, timeout=60)
    assert shown.returncode == 0 and "10.3.0.14/24" in shown.stdout, shown.stdout + shown.stderr


def test_tcp_across_machines_is_byte_exact(racks, tmp_path):
    require_trap()
    payload = os.urandom(3 * 1024 * 1024)
    digest = hashlib.sha256(payload).hexdigest()
    server = racks["c6"].exec([sys.executable, "-c",
                               "import hashlib, socket; s = socket.create_server(('', 5001)); print('up', flush=True); "
                               "c, _ = s.accept(); h = hashlib.sha256(); n = 0\n"
                               "while (b := c.recv(65536)):\n    h.update(b); n += len(b)\n"
                               "print(n, h.hexdigest(), flush=True)"],
                              stdout=subprocess.PIPE, text=True)
    try:
        assert server.stdout.readline() == "up\n"
        client = racks["a6"].run([sys.executable, "-c", "import socket, sys; d = sys.stdin.buffer.read(); "
                                  "s = socket.create_connection(('c6', 5001)); s.sendall(d); s.close()"],
                                 input=payload, capture_output=True, timeout=120)
        assert client.returncode == 0, client.stderr
        assert server.stdout.readline() == f"{len(payload)} {digest}\n"
    finally:
        server.kill()
        server.wait(10)


def test_iperf3_between_machines(racks):
    require_trap()
    require_tool("iperf3")
    server = racks["b7"].exec(["iperf3", "-s", "-1", "--json"], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True)
    report, server_report = iperf3_reports(
        server, lambda: tcp_listening(racks, "b7", 5201),
        lambda: racks["c7"].run(["iperf3", "-c", "b7", "-n", "4M", "--json"], capture_output=True, text=True,
                                timeout=120))
    assert report["end"]["sum_sent"]["bytes"] >= 4 * 1024 * 1024
    assert 0 < server_report["end"]["sum_received"]["bytes"] <= report["end"]["sum_sent"]["bytes"]


def test_a_lost_agent_is_reported_within_two_seconds_and_the_rest_runs_on(cluster):
    net = Emulation(topology("racks"), name="lost", cluster=cluster.address, encrypt=False)
    with net:
        victims = [n for n, m in net.plan.machine_of.items() if m == 2]
        agent = net.cluster.session.agents[2]
        processes = [psutil.Process(net.supervisor[n].pid) for n in victims]
        processes.append(psutil.Process(agent.started["zygote_pid"]))
        killed_at = time.monotonic()
        os.kill(agent.started["pid"], signal.SIGKILL)
        for name in victims:
            net.expect_crash(name)
        wait_for(lambda: not any(net.supervisor[n].alive for n in victims), timeout=5.0, interval=0.01)
        reported = time.monotonic() - killed_at
        assert reported <= 2.0, f"reported after {reported:.2f} s"
        assert not wait_gone(processes, 10.0), "the lost machine's processes outlived its agent"
        assert net["a1"].ping("b1", count=1, timeout=2.0).received == 1
        assert "agent died" in (net.status()["cluster"]["machines"]["2"]["lost"] or "")
        everything = [psutil.Process(ref.started["pid"]) for i, ref in net.cluster.session.agents.items() if i != 2]
        everything += [psutil.Process(h.pid) for h in net.supervisor.processes.values() if h.alive]
    assert not wait_gone(everything, 10.0), "teardown left processes"


def netemu(*words: str, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(LAUNCHER), *words], capture_output=True, text=True, timeout=timeout)


def test_the_cli_on_a_detached_cluster_emulation(cluster, tmp_path):
    started = netemu("up", str(topology("racks")), "--name", "cli", "-d", "--cluster", cluster.address)
    assert started.returncode == 0, started.stdout + started.stderr
    try:
        status = netemu("status", "cli")
        assert status.returncode == 0, status.stderr
        assert "CURVE-encrypted" in status.stdout
        rows = {line.split()[0]: line.split() for line in status.stdout.splitlines()[2:] if line.strip()}
        # process kind pid alive answering machine: c1 runs on machine 2 (pinned with rack3)
        assert rows["c1"][3:6] == ["yes", "yes", "2"] and rows["a1"][5] == "0", status.stdout
        pcap = tmp_path / "core.pcap"
        assert netemu("capture", "--name", "cli", "core", "-w", str(pcap)).returncode == 0
        require_trap()
        pinged = netemu("exec", "--name", "cli", "c1", "--", "ping", "-c", "2", "-i", "0.2", "a1")
        assert pinged.returncode == 0 and "2 received" in pinged.stdout, pinged.stdout + pinged.stderr
        failed = netemu("exec", "--name", "cli", "b1", "--", "sh", "-c", "echo out; echo err >&2; exit 5")
        assert (failed.returncode, failed.stdout, failed.stderr) == (5, "out\n", "err\n")
        stopped = netemu("capture", "--name", "cli", "core", "--stop")
        assert stopped.returncode == 0, stopped.stderr
        assert len(icmp_echoes(pcap)) == 4  # c1 -> a1 crosses core: 2 requests, 2 replies
    finally:
        down = netemu("down", "cli")
    assert down.returncode == 0, down.stdout + down.stderr
    assert "cli" not in netemu("status").stdout


def test_agents_of_a_vanished_controller_tear_down_by_themselves(cluster):
    import json

    started = netemu("up", str(topology("single_lan")), "--name", "orphan", "-d", "--cluster", cluster.address)
    assert started.returncode == 0, started.stdout + started.stderr
    status = json.loads(netemu("status", "--json").stdout)
    supervisor = next(e["supervisor_pid"] for e in status if e["name"] == "orphan")
    state = json.loads((Path(os.environ["NETEMU_RUN_DIR"]) / "orphan" / "state.json").read_text())
    pids = [record["pid"] for record in state["processes"].values()]
    processes = [psutil.Process(pid) for pid in pids]
    os.kill(supervisor, signal.SIGKILL)  # the controller vanishes; its detached agents live on
    # within the agents' grace (10 s) and a poll of their watchdog, they stop everything
    assert not wait_gone(processes, 20.0), "the processes outlived their vanished controller"
    import ray

    wait_for(lambda: not [a for a in ray.util.list_named_actors(all_namespaces=True)
                          if a["name"].startswith("netemu.orphan.")], timeout=10.0)
    down = netemu("down", "orphan")  # the stale run directory
    assert down.returncode == 0, down.stdout + down.stderr
    assert "orphan" not in netemu("status").stdout


def test_check_validates_the_placement_against_the_cluster(cluster, tmp_path):
    checked = netemu("check", str(topology("racks")), "--cluster", cluster.address)
    assert checked.returncode == 0, checked.stderr
    assert "placement on 3 Ray nodes" in checked.stdout and "spread over machines: core" in checked.stdout
    wrong = tmp_path / "wrong.yaml"
    wrong.write_text(topology("racks").read_text().replace("  rack3: m2", "  rack3: m7"))
    refused = netemu("check", str(wrong), "--cluster", cluster.address)
    line = next(i for i, text in enumerate(wrong.read_text().splitlines(), 1) if text == "  rack3: m7")
    assert refused.returncode == 1 and f"{wrong}:{line}: placement.rack3:" in refused.stderr, refused.stderr


def test_the_netemu_cli_runs_programs_on_nodes_of_other_machines(cluster, tmp_path):
    require_trap()
    script = tmp_path / "demo"
    script.write_text("c1 ping -c 1 a1\nc1 ip -4 addr show eth0\nb2 sh -c 'exit 4'\nexit\n")
    shown = netemu("up", str(topology("racks")), "--name", "fg", "--cluster", cluster.address,
                   "--script", str(script), timeout=180)
    # a script with a failing command ends with status 1, as on one machine
    assert shown.returncode == 1, shown.stdout + shown.stderr
    assert "1 received" in shown.stdout and "10.3.0.11/24" in shown.stdout, shown.stdout
    assert "*** b2: sh exited with status 4" in shown.stdout, shown.stdout


def test_a_topology_capture_of_a_spread_segment_is_merged_at_teardown(cluster, tmp_path):
    from control.topology import parse_topology

    pcap = tmp_path / "lan.pcap"
    text = f"""
name: capt
segments:
  lan: {{kind: switch, capture: {pcap}}}
placement: {{h1: m0, h2: m1}}
nodes:
  h1: {{kind: host, interfaces: {{eth0: {{segment: lan, ip: 10.0.0.1/24}}}}}}
  h2: {{kind: host, interfaces: {{eth0: {{segment: lan, ip: 10.0.0.2/24}}}}}}
"""
    with Emulation(parse_topology(text, "capt.yaml"), cluster=cluster.address) as net:
        assert net.plan.segment_devices["lan"] == ["lan", "lan.1"]
        assert net["h1"].ping("h2", count=2, interval=0.2).received == 2
        assert not pcap.exists()  # each machine writes its part; merged when the capture ends
    echoes = icmp_echoes(pcap)
    assert len(echoes) == 4 and len(set(echoes)) == 4  # 2 requests, 2 replies, each once
