"""Issue 15's packetimpact-style conformance set: a test bench in a real Linux namespace crafts TCP
segments with scapy and sends them through the TAP to a listener on an emulated host (a Python
server run with `node.exec`), then checks each answer as Linux would give it.

The test bench is a raw AF_PACKET socket on the TAP's Linux end (`ntap0`, opened inside the
namespace) speaking for a host of its own, PEER_IP/PEER_MAC: the namespace's kernel owns neither,
so it never answers the listener's segments with RSTs of its own (no iptables needed); the bench
answers ARP for PEER_IP itself. Every "nothing comes back" is checked without a sleep: a probe that
must be answered follows, and its answer must be the next segment (the listener handles segments
in order).

Addresses: tap_helpers.py (h1 10.0.0.10 on lan0; the bench 10.0.0.99).
"""
from __future__ import annotations

import contextlib
import ctypes
import itertools
import os
import queue
import random
import socket
import subprocess
import sys
import textwrap
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator

import pytest
from scapy.layers.inet import IP, TCP
from scapy.layers.l2 import ARP, Ether
from scapy.packet import Raw

from control.emulation import Emulation
from tests.conftest import require_root, require_trap

from .helpers import private_run_base
from .tap_helpers import H1_LAN_IP, TAP_DEVICE, linux_namespace, tap_topology

pytestmark = pytest.mark.timeout(60)

PY = sys.executable
PEER_IP = "10.0.0.99"
PEER_MAC = "02:4c:00:00:00:99"
ETH_P_ALL = 0x0003
PACKET_OUTGOING = 4
CLONE_NEWNET = 0x40000000
WAIT = 10.0             # s: the longest an expected answer may take (a SYN-ACK retransmission: 1 s)
# Linux's SYN (a Timestamp of None: the connection's clock, and its TS.Recent or 0)
SYN_OPTIONS = [("MSS", 1460), ("SAckOK", b""), ("Timestamp", None), ("NOP", None), ("WScale", 7)]
_ports = itertools.count(20000)


def packet_socket(ns: str, device: str) -> socket.socket:
    """A raw AF_PACKET socket bound to `device` inside namespace `ns` (opened by a thread that
    enters the namespace with setns(2); the socket stays in it)."""
    made: list[Any] = []

    def make() -> None:
        try:
            libc = ctypes.CDLL(None, use_errno=True)
            fd = os.open(f"/run/netns/{ns}", os.O_RDONLY)
            try:
                if libc.setns(fd, CLONE_NEWNET) != 0:
                    raise OSError(ctypes.get_errno(), f"setns into {ns}")
            finally:
                os.close(fd)
            sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_ALL))
            sock.bind((device, ETH_P_ALL))
            made.append(sock)
        except BaseException as error:
            made.append(error)
    thread = threading.Thread(target=make)
    thread.start()
    thread.join()
    if isinstance(made[0], BaseException):
        raise made[0]
    return made[0]


class Bench:
    """The test bench's host on the TAP: answers ARP for PEER_IP, queues the TCP segments sent to it."""

    def __init__(self, sock: socket.socket, target_ip: str) -> None:
        self.sock, self.target_ip = sock, target_ip
        self.segments: queue.Queue = queue.Queue()
        self.target_mac: str | None = None
        self._arp_replies: queue.Queue = queue.Queue()
        self._running = True
        sock.settimeout(0.2)
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        while self._running:
            try:
                frame, address = self.sock.recvfrom(65535)
            except (TimeoutError, socket.timeout):
                continue
            except OSError:
                return
            if address[2] == PACKET_OUTGOING:
                continue
            packet = Ether(frame)
            if ARP in packet:
                arp = packet[ARP]
                if arp.op == 1 and arp.pdst == PEER_IP:
                    self.sock.send(bytes(Ether(src=PEER_MAC, dst=arp.hwsrc) / ARP(
                        op=2, hwsrc=PEER_MAC, psrc=PEER_IP, hwdst=arp.hwsrc, pdst=arp.psrc)))
                elif arp.op == 2 and arp.psrc == self.target_ip:
                    self._arp_replies.put(arp.hwsrc)
            elif IP in packet and TCP in packet and packet[IP].dst == PEER_IP:
                self.segments.put(packet[IP])

    def resolve(self) -> None:
        """The target's MAC, by an ARP request (which also teaches the target ours)."""
        request = Ether(src=PEER_MAC, dst="ff:ff:ff:ff:ff:ff") / ARP(
            op=1, hwsrc=PEER_MAC, psrc=PEER_IP, pdst=self.target_ip)
        deadline = time.monotonic() + WAIT
        while self.target_mac is None:
            self.sock.send(bytes(request))
            with contextlib.suppress(queue.Empty):
                self.target_mac = self._arp_replies.get(timeout=0.5)
            if time.monotonic() > deadline:
                raise AssertionError(f"no ARP reply from {self.target_ip}")

    def send(self, segment: TCP, corrupt: bool = False) -> None:
        frame = Ether(src=PEER_MAC, dst=self.target_mac) / IP(src=PEER_IP, dst=self.target_ip, ttl=64,
                                                                 flags="DF") / segment
        raw = bytearray(bytes(frame))
        if corrupt:
            raw[14 + 20 + 16] ^= 0x5A     # the TCP checksum's first byte
        self.sock.send(bytes(raw))

    def close(self) -> None:
        self._running = False
        self._reader.join(2)
        self.sock.close()


SERVER = """
    import errno, socket, sys, threading
    port, rcvbuf = int(sys.argv[1]), int(sys.argv[2])
    srv = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    if rcvbuf:
        srv.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
    srv.bind(("0.0.0.0", port))
    srv.listen(8)
    print("ready", flush=True)
    conn, peer = srv.accept()
    print("accepted", peer[1], flush=True)
    def read():
        try:
            while data := conn.recv(65536):
                print("data", data.decode(), flush=True)
            print("eof", flush=True)
        except OSError as error:
            print("error", errno.errorcode[error.errno], flush=True)
    for line in sys.stdin:
        command, _, argument = line.strip().partition(" ")
        if command == "read":
            threading.Thread(target=read, daemon=True).start()
        elif command == "send":
            threading.Thread(target=conn.sendall, args=(b"s" * int(argument),), daemon=True).start()
        elif command == "shutdown":
            conn.shutdown(socket.SHUT_WR)
            print("shut", flush=True)
        elif command == "close":
            conn.close()
            print("closed", flush=True)
"""


class Server:
    """SERVER on the device under test: its stdout lines in a queue, commands on its stdin."""

    def __init__(self, process: subprocess.Popen) -> None:
        self.process = process
        self.lines: queue.Queue = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        for line in self.process.stdout:
            self.lines.put(line.rstrip("\n"))
        self.lines.put(None)

    def line(self, timeout: float = WAIT) -> str:
        try:
            line = self.lines.get(timeout=timeout)
        except queue.Empty:
            raise AssertionError(f"the server said nothing within {timeout} s") from None
        if line is None:
            raise AssertionError(f"the server ended: {self.process.wait()} {self.process.stderr.read()}")
        return line

    def command(self, text: str) -> None:
        self.process.stdin.write(text + "\n")
        self.process.stdin.flush()

    def received(self, size: int) -> bytes:
        """What the application read, `size` bytes in all ('data' lines)."""
        got = b""
        while len(got) < size:
            kind, _, data = self.line().partition(" ")
            assert kind == "data", f"the application got {kind} {data} after {got!r}"
            got += data.encode()
        return got

    def stop(self) -> None:
        with contextlib.suppress(OSError):
            self.process.stdin.close()
        self.process.kill()
        self.process.wait()


@dataclass
class Dut:
    """The device under test: where SERVER runs, and the bench that talks to it."""

    start: Callable[[list[str]], subprocess.Popen]
    bench: Bench
    servers: list[Server] = field(default_factory=list)

    def server(self, port: int, rcvbuf: int = 0, read: bool = True) -> Server:
        argv = [PY, "-u", "-c", textwrap.dedent(SERVER), str(port), str(rcvbuf)]
        server = Server(self.start(argv))
        self.servers.append(server)
        assert server.line() == "ready"
        if read:
            server.command("read")
        return server


@pytest.fixture(scope="module")
def dut_module(tmp_path_factory) -> Iterator[Dut]:
    require_root()
    require_trap()
    with linux_namespace() as ns, private_run_base():
        path = tap_topology(tmp_path_factory.mktemp("tap"), ns, router=False)
        with Emulation(path, name=f"tapc-{ns.rsplit('-', 1)[-1]}") as net:
            bench = Bench(packet_socket(ns, TAP_DEVICE), H1_LAN_IP)
            try:
                bench.resolve()
                yield Dut(lambda argv: net["h1"].exec(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                                      stderr=subprocess.PIPE, text=True), bench)
            finally:
                bench.close()


@pytest.fixture
def dut(dut_module: Dut) -> Iterator[Dut]:
    try:
        yield dut_module
    finally:
        for server in dut_module.servers:
            server.stop()
        dut_module.servers.clear()


def options_of(segment: IP) -> dict[str, Any]:
    return dict((name, value) for name, value in segment[TCP].options)


class Conn:
    """One connection of the bench's host: its own sequence numbers, timestamps when agreed."""

    def __init__(self, dut: Dut, port: int) -> None:
        self.bench, self.dport = dut.bench, port
        self.sport = random.randint(32768, 60999)
        self.iss = random.getrandbits(31)     # far enough from 2^32 that this file's arithmetic never wraps
        self.snd_nxt = self.iss
        self._rcv_nxt = 0
        self.tsval = random.randint(1 << 20, 1 << 30)
        self.ts_recent: int | None = None

    @property
    def rcv_nxt(self) -> int:
        """The next sequence number expected from the listener (modulo 2^32: its ISN is random)."""
        return self._rcv_nxt

    @rcv_nxt.setter
    def rcv_nxt(self, value: int) -> None:
        self._rcv_nxt = value % (1 << 32)

    def segment(self, flags: str = "A", payload: bytes = b"", *, seq: int | None = None, ack: int | None = None,
                window: int = 65535, options: list | None = None) -> TCP:
        self.tsval += 1
        if options is None:
            options = [("NOP", None), ("NOP", None), ("Timestamp", None)] if self.ts_recent is not None else []
        options = [(name, (self.tsval, self.ts_recent or 0)) if name == "Timestamp" and value is None
                   else (name, value) for name, value in options]
        segment = TCP(sport=self.sport, dport=self.dport, flags=flags, window=window, options=options,
                      seq=self.snd_nxt if seq is None else seq % (1 << 32),
                      ack=(self.rcv_nxt if ack is None else ack % (1 << 32)) if "A" in flags else 0)
        return segment / Raw(payload) if payload else segment

    def send(self, flags: str = "A", payload: bytes = b"", corrupt: bool = False, **kw: Any) -> None:
        own = kw.get("seq") is None
        self.bench.send(self.segment(flags, payload, **kw), corrupt)
        if own:
            self.snd_nxt = (self.snd_nxt + len(payload) + ("S" in flags) + ("F" in flags)) % (1 << 32)

    def expect(self, timeout: float = WAIT) -> IP:
        """The next segment of this connection (others' are dropped: earlier tests' leftovers)."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                packet = self.bench.segments.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                raise AssertionError(f"no segment within {timeout} s") from None
            tcp = packet[TCP]
            if (tcp.sport, tcp.dport) != (self.dport, self.sport):
                continue
            stamp = options_of(packet).get("Timestamp")
            if stamp is not None and self.ts_recent is not None:
                self.ts_recent = stamp[0]
            return packet

    def handshake(self, options: list | None = None, window: int = 65535) -> IP:
        """SYN (Linux's options unless given), the SYN-ACK, our ACK; the SYN-ACK."""
        self.send("S", options=SYN_OPTIONS if options is None else options)
        synack = self.expect()
        assert synack[TCP].flags == "SA", synack.summary()
        self.rcv_nxt = synack[TCP].seq + 1
        stamp = options_of(synack).get("Timestamp")
        self.ts_recent = stamp[0] if stamp is not None else None
        self.send("A", window=window)
        return synack


def payload(segment: IP) -> bytes:
    """The segment's data, by the IP total length (never the Ethernet padding of a short frame)."""
    ip, tcp = segment[IP], segment[TCP]
    return bytes(tcp)[tcp.dataofs * 4:ip.len - ip.ihl * 4]


def sack_blocks(segment: IP) -> list[tuple[int, int]]:
    blocks = options_of(segment).get("SAck") or ()
    return list(zip(blocks[0::2], blocks[1::2]))


def connected(dut: Dut, rcvbuf: int = 0, read: bool = True, **handshake: Any) -> tuple[Server, Conn, IP]:
    """A SERVER on a fresh port, a connection to it that it accepted; (server, conn, SYN-ACK)."""
    port = next(_ports)
    server = dut.server(port, rcvbuf, read)
    conn = Conn(dut, port)
    synack = conn.handshake(**handshake)
    assert server.line() == f"accepted {conn.sport}"
    return server, conn, synack


def probe(conn: Conn) -> IP:
    """A segment far beyond the window: it must be answered by an ACK at RCV.NXT (RFC 9293 3.10.7.4),
    which must be the next segment."""
    conn.send("A", b"probe", seq=conn.snd_nxt + (1 << 30))
    answer = conn.expect()
    assert (answer[TCP].flags, answer[TCP].ack, payload(answer)) == ("A", conn.snd_nxt, b""), answer.summary()
    return answer


# ------------------------------------------------------------------ opening

def test_syn_gets_a_syn_ack_with_the_options_linux_offers(dut):
    port = next(_ports)
    dut.server(port)
    conn = Conn(dut, port)
    conn.send("S", options=SYN_OPTIONS)
    synack = conn.expect()
    tcp = synack[TCP]
    assert (tcp.flags, tcp.ack) == ("SA", (conn.iss + 1) % (1 << 32))
    # tcp_options_write's order: MSS, SACK-permitted + timestamps, NOP + window scale.
    assert [name for name, _ in tcp.options] == ["MSS", "SAckOK", "Timestamp", "NOP", "WScale"]
    options = options_of(synack)
    assert options["MSS"] == 1460
    assert options["Timestamp"][1] == conn.tsval
    assert 0 < options["WScale"] <= 14
    assert synack[IP].ttl == 64 and synack[IP].flags == "DF"


def test_a_syn_without_options_gets_only_mss(dut):
    port = next(_ports)
    dut.server(port)
    conn = Conn(dut, port)
    conn.send("S", options=[])
    synack = conn.expect()
    assert synack[TCP].flags == "SA"
    assert synack[TCP].options == [("MSS", 1460)]


def test_syn_to_a_closed_port_gets_rst_ack(dut):
    conn = Conn(dut, next(_ports))
    conn.send("S", options=SYN_OPTIONS)
    answer = conn.expect()[TCP]
    # RFC 9293 3.10.7.1: <SEQ=0><ACK=SEG.SEQ+SEG.LEN><CTL=RST,ACK>
    assert (answer.flags, answer.seq, answer.ack, answer.window) == ("RA", 0, (conn.iss + 1) % (1 << 32), 0)


def test_ack_to_a_closed_port_gets_rst_at_its_ack_number(dut):
    conn = Conn(dut, next(_ports))
    conn.send("A", b"stray", ack=12345678)
    answer = conn.expect()[TCP]
    assert (answer.flags, answer.seq) == ("R", 12345678)      # <SEQ=SEG.ACK><CTL=RST>


def test_the_syn_ack_is_retransmitted_when_the_handshake_ack_never_comes(dut):
    port = next(_ports)
    dut.server(port)
    conn = Conn(dut, port)
    conn.send("S", options=SYN_OPTIONS)
    first = conn.expect()
    again = conn.expect()
    assert again[TCP].flags == "SA" and again[TCP].seq == first[TCP].seq
    # Timed by the listener's own clock (timestamps in ms), not by when the frames got here.
    waited = options_of(again)["Timestamp"][0] - options_of(first)["Timestamp"][0]
    assert 900 <= waited <= 3000, f"retransmitted after {waited} ms (TCP_TIMEOUT_INIT is 1 s)"


def test_a_retransmitted_syn_gets_the_same_syn_ack(dut):
    port = next(_ports)
    dut.server(port)
    conn = Conn(dut, port)
    conn.send("S", options=[])
    first = conn.expect()
    conn.send("S", options=[], seq=conn.iss)
    again = conn.expect()
    assert (again[TCP].flags, again[TCP].seq, again[TCP].ack) == ("SA", first[TCP].seq, first[TCP].ack)


def test_a_handshake_ack_with_a_wrong_ack_number_gets_rst(dut):
    port = next(_ports)
    dut.server(port)
    conn = Conn(dut, port)
    conn.send("S", options=[])
    synack = conn.expect()
    wrong = synack[TCP].seq + 1000
    conn.send("A", ack=wrong)
    answer = conn.expect()[TCP]
    assert (answer.flags, answer.seq) == ("R", wrong % (1 << 32))     # tcp_check_req -> tcp_v4_send_reset


def test_data_on_the_handshake_ack_is_delivered(dut):
    port = next(_ports)
    server = dut.server(port)
    conn = Conn(dut, port)
    conn.send("S", options=[])
    synack = conn.expect()
    conn.rcv_nxt = synack[TCP].seq + 1
    conn.send("PA", b"early")
    assert server.line() == f"accepted {conn.sport}"
    assert server.received(5) == b"early"
    answer = conn.expect()
    assert answer[TCP].ack == conn.snd_nxt


# ------------------------------------------------------------------ data

def test_in_order_data_is_acked_and_delivered(dut):
    server, conn, _ = connected(dut)
    conn.send("PA", b"hello")
    answer = conn.expect()
    assert (answer[TCP].flags, answer[TCP].ack) == ("A", conn.snd_nxt)
    assert server.received(5) == b"hello"


def test_out_of_window_data_gets_an_ack_at_rcv_nxt_and_is_not_delivered(dut):
    server, conn, _ = connected(dut)
    probe(conn)
    conn.send("PA", b"inside")
    assert conn.expect()[TCP].ack == conn.snd_nxt
    assert server.received(6) == b"inside"      # "probe" never reached the application


def test_old_duplicate_data_gets_an_ack_with_a_dsack_block(dut):
    server, conn, _ = connected(dut)
    start = conn.snd_nxt
    conn.send("PA", b"twice")
    assert conn.expect()[TCP].ack == conn.snd_nxt
    conn.send("PA", b"twice", seq=start)
    answer = conn.expect()
    assert answer[TCP].ack == conn.snd_nxt
    assert sack_blocks(answer) == [(start, conn.snd_nxt)]         # RFC 2883 D-SACK
    assert server.received(5) == b"twice"


def test_out_of_order_data_gets_a_duplicate_ack_with_sack_then_both_are_delivered(dut):
    server, conn, _ = connected(dut)
    start = conn.snd_nxt
    conn.send("PA", b"second", seq=start + 5)
    answer = conn.expect()
    assert answer[TCP].ack == start
    assert sack_blocks(answer) == [(start + 5, start + 11)]
    conn.send("A", b"first", seq=start)
    conn.snd_nxt = start + 11
    answer = conn.expect()
    assert answer[TCP].ack == start + 11 and sack_blocks(answer) == []
    assert server.received(11) == b"firstsecond"


def test_without_sack_permitted_there_are_no_sack_blocks(dut):
    server, conn, _ = connected(dut, options=[("MSS", 1460), ("NOP", None), ("WScale", 7)])
    start = conn.snd_nxt
    conn.send("PA", b"later", seq=start + 3)
    answer = conn.expect()
    assert answer[TCP].ack == start and "SAck" not in options_of(answer)
    assert "Timestamp" not in options_of(answer)


def test_a_segment_with_a_bad_checksum_is_dropped(dut):
    server, conn, _ = connected(dut)
    conn.send("PA", b"bad", seq=conn.snd_nxt, corrupt=True)
    conn.send("PA", b"good")
    assert conn.expect()[TCP].ack == conn.snd_nxt
    assert server.received(4) == b"good"


def test_paws_drops_a_segment_with_an_old_timestamp(dut):
    server, conn, _ = connected(dut)
    stale = conn.tsval - 100_000
    conn.send("PA", b"stale", seq=conn.snd_nxt,
              options=[("NOP", None), ("NOP", None), ("Timestamp", (stale, conn.ts_recent))])
    answer = conn.expect()
    assert (answer[TCP].flags, answer[TCP].ack) == ("A", conn.snd_nxt)    # tcp_send_dupack
    conn.send("PA", b"fresh")
    assert conn.expect()[TCP].ack == conn.snd_nxt
    assert server.received(5) == b"fresh"


# ------------------------------------------------------------------ RST, SYN, ACK checks (RFC 5961)

def test_rst_at_rcv_nxt_resets_the_connection(dut):
    server, conn, _ = connected(dut)
    conn.send("R", seq=conn.snd_nxt)
    assert server.line() == "error ECONNRESET"
    conn.send("A", b"after")
    answer = conn.expect()[TCP]
    assert answer.flags == "R" and answer.seq == conn.rcv_nxt


def test_rst_in_the_window_but_not_at_rcv_nxt_gets_a_challenge_ack(dut):
    server, conn, _ = connected(dut)
    conn.send("R", seq=conn.snd_nxt + 100)
    answer = conn.expect()
    assert (answer[TCP].flags, answer[TCP].ack) == ("A", conn.snd_nxt)
    conn.send("PA", b"alive")
    assert conn.expect()[TCP].ack == conn.snd_nxt
    assert server.received(5) == b"alive"


def test_rst_outside_the_window_is_ignored(dut):
    server, conn, _ = connected(dut)
    conn.send("R", seq=conn.snd_nxt - 100_000)
    probe(conn)                 # the RST got no answer: the probe's ACK comes next
    conn.send("PA", b"alive")
    assert conn.expect()[TCP].ack == conn.snd_nxt
    assert server.received(5) == b"alive"


def test_syn_on_an_established_connection_gets_a_challenge_ack(dut):
    server, conn, _ = connected(dut)
    conn.send("S", seq=conn.snd_nxt + 1000, options=[])
    answer = conn.expect()
    assert (answer[TCP].flags, answer[TCP].ack) == ("A", conn.snd_nxt)
    conn.send("PA", b"alive")
    assert conn.expect()[TCP].ack == conn.snd_nxt
    assert server.received(5) == b"alive"


def test_an_ack_far_below_snd_una_gets_a_challenge_ack(dut):
    server, conn, synack = connected(dut)
    conn.send("A", ack=conn.rcv_nxt - (1 << 30))     # below SND.UNA - MAX.SND.WND (RFC 5961 5.2)
    answer = conn.expect()
    assert (answer[TCP].flags, answer[TCP].ack) == ("A", conn.snd_nxt)


# ------------------------------------------------------------------ closing

def test_a_fin_is_acked_and_read_as_end_of_file(dut):
    server, conn, _ = connected(dut)
    conn.send("FA", b"bye")
    answer = conn.expect()
    assert answer[TCP].ack == conn.snd_nxt
    assert server.received(3) == b"bye"
    assert server.line() == "eof"


def test_the_listeners_close_sends_fin_and_data_after_it_gets_rst(dut):
    server, conn, _ = connected(dut, read=False)     # (a reader blocked in recv would hold the socket open)
    server.command("close")
    fin = conn.expect()
    assert fin[TCP].flags == "FA" and fin[TCP].seq == conn.rcv_nxt
    conn.rcv_nxt += 1
    conn.send("A")                   # FIN-WAIT-2
    conn.send("PA", b"late")
    answer = conn.expect()[TCP]
    # tcp_rcv_state_process: data after the receive side shut down -> tcp_reset (RFC 1122 4.2.2.13)
    assert answer.flags == "R" or answer.flags == "RA", answer.flags


def test_closing_with_unread_data_sends_rst(dut):
    server, conn, _ = connected(dut, read=False)
    conn.send("PA", b"unread")
    assert conn.expect()[TCP].ack == conn.snd_nxt
    server.command("close")
    assert server.line() == "closed"
    answer = conn.expect()[TCP]
    assert answer.flags in ("R", "RA") and answer.seq == conn.rcv_nxt


def test_a_half_closed_listener_still_receives(dut):
    server, conn, _ = connected(dut)
    server.command("shutdown")
    assert server.line() == "shut"
    fin = conn.expect()
    assert fin[TCP].flags == "FA"
    conn.rcv_nxt += 1
    conn.send("PA", b"more")
    answer = conn.expect()
    assert (answer[TCP].ack, answer[TCP].flags) == (conn.snd_nxt, "A")
    assert server.received(4) == b"more"


def test_a_fin_retransmitted_in_time_wait_is_acked_again(dut):
    server, conn, _ = connected(dut, read=False)
    server.command("close")
    fin = conn.expect()
    assert fin[TCP].flags == "FA"
    conn.rcv_nxt += 1
    conn.send("FA")                   # TIME-WAIT on the listener's side
    assert conn.expect()[TCP].ack == conn.snd_nxt
    conn.send("FA", seq=conn.snd_nxt - 1)
    answer = conn.expect()
    assert (answer[TCP].flags, answer[TCP].ack) == ("A", conn.snd_nxt)


# ------------------------------------------------------------------ windows

def test_zero_window_is_probed_then_the_data_follows(dut):
    server, conn, _ = connected(dut, window=0)
    server.command("send 300")
    began = time.monotonic()
    probe_segment = conn.expect()
    waited = time.monotonic() - began
    # tcp_send_probe0 -> tcp_xmit_probe_skb: SEG.SEQ = SND.UNA - 1, no data
    assert probe_segment[TCP].seq == (conn.rcv_nxt - 1) % (1 << 32) and payload(probe_segment) == b""
    assert waited > 0.1, f"probed after {waited:.2f} s (the RTO)"
    conn.send("A")                      # the window opens
    got = b""
    while len(got) < 300:
        segment = conn.expect()
        if segment[TCP].seq == conn.rcv_nxt and payload(segment):
            got += payload(segment)
            conn.rcv_nxt += len(payload(segment))
            conn.send("A")
    assert got == b"s" * 300


def test_the_peers_mss_and_window_bound_what_the_listener_sends(dut):
    server, conn, _ = connected(dut, options=[("MSS", 536), ("SAckOK", b""), ("Timestamp", None),
                                              ("NOP", None), ("WScale", 0)], window=2000)
    server.command("send 6000")
    right_edge = (conn.rcv_nxt + 2000) % (1 << 32)
    got = 0
    while got < 6000:
        segment = conn.expect()
        data = payload(segment)
        assert len(data) <= 536 - 12, len(data)             # the MSS less the timestamps
        beyond = (segment[TCP].seq + len(data) - right_edge) % (1 << 32)
        assert beyond == 0 or beyond > 1 << 31, (segment[TCP].seq, len(data), right_edge)
        if segment[TCP].seq == conn.rcv_nxt and data:
            got += len(data)
            conn.rcv_nxt += len(data)
            conn.send("A", window=2000)
            right_edge = (conn.rcv_nxt + 2000) % (1 << 32)
    assert got == 6000


def test_a_full_receive_window_answers_a_probe_with_window_zero(dut):
    server, conn, synack = connected(dut, rcvbuf=4096, read=False)
    scale = options_of(synack)["WScale"]
    window = synack[TCP].window
    for _ in range(200):
        if window == 0:
            break
        conn.send("A", b"z" * min(500, window << scale))
        answer = conn.expect()
        window = answer[TCP].window
    else:
        raise AssertionError("the window never closed")
    assert answer[TCP].ack == conn.snd_nxt
    sent = (conn.snd_nxt - conn.iss - 1) % (1 << 32)
    conn.send("A", b"x", seq=conn.snd_nxt)            # a zero-window probe: the byte is not taken
    answer = conn.expect()
    assert (answer[TCP].ack, answer[TCP].window) == (conn.snd_nxt, 0)
    server.command("read")
    assert len(server.received(sent)) == sent
