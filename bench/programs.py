"""Programs a benchmark runs on nodes or in namespaces (iperf3, small Python clients and
servers): `Program`, its output kept in files (a pipe could fill up) and killed on exit, and
the wait until a server listens (a deadline, no fixed sleep)."""
from __future__ import annotations

import contextlib
import json
import subprocess
import tempfile
import time
from typing import IO, Callable

from control.emulation import Emulation

LISTEN_TIMEOUT = 10.0


def on_node(net: Emulation, node: str) -> Callable[..., subprocess.Popen]:
    """A `start(argv, **popen)` that runs the program on `node` (through `node.exec`)."""
    return lambda argv, **kw: net[node].exec(argv, **kw)


class Program:
    """`argv` started by `start(argv, **popen)` (`where` names the place in messages)."""

    def __init__(self, start: Callable[..., subprocess.Popen], where: str, argv: list[str],
                 stack: contextlib.ExitStack) -> None:
        self.where, self.argv = where, argv
        self.stdout: IO[bytes] = stack.enter_context(tempfile.TemporaryFile())
        self.stderr: IO[bytes] = stack.enter_context(tempfile.TemporaryFile())
        self.process = start(argv, stdin=subprocess.DEVNULL, stdout=self.stdout, stderr=self.stderr)
        stack.callback(self.kill)

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.process.wait(5.0)

    def output(self) -> str:
        self.stdout.seek(0)
        return self.stdout.read().decode(errors="replace")

    def failure(self, what: str) -> RuntimeError:
        """An error naming the program, what went wrong and the last thing it said."""
        self.stderr.seek(0)
        lines = [line for line in self.stderr.read().decode(errors="replace").splitlines() if line.strip()]
        said = lines[-1].strip() if lines else f"exit status {self.process.returncode}"
        return RuntimeError(f"{self.where}: {' '.join(self.argv[:2])}: {what} ({said})")

    def wait(self, timeout: float, what: str) -> None:
        try:
            self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            raise self.failure(f"{what}: no end within {timeout:g} s") from None

    def report(self, timeout: float) -> dict:
        """iperf3's `--json` report, once the program ended; its `error` raised."""
        self.wait(timeout, "iperf3")
        try:
            report = json.loads(self.output())
        except ValueError:
            raise self.failure("no JSON report") from None
        if report.get("error"):
            raise self.failure(report["error"])
        return report

    def wait_listening(self, listening: Callable[[], bool], timeout: float = LISTEN_TIMEOUT) -> None:
        """Until `listening()` holds: the program's server is up (it failing or a deadline: an error)."""
        deadline = time.monotonic() + timeout
        while not listening():
            if self.process.poll() is not None:
                raise self.failure("exited before listening")
            if time.monotonic() > deadline:
                raise self.failure(f"not listening within {timeout:g} s")
            time.sleep(0.02)


def node_listening(net: Emulation, node: str, port: int) -> Callable[[], bool]:
    """Whether `node`'s socket table (`ss -tl`'s rows) has a TCP listener on `port`."""
    def listening() -> bool:
        return any(str(row.get("proto", "")).startswith("tcp") and row.get("state") == "LISTEN"
                   and str(row.get("local", "")).rpartition(":")[2] == str(port) for row in net[node].call("sockets"))
    return listening
