"""Issue 13's stdlib TCP programs on two_lans (h1 -- r1 -- h2) under the trap (`node.exec`/`run`):
asyncio streams with concurrent full-duplex connections, a `socketserver.ThreadingTCPServer`
serving clients at the same time, a non-blocking `selectors` client multiplexing connections.
(test_stream_programs.py has the single-connection basics: echo, EOF, connect_ex, ECONNREFUSED.)
"""
from __future__ import annotations

import hashlib
import random

import pytest

from control.emulation import Emulation
from tests.conftest import require_trap

from .helpers import next_line, private_run_base, stop, topology
from .test_programs import run, started

pytestmark = pytest.mark.timeout(120)

H1, H2 = "10.0.1.10", "10.0.2.10"


@pytest.fixture(scope="module")
def net():
    require_trap()
    with private_run_base():
        with Emulation(topology("two_lans"), name="scn-tcp-stdlib") as emulation:
            yield emulation


def seeded(seed: int, size: int) -> bytes:
    """The bytes `random.Random(seed).randbytes(size)` gives, as the programs make them."""
    return random.Random(seed).randbytes(size)


# h2: an asyncio streams server echoing every chunk as it comes, until the client's EOF.
ASYNCIO_ECHO = """
    import asyncio, sys
    async def echo(reader, writer):
        count = 0
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()              # back-pressure: the client reads as it writes
            count += len(data)
        writer.close()
        await writer.wait_closed()
        print("echoed", count, writer.get_extra_info("peername")[0], flush=True)
    async def main():
        server = await asyncio.start_server(echo, "0.0.0.0", int(sys.argv[1]))
        print("ready", flush=True)
        async with server:
            await server.serve_forever()
    asyncio.run(main())
"""


def test_asyncio_streams_carry_four_concurrent_full_duplex_connections(net):
    server, lines = started(net, "h2", ASYNCIO_ECHO, "6700")
    try:
        assert next_line(server, lines) == "ready"
        out = run(net, "h1", """
            import asyncio, hashlib, random, sys
            async def one(seed):
                data = random.Random(seed).randbytes(512 * 1024)
                reader, writer = await asyncio.open_connection("h2", int(sys.argv[1]))
                async def send():
                    for at in range(0, len(data), 10000):
                        writer.write(data[at:at + 10000])
                        await writer.drain()
                    writer.write_eof()
                sender = asyncio.create_task(send())
                back = await reader.read(-1)          # to EOF, while the sender still writes
                await sender
                writer.close()
                await writer.wait_closed()
                return seed, len(back), hashlib.sha256(back).hexdigest()
            async def main():
                for seed, size, digest in await asyncio.wait_for(asyncio.gather(*map(one, range(4))), 60):
                    print(seed, size, digest)
            asyncio.run(main())
        """, "6700", timeout=90)
        assert out.splitlines() == [f"{seed} {512 * 1024} {hashlib.sha256(seeded(seed, 512 * 1024)).hexdigest()}"
                                    for seed in range(4)]
        assert sorted(next_line(server, lines) for _ in range(4)) == [f"echoed {512 * 1024} {H1}"] * 4
    finally:
        stop(server)


def test_a_threading_tcp_server_serves_clients_at_the_same_time(net):
    clients = 4
    server, lines = started(net, "h2", """
        import socketserver, sys, threading
        everyone = threading.Barrier(int(sys.argv[2]), timeout=30)
        class Handler(socketserver.StreamRequestHandler):
            def handle(self):
                name = self.rfile.readline().strip().decode()
                everyone.wait()               # answers only once every client is being served at once
                self.wfile.write(f"hello {name} from {threading.get_native_id()}\\n".encode())
        socketserver.ThreadingTCPServer.allow_reuse_address = True
        with socketserver.ThreadingTCPServer(("0.0.0.0", int(sys.argv[1])), Handler) as server:
            print("ready", flush=True)
            server.serve_forever()
    """, "6701", str(clients))
    processes = []
    try:
        assert next_line(server, lines) == "ready"
        for number in range(clients):
            processes.append(started(net, "h1", """
                import socket, sys
                s = socket.create_connection(("h2", 6701), timeout=40)
                s.sendall(f"client{sys.argv[1]}\\n".encode())
                print(s.makefile().readline().strip())
            """, str(number)))
        answers = [next_line(process, output, timeout=40).split() for process, output in processes]
        assert [answer[:2] for answer in answers] == [["hello", f"client{number}"] for number in range(clients)]
        assert len({answer[-1] for answer in answers}) == clients       # one handler thread each
        assert all(process.wait(10) == 0 for process, _ in processes)
    finally:
        for process, _ in processes:
            stop(process)
        stop(server)


def test_a_non_blocking_selectors_client_multiplexes_three_connections(net):
    server, lines = started(net, "h2", ASYNCIO_ECHO, "6702")
    try:
        assert next_line(server, lines) == "ready"
        out = run(net, "h1", """
            import errno, hashlib, random, selectors, socket, sys
            selector = selectors.DefaultSelector()
            states = {}
            for seed in range(3):
                s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
                s.setblocking(False)
                assert s.connect_ex(("10.0.2.10", int(sys.argv[1]))) == errno.EINPROGRESS
                states[s] = {"seed": seed, "data": memoryview(random.Random(seed).randbytes(1 << 20)),
                             "sent": 0, "back": bytearray(), "connected": False, "partial": 0}
                selector.register(s, selectors.EVENT_READ | selectors.EVENT_WRITE)
            open_ = len(states)
            while open_:
                events = selector.select(30)
                assert events, "nothing happened for 30 s"
                for key, mask in events:
                    s, state = key.fileobj, states[key.fileobj]
                    if mask & selectors.EVENT_WRITE:
                        if not state["connected"]:
                            assert s.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR) == 0
                            state["connected"] = True
                        try:
                            wrote = s.send(state["data"][state["sent"]:state["sent"] + 256 * 1024])
                        except BlockingIOError:
                            wrote = 0
                        state["partial"] += wrote < 256 * 1024 and state["sent"] + wrote < len(state["data"])
                        state["sent"] += wrote
                        if state["sent"] == len(state["data"]):
                            s.shutdown(socket.SHUT_WR)
                            selector.modify(s, selectors.EVENT_READ)
                    if mask & selectors.EVENT_READ:
                        try:
                            chunk = s.recv(1 << 16)
                        except BlockingIOError:
                            continue
                        state["back"] += chunk
                        if not chunk:
                            selector.unregister(s)
                            s.close()
                            open_ -= 1
            for state in states.values():
                print(state["seed"], len(state["back"]), hashlib.sha256(state["back"]).hexdigest(),
                      state["partial"] > 0)
        """, "6702", timeout=90)
        # Every stream came back whole, and the sockets really were non-blocking (short sends).
        assert out.splitlines() == [f"{seed} {1 << 20} {hashlib.sha256(seeded(seed, 1 << 20)).hexdigest()} True"
                                    for seed in range(3)]
        assert sorted(next_line(server, lines) for _ in range(3)) == [f"echoed {1 << 20} {H1}"] * 3
    finally:
        stop(server)
