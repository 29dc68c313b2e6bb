"""Issue 13's CLI items on two_lans (h1 -- r1 -- h2, 100 Mbit/s on r1's lan2 port): `iperf h1 h2` with
Debian's iperf3 on both nodes through exec, and `h1 ss -ti` showing an established connection's internals."""
from __future__ import annotations

import io
import re
import subprocess
import sys
import textwrap

import psutil
import pytest

from control.cli import NetemuShell
from control.emulation import Emulation
from tests.conftest import require_tool, require_trap
from tests.waiting import wait_for

from .helpers import private_run_base, topology

pytestmark = pytest.mark.timeout(120)

RESULTS = re.compile(r"\*\*\* Results: \['([\d.]+) Mbits/sec', '([\d.]+) Mbits/sec'\]")


@pytest.fixture(scope="module")
def net():
    require_trap()
    with private_run_base():
        with Emulation(topology("two_lans"), name="scn-cli-iperf") as emulation:
            yield emulation


def shell(net, text: str) -> tuple[list[str], int]:
    out = io.StringIO()
    session = NetemuShell(net, stdin=io.StringIO(text), stdout=out, script=True)
    session.cmdloop()
    return [line for line in out.getvalue().splitlines() if not line.startswith("netemu> ")], session.failures


def iperf3_processes(port: int) -> list[psutil.Process]:
    found = []
    for process in psutil.process_iter(["name", "cmdline"]):
        cmdline = process.info["cmdline"] or []
        if process.info["name"] == "iperf3" and str(port) in cmdline and process.status() != psutil.STATUS_ZOMBIE:
            found.append(process)
    return found


@pytest.mark.parametrize("src, dst, port", [("h1", "h2", 5301), ("h2", "h1", 5302)])
def test_iperf_prints_a_positive_goodput_each_way_across_the_router(net, src, dst, port):
    require_tool("iperf3")
    lines, failures = shell(net, f"iperf {src} {dst} -t 2 -p {port}\n")
    assert failures == 0, lines
    assert lines[0] == f"*** Iperf: testing TCP bandwidth between {src} and {dst}"
    match = RESULTS.fullmatch(lines[1])
    assert match, lines
    server, client = float(match.group(1)), float(match.group(2))
    assert 0 < server <= 100 and client > 0, lines     # r1's lan2 port runs at 100 Mbit/s
    assert iperf3_processes(port) == []


def test_iperf_to_a_port_already_taken_says_why_and_leaves_nothing(net):
    require_tool("iperf3")
    holder = net["h2"].exec([sys.executable, "-c", textwrap.dedent("""
        import signal, socket
        s = socket.socket(socket.AF_INET6)
        s.bind(("::", 5303))
        s.listen()
        print("listening", flush=True)
        signal.pause()
    """)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline() == "listening\n"
        lines, failures = shell(net, "iperf h1 h2 -t 1 -p 5303\n")
        assert (failures, lines[1:]) == (
            1, ["*** iperf: h2: error - unable to start listener for connections: Address already in use"])
        assert iperf3_processes(5303) == []
    finally:
        holder.kill()
        holder.wait()


def test_ss_ti_on_a_node_shows_an_established_connection_with_its_tcp_info(net):
    programs = []
    try:
        programs.append(server := net["h2"].exec([sys.executable, "-c", textwrap.dedent("""
            import signal, socket
            listener = socket.create_server(("0.0.0.0", 5304))
            print("listening", flush=True)
            connection, _ = listener.accept()
            connection.sendall(b"x" * 100000)
            signal.pause()
        """)], stdout=subprocess.PIPE, text=True))
        assert server.stdout.readline() == "listening\n"
        programs.append(client := net["h1"].exec([sys.executable, "-c", textwrap.dedent("""
            import signal, socket
            s = socket.create_connection(("10.0.2.10", 5304))
            got = 0
            while got < 100000:
                got += len(s.recv(65536))
            print("received", flush=True)
            signal.pause()
        """)], stdout=subprocess.PIPE, text=True))
        assert client.stdout.readline() == "received\n"
        lines = wait_for(lambda: _ss_ti(net), timeout=10)
        connection = next(i for i, line in enumerate(lines) if "10.0.2.10:5304" in line)
        assert lines[connection].split()[0] == "ESTAB", lines
        info = lines[connection + 1]
        assert info.startswith("\t"), lines
        for field in ("rto:", "rtt:", "cwnd:", "bytes_received:", "mss:"):
            assert field in info, (field, info)
        received = int(re.search(r"bytes_received:(\d+)", info).group(1))
        assert received == 100000, info
    finally:
        for process in programs:
            process.kill()
            process.wait()


def _ss_ti(net) -> list[str] | None:
    lines, failures = shell(net, "h1 ss -ti\n")
    assert failures == 0, lines
    return lines if any("10.0.2.10:5304" in line for line in lines) else None
