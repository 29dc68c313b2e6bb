"""A Ray cluster of several "machines" on this one, for the cluster tests (control/cluster_local.py).

Each Ray node is a raylet of its own with one custom resource, ``m0``, ``m1``..., which
topologies pin to (`placement:`). Token authentication is on (tests/conftest.py set
RAY_AUTH_MODE=token and a fresh token before Ray was first imported), as netemu requires
without --insecure. Everything the cluster started is gone when the context ends: the test
fails if anything had to be killed.
"""
from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator

from control.cluster_local import LocalCluster, local_cluster


@contextlib.contextmanager
def ray_cluster(machines: int = 3) -> Iterator[LocalCluster]:
    """`machines` Ray nodes on this machine; yields the head's address and more."""
    assert os.environ.get("RAY_AUTH_MODE") == "token", "tests/conftest.py sets RAY_AUTH_MODE=token"
    with local_cluster(machines) as running:
        yield running
    assert not running.leftovers, f"the Ray cluster left processes behind: {running.leftovers}"
