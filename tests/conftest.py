"""Shared pytest configuration and fixtures.

* `run_dir`: a private short directory under /tmp for ipc endpoints (removed after).
* `require_tool(name)`: the path of a Debian tool the suite needs (tshark, ping,
  iperf3). Missing, it skips the test with a reason on a developer machine and
  FAILS it under CI=true, where `.ci/run` must have installed it (`make deps`).
* Waiting for a condition: `tests.waiting.wait_for`.
"""
from __future__ import annotations

import os
import shutil

import pytest

from bus.testing import short_run_dir

pytest_plugins = ["pytester"]

# Every Emulation of the suite is strict: leaving it fails when a node's exception barrier
# caught anything (softnet rx_exceptions), so the barrier never hides a bug from a test.
os.environ.setdefault("NETEMU_STRICT", "1")

# The Debian package that provides each tool (what `make deps` installs).
TOOL_PACKAGES = {"tshark": "tshark", "ping": "iputils-ping", "iperf3": "iperf3"}


def require_tool(name: str) -> str:
    """The path of the program `name`; skips (locally) or fails (CI=true) when it is missing."""
    path = shutil.which(name)
    if path is not None:
        return path
    package = TOOL_PACKAGES.get(name, name)
    reason = f"{name} is not installed (as root: `make deps`, or `apt-get install -y {package}`)"
    if os.environ.get("CI") == "true":
        pytest.fail(f"CI=true and a required tool is missing: {reason}", pytrace=False)
    pytest.skip(reason)


def require_trap() -> None:
    """Seccomp user notification (root, Linux >= 5.14): skips locally, fails under CI=true when missing."""
    from nodes import trap

    reason = trap.unavailable_reason()
    if reason is None:
        return
    if os.environ.get("CI") == "true":
        pytest.fail(f"CI=true and syscall trapping is unavailable: {reason}", pytrace=False)
    pytest.skip(reason)


def pytest_collection_modifyitems(config, items):
    for item in items:
        if "integration" in item.nodeid.split("/") or "scenarios" in item.nodeid.split("/"):
            item.add_marker(pytest.mark.integration)


@pytest.fixture
def run_dir():
    """A private directory under /tmp, short enough for ipc socket paths; removed afterwards."""
    with short_run_dir() as path:
        yield path


@pytest.fixture(autouse=True)
def _stack_bugs_raise(monkeypatch):
    """In-process stacks re-raise what their exception barrier would count as rx_exceptions:
    a test never passes with a bug hidden behind the barrier (processes are checked by counter)."""
    from nodes.nic import NapiScheduler
    monkeypatch.setattr(NapiScheduler, "reraise", True)
