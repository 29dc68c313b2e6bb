"""Three "machines" for the cluster tests of issue 16: a Ray cluster spread over network namespaces.

`ray_machines()` builds, as root:

    namespace <prefix>-br:  bridge nbr0 (nothing is added to the host's namespace)
        veth v0 <-> <prefix>-0 eth0 10.213.0.1/24   `ray start --head`, resource {"m0": 1}
        veth v1 <-> <prefix>-1 eth0 10.213.0.2/24   `ray start --address ...`, resource {"m1": 1}
        veth v2 <-> <prefix>-2 eth0 10.213.0.3/24   `ray start --address ...`, resource {"m2": 1}

with `<prefix>` = `nerq-<pid>-<random>`. Every machine has its own `--temp-dir` (sessions, sockets,
logs) under a private directory, and the cluster uses token authentication (`RAY_AUTH_MODE=token`,
the token passed as `RAY_AUTH_TOKEN`, never written to ~/.ray/auth_token). Teardown is by namespace,
not by name: `ray stop` finds Ray's processes by name host-wide (psutil), so it would also stop any
other Ray on the host; instead every process whose network namespace is one of ours
(`ip netns pids`) gets SIGTERM, then SIGKILL after `grace` (1 s: a head's gcs_server, raylet and
autoscaler monitor outlive SIGTERM by more than 6 s when the whole cluster stops at once; `ray stop
--force` is SIGKILL too), then the namespaces and directories are removed.
A bridge capture: `ns_popen(machines.bridge_ns, ["tshark", "-i", "nbr0", ...])`.
"""
from __future__ import annotations

import contextlib
import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator, Mapping, Sequence

from tests.scenarios.tap_helpers import ns_popen, ns_run
from tests.waiting import wait_for

SUBNET = "10.213.0"          # an unlikely /24; it only exists inside our namespaces
BRIDGE = "nbr0"
GCS_PORT = 6379
RAY = str(Path(sys.executable).with_name("ray"))

# Lighter Ray for a 2-core machine (names from Ray's ray_config_def.h; RAY_<name> overrides it).
LIGHT_ENV = {
    "RAY_USAGE_STATS_ENABLED": "0",          # no usage-stats report thread / network lookups
    "RAY_enable_worker_prestart": "0",       # no idle Python workers started ahead of tasks
    "RAY_prestart_worker_first_driver": "0",
}
NODE_FLAGS = ["--num-cpus", "1", "--object-store-memory", str(80 * 1024 * 1024),
              "--disable-usage-stats"]
HEAD_FLAGS = ["--head", "--port", str(GCS_PORT), "--include-dashboard=false"]


@dataclass
class RayMachines:
    """The running cluster: `namespaces[i]` holds machine i at `addresses[i]` (resource `m<i>`)."""
    prefix: str
    namespaces: list[str]
    addresses: list[str]
    bridge_ns: str
    bridge: str
    token: str
    head_address: str                       # "ip:port" for ray.init(address=...)
    temp_dirs: list[Path]
    root_dir: Path
    popens: list[subprocess.Popen] = field(default_factory=list)

    def env(self, token: str | None = None, extra: Mapping[str, str] | None = None) -> dict[str, str]:
        """The environment of a Ray process of this cluster: token auth with `token` (ours by
        default; "" = no token at all), the light knobs, `extra` last."""
        env = {k: v for k, v in os.environ.items()
               if k not in ("RAY_ADDRESS", "RAY_AUTH_TOKEN", "RAY_AUTH_TOKEN_PATH")}
        env.update(LIGHT_ENV)
        env["RAY_AUTH_MODE"] = "token" if self.token else "disabled"
        token = self.token if token is None else token
        if token:
            env["RAY_AUTH_TOKEN"] = token
        # ~/.ray/auth_token is Ray's last token source: a private HOME keeps the user's out.
        env["HOME"] = str(self.root_dir / "home")
        env.update(extra or {})
        return env

    def popen(self, index: int, argv: Sequence[str], env: Mapping[str, str] | None = None,
              **kw) -> subprocess.Popen:
        """Run `argv` inside machine `index`'s namespace with the cluster's environment
        (`self.env()` updated with `env`); killed at teardown if still running."""
        kw.setdefault("stdout", subprocess.PIPE)
        kw.setdefault("stderr", subprocess.PIPE)
        kw.setdefault("text", True)
        process = ns_popen(self.namespaces[index], argv, env=self.env(extra=env), **kw)
        self.popens.append(process)
        return process

    def run(self, index: int, argv: Sequence[str], env: Mapping[str, str] | None = None,
            timeout: float = 60, token: str | None = None, **kw) -> subprocess.CompletedProcess:
        """`ns_run` inside machine `index` with `self.env(token, env)`, output captured."""
        return ns_run(self.namespaces[index], argv, env=self.env(token, env), capture_output=True,
                      timeout=timeout, **kw)

    def python(self, index: int, code: str, *args: str, env: Mapping[str, str] | None = None,
               timeout: float = 60, token: str | None = None) -> subprocess.CompletedProcess:
        """`python -c code args...` inside machine `index` (the venv's interpreter, cwd = the
        repository), with `self.env(token, env)`."""
        return self.run(index, [sys.executable, "-c", code, *args], env=env, timeout=timeout,
                        token=token, cwd=str(Path(__file__).resolve().parents[2]))


def _ip(*argv: str) -> None:
    subprocess.run(["ip", *argv], check=True, capture_output=True, timeout=10)


def namespace_pids(ns: str) -> list[int]:
    """The processes whose network namespace is `ns` (`ip netns pids`)."""
    out = subprocess.run(["ip", "netns", "pids", ns], capture_output=True, text=True, timeout=10)
    return [int(p) for p in out.stdout.split()]


def kill_namespaces(namespaces: Sequence[str], grace: float) -> None:
    """SIGTERM every process of `namespaces`, SIGKILL what is left after `grace` seconds."""
    def alive() -> list[int]:
        return [pid for ns in namespaces for pid in namespace_pids(ns)]

    for sig, wait in ((signal.SIGTERM, grace), (signal.SIGKILL, 5.0)):
        for pid in alive():
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, sig)
        with contextlib.suppress(TimeoutError):
            wait_for(lambda: not alive(), timeout=wait)
            return


def existing_namespaces(prefix: str) -> list[str]:
    """Our namespaces still present (`ip netns list`)."""
    out = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True, timeout=10).stdout
    return [line.split()[0] for line in out.splitlines() if line.startswith(prefix)]


def _wait_nodes(machines: RayMachines, count: int, deadline: float) -> None:
    """Poll the GCS (a tiny GcsClient probe, no driver) until `count` nodes are alive."""
    code = ("import sys\nfrom ray._raylet import GcsClient\n"
            f"c = GcsClient(address={machines.head_address!r})\n"
            "print(sum(1 for n in c.get_all_node_info(timeout=5).values() if n.state == 0))")
    seen = [""]

    def enough() -> bool:
        result = machines.python(0, code, timeout=30)
        seen[0] = (result.stdout + result.stderr).strip()
        return result.returncode == 0 and int(result.stdout.split()[-1]) >= count

    try:
        wait_for(enough, timeout=max(1.0, deadline - time.monotonic()), interval=0.2)
    except TimeoutError:
        raise TimeoutError(f"the cluster did not reach {count} nodes: {seen[0][-2000:]}") from None


@contextlib.contextmanager
def ray_machines(count: int = 3, *, auth: bool = True, start_timeout: float = 90.0,
                 grace: float = 1.0) -> Iterator[RayMachines]:
    """Build the namespaces, bridge and Ray cluster of this module's docstring; tear all down after
    (also on exceptions and KeyboardInterrupt). `auth=False`: a cluster without token
    authentication (`RAY_AUTH_MODE=disabled`, `machines.token == ""`), to test refusing it."""
    prefix = f"nerq-{os.getpid()}-{secrets.token_hex(2)}"
    namespaces = [f"{prefix}-{i}" for i in range(count)]
    addresses = [f"{SUBNET}.{i + 1}" for i in range(count)]
    bridge_ns = f"{prefix}-br"
    # Short paths: Ray's Unix sockets live under --temp-dir (sun_path is 108 bytes).
    root_dir = Path(tempfile.mkdtemp(prefix=f"{prefix}-", dir="/tmp"))
    temp_dirs = [root_dir / f"m{i}" for i in range(count)]
    machines = RayMachines(prefix=prefix, namespaces=namespaces, addresses=addresses,
                           bridge_ns=bridge_ns, bridge=BRIDGE, token=secrets.token_hex(32) if auth else "",
                           head_address=f"{addresses[0]}:{GCS_PORT}", temp_dirs=temp_dirs,
                           root_dir=root_dir)
    try:
        (root_dir / "home").mkdir()
        for ns in [bridge_ns, *namespaces]:
            _ip("netns", "add", ns)
            _ip("-n", ns, "link", "set", "lo", "up")
        _ip("-n", bridge_ns, "link", "add", BRIDGE, "type", "bridge")
        _ip("-n", bridge_ns, "link", "set", BRIDGE, "up")
        for i, ns in enumerate(namespaces):
            # The veth pair is made in the bridge namespace, its far end moved straight into ns.
            _ip("-n", bridge_ns, "link", "add", f"v{i}", "type", "veth", "peer", "name", "eth0",
                "netns", ns)
            _ip("-n", bridge_ns, "link", "set", f"v{i}", "master", BRIDGE, "up")
            _ip("-n", ns, "addr", "add", f"{addresses[i]}/24", "dev", "eth0")
            _ip("-n", ns, "link", "set", "eth0", "up")
        deadline = time.monotonic() + start_timeout
        starts = []
        for i, temp_dir in enumerate(temp_dirs):
            temp_dir.mkdir()
            argv = [RAY, "start", "--node-ip-address", addresses[i], "--temp-dir", str(temp_dir),
                    "--resources", json.dumps({f"m{i}": 1}), *NODE_FLAGS]
            argv += HEAD_FLAGS if i == 0 else ["--address", machines.head_address]
            # The head first (the others join its GCS), then the others side by side.
            starts.append((i, machines.popen(i, argv)))
            if i == 0 or i == count - 1:
                for j, process in starts:
                    out, err = process.communicate(timeout=max(1.0, deadline - time.monotonic()))
                    if process.returncode != 0:
                        raise RuntimeError(f"ray start on machine {j} failed:\n{out}\n{err}")
                starts = []
        _wait_nodes(machines, count, deadline)
        yield machines
    finally:
        for process in machines.popens:
            if process.poll() is None:
                process.kill()
            with contextlib.suppress(Exception):
                process.communicate(timeout=5)
        kill_namespaces(existing_namespaces(prefix), grace)
        for ns in existing_namespaces(prefix):
            subprocess.run(["ip", "netns", "del", ns], capture_output=True, timeout=10)
        shutil.rmtree(root_dir, ignore_errors=True)
