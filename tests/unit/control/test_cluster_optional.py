"""Ray is an optional extra: single-machine use never imports it (docs/cluster.md)."""
from __future__ import annotations

import subprocess
import sys

from tests.scenarios.helpers import ROOT


def test_the_launcher_and_the_scenario_api_do_not_import_ray():
    code = ("import sys, launcher, control.emulation, control.cli, control.handles, control.supervisor; "
            "print('ray' in sys.modules)")
    shown = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert shown.returncode == 0, shown.stderr
    assert shown.stdout.strip() == "False"


def test_without_ray_a_cluster_emulation_says_what_to_install():
    code = ("import sys; sys.modules['ray'] = None\n"  # as if `pip install netemu` without [cluster]
            "from control.cluster import ClusterError, import_ray\n"
            "try:\n    import_ray()\nexcept ClusterError as error:\n    print(error)")
    shown = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert "pip install 'netemu[cluster]'" in shown.stdout, shown.stdout + shown.stderr
