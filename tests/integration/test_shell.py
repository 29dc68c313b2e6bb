"""The `netemu>` shell in script mode against a live two_lans emulation: every command, and bad input.

Each test feeds lines through a StringIO stdin and reads what the shell
printed; tests that change the network put it back before they end.
"""
from __future__ import annotations

import io
import re
import tempfile
from pathlib import Path

import pytest
from scapy.layers.inet import ICMP
from scapy.utils import rdpcap

from control.cli import NetemuShell, run_shell
from control.emulation import Emulation
from tests.conftest import require_trap

from ..scenarios.helpers import topology

pytestmark = pytest.mark.timeout(60)

PING_OK = "2 packets transmitted, 2 received, 0% packet loss"


@pytest.fixture(scope="module")
def net():
    with Emulation(topology("two_lans"), name="shell-two-lans") as emulation:
        yield emulation


def shell(net, text: str) -> tuple[list[str], int]:
    """Run `text` as a script; the printed lines (without echoed prompts) and the number of failed commands."""
    out = io.StringIO()
    session = NetemuShell(net, stdin=io.StringIO(text), stdout=out, script=True)
    session.cmdloop()
    return [line for line in out.getvalue().splitlines() if not line.startswith("netemu> ")], session.failures


def ok(net, text: str) -> list[str]:
    lines, failures = shell(net, text)
    assert failures == 0, lines
    return lines


def ping_h1_h2(net, *, expect: bool) -> None:
    lines = ok(net, "h1 ping -c 2 -i 0.1 -W 0.6 h2\n")
    assert (PING_OK in "\n".join(lines)) is expect, lines


# -- topology ----------------------------------------------------------------------------


def test_help_lists_every_command_and_the_node_commands(net):
    lines = ok(net, "help\n")
    listed = set(" ".join(lines).split())
    for command in ("capture", "dump", "exit", "heal", "kill", "link", "links", "net", "nodes", "partition",
                    "pause", "pingall", "quit", "restart", "resume", "stats", "EOF"):
        assert command in listed, command
    assert not any("Undocumented" in line for line in lines)
    node_help = "\n".join(ok(net, "help node\n"))
    for usage in ("<node> ping", "<node> traceroute", "<node> ip", "<node> sysctl", "ip route add|del"):
        assert usage in node_help


def test_nodes_net_and_dump_describe_the_topology(net):
    assert ok(net, "nodes\n") == ["available nodes are:", "h1(host) r1(router) h2(host)",
                                  "segments: lan1(switch) lan2(hub)"]
    assert ok(net, "net\n") == ["h1 eth0:lan1", "r1 eth0:lan1 eth1:lan2", "h2 eth0:lan2",
                                "lan1 (switch) h1:eth0 r1:eth0", "lan2 (hub) r1:eth1 h2:eth0"]
    dump = ok(net, "dump\n")
    assert dump[0] == f"<Host h1: eth0:10.0.1.10/24 pid={net['h1'].pid} ready>"
    assert dump[1] == f"<Router r1: eth0:10.0.1.1/24,eth1:10.0.2.1/24 pid={net['r1'].pid} ready>"
    assert re.fullmatch(r"<Hub lan2: 2 ports pid=\d+ ready>", dump[4])


def test_links_shows_every_port_with_its_shaping(net):
    lines = ok(net, "links\n")
    assert lines[0].split() == ["port", "segment", "link", "attached", "shaping"]
    rows = {line.split()[0]: line for line in lines[1:]}
    assert sorted(rows) == ["h1:eth0", "h2:eth0", "r1:eth0", "r1:eth1"]
    assert rows["r1:eth1"].split() == ["r1:eth1", "lan2", "up", "yes", "rate=100Mbit,", "delay=5ms"]
    assert rows["h2:eth0"].split() == ["h2:eth0", "lan2", "up", "yes", "delay=2ms"]


def test_pingall_prints_the_reachability_matrix(net):
    assert ok(net, "pingall\n") == ["*** Ping: testing ping reachability", "h1 -> h2", "h2 -> h1",
                                    "*** Results: 0% dropped (2/2 received)"]


# -- node commands ---------------------------------------------------------------------------


def test_ping_prints_what_ping_prints(net):
    lines = ok(net, "h1 ping -c 2 -i 0.2 h2\n")
    assert lines[0] == "PING h2 (10.0.2.10) 56(84) bytes of data."
    assert [re.sub(r"time=[\d.]+ ms", "time=T ms", line) for line in lines[1:3]] == [
        "64 bytes from 10.0.2.10: icmp_seq=1 ttl=63 time=T ms",
        "64 bytes from 10.0.2.10: icmp_seq=2 ttl=63 time=T ms"]
    assert lines[3:5] == ["", "--- h2 ping statistics ---"]
    assert lines[5].startswith(PING_OK + ", time ")
    assert lines[6].startswith("rtt min/avg/max/mdev = ")


def test_traceroute_prints_one_line_per_hop(net):
    lines = ok(net, "h1 traceroute -w 1 h2\n")
    assert lines[0] == "traceroute to h2 (10.0.2.10), 30 hops max, 60 byte packets"
    assert [line.split()[:2] for line in lines[1:]] == [["1", "10.0.1.1"], ["2", "10.0.2.10"]]


def test_ip_addr_route_neigh_and_link(net):
    ok(net, "h1 ping -c 1 h2\n")
    addr = ok(net, "h1 ip addr\n")
    assert "    inet 10.0.1.10/24 brd 10.0.1.255 scope global eth0" in addr
    assert ok(net, "h1 ip route\n") == ["default via 10.0.1.1 dev eth0",
                                        "10.0.1.0/24 dev eth0 proto kernel scope link src 10.0.1.10"]
    assert "local 10.0.1.10 dev eth0 proto kernel scope host src 10.0.1.10" in ok(net, "h1 ip route show table local\n")
    assert ok(net, "h1 ip neigh\n") == ["10.0.1.1 dev eth0 lladdr 02:00:0a:00:01:01 REACHABLE"]
    assert ok(net, "h2 ip neigh\n")[0] == "10.0.2.1 dev eth0 lladdr 02:00:00:00:02:01 PERMANENT"
    link = ok(net, "r1 ip -s link\n")
    assert "    link/ether 02:00:00:00:02:01 brd ff:ff:ff:ff:ff:ff attached to r1:eth1" in link
    assert link.count("    RX:  bytes packets errors dropped  missed   mcast") == 3
    assert not any("RX:" in line for line in ok(net, "r1 ip link\n"))


def test_ip_route_show_cache_lists_what_the_router_forwarded(net):
    ok(net, "h1 ping -c 1 h2\n")
    cache = ok(net, "r1 ip route show cache\n")
    assert "10.0.2.10 dev eth1 src 10.0.2.1" in cache
    assert "10.0.1.10 dev eth0 src 10.0.1.1" in cache
    assert cache[-1].startswith("stats: entries ")


def test_ip_route_add_and_del_change_the_table(net):
    ok(net, "h1 ip route add 10.9.0.0/16 via 10.0.1.1 metric 5\n")
    try:
        assert ok(net, "h1 ip route\n")[-1] == "10.9.0.0/16 via 10.0.1.1 dev eth0 metric 5"
    finally:
        ok(net, "h1 ip route del 10.9.0.0/16 via 10.0.1.1\n")
    assert not any(line.startswith("10.9.0.0/16") for line in ok(net, "h1 ip route\n"))
    assert "From 10.0.1.1 icmp_seq=1 Destination Net Unreachable" in ok(net, "h1 ping -c 1 -W 1 10.9.9.9\n")
    ok(net, "h1 ip route del default\n")
    try:
        assert ok(net, "h1 ip route\n") == ["10.0.1.0/24 dev eth0 proto kernel scope link src 10.0.1.10"]
        assert ok(net, "h1 ping -c 1 -W 1 10.9.9.9\n") == ["ping: connect: Network is unreachable"]
    finally:
        ok(net, "h1 ip route add default via 10.0.1.1\n")
    assert ok(net, "h1 ip route\n")[0] == "default via 10.0.1.1 dev eth0"
    ping_h1_h2(net, expect=True)


def test_ip_route_replace_keeps_one_route_and_del_without_metric_matches_any(net):
    ok(net, "h1 ip route add 10.9.0.0/16 via 10.0.1.1 metric 5\n")
    try:
        ok(net, "h1 ip route replace 10.9.0.0/16 via 10.0.1.1 metric 5\n")
        assert [line for line in ok(net, "h1 ip route\n") if line.startswith("10.9.")] == [
            "10.9.0.0/16 via 10.0.1.1 dev eth0 metric 5"]
    finally:
        ok(net, "h1 ip route del 10.9.0.0/16\n")
    assert not any(line.startswith("10.9.") for line in ok(net, "h1 ip route\n"))


def test_ip_link_set_down_takes_the_interface_down_and_up_back(net):
    ok(net, "h1 ip link set eth0 down\n")
    try:
        assert "state DOWN" in ok(net, "h1 ip link\n")[2]
        ping_h1_h2(net, expect=False)
    finally:
        ok(net, "h1 ip link set eth0 up\n")
    assert "state UP" in ok(net, "h1 ip link\n")[2]
    net.wait_for(lambda: PING_OK in "\n".join(ok(net, "h1 ping -c 2 -i 0.1 -W 0.6 h2\n")), timeout=5.0)


def test_sysctl_reads_and_writes_knobs(net):
    assert ok(net, "h2 sysctl net.ipv4.icmp_echo_ignore_all\n") == ["net.ipv4.icmp_echo_ignore_all = 0"]
    assert ok(net, "h2 sysctl -w net.ipv4.icmp_echo_ignore_all=1\n") == ["net.ipv4.icmp_echo_ignore_all = 1"]
    try:
        ping_h1_h2(net, expect=False)
    finally:
        ok(net, "h2 sysctl -w net.ipv4.icmp_echo_ignore_all=0\n")
    ping_h1_h2(net, expect=True)
    assert "net.ipv4.ip_forward = 1" in ok(net, "r1 sysctl -a\n")


def test_counters_show_nonzero_snmp_counters(net):
    ok(net, "h1 ping -c 1 h2\n")
    counters = ok(net, "r1 counters\n")
    assert re.search(r"ForwDatagrams=\d+", counters[0]), counters
    assert [line.split(":")[0] for line in counters] == [
        "Ip", "Icmp", "Udp", "Tcp", "TcpExt", "arp_cache", "softnet", "route_cache", "link"]
    assert all("=" in line or line.endswith(": (all zero)") for line in counters), counters
    assert not any("=0 " in line or line.endswith("=0") for line in counters), counters
    everything = ok(net, "r1 counters -a\n")
    assert "FragFails=0" in everything[0] and "vlan_tagged=0" in everything[-1]


# -- faults ----------------------------------------------------------------------------------


def test_link_down_up_and_set(net):
    assert ok(net, "link h2 lan2 down\n") == ["lan2 port h2:eth0: down"]
    try:
        ping_h1_h2(net, expect=False)
        assert "DOWN" in next(line for line in ok(net, "links\n") if line.startswith("h2:eth0"))
    finally:
        assert ok(net, "link h2 lan2 up\n") == ["lan2 port h2:eth0: up"]
    ping_h1_h2(net, expect=True)
    assert ok(net, "link r1 eth1 set delay=20ms\n") == ["lan2 port r1:eth1: rate=100Mbit, delay=20ms"]
    try:
        assert "delay=20ms" in next(line for line in ok(net, "links\n") if line.startswith("r1:eth1"))
    finally:
        assert ok(net, "link r1 eth1 set delay=5ms\n") == ["lan2 port r1:eth1: rate=100Mbit, delay=5ms"]


def test_kill_and_restart_a_router(net):
    old_pid = net["r1"].pid
    assert ok(net, "kill r1\n") == ["r1 killed"]
    try:
        ping_h1_h2(net, expect=False)
        assert "r1: eth0:10.0.1.1/24,eth1:10.0.2.1/24 pid=" in ok(net, "dump\n")[1]
        assert ok(net, "dump\n")[1].endswith(" exited>")
    finally:
        restarted = ok(net, "restart r1\n")
    assert restarted == [f"r1 restarted (pid {net['r1'].pid})"] and net["r1"].pid != old_pid
    net.wait_for(lambda: PING_OK in "\n".join(ok(net, "h1 ping -c 2 -i 0.1 -W 1 h2\n")), timeout=5.0)


def test_pause_and_resume_a_host(net):
    ok(net, "pause h2\n")
    try:
        ping_h1_h2(net, expect=False)
    finally:
        ok(net, "resume h2\n")
    net.wait_for(lambda: PING_OK in "\n".join(ok(net, "h1 ping -c 2 -i 0.1 -W 1 h2\n")), timeout=5.0)


def test_partition_and_heal(net):
    assert ok(net, "partition h1 h2\n") == ["partitioned h1 from h2"]
    try:
        ping_h1_h2(net, expect=False)
        assert PING_OK in "\n".join(ok(net, "h1 ping -c 2 -i 0.1 10.0.1.1\n"))
    finally:
        assert ok(net, "heal\n") == ["healed"]
    ping_h1_h2(net, expect=True)


def test_a_refused_partition_changes_nothing(net):
    lines, failures = shell(net, "partition h1,h2 h2\n")
    assert failures == 1 and lines == ["*** error: partition: h2 cannot be on both sides (the groups must not overlap)"]
    ping_h1_h2(net, expect=True)
    assert PING_OK in "\n".join(ok(net, "h1 ping -c 2 -i 0.1 10.0.1.1\n"))


def test_capture_start_and_stop(net):
    with tempfile.TemporaryDirectory(prefix="ne-shell-") as directory:
        path = Path(directory) / "lan2.pcap"
        assert ok(net, f"capture lan2 {path}\n") == [f"capturing lan2 to {path}"]
        try:
            ping_h1_h2(net, expect=True)
        finally:
            stopped = ok(net, "capture lan2 stop\n")
        frames = rdpcap(str(path))
        assert stopped == [f"capture of lan2 stopped: {len(frames)} frames in {path}"]
        assert len([p for p in frames if p.haslayer(ICMP)]) == 4
    assert ok(net, "capture lan2 stop\n") == ["no capture was running on lan2"]


def test_stats_lists_frame_counters_per_port(net):
    lines = ok(net, "stats\n")
    assert lines[0].split() == ["segment", "port", "rx_pkts", "tx_pkts", "rx_bytes", "tx_bytes", "drops"]
    rows = {tuple(line.split()[:2]): [int(v) for v in line.split()[2:]] for line in lines[1:]}
    assert sorted(rows) == [("lan1", "h1:eth0"), ("lan1", "r1:eth0"), ("lan2", "h2:eth0"), ("lan2", "r1:eth1")]
    assert all(values[0] > 0 and values[1] > 0 for values in rows.values())


# -- bad input ---------------------------------------------------------------------------------


BAD_LINES = [
    ("h9 ping h1", "*** unknown command 'h9'; type help"),
    ("kill h9", "*** unknown node 'h9' (nodes: h1, r1, h2)"),
    ("kill", "*** a node name is missing (nodes: h1, r1, h2)"),
    ("restart", "*** a node name is missing (nodes: h1, r1, h2)"),
    ("h1 ping -x h2", "*** ping: unrecognized arguments: -x"),
    ("h1 ping", "*** ping: the following arguments are required: destination"),
    ("h1 ping -c many h2", "*** ping: invalid argument: 'many'"),
    ("h1 ping -s 70000 h2", "*** ping: packet size 70000 is too large. Maximum is 65507"),
    ("h1 ping -t 300 h2", "*** ping: invalid argument: '300': out of range: 0 <= value <= 255"),
    ("h1 ping -c 1 nosuchhost", "*** error: nosuchhost: Name or service not known"),
    ("h1", "*** usage: h1 COMMAND (one of: ping, traceroute, ip, sysctl, counters, netstat, arp, route)"),
    ("h1 counters -z", "*** usage: <node> counters [-a]"),
    ("h1 ip", "*** usage: ip addr|link|route|neigh ..."),
    ("h1 ip frob", "*** ip: unknown object 'frob' (addr, link, route, neigh)"),
    ("h1 ip route add 10.9.0.0/16 via", "*** ip route: 'via' needs a value"),
    ("h1 ip route add 10.9.0.0/16", "*** ip route: a route needs 'via GATEWAY' or 'dev INTERFACE'"),
    ("h1 ip route add default gw 10.0.1.1", "*** ip route: unknown word 'gw' in route (did you mean 'via'?)"),
    ("h1 ip route add 10.9.0.1/16 dev eth0", "*** ip route: '10.9.0.1/16' has host bits set (did you mean 10.9.0.0/16?)"),
    ("h1 ip link set eth0 sideways", "*** ip link set: unknown setting 'sideways'"),
    ("h1 sysctl -w net.ipv4.no_such_knob=1", "*** error: net.ipv4.no_such_knob: unknown sysctl"),
    ("link", "*** usage: link A B up|down|set KEY=VALUE..."),
    ("link h1 eth0 sideways", "*** link: unknown action 'sideways' (up, down, set)"),
    ("link h1 eth7 down", "*** error: h1 has no interface or segment 'eth7' (a direct p2p link or a segment it is on)"),
    ("link r1 eth1 set delay", "*** expected KEY=VALUE, got 'delay'"),
    ("partition h1", "*** usage: partition NODE[,NODE...] NODE[,NODE...]"),
    ("partition h1 h1", "*** error: partition: h1 cannot be on both sides (the groups must not overlap)"),
    ("partition h1,r1 r1,h2", "*** error: partition: r1 cannot be on both sides (the groups must not overlap)"),
    ("partition , h2", "*** error: partition: each group needs at least one node"),
    ("capture lan1", "*** usage: capture SEGMENT FILE.pcap | capture SEGMENT stop"),
    ("capture lan9 /tmp/x.pcap", "*** error: no segment 'lan9'"),
    ("capture lan1 /no/such/dir/x.pcap", "*** error: /no/such/dir/x.pcap: No such file or directory"),
    ("pingall -c", "*** pingall: argument -c: expected one argument"),
    ("frobnicate", "*** unknown command 'frobnicate'; type help"),
]


@pytest.mark.parametrize(("line", "message"), BAD_LINES, ids=[line for line, _ in BAD_LINES])
def test_bad_input_prints_a_message_and_the_session_goes_on(net, line, message):
    lines, failures = shell(net, f"{line}\nnodes\n")
    assert failures == 1
    assert lines[0].startswith("*** ")
    assert message in lines[0]
    assert lines[1:] == ok(net, "nodes\n")  # the next command still ran


def test_a_word_that_is_no_node_command_runs_as_a_program_on_the_node(net):
    require_trap()
    lines, failures = shell(net, "h1 frob\nnodes\n")
    assert failures == 1
    assert "*** h1: frob exited with status 127" in lines      # as Mininet's `h1 cmd`: the shell's 127
    assert lines[-len(ok(net, "nodes\n")):] == ok(net, "nodes\n")


def test_unknown_sysctl_suggests_a_known_one(net):
    lines, failures = shell(net, "h1 sysctl -w net.ipv4.icmp_ratelimt=5\n")
    assert failures == 1
    assert lines == ["*** error: net.ipv4.icmp_ratelimt: unknown sysctl (did you mean 'net.ipv4.icmp_ratelimit'?)"]


def test_script_mode_echoes_each_command_after_the_prompt_and_skips_comments(net):
    out = io.StringIO()
    NetemuShell(net, stdin=io.StringIO("# a comment\n\nnodes\n"), stdout=out, script=True).cmdloop()
    assert out.getvalue().splitlines()[0] == "netemu> nodes"
    assert "comment" not in out.getvalue()
    assert "EOF" not in out.getvalue()


# -- exit status -------------------------------------------------------------------------------


def test_non_interactive_exit_status_is_1_when_a_command_failed(net, capsys):
    assert run_shell(net, stdin=io.StringIO("nodes\nh9 ping h1\nnet\n")) == 1
    printed = capsys.readouterr().out
    assert "*** unknown command 'h9'; type help" in printed
    assert "lan1 (switch) h1:eth0 r1:eth0" in printed  # ran on after the failure


def test_non_interactive_exit_status_is_0_when_every_command_worked(net, capsys):
    assert run_shell(net, stdin=io.StringIO("nodes\nh1 ping -c 1 h2\nexit\nnodes\n")) == 0
    printed = capsys.readouterr().out
    assert printed.count("available nodes are:") == 1  # nothing runs after exit


def test_script_file_exit_status_follows_its_commands(net, capsys):
    with tempfile.TemporaryDirectory(prefix="ne-shell-") as directory:
        good, bad = Path(directory) / "good.cli", Path(directory) / "bad.cli"
        good.write_text("nodes\n")
        bad.write_text("nodes\nlink h1 eth7 down\n")
        assert run_shell(net, script_file=str(good)) == 0
        assert run_shell(net, script_file=str(bad)) == 1
    capsys.readouterr()
