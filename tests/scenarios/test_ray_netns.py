"""Smoke tests of tests/scenarios/ray_netns.py (issue 16): three Ray "machines" in network namespaces
joined by a bridge, with token authentication. A driver with the token reaches all three nodes; one
with a wrong token is refused quickly; teardown leaves no namespace, process or directory.

One cluster serves the whole module (starting it is most of the run time); the last test closes it
and checks what is left.
"""
from __future__ import annotations

import contextlib
import importlib.util
import os
import time
from pathlib import Path

import pytest

from tests.conftest import cannot_run, require_root
from tests.scenarios import ray_netns
from tests.waiting import wait_for

# A driver that runs one task on each machine (pinned by its custom resource m<i>) and prints the
# node IP each task saw.
DRIVER = """
import sys, ray
ray.init(address=sys.argv[1], logging_level="ERROR", log_to_driver=False)

@ray.remote(num_cpus=0)
def where():
    return ray.util.get_node_ip_address()

refs = [where.options(resources={f"m{i}": 0.01}).remote() for i in range(3)]
print(" ".join(ray.get(refs, timeout=60)))
"""

# ray.init refused: with a token the GCS answers UNAUTHENTICATED and Ray retries the connection
# RAY_gcs_server_port_wait_time_s times, ~1 s apart (ray/_private/node.py _init_gcs_client; default
# RAY_NUM_REDIS_GET_RETRIES=20, i.e. ~20 s), then raises ConnectionError; with RAY_AUTH_MODE=token
# and no token at all, ray.init raises ray.exceptions.AuthenticationError before connecting.
REFUSED_DRIVER = """
import sys, ray
from ray.exceptions import AuthenticationError
try:
    ray.init(address=sys.argv[1], logging_level="ERROR", log_to_driver=False)
except (ConnectionError, AuthenticationError) as e:
    print("refused:", type(e).__name__, str(e).split(".")[0])
    sys.exit(3)
print("connected")
"""

# A bare GCS client fails at once with ray.exceptions.AuthenticationError (no retry loop): how a
# controller tells a clear "wrong token" from an unreachable cluster, and, run without any token
# (RAY_AUTH_MODE=disabled), whether the cluster demands one.
GCS_PROBE = """
import sys
from ray._raylet import GcsClient
from ray.exceptions import AuthenticationError
try:
    GcsClient(address=sys.argv[1]).internal_kv_get(b"probe", None, timeout=5)
except AuthenticationError as e:
    print("AuthenticationError:", str(e).split(".")[0])
    sys.exit(3)
print("accepted")
"""

# One connection attempt instead of Ray's default 20 (about 1 s each).
ONE_TRY = {"RAY_gcs_server_port_wait_time_s": "1"}


@pytest.fixture(scope="module")
def cluster():
    """(machines, stack): the module's cluster; `stack.close()` tears it down."""
    require_root()
    if importlib.util.find_spec("ray") is None:     # the [cluster] extra; the drivers import it
        cannot_run("the Ray tests cannot run", "ray is not installed (pip install -e '.[cluster]')")
    stack = contextlib.ExitStack()
    started = time.monotonic()
    machines = stack.enter_context(ray_netns.ray_machines())
    print(f"3 Ray machines up in {time.monotonic() - started:.1f} s")
    with stack:
        yield machines, stack


def _running(cluster) -> ray_netns.RayMachines:
    machines, _ = cluster
    if not ray_netns.existing_namespaces(machines.prefix):
        pytest.fail("the module's cluster was already torn down (run the tests in file order)")
    return machines


def test_driver_with_token_reaches_every_machine(cluster):
    machines = _running(cluster)
    result = machines.python(0, DRIVER, machines.head_address)
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.split() == machines.addresses


@pytest.mark.parametrize("token, mode, error", [
    ("0" * 64, "token", "ConnectionError"),          # a wrong token
    ("", "disabled", "ConnectionError"),            # no token, auth not asked for
    ("", "token", "AuthenticationError"),           # auth asked for, no token found
], ids=["wrong-token", "no-auth", "token-missing"])
def test_driver_without_the_token_is_refused_quickly(cluster, token, mode, error):
    machines = _running(cluster)
    env = {**ONE_TRY, "RAY_AUTH_MODE": mode}
    started = time.monotonic()
    driver = machines.python(0, REFUSED_DRIVER, machines.head_address, env=env, token=token)
    elapsed = time.monotonic() - started
    assert driver.returncode == 3, (driver.stdout, driver.stderr[-3000:])
    assert f"refused: {error}" in driver.stdout
    if error == "ConnectionError":
        # The reason is in Ray's log lines (gcs_client.cc), not in the exception.
        assert "InvalidAuthToken" in driver.stderr, driver.stderr[-3000:]
    assert elapsed < 15, f"refusal took {elapsed:.1f} s"
    if mode == "token" and not token:
        return      # a GcsClient in token mode without a token aborts (RAY_CHECK): never probe so
    probe = machines.python(0, GCS_PROBE, machines.head_address, env=env, token=token)
    assert probe.returncode == 3 and "AuthenticationError" in probe.stdout, (probe.stdout, probe.stderr[-3000:])


def test_gcs_probe_accepts_the_token(cluster):
    """The probe that refuses a missing token (above) accepts the right one: from machine 1 too."""
    machines = _running(cluster)
    probe = machines.python(1, GCS_PROBE, machines.head_address)
    assert probe.returncode == 0 and "accepted" in probe.stdout, (probe.stdout, probe.stderr[-3000:])


def _alive(pid: int) -> bool:
    """`pid` exists and is not a zombie."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return False


def _processes_mentioning(text: str) -> list[str]:
    found = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        with contextlib.suppress(OSError):
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            if text in cmdline:
                found.append(f"{pid}: {cmdline[:200]}")
    return found


def test_teardown_leaves_nothing(cluster):
    machines, stack = cluster
    ray_pids = [pid for ns in machines.namespaces for pid in ray_netns.namespace_pids(ns)]
    assert ray_pids, "the cluster had no process to tear down"
    started = time.monotonic()
    stack.close()
    print(f"teardown in {time.monotonic() - started:.1f} s")
    assert ray_netns.existing_namespaces(machines.prefix) == []
    assert not machines.root_dir.exists()
    # SIGKILLed processes are gone once reaped (by init: ray start daemonized them).
    wait_for(lambda: not [pid for pid in ray_pids if _alive(pid)], timeout=10)
    assert _processes_mentioning(str(machines.root_dir)) == []
