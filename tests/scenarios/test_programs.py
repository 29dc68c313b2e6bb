"""Issue 12's acceptance through real programs: unmodified stdlib servers and clients, Debian's
ping and traceroute, errno paths, a killed program's ports, blocked calls woken.

Every program runs under the trap on a node of `two_lans` (h1 -- r1 -- h2) via `node.exec`/`run`.
"""
from __future__ import annotations

import queue
import subprocess
import sys
import textwrap

import pytest

from control.emulation import Emulation
from tests.conftest import require_tool, require_trap
from tests.waiting import wait_for

from .helpers import UDP_CLIENT, next_line, output_lines, private_run_base, stop, topology

pytestmark = pytest.mark.timeout(120)

H1, H2 = "10.0.1.10", "10.0.2.10"
PY = sys.executable


@pytest.fixture(scope="module")
def net():
    require_trap()
    with private_run_base():
        with Emulation(topology("two_lans"), name="scn-progs") as emulation:
            yield emulation


def started(net, node: str, source: str, *args: str) -> tuple[subprocess.Popen, queue.Queue]:
    """A Python program on `node`, and a queue of its stdout lines (read in a thread)."""
    process = net[node].exec([PY, "-u", "-c", textwrap.dedent(source), *args], stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True)
    return process, output_lines(process)


def run(net, node: str, source: str, *args: str, timeout: float = 30) -> str:
    result = net[node].run([PY, "-c", textwrap.dedent(source), *args], capture_output=True, text=True,
                           timeout=timeout)
    assert result.returncode == 0, result.stderr
    return result.stdout


def test_an_asyncio_datagram_echo_server_and_a_blocking_client(net):
    server, lines = started(net, "h2", """
        import asyncio
        class Echo(asyncio.DatagramProtocol):
            def connection_made(self, transport):
                self.transport = transport
                print("ready")
            def datagram_received(self, data, address):
                print(data.decode(), address[0])
                self.transport.sendto(data.upper(), address)
        async def main():
            loop = asyncio.get_running_loop()
            await loop.create_datagram_endpoint(Echo, local_addr=("0.0.0.0", 6100))
            await asyncio.sleep(60)
        asyncio.run(main())
    """)
    try:
        assert next_line(server, lines) == "ready"
        assert run(net, "h1", UDP_CLIENT, "6100", "asyncio") == f"ASYNCIO {H2} 6100\n"
        assert next_line(server, lines) == f"asyncio {H1}"
    finally:
        stop(server)


def test_a_socketserver_udp_server_and_a_client(net):
    server, lines = started(net, "h2", """
        import socketserver
        class Handler(socketserver.BaseRequestHandler):
            def handle(self):
                data, sock = self.request
                print(data.decode(), self.client_address[0])
                sock.sendto(data[::-1], self.client_address)
        with socketserver.UDPServer(("0.0.0.0", 6101), Handler) as server:
            print("ready")
            server.handle_request()
    """)
    try:
        assert next_line(server, lines) == "ready"
        assert run(net, "h1", UDP_CLIENT, "6101", "stressed") == f"desserts {H2} 6101\n"
        assert next_line(server, lines) == f"stressed {H1}"
        assert server.wait(15) == 0
    finally:
        stop(server)


def test_a_selectors_based_non_blocking_udp_program(net):
    server, lines = started(net, "h2", """
        import selectors, socket
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        sock.setblocking(False)
        sock.bind(("0.0.0.0", 6102))
        selector = selectors.DefaultSelector()
        selector.register(sock, selectors.EVENT_READ)
        print("ready")
        answered = 0
        while answered < 3:
            for key, _ in selector.select(30):
                try:
                    data, peer = sock.recvfrom(100)
                except BlockingIOError:
                    continue
                sock.sendto(b"ack " + data, peer)
                answered += 1
        print("done", peer[0])
    """)
    try:
        assert next_line(server, lines) == "ready"
        out = run(net, "h1", """
            import socket
            s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            s.settimeout(15)
            for word in ("a", "b", "c"):
                s.sendto(word.encode(), ("h2", 6102))
                print(s.recv(100).decode())
        """)
        assert out.split("\n")[:3] == ["ack a", "ack b", "ack c"]
        assert next_line(server, lines) == f"done {H1}"
    finally:
        stop(server)


def test_a_dual_stack_server_on_v6_any_sees_ipv4_peers_as_mapped(net):
    server, lines = started(net, "h2", """
        import socket
        s = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
        s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
        s.bind(("::", 6103))
        print("ready")
        data, peer = s.recvfrom(100)
        print(peer[0])
        s.sendto(b"v6", peer)
    """)
    try:
        assert next_line(server, lines) == "ready"
        assert run(net, "h1", UDP_CLIENT, "6103", "x") == f"v6 {H2} 6103\n"
        assert next_line(server, lines) == f"::ffff:{H1}"
    finally:
        stop(server)


def test_debian_ping_crosses_the_router_with_ttl_63(net):
    require_tool("ping")
    result = net["h1"].run(["ping", "-c", "3", "-i", "0.2", "h2"], capture_output=True, text=True, timeout=30)
    assert result.returncode == 0, result.stdout + result.stderr
    replies = [line for line in result.stdout.splitlines() if "bytes from" in line]
    assert len(replies) == 3 and all(f"({H2})" in line and "ttl=63" in line for line in replies), result.stdout
    assert "3 received" in result.stdout
    assert "Warning" not in result.stderr and "WARNING" not in result.stderr, result.stderr


def test_debian_traceroute_lists_the_router_then_h2(net):
    require_tool("traceroute")
    result = net["h1"].run(["traceroute", "-n", "-w", "3", "h2"], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr
    hops = [line.split() for line in result.stdout.splitlines()[1:]]
    assert [hop[:2] for hop in hops] == [["1", "10.0.1.1"], ["2", H2]], result.stdout
    times = [float(value) for hop in hops for value in hop[2::2]]
    assert times and all(0 < value < 5000 for value in times), result.stdout    # real round trips, in ms


def test_errnos_a_program_meets_are_linuxs(net):
    out = run(net, "h1", """
        import errno, socket
        def code(call, *args):
            try:
                call(*args)
            except OSError as error:
                return errno.errorcode[error.errno]
            return "ok"
        a = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        a.bind(("0.0.0.0", 6200))
        b = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        print(code(b.bind, ("0.0.0.0", 6200)))                      # EADDRINUSE
        print(code(b.bind, ("10.9.9.9", 6201)))                     # EADDRNOTAVAIL
        print(code(b.sendto, b"x", ("10.0.1.255", 9)))              # EACCES without SO_BROADCAST
        print(code(b.setsockopt, socket.SOL_SOCKET, 0x7fff, 1))     # ENOPROTOOPT
        print(code(b.getpeername))                                  # ENOTCONN
        print(code(socket.socket, socket.AF_INET, socket.SOCK_RAW, 300))   # EINVAL
    """)
    assert out.split() == ["EADDRINUSE", "EADDRNOTAVAIL", "EACCES", "ENOPROTOOPT", "ENOTCONN", "EINVAL"]


def test_a_killed_program_releases_its_ports(net):
    holder, lines = started(net, "h1", """
        import signal, socket
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        s.bind(("0.0.0.0", 6300))
        print("bound")
        signal.pause()                # holds the port until killed
    """)
    try:
        assert next_line(holder, lines) == "bound"
        assert any(row["local"].endswith(":6300") for row in net["h1"].call("sockets"))
    finally:
        stop(holder)
    wait_for(lambda: not any(row["local"].endswith(":6300") for row in net["h1"].call("sockets")), timeout=10)
    assert run(net, "h1", """
        import socket
        socket.socket(socket.AF_INET, socket.SOCK_DGRAM).bind(("0.0.0.0", 6300))
        print("rebound")
    """) == "rebound\n"


def test_a_blocked_recvfrom_is_woken_by_data_and_by_its_own_timeout(net):
    receiver, lines = started(net, "h2", """
        import socket, struct
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        s.bind(("0.0.0.0", 6400))
        print("waiting")
        data, peer = s.recvfrom(100)                  # blocking: a pending trapped call
        print(data.decode(), peer[0])
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVTIMEO, struct.pack("ll", 0, 300000))
        try:
            s.recvfrom(100)
        except BlockingIOError:
            print("timed out")
    """)
    try:
        assert next_line(receiver, lines) == "waiting"
        run(net, "h1", """
            import socket
            socket.socket(socket.AF_INET, socket.SOCK_DGRAM).sendto(b"wake", ("h2", 6400))
        """)
        assert next_line(receiver, lines) == f"wake {H1}"
        assert next_line(receiver, lines) == "timed out"
        assert receiver.wait(15) == 0
    finally:
        stop(receiver)


def test_recvmsg_flags_and_control_messages_in_a_program(net):
    receiver, lines = started(net, "h2", """
        import socket, struct, time
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        s.setsockopt(socket.SOL_IP, 12, 1)                          # IP_RECVTTL (the socket module lacks it)
        s.setsockopt(socket.SOL_SOCKET, 29, 1)                      # SO_TIMESTAMP (_OLD), not in the socket module
        s.bind(("0.0.0.0", 6500))
        print("ready")
        peeked, peer = s.recvfrom(100, socket.MSG_PEEK)           # left in place
        data, ancillary, flags, peer = s.recvmsg(4, 256)          # cut to 4 bytes: MSG_TRUNC in flags
        kinds = {(level, kind): raw for level, kind, raw in ancillary}
        ttl = struct.unpack("=i", kinds[(socket.SOL_IP, socket.IP_TTL)])[0]
        seconds, micros = struct.unpack("=qq", kinds[(socket.SOL_SOCKET, 29)])
        age = time.time() - (seconds + micros / 1e6)
        print(peeked.decode(), data.decode(), bool(flags & socket.MSG_TRUNC), ttl, 0 <= age < 10, peer[0])
    """)
    try:
        assert next_line(receiver, lines) == "ready"
        run(net, "h1", """
            import socket
            socket.socket(socket.AF_INET, socket.SOCK_DGRAM).sendto(b"truncated", ("h2", 6500))
        """)
        assert next_line(receiver, lines) == f"truncated trun True 63 True {H1}"
    finally:
        stop(receiver)


def test_port_unreachable_is_econnrefused_on_a_connected_socket(net):
    """A known limit (docs/programs.md): the error reaches calls that trap, not a native poll() -
    with a timeout Python polls the fd first, which never shows POLLERR for it."""
    limit = net["h2"].sysctl("net.ipv4.icmp_ratelimit")
    net["h2"].sysctl("net.ipv4.icmp_ratelimit", 0)    # two_lans' h2 allows one error a second: others spent it
    try:
        out = run(net, "h1", """
        import socket
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        s.connect(("h2", 6599))                  # nobody listens there
        s.send(b"anyone?")
        try:
            s.recvfrom(100)                      # blocking: it asks the node at once
        except ConnectionRefusedError:
            print("ECONNREFUSED")
    """)
    finally:
        net["h2"].sysctl("net.ipv4.icmp_ratelimit", limit)
    assert out == "ECONNREFUSED\n"


def test_a_shell_on_a_pipe_changes_routes_and_pings(net):
    require_tool("ping")
    script = ("ip route add 192.0.2.0/24 via 10.0.1.1\n"
              "ip route\n"
              "ping -c 1 -W 5 h2\n"
              "exit $?\n")
    shell = net["h1"].run(["bash"], input=script, capture_output=True, text=True, timeout=60)
    assert shell.returncode == 0, shell.stdout + shell.stderr
    assert "192.0.2.0/24 via 10.0.1.1 dev eth0" in shell.stdout
    assert "1 received" in shell.stdout
    assert any(route["dst"] == "192.0.2.0/24" for route in net["h1"].routes())
    net["h1"].delete_route("192.0.2.0/24")
