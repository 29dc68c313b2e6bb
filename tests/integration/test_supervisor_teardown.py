"""Teardown when the supervisor's own process is signalled or killed, and stale run directories."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from control.rundir import RunDir, list_emulations
from control.supervisor import Supervisor

from .test_supervisor_helpers import TARGET, alive, make_supervisor, run_base, supervisors, wait_gone

__all__ = ["run_base", "supervisors"]  # fixtures used by name

ROOT = Path(__file__).resolve().parents[2]

# A supervisor in its own process: three children (one ignores SIGTERM, one has a
# child of its own), then it prints every pid as JSON and waits to be signalled.
SUPERVISOR_SCRIPT = """
import json, sys, time
from control.supervisor import Supervisor
name, path, count = sys.argv[1], sys.argv[2], int(sys.argv[3])
target = "tests.integration.supervised_targets:serve"
with Supervisor(name, path, preload=["tests.integration.supervised_targets"]) as sup:
    configs = [{}, {"ignore_sigterm": True}, {"grandchild": True}][:count]
    sup.spawn_many([(f"p{i}", target, config) for i, config in enumerate(configs)])
    sup.wait_ready(timeout=5)
    pids = {name: handle.pid for name, handle in sup.processes.items()}
    pids["zygote"] = sup.zygote_pid
    if count > 2:
        pids["grandchild"] = sup.call("p2", "status")["grandchild"]
    print(json.dumps(pids), flush=True)
    while True:
        time.sleep(0.05)
"""


def start_supervisor_process(name: str, path: str, count: int = 3) -> tuple[subprocess.Popen, dict[str, int]]:
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    proc = subprocess.Popen([sys.executable, "-c", SUPERVISOR_SCRIPT, name, path, str(count)],
                            cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    line = proc.stdout.readline()
    if not line:
        proc.wait(5)
        pytest.fail(f"supervisor script failed: {proc.stderr.read().decode()}")
    return proc, json.loads(line)


def finish(proc: subprocess.Popen, pids: dict[str, int]) -> None:
    """Whatever the test found: leave nothing behind."""
    if proc.poll() is None:
        proc.kill()
    proc.wait(5)
    proc.stdout.close()
    proc.stderr.close()
    for pid in pids.values():
        if alive(pid):
            os.kill(pid, signal.SIGKILL)


@pytest.mark.timeout(20)
def test_sigkill_of_the_supervisor_leaves_nothing_running_within_two_seconds(run_base):
    proc, pids = start_supervisor_process("doomed", f"{run_base}/doomed")
    try:
        assert len(pids) == 5 and all(alive(pid) for pid in pids.values())
        proc.kill()
        proc.wait(5)
        assert wait_gone(pids.values(), 5.0) == []  # the contract says 2 s; generous on a loaded machine
    finally:
        finish(proc, pids)
    [emulation] = list_emulations(run_base)
    assert (emulation.name, emulation.alive, emulation.supervisor_pid) == ("doomed", False, proc.pid)


@pytest.mark.timeout(20)
# SIGTERM ends in Terminated (SystemExit 143); SIGINT in KeyboardInterrupt, which
# Python reports by dying of SIGINT once the `with` block has torn down.
@pytest.mark.parametrize("signum, exit_code", [(signal.SIGTERM, 128 + signal.SIGTERM),
                                               (signal.SIGINT, -signal.SIGINT)])
def test_signalled_supervisor_tears_down_cleanly(run_base, signum, exit_code):
    proc, pids = start_supervisor_process("signalled", f"{run_base}/signalled")
    try:
        proc.send_signal(signum)
        assert proc.wait(10) == exit_code
        assert wait_gone(pids.values(), 0.5) == []
        assert not os.path.exists(f"{run_base}/signalled")
    finally:
        finish(proc, pids)


@pytest.mark.timeout(20)
def test_stale_run_dir_of_a_killed_supervisor_is_cleaned_on_next_start(run_base, supervisors):
    proc, pids = start_supervisor_process("again", f"{run_base}/again", count=1)
    try:
        proc.kill()
        proc.wait(5)
        assert wait_gone(pids.values(), 2.0) == []
    finally:
        finish(proc, pids)
    assert sorted(os.listdir(f"{run_base}/again")) == ["lock", "log", "state.json"]
    assert sorted(os.listdir(f"{run_base}/again/log")) == ["p0.log", "zygote.log"]

    sup = make_supervisor(supervisors, run_base, "again")

    assert sup.run_dir.stale_cleaned
    assert sorted(os.listdir(sup.run_dir.path)) == ["lock", "log", "state.json"]
    assert os.listdir(sup.run_dir.log_dir) == ["zygote.log"]
    assert [(e.name, e.alive) for e in list_emulations(run_base)] == [("again", True)]


@pytest.mark.timeout(20)
def test_stale_cleanup_kills_processes_the_dead_supervisor_recorded(run_base):
    # A process that outlived its supervisor (say the chain was broken by hand).
    survivor = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        path = Path(run_base) / "old"
        path.mkdir(mode=0o700)
        (path / "lock").write_text('{"pid": 1}')
        created = __import__("psutil").Process(survivor.pid).create_time()
        (path / "state.json").write_text(json.dumps(
            {"processes": {"h1": {"pid": survivor.pid, "create_time": created},
                           "h2": {"pid": os.getpid(), "create_time": created + 100}}}))
        run_dir = RunDir.acquire("old", base=run_base)
        assert run_dir.stale_cleaned
        assert survivor.wait(2) == -signal.SIGKILL
        assert alive(os.getpid())  # a recycled pid (wrong start time) is left alone
        run_dir.release()
    finally:
        survivor.kill()
        survivor.wait()


@pytest.mark.timeout(20)
def test_supervisor_context_manager_stops_on_exception(run_base):
    with pytest.raises(RuntimeError, match="scenario failed"):
        with Supervisor("ctx", f"{run_base}/ctx", preload=[]) as sup:
            handle = sup.spawn("p", TARGET, {})
            sup.wait_ready(timeout=5)
            pids = [handle.pid, sup.zygote_pid]
            raise RuntimeError("scenario failed")
    assert wait_gone(pids, 0.5) == []
    assert not os.path.exists(f"{run_base}/ctx")
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL  # handlers restored


FORGETFUL_SCRIPT = """
import json, sys
from control.supervisor import Supervisor
sup = Supervisor("forgetful", sys.argv[1], preload=[])
sup.start()
handle = sup.spawn("p", "tests.integration.supervised_targets:serve", {})
sup.wait_ready(timeout=5)
print(json.dumps({"p": handle.pid, "zygote": sup.zygote_pid}), flush=True)
"""


@pytest.mark.timeout(20)
def test_a_script_that_forgets_stop_still_tears_down_at_exit(run_base):
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    done = subprocess.run([sys.executable, "-c", FORGETFUL_SCRIPT, f"{run_base}/forgetful"],
                          cwd=ROOT, env=env, capture_output=True, timeout=15)
    assert done.returncode == 0, done.stderr.decode()
    pids = json.loads(done.stdout)
    try:
        assert wait_gone(pids.values(), 0.5) == []
        assert not os.path.exists(f"{run_base}/forgetful")
    finally:
        for pid in pids.values():
            if alive(pid):
                os.kill(pid, signal.SIGKILL)
