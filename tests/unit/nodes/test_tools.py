"""The node's tools (nodes/tools: ip, ss, sysctl, arp) against a real in-memory stack.

`MemNode` answers the tools' control calls with the node kernel's own op
methods (Kernel.op_*) over a memnet Stack, replies round-tripped through
msgpack and failures turned into ControlError as the control channel does, so
the tools see exactly the shapes and errors a running node gives them.
"""
from __future__ import annotations

import io
import json
import os
import socket
import stat
from pathlib import Path

import msgpack
import pytest

from bus.transport import ControlError, _reply_error
from nodes.kernel import Kernel
from nodes.memnet import host_router_host
from nodes.socket import AF_INET, AF_INET6, IPPROTO_ICMP, SOCK_DGRAM
from nodes.tools import BIN_DIR, TOOLS, arp, common, ip, route, ss, sysctl
from nodes.wire.addresses import parse_cidr


class MemNode:
    """Just enough of a Kernel for its op_* methods (a stack and a clock), called as a ControlClient is."""

    op_neigh_add = Kernel.op_neigh_add
    op_neigh_del = Kernel.op_neigh_del
    op_neigh_flush = Kernel.op_neigh_flush
    op_route_add = Kernel.op_route_add
    op_route_del = Kernel.op_route_del
    op_route_cache = Kernel.op_route_cache
    op_sysctl = Kernel.op_sysctl
    _apply_sysctl = Kernel._apply_sysctl
    op_link_set = Kernel.op_link_set
    op_addr_add = Kernel.op_addr_add

    def __init__(self, net, stack) -> None:
        self.net = net
        self.stack = stack
        self.calls: list[tuple[str, dict]] = []

    def clock(self) -> float:
        return self.net.now

    def handlers(self) -> dict:
        stack = self.stack
        # The same table as Kernel._handlers for the ops the tools use (op_interfaces adds the NIC's port).
        return {
            "interfaces": stack.interfaces,
            "routes": lambda table="main": stack.fib.routes(table),
            "neigh": lambda: stack.neigh.table(self.clock()),
            "neigh_add": self.op_neigh_add, "neigh_del": self.op_neigh_del, "neigh_flush": self.op_neigh_flush,
            "route_add": self.op_route_add, "route_del": self.op_route_del, "route_cache": self.op_route_cache,
            "sysctl": self.op_sysctl, "link_set": self.op_link_set, "addr_add": self.op_addr_add,
            "addr_del": lambda dev, ip: stack.remove_address(dev, parse_cidr(ip)[0]),
            "sockets": stack.sockets.table,
        }

    def call(self, op: str, /, **args):
        self.calls.append((op, args))
        try:
            result = self.handlers()[op](**args)
        except Exception as exc:  # the control server's conversion of a failed op
            reply = _reply_error(exc)
            raise ControlError(reply["error"], reply["errno"], op) from None
        return msgpack.unpackb(msgpack.packb(result, use_bin_type=True), raw=False)


@pytest.fixture
def network():
    """h1 (10.0.1.10) -- r1 -- h2 (10.0.2.10), with h1's ARP entry for r1 resolved by one ping."""
    net, h1, r1, h2 = host_router_host()
    probe = h1.sockets.socket(AF_INET, SOCK_DGRAM, 0)
    probe.sendto(b"arp", ("10.0.2.10", 9), net.now)
    net.run(1.0)
    probe.close(net.now)
    return net, MemNode(net, h1)


def run(tool, node, *argv):
    """(exit status, stdout, stderr) of `tool argv...` on `node`."""
    out, err = io.StringIO(), io.StringIO()
    status = tool.main(list(argv), node=node, stdout=out, stderr=err)
    return status, out.getvalue(), err.getvalue()


def lines(tool, node, *argv):
    status, out, err = run(tool, node, *argv)
    assert (status, err) == (0, ""), err
    return out.splitlines()


def mac_of(node, dev="eth0"):
    return next(d["mac"] for d in node.call("interfaces") if d["name"] == dev)


# ---------------------------------------------------------------- ip address / link


def test_ip_addr_prints_each_interface_as_iproute2(network):
    _, h1 = network
    assert lines(ip, h1, "addr") == [
        "1: lo: <LOOPBACK,UP,LOWER_UP> mtu 65536 qdisc noqueue state UNKNOWN group default qlen 1000",
        "    link/loopback 00:00:00:00:00:00 brd 00:00:00:00:00:00",
        "    inet 127.0.0.1/8 scope host lo",
        "       valid_lft forever preferred_lft forever",
        "2: eth0: <BROADCAST,MULTICAST,UP,LOWER_UP> mtu 1500 qdisc pfifo_fast state UP group default qlen 1000",
        f"    link/ether {mac_of(h1)} brd ff:ff:ff:ff:ff:ff",
        "    inet 10.0.1.10/24 brd 10.0.1.255 scope global eth0",
        "       valid_lft forever preferred_lft forever",
    ]


@pytest.mark.parametrize("argv", [["a"], ["addr", "sh"], ["address", "list"], ["ad", "show", "dev", "eth0"],
                                  ["a", "s", "eth0"]])
def test_ip_addr_abbreviations_are_iproute2s(network, argv):
    _, h1 = network
    shown = lines(ip, h1, *argv)
    assert "    inet 10.0.1.10/24 brd 10.0.1.255 scope global eth0" in shown
    assert ("    inet 127.0.0.1/8 scope host lo" in shown) == (len(argv) < 3)


def test_ip_4_addr_brief_and_oneline(network):
    _, h1 = network
    assert lines(ip, h1, "-4", "addr", "show", "eth0") == [
        "2: eth0: <BROADCAST,MULTICAST,UP,LOWER_UP> mtu 1500 qdisc pfifo_fast state UP group default qlen 1000",
        "    inet 10.0.1.10/24 brd 10.0.1.255 scope global eth0",
        "       valid_lft forever preferred_lft forever",
    ]
    assert lines(ip, h1, "-br", "a") == ["lo               UNKNOWN        127.0.0.1/8",
                                          "eth0             UP             10.0.1.10/24"]
    assert lines(ip, h1, "-o", "-4", "addr", "show", "dev", "eth0") == [
        "2: eth0    inet 10.0.1.10/24 brd 10.0.1.255 scope global eth0\\"
        "       valid_lft forever preferred_lft forever"]
    assert lines(ip, h1, "-6", "addr") == []  # no IPv6 on a node yet


def test_ip_s_link_shows_the_devices_counters(network):
    _, h1 = network
    stats = h1.stack.devices["eth0"].stats
    shown = lines(ip, h1, "-s", "l", "show", "eth0")
    assert shown[0] == ("2: eth0: <BROADCAST,MULTICAST,UP,LOWER_UP> mtu 1500 qdisc pfifo_fast state UP mode DEFAULT "
                        "group default qlen 1000")
    assert shown[2] == "    RX:  bytes packets errors dropped  missed   mcast"
    assert shown[3].split() == [str(stats.rx_bytes), str(stats.rx_packets), "0", "0", "0", "0"]
    assert shown[5].split()[:2] == [str(stats.tx_bytes), str(stats.tx_packets)]
    assert stats.tx_packets > 0


def test_ip_link_leaves_out_the_cli_s_attachment_and_ip_addr_the_brd_of_a_31_or_32(network):
    _, h1 = network
    # Kernel.op_interfaces names each NIC's segment port; only the netemu> CLI prints it (`attached to`).
    with_port = [dict(dev, attachment=f"h1:{dev['name']}") for dev in h1.call("interfaces")]

    class PortNode(MemNode):
        def handlers(self) -> dict:
            return dict(super().handlers(), interfaces=lambda: with_port)

    assert lines(ip, PortNode(h1.net, h1.stack), "link", "show", "eth0")[1] == (
        f"    link/ether {mac_of(h1)} brd ff:ff:ff:ff:ff:ff")
    assert run(ip, h1, "addr", "add", "192.168.7.1/32", "dev", "eth0") == (0, "", "")
    assert run(ip, h1, "addr", "add", "10.255.0.0/31", "dev", "eth0") == (0, "", "")
    shown = lines(ip, h1, "-4", "addr", "show", "eth0")
    assert "    inet 192.168.7.1/32 scope global eth0" in shown  # Linux gives /31 and /32 no broadcast
    assert "    inet 10.255.0.0/31 scope global eth0" in shown


def test_ip_link_set_mtu_and_down_reach_the_device(network):
    _, h1 = network
    assert run(ip, h1, "link", "set", "eth0", "mtu", "1400") == (0, "", "")
    assert run(ip, h1, "link", "set", "dev", "eth0", "down") == (0, "", "")
    assert lines(ip, h1, "link", "show", "eth0")[0] == (
        "2: eth0: <BROADCAST,MULTICAST> mtu 1400 qdisc pfifo_fast state DOWN mode DEFAULT group default qlen 1000")
    assert h1.stack.devices["eth0"].mtu == 1400
    assert lines(ip, h1, "link", "show", "up") == lines(ip, h1, "link", "show", "lo")


def test_ip_link_set_errors_are_iproute2s(network):
    _, h1 = network
    assert run(ip, h1, "link", "set", "eth9", "up") == (1, "", 'Cannot find device "eth9"\n')
    assert run(ip, h1, "link", "set", "eth0", "mtu", "10") == (2, "", "Error: mtu less than device minimum.\n")
    assert run(ip, h1, "link", "set", "eth0", "mtu", "x")[0] == 255
    assert run(ip, h1, "link", "show", "eth9") == (1, "", 'Device "eth9" does not exist.\n')


def test_ip_addr_add_and_del(network):
    _, h1 = network
    assert run(ip, h1, "addr", "add", "192.168.7.1/24", "dev", "eth0") == (0, "", "")
    assert "    inet 192.168.7.1/24 brd 192.168.7.255 scope global eth0" in lines(ip, h1, "a", "show", "eth0")
    assert "192.168.7.0/24 dev eth0 proto kernel scope link src 192.168.7.1" in lines(ip, h1, "route")
    assert run(ip, h1, "addr", "add", "192.168.7.1/24", "dev", "eth0") == (2, "", "RTNETLINK answers: File exists\n")
    assert run(ip, h1, "addr", "replace", "192.168.7.1/24", "dev", "eth0") == (0, "", "")
    assert run(ip, h1, "addr", "del", "192.168.7.1/24", "dev", "eth0") == (0, "", "")
    assert run(ip, h1, "addr", "del", "192.168.7.1/24", "dev", "eth0") == (
        2, "", "RTNETLINK answers: Cannot assign requested address\n")
    assert run(ip, h1, "addr", "add", "10.0.0.300/24", "dev", "eth0") == (
        1, "", 'Error: inet prefix is expected rather than "10.0.0.300/24".\n')
    assert run(ip, h1, "addr", "add", "10.0.0.1/24") == (1, "", 'Not enough information: "dev" argument is required.\n')


# ---------------------------------------------------------------- ip route


def test_ip_route_shows_the_fib_as_iproute2(network):
    _, h1 = network
    expected = ["default via 10.0.1.1 dev eth0", "10.0.1.0/24 dev eth0 proto kernel scope link src 10.0.1.10"]
    for argv in (["route"], ["r"], ["ro"], ["route", "show"], ["route", "list", "table", "main"]):
        assert lines(ip, h1, *argv) == expected
    assert lines(ip, h1, "route", "show", "dev", "eth0") == [
        "default via 10.0.1.1", "10.0.1.0/24 proto kernel scope link src 10.0.1.10"]
    assert "local 10.0.1.10 dev eth0 proto kernel scope host src 10.0.1.10" in lines(ip, h1, "r", "show", "table",
                                                                                        "local")
    assert "local 10.0.1.10 dev eth0 table local proto kernel scope host src 10.0.1.10" in lines(
        ip, h1, "r", "show", "table", "all")


def test_ip_route_show_cache_lists_the_route_cache(network):
    _, h1 = network
    shown = lines(ip, h1, "route", "show", "cache")
    assert "10.0.2.10 via 10.0.1.1 dev eth0 src 10.0.1.10" in shown
    assert shown[shown.index("10.0.2.10 via 10.0.1.1 dev eth0 src 10.0.1.10") + 1].startswith("    cache  used ")


def test_ip_route_add_then_del(network):
    _, h1 = network
    assert run(ip, h1, "route", "add", "192.0.2.0/24", "via", "10.0.1.1", "metric", "5") == (0, "", "")
    assert run(ip, h1, "r", "add", "198.51.100.7", "dev", "eth0") == (0, "", "")
    assert lines(ip, h1, "route")[2:] == ["192.0.2.0/24 via 10.0.1.1 dev eth0 metric 5",
                                          "198.51.100.7 dev eth0 scope link"]
    assert lines(ip, h1, "route", "show", "192.0.2.0/24") == ["192.0.2.0/24 via 10.0.1.1 dev eth0 metric 5"]
    assert run(ip, h1, "route", "del", "192.0.2.0/24") == (0, "", "")
    assert run(ip, h1, "route", "delete", "198.51.100.7/32", "dev", "eth0") == (0, "", "")
    assert len(lines(ip, h1, "route")) == 2


def test_ip_route_errors_are_iproute2s(network):
    _, h1 = network
    assert run(ip, h1, "route", "add", "default", "via", "10.0.1.1") == (2, "", "RTNETLINK answers: File exists\n")
    assert run(ip, h1, "route", "add", "192.0.2.0/24", "via", "1.2.3.4") == (
        2, "", "Error: Nexthop has invalid gateway.\n")
    assert run(ip, h1, "route", "add", "192.0.2.1/24", "dev", "eth0") == (
        2, "", "Error: Invalid prefix for given prefix length.\n")
    assert run(ip, h1, "route", "del", "203.0.113.0/24") == (2, "", "RTNETLINK answers: No such process\n")
    assert run(ip, h1, "route", "add", "192.0.2.0/24", "via", "gw") == (
        1, "", 'Error: inet address is expected rather than "gw".\n')
    assert run(ip, h1, "route", "add", "192.0.2.0/24", "via", "10.0.1.1", "table", "7")[0] == 255
    assert run(ip, h1, "route", "add", "192.0.2.0/24", "dev", "eth7") == (1, "", 'Cannot find device "eth7"\n')
    assert run(ip, h1, "route", "replace", "default", "via", "10.0.1.1", "metric", "0") == (0, "", "")


def test_ip_command_line_errors(network):
    _, h1 = network
    assert run(ip, h1, "frobnicate") == (1, "", 'Object "frobnicate" is unknown, try "ip help".\n')
    assert run(ip, h1, "-z", "addr") == (255, "", 'Option "-z" is unknown, try "ip -help".\n')
    assert run(ip, h1, "addr", "frob") == (255, "", 'Command "frob" is unknown, try "ip address help".\n')
    assert run(ip, h1, "rule")[0] == 255
    incomplete = (255, "", 'Command line is not complete. Try option "help"\n')
    for argv in (["-f"], ["route", "add", "192.0.2.0/24", "via"], ["neigh", "show", "dev"], ["link", "set", "mtu"],
                 ["addr", "show", "dev"], ["route", "add"], ["neigh", "flush", "dev"]):
        assert run(ip, h1, *argv) == incomplete, argv
    assert h1.calls == []  # nothing reached the node


def test_ip_json_has_iproute2s_keys(network):
    net, h1 = network
    router = mac_of(MemNode(net, net.stacks["r1"]))
    status, out, _ = run(ip, h1, "-j", "addr", "show", "eth0")
    assert status == 0 and out.count("\n") == 1
    [eth0] = json.loads(out)
    assert {key: eth0[key] for key in ("ifindex", "ifname", "flags", "mtu", "operstate", "link_type")} == {
        "ifindex": 2, "ifname": "eth0", "flags": ["BROADCAST", "MULTICAST", "UP", "LOWER_UP"], "mtu": 1500,
        "operstate": "UP", "link_type": "ether"}
    assert eth0["addr_info"] == [{"family": "inet", "local": "10.0.1.10", "prefixlen": 24, "broadcast": "10.0.1.255",
                                  "scope": "global", "label": "eth0", "valid_life_time": 4294967295,
                                  "preferred_life_time": 4294967295}]
    assert json.loads(run(ip, h1, "-j", "-p", "route")[1]) == [
        {"dst": "default", "gateway": "10.0.1.1", "dev": "eth0", "flags": []},
        {"dst": "10.0.1.0/24", "dev": "eth0", "protocol": "kernel", "scope": "link", "prefsrc": "10.0.1.10",
         "flags": []}]
    assert json.loads(run(ip, h1, "-j", "neigh")[1]) == [
        {"dst": "10.0.1.1", "dev": "eth0", "lladdr": router, "state": ["REACHABLE"]}]
    [lo] = json.loads(run(ip, h1, "-j", "-s", "link", "show", "lo")[1])
    assert lo["stats64"]["rx"]["packets"] == 0 and "addr_info" not in lo
    assert run(ip, h1, "-j", "-6", "addr")[1] == "[]\n"


def test_route_n_is_net_tools_format(network):
    _, h1 = network
    assert lines(route, h1, "-n") == [
        "Kernel IP routing table",
        "Destination     Gateway         Genmask         Flags Metric Ref    Use Iface",
        "0.0.0.0         10.0.1.1        0.0.0.0         UG    0      0        0 eth0",
        "10.0.1.0        0.0.0.0         255.255.255.0   U     0      0        0 eth0",
    ]
    assert lines(route, h1)[2].startswith("default         10.0.1.1 ")


def test_route_add_and_del_change_the_same_table_as_ip(network):
    _, h1 = network
    assert run(route, h1, "add", "-net", "192.0.2.0", "netmask", "255.255.255.0", "gw", "10.0.1.1") == (0, "", "")
    assert run(route, h1, "add", "-host", "198.51.100.9", "dev", "eth0") == (0, "", "")
    assert run(route, h1, "add", "-net", "172.16.0.0", "gw", "10.0.1.1", "metric", "3") == (0, "", "")
    assert lines(ip, h1, "route")[2:] == ["172.16.0.0/16 via 10.0.1.1 dev eth0 metric 3",
                                          "192.0.2.0/24 via 10.0.1.1 dev eth0",
                                          "198.51.100.9 dev eth0 scope link"]
    assert "198.51.100.9    0.0.0.0         255.255.255.255 UH    0      0        0 eth0" in lines(route, h1, "-n")
    assert run(route, h1, "add", "-net", "192.0.2.0/24", "gw", "10.0.1.1") == (7, "", "SIOCADDRT: File exists\n")
    assert run(route, h1, "del", "-net", "192.0.2.0/24") == (0, "", "")
    assert run(route, h1, "del", "-net", "192.0.2.0/24") == (7, "", "SIOCDELRT: No such process\n")


# ---------------------------------------------------------------- ip neigh and arp


def test_ip_neigh_shows_add_del_and_flush(network):
    _, h1 = network
    router = mac_of(MemNode(network[0], network[0].stacks["r1"]))
    assert lines(ip, h1, "n") == [f"10.0.1.1 dev eth0 lladdr {router} REACHABLE"]
    assert run(ip, h1, "neigh", "add", "10.0.1.99", "lladdr", "02:00:00:00:00:99", "dev", "eth0") == (0, "", "")
    assert run(ip, h1, "neigh", "add", "10.0.1.99", "lladdr", "02:00:00:00:00:99", "dev", "eth0") == (
        2, "", "RTNETLINK answers: File exists\n")
    assert lines(ip, h1, "neigh", "show", "dev", "eth0") == [f"10.0.1.1 lladdr {router} REACHABLE",
                                                              "10.0.1.99 lladdr 02:00:00:00:00:99 PERMANENT"]
    assert run(ip, h1, "neigh", "flush", "dev", "eth0") == (0, "", "")
    assert lines(ip, h1, "neighbour") == ["10.0.1.99 dev eth0 lladdr 02:00:00:00:00:99 PERMANENT"]
    assert run(ip, h1, "neigh", "del", "10.0.1.99", "dev", "eth0") == (0, "", "")
    assert lines(ip, h1, "neigh") == []
    assert run(ip, h1, "neigh", "del", "10.0.1.99", "dev", "eth0") == (
        2, "", "RTNETLINK answers: No such file or directory\n")
    assert run(ip, h1, "neigh", "flush") == (255, "", "Flush requires arguments.\n")


def test_arp_n_is_net_tools_format(network):
    net, h1 = network
    router = mac_of(MemNode(net, net.stacks["r1"]))
    h1.stack.sockets.socket(AF_INET, SOCK_DGRAM, 0).sendto(b"?", ("10.0.1.77", 9), net.now)  # nobody answers
    net.run(0.1)
    assert lines(arp, h1, "-n") == [
        "Address                  HWtype  HWaddress           Flags Mask            Iface",
        f"10.0.1.1                 ether   {router}   C                     eth0",
        "10.0.1.77                        (incomplete)                              eth0",
    ]
    assert lines(arp, h1, "-an") == [f"? (10.0.1.1) at {router} [ether] on eth0",
                                     "? (10.0.1.77) at <incomplete> on eth0"]


def test_arp_s_and_d_make_and_remove_permanent_entries(network):
    _, h1 = network
    assert run(arp, h1, "-s", "10.0.1.50", "02:00:00:00:00:50", "-i", "eth0") == (0, "", "")
    assert lines(arp, h1, "-n", "10.0.1.50") == [
        "Address                  HWtype  HWaddress           Flags Mask            Iface",
        "10.0.1.50                ether   02:00:00:00:00:50   CM                    eth0"]
    assert lines(arp, h1, "-a", "-n", "10.0.1.50") == ["? (10.0.1.50) at 02:00:00:00:00:50 [ether] PERM on eth0"]
    assert run(arp, h1, "-d", "10.0.1.50") == (0, "", "")
    assert run(arp, h1, "-d", "10.0.1.50") == (255, "", "No ARP entry for 10.0.1.50\n")
    assert lines(arp, h1, "-n", "-i", "eth0", "10.0.1.50") == ["arp: in 1 entries no match found."]


def test_arp_names_come_from_the_hosts_file_only(tmp_path):
    hosts = tmp_path / "hosts"
    hosts.write_text("127.0.0.1 localhost\n10.0.1.1 r1 r1-eth0  # the router\n")
    assert arp.hosts_names(str(hosts)) == {"127.0.0.1": "localhost", "10.0.1.1": "r1"}
    entry = {"ip": "10.0.1.1", "dev": "eth0", "lladdr": "02:00:00:00:00:01", "state": "STALE"}
    assert arp.bsd_lines([entry], {"10.0.1.1": "r1"}) == ["r1 (10.0.1.1) at 02:00:00:00:00:01 [ether] on eth0"]
    assert arp.linux_lines([entry], {"10.0.1.1": "r1"})[1].startswith("r1                       ether   ")


# ---------------------------------------------------------------- ss


def test_ss_uan_lists_udp_sockets_and_kernel_endpoints(network):
    net, h1 = network
    program = h1.stack.sockets.socket(AF_INET, SOCK_DGRAM, 0)
    program.bind(("10.0.1.10", 5353))
    program.connect(("10.0.1.1", 53), net.now)
    h1.stack.udp.bind(0, 6000)  # a kernel-owned endpoint (the control op udp_bind's)
    assert lines(ss, h1, "-uan") == [
        "State   Recv-Q  Send-Q  Local Address:Port  Peer Address:Port  Process",
        "ESTAB   0       0           10.0.1.10:5353      10.0.1.1:53",
        "UNCONN  0       0             0.0.0.0:6000       0.0.0.0:*",
    ]
    assert [line.split()[0] for line in lines(ss, h1, "-un")] == ["State", "ESTAB"]  # without -a: connected only
    assert [line.split()[1] for line in lines(ss, h1, "-tuln")] == ["State", "UNCONN"]
    assert lines(ss, h1, "-tun")[0].startswith("Netid  State")      # two protocols: a Netid column
    assert lines(ss, h1, "-ua")[1].split()[3:5] == ["10.0.1.10:mdns", "10.0.1.1:domain"]  # names without -n


def test_ss_families_and_dual_stack_sockets(network):
    _, h1 = network
    dual = h1.stack.sockets.socket(AF_INET6, SOCK_DGRAM, 0)
    dual.bind(("::", 7000))
    ping = h1.stack.sockets.socket(AF_INET, SOCK_DGRAM, IPPROTO_ICMP)
    ping.bind(("0.0.0.0", 0))
    assert [line.split()[3:5] for line in lines(ss, h1, "-uan6")[1:]] == [["*:7000", "*:*"]]
    assert len(lines(ss, h1, "-uan4")) == 1  # the header alone
    assert [line.split()[0] for line in lines(ss, h1, "-an")] == ["Netid", "icmp", "udp"]
    assert [line.split()[0] for line in lines(ss, h1, "-wan")] == ["Netid", "icmp"]
    assert lines(ss, h1, "-tan") == lines(ss, h1, "-tan")[:1] and lines(ss, h1, "-tanH") == []


def test_ss_p_finds_the_processes_holding_a_sockets_inode():
    left, right = socket.socketpair()
    try:
        inode = os.fstat(left.fileno()).st_ino
        entry = {"proto": "udp", "local": "0.0.0.0:9", "peer": "*:*", "state": "UNCONN", "recv_q": 0, "drops": 0,
                 "inode": inode}
        owners = ss.socket_owners()
        assert owners[inode] == [(Path("/proc/self/comm").read_text().strip(), os.getpid(), left.fileno())]
        selection = ss.parse(["-uanpe"])
        row = ss.table([entry], selection, owners)[1]
        assert row.endswith(f'users:(("{owners[inode][0][0]}",pid={os.getpid()},fd={left.fileno()})) ino:{inode}')
        kernel_owned = dict(entry, inode=None)
        assert ss.table([kernel_owned], selection, owners)[1].endswith("0.0.0.0:*     ino:0")
    finally:
        left.close()
        right.close()


def test_ss_option_errors(network):
    _, h1 = network
    assert run(ss, h1, "-q")[0] == 255
    assert run(ss, h1, "sport", "=", ":53")[0] == 255
    assert ss.parse(["--udp", "--all", "--numeric"]).chosen == ("udp",)
    assert common.option_cluster("--all", "a", {"--all": "a"}) == ["a"]
    assert common.option_cluster("--all", "a") is None
    assert common.option_cluster("-an", "an", {"--all": "a"}) == ["a", "n"]


# ---------------------------------------------------------------- sysctl


def test_sysctl_reads_and_writes_the_nodes_knobs(network):
    _, h1 = network
    assert lines(sysctl, h1, "net.ipv4.ip_forward") == ["net.ipv4.ip_forward = 0"]
    assert lines(sysctl, h1, "-w", "net.ipv4.ip_forward=1") == ["net.ipv4.ip_forward = 1"]
    assert h1.stack.sysctl["net.ipv4.ip_forward"] == 1
    assert lines(sysctl, h1, "-n", "net/ipv4/ip_forward") == ["1"]
    assert lines(sysctl, h1, "net.ipv4.neigh.default.unres_qlen=5") == ["net.ipv4.neigh.default.unres_qlen = 5"]
    assert h1.stack.neigh.params.unres_qlen == 5  # applied to the table, as the kernel op does
    assert lines(sysctl, h1, "-q", "-w", "net.ipv4.ip_forward=0") == []
    assert lines(sysctl, h1, "net.ipv4.ip_local_port_range") == ["net.ipv4.ip_local_port_range = 32768\t60999"]


def test_sysctl_errors_are_procps(network):
    _, h1 = network
    assert run(sysctl, h1, "net.ipv4.no_such") == (
        255, "", "sysctl: cannot stat /proc/sys/net/ipv4/no_such: No such file or directory\n")
    assert run(sysctl, h1, "-w", "net.ipv4.ip_forward=7") == (
        255, "", 'sysctl: setting key "net.ipv4.ip_forward": Invalid argument\n')
    assert run(sysctl, h1, "-e", "net.ipv4.no_such") == (0, "", "")
    assert run(sysctl, h1, "-w", "net.ipv4.ip_forward") == (
        255, "", 'sysctl: "net.ipv4.ip_forward" must be of the form name=value\n')
    assert run(sysctl, h1)[0] == 1


def test_sysctl_a_and_p(network, tmp_path):
    _, h1 = network
    everything = lines(sysctl, h1, "-a")
    assert everything == sorted(everything) and "net.ipv4.ip_forward = 0" in everything
    assert len(everything) == len(h1.stack.sysctl)
    assert lines(sysctl, h1, "-a", "-r", "ip_forward$") == ["net.ipv4.ip_forward = 0"]
    assert lines(sysctl, h1, "-N", "-a", "-r", "ip_forward$") == ["net.ipv4.ip_forward"]
    conf = tmp_path / "sysctl.conf"
    conf.write_text("# a comment\nnet.ipv4.ip_forward = 1\n; another\n-net.ipv4.no_such = 3\n")
    assert lines(sysctl, h1, "-p", str(conf)) == ["net.ipv4.ip_forward = 1"]


# ---------------------------------------------------------------- off a node, and the shims


@pytest.mark.parametrize("tool, argv", [(ip, ["route"]), (ss, ["-uan"]), (sysctl, ["-a"]), (arp, ["-n"]),
                                        (route, ["-n"])])
def test_a_tool_off_a_node_says_so(monkeypatch, tool, argv):
    monkeypatch.delenv("NETEMU_CONTROL", raising=False)
    name = tool.__name__.rsplit(".", 1)[1]
    out, err = io.StringIO(), io.StringIO()
    assert tool.main(argv, stdout=out, stderr=err) == 1
    assert (out.getvalue(), err.getvalue()) == ("", f"{name}: not on a netemu node (NETEMU_CONTROL is not set)\n")


def test_a_node_that_is_gone_or_silent_is_reported(monkeypatch, tmp_path):
    monkeypatch.setenv("NETEMU_NODE", "h1")
    monkeypatch.setenv("NETEMU_CONTROL", f"ipc://{tmp_path}/h1.ctl")
    err = io.StringIO()
    assert ip.main(["route"], stdout=io.StringIO(), stderr=err) == 1
    assert err.getvalue() == f"ip: node h1 is not running (no control socket at {tmp_path}/h1.ctl)\n"
    with socket.socket() as unused:  # a port nobody listens on: ZeroMQ waits, the tool times out
        unused.bind(("127.0.0.1", 0))
        endpoint = f"tcp://127.0.0.1:{unused.getsockname()[1]}"
    monkeypatch.setenv("NETEMU_CONTROL", endpoint)
    monkeypatch.setattr(common, "CALL_TIMEOUT", 0.2)
    err = io.StringIO()
    assert ss.main(["-uan"], stdout=io.StringIO(), stderr=err) == 1
    assert err.getvalue() == f"ss: node h1 does not answer (no reply from {endpoint} within 0.2 s)\n"


def test_the_shims_are_executable_and_run_their_module():
    assert Path(BIN_DIR).is_absolute() and sorted(os.listdir(BIN_DIR)) == sorted(TOOLS)
    for tool in TOOLS:
        path = Path(BIN_DIR) / tool
        assert path.stat().st_mode & stat.S_IXUSR
        text = path.read_text()
        assert text.startswith("#!/bin/sh\n")
        assert f'exec "${{NETEMU_PYTHON:-python3}}" -P -m nodes.tools.{tool} "$@"' in text
