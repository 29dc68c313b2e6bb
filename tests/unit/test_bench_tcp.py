"""The instrument of `python -m bench tcp` / `tcp_profile`: its topologies say what the rows claim,
targets read met/missed, options parse, and the per-segment profile counts real segments."""
from __future__ import annotations

import json

import pytest

from bench import tcp, tcp_profile
from bench.harness import report


def _interfaces(kind: str) -> dict:
    topology = tcp.topology(kind)
    return {(node.name, name): iface for node in topology.nodes.values() for name, iface in node.interfaces.items()}


def test_the_topologies_are_the_paths_the_rows_name():
    switch = _interfaces(tcp.SWITCH)
    assert {i.device for i in switch.values()} == {"lan1"} and all(i.mtu == 1500 and not i.params
                                                                   for i in switch.values())
    routed = _interfaces(tcp.ROUTER)
    assert routed[("h1", "eth0")].device == "lan1" and routed[("h2", "eth0")].device == "lan2"
    assert {routed[("r1", "eth0")].device, routed[("r1", "eth1")].device} == {"lan1", "lan2"}
    lossy = _interfaces(tcp.LOSS)
    assert lossy[("h2", "eth0")].params == {"loss": 0.01} and not lossy[("h1", "eth0")].params
    assert {i.mtu for i in _interfaces(tcp.JUMBO).values()} == {9000}


def test_rows_say_met_or_missed_and_the_json_has_the_minimum(tmp_path):
    met = tcp._row("TCP goodput across a switch", [140.0, 160.0, 170.0], "Mbit/s", [900.0, 1000.0, 800.0],
                   "relay", 150.0, "note")
    missed = tcp._row("TCP connections/s", [499.0], "connections/s", [5000.0], "relay", 500.0, "note")
    assert met.value == 160.0 and met.baseline == 900.0 and met.met
    assert met.target.startswith(">= 150 Mbit/s: met (note; rounds 140.0, 160.0, 170.0")
    assert not missed.met and missed.target.startswith(">= 500 connections/s: missed (note)")
    path = report("tcp-test", [met, missed], out_dir=tmp_path)
    rows = json.loads(path.read_text())
    assert [(r["metric"], r["minimum"], r["met"]) for r in rows] == [
        ("TCP goodput across a switch", 150.0, True), ("TCP connections/s", 500.0, False)]
    assert rows[0]["ratio"] == round(160.0 / 900.0, 4)


def test_the_metric_names_are_the_issues():
    names = [metric for metric, *_ in tcp.GOODPUT] + [tcp.CONNECTIONS]
    assert names == ["TCP goodput across a switch", "TCP goodput across a router", "TCP goodput 1% loss",
                     "TCP goodput MTU 9000", "TCP connections/s"]
    assert tcp.IPERF == " (iperf3)"


def test_options():
    quick = tcp.parse(["--quick"])
    assert quick.seconds == 1 and quick.rounds == 1 and quick.only == tcp.CHOICES
    assert tcp.parse([]).seconds == 3
    assert tcp.parse(["--seconds", "5", "--rounds", "3", "--only", "loss,connections"]).only == ("loss", "connections")
    for bad in (["--only", "wan"], ["--rounds", "0"], ["--seconds", "0"]):
        with pytest.raises(SystemExit):
            tcp.parse(bad)


def test_the_profile_splits_the_two_stacks_time_over_real_segments():
    result = tcp_profile.transfer(1 << 20, 1500)
    assert result["bytes"] == 1 << 20
    assert result["segments_sent"] >= (1 << 20) // 1460 and result["segments_received"] >= result["segments_sent"] - 4
    assert 0 < result["sender"] < result["wall"] and 0 < result["receiver"] < result["wall"]
    assert result["sender"] + result["receiver"] <= result["wall"]
