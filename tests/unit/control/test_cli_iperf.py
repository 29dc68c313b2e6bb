"""control/cli_iperf.py: `netemu> iperf` without an emulation.

The options, iperf3's JSON (reports recorded from Debian's iperf3 3.12 over loopback:
tests/unit/control/iperf3/), Mininet's results line, and the run itself through a fake
emulation whose nodes start programs on the host: the real iperf3 over 127.0.0.1, or
stand-ins that never listen, never answer or are missing. Every failure must print one
line and leave no process behind.
"""
from __future__ import annotations

import io
import json
import re
import socket
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace
from typing import Any, Callable

import psutil
import pytest

from control import cli_iperf
from control.cli import CommandError, NetemuShell
from control.cli_iperf import (IperfError, IperfOptions, format_rate, goodput, listening, parse_iperf, parse_report,
                               results_line)
from tests.conftest import require_tool

SAMPLES = Path(__file__).parent / "iperf3"
PAUSE = [sys.executable, "-c", "import signal; signal.pause()"]


def sample(name: str) -> str:
    return (SAMPLES / f"3.12-{name}.json").read_text()


# -- options ----------------------------------------------------------------------------------


def test_options_default_to_mininets_first_and_last_hosts_five_seconds_and_iperf3s_port():
    assert parse_iperf([], ["h1", "h2", "h3"]) == IperfOptions("h1", "h3", 5, 5201)
    assert parse_iperf(["h2", "h1", "-t", "2", "-p", "5001"], ["h1", "h2"]) == IperfOptions("h2", "h1", 2, 5001)
    assert parse_iperf(["-t", "1", "h1", "r1"], ["h1", "h2"]) == IperfOptions("h1", "r1", 1, 5201)


@pytest.mark.parametrize("args, message", [
    (["h1"], "usage: iperf [SRC DST] [-t SECONDS] [-p PORT]"),
    (["h1", "h2", "h3"], "usage: iperf [SRC DST] [-t SECONDS] [-p PORT]"),
    (["-t", "0", "h1", "h2"], "iperf: -t SECONDS must be 1..86400, got 0"),
    (["-t", "1.5", "h1", "h2"], "iperf: -t SECONDS must be a whole number, got '1.5'"),
    (["-t", "86401", "h1", "h2"], "iperf: -t SECONDS must be 1..86400, got 86401"),
    (["-p", "65536", "h1", "h2"], "iperf: -p PORT must be 1..65535, got 65536"),
    (["-x", "h1", "h2"], "iperf: unrecognized arguments: -x"),
])
def test_bad_options_are_refused_in_one_line(args, message):
    with pytest.raises(CommandError) as error:
        parse_iperf(args, ["h1", "h2"])
    assert str(error.value) == message


def test_without_two_hosts_there_is_no_default_pair():
    with pytest.raises(CommandError, match="needs two hosts"):
        parse_iperf([], ["h1"])


# -- iperf3's JSON ------------------------------------------------------------------------------


def test_the_server_reports_what_it_received_and_the_client_what_it_sent():
    server, client = parse_report(sample("server"), "h2"), parse_report(sample("client"), "h1")
    assert goodput(server, "server", "h2") == server["end"]["sum_received"]["bits_per_second"] == 24587889124.776608
    assert goodput(client, "client", "h1") == client["end"]["sum_sent"]["bits_per_second"] == 24588921368.126232


@pytest.mark.parametrize("name, side, message", [
    ("refused", "client", "h1: unable to connect to server: Connection refused"),
    ("term", "server", "h1: interrupt - the server has terminated"),
    ("inuse", "server", "h1: error - unable to start listener for connections: Address already in use"),
])
def test_a_report_with_an_error_gives_iperf3s_words(name, side, message):
    with pytest.raises(IperfError) as error:
        goodput(parse_report(sample(name), "h1"), side, "h1")
    assert str(error.value) == message


def test_a_report_without_the_sum_or_without_json_is_an_error():
    document = json.loads(sample("client"))
    del document["end"]["sum_sent"]
    with pytest.raises(IperfError, match=r"^h1: iperf3's report has no end.sum_sent$"):
        goodput(document, "client", "h1")
    with pytest.raises(IperfError, match=r"^h1: iperf3 printed no JSON report \(iperf3: parameter error\)$"):
        parse_report("\niperf3: parameter error\n", "h1")
    with pytest.raises(IperfError, match=r"^h1: iperf3 printed no JSON report$"):
        parse_report("", "h1")


def test_rates_are_in_mbits_with_iperfs_three_digits_and_the_line_is_mininets():
    assert [format_rate(r) for r in (941.4e6, 23.44e6, 0.5e6, 24588.9e6, 9.996e6)] == [
        "941 Mbits/sec", "23.4 Mbits/sec", "0.50 Mbits/sec", "24589 Mbits/sec", "10.0 Mbits/sec"]
    assert results_line(93.44e6, 95.1e6) == "*** Results: ['93.4 Mbits/sec', '95.1 Mbits/sec']"


def test_listening_needs_the_servers_tcp_listener_on_the_port():
    row = {"proto": "tcp6", "local": "*:5201", "peer": "*:*", "state": "LISTEN", "pid": 42}
    assert listening([row], 5201, 42)
    assert listening([{**row, "proto": "tcp", "local": "0.0.0.0:5201"}], 5201, 42)
    assert listening([{k: v for k, v in row.items() if k != "pid"}], 5201, 42)
    assert not listening([{**row, "pid": 43}], 5201, 42)                 # someone else's
    assert not listening([{**row, "local": "*:52010"}], 5201, 42)
    assert not listening([{**row, "proto": "udp6", "state": "UNCONN"}], 5201, 42)
    assert not listening([{**row, "state": "ESTAB"}], 5201, 42)
    assert not listening([], 5201, 42)


# -- running it through the shell, with a fake emulation on the host ------------------------


class FakeNode:
    """A node whose programs run on the host (over 127.0.0.1); `sockets` as ss -tl sees them."""

    def __init__(self, name: str, started: list[subprocess.Popen], rewrite: Callable[[list[str]], list[str]],
                 sockets: Callable[[list[subprocess.Popen]], list[dict]] | None) -> None:
        self.name, self.started, self.rewrite, self.fake_sockets = name, started, rewrite, sockets
        self.addresses = ["127.0.0.1"]
        self.argvs: list[list[str]] = []
        self.mine: list[subprocess.Popen] = []

    def exec(self, argv: list[str], **popen_kwargs: Any) -> subprocess.Popen:
        self.argvs.append(list(argv))
        process = subprocess.Popen(self.rewrite(list(argv)), **popen_kwargs)
        self.started.append(process)
        self.mine.append(process)
        return process

    def call(self, op: str) -> list[dict]:
        assert op == "sockets"
        if self.fake_sockets is not None:
            return self.fake_sockets(self.mine)
        rows = []
        for process in self.mine:
            try:
                connections = psutil.Process(process.pid).net_connections(kind="tcp")
            except psutil.NoSuchProcess:
                continue
            rows += [{"proto": "tcp", "local": f"{c.laddr.ip}:{c.laddr.port}", "state": c.status, "pid": process.pid}
                     for c in connections]
        return rows


class FakeNet:
    def __init__(self, rewrite: Callable[[str, list[str]], list[str]] = lambda node, argv: argv,
                 sockets: Callable[[list[subprocess.Popen]], list[dict]] | None = None,
                 missing: bool = False) -> None:
        self.started: list[subprocess.Popen] = []
        self.missing = missing
        self.nodes = {name: FakeNode(name, self.started, self._tagger(name, rewrite), sockets)
                      for name in ("h1", "r1", "h2")}
        self.topology = SimpleNamespace(nodes=self.nodes, segments={"lan1": None})
        self.name = "fake"

    def _tagger(self, name: str, rewrite: Callable[[str, list[str]], list[str]]) -> Callable[[list[str]], list[str]]:
        def rewritten(argv: list[str]) -> list[str]:
            if self.missing:
                raise FileNotFoundError(2, "No such file or directory", argv[0])
            return rewrite(name, argv)
        return rewritten

    @property
    def hosts(self) -> list[str]:
        return ["h1", "h2"]

    def __getitem__(self, name: str) -> FakeNode:
        return self.nodes[name]


def run(net: FakeNet, line: str) -> tuple[list[str], int]:
    out = io.StringIO()
    shell = NetemuShell(net, stdin=io.StringIO(line + "\n"), stdout=out, script=True)
    shell.cmdloop()
    return [text for text in out.getvalue().splitlines() if not text.startswith("netemu> ")], shell.failures


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def assert_nothing_left(net: FakeNet) -> None:
    assert [p.args for p in net.started if p.poll() is None] == []


def test_iperf_runs_iperf3_server_then_client_and_prints_mininets_lines():
    require_tool("iperf3")
    net, port = FakeNet(), free_port()
    lines, failures = run(net, f"iperf h1 h2 -t 1 -p {port}")
    assert failures == 0, lines
    assert lines[0] == "*** Iperf: testing TCP bandwidth between h1 and h2"
    match = re.fullmatch(r"\*\*\* Results: \['([\d.]+) Mbits/sec', '([\d.]+) Mbits/sec'\]", lines[1])
    assert match and float(match.group(1)) > 0 and float(match.group(2)) > 0, lines
    assert len(lines) == 2
    assert net["h2"].argvs == [["iperf3", "-s", "-1", "--json", "-p", str(port)]]
    assert net["h1"].argvs == [["iperf3", "-c", "127.0.0.1", "-p", str(port), "-t", "1", "--json"]]
    assert_nothing_left(net)


def test_a_refused_connection_is_one_line_and_the_server_is_stopped():
    require_tool("iperf3")
    # h2's "server" never listens, but its node says it does: the client is refused.
    net = FakeNet(rewrite=lambda node, argv: PAUSE if node == "h2" else argv,
                  sockets=lambda mine: [{"proto": "tcp", "local": f"*:{port}", "state": "LISTEN"}])
    port = free_port()
    lines, failures = run(net, f"iperf h1 h2 -t 1 -p {port}")
    assert (failures, lines[1:]) == (1, ["*** iperf: h1: unable to connect to server: Connection refused"])
    assert_nothing_left(net)


def test_a_server_that_cannot_listen_says_why_and_no_client_starts():
    require_tool("iperf3")
    with socket.socket(socket.AF_INET6) as holder:
        holder.bind(("::", 0))
        holder.listen()
        port = holder.getsockname()[1]
        net = FakeNet()
        lines, failures = run(net, f"iperf h1 h2 -p {port}")
    assert (failures, lines[1:]) == (
        1, ["*** iperf: h2: error - unable to start listener for connections: Address already in use"])
    assert net["h1"].argvs == []
    assert_nothing_left(net)


def test_missing_iperf3_is_said_with_how_to_install_it():
    net = FakeNet(missing=True)
    lines, failures = run(net, "iperf h1 h2")
    assert (failures, lines[1:]) == (
        1, ["*** iperf: h2: iperf3: command not found (install iperf3: apt-get install -y iperf3)"])
    assert net.started == []


def test_unknown_nodes_are_refused_before_anything_starts():
    net = FakeNet()
    lines, failures = run(net, "iperf h1 h9")
    assert failures == 1 and lines == ["*** unknown node 'h9' (nodes: h1, r1, h2)"]
    assert net.started == []


def test_a_server_never_listening_is_stopped_at_the_deadline(monkeypatch):
    monkeypatch.setattr(cli_iperf, "LISTEN_TIMEOUT", 0.3)
    net = FakeNet(rewrite=lambda node, argv: PAUSE, sockets=lambda mine: [])
    lines, failures = run(net, "iperf h1 h2")
    assert (failures, lines[1:]) == (1, ["*** iperf: h2: iperf3 -s was not listening on port 5201 within 0.3 s "
                                         "(stopped it)"])
    assert net["h1"].argvs == []
    assert_nothing_left(net)


def test_a_client_that_never_ends_is_stopped_with_the_server(monkeypatch):
    monkeypatch.setattr(cli_iperf, "CLIENT_MARGIN", 0.4)
    net = FakeNet(rewrite=lambda node, argv: PAUSE,
                  sockets=lambda mine: [{"proto": "tcp", "local": "*:5201", "state": "LISTEN"}])
    lines, failures = run(net, "iperf h1 h2 -t 1")
    assert (failures, lines[1:]) == (1, ["*** iperf: h1: no result within 1.4 s (stopped both iperf3)"])
    assert len(net.started) == 2
    assert_nothing_left(net)


def test_a_server_silent_after_the_client_is_stopped(monkeypatch):
    monkeypatch.setattr(cli_iperf, "SERVER_MARGIN", 0.3)
    report = str(SAMPLES / "3.12-client.json")
    client = [sys.executable, "-c", f"print(open({report!r}).read())"]
    net = FakeNet(rewrite=lambda node, argv: PAUSE if node == "h2" else client,
                  sockets=lambda mine: [{"proto": "tcp", "local": "*:5201", "state": "LISTEN"}])
    lines, failures = run(net, "iperf h1 h2 -t 1")
    assert (failures, lines[1:]) == (1, ["*** iperf: h2: the server gave no result 0.3 s after the client's "
                                         "(stopped it)"])
    assert_nothing_left(net)


def test_a_program_dying_without_json_is_reported_by_its_last_stderr_line():
    fail = [sys.executable, "-c", "import sys; sys.exit('iperf3: error - some failure')"]
    net = FakeNet(rewrite=lambda node, argv: fail)
    lines, failures = run(net, "iperf h1 h2")
    assert (failures, lines[1:]) == (1, ["*** iperf: h2: iperf3: error - some failure"])
    assert_nothing_left(net)


def test_help_iperf_says_which_rate_is_which():
    lines, failures = run(FakeNet(), "help iperf")
    text = "\n".join(lines)
    assert failures == 0
    assert "first what the server received" in text and "sum_received" in text and "sum_sent" in text
    assert "default 5" in text
