"""Start node kernels as real processes (`python -m nodes.kernel CONFIG.json`) beside bus devices."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

from bus.testing import REPO_ROOT, stop_child
from bus.transport import ControlClient, ipc_endpoint
from tests.waiting import wait_for


class KernelProcess:
    """One node kernel in a child process; `with` waits until it answers and reaps it after."""

    def __init__(self, run_dir: Path, name: str, interfaces: list[dict[str, Any]], **config: Any) -> None:
        self.run_dir = Path(run_dir)
        self.name = name
        self.config: dict[str, Any] = {
            "name": name,
            "kind": "host",
            "control": ipc_endpoint(self.run_dir, f"{name}.ctl"),
            "interfaces": interfaces,
            "routes": [],
            "arp": [],
            "sysctl": {},
            "hosts": {},
            "parent_pid": os.getpid(),
            **config,
        }
        self.config_path = self.run_dir / f"{name}.json"
        self.log_path = self.run_dir / f"{name}.log"
        self.process: subprocess.Popen[bytes] | None = None
        self.control = ControlClient(self.config["control"], timeout=2.0)

    def start(self, timeout: float = 10.0) -> "KernelProcess":
        self.config_path.write_text(json.dumps(self.config))
        with open(self.log_path, "wb") as log:
            self.process = subprocess.Popen([sys.executable, "-m", "nodes.kernel", str(self.config_path)],
                                            cwd=REPO_ROOT, stdout=log, stderr=subprocess.STDOUT)

        def answering() -> bool:
            try:
                self.control.request("status", timeout=0.5)
                return True
            except TimeoutError:
                if self.process.poll() is not None:
                    raise RuntimeError("exited") from None
                return False

        try:
            wait_for(answering, timeout=timeout, interval=0)
        except (TimeoutError, RuntimeError):
            self.stop()
            raise RuntimeError(f"kernel {self.name} did not start:\n{self.log_path.read_text()}") from None
        return self

    def call(self, op: str, /, timeout: float | None = None, **args: Any) -> Any:
        return self.control.request(op, args, timeout=timeout)

    def ping(self, dst: str, count: int = 1, interval: float = 0.2, timeout: float = 1.0, **args: Any) -> dict:
        return self.control.request("ping", {"dst": dst, "count": count, "interval": interval, "timeout": timeout, **args},
                                    timeout=count * interval + timeout + 5)

    def stop(self, timeout: float = 5.0) -> int | None:
        return stop_child(self.process, self.control, timeout)

    @property
    def control_file(self) -> Path:
        return Path(self.config["control"][len("ipc://"):])

    def __enter__(self) -> "KernelProcess":
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()


def interface(name: str, mac: str, ip: str, endpoint: str, node: str, mtu: int = 1500) -> dict[str, Any]:
    return {"name": name, "mac": mac, "ip": ip, "mtu": mtu, "endpoint": endpoint, "attachment": f"{node}:{name}"}
