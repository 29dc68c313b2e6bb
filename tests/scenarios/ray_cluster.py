"""A Ray cluster of several "machines" on this one, for the cluster tests (ray.cluster_utils).

Each Ray node is a raylet of its own with one custom resource, ``m0``, ``m1``..., which
topologies pin to (`placement:`). Token authentication is on (RAY_AUTH_MODE=token with a
fresh token), as netemu requires without --insecure. Everything the cluster started is
gone when the context ends: the test checks it.
"""
from __future__ import annotations

import contextlib
import os
import secrets
from collections.abc import Iterator
from dataclasses import dataclass

import psutil

from tests.scenarios.helpers import wait_gone

# Small raylets for a 2-core machine: no dashboard, a small object store, no prestarted workers.
NODE_ARGS = {"num_cpus": 1, "include_dashboard": False, "object_store_memory": 80 * 1024 * 1024}
RAY_ENV = {"RAY_enable_worker_prestart": "0", "RAY_DEDUP_LOGS": "0"}


@dataclass
class RayCluster:
    address: str
    token: str | None
    cluster: object


def _descendants() -> set[int]:
    return {p.pid for p in psutil.Process().children(recursive=True)}


@contextlib.contextmanager
def ray_cluster(machines: int = 3) -> Iterator[RayCluster]:
    """`machines` Ray nodes on this machine, with the token authentication tests/conftest.py set
    up before Ray was first imported; yields the head's address."""
    import ray
    from ray.cluster_utils import Cluster

    assert os.environ.get("RAY_AUTH_MODE") == "token", "tests/conftest.py sets RAY_AUTH_MODE=token"
    token = os.environ["RAY_AUTH_TOKEN"]
    saved = {key: os.environ.get(key) for key in RAY_ENV}
    os.environ.update(RAY_ENV)
    before = _descendants()
    cluster = None
    try:
        cluster = Cluster(initialize_head=True, head_node_args=dict(NODE_ARGS, resources={"m0": 1}))
        for index in range(1, machines):
            cluster.add_node(**NODE_ARGS, resources={f"m{index}": 1})
        ray.init(address=cluster.address, namespace="netemu", log_to_driver=False)
        cluster.wait_for_nodes()
        yield RayCluster(cluster.address, token, cluster)
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
        left = wait_gone(started, 10.0)
        for process in left:
            with contextlib.suppress(psutil.Error):
                process.kill()
        assert not left, f"the Ray cluster left processes behind: {[p.pid for p in left]}"
