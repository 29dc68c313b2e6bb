"""Issue 15's TCP interop with the Linux kernel through a TAP: a real namespace on lan0 (tap_helpers.py:
Linux 10.0.0.1 on ntap0; h1 10.0.0.10 on lan0, or 10.0.1.10 behind r1).

* curl in the namespace fetches 5 MB from `python3 -m http.server` on h1, and curl on h1 (netemu
  exec) fetches 5 MB from `python3 -m http.server` in the namespace; sha256 equal. On the LAN and
  through r1.
* 20 MB each way with 2% loss on h1's link (data and ACKs), sha256 equal.
* The options Linux and netemu agree in both directions (MSS, window scale, SACK-permitted,
  timestamps) read by scapy from a capture of lan0, SACK blocks under loss; tshark finds no
  malformed frame and no bad IP or TCP checksum in it.
* iperf3 on h1 against `iperf3 -s` in the namespace, both directions (-R), JSON reports agreeing.
* The capture check itself: a bad checksum fails it (no root needed).
"""
from __future__ import annotations

import contextlib
import hashlib
import queue
import random
import socket
import subprocess
import sys
from pathlib import Path
from typing import Iterator

import pytest
from scapy.layers.inet import IP, TCP
from scapy.layers.l2 import Ether
from scapy.packet import Raw
from scapy.utils import rdpcap, wrpcap

from control.emulation import Emulation
from tests.conftest import require_root, require_tool, require_trap

from .helpers import iperf3_reports, next_line, output_lines, private_run_base, stop
from .tap_helpers import LINUX_IP, configure_linux, h1_ip, linux_namespace, ns_popen, ns_run, \
    tap_topology
from .test_tcp_programs import spawned

pytestmark = pytest.mark.timeout(180)

PY = sys.executable
SIZE = 5_000_000
LOSSY_SIZE = 20_000_000
H1_PORT = 8000          # http.server on h1
LINUX_PORT = 8080       # http.server in the namespace
IPERF_PORT = 5201       # iperf3 -s in the namespace


class Net:
    """One emulation with its Linux namespace."""

    def __init__(self, net: Emulation, ns: str, router: bool) -> None:
        self.net, self.ns, self.router = net, ns, router
        self.h1 = h1_ip(router)


@pytest.fixture(scope="module")
def served(tmp_path_factory) -> tuple[Path, dict[str, str]]:
    """A directory with `blob` (5 MB) and `big` (20 MB) of seeded random bytes, and their sha256."""
    directory = tmp_path_factory.mktemp("served")
    digests = {}
    for name, size in (("blob", SIZE), ("big", LOSSY_SIZE)):
        data = random.Random(size).randbytes(size)
        (directory / name).write_bytes(data)
        digests[name] = hashlib.sha256(data).hexdigest()
    return directory, digests


def linux_spawned(ns: str, argv: list[str]) -> tuple[subprocess.Popen, queue.Queue]:
    """A program in the namespace, its stdout and stderr merged into a queue of lines."""
    process = ns_popen(ns, argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    return process, output_lines(process)


@contextlib.contextmanager
def emulation(router: bool, directory: Path, tmp_path: Path) -> Iterator[Net]:
    """The emulation, the namespace configured, http.server on h1 and in the namespace."""
    require_root()
    require_trap()
    require_tool("curl")
    with linux_namespace() as ns, private_run_base():
        path = tap_topology(tmp_path, ns, router=router)
        with Emulation(path, name=f"taptcp-{ns.rsplit('-', 1)[-1]}") as net:
            configure_linux(ns, router)
            servers = []
            try:
                server, lines = spawned(net, "h1", [PY, "-u", "-m", "http.server", str(H1_PORT), "--bind", "0.0.0.0",
                                                    "--directory", str(directory)])
                servers.append(server)
                assert next_line(server, lines).startswith(f"Serving HTTP on 0.0.0.0 port {H1_PORT}")
                server, lines = linux_spawned(ns, [PY, "-u", "-m", "http.server", str(LINUX_PORT), "--bind", LINUX_IP,
                                                   "--directory", str(directory)])
                servers.append(server)
                assert next_line(server, lines).startswith(f"Serving HTTP on {LINUX_IP} port {LINUX_PORT}")
                yield Net(net, ns, router)
            finally:
                for server in servers:
                    stop(server)


@pytest.fixture(scope="module")
def lan(served, tmp_path_factory) -> Iterator[Net]:
    """Linux and h1 on lan0."""
    with emulation(False, served[0], tmp_path_factory.mktemp("lan")) as net:
        yield net


@pytest.fixture(scope="module")
def routed(served, tmp_path_factory) -> Iterator[Net]:
    """Linux on lan0, r1, h1 on lan1."""
    with emulation(True, served[0], tmp_path_factory.mktemp("routed")) as net:
        yield net


@pytest.fixture(params=["lan", "routed"])
def tap(request) -> Net:
    return request.getfixturevalue(request.param)


def sha256_of(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def linux_fetches(tap: Net, name: str, out: Path, timeout: float = 60) -> None:
    """curl in the namespace fetches `name` from h1's http.server."""
    result = ns_run(tap.ns, ["curl", "-sS", "--fail", "--noproxy", "*", "--max-time", str(timeout), "-o", str(out),
                             f"http://{tap.h1}:{H1_PORT}/{name}"], capture_output=True, timeout=timeout + 10)
    assert result.returncode == 0, f"curl in the namespace: {result.returncode} {result.stderr}"


def h1_fetches(tap: Net, name: str, out: Path, timeout: float = 60) -> None:
    """curl on h1 (netemu exec) fetches `name` from the namespace's http.server."""
    result = tap.net["h1"].run(["curl", "-sS", "--fail", "--noproxy", "*", "--max-time", str(timeout), "-o", str(out),
                                f"http://{LINUX_IP}:{LINUX_PORT}/{name}"], capture_output=True, text=True,
                               timeout=timeout + 10)
    assert result.returncode == 0, f"curl on h1: {result.returncode} {result.stderr}"


def test_linux_fetches_5_mb_from_http_server_on_an_emulated_host(tap, served, tmp_path):
    out = tmp_path / "from-h1"
    linux_fetches(tap, "blob", out)
    assert sha256_of(out) == served[1]["blob"]


def test_an_emulated_host_fetches_5_mb_from_http_server_in_the_namespace(tap, served, tmp_path):
    out = tmp_path / "from-linux"
    h1_fetches(tap, "blob", out)
    assert sha256_of(out) == served[1]["blob"]


@pytest.mark.timeout(300)
def test_20_mb_each_way_through_2_percent_loss(lan, served, tmp_path):
    tshark = require_tool("tshark")
    link = lan.net.link("h1", "eth0")
    retransmitted = lan.net["h1"].counters()["Tcp"]["RetransSegs"]
    pcap = tmp_path / "lossy.pcap"
    lan.net.capture("lan0", pcap)
    link.set(loss="2%")        # both directions of h1's port: data and ACKs
    try:
        from_h1, from_linux = tmp_path / "from-h1", tmp_path / "from-linux"
        linux_fetches(lan, "big", from_h1, timeout=120)
        h1_fetches(lan, "big", from_linux, timeout=120)
    finally:
        link.set(loss=0)
        lan.net.stop_capture("lan0")
    assert sha256_of(from_h1) == served[1]["big"]
    assert sha256_of(from_linux) == served[1]["big"]
    assert lan.net["h1"].counters()["Tcp"]["RetransSegs"] - retransmitted > 10      # h1 recovered losses
    # Each receiver told the other sender what it had with SACK blocks (RFC 2018): Linux to h1 and h1 to Linux.
    sacks = subprocess.run([tshark, "-r", str(pcap), "-Y", "tcp.options.sack_le", "-T", "fields", "-e", "ip.src"],
                           capture_output=True, text=True, timeout=120)
    assert sacks.returncode == 0, sacks.stderr
    assert set(sacks.stdout.split()) == {LINUX_IP, lan.h1}
    assert_clean(tshark, pcap, lossy=True)


def syn_options(packets: list, client: str, server: str) -> tuple[list, list]:
    """The options of the SYN `client` sent to `server` and of the SYN-ACK that answered it (names, values)."""
    syn = synack = None
    for packet in packets:
        if IP not in packet or TCP not in packet:
            continue
        ip, tcp = packet[IP], packet[TCP]
        if tcp.flags == "S" and (ip.src, ip.dst) == (client, server):
            syn = tcp
        elif tcp.flags == "SA" and (ip.src, ip.dst) == (server, client) and syn is not None:
            synack = tcp
            break
    assert syn is not None and synack is not None, f"no handshake {client} -> {server} in the capture"
    return syn.options, synack.options


LINUX_ORDER = ["MSS", "SAckOK", "Timestamp", "NOP", "WScale"]      # tcp_options_write


def test_options_agreed_with_linux_both_ways_and_a_clean_capture(lan, served, tmp_path):
    tshark = require_tool("tshark")
    pcap = tmp_path / "lan0.pcap"
    lan.net.capture("lan0", pcap)
    try:
        linux_fetches(lan, "blob", tmp_path / "from-h1")
        h1_fetches(lan, "blob", tmp_path / "from-linux")
    finally:
        stopped = lan.net.stop_capture("lan0")
    assert stopped is not None and stopped["frames"] > 2 * SIZE // 1448
    packets = rdpcap(str(pcap))
    for client, server in ((LINUX_IP, lan.h1), (lan.h1, LINUX_IP)):
        syn, synack = syn_options(packets, client, server)
        for sender, options in ((client, syn), (server, synack)):
            assert [name for name, _ in options] == LINUX_ORDER, (sender, options)
            agreed = dict(options)
            assert agreed["MSS"] == 1460 and 0 < agreed["WScale"] <= 14, (sender, options)
            if sender == lan.h1:
                assert agreed["WScale"] == 7, options        # tcp_rmem[2] 6 MB, as Linux's default
    # Every later segment carries timestamps; full segments are MSS less the 12 bytes of them.
    largest = {LINUX_IP: 0, lan.h1: 0}
    for packet in packets:
        if IP in packet and TCP in packet and not packet[TCP].flags.S and not packet[TCP].flags.R:
            assert "Timestamp" in dict(packet[TCP].options), packet.summary()
            size = len(packet[TCP].payload)
            largest[packet[IP].src] = max(largest[packet[IP].src], size)
    assert largest == {LINUX_IP: 1448, lan.h1: 1448}
    assert_clean(tshark, pcap, len([p for p in packets if TCP in p]))


def assert_clean(tshark: str, pcap: Path, segments: int | None = None, lossy: bool = False) -> None:
    """tshark finds no malformed frame and no bad IP or TCP checksum (status 0 is "Bad" in tshark 4.0),
    nor (without loss) any error of its expert analysis; it verified the checksums of `segments` TCP
    frames when given. The servers' ports are decoded as plain data and TCP is not reassembled: the
    frames are checked, not tshark's reading of random bytes as HTTP or what its heuristics guess (a
    segment starting with CRLF is "malformed" HTTP, a retransmission of bytes the capture saw once a
    "reassembly error", random bytes a "malformed" Thrift message).

    A TCP checksum 0xffff is tshark's error but RFC 1624's other zero: Linux writes it where the sum
    folds to 0 (skb_checksum_help's CSUM_MANGLED_0), one frame in 65536. Those must come from Linux
    and verify by ones' complement sum."""
    verify = ["-o", "tcp.check_checksum:TRUE", "-o", "ip.check_checksum:TRUE", "-o", "tcp.desegment_tcp_streams:FALSE",
              "-d", f"tcp.port=={H1_PORT},data", "-d", f"tcp.port=={LINUX_PORT},data"]
    ffff = "tcp.checksum == 0xffff"
    errors = "" if lossy else " || _ws.expert.severity == error"
    wrong = f"_ws.malformed || tcp.checksum.status == 0 || ip.checksum.status == 0{errors}"
    bad = subprocess.run([tshark, "-r", str(pcap), *verify, "-Y", f"({wrong}) && !({ffff})"],
                         capture_output=True, text=True, timeout=120)
    assert bad.returncode == 0 and bad.stdout == "", bad.stdout[:2000] + bad.stderr
    zeros = pcap.with_name(pcap.stem + "-ffff.pcap")
    subset = subprocess.run([tshark, "-r", str(pcap), "-Y", ffff, "-w", str(zeros)], capture_output=True, text=True,
                            timeout=120)
    assert subset.returncode == 0, subset.stderr
    mangled = rdpcap(str(zeros))
    for packet in mangled:
        assert packet[IP].src == LINUX_IP and ones_complement_sum(packet[IP]) == 0xFFFF, packet.summary()
    if segments is not None:
        good = subprocess.run([tshark, "-r", str(pcap), *verify, "-Y",
                               "tcp.checksum.status == 1 && ip.checksum.status == 1", "-T", "fields", "-e",
                               "frame.number"], capture_output=True, text=True, timeout=120)
        assert len(good.stdout.split()) + len(mangled) == segments      # every one was verified


def ones_complement_sum(ip: IP) -> int:
    """The 16-bit ones' complement sum of a TCP segment with its pseudo-header: 0xffff when its checksum is right."""
    segment = bytes(ip)[ip.ihl * 4:ip.len]
    data = socket.inet_aton(ip.src) + socket.inet_aton(ip.dst) + bytes((0, 6)) + len(segment).to_bytes(2, "big")
    data += segment + b"\0" * (len(segment) % 2)
    total = sum(int.from_bytes(data[i:i + 2], "big") for i in range(0, len(data), 2))
    while total > 0xFFFF:
        total = (total & 0xFFFF) + (total >> 16)
    return total


def linux_listening(ns: str, port: int) -> bool:
    result = ns_run(ns, ["ss", "-Htln", f"sport = :{port}"], capture_output=True, timeout=10)
    return bool(result.stdout.strip())


@pytest.mark.parametrize("reverse", [False, True], ids=["h1-to-linux", "linux-to-h1 (-R)"])
def test_iperf3_on_an_emulated_host_against_iperf3_in_the_namespace(lan, reverse):
    require_tool("iperf3")
    port = IPERF_PORT + reverse
    server = ns_popen(lan.ns, ["iperf3", "-s", "-1", "--json", "-p", str(port)], stdout=subprocess.PIPE,
                      stderr=subprocess.PIPE, text=True)
    report, server_report = iperf3_reports(
        server, lambda: linux_listening(lan.ns, port),
        lambda: lan.net["h1"].run(["iperf3", "-c", LINUX_IP, "-p", str(port), "-t", "2", "--json",
                                   *(["-R"] if reverse else [])], capture_output=True, text=True, timeout=60))
    assert report["start"]["test_start"]["reverse"] == int(reverse)
    connected = report["start"]["connected"][0]
    assert (connected["local_host"], connected["remote_host"], connected["remote_port"]) == (lan.h1, LINUX_IP, port)
    sent, received = report["end"]["sum_sent"]["bytes"], report["end"]["sum_received"]["bytes"]
    assert sent > 1_000_000 and received > 0, report["end"]
    # What was still buffered at TEST_END (both ends' buffers, the program's socket pair) is not received.
    assert sent - (16 << 20) <= received <= sent, (sent, received)
    role = "sum_sent" if reverse else "sum_received"
    assert server_report["end"][role]["bytes"] == report["end"][role]["bytes"], (server_report["end"], report["end"])
    print(f"iperf3 {'Linux -> h1' if reverse else 'h1 -> Linux'}: "
          f"{report['end']['sum_received']['bits_per_second'] / 1e6:.1f} Mbit/s")


def test_the_capture_check_catches_a_bad_checksum_and_accepts_linuxs_0xffff(tmp_path):
    tshark = require_tool("tshark")
    h1 = h1_ip(False)

    def frame(src: str, dst: str, data: bytes, checksum: int | None = None) -> Ether:
        return Ether(bytes(Ether() / IP(src=src, dst=dst) / TCP(sport=LINUX_PORT, dport=40000, flags="PA",
                                                                  chksum=checksum) / Raw(data)))

    def zero_sum(src: str, dst: str) -> Ether:
        """A segment whose right checksum is 0x0000, written 0xffff (the same in ones' complement)."""
        word = 0xFFFF - ones_complement_sum(frame(src, dst, bytes(2), 0)[IP])    # the data word that completes it
        assert ones_complement_sum(frame(src, dst, word.to_bytes(2, "big"), 0)[IP]) == 0xFFFF
        return frame(src, dst, word.to_bytes(2, "big"), 0xFFFF)

    good = frame(LINUX_IP, h1, b"fine")
    assert ones_complement_sum(good[IP]) == 0xFFFF
    cases = {"clean": ([good, frame(h1, LINUX_IP, b"fine"), zero_sum(LINUX_IP, h1)], True),
             "bad": ([good, frame(h1, LINUX_IP, b"fine", 0x1234)], False),
             "ffff-from-netemu": ([good, zero_sum(h1, LINUX_IP)], False)}
    for name, (frames, clean) in cases.items():
        pcap = tmp_path / f"{name}.pcap"
        wrpcap(str(pcap), frames)
        if clean:
            assert_clean(tshark, pcap, segments=len(frames))
        else:
            with pytest.raises(AssertionError):
                assert_clean(tshark, pcap)
