"""Shared fixtures for the supervisor tests: a private run base and a no-leftovers check."""
from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterable, Iterator

import psutil
import pytest

from control.supervisor import Supervisor
from tests.waiting import wait_for

TARGET = "tests.integration.supervised_targets:serve"


def alive(pid: int, create_time: float | None = None) -> bool:
    """True if `pid` runs and is not a zombie (a dead child nobody reaped yet counts as gone)."""
    try:
        proc = psutil.Process(pid)
        if create_time is not None and abs(proc.create_time() - create_time) > 0.05:
            return False
        return proc.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def wait_gone(pids: Iterable[int], within: float) -> list[int]:
    """Wait until none of `pids` is alive; return those still alive after `within` seconds."""
    pids = list(pids)
    try:
        wait_for(lambda: not any(alive(pid) for pid in pids), timeout=within, interval=0.01)
    except TimeoutError:
        pass
    return [pid for pid in pids if alive(pid)]


@pytest.fixture
def run_base() -> Iterator[str]:
    """A short private base directory (pytest's tmp_path is too long for ipc paths)."""
    base = tempfile.mkdtemp(prefix="ne-", dir="/tmp")
    try:
        yield base
    finally:
        shutil.rmtree(base, ignore_errors=True)


@pytest.fixture
def supervisors(run_base: str) -> Iterator[list[Supervisor]]:
    """Supervisors created by a test; stopped at the end, with every process checked gone."""
    created: list[Supervisor] = []
    yield created
    pids = []
    for supervisor in created:
        if supervisor.zygote_pid:
            pids.append(supervisor.zygote_pid)
        pids.extend(h.pid for h in supervisor.processes.values() if h.pid)
        supervisor.stop(timeout=1.0)
    assert wait_gone(pids, 2.0) == []


def make_supervisor(supervisors: list[Supervisor], base: str, name: str = "t", **kwargs) -> Supervisor:
    """Start a supervisor whose run directory is `<base>/<name>`, preloading the test targets."""
    kwargs.setdefault("preload", ["tests.integration.supervised_targets"])
    supervisor = Supervisor(name, f"{base}/{name}", **kwargs)
    supervisors.append(supervisor)
    supervisor.start()
    return supervisor
