"""Teardown leaves nothing behind: not after `with`, not when the launcher is SIGKILLed; names are exclusive."""
from __future__ import annotations

import queue
import subprocess
import sys
import threading

import psutil
import pytest

from control.emulation import Emulation
from control.rundir import EmulationRunning
from tests.waiting import wait_for

from .helpers import LAUNCHER, emulation_processes, private_run_base, socket_files, still_running, topology, wait_gone

pytestmark = pytest.mark.timeout(60)


def test_with_block_stops_every_process_and_removes_the_run_directory():
    with Emulation(topology("single_lan"), name="scn-td-with") as net:
        processes = emulation_processes(net)
        run_dir = net.supervisor.run_dir.path
        assert len(processes) == 4 + 1 + 1  # hosts, the switch, the zygote
        assert still_running(processes) == processes
        assert socket_files(run_dir)
    assert still_running(processes) == []
    assert not run_dir.exists()


def test_with_block_that_raises_still_tears_down():
    with pytest.raises(RuntimeError, match="scenario failed"):
        with Emulation(topology("two_lans"), name="scn-td-raise") as net:
            processes = emulation_processes(net)
            run_dir = net.supervisor.run_dir.path
            raise RuntimeError("scenario failed")
    assert still_running(processes) == []
    assert not run_dir.exists()


def _read_lines(stream, lines: queue.Queue) -> None:
    for line in stream:
        lines.put(line)


def _wait_for_line(lines: queue.Queue, text: str, timeout: float) -> list[str]:
    seen = []

    def printed() -> bool:
        try:
            seen.append(lines.get(timeout=0.1))
        except queue.Empty:
            return False
        return text in seen[-1]

    try:
        return wait_for(printed, timeout=timeout, interval=0) and seen
    except TimeoutError:
        pass
    raise AssertionError(f"{text!r} not printed within {timeout} s; output so far: {''.join(seen)!r}")


def test_sigkill_of_the_launcher_takes_all_its_children_down_within_2_seconds():
    with private_run_base() as base:
        script = base / "slow.cli"
        script.write_text("h1 ping -c 100 h2\n")
        launcher = subprocess.Popen([sys.executable, str(LAUNCHER), "up", str(topology("single_lan")),
                                     "--name", "scn-td-kill", "--script", str(script)],
                                    stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        children: list[psutil.Process] = []
        try:
            lines: queue.Queue = queue.Queue()
            threading.Thread(target=_read_lines, args=(launcher.stdout, lines), daemon=True).start()
            _wait_for_line(lines, "netemu> h1 ping -c 100 h2", timeout=30)
            children = psutil.Process(launcher.pid).children(recursive=True)
            assert len(children) >= 4 + 1 + 1
            assert socket_files(base)
            launcher.kill()
            launcher.wait(timeout=5)
            assert wait_gone(children, timeout=2.0) == []
            assert socket_files(base) == []
        finally:
            if launcher.poll() is None:
                launcher.kill()
                launcher.wait()
            for child in still_running(children):
                child.kill()
            launcher.stdout.close()


def test_two_emulations_with_different_names_run_side_by_side():
    with Emulation(topology("single_lan"), name="scn-td-left") as left, \
            Emulation(topology("single_lan"), name="scn-td-right") as right:
        assert left.supervisor.run_dir.path != right.supervisor.run_dir.path
        left_pids = {p.pid for p in emulation_processes(left)}
        assert left_pids.isdisjoint(p.pid for p in emulation_processes(right))
        assert left["h1"].ping("h4", count=1).received == 1
        assert right["h1"].ping("h4", count=1).received == 1
        right_processes = emulation_processes(right)
    assert still_running(right_processes) == []


def test_the_same_name_twice_is_refused_and_the_first_keeps_running():
    with Emulation(topology("single_lan"), name="scn-td-twice") as first:
        second = Emulation(topology("two_lans"), name="scn-td-twice")
        with pytest.raises(EmulationRunning, match="already running"):
            second.start()
        assert second.supervisor.zygote_pid is None or not psutil.pid_exists(second.supervisor.zygote_pid)
        assert first.supervisor.run_dir.path.exists()
        assert first["h1"].ping("h2", count=1).received == 1
