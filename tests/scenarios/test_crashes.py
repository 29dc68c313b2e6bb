"""Crashes are loud: an unexpected exit prints one line, shows in `pid` and `status()`; asked-for exits stay quiet.

One single_lan emulation serves the module; each test brings back what it killed.
"""
from __future__ import annotations

import json
import os
import queue
import re
import signal
import subprocess
import sys
import threading

import psutil
import pytest

from control.emulation import Emulation
from tests.waiting import wait_for

from .helpers import LAUNCHER, private_run_base, topology

pytestmark = pytest.mark.timeout(60)

CRASH_LINE = re.compile(r"\*\*\* netemu scn-crash: (\S+) \(pid (\d+)\) (.+) unexpectedly; last lines of its log: (.*)")


@pytest.fixture(scope="module")
def net():
    with Emulation(topology("single_lan"), name="scn-crash") as emulation:
        yield emulation


@pytest.fixture
def h2_back(net):
    """Whatever a test does to h2, it runs again afterwards, and its crashes are not expected any more."""
    yield net["h2"]
    net.unexpected_crashes()  # settles: an exit that already happened is known now
    if not net.supervisor["h2"].alive:
        net["h2"].restart()
    net._expected_crashes.discard("h2")
    net.crashes.clear()


def _sigkill_behind_the_back(net, name: str) -> int:
    pid = net[name].pid
    process = psutil.Process(pid)
    os.kill(pid, signal.SIGKILL)
    process.wait(timeout=5)
    return pid


def test_sigkill_behind_the_api_prints_one_line_and_shows_in_pid_and_status(net, h2_back, capfd):
    capfd.readouterr()
    with open(net.supervisor["h2"].log_path, "a") as log:
        log.write("h2: first words\nh2: last words before the crash\n")
    live = net.status()["processes"]["h2"]
    assert (live["returncode"], live["signal"], live["rx_exceptions"]) == (None, None, 0)
    assert live["pid"] == net["h2"].pid is not None

    pid = _sigkill_behind_the_back(net, "h2")
    net.wait_for(lambda: net["h2"].pid is None, timeout=2.0, interval=0.01)
    assert [event.name for event in net.unexpected_crashes()] == ["h2"]

    printed = capfd.readouterr().err.splitlines()
    crash_lines = [line for line in printed if line.startswith("*** netemu")]
    assert len(crash_lines) == 1, printed
    match = CRASH_LINE.fullmatch(crash_lines[0])
    assert match, crash_lines[0]
    assert match.group(1, 2, 3) == ("h2", str(pid), "was killed by SIGKILL")
    assert match.group(4).endswith("h2: first words | h2: last words before the crash"), match.group(4)

    status = net.status()["processes"]
    assert status["h2"]["pid"] is None
    assert (status["h2"]["state"], status["h2"]["returncode"], status["h2"]["signal"]) == (
        "exited", None, signal.SIGKILL)
    assert status["h2"]["rx_exceptions"] is None  # nobody to ask
    assert (status["h1"]["returncode"], status["h1"]["signal"], status["h1"]["rx_exceptions"]) == (None, None, 0)
    assert status["lan1"]["returncode"] is None and "rx_exceptions" not in status["lan1"]


def test_exit_code_is_reported_as_the_returncode(net, h2_back, capfd):
    capfd.readouterr()
    net["h2"].call("shutdown")  # the kernel exits 0 on its own: the supervisor did not ask
    net.wait_for(lambda: net["h2"].pid is None, timeout=5.0, interval=0.01)
    [event] = net.unexpected_crashes()
    assert (event.name, event.returncode, event.signal) == ("h2", 0, None)
    status = net.status()["processes"]["h2"]
    assert (status["pid"], status["returncode"], status["signal"]) == (None, 0, None)
    [line] = [line for line in capfd.readouterr().err.splitlines() if line.startswith("*** netemu")]
    assert CRASH_LINE.fullmatch(line).group(1, 3) == ("h2", "exited with code 0")


def test_kill_through_the_api_is_quiet(net, h2_back, capfd):
    capfd.readouterr()
    net["h2"].kill()
    assert net["h2"].pid is None
    assert net.status()["processes"]["h2"]["signal"] == signal.SIGKILL
    assert net.unexpected_crashes() == []
    assert net.crashes == []
    assert "*** netemu" not in capfd.readouterr().err


def test_expect_crash_silences_the_line_but_keeps_the_record(net, h2_back, capfd):
    capfd.readouterr()
    net.expect_crash("h2")
    pid = _sigkill_behind_the_back(net, "h2")
    net.wait_for(lambda: net.crashes, timeout=2.0, interval=0.01)
    assert net.unexpected_crashes() == []
    assert [(event.name, event.pid, event.signal) for event in net.crashes] == [("h2", pid, signal.SIGKILL)]
    assert "*** netemu" not in capfd.readouterr().err


def test_expect_crash_of_an_unknown_process_is_a_clear_error(net):
    with pytest.raises(KeyError, match=r"no process 'h9' in emulation 'scn-crash' \(processes: h1, h2, h3, h4, lan1\)"):
        net.expect_crash("h9")


def test_restart_brings_the_pid_back_and_clears_the_exit_status(net, h2_back):
    restarts = net.status()["processes"]["h2"]["restarts"]
    _sigkill_behind_the_back(net, "h2")
    net.wait_for(lambda: net["h2"].pid is None, timeout=2.0, interval=0.01)
    net.expect_crash("h2")
    net["h2"].restart()
    assert net["h2"].pid is not None
    status = net.status()["processes"]["h2"]
    assert (status["returncode"], status["signal"], status["rx_exceptions"], status["restarts"]) == (None, None, 0, restarts + 1)


def _collect(stream, lines: queue.Queue) -> None:
    for line in stream:
        lines.put(line)


def _wait_line(lines: queue.Queue, text: str, timeout: float) -> str:
    seen = []

    def printed() -> bool:
        try:
            seen.append(lines.get(timeout=0.05))
        except queue.Empty:
            return False
        return text in seen[-1]

    try:
        return wait_for(printed, timeout=timeout, interval=0) and seen[-1]
    except TimeoutError:
        pass
    raise AssertionError(f"{text!r} not printed within {timeout} s; got {''.join(seen)!r}")


def test_the_netemu_cli_prints_a_crash_as_it_happens():
    with private_run_base() as base:
        script = base / "long.cli"
        script.write_text("h1 ping -c 50 -i 0.2 h3\n")
        launcher = subprocess.Popen([sys.executable, str(LAUNCHER), "up", str(topology("single_lan")), "--name",
                                     "scn-crash-cli", "--script", str(script)], stdin=subprocess.DEVNULL,
                                    stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        try:
            out, err = queue.Queue(), queue.Queue()
            threading.Thread(target=_collect, args=(launcher.stdout, out), daemon=True).start()
            threading.Thread(target=_collect, args=(launcher.stderr, err), daemon=True).start()
            _wait_line(out, "netemu> h1 ping -c 50", timeout=30)
            pid = json.loads((base / "scn-crash-cli" / "state.json").read_text())["processes"]["h2"]["pid"]
            os.kill(pid, signal.SIGKILL)
            line = _wait_line(err, "*** netemu scn-crash-cli: h2", timeout=2.0)
            assert f"h2 (pid {pid}) was killed by SIGKILL unexpectedly; last lines of its log: " in line
            assert launcher.poll() is None  # the ping still runs: reported as it happened, not at the end
        finally:
            launcher.terminate()
            launcher.wait(timeout=15)
            launcher.stdout.close()
            launcher.stderr.close()
        assert not (base / "scn-crash-cli").exists()
