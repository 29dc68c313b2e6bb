"""Issue 13's acceptance through unmodified programs: Debian's curl, wget, iperf3 and openssl
(s_client and s_server), Python's http.server, bash's /dev/tcp, run on two_lans (h1 -- r1 -- h2)
under the trap (`node.exec`/`run`, and `netemu attach`): 5 MB across the router byte-exact, also
through 5% loss with 20 ms delay and across a link that is down for 3 s. (The stdlib's asyncio,
socketserver and selectors programs: test_tcp_stdlib_programs.py.)

Servers are ready when they print a line or when the node's socket table shows their listener.
"""
from __future__ import annotations

import hashlib
import os
import queue
import random
import subprocess
import sys
import time
from pathlib import Path

import pytest

from control.emulation import Emulation
from tests.conftest import require_tool, require_trap
from tests.waiting import wait_for

from .helpers import LAUNCHER, iperf3_reports, next_line, output_lines, private_run_base, stop, topology
from .test_programs import started

pytestmark = pytest.mark.timeout(120)

H1, H2 = "10.0.1.10", "10.0.2.10"
PY = sys.executable
NAME = "scn-tcp-progs"
SIZE = 5_000_000
HTTP_PORT = 8000


@pytest.fixture(scope="module")
def net():
    require_trap()
    with private_run_base():
        with Emulation(topology("two_lans"), name=NAME) as emulation:
            yield emulation


@pytest.fixture(scope="module")
def served(tmp_path_factory) -> tuple[Path, str]:
    """A directory holding `blob`, 5 MB of seeded random bytes, and their sha256."""
    directory = tmp_path_factory.mktemp("served")
    data = random.Random(13).randbytes(SIZE)
    (directory / "blob").write_bytes(data)
    return directory, hashlib.sha256(data).hexdigest()


@pytest.fixture(scope="module")
def http_server(net, served):
    """`python3 -m http.server` on h2 serving `served`, ready once it says it is serving."""
    directory, _ = served
    server, lines = spawned(net, "h2", [PY, "-u", "-m", "http.server", str(HTTP_PORT), "--bind", "0.0.0.0",
                                        "--directory", str(directory)])
    try:
        assert next_line(server, lines).startswith(f"Serving HTTP on 0.0.0.0 port {HTTP_PORT}")
        yield server
    finally:
        stop(server)


def spawned(net, node: str, argv: list[str], **popen) -> tuple[subprocess.Popen, queue.Queue]:
    """Any program on `node`, its stdout and stderr merged into a queue of lines (read in a thread)."""
    process = net[node].exec(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, **popen)
    return process, output_lines(process)


def sha256_of(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def tcp_listening(net, node: str, port: int) -> bool:
    """The node's socket table (as `ss -tl`) has a TCP listener on `port`."""
    return any(str(row.get("proto", "")).startswith("tcp") and row.get("state") == "LISTEN"
               and str(row.get("local", "")).rpartition(":")[2] == str(port) for row in net[node].call("sockets"))


def fetch(net, argv: list[str], out: Path, timeout: float) -> float:
    """Run a downloader on h1 writing `out`; the seconds it took."""
    begin = time.monotonic()
    result = net["h1"].run(argv, capture_output=True, text=True, timeout=timeout)
    took = time.monotonic() - begin
    assert result.returncode == 0, f"{argv[0]} exited {result.returncode}: {result.stdout}{result.stderr}"
    assert out.stat().st_size == SIZE
    return took


def test_curl_fetches_5_mb_from_python_http_server_across_the_router(net, served, http_server, tmp_path):
    require_tool("curl")
    out = tmp_path / "by-curl"
    fetch(net, ["curl", "-sS", "--fail", "-o", str(out), f"http://h2:{HTTP_PORT}/blob"], out, timeout=60)
    assert sha256_of(out) == served[1]


def test_wget_fetches_5_mb_byte_exact(net, served, http_server, tmp_path):
    require_tool("wget")
    out = tmp_path / "by-wget"
    fetch(net, ["wget", "-q", "-O", str(out), f"http://{H2}:{HTTP_PORT}/blob"], out, timeout=60)
    assert sha256_of(out) == served[1]


@pytest.fixture(scope="module")
def certificate(tmp_path_factory) -> tuple[Path, Path]:
    """A self-signed certificate for h2 and its key (openssl req)."""
    openssl = require_tool("openssl")
    directory = tmp_path_factory.mktemp("tls")
    cert, key = directory / "cert.pem", directory / "key.pem"
    subprocess.run([openssl, "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
                    "-keyout", str(key), "-out", str(cert), "-days", "1", "-subj", "/CN=h2",
                    "-addext", "subjectAltName=DNS:h2"], check=True, capture_output=True, timeout=30)
    return cert, key


def test_openssl_s_client_talks_to_s_server_on_a_dual_stack_listener(net, certificate):
    cert, key = certificate
    # stdin kept open: at its EOF s_server hangs up. It prints what the client sends.
    server, lines = spawned(net, "h2", ["openssl", "s_server", "-accept", "8444", "-cert", str(cert), "-key", str(key),
                                        "-quiet", "-naccept", "1"], stdin=subprocess.PIPE)
    try:
        # s_server listens on [::]:8444 with IPV6_V6ONLY off; it prints nothing until a client comes.
        wait_for(lambda: server.poll() is not None or tcp_listening(net, "h2", 8444), timeout=20)
        assert server.poll() is None, server.stdout.read()
        client = net["h1"].run(["openssl", "s_client", "-connect", f"{H2}:8444", "-CAfile", str(cert),
                                "-verify_return_error", "-quiet", "-no_ign_eof"],
                               input="over tls\n", capture_output=True, text=True, timeout=30)
        assert client.returncode == 0, client.stderr
        assert next_line(server, lines) == "over tls"
    finally:
        stop(server)
        server.stdin.close()


@pytest.mark.parametrize("reverse", [False, True], ids=["h1-to-h2", "h2-to-h1 (-R)"])
def test_iperf3_client_and_server_report_the_same_bytes(net, reverse):
    require_tool("iperf3")
    port = 5301 + reverse
    server = net["h2"].exec(["iperf3", "-s", "-1", "--json", "-p", str(port)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    report, server_report = iperf3_reports(
        server, lambda: tcp_listening(net, "h2", port),
        lambda: net["h1"].run(["iperf3", "-c", H2, "-p", str(port), "-t", "2", "--json", *(["-R"] if reverse else [])],
                              capture_output=True, text=True, timeout=40))
    assert report["start"]["test_start"]["reverse"] == int(reverse)
    connected = report["start"]["connected"][0]
    assert (connected["local_host"], connected["remote_host"], connected["remote_port"]) == (H1, H2, port)
    # The client's end holds both sides' sums (the sender's written bytes, the receiver's read bytes).
    sent, received = report["end"]["sum_sent"]["bytes"], report["end"]["sum_received"]["bytes"]
    assert sent > 0 and received > 0, report["end"]
    # iperf3's receiver stops counting at TEST_END: what was still in the sender's buffer (up to
    # tcp_wmem's max, where sndbuf autotuning takes it with a large cwnd, as on Linux), in flight
    # or in the receiver's (up to tcp_rmem's max), and in the two programs' socket pairs, is not in it.
    sender, receiver = ("h2", "h1") if reverse else ("h1", "h2")
    buffered = net[sender].sysctl("net.ipv4.tcp_wmem")[2] + net[receiver].sysctl("net.ipv4.tcp_rmem")[2] + (1 << 20)
    assert sent - buffered <= received <= sent, (sent, received, buffered)
    # The server measured the same bytes for its own role: receiver, or sender with -R.
    role = "sum_sent" if reverse else "sum_received"
    assert server_report["end"][role]["bytes"] == report["end"][role]["bytes"], (server_report["end"], report["end"])


@pytest.mark.timeout(300)
def test_5_mb_through_5_percent_loss_and_20_ms_delay_arrives_byte_exact(net, served, http_server, tmp_path):
    require_tool("curl")
    link = net.link("h1", "eth0")
    retrans_before = net["h2"].counters()["Tcp"]["RetransSegs"]
    link.set(loss="5%", delay="20ms")      # both directions of h1's port: data and ACKs are lost
    try:
        out = tmp_path / "through-loss"
        # ~50 s here (RTT ~55 ms, 5% loss each way: Mathis' bound is ~150 KB/s for a loss-based sender).
        took = fetch(net, ["curl", "-sS", "--fail", "-o", str(out), f"http://h2:{HTTP_PORT}/blob"], out, timeout=240)
    finally:
        link.set(loss=0, delay=0)
    assert sha256_of(out) == served[1]
    assert net["h2"].counters()["Tcp"]["RetransSegs"] - retrans_before > 50      # the losses were recovered
    print(f"5 MB through 5% loss and 20 ms delay: {took:.1f} s")


# h2: a sink that reads each connection to EOF, says when the first MB is in, then prints the byte
# count and sha256 of the whole stream, and closes.
SINK = """
    import hashlib, socket, sys
    server = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    server.bind(("0.0.0.0", int(sys.argv[1])))
    server.listen()
    print("ready")
    while True:
        conn, peer = server.accept()
        digest, count, said = hashlib.sha256(), 0, False
        while chunk := conn.recv(1 << 16):
            digest.update(chunk)
            count += len(chunk)
            if count >= 1 << 20 and not said:
                print("first MB in")
                said = True
        conn.close()
        print(count, digest.hexdigest())
"""

# h1: sends argv[3] bytes of seeded random data to argv[1]:argv[2], waits for the sink's close,
# prints the sha256 of what it sent.
SENDER = """
    import hashlib, random, socket, sys
    data = random.Random(7).randbytes(int(sys.argv[3]))
    s = socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=60)
    s.sendall(data)
    s.shutdown(socket.SHUT_WR)
    assert s.recv(1) == b""
    print(hashlib.sha256(data).hexdigest())
"""


def test_a_transfer_survives_the_link_down_for_3_s(net):
    size = 8 << 20
    sink, lines = started(net, "h2", SINK, "6500")
    sender = None
    link = net.link("h1", "eth0")
    try:
        assert next_line(sink, lines) == "ready"
        sender, sent = started(net, "h1", SENDER, H2, "6500", str(size))
        assert next_line(sink, lines) == "first MB in"
        retrans_before = net["h1"].counters()["Tcp"]["RetransSegs"]
        link.down()
        down_at = time.monotonic()
        try:
            # Down for 3 s, long enough for the RTO to back off (200, 400, 800, 1600 ms...).
            wait_for(lambda: time.monotonic() - down_at >= 3.0
                     and net["h1"].counters()["Tcp"]["RetransSegs"] - retrans_before >= 3, timeout=15)
            assert lines.empty(), "the sink finished while the link was down"
        finally:
            link.up()
        count, digest = next_line(sink, lines, timeout=60).split()
        assert next_line(sender, sent, timeout=30) == digest
        assert int(count) == size
        assert sender.wait(10) == 0
    finally:
        link.up()
        stop(sink)
        if sender is not None:
            stop(sender)


# h2: answers each connection's first line with the same line, then closes it.
LINE_ECHO = """
    import socket, sys
    server = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    server.bind(("0.0.0.0", int(sys.argv[1])))
    server.listen()
    print("ready")
    while True:
        conn, peer = server.accept()
        with conn, conn.makefile("rb") as reader:
            conn.sendall(reader.readline())
        print("answered", peer[0])
"""


def test_bash_dev_tcp_talks_to_a_python_echo_server(net):
    require_tool("bash")
    server, lines = started(net, "h2", LINE_ECHO, "6600")
    try:
        assert next_line(server, lines) == "ready"
        result = net["h1"].run(["bash", "-c", f"exec 3<>/dev/tcp/{H2}/6600; echo hi >&3; cat <&3"],
                               capture_output=True, text=True, timeout=30)
        assert (result.returncode, result.stdout, result.stderr) == (0, "hi\n", "")
        assert next_line(server, lines) == f"answered {H1}"
    finally:
        stop(server)


def test_netemu_attach_pipes_a_file_between_nodes_with_bash_dev_tcp(net, served):
    require_tool("bash")
    directory, digest = served
    sink, lines = started(net, "h2", SINK, "6601")
    try:
        assert next_line(sink, lines) == "ready"
        # What `netemu attach h1` runs with commands on stdin: the user's shell on h1.
        script = f"cat {directory / 'blob'} > /dev/tcp/h2/6601 && echo sent\n"
        result = subprocess.run([PY, str(LAUNCHER), "attach", "--name", NAME, "h1"], input=script,
                                capture_output=True, text=True, timeout=60, env={**os.environ, "SHELL": "/bin/bash"})
        assert (result.returncode, result.stdout, result.stderr) == (0, "sent\n", "")
        assert next_line(sink, lines) == "first MB in"
        assert next_line(sink, lines, timeout=30) == f"{SIZE} {digest}"
    finally:
        stop(sink)

