"""The process plan: configs exactly as docs/design.md specifies, deterministic."""
from __future__ import annotations

import json
import textwrap
from pathlib import Path

import msgpack
import pytest

from control.plan import KNOWN_SYSCTLS, PlanError, SysctlError, build_plan, check_sysctl
from control.topology import load_topology, parse_topology

ROOT = Path(__file__).parents[3]
TOPOLOGIES = ROOT / "topologies"
RUN = "/tmp/netemu-1000/two-lans"

# Keys of docs/design.md "Processes and their configs", plus `uplinks` (segment
# links, agreed with the bus devices) and the common `log_level`.
SWITCH_KEYS = {"name", "kind", "data", "control", "aging_time", "max_entries", "seed", "capture",
               "defaults", "ports", "uplinks", "parent_pid", "log_level"}
HUB_KEYS = SWITCH_KEYS - {"aging_time", "max_entries"}
NODE_KEYS = {"name", "kind", "control", "syscall", "interfaces", "routes", "arp", "sysctl", "hosts_file",
             "parent_pid", "log_level"}
INTERFACE_KEYS = {"name", "mac", "ip", "mtu", "endpoint", "attachment"}
ROUTE_KEYS = {"dst", "gateway", "dev", "metric", "src"}
LINK_KEYS = {"mtu", "rate", "delay", "jitter", "loss", "loss_correlation", "duplicate", "corrupt", "reorder",
             "queue", "up"}


@pytest.fixture(scope="module")
def two_lans():
    return load_topology(TOPOLOGIES / "two_lans.yaml")


@pytest.fixture(scope="module")
def plan(two_lans):
    return build_plan(two_lans, RUN, seed=7, parent_pid=1234)


def test_config_keys_are_the_documented_ones():
    design = (ROOT / "docs" / "design.md").read_text()
    for key in (SWITCH_KEYS | NODE_KEYS | INTERFACE_KEYS | ROUTE_KEYS) - {"uplinks"}:
        assert f'"{key}"' in design or key in ("log_level",), key
    assert "`log_level`" in design


def test_devices_come_first_then_nodes(plan):
    assert [p.name for p in plan.processes] == ["lan1", "lan2", "h1", "r1", "h2"]
    assert [(p.kind, p.target) for p in plan.devices] == [("switch", "bus.switch:run"), ("hub", "bus.hub:run")]
    assert {p.target for p in plan.nodes} == {"nodes.kernel:run"}
    assert plan["r1"].kind == "router"


def test_switch_config_matches_design(plan):
    config = plan["lan1"].config
    assert set(config) == SWITCH_KEYS
    assert config["data"] == f"ipc://{RUN}/lan1.data"
    assert config["control"] == f"ipc://{RUN}/lan1.ctl" == plan["lan1"].control
    assert (config["aging_time"], config["max_entries"], config["capture"]) == (300.0, 8192, None)
    assert (config["parent_pid"], config["log_level"], config["uplinks"]) == (1234, "info", [])
    assert set(config["ports"]) == {"h1:eth0", "r1:eth0"}


def test_hub_ports_carry_merged_link_params(plan):
    config = plan["lan2"].config
    assert set(config) == HUB_KEYS
    assert set(config["defaults"]) == LINK_KEYS
    assert config["defaults"]["delay"] == 0.002
    assert config["ports"]["h2:eth0"] == config["defaults"]
    r1 = config["ports"]["r1:eth1"]
    assert (r1["rate"], r1["delay"], r1["mtu"], r1["loss"], r1["queue"], r1["up"]) == (100_000_000, 0.005, 1500, 0.0, 1000, True)


def test_node_config_matches_design(plan, two_lans):
    config = plan["h2"].config
    assert set(config) == NODE_KEYS
    assert config["control"] == f"ipc://{RUN}/h2.ctl"
    assert config["syscall"] == f"{RUN}/h2.sys"
    assert config["interfaces"] == [{"name": "eth0", "mac": "02:00:00:00:02:10", "ip": "10.0.2.10/24", "mtu": 1500,
                                     "endpoint": f"ipc://{RUN}/lan2.data", "attachment": "h2:eth0"}]
    assert config["routes"] == [{"dst": "0.0.0.0/0", "gateway": "10.0.2.1", "dev": None, "metric": 0, "src": None}]
    assert config["arp"] == [{"ip": "10.0.2.1", "mac": "02:00:00:00:02:01", "dev": "eth0"}]
    assert config["sysctl"] == {"net.ipv4.ip_forward": 0, "net.ipv4.icmp_ratelimit": 1000}
    assert config["hosts_file"] == f"{RUN}/hosts" == plan.hosts_file
    assert plan.hosts == two_lans.hosts
    assert plan["r1"].config["sysctl"]["net.ipv4.ip_forward"] == 1
    assert [i["attachment"] for i in plan["r1"].config["interfaces"]] == ["r1:eth0", "r1:eth1"]


def test_plan_is_deterministic_and_plain_data(two_lans):
    first = build_plan(two_lans, RUN, seed=3).as_dict()
    again = build_plan(load_topology(TOPOLOGIES / "two_lans.yaml"), RUN, seed=3).as_dict()
    assert json.dumps(first) == json.dumps(again)
    assert msgpack.unpackb(msgpack.packb(first)) == first


def test_device_seeds_are_distinct_and_follow_the_plan_seed(two_lans):
    one = build_plan(two_lans, RUN, seed=1)
    two = build_plan(two_lans, RUN, seed=2)
    assert one["lan1"].config["seed"] != one["lan2"].config["seed"]
    assert one["lan1"].config["seed"] != two["lan1"].config["seed"]
    assert one["lan1"].config["seed"] == build_plan(two_lans, RUN, seed=1)["lan1"].config["seed"]


def test_p2p_links_become_p2p_devices_with_two_ports():
    plan = build_plan(load_topology(TOPOLOGIES / "lossy_wan.yaml"), "/tmp/r")
    wan = plan["wan"]
    assert (wan.kind, wan.target) == ("p2p", "bus.p2p:run")
    assert set(wan.config) == HUB_KEYS
    ports = wan.config["ports"]
    assert list(ports) == ["ra:eth1", "rb:eth0"]
    assert (ports["ra:eth1"]["delay"], ports["ra:eth1"]["loss"], ports["ra:eth1"]["rate"]) == (0.05, 0.02, 10_000_000)
    assert (ports["rb:eth0"]["delay"], ports["rb:eth0"]["loss"]) == (0.0, 0.0)


def test_segment_links_become_an_uplink_on_one_device_and_a_port_on_the_other():
    topology = parse_topology(textwrap.dedent("""
        name: t
        defaults: {link: {queue: 50}}
        segments:
          a: {kind: switch, rate: 1Gbit}
          b: {kind: hub, delay: 1ms}
        links:
          - {between: [a, b], delay: 3ms}
        nodes:
          h1: {kind: host, interfaces: {eth0: {segment: a, ip: 10.0.0.1/24}}}
          h2: {kind: host, interfaces: {eth0: {segment: b, ip: 10.0.0.2/24}}}
    """))
    plan = build_plan(topology, "/tmp/r")
    (uplink,) = plan["a"].config["uplinks"]
    assert set(uplink) == {"endpoint", "attachment"} | LINK_KEYS
    assert (uplink["endpoint"], uplink["attachment"]) == ("ipc:///tmp/r/b.data", "a~b")
    assert (uplink["rate"], uplink["delay"], uplink["queue"]) == (1_000_000_000, 0.003, 50)
    assert plan["b"].config["uplinks"] == []
    assert plan["b"].config["ports"]["a~b"] == plan["b"].config["defaults"]
    assert plan["b"].config["defaults"]["delay"] == 0.001


def test_capture_paths_are_resolved_against_base_dir(tmp_path):
    topology = parse_topology(textwrap.dedent("""
        name: t
        segments:
          lan1: {capture: caps/lan1.pcap}
          lan2: {capture: /var/tmp/lan2.pcap}
        nodes:
          h1: {kind: host, interfaces: {eth0: {segment: lan1, ip: 10.0.0.1/24}}}
    """))
    plan = build_plan(topology, "/tmp/r", base_dir=tmp_path)
    assert plan["lan1"].config["capture"] == str(tmp_path / "caps" / "lan1.pcap")
    assert plan["lan2"].config["capture"] == "/var/tmp/lan2.pcap"


def test_run_dir_too_long_for_ipc_socket_paths_is_refused(two_lans):
    with pytest.raises(PlanError, match="over the 107-byte limit"):
        build_plan(two_lans, "/tmp/" + "x" * 100)


def test_generated_500_plan_builds_every_process():
    plan = build_plan(load_topology(TOPOLOGIES / "generated_500.yaml"), "/tmp/netemu-1000/generated-500")
    assert len(plan.nodes) == 500 and len(plan.devices) == 22
    assert sum(len(p.config["uplinks"]) for p in plan.devices) == 20
    assert max(len(p.config["ports"]) for p in plan.devices) <= 33


def test_sysctls_are_checked_against_the_kernel_registry():
    assert "net.ipv4.ip_forward" in KNOWN_SYSCTLS
    assert check_sysctl("net.ipv4.ip_forward", True) == 1
    with pytest.raises(SysctlError, match=r"did you mean 'net\.ipv4\.ip_forward'"):
        check_sysctl("net.ipv4.ip_forwrd", 1)


def test_the_hosts_file_lists_localhost_then_every_topology_name(two_lans, tmp_path):
    plan = build_plan(two_lans, tmp_path)
    plan.write_hosts_file()
    lines = (tmp_path / "hosts").read_text().splitlines()
    assert lines[0] == "127.0.0.1\tlocalhost"
    assert lines[1:] == [f"{address}\t{name}" for name, address in two_lans.hosts.items()]
    assert "h2" in two_lans.hosts and f"{two_lans.hosts['h2']}\th2" in lines
