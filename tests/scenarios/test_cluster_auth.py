"""netemu refuses a Ray cluster without token authentication, unless told --insecure.

Ray reads RAY_AUTH_MODE once, when first imported, and this test process runs with token
authentication (tests/conftest.py): a cluster without it is started and used from a
subprocess of its own.
"""
from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import pytest

from .helpers import ROOT, private_run_base, topology

pytestmark = [pytest.mark.timeout(180), pytest.mark.integration]

SCRIPT = textwrap.dedent("""
    import sys
    sys.path.insert(0, {root!r})
    import ray
    from ray.cluster_utils import Cluster
    from control.cluster import ClusterError
    from control.emulation import Emulation

    cluster = Cluster(initialize_head=True, head_node_args={{"num_cpus": 1, "include_dashboard": False,
                                                            "object_store_memory": 80 * 1024 * 1024}})
    try:
        try:
            Emulation({topology!r}, name="noauth", cluster=cluster.address).start()
            print("STARTED WITHOUT AUTH")
        except ClusterError as error:
            print("REFUSED:", error)
        with Emulation({topology!r}, name="insecure", cluster=cluster.address, insecure=True) as net:
            print("INSECURE PING", net["h1"].ping("h2", count=1, timeout=2.0).received)
    finally:
        if ray.is_initialized():
            ray.shutdown()
        cluster.shutdown()
""")


def test_a_cluster_without_token_authentication_is_refused_unless_insecure():
    env = dict(os.environ, RAY_AUTH_MODE="disabled", RAY_enable_worker_prestart="0")
    env.pop("RAY_AUTH_TOKEN", None)
    with private_run_base():
        result = subprocess.run([sys.executable, "-c", SCRIPT.format(root=str(ROOT),
                                                                    topology=str(topology("single_lan")))],
                                env=env, capture_output=True, text=True, timeout=150)
    assert result.returncode == 0, result.stdout + result.stderr[-3000:]
    lines = result.stdout.splitlines()
    refused = [line for line in lines if line.startswith("REFUSED:")]
    assert refused and "not using token authentication" in refused[0] and "--insecure" in refused[0], lines
    assert "INSECURE PING 1" in lines, result.stdout + result.stderr[-3000:]
