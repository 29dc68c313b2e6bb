"""The process tree of an emulation: find what is left in a process group, kill it, wait for it.

Shared by the zygote (which stops its children) and its client in the
supervisor (which checks nothing is left after the zygote is gone).
"""
from __future__ import annotations

import contextlib
import os
import time

import psutil


def group_members(group: int, exclude: int) -> list[int]:
    """Live pids in process group `group`, other than `exclude`."""
    members = []
    for proc in psutil.process_iter():
        try:
            if proc.pid != exclude and os.getpgid(proc.pid) == group and proc.status() != psutil.STATUS_ZOMBIE:
                members.append(proc.pid)
        except (ProcessLookupError, psutil.Error):
            continue
    return members


def kill_all(pids: list[int], timeout: float = 1.0) -> None:
    """SIGKILL `pids` and wait (briefly) until they are dead.

    Zombies count as dead: an orphan's zombie waits for init to reap it, and
    some container inits never do.
    """
    procs = []
    for pid in pids:
        with contextlib.suppress(psutil.Error):
            proc = psutil.Process(pid)
            proc.kill()
            procs.append(proc)
    deadline = time.monotonic() + timeout
    while procs and time.monotonic() < deadline:
        procs = [proc for proc in procs if _running(proc)]
        if procs:
            time.sleep(0.005)


def _running(proc: psutil.Process) -> bool:
    try:
        return proc.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def wait_exit_unreaped(pid: int, timeout: float) -> bool:
    """Wait for child `pid` to exit without reaping it; True if it did."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            if os.waitid(os.P_PID, pid, os.WEXITED | os.WNOHANG | os.WNOWAIT) is not None:
                return True
        except ChildProcessError:
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.005)
