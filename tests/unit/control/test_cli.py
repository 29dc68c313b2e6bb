"""control/cli.py without processes: ping's options as iputils reads them, and Tab completion."""
from __future__ import annotations

import io
from types import SimpleNamespace
from unittest import mock

import pytest

from control.cli import CommandError, NetemuShell, parse_ping

# -- ping options ---------------------------------------------------------------------------


def test_ping_defaults_and_values():
    options = parse_ping(["h2"])
    assert (options.count, options.size, options.interval, options.timeout, options.ttl) == (3, 56, 1.0, 2.0, None)
    options = parse_ping(["-c", "2", "-s", "65507", "-i", "0.2", "-W", "0.5", "-t", "1", "-M", "do", "h2"])
    assert (options.count, options.size, options.interval, options.timeout, options.ttl) == (2, 65507, 0.2, 0.5, 1)
    assert options.pmtudisc == "do" and options.destination == "h2"


@pytest.mark.parametrize("args, message", [
    (["-s", "70000"], "ping: packet size 70000 is too large. Maximum is 65507"),
    (["-s", "-1"], "ping: invalid argument: '-1': out of range: 0 <= value <= 2147483647"),
    (["-c", "0"], "ping: invalid argument: '0': out of range: 1 <= value <= 9223372036854775807"),
    (["-c", "many"], "ping: invalid argument: 'many'"),
    (["-t", "256"], "ping: invalid argument: '256': out of range: 0 <= value <= 255"),
    (["-t", "0"], "ping: cannot set unicast time-to-live: Invalid argument"),
    (["-i", "-1"], "ping: bad timing interval: -1"),
    (["-i", "soon"], "ping: bad timing interval: soon"),
    (["-i", "nan"], "ping: bad timing interval: nan"),
    (["-W", "-2"], "ping: bad linger time: -2"),
    (["-W", "0"], "ping: bad linger time: 0 (must be more than 0)"),
])
def test_ping_values_out_of_range_are_named_with_their_range_as_iputils_does(args, message):
    with pytest.raises(CommandError) as error:
        parse_ping([*args, "h2"])
    assert str(error.value) == message


# -- Tab completion ---------------------------------------------------------------------------


@pytest.fixture
def shell():
    topology = SimpleNamespace(nodes={"h1": None, "r1": None, "h2": None}, segments={"lan1": None})
    net = SimpleNamespace(name="t", topology=topology)
    return NetemuShell(net, stdin=io.StringIO(""), stdout=io.StringIO(), script=True)


def complete(shell, line: str) -> list[str]:
    """What Tab offers at the end of `line`, through cmd's readline entry point."""
    text = line.split(" ")[-1]
    begidx = len(line) - len(text)
    import readline

    with mock.patch.object(readline, "get_line_buffer", return_value=line), \
            mock.patch.object(readline, "get_begidx", return_value=begidx), \
            mock.patch.object(readline, "get_endidx", return_value=len(line)):
        offered = []
        while (match := shell.complete(text, len(offered))) is not None:
            offered.append(match)
        return offered


def test_tab_at_the_start_offers_commands_and_nodes(shell):
    assert complete(shell, "h") == ["heal", "help", "h1", "h2"]


def test_tab_after_a_node_offers_its_commands(shell):
    assert complete(shell, "h1 ") == ["ping", "traceroute", "ip", "sysctl", "counters", "netstat", "arp", "route"]
    assert complete(shell, "h1 p") == ["ping"]
    assert complete(shell, "r1 tr") == ["traceroute"]


def test_tab_after_ping_offers_the_nodes_to_ping(shell):
    assert complete(shell, "h1 ping ") == ["h1", "r1", "h2"]
    assert complete(shell, "h1 ping -c 3 h") == ["h1", "h2"]


def test_tab_after_ip_offers_its_objects_then_their_verbs(shell):
    assert complete(shell, "h1 ip ") == ["addr", "link", "route", "neigh"]
    assert complete(shell, "h1 ip -s l") == ["link"]
    assert complete(shell, "h1 ip r ") == ["show", "add", "del", "replace"]
    assert complete(shell, "h1 ip neighbour f") == ["flush"]
    assert complete(shell, "h1 ip route add ") == []


def test_tab_after_sysctl_offers_the_knobs(shell):
    assert complete(shell, "h1 sysctl net.ipv4.ip_f") == ["net.ipv4.ip_forward", "net.ipv4.ip_forward_use_pmtu"]
    assert complete(shell, "h1 sysctl -w net.core.n") == ["net.core.netdev_budget", "net.core.napi"]
    assert complete(shell, "h1 sysctl -") == ["-a", "-w"]


def test_tab_after_other_commands_offers_nodes_and_segments(shell):
    assert complete(shell, "link h1 ") == ["h1", "r1", "h2", "lan1"]
    assert complete(shell, "capture l") == ["lan1"]


def test_tab_after_iperf_offers_nodes_but_not_after_its_options(shell):
    assert complete(shell, "iperf ") == ["h1", "r1", "h2"]
    assert complete(shell, "iperf h1 h") == ["h1", "h2"]
    assert complete(shell, "iperf h1 -t ") == []
