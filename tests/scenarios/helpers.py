"""Shared helpers of the scenario tests: paths, process accounting, short run directories."""
from __future__ import annotations

import contextlib
import json
import os
import queue
import shutil
import subprocess
import tempfile
import threading
from pathlib import Path
from typing import Callable, Iterable, Iterator

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


def output_lines(process: subprocess.Popen) -> queue.Queue:
    """`process`'s stdout lines (newline stripped), read in a thread, then None: a test waits for a
    line with a deadline (`next_line`)."""
    lines: queue.Queue = queue.Queue()

    def read() -> None:
        for line in process.stdout:
            lines.put(line.rstrip("\n"))
        lines.put(None)
    threading.Thread(target=read, daemon=True).start()
    return lines


def next_line(process: subprocess.Popen, lines: queue.Queue, timeout: float = 20.0) -> str:
    """The program's next line; an AssertionError when it says nothing in time or ended (with its
    status and, when kept apart, its stderr)."""
    try:
        line = lines.get(timeout=timeout)
    except queue.Empty:
        raise AssertionError(f"no line within {timeout} s") from None
    if line is None:
        said = process.stderr.read() if process.stderr is not None and process.stderr is not process.stdout else ""
        raise AssertionError(f"the program ended: {process.wait()} {said}")
    return line


def stop(process: subprocess.Popen) -> None:
    """Kill a program the test started (if it still runs) and reap it."""
    if process.poll() is None:
        process.kill()
    process.wait(10)


def iperf3_reports(server: subprocess.Popen, listening: Callable[[], bool],
                   run_client: Callable[[], subprocess.CompletedProcess]) -> tuple[dict, dict]:
    """One iperf3 test: `server` (`iperf3 -s -1 --json`, stdout and stderr piped) until `listening()`,
    `run_client()` (`iperf3 -c ... --json`, output captured), both ending well; (client's report,
    server's report), neither with an `error`."""
    try:
        wait_for(lambda: server.poll() is not None or listening(), timeout=20)
        assert server.poll() is None, server.communicate()
        client = run_client()
        server_out, server_err = server.communicate(timeout=30)
    finally:
        stop(server)
    assert client.returncode == 0, client.stdout + client.stderr
    assert server.returncode == 0, server_out + server_err
    report, server_report = json.loads(client.stdout), json.loads(server_out)
    assert "error" not in report and "error" not in server_report, (report.get("error"), server_report.get("error"))
    return report, server_report
