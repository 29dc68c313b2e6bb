"""Several Ray nodes on this one machine (ray.cluster_utils.Cluster): try, test and measure
cluster emulations without a second machine.

Each Ray node is a raylet of its own, offering one custom resource, ``m0``, ``m1``..., which
a topology's `placement:` can pin to (topologies/racks.yaml). Token authentication is on,
as netemu requires without `insecure`: Ray reads RAY_AUTH_MODE and the token once, when it
is first imported, so `token_environment()` must run before anything imports Ray (the test
suite does it in tests/conftest.py). Used by tests/scenarios/ray_cluster.py and
`python -m bench distributed`.
"""
from __future__ import annotations

import contextlib
import os
import secrets
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field

import psutil

from .cluster_agent import AGENT_NAMESPACE

# Small raylets for a laptop: no dashboard, a small object store.
NODE_ARGS = {"num_cpus": 1, "include_dashboard": False, "object_store_memory": 80 * 1024 * 1024}
RAY_ENV = {"RAY_DEDUP_LOGS": "0", "RAY_USAGE_STATS_ENABLED": "0"}
# Lighter still, for tests: no worker processes started ahead of need (Ray's default starts some,
# which is what a real `ray start` does, and makes actors, netemu's agents among them, start faster).
LIGHT_ENV = {"RAY_enable_worker_prestart": "0"}


def token_environment() -> None:
    """Token authentication for the clusters made here (a fresh token unless one is set)."""
    if "ray" in sys.modules and os.environ.get("RAY_AUTH_MODE") != "token":
        raise RuntimeError("Ray was imported before RAY_AUTH_MODE=token could be set: Ray reads it once")
    os.environ.setdefault("RAY_AUTH_MODE", "token")
    os.environ.setdefault("RAY_AUTH_TOKEN", secrets.token_hex(16))


@dataclass
class LocalCluster:
    address: str                 # the head's GCS address, for Emulation(cluster=...)
    started_in: float            # seconds the Ray nodes took to come up
    cluster: object              # the ray.cluster_utils.Cluster
    leftovers: list[int] = field(default_factory=list)  # pids still alive at the end (then killed)


def _descendants() -> set[int]:
    return {p.pid for p in psutil.Process().children(recursive=True)}


@contextlib.contextmanager
def local_cluster(machines: int = 3, *, light: bool = True) -> Iterator[LocalCluster]:
    """`machines` Ray nodes here, this process attached as the driver; `light`: no prestarted
    workers (tests), else Ray's defaults (benchmarks). At the end every process the cluster started
    is gone: the ones that outlive its shutdown by 10 s are killed and listed in `leftovers`."""
    token_environment()
    import ray
    from ray.cluster_utils import Cluster

    environment = dict(RAY_ENV, **(LIGHT_ENV if light else {}))
    saved = {key: os.environ.get(key) for key in environment}
    os.environ.update(environment)
    before = _descendants()
    cluster = None
    running = LocalCluster("", 0.0, None)
    try:
        began = time.monotonic()
        cluster = Cluster(initialize_head=True, head_node_args=dict(NODE_ARGS, resources={"m0": 1}))
        for index in range(1, machines):
            cluster.add_node(**NODE_ARGS, resources={f"m{index}": 1})
        ray.init(address=cluster.address, namespace=AGENT_NAMESPACE, log_to_driver=False)
        cluster.wait_for_nodes()
        running.address, running.started_in, running.cluster = cluster.address, time.monotonic() - began, cluster
        yield running
    finally:
        try:
            if ray.is_initialized():
                ray.shutdown()
            if cluster is not None:
                cluster.shutdown()
        finally:
            for key, value in saved.items():
                if value is None:
                    os.environ.pop(key, None)
                else:
                    os.environ[key] = value
        started = [psutil.Process(pid) for pid in _descendants() - before if psutil.pid_exists(pid)]
        _, alive = psutil.wait_procs(started, timeout=10.0)
        for process in alive:
            with contextlib.suppress(psutil.Error):
                process.kill()
        running.leftovers = [process.pid for process in alive]
