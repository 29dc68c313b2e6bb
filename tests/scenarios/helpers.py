"""Shared helpers of the scenario tests: paths, process accounting, short run directories."""
from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from pathlib import Path
from typing import Iterable, Iterator

import psutil

from tests.waiting import wait_for

ROOT = Path(__file__).resolve().parents[2]
TOPOLOGIES = ROOT / "topologies"
LAUNCHER = ROOT / "launcher.py"


def topology(name: str) -> Path:
    """The example topology `topologies/NAME.yaml`."""
    return TOPOLOGIES / f"{name}.yaml"


def emulation_processes(net) -> list[psutil.Process]:
    """Every process an emulation runs: its nodes, its segments and the zygote that forked them."""
    pids = [handle.pid for handle in net.supervisor.processes.values() if handle.pid]
    pids.append(net.supervisor.zygote_pid)
    return [psutil.Process(pid) for pid in pids]


def still_running(processes: Iterable[psutil.Process]) -> list[psutil.Process]:
    """The processes that still run (a zombie has ended; is_running() also guards against PID reuse)."""
    alive = []
    for process in processes:
        try:
            if process.is_running() and process.status() != psutil.STATUS_ZOMBIE:
                alive.append(process)
        except psutil.NoSuchProcess:
            pass
    return alive


def wait_gone(processes: Iterable[psutil.Process], timeout: float) -> list[psutil.Process]:
    """Wait up to `timeout` s for the processes to end; the ones left running."""
    processes = list(processes)
    try:
        wait_for(lambda: not still_running(processes), timeout=timeout, interval=0.02)
    except TimeoutError:
        pass
    return still_running(processes)


def socket_files(directory: Path) -> list[Path]:
    """Unix socket files anywhere under `directory`."""
    if not directory.exists():
        return []
    return [path for path in directory.rglob("*") if path.is_socket()]


@contextlib.contextmanager
def private_run_base() -> Iterator[Path]:
    """A short, private NETEMU_RUN_DIR base (ipc paths must stay under 107 bytes), removed afterwards."""
    base = Path(tempfile.mkdtemp(prefix="ne-", dir="/tmp"))
    previous = os.environ.get("NETEMU_RUN_DIR")
    os.environ["NETEMU_RUN_DIR"] = str(base)
    try:
        yield base
    finally:
        if previous is None:
            os.environ.pop("NETEMU_RUN_DIR", None)
        else:
            os.environ["NETEMU_RUN_DIR"] = previous
        shutil.rmtree(base, ignore_errors=True)


def lossy_pairs(results: dict) -> dict:
    """The (src, dst) pairs of a pingall that lost something or failed outright, with what happened."""
    return {pair: (repr(result) if isinstance(result, Exception) else f"{result.received}/{result.sent} received")
            for pair, result in results.items()
            if isinstance(result, Exception) or result.received != result.sent}


# A blocking stdlib UDP client for programs on h1: sends argv[2] to h2:argv[1], prints the answer,
# its source address and port.
UDP_CLIENT = """
import socket, sys
client = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
client.settimeout(10)
client.sendto(sys.argv[2].encode(), ("h2", int(sys.argv[1])))
data, peer = client.recvfrom(2048)
print(data.decode(), peer[0], peer[1])
"""
