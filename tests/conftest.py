"""Shared pytest configuration and fixtures.

* `run_dir`: a private short directory under /tmp for ipc endpoints (removed after).
* `require_tool(name)`: the path of a Debian tool the suite needs (tshark, ping,
  iperf3). Missing, it skips the test with a reason on a developer machine and
  FAILS it under CI=true, where `.ci/run` must have installed it (`make deps`).
  `require_trap()` (syscall trapping) and `require_root()` (TAP devices, network
  namespaces) do the same: under CI (root, tools installed) every test runs.
* Waiting for a condition: `tests.waiting.wait_for`.
"""
from __future__ import annotations

import os
import secrets
import shutil

import pytest

from bus.testing import short_run_dir

pytest_plugins = ["pytester"]

# Every Emulation of the suite is strict: leaving it fails when a node's exception barrier
# caught anything (softnet rx_exceptions), so the barrier never hides a bug from a test.
os.environ.setdefault("NETEMU_STRICT", "1")

# The Ray clusters of the cluster tests use token authentication (netemu refuses a cluster
# without it). Ray reads RAY_AUTH_MODE and the token once, when it is first imported, so
# they are set here, before any test module imports it: one token for the whole run.
os.environ.setdefault("RAY_AUTH_MODE", "token")
os.environ.setdefault("RAY_AUTH_TOKEN", secrets.token_hex(16))

# The Debian package that provides each tool (what `make deps` installs).
TOOL_PACKAGES = {"tshark": "tshark", "ping": "iputils-ping", "iperf3": "iperf3"}


def cannot_run(what: str, reason: str) -> None:
    """A test lacks something this machine does not give it: skip locally, FAIL under CI=true
    (CI runs as root with every tool installed: a skip there would hide a missing tool or a failure)."""
    if os.environ.get("CI") == "true":
        pytest.fail(f"CI=true and {what}: {reason}", pytrace=False)
    pytest.skip(reason)


def require_tool(name: str) -> str:
    """The path of the program `name`; skips (locally) or fails (CI=true) when it is missing."""
    path = shutil.which(name)
    if path is None:
        package = TOOL_PACKAGES.get(name, name)
        cannot_run("a required tool is missing",
                   f"{name} is not installed (as root: `make deps`, or `apt-get install -y {package}`)")
    return path


def require_trap() -> None:
    """Seccomp user notification (root, Linux >= 5.14): skips locally, fails under CI=true when missing."""
    from nodes import trap

    reason = trap.unavailable_reason()
    if reason is not None:
        cannot_run("syscall trapping is unavailable", reason)


def require_root() -> None:
    """Root (CAP_NET_ADMIN), /dev/net/tun and `ip` (TAP devices, network namespaces): skips locally,
    fails under CI=true."""
    if os.geteuid() != 0:
        cannot_run("the TAP tests cannot run", "TAP interop tests need root (CAP_NET_ADMIN): run as root")
    elif not os.path.exists("/dev/net/tun"):
        cannot_run("the TAP tests cannot run", "/dev/net/tun does not exist (modprobe tun)")
    elif shutil.which("ip") is None:
        cannot_run("the TAP tests cannot run", "ip is not installed (apt-get install -y iproute2)")


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
