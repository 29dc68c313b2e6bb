"""The `netemu` command line, run as a user runs it: one subprocess per verb.

Every emulation lives under a private NETEMU_RUN_DIR, so `status` and `down`
without a name see only this module's emulations.
"""
from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import xml.etree.ElementTree as ElementTree
from pathlib import Path

import psutil
import pytest
from scapy.layers.inet import ICMP
from scapy.utils import rdpcap

from bus.transport import ControlClient
from control.rundir import list_emulations, wait_unlocked

from ..scenarios.helpers import LAUNCHER, ROOT, private_run_base, socket_files, still_running, wait_gone

BROKEN = ROOT / "tests" / "unit" / "control" / "broken" / "07_bad_cidr.yaml"
PCAP_MAGIC_NS = (b"\x4d\x3c\xb2\xa1", b"\xa1\xb2\x3c\x4d")  # nanosecond pcap, either byte order
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def base():
    """The private run base; whatever is still running there at the end is stopped."""
    with private_run_base() as path:
        yield path
        for info in list_emulations(path):
            if info.alive and info.supervisor_pid:
                os.kill(info.supervisor_pid, signal.SIGTERM)
                wait_unlocked(info.path, 10.0)


def netemu(*args: str, timeout: float = 60, **kwargs) -> subprocess.CompletedProcess:
    """Run `netemu ARGS...` (launcher.py) and capture its output."""
    return subprocess.run([sys.executable, str(LAUNCHER), *args], capture_output=True, text=True,
                          timeout=timeout, stdin=subprocess.DEVNULL, cwd=ROOT, **kwargs)


# -- check --------------------------------------------------------------------------------


@pytest.mark.timeout(30)
def test_check_of_a_good_file_prints_a_summary_and_exits_0():
    result = netemu("check", "topologies/two_lans.yaml")
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines()[0] == (
        "two-lans: 3 nodes (2 hosts, 1 router), 1 switch, 1 hub, 0 point-to-point links, 0 segment links")
    assert "eth1   10.0.2.1/24" in result.stdout
    assert result.stderr == ""


@pytest.mark.timeout(30)
def test_check_of_a_broken_file_prints_file_line_key_problem_and_exits_1():
    result = netemu("check", str(BROKEN))
    assert result.returncode == 1
    assert result.stdout == ""
    errors = result.stderr.splitlines()
    assert errors[0] == f"{BROKEN}:8: nodes.h1.interfaces.eth0.ip: '10.0.1.300' is not an IPv4 address"
    assert len(errors) == 5
    assert all(re.fullmatch(rf"{re.escape(str(BROKEN))}:\d+: [\w.-]+: .+", line) for line in errors), errors


@pytest.mark.timeout(30)
def test_check_of_a_missing_file_says_so_and_exits_1():
    result = netemu("check", "topologies/no_such_file.yaml")
    assert result.returncode == 1
    assert result.stderr == "topologies/no_such_file.yaml: cannot read the file: No such file or directory\n"


# -- up -d, status, capture, down -----------------------------------------------------------


def _state(base: Path, name: str) -> dict:
    return json.loads((base / name / "state.json").read_text())


@pytest.mark.timeout(90)
def test_detached_emulation_lifecycle_up_status_capture_down(base):
    env = {**os.environ, "NETEMU_RUN_DIR": str(base)}
    up = netemu("up", "-d", "topologies/two_lans.yaml", "--name", "cli-life", env=env)
    assert up.returncode == 0, up.stderr
    assert "cli-life running in the background" in up.stdout
    assert "netemu down cli-life" in up.stdout

    listing = netemu("status", env=env)
    assert listing.returncode == 0
    assert re.match(r"cli-life\s+running\s+supervisor \d+  5 processes  ", listing.stdout), listing.stdout
    assert [(e["name"], e["alive"]) for e in json.loads(netemu("status", "--json", env=env).stdout)] == [
        ("cli-life", True)]

    detail = netemu("status", "cli-life", env=env)
    assert detail.returncode == 0
    lines = detail.stdout.splitlines()
    assert lines[0].startswith("emulation cli-life: supervisor pid ")
    assert lines[1].split() == ["process", "kind", "pid", "alive", "answering"]
    rows = {line.split()[0]: line.split() for line in lines[2:7]}
    assert {name: (row[1], row[3], row[4]) for name, row in rows.items()} == {
        "h1": ("host", "yes", "yes"), "h2": ("host", "yes", "yes"), "r1": ("router", "yes", "yes"),
        "lan1": ("switch", "yes", "yes"), "lan2": ("hub", "yes", "yes")}
    assert "segment  port     rx_pkts  tx_pkts  drops" in detail.stdout

    report = json.loads(netemu("status", "cli-life", "--json", env=env).stdout)
    assert all(p["alive"] and p["answering"] for p in report["processes"])
    assert sorted(report["links"]) == ["lan1", "lan2"]
    assert sorted(report["links"]["lan2"]) == ["h2:eth0", "r1:eth1"]
    pids = [p["pid"] for p in report["processes"]]
    supervisor_pid = _state(base, "cli-life")["supervisor"]["pid"]
    processes = [psutil.Process(pid) for pid in pids + [supervisor_pid]]

    pcap = base / "lan1.pcap"
    started = netemu("capture", "lan1", "-w", str(pcap), env=env)
    assert (started.returncode, started.stdout) == (0, f"capturing lan1 to {pcap}\n")
    with ControlClient(_state(base, "cli-life")["processes"]["h1"]["control"], timeout=10.0) as h1:
        assert h1.request("ping", {"dst": "h2", "count": 2, "interval": 0.1, "timeout": 1.0})["received"] == 2
    stopped = netemu("capture", "lan1", "--stop", env=env)
    assert stopped.returncode == 0
    assert pcap.read_bytes()[:4] in PCAP_MAGIC_NS
    frames = rdpcap(str(pcap))
    assert stopped.stdout == f"capture of lan1 stopped: {len(frames)} frames in {pcap}\n"
    assert len([p for p in frames if p.haslayer(ICMP)]) == 4

    down = netemu("down", "cli-life", env=env)
    assert down.returncode == 0, down.stderr
    assert re.fullmatch(r"\*\*\* cli-life stopped in \d+\.\d\d s\n", down.stdout)
    assert wait_gone(processes, timeout=2.0) == []
    assert not (base / "cli-life").exists()
    assert socket_files(base) == []
    assert netemu("status", env=env).stdout == "no emulation is running\n"


@pytest.mark.timeout(30)
def test_capture_without_file_or_stop_is_a_usage_error(base):
    env = {**os.environ, "NETEMU_RUN_DIR": str(base)}
    up = netemu("up", "-d", "topologies/single_lan.yaml", "--name", "cli-capture", env=env)
    assert up.returncode == 0, up.stderr
    try:
        result = netemu("capture", "lan1", "--name", "cli-capture", env=env)
        assert result.returncode == 2
        assert "give -w FILE.pcap to start or --stop to stop" in result.stderr
        unknown = netemu("capture", "lan9", "--name", "cli-capture", env=env)
        assert (unknown.returncode, unknown.stderr) == (1, "netemu: cli-capture has no segment 'lan9'\n")
    finally:
        assert netemu("down", "cli-capture", env=env).returncode == 0


@pytest.mark.timeout(30)
def test_down_of_an_emulation_that_does_not_run_is_a_clear_error(base):
    env = {**os.environ, "NETEMU_RUN_DIR": str(base)}
    result = netemu("down", "cli-nope", env=env)
    assert result.returncode == 1
    assert result.stderr == "netemu: no running emulation named 'cli-nope' (none is running)\n"
    anonymous = netemu("down", env=env)
    assert (anonymous.returncode, anonymous.stderr) == (1, "netemu: no emulation is running\n")


@pytest.mark.timeout(30)
def test_status_of_an_unknown_emulation_is_an_error(base):
    result = netemu("status", "cli-nope", env={**os.environ, "NETEMU_RUN_DIR": str(base)})
    assert result.returncode == 1
    assert "no running emulation named 'cli-nope'" in result.stderr


# -- graph ----------------------------------------------------------------------------------


@pytest.mark.timeout(60)
def test_graph_draws_valid_svg_and_png(base):
    svg, png = base / "two_lans.svg", base / "two_lans.png"
    result = netemu("graph", "topologies/two_lans.yaml", "-o", str(svg))
    assert (result.returncode, result.stdout) == (0, f"wrote {svg}\n"), result.stderr
    root = ElementTree.parse(svg).getroot()
    assert root.tag == "{http://www.w3.org/2000/svg}svg"
    assert "h1" in svg.read_text() and "lan2" in svg.read_text()
    result = netemu("graph", "topologies/campus.yaml", "-o", str(png))
    assert (result.returncode, result.stdout) == (0, f"wrote {png}\n"), result.stderr
    assert png.read_bytes()[:8] == PNG_SIGNATURE
    assert png.stat().st_size > 1000


@pytest.mark.timeout(60)
def test_graph_refuses_other_formats(base):
    result = netemu("graph", "topologies/two_lans.yaml", "-o", str(base / "graph.txt"))
    assert result.returncode == 1
    assert "choose an .svg or .png file name" in result.stderr
    assert not (base / "graph.txt").exists()


# -- make run without a terminal ---------------------------------------------------------------


@pytest.mark.timeout(60)
def test_up_with_the_demo_script_exits_0_and_prints_ping_statistics(base):
    env = {**os.environ, "NETEMU_RUN_DIR": str(base)}
    result = netemu("up", "topologies/two_lans.yaml", "--script", "topologies/two_lans.demo", env=env)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "*** two-lans ready in " in result.stdout
    assert "netemu> h1 ping -c 3 -i 0.2 h2" in result.stdout
    assert "--- h2 ping statistics ---" in result.stdout
    assert "3 packets transmitted, 3 received, 0% packet loss" in result.stdout
    assert "1 packets transmitted, 0 received, 100% packet loss" in result.stdout  # while h2's link is down
    assert "***" not in result.stdout.replace("*** two-lans", "").replace("*** Ping", "").replace("*** Results", "")
    assert re.search(r"\*\*\* two-lans stopped in \d+\.\d\d s\n$", result.stdout)
    assert not (base / "two-lans").exists()


@pytest.mark.timeout(60)
def test_up_with_a_failing_script_line_exits_1(base):
    env = {**os.environ, "NETEMU_RUN_DIR": str(base)}
    script = base / "failing.cli"
    script.write_text("h1 ping -c 1 h2\nh9 ping h1\nnodes\n")
    result = netemu("up", "topologies/two_lans.yaml", "--name", "cli-fail", "--script", str(script), env=env)
    assert result.returncode == 1
    assert "*** unknown command 'h9'; type help" in result.stdout
    assert "available nodes are:" in result.stdout  # the script goes on after a failed line
    assert not (base / "cli-fail").exists()


@pytest.mark.timeout(30)
def test_up_of_a_broken_file_exits_1_without_starting_anything(base):
    env = {**os.environ, "NETEMU_RUN_DIR": str(base)}
    before = {p.pid for p in psutil.Process().children(recursive=True)}
    result = netemu("up", "-d", str(BROKEN), env=env)
    assert result.returncode == 1
    assert f"{BROKEN}:8: nodes.h1.interfaces.eth0.ip" in result.stderr
    assert list_emulations(base) == []
    assert {p.pid for p in still_running(psutil.Process().children(recursive=True))} <= before
