"""Issue 13's stream sockets through real programs: unmodified Python TCP servers and clients on
two_lans (h1 -- r1 -- h2) under the trap (`node.exec`/`run`), and the in-process
`node.socket(SOCK_STREAM)`: byte streams both ways, EOF, non-blocking connect with select and
SO_ERROR, ECONNREFUSED, a peer's close, asyncio streams.
"""
from __future__ import annotations

import asyncio
import hashlib
import socket

import pytest

from control.emulation import Emulation
from tests.conftest import require_trap

from .helpers import next_line, private_run_base, stop, topology
from .test_programs import run, started

pytestmark = pytest.mark.timeout(120)

H1, H2 = "10.0.1.10", "10.0.2.10"

# h2: a TCP server that reads each connection to EOF and sends the bytes back, then closes it.
ECHO_TO_EOF = """
    import socket, sys
    server = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    server.bind(("0.0.0.0", int(sys.argv[1])))
    server.listen()
    print("ready", flush=True)
    while True:
        conn, peer = server.accept()
        data = bytearray()
        while chunk := conn.recv(65536):
            data += chunk
        conn.sendall(data)
        conn.close()
        print(len(data), peer[0], flush=True)
"""


@pytest.fixture(scope="module")
def net():
    require_trap()
    with private_run_base():
        with Emulation(topology("two_lans"), name="scn-tcp") as emulation:
            yield emulation


def test_a_tcp_echo_server_and_client_across_the_router(net):
    server, lines = started(net, "h2", ECHO_TO_EOF, "6200")
    try:
        assert next_line(server, lines) == "ready"
        out = run(net, "h1", """
            import socket
            s = socket.create_connection(("h2", 6200), timeout=20)
            s.sendall(b"hello over tcp")
            s.shutdown(socket.SHUT_WR)
            answer = b"".join(iter(lambda: s.recv(4096), b""))
            print(answer.decode(), s.getpeername()[0], s.getpeername()[1], s.getsockname()[0])
        """)
        assert out == f"hello over tcp {H2} 6200 {H1}\n"
        assert next_line(server, lines) == f"14 {H1}"
    finally:
        stop(server)


def test_a_megabyte_each_way_byte_exact(net):
    server, lines = started(net, "h2", ECHO_TO_EOF, "6201")
    try:
        assert next_line(server, lines) == "ready"
        out = run(net, "h1", """
            import hashlib, os, socket
            data = os.urandom(1 << 20)
            s = socket.create_connection(("h2", 6201), timeout=60)
            s.sendall(data)
            s.shutdown(socket.SHUT_WR)
            back = bytearray()
            while chunk := s.recv(1 << 16):
                back += chunk
            print(len(back), back == data)
        """, timeout=90)
        assert out == f"{1 << 20} True\n"
        assert next_line(server, lines) == f"{1 << 20} {H1}"
    finally:
        stop(server)


def test_nonblocking_connect_select_so_error_and_a_refused_port(net):
    server, lines = started(net, "h2", ECHO_TO_EOF, "6202")
    try:
        assert next_line(server, lines) == "ready"
        out = run(net, "h1", """
            import errno, select, socket
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.setblocking(False)
            print(errno.errorcode[s.connect_ex(("10.0.2.10", 6202))])
            _, writable, _ = select.select([], [s], [], 20)
            # writable only once established: getpeername works (ENOTCONN in SYN-SENT)
            print(bool(writable), s.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR), s.getpeername()[1])
            s.sendall(b"nb")
            s.shutdown(socket.SHUT_WR)
            select.select([s], [], [], 20)
            print(s.recv(10).decode())
            r = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            r.setblocking(False)
            r.connect_ex(("10.0.2.10", 6299))
            _, writable, _ = select.select([], [r], [], 20)
            print(bool(writable), errno.errorcode[r.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)])
            try:
                socket.create_connection(("10.0.2.10", 6299), timeout=20)
            except ConnectionRefusedError as error:
                print("refused", error.errno == errno.ECONNREFUSED)
        """)
        assert out.splitlines() == ["EINPROGRESS", "True 0 6202", "nb", "True ECONNREFUSED", "refused True"]
    finally:
        stop(server)


def test_the_peers_close_is_eof_for_recv(net):
    server, lines = started(net, "h2", """
        import socket
        server = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        server.bind(("0.0.0.0", 6203))
        server.listen()
        print("ready", flush=True)
        conn, _ = server.accept()
        conn.sendall(b"goodbye")
        conn.close()
        print("closed", flush=True)
    """)
    try:
        assert next_line(server, lines) == "ready"
        out = run(net, "h1", """
            import socket
            s = socket.create_connection(("h2", 6203), timeout=20)
            first = b""
            while len(first) < 7:
                first += s.recv(100)
            print(first.decode(), repr(s.recv(100)), repr(s.recv(100)))
        """)
        assert out == "goodbye b'' b''\n"
        assert next_line(server, lines) == "closed"
    finally:
        stop(server)


def test_asyncio_streams_echo_server_and_client(net):
    server, lines = started(net, "h2", """
        import asyncio
        async def echo(reader, writer):
            while data := await reader.read(4096):
                writer.write(data.upper())
                await writer.drain()
            writer.close()
        async def main():
            server = await asyncio.start_server(echo, "0.0.0.0", 6204)
            print("ready", flush=True)
            async with server:
                await server.serve_forever()
        asyncio.run(main())
    """)
    try:
        assert next_line(server, lines) == "ready"
        out = run(net, "h1", """
            import asyncio
            async def main():
                reader, writer = await asyncio.wait_for(asyncio.open_connection("h2", 6204), 20)
                for word in ("one", "two", "three"):
                    writer.write(word.encode() + b"\\n")
                    await writer.drain()
                    print((await asyncio.wait_for(reader.readline(), 20)).decode().strip())
                writer.write_eof()
                print(repr(await asyncio.wait_for(reader.read(), 20)))
                writer.close()
                await writer.wait_closed()
            asyncio.run(main())
        """)
        assert out.splitlines() == ["ONE", "TWO", "THREE", "b''"]
    finally:
        stop(server)


def test_the_in_process_stream_socket_is_a_tcp_client(net):
    server, lines = started(net, "h2", ECHO_TO_EOF, "6205")
    try:
        assert next_line(server, lines) == "ready"
        payload = bytes(range(256)) * 1024
        with net["h1"].socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            sock.settimeout(20)
            sock.connect((H2, 6205))
            assert sock.getpeername() == (H2, 6205)
            sock.sendall(payload)
            sock.shutdown(socket.SHUT_WR)
            back = bytearray()
            while chunk := sock.recv(1 << 16):
                back += chunk
            assert hashlib.sha256(back).digest() == hashlib.sha256(payload).digest()
            assert sock.recvfrom(10) == (b"", None)     # native: TCP gives no address
        assert next_line(server, lines) == f"{len(payload)} {H1}"
    finally:
        stop(server)


def test_a_threading_tcp_server_serves_bash_dev_tcp_and_concurrent_clients(net):
    server, lines = started(net, "h2", """
        import socketserver
        class Upper(socketserver.StreamRequestHandler):
            def handle(self):
                for line in self.rfile:
                    self.wfile.write(line.upper())
        socketserver.ThreadingTCPServer.allow_reuse_address = True
        with socketserver.ThreadingTCPServer(("0.0.0.0", 6206), Upper) as server:
            print("ready", flush=True)
            server.serve_forever()
    """)
    try:
        assert next_line(server, lines) == "ready"
        shell = net["h1"].run(["bash", "-c", 'exec 3<>/dev/tcp/h2/6206; echo "from bash" >&3; read -r line <&3; '
                               'echo "$line"; exec 3>&-'], capture_output=True, text=True, timeout=30)
        assert (shell.returncode, shell.stdout) == (0, "FROM BASH\n"), shell.stderr
        out = run(net, "h1", """
            import socket, threading
            results = {}
            def client(n):
                with socket.create_connection(("h2", 6206), timeout=20) as s, s.makefile("rwb") as f:
                    for i in range(20):
                        f.write(b"client %d line %d\\n" % (n, i)); f.flush()
                        assert f.readline() == b"CLIENT %d LINE %d\\n" % (n, i)
                results[n] = True
            threads = [threading.Thread(target=client, args=(n,)) for n in range(4)]
            for t in threads: t.start()
            for t in threads: t.join()
            print(sorted(results))
        """)
        assert out == "[0, 1, 2, 3]\n"
    finally:
        stop(server)


def test_asyncio_sock_connect_on_an_in_process_stream_socket(net):
    """loop.sock_connect: a non-blocking connect (EINPROGRESS), the fd polled for POLLOUT, SO_ERROR."""
    server, lines = started(net, "h2", ECHO_TO_EOF, "6207")
    try:
        assert next_line(server, lines) == "ready"

        async def client() -> tuple:
            loop = asyncio.get_running_loop()
            with net["h1"].socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
                sock.setblocking(False)
                await asyncio.wait_for(loop.sock_connect(sock, (H2, 6207)), 20)
                peer = sock.getpeername()            # ENOTCONN had POLLOUT come before the handshake
                await loop.sock_sendall(sock, b"async in-process")
                sock.shutdown(socket.SHUT_WR)
                answer = bytearray()
                while chunk := await asyncio.wait_for(loop.sock_recv(sock, 4096), 20):
                    answer += chunk
                return peer, bytes(answer)

        assert asyncio.run(client()) == ((H2, 6207), b"async in-process")
        assert next_line(server, lines) == f"16 {H1}"
    finally:
        stop(server)
