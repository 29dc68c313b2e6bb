"""The `emulation` fixture fails a test at teardown when a process crashed unexpectedly, and only then."""
from __future__ import annotations

from pathlib import Path

import pytest

pytestmark = pytest.mark.timeout(120)

ROOT = Path(__file__).resolve().parents[2]

TESTS = """
import os
import signal

import psutil


def sigkill(emulation, name):
    pid = emulation[name].pid
    process = psutil.Process(pid)
    os.kill(pid, signal.SIGKILL)
    process.wait(timeout=5)  # gone; whether the supervisor has noticed yet is the fixture's business


def test_unexpected_crash(emulation):
    sigkill(emulation, "h2")


def test_expected_crash(emulation):
    emulation.expect_crash("h2")
    sigkill(emulation, "h2")


def test_kill_through_the_api(emulation):
    emulation["r1"].kill()


def test_no_crash(emulation):
    assert emulation["h1"].pid is not None
"""


def test_unexpected_crash_fails_the_test_at_teardown_expected_ones_do_not(pytester):
    pytester.makeini(f"[pytest]\nnetemu_topology = {ROOT / 'topologies' / 'two_lans.yaml'}\n")
    pytester.makepyfile(test_crashing=TESTS)
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", "-rA")
    result.assert_outcomes(passed=4, errors=1)
    result.stdout.fnmatch_lines([
        "*ERROR at teardown of test_unexpected_crash*",
        "*1 process(es) of emulation 'two-lans' exited unexpectedly*expect_crash*",
        "*h2 (pid *) was killed by SIGKILL; last lines of its log:*",
    ])
    errors = [line for line in result.stdout.lines if line.startswith("ERROR ")]
    assert len(errors) == 1 and "test_unexpected_crash" in errors[0], errors
    # the scenario API's own line, printed as the crash happened
    result.stdout.fnmatch_lines(["*netemu two-lans: h2 (pid *) was killed by SIGKILL unexpectedly; last lines of its log:*"])
