"""The supervisor with real processes: spawn, readiness, crash reports, restart, kill, stop."""
from __future__ import annotations

import os
import signal
import stat
import threading
import time

import pytest

from control.rundir import EmulationRunning
from control.supervisor import ProcessExited, ProcessState, Supervisor, SupervisorError

from tests.waiting import wait_for

from .test_supervisor_helpers import TARGET, alive, make_supervisor, run_base, supervisors, wait_gone

__all__ = ["run_base", "supervisors"]  # fixtures used by name


@pytest.mark.timeout(20)
def test_spawned_targets_become_ready_and_stop_leaves_nothing(run_base, supervisors):
    sup = make_supervisor(supervisors, run_base)
    handles = [sup.spawn(f"p{i}", TARGET, {}) for i in range(3)]
    sup.wait_ready(timeout=5)
    assert [h.state for h in handles] == [ProcessState.READY] * 3
    status = sup.call("p1", "status")
    assert status["pid"] == handles[1].pid
    assert status["parent_pid"] == sup.zygote_pid  # the zygote is the real parent
    assert sup.run_dir.read_state()["processes"]["p1"]["pid"] == handles[1].pid
    # A terminal's Ctrl-C (sent to our foreground group) cannot reach them.
    assert os.getsid(sup.zygote_pid) == sup.zygote_pid != os.getsid(0)
    assert {os.getpgid(h.pid) for h in handles} == {sup.zygote_pid}
    # Every fork gets its own random sequence.
    assert len({sup.call(f"p{i}", "status")["random"] for i in range(3)}) == 3
    pids = [h.pid for h in handles] + [sup.zygote_pid]
    run_dir = sup.run_dir.path

    report = sup.stop(timeout=2)

    assert sorted(report.shutdown) == ["p0", "p1", "p2"]
    assert report.terminated == report.killed == report.leftovers == []
    assert wait_gone(pids, 0.5) == []
    assert not run_dir.exists()
    assert [h.state for h in handles] == [ProcessState.EXITED] * 3
    assert [h.returncode for h in handles] == [0, 0, 0]


@pytest.mark.timeout(20)
def test_crash_is_reported_within_one_second_with_exit_code_and_log_tail(run_base, supervisors):
    crashes = []
    reported = threading.Event()
    sup = make_supervisor(supervisors, run_base,
                          on_crash=lambda event: (crashes.append(event), reported.set()))
    sup.spawn("ok", TARGET, {})
    sup.spawn("bad", TARGET, {"crash_after": 0.3, "exit_code": 7})
    sup.wait_ready(timeout=5)
    crash_time = sup["bad"].started_at + 0.3

    assert reported.wait(3)
    assert time.monotonic() - crash_time < 2.5  # the contract is "within a second": generous on a loaded machine
    [event] = crashes
    assert (event.name, event.returncode, event.signal, event.crashed) == ("bad", 7, None, True)
    assert event.log_tail[-1] == "bad: simulated failure, goodbye"
    assert event.describe().endswith("exited with code 7")
    assert [e.name for e in sup.poll_events(timeout=1)] == ["bad"]
    assert sup["ok"].state is ProcessState.READY


@pytest.mark.timeout(20)
def test_target_that_raises_fails_readiness_with_its_traceback(run_base, supervisors):
    sup = make_supervisor(supervisors, run_base)
    sup.spawn("ok", TARGET, {})
    sup.spawn("broken", "tests.integration.supervised_targets:fail_at_once", {})
    began = time.monotonic()
    with pytest.raises(ProcessExited) as caught:
        sup.wait_ready(timeout=5)
    assert time.monotonic() - began < 4.5  # not the whole timeout (5 s)
    event = caught.value.event
    assert (event.name, event.returncode) == ("broken", 1)
    assert event.log_tail[-1] == "RuntimeError: broken cannot start: broken on purpose"
    assert any(line.startswith("Traceback") for line in event.log_tail)


@pytest.mark.timeout(20)
def test_restart_runs_the_same_config_again(run_base, supervisors):
    sup = make_supervisor(supervisors, run_base)
    first = sup.spawn("p", TARGET, {"crash_after": 0.2})
    old_pid = first.pid
    assert [e.name for e in sup.poll_events(timeout=3)] == ["p"]

    handle = sup.restart("p", ready_timeout=5)

    assert handle is first and handle.restarts == 1
    assert handle.pid != old_pid and handle.state is ProcessState.READY
    assert sup.call("p", "status")["pid"] == handle.pid
    assert handle.config["crash_after"] == 0.2
    assert [e.name for e in sup.poll_events(timeout=3)] == ["p"]  # it crashes again, as configured


@pytest.mark.timeout(20)
def test_restart_of_a_running_process_stops_it_first(run_base, supervisors):
    sup = make_supervisor(supervisors, run_base)
    old_pid = sup.spawn("p", TARGET, {}).pid
    sup.wait_ready(timeout=5)
    handle = sup.restart("p", ready_timeout=5)
    assert handle.pid != old_pid
    assert not alive(old_pid)
    [event] = sup.poll_events()
    assert (event.pid, event.expected, event.returncode) == (old_pid, True, 0)


@pytest.mark.timeout(20)
def test_kill_is_an_expected_exit_not_a_crash(run_base, supervisors):
    crashes = []
    sup = make_supervisor(supervisors, run_base, on_crash=crashes.append)
    handle = sup.spawn("p", TARGET, {})
    sup.wait_ready(timeout=5)
    sup.kill("p", signal.SIGKILL)
    [event] = sup.poll_events(timeout=2)
    assert (event.signal, event.returncode, event.expected) == (signal.SIGKILL, None, True)
    assert event.describe() == f"p (pid {handle.pid}) was killed by SIGKILL"
    assert crashes == []
    with pytest.raises(ProcessLookupError):
        sup.kill("p")


@pytest.mark.timeout(20)
def test_target_ignoring_sigterm_is_sigkilled_at_the_deadline(run_base, supervisors):
    sup = make_supervisor(supervisors, run_base)
    sup.spawn("good", TARGET, {})
    stubborn = sup.spawn("stubborn", TARGET, {"ignore_sigterm": True, "ignore_shutdown": True})
    sup.wait_ready(timeout=5)
    report = sup.stop(timeout=1.0)
    assert report.shutdown == ["good"]
    assert report.terminated == ["stubborn"] and report.killed == ["stubborn"]
    assert 1.0 <= report.duration < 4.0  # waited for its timeout, then killed: not much longer
    assert stubborn.signal == signal.SIGKILL
    assert wait_gone([stubborn.pid], 0.2) == []


@pytest.mark.timeout(20)
def test_stop_kills_a_grandchild_left_in_the_process_group(run_base, supervisors):
    sup = make_supervisor(supervisors, run_base)
    sup.spawn("parent", TARGET, {"grandchild": True})
    sup.wait_ready(timeout=5)
    grandchild = sup.call("parent", "status")["grandchild"]
    assert alive(grandchild)
    report = sup.stop(timeout=1.0)
    assert report.leftovers == [grandchild]
    assert wait_gone([grandchild], 1.0) == []


@pytest.mark.timeout(20)
def test_killed_zygote_is_reported_with_every_process_it_took_down(run_base, supervisors):
    crashes = []
    sup = make_supervisor(supervisors, run_base, on_crash=crashes.append)
    handles = [sup.spawn(f"p{i}", TARGET, {}) for i in range(2)]
    sup.wait_ready(timeout=5)
    os.kill(sup.zygote_pid, signal.SIGKILL)
    wait_for(lambda: len(crashes) >= 3, timeout=5)
    assert [(e.name, e.signal) for e in crashes] == [("zygote", signal.SIGKILL), ("p0", signal.SIGKILL),
                                                     ("p1", signal.SIGKILL)]
    assert wait_gone([h.pid for h in handles], 2.0) == []  # PDEATHSIG against the zygote
    with pytest.raises(SupervisorError):
        sup.spawn("late", TARGET, {})


@pytest.mark.timeout(20)
def test_wait_ready_reports_progress_up_to_the_total(run_base, supervisors):
    sup = make_supervisor(supervisors, run_base)
    sup.spawn_many([(f"p{i}", TARGET, {"start_delay": 0.05 * i}) for i in range(4)])
    seen = []
    sup.wait_ready(timeout=5, progress=lambda done, total: seen.append((done, total)))
    assert seen[0] == (0, 4) and seen[-1] == (4, 4)
    assert [done for done, _ in seen] == sorted(done for done, _ in seen)


@pytest.mark.timeout(20)
def test_wait_ready_times_out_naming_the_slow_process(run_base, supervisors):
    sup = make_supervisor(supervisors, run_base)
    sup.spawn("fast", TARGET, {})
    sup.spawn("slow", TARGET, {"start_delay": 5})
    with pytest.raises(TimeoutError, match=r"not ready after 0.5s: slow$"):
        sup.wait_ready(timeout=0.5)
    assert sup["fast"].state is ProcessState.READY


@pytest.mark.timeout(20)
def test_two_emulations_run_side_by_side(run_base, supervisors):
    one = make_supervisor(supervisors, run_base, "one")
    two = make_supervisor(supervisors, run_base, "two")
    one.spawn("p", TARGET, {})
    two.spawn("p", TARGET, {})
    one.wait_ready(timeout=5)
    two.wait_ready(timeout=5)
    assert one.call("p", "status")["pid"] == one["p"].pid != two["p"].pid == two.call("p", "status")["pid"]
    one.stop()
    assert two.call("p", "status")["pid"] == two["p"].pid


@pytest.mark.timeout(20)
def test_same_name_is_refused_while_the_first_lives(run_base, supervisors):
    first = make_supervisor(supervisors, run_base, "same")
    first.spawn("p", TARGET, {})
    first.wait_ready(timeout=5)
    with pytest.raises(EmulationRunning, match=f"supervisor pid {os.getpid()}"):
        Supervisor("same", f"{run_base}/same").start()
    assert first.call("p", "status")["pid"] == first["p"].pid
    first.stop()
    second = make_supervisor(supervisors, run_base, "same")
    assert not second.run_dir.stale_cleaned


@pytest.mark.timeout(20)
def test_run_directory_and_logs_are_private(run_base, supervisors):
    sup = make_supervisor(supervisors, run_base)
    handle = sup.spawn("p", TARGET, {})
    sup.wait_ready(timeout=5)
    assert stat.S_IMODE(os.stat(sup.run_dir.path).st_mode) == 0o700
    assert stat.S_IMODE(os.stat(sup.run_dir.log_dir).st_mode) == 0o700
    assert stat.S_IMODE(os.stat(handle.log_path).st_mode) == 0o600
    assert stat.S_IMODE(os.stat(sup.run_dir.log_path("zygote")).st_mode) == 0o600


@pytest.mark.timeout(20)
def test_keep_logs_leaves_only_the_logs(run_base, supervisors):
    sup = make_supervisor(supervisors, run_base, keep_logs=True)
    sup.spawn("p", TARGET, {})
    sup.wait_ready(timeout=5)
    sup.stop()
    assert sorted(os.listdir(sup.run_dir.path)) == ["log"]
    assert (sup.run_dir.log_dir / "p.log").read_text().startswith("p: serving on ipc://")


@pytest.mark.timeout(20)
def test_preload_failure_is_reported_and_harmless(run_base, supervisors):
    sup = make_supervisor(supervisors, run_base, preload=["no_such_module_for_netemu"])
    assert "ModuleNotFoundError" in sup.preload_failures["no_such_module_for_netemu"]
    sup.spawn("p", TARGET, {})
    sup.wait_ready(timeout=5)


@pytest.mark.timeout(20)
def test_bad_target_and_duplicate_names_are_refused(run_base, supervisors):
    sup = make_supervisor(supervisors, run_base)
    with pytest.raises(SupervisorError, match="ModuleNotFoundError"):
        sup.spawn("x", "no_such_module_for_netemu:run", {})
    assert "x" not in sup.processes
    with pytest.raises(ValueError, match="reserved"):
        sup.spawn("zygote", TARGET, {})
    sup.spawn("p", TARGET, {})
    with pytest.raises(ValueError, match="already running"):
        sup.spawn("p", TARGET, {})


@pytest.mark.timeout(20)
def test_on_crash_may_restart_the_process_itself(run_base, supervisors):
    restarted = threading.Event()

    def restart(event):
        if not restarted.is_set():
            sup.restart(event.name, ready_timeout=5)
            restarted.set()

    sup = make_supervisor(supervisors, run_base, on_crash=restart)
    handle = sup.spawn("p", TARGET, {"crash_after": 0.2})
    first_pid = handle.pid
    assert restarted.wait(5)
    assert handle.pid != first_pid and handle.restarts == 1


@pytest.mark.timeout(20)
def test_wait_ready_ignores_exits_of_processes_it_does_not_wait_for(run_base, supervisors):
    sup = make_supervisor(supervisors, run_base)
    sup.spawn("short", TARGET, {"crash_after": 0.1})
    sup.spawn("slowish", TARGET, {"start_delay": 0.4})
    sup.wait_ready(["slowish"], timeout=5)
    assert sup["slowish"].state is ProcessState.READY
    assert not sup["short"].alive
    with pytest.raises(ProcessExited, match="short .* exited with code 3"):
        sup.wait_ready(timeout=5)  # all of them: one is already gone
