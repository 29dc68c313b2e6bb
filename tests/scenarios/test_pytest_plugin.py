"""The `emulation` fixture users get from the netemu pytest plugin."""
from __future__ import annotations

import json
from pathlib import Path

import psutil
import pytest

pytestmark = pytest.mark.timeout(90)

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.topology("topologies/two_lans.yaml", name="plugin-two-lans")
def test_fixture_starts_the_marked_topology(emulation):
    assert emulation.name == "plugin-two-lans"
    assert emulation["h1"].ping("h2", count=1).received == 1


def test_fixture_tears_down_even_when_the_test_fails(pytester):
    record = pytester.path / "pids.json"
    pytester.makeini(f"[pytest]\nnetemu_topology = {ROOT / 'topologies' / 'single_lan.yaml'}\n")
    pytester.makepyfile(f"""
import json
def test_fails(emulation):
    pids = [h.pid for h in emulation.supervisor.processes.values()] + [emulation.supervisor.zygote_pid]
    open({str(record)!r}, "w").write(json.dumps(pids))
    assert False, "deliberate"
""")
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider")
    result.assert_outcomes(failed=1)
    pids = json.loads(record.read_text())
    assert len(pids) >= 6
    assert not [pid for pid in pids if psutil.pid_exists(pid) and psutil.Process(pid).status() != psutil.STATUS_ZOMBIE]


def test_fixture_without_a_topology_is_a_usage_error(pytester):
    pytester.makepyfile("def test_x(emulation):\n    pass\n")
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider")
    result.stdout.fnmatch_lines(["*emulation fixture needs @pytest.mark.topology*"])
    assert result.ret != 0
