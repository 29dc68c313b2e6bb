"""A segment's `tap:` (issue 15): parsing, the plan's device config, and the refusals before anything
starts (no CAP_NET_ADMIN, a missing namespace) of `Emulation` and `netemu up`; `netemu check` warns.

Broken `tap:` keys are in the corpus (broken/34_tap.yaml). The TAP itself is exercised, as root,
by tests/scenarios/test_tap_basic.py.
"""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

import bus.tap
from bus.tap import netns_path, preflight_problems, privilege_problem
from control.emulation import Emulation, EmulationError, tap_problems
from control.plan import build_plan
from control.topology import format_summary, load_topology

ROOT = Path(__file__).resolve().parents[3]
MISSING_NS = "netemu-test-no-such-namespace"

TOPOLOGY = """\
name: tap-config
defaults:
  link: {mtu: 1400}
segments:
  lan0:
    kind: switch
    delay: 1ms
    tap: {device: ntap0, netns: %s}
  lan1: {kind: hub, tap: {device: ntap1}}
nodes:
  h1:
    kind: host
    interfaces:
      eth0: {segment: lan0, ip: 10.0.0.10/24}
"""


@pytest.fixture
def topology_file(tmp_path: Path) -> Path:
    path = tmp_path / "tap.yaml"
    path.write_text(TOPOLOGY % MISSING_NS)
    return path


def test_tap_is_parsed_into_the_segment(topology_file):
    topology = load_topology(topology_file)
    lan0, lan1 = topology.segments["lan0"], topology.segments["lan1"]
    assert (lan0.tap.device, lan0.tap.netns, lan0.tap.where.line) == ("ntap0", MISSING_NS, 8)
    assert (lan1.tap.device, lan1.tap.netns) == ("ntap1", None)
    assert topology.segments.keys() == {"lan0", "lan1"}
    summary = format_summary(topology)
    assert f"tap@ntap0 (Linux TAP, netns {MISSING_NS})" in summary
    assert "tap@ntap1 (Linux TAP, netns of the host)" in summary


def test_the_plan_gives_the_device_its_tap_and_a_port_with_the_segment_parameters(topology_file, tmp_path):
    plan = build_plan(load_topology(topology_file), tmp_path)
    lan0 = plan["lan0"].config
    assert lan0["tap"] == {"device": "ntap0", "netns": MISSING_NS, "port": "tap@ntap0"}
    port = lan0["ports"]["tap@ntap0"]
    assert port == lan0["defaults"]
    assert port["mtu"] == 1400 and port["delay"] == pytest.approx(0.001)
    assert plan["lan1"].config["tap"] == {"device": "ntap1", "netns": None, "port": "tap@ntap1"}
    assert "tap" not in plan["h1"].config


def test_a_topology_without_tap_has_no_tap_config_and_no_preflight(tmp_path):
    topology = load_topology(ROOT / "topologies" / "two_lans.yaml")
    assert all("tap" not in p.config for p in build_plan(topology, tmp_path).devices)
    assert tap_problems(topology) == []


def test_netns_paths():
    assert netns_path("blue") == "/run/netns/blue"
    assert netns_path("/proc/1/ns/net") == "/proc/1/ns/net"


def test_preflight_names_a_missing_namespace_and_how_to_make_it():
    problems = preflight_problems([("lan0", "ntap0", MISSING_NS), ("lan1", "ntap1", None)])
    missing = [p for p in problems if "does not exist" in p]
    assert missing == [f"segment lan0: tap ntap0: network namespace {MISSING_NS!r} does not exist "
                       f"(/run/netns/{MISSING_NS} is missing; create it first: ip netns add {MISSING_NS})"]
    assert (privilege_problem() is None) == (len(problems) == 1)


def test_privilege_problem_reads_cap_net_admin_from_proc_status():
    with open("/proc/self/status") as handle:
        capabilities = next(int(line.split()[1], 16) for line in handle if line.startswith("CapEff:"))
    has_it = bool(capabilities & (1 << 12)) and os.path.exists("/dev/net/tun")
    assert (privilege_problem() is None) == has_it


def test_emulation_refuses_before_starting_anything(topology_file, monkeypatch):
    monkeypatch.setattr(bus.tap, "privilege_problem", lambda: "a TAP device needs root (CAP_NET_ADMIN): run netemu as root (sudo)")
    net = Emulation(topology_file)
    with pytest.raises(EmulationError) as error:
        net.start()
    message = str(error.value)
    assert "needs root (CAP_NET_ADMIN)" in message
    assert f"network namespace {MISSING_NS!r} does not exist" in message
    assert net.supervisor.run_dir is None and net.supervisor.zygote_pid is None  # nothing was started


def _launcher(*argv: str, run_base: str, drop_net_admin: bool = False) -> subprocess.CompletedProcess:
    command = [sys.executable, str(ROOT / "launcher.py"), *argv]
    if drop_net_admin and os.geteuid() == 0:
        # Root without CAP_NET_ADMIN: a program exec'd with it out of the bounding set does not get it.
        setpriv = shutil.which("setpriv")
        if setpriv is None:
            pytest.fail("setpriv (util-linux) is missing", pytrace=False)
        command = [setpriv, "--bounding-set", "-net_admin", *command]
    env = dict(os.environ, NETEMU_RUN_DIR=run_base)
    return subprocess.run(command, capture_output=True, text=True, timeout=60, cwd=ROOT, env=env, stdin=subprocess.DEVNULL)


def test_netemu_up_without_cap_net_admin_refuses_before_starting_anything(tmp_path):
    path = tmp_path / "tap.yaml"
    path.write_text((TOPOLOGY % MISSING_NS).replace(f"tap: {{device: ntap0, netns: {MISSING_NS}}}", "tap: {device: ntap0}"))
    base = tempfile.mkdtemp(prefix="ne-", dir="/tmp")
    try:
        result = _launcher("up", str(path), run_base=base, drop_net_admin=True)
        assert result.returncode == 1, result.stderr
        assert "cannot start tap-config: a TAP device needs root (CAP_NET_ADMIN)" in result.stderr
        assert os.listdir(base) == []  # no run directory, so no process was started
    finally:
        shutil.rmtree(base, ignore_errors=True)


def test_netemu_up_refuses_a_missing_namespace(topology_file):
    base = tempfile.mkdtemp(prefix="ne-", dir="/tmp")
    try:
        result = _launcher("up", str(topology_file), run_base=base)
        assert result.returncode == 1
        assert f"network namespace {MISSING_NS!r} does not exist" in result.stderr
        assert os.listdir(base) == []
    finally:
        shutil.rmtree(base, ignore_errors=True)


def test_netemu_check_only_warns(topology_file):
    base = tempfile.mkdtemp(prefix="ne-", dir="/tmp")
    try:
        result = _launcher("check", str(topology_file), run_base=base, drop_net_admin=True)
    finally:
        shutil.rmtree(base, ignore_errors=True)
    assert result.returncode == 0, result.stderr
    assert "tap@ntap0" in result.stdout
    assert "netemu: warning: a TAP device needs root (CAP_NET_ADMIN)" in result.stderr
    assert f"network namespace {MISSING_NS!r} does not exist" in result.stderr
    assert "(netemu up will refuse)" in result.stderr


def test_the_graph_draws_the_tap_beside_its_segment(topology_file):
    from control.graph import build_graph
    graph = build_graph(load_topology(topology_file))
    assert graph.nodes["tap@ntap0@lan0"] == {"kind": "tap", "label": f"Linux ntap0\n({MISSING_NS})"}
    assert graph.nodes["tap@ntap1@lan1"]["label"] == "Linux ntap1\n(host)"
    assert graph.has_edge("tap@ntap0@lan0", "lan0") and graph.has_edge("tap@ntap1@lan1", "lan1")
