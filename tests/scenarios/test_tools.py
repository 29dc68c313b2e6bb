"""The node's tools as programs (nodes/tools/bin: ip, ss, sysctl, arp, route) against a running emulation.

Each tool runs as a subprocess through its shim, with the environment
`netemu exec`/`attach` give every program on a node (NETEMU_CONTROL,
NETEMU_NODE, NETEMU_PYTHON, the tools first on PATH). The tools use only the
control channel, so no syscall trap is needed for them; the last test runs
them as real programs on the node (`node.run`, under the trap) to see `ss -p`
find a program's socket.
"""
from __future__ import annotations

import os
import subprocess
import sys

import pytest

from control.emulation import Emulation
from nodes.tools import BIN_DIR
from tests.conftest import require_trap

from .helpers import private_run_base, topology

# A program holding one UDP socket on its node until its stdin closes.
UDP_HOLDER = ("import socket, sys; s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.bind(('0.0.0.0', 5400)); "
              "print('ready', flush=True); sys.stdin.read()")


@pytest.fixture(scope="module")
def net():
    """two_lans (h1 -- lan1 -- r1 -- lan2 -- h2) in a private run directory."""
    with private_run_base():
        with Emulation(topology("two_lans"), name="scn-tools") as emulation:
            yield emulation


def on(net, node: str, command: str, check: bool = True) -> subprocess.CompletedProcess:
    """Run `command` (a shell line) as a program on `node` would: the tools first on PATH."""
    env = dict(os.environ, NETEMU_CONTROL=net.supervisor[node].control, NETEMU_NODE=node,
               NETEMU_PYTHON=sys.executable, PATH=f"{BIN_DIR}{os.pathsep}{os.environ.get('PATH', '')}")
    result = subprocess.run(["/bin/sh", "-c", command], env=env, capture_output=True, text=True, timeout=60,
                            cwd="/")
    if check:
        assert result.returncode == 0, f"{command}: exit {result.returncode}\n{result.stdout}{result.stderr}"
    return result


@pytest.mark.timeout(120)
def test_ip_addr_lists_the_nodes_address_not_the_hosts(net):
    shown = on(net, "h1", "ip addr").stdout
    assert "    inet 10.0.1.10/24 brd 10.0.1.255 scope global eth0" in shown
    assert "    inet 10.0.2.10/24" not in shown
    assert on(net, "h2", "ip -br a show eth0").stdout.split()[2] == "10.0.2.10/24"
    assert on(net, "h2", "route -n").stdout.splitlines()[2].split()[:4] == ["0.0.0.0", "10.0.2.1", "0.0.0.0", "UG"]


@pytest.mark.timeout(120)
def test_ip_route_add_is_seen_by_ip_route_and_by_the_api(net):
    on(net, "h1", "ip route add 192.0.2.0/24 via 10.0.1.1 metric 7")
    try:
        assert "192.0.2.0/24 via 10.0.1.1 dev eth0 metric 7" in on(net, "h1", "ip r").stdout.splitlines()
        assert {"dst": "192.0.2.0/24", "gateway": "10.0.1.1", "metric": 7} in [
            {key: route[key] for key in ("dst", "gateway", "metric")} for route in net["h1"].routes()]
        again = on(net, "h1", "ip route add 192.0.2.0/24 via 10.0.1.1 metric 7", check=False)
        assert (again.returncode, again.stderr) == (2, "RTNETLINK answers: File exists\n")
    finally:
        on(net, "h1", "ip route del 192.0.2.0/24")
    assert "192.0.2.0/24" not in on(net, "h1", "ip route show").stdout


@pytest.mark.timeout(120)
def test_ip_link_set_mtu_is_visible(net):
    on(net, "h2", "ip link set eth0 mtu 1400")
    try:
        assert " mtu 1400 " in on(net, "h2", "ip link show eth0").stdout.splitlines()[0]
    finally:
        on(net, "h2", "ip link set dev eth0 mtu 1500")


@pytest.mark.timeout(120)
def test_sysctl_write_then_read(net):
    assert on(net, "r1", "sysctl -n net.ipv4.ip_forward").stdout == "1\n"
    assert on(net, "h1", "sysctl -w net.ipv4.ip_forward=1").stdout == "net.ipv4.ip_forward = 1\n"
    try:
        assert on(net, "h1", "sysctl -n net/ipv4/ip_forward").stdout == "1\n"
        assert net["h1"].call("sysctl", name="net.ipv4.ip_forward") == 1
    finally:
        on(net, "h1", "sysctl -q net.ipv4.ip_forward=0")
    unknown = on(net, "h1", "sysctl net.ipv4.no_such_knob", check=False)
    assert unknown.returncode == 255 and "cannot stat /proc/sys/net/ipv4/no_such_knob" in unknown.stderr


@pytest.mark.timeout(120)
def test_arp_n_after_a_ping_shows_the_neighbour(net):
    assert net["h1"].ping("h2", count=1).received == 1
    router_mac = next(i["mac"] for i in net["r1"].call("interfaces") if i["name"] == "eth0")
    rows = [line.split() for line in on(net, "h1", "arp -n").stdout.splitlines()]
    assert rows[0] == ["Address", "HWtype", "HWaddress", "Flags", "Mask", "Iface"]
    assert ["10.0.1.1", "ether", router_mac, "C", "eth0"] in rows
    assert f"10.0.1.1 dev eth0 lladdr {router_mac} " in on(net, "h1", "ip neigh").stdout


@pytest.mark.timeout(120)
def test_ss_uan_shows_a_udp_endpoint_of_the_node(net):
    bound = net["h2"].call("udp_bind", port=5999)
    try:
        rows = [line.split() for line in on(net, "h2", "ss -uan").stdout.splitlines()]
        assert rows[0][:3] == ["State", "Recv-Q", "Send-Q"]
        assert ["UNCONN", "0", "0", f"{bound['address']}:5999", "0.0.0.0:*"] in rows
        assert "5999" not in on(net, "h1", "ss -uan").stdout  # h1's sockets are not h2's
        assert on(net, "h2", "ss -tn").stdout.splitlines()[1:] == []  # no TCP yet, nothing connected
    finally:
        net["h2"].call("udp_close", port=5999)


@pytest.mark.timeout(120)
def test_a_tool_off_a_node_or_with_its_node_gone(tmp_path):
    env = {key: value for key, value in os.environ.items() if not key.startswith("NETEMU_")}
    env["NETEMU_PYTHON"] = sys.executable
    result = subprocess.run([os.path.join(BIN_DIR, "ip"), "route"], env=env, capture_output=True, text=True,
                            timeout=60)
    assert (result.returncode, result.stderr) == (1, "ip: not on a netemu node (NETEMU_CONTROL is not set)\n")
    env.update(NETEMU_CONTROL=f"ipc://{tmp_path}/h9.ctl", NETEMU_NODE="h9")
    result = subprocess.run([os.path.join(BIN_DIR, "ss"), "-uan"], env=env, capture_output=True, text=True,
                            timeout=60)
    assert (result.returncode, result.stderr) == (1, f"ss: node h9 is not running (no control socket at "
                                                     f"{tmp_path}/h9.ctl)\n")


@pytest.mark.timeout(120)
def test_tools_run_as_programs_on_the_node_and_ss_p_names_socket_owners(net):
    """Through `node.exec`/`run` (the syscall trap, the PATH exec gives): the tools see their node,
    and `ss -p` finds the program behind a socket by the inode the node reports."""
    require_trap()
    routes = net["h2"].run(["ip", "route"], capture_output=True, text=True, timeout=60)
    assert (routes.returncode, routes.stderr) == (0, "")
    assert routes.stdout.splitlines()[0] == "default via 10.0.2.1 dev eth0"
    holder = net["h2"].exec([sys.executable, "-c", UDP_HOLDER], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            text=True)
    try:
        assert holder.stdout.readline() == "ready\n"
        shown = net["h2"].run(["ss", "-uanp"], capture_output=True, text=True, timeout=60)
        assert (shown.returncode, shown.stderr) == (0, "")
        [row] = [line for line in shown.stdout.splitlines() if " 0.0.0.0:5400 " in line]
        assert row.split()[:3] == ["UNCONN", "0", "0"]
        assert f",pid={holder.pid},fd=" in row and row.split()[-1].startswith('users:(("python')
    finally:
        holder.kill()
        holder.wait()
