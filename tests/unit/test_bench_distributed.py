"""The instrument of `python -m bench distributed` (no Ray started here): its topology pins what
the rows claim, targets read met/missed on the ratio, the receiver's answer and the options parse."""
from __future__ import annotations

import json
import math

import pytest

from bench import distributed
from bench.harness import report


def test_the_topology_pins_two_hosts_together_and_one_apart_on_one_switch():
    topology = distributed.topology()
    assert {name: pin.target for name, pin in topology.placement.items()} == {"h1": "m0", "h2": "m0", "h3": "m1"}
    devices = {(node.name, name): iface.device for node in topology.nodes.values()
               for name, iface in node.interfaces.items()}
    assert devices == {("h1", "eth0"): "lan1", ("h2", "eth0"): "lan1", ("h3", "eth0"): "lan1"}
    assert topology.segments["lan1"].kind == "switch"


def test_the_startup_topology_has_300_hosts():
    assert len(distributed.launch.topology(distributed.STARTUP_NODES).nodes) == 300


def test_the_metric_names_are_the_issues():
    assert distributed.CROSS == "TCP goodput cross-machine"
    assert distributed.SAME == "TCP goodput same-machine"
    assert distributed.RTT == "RTT cross-machine"
    assert distributed.STARTUP == "300 nodes ready over 3 Ray nodes"


def test_ratio_targets_read_met_or_missed_and_reach_the_json(tmp_path):
    met = distributed.ratio_row("TCP goodput cross-machine", 60.0, "Mbit/s", 100.0, "same", "note", ">=", 0.5)
    missed = distributed.ratio_row("TCP goodput cross-machine", 49.0, "Mbit/s", 100.0, "same", "note", ">=", 0.5)
    slow = distributed.ratio_row("300 nodes ready over 3 Ray nodes", 16.0, "s", 10.0, "one", "n", "<=", 1.5)
    fast = distributed.ratio_row("300 nodes ready over 3 Ray nodes", 15.0, "s", 10.0, "one", "n", "<=", 1.5)
    plain = distributed.ratio_row("RTT cross-machine", 2.0, "ms", 1.0, "same", "no target")
    assert (met.met, missed.met, slow.met, fast.met, plain.met) == (True, False, False, True, None)
    assert met.target == ">= 0.5x: met (note)" and slow.target == "<= 1.5x: missed (n)"
    assert plain.target == "no target" and math.isnan(plain.limit)
    rows = json.loads(report("distributed-test", [met, slow], out_dir=tmp_path).read_text())
    assert [(r["bound"], r["limit"], r["met"], r["ratio"]) for r in rows] == [(">=", 0.5, True, 0.6),
                                                                              ("<=", 1.5, False, 1.6)]


def test_path_rows_put_cross_beside_same_and_rtt_beside_rtt():
    figures = {"same": [100.0, 120.0, 80.0], "cross": [70.0, 40.0, 60.0], "rtt_same": [0.5, 0.7, 0.6],
               "rtt_cross": [1.0, 1.4, 1.2], "where": "h1, h2 on 0, h3 on 1"}
    same, cross, rtt = distributed.path_rows(figures, True, 3.0, relay=1000.0)
    assert (same.metric, same.value, same.baseline) == ("TCP goodput same-machine", 100.0, 1000.0)
    assert (cross.metric, cross.value, cross.baseline, cross.met) == ("TCP goodput cross-machine", 60.0, 100.0, True)
    assert (rtt.metric, rtt.value, rtt.baseline) == ("RTT cross-machine", 1.2, 0.6)
    plain = distributed.path_rows(figures, False, 3.0, relay=None)
    assert [r.metric for r in plain] == ["TCP goodput cross-machine (no encryption)",
                                         "RTT cross-machine (no encryption)"]


def test_startup_row_is_the_median_against_one_machine():
    local = [{"ready": 4.0}, {"ready": 6.0}, {"ready": 5.0}]
    spread = [{"ready": 8.0, "prepare": 2.0, "processes": 321, "load": {0: 107, 1: 107, 2: 107}}] * 3
    row = distributed.startup_row(local, spread)
    assert (row.value, row.baseline, row.met) == (8.0, 5.0, False)
    assert "m0: 107" in row.target and row.target.startswith("<= 1.5x: missed")


def test_receiver_answer_and_goodput():
    assert distributed.parse_count(b"1048576\n") == 1048576
    with pytest.raises(RuntimeError):
        distributed.parse_count(b"Traceback")
    assert distributed.goodput_bits(1_000_000, 2.0) == 4_000_000
    with pytest.raises(ValueError):
        distributed.goodput_bits(10, 0.0)


def test_options():
    options = distributed.parse([])
    assert (options.seconds, options.rounds, options.only) == (3.0, 3, ("goodput", "startup"))
    assert distributed.parse(["--only", "startup", "--rounds", "2"]).only == ("startup",)
    for bad in (["--only", "wan"], ["--rounds", "0"], ["--seconds", "0"]):
        with pytest.raises(SystemExit):
            distributed.parse(bad)


def test_importing_the_benchmark_does_not_import_ray():
    import subprocess
    import sys

    code = "import sys, bench.distributed; print('ray' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          check=True).stdout.strip() == "False"
