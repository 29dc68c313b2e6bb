"""Run directories a killed launcher left behind: `status` shows them STALE, `down NAME` / `down --all`
remove them, and `up`/`status` sweep away those whose processes are all gone.

The CLI runs as a subprocess, as a user runs it, under a private NETEMU_RUN_DIR.
A "launcher killed by SIGKILL" is the detached supervisor of `netemu up -d`,
killed outright.
"""
from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import psutil
import pytest

from control.rundir import RunDir, list_emulations, sweep_stale, wait_unlocked

from ..scenarios.helpers import LAUNCHER, ROOT, private_run_base, socket_files, still_running, wait_gone
from ..waiting import wait_for

pytestmark = pytest.mark.timeout(90)


@pytest.fixture
def base():
    """A private run base; whatever is still there at the end is killed and removed."""
    with private_run_base() as path:
        try:
            yield path
        finally:
            for info in list_emulations(path):
                processes = [psutil.Process(pid) for pid in info.live_processes()]
                if info.alive and info.supervisor_pid:
                    os.kill(info.supervisor_pid, signal.SIGKILL)
                for process in still_running(processes):
                    process.kill()


def netemu(base: Path, *args: str, timeout: float = 60) -> subprocess.CompletedProcess:
    """Run `netemu ARGS...` (launcher.py) with NETEMU_RUN_DIR=base and capture its output."""
    return subprocess.run([sys.executable, str(LAUNCHER), *args], capture_output=True, text=True, timeout=timeout,
                          stdin=subprocess.DEVNULL, cwd=ROOT, env={**os.environ, "NETEMU_RUN_DIR": str(base)})


def up(base: Path, name: str) -> list[psutil.Process]:
    """`netemu up -d single_lan --name NAME`; its supervisor, zygote and every process it runs."""
    result = netemu(base, "up", "-d", "topologies/single_lan.yaml", "--name", name)
    assert result.returncode == 0, result.stderr
    state = json.loads((base / name / "state.json").read_text())
    pids = [state["supervisor"]["pid"], state["zygote"]["pid"]] + [p["pid"] for p in state["processes"].values()]
    assert len(pids) == 1 + 1 + 5
    return [psutil.Process(pid) for pid in pids]


def kill_launcher(base: Path, processes: list[psutil.Process], *, freeze_zygote: bool = False) -> None:
    """SIGKILL the supervisor; its lock is then free. With `freeze_zygote`, the zygote is SIGSTOPped
    first, so it cannot take its children down: they outlive the launcher."""
    supervisor, zygote = processes[:2]
    if freeze_zygote:
        zygote.suspend()
    supervisor.kill()
    path = next(info.path for info in list_emulations(base) if info.supervisor_pid == supervisor.pid)
    assert wait_unlocked(path, 5.0)


def test_status_sweeps_a_dead_emulation_whose_processes_are_gone(base):
    processes = up(base, "st-gone")
    kill_launcher(base, processes)
    assert wait_gone(processes, timeout=5.0) == []  # the zygote's PDEATHSIG took the rest down
    assert {"lock", "log", "state.json"} <= set(os.listdir(base / "st-gone"))
    [info] = list_emulations(base)
    assert (info.name, info.status, info.live_processes()) == ("st-gone", "STALE", [])

    result = netemu(base, "status")
    assert result.returncode == 0
    assert result.stdout == "no emulation is running\n"
    assert re.fullmatch(r"netemu: removed the stale run directory of st-gone \(supervisor pid \d+ had died\) at \S+\n",
                        result.stderr), result.stderr
    assert not (base / "st-gone").exists()
    assert socket_files(base) == []


def test_up_sweeps_a_dead_emulation_before_starting(base):
    dead = up(base, "st-dead")
    kill_launcher(base, dead)
    assert wait_gone(dead, timeout=5.0) == []
    assert (base / "st-dead").exists()

    live = up(base, "st-live")  # the sweep runs first
    assert not (base / "st-dead").exists()
    assert [(info.name, info.status) for info in list_emulations(base)] == [("st-live", "running")]
    down = netemu(base, "down", "st-live")
    assert down.returncode == 0, down.stderr
    assert wait_gone(live, timeout=5.0) == []
    assert list_emulations(base) == []


def test_stale_emulation_with_processes_left_is_listed_and_down_name_removes_it(base):
    processes = up(base, "st-stuck")
    kill_launcher(base, processes, freeze_zygote=True)
    survivors = still_running(processes[1:])
    assert len(survivors) == 6  # the frozen zygote and its five children

    listing = netemu(base, "status")
    assert listing.returncode == 0
    assert listing.stderr == ""  # processes are left: not swept
    assert re.match(r"st-stuck\s+STALE \(supervisor died\)\s+supervisor \d+  5 processes  ", listing.stdout), listing.stdout
    assert [(e["name"], e["status"]) for e in json.loads(netemu(base, "status", "--json").stdout)] == [
        ("st-stuck", "STALE")]
    detail = netemu(base, "status", "st-stuck")
    assert (detail.returncode, detail.stderr) == (1, "netemu: st-stuck is STALE: its supervisor died, some of its "
                                                     "processes still run; remove them with `netemu down st-stuck`\n")

    down = netemu(base, "down", "st-stuck")
    assert down.returncode == 0, down.stderr
    assert down.stdout == "*** removed the leftovers of st-stuck (its supervisor had died)\n"
    assert wait_gone(survivors, timeout=2.0) == []
    assert not (base / "st-stuck").exists()
    assert socket_files(base) == []


def test_down_all_stops_every_running_emulation_and_removes_stale_ones(base):
    first, second = up(base, "st-all-a"), up(base, "st-all-b")
    stuck = up(base, "st-all-c")
    kill_launcher(base, stuck, freeze_zygote=True)
    assert [(info.name, info.status) for info in list_emulations(base)] == [
        ("st-all-a", "running"), ("st-all-b", "running"), ("st-all-c", "STALE")]

    result = netemu(base, "down", "--all")
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert len(lines) == 3, lines
    assert re.fullmatch(r"\*\*\* st-all-a stopped in \d+\.\d\d s", lines[0])
    assert re.fullmatch(r"\*\*\* st-all-b stopped in \d+\.\d\d s", lines[1])
    assert lines[2] == "*** removed the leftovers of st-all-c (its supervisor had died)"
    assert wait_gone(first + second + stuck, timeout=2.0) == []
    assert list_emulations(base) == []
    assert socket_files(base) == []

    again = netemu(base, "down", "--all")
    assert (again.returncode, again.stdout) == (0, "no emulation is running\n")
    both = netemu(base, "down", "st-all-a", "--all")
    assert (both.returncode, both.stderr) == (2, "netemu: down: give a NAME or --all, not both\n")


def test_a_run_directory_kept_for_its_logs_is_not_stale_and_is_not_swept(base):
    run_dir = RunDir.acquire("st-logs")
    run_dir.write_state({"name": "st-logs", "processes": {}})
    run_dir.log_path("h1").write_text("h1's last words\n")
    run_dir.release(keep_logs=True)
    [info] = list_emulations(base)
    assert (info.name, info.alive, info.stale, info.status) == ("st-logs", False, False, "stopped")
    assert sweep_stale(base) == []
    assert (base / "st-logs" / "log" / "h1.log").read_text() == "h1's last words\n"
    listing = netemu(base, "status")
    assert re.match(r"st-logs\s+stopped \(logs kept\)\s+supervisor None  0 processes  ", listing.stdout), listing.stdout
    down = netemu(base, "down", "st-logs")
    assert (down.returncode, down.stdout) == (0, "*** removed the kept logs of st-logs\n")
    assert not (base / "st-logs").exists()


def test_status_of_a_detached_emulation_shows_how_a_crashed_process_ended(base):
    processes = up(base, "st-crash")
    state = json.loads((base / "st-crash" / "state.json").read_text())
    h2 = psutil.Process(state["processes"]["h2"]["pid"])
    h2.kill()

    def h2_row():
        report = json.loads(netemu(base, "status", "st-crash", "--json").stdout)
        row = next(r for r in report["processes"] if r["name"] == "h2")
        return row if row["signal"] is not None else None

    row = wait_for(h2_row, timeout=10.0)
    assert (row["alive"], row["answering"], row["signal"], row["returncode"]) == (False, False, signal.SIGKILL, None)
    table = netemu(base, "status", "st-crash").stdout.splitlines()
    assert [line.split() for line in table if line.startswith("h2 ")] == [
        ["h2", "nodes.kernel:run", str(h2.pid), "NO", "(SIGKILL)", "NO"]]
    assert netemu(base, "down", "st-crash").returncode == 0
    assert wait_gone(processes, timeout=5.0) == []
