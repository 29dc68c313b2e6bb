"""Real programs under the trap, their sockets on an in-memory network (nodes/memnet.py).

This process plays h1's kernel: `Sockfs` over h1's socket layer and the trapped front end
run in a real `bus.runtime.EventLoop`, the network advances in step with the loop. h2 is
driven through its socket layer directly. What nodes/kernel.py does, minus ZeroMQ.
"""
from __future__ import annotations

import subprocess
import sys
import textwrap
import time

import pytest

from bus.runtime import EventLoop
from nodes import trap
from nodes.memnet import host_router_host
from nodes.sockfs import Sockfs
from nodes.syscalls import SyscallFrontEnd
from tests.conftest import require_trap

pytestmark = pytest.mark.timeout(60)
PY = sys.executable
DEADLINE = 20.0


@pytest.fixture(autouse=True)
def _trap_available():
    require_trap()


class Node:
    """h1's kernel in this process, h2 reachable through a router."""

    def __init__(self) -> None:
        self.net, self.h1, self.r1, self.h2 = host_router_host()
        self.loop = EventLoop(lambda: self.net.now)
        self.sockfs = Sockfs(self.h1.sockets, lambda: self.net.now, self.loop.add_reader, self.loop.remove_reader,
                             self.loop.call_later, on_release=lambda sock_id: self.front.forget(sock_id))
        self.front = SyscallFrontEnd(self.sockfs)
        self.loop.add_end_of_pass(self.sockfs.service)
        self.processes: list[subprocess.Popen] = []

    def start(self, source: str) -> subprocess.Popen:
        process, listener = trap.spawn_trapped([PY, "-c", textwrap.dedent(source)], stdout=subprocess.PIPE,
                                               stderr=subprocess.PIPE, text=True)
        self.front.add_listener(listener)
        self.loop.add_reader(listener, lambda: self.front.on_readable(listener, 0) or self.loop.remove_reader(listener))
        self.processes.append(process)
        return process

    def step(self) -> None:
        self.loop.run_once(1)
        self.net.run(0.0005)
        self.loop.run_once(0)

    def until(self, condition, what: str):
        deadline = time.monotonic() + DEADLINE
        while time.monotonic() < deadline:
            self.step()
            value = condition()
            if value:
                return value
        raise AssertionError(f"timed out waiting for {what}")

    def finish(self, process: subprocess.Popen) -> tuple[str, str]:
        self.until(lambda: process.poll() is not None, "the program to exit")
        out, err = process.communicate()
        assert process.returncode == 0, err
        return out, err

    def close(self) -> None:
        for process in self.processes:
            if process.poll() is None:
                process.kill()
            process.communicate()
        self.front.close()
        self.sockfs.close()


@pytest.fixture
def node():
    node = Node()
    yield node
    node.close()


def udp_echo(stack, port: int):
    """A UDP echo on h2's socket layer, served by `pump()`."""
    sock = stack.sockets.socket(2, 2, 0)
    sock.bind(("0.0.0.0", port))
    return sock


def pump_echo(node: Node, sock) -> None:
    while sock.receive_queue:
        message = sock.recvmsg(65535, node.net.now)
        sock.sendmsg(message.data.upper(), message.address, node.net.now)


def test_a_program_sends_and_receives_udp_with_emulated_addresses(node):
    echo = udp_echo(node.h2, 7000)
    process = node.start("""
        import socket
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        s.sendto(b"hello", ("10.0.2.10", 7000))
        data, peer = s.recvfrom(100)
        print(data.decode(), peer[0], peer[1], s.getsockname()[0])
    """)
    node.until(lambda: (pump_echo(node, echo), process.poll() is not None)[1], "the echo round trip")
    out, _ = node.finish(process)
    assert out.split() == ["HELLO", "10.0.2.10", "7000", "0.0.0.0"]    # autobind: the port only, as Linux


def test_native_send_and_recv_on_a_connected_socket(node):
    echo = udp_echo(node.h2, 7001)
    process = node.start("""
        import socket, select
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        s.connect(("10.0.2.10", 7001))
        for word in (b"one", b"two", b"three"):
            s.send(word)
            assert select.select([s], [], [], 15)[0], "not readable"
            print(s.recv(100).decode())
    """)
    node.until(lambda: (pump_echo(node, echo), process.poll() is not None)[1], "three echoes")
    out, _ = node.finish(process)
    assert out.split() == ["ONE", "TWO", "THREE"]
    assert node.sockfs.counters["native_sent"] >= 3


def test_recvfrom_after_native_recv_keeps_addresses_in_step(node):
    a, b = node.h2.sockets.socket(2, 2, 0), node.h2.sockets.socket(2, 2, 0)
    a.bind(("0.0.0.0", 7100))
    b.bind(("0.0.0.0", 7101))
    process = node.start("""
        import socket, select, sys
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        s.bind(("0.0.0.0", 9000))
        print("bound", flush=True)
        assert select.select([s], [], [], 15)[0]
        first = s.recv(100)                      # native: its address is never asked for
        data, peer = s.recvfrom(100)             # trapped: must name the second sender
        print(first.decode(), data.decode(), peer[1])
    """)
    node.until(lambda: node.h1.sockets.udp.hash, "the program's bind")
    a.sendmsg(b"from-a", ("10.0.1.10", 9000), node.net.now)
    node.net.run(0.001)
    b.sendmsg(b"from-b", ("10.0.1.10", 9000), node.net.now)
    out, _ = node.finish(process)
    assert out.split()[-3:] == ["from-a", "from-b", "7101"]


def test_a_blocking_recvfrom_times_out_with_so_rcvtimeo(node):
    process = node.start("""
        import socket, struct, time
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        s.bind(("0.0.0.0", 9001))
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVTIMEO, struct.pack("ll", 0, 200000))
        start = time.monotonic()
        try:
            s.recvfrom(10)
        except BlockingIOError as error:
            print("EAGAIN", round(time.monotonic() - start, 1))
    """)
    out, _ = node.finish(process)
    assert out.split()[0] == "EAGAIN"


def test_closing_the_last_copy_releases_the_port(node):
    process = node.start("""
        import signal, socket
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        s.bind(("0.0.0.0", 9002))
        t = s.dup()
        s.close()
        signal.pause()                # holds the dup until killed
    """)
    node.until(lambda: 9002 in node.h1.sockets.udp.hash, "the bind")
    assert len(node.sockfs.files) == 1            # the dup keeps it
    process.kill()
    node.until(lambda: not node.sockfs.files, "the socket's release at exit")
    assert 9002 not in node.h1.sockets.udp.hash


def test_ping_socket_and_raw_socket_answers(node):
    process = node.start("""
        import socket, struct
        def checksum(data):
            data += b"\\0" * (len(data) % 2)
            total = sum(struct.unpack("!%dH" % (len(data) // 2), data))
            total = (total >> 16) + (total & 0xFFFF); total += total >> 16
            return ~total & 0xFFFF
        raw = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP)
        header = struct.pack("!BBHHH", 8, 0, 0, 0x1234, 1) + b"payload"
        packet = header[:2] + struct.pack("!H", checksum(header)) + header[4:]
        raw.sendto(packet, ("10.0.2.10", 0))
        data, peer = raw.recvfrom(200)
        print("raw", peer[0], data[8], data[20])           # ttl, icmp type
        ping = socket.socket(socket.AF_INET, socket.SOCK_DGRAM, socket.IPPROTO_ICMP)
        ping.sendto(struct.pack("!BBHHH", 8, 0, 0, 0, 7) + b"x", ("10.0.2.10", 0))
        data, peer = ping.recvfrom(200)
        print("ping", peer[0], data[0])
    """)
    out, _ = node.finish(process)
    lines = [line.split() for line in out.splitlines()]
    assert lines[0] == ["raw", "10.0.2.10", "63", "0"]
    assert lines[1] == ["ping", "10.0.2.10", "0"]


def test_poll_sees_pollerr_for_the_error_queue_and_the_socket_goes_on(node):
    """Debian traceroute's way: IP_RECVERR, poll() for POLLERR, recvmsg(MSG_ERRQUEUE); then the
    same socket (renewed under the same fd) still sends and receives natively."""
    echo = udp_echo(node.h2, 7200)
    process = node.start("""
        import select, socket, struct
        IP_RECVERR = 11
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        s.setsockopt(socket.SOL_IP, IP_RECVERR, 1)
        s.setsockopt(socket.SOL_IP, socket.IP_TTL, 1)
        s.connect(("10.0.2.10", 7200))
        fd = s.fileno()
        s.send(b"probe")
        poller = select.poll()
        poller.register(s, select.POLLIN | select.POLLERR)
        events = poller.poll(15000)
        assert events and events[0][1] & select.POLLERR, events
        data, ancillary, flags, address = s.recvmsg(512, 512, socket.MSG_ERRQUEUE)
        level, kind, raw = ancillary[0]
        ee_errno, origin, icmp_type, icmp_code = struct.unpack_from("=IBBB", raw)
        offender = socket.inet_ntoa(raw[20:24])
        print("error", ee_errno, origin, icmp_type, offender, address[0], s.fileno() == fd)
        s.setsockopt(socket.SOL_IP, socket.IP_TTL, 64)
        s.send(b"again")
        assert select.select([s], [], [], 15)[0]
        print("echo", s.recv(100).decode())
    """)
    node.until(lambda: (pump_echo(node, echo), process.poll() is not None)[1], "the error and the echo")
    out, _ = node.finish(process)
    lines = [line.split() for line in out.splitlines()]
    # EHOSTUNREACH (113), SO_EE_ORIGIN_ICMP (2), time exceeded (11) from the router
    assert lines[0] == ["error", "113", "2", "11", "10.0.1.1", "10.0.2.10", "True"]
    assert lines[1] == ["echo", "AGAIN"]
    assert node.sockfs.counters["renewed"] == 1
