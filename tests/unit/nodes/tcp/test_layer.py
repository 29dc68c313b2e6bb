"""TCP through the socket layer on in-memory stacks (nodes/memnet): TcpLayer's demultiplexing,
ports, listeners and accept queue, RSTs for nobody's segments, errors reaching sockets, ss rows,
counters and socket options. The connection's own rules are test_conn_*'s."""
from __future__ import annotations

import errno
import hashlib
import random
import struct

import pytest

from nodes.memnet import Network, host_router_host
from nodes.socket.constants import (
    AF_INET, POLLERR, POLLHUP, POLLIN, POLLOUT, SO_ERROR, SO_REUSEADDR, SOCK_STREAM, SOL_SOCKET, SOL_TCP,
    TCP_CLOSE, TCP_CLOSE_WAIT, TCP_CONGESTION, TCP_ESTABLISHED, TCP_INFO, TCP_LISTEN, TCP_MAXSEG, TCP_NODELAY,
    TCP_SYN_SENT,
)
from nodes.socket.stream_options import TCP_INFO_SIZE
from nodes.wire.ethernet import HEADER_LENGTH as ETH
from nodes.wire.ipv4 import IPv4Header
from nodes.wire.tcp import TcpHeader


def errno_of(call, *args):
    with pytest.raises(OSError) as raised:
        call(*args)
    return raised.value.errno


def until(net: Network, predicate, limit: float = 30.0, step: float = 0.001) -> None:
    """Run the network until `predicate()` holds (fails after `limit` emulated seconds)."""
    deadline = net.now + limit
    while not predicate():
        assert net.now < deadline, "condition not reached in emulated time"
        net.run(step)


def pair(net, client_stack, server_stack, server_address: str, port: int = 8080):
    """A connected (client, accepted) pair and the listener."""
    listener = server_stack.sockets.socket(AF_INET, SOCK_STREAM, 0)
    listener.bind(("0.0.0.0", port))
    listener.listen(8)
    client = client_stack.sockets.socket(AF_INET, SOCK_STREAM, 0)
    client.connect((server_address, port), net.now)
    assert client.state == TCP_SYN_SENT
    until(net, lambda: client.state == TCP_ESTABLISHED and listener.accept_queue)
    return client, listener.accept(), listener


def at_eof(net, sock) -> bool:
    try:
        return sock.recvmsg(10, net.now).data == b""
    except BlockingIOError:
        return False


def read_all(net, sock, size: int, limit: float = 120.0) -> bytes:
    chunks, total = [], 0
    deadline = net.now + limit
    while total < size:
        try:
            data = sock.recvmsg(65536, net.now).data
        except BlockingIOError:
            assert net.now < deadline, f"only {total} of {size} bytes arrived"
            net.run(0.002)
            continue
        if not data:
            break
        chunks.append(data)
        total += len(data)
    return b"".join(chunks)


def test_handshake_accept_and_bytes_both_ways_across_a_router():
    net, h1, r1, h2 = host_router_host()
    client, server, listener = pair(net, h1, h2, "10.0.2.10")
    assert server.getpeername() == ("10.0.1.10", client.getsockname()[1])
    assert client.getpeername() == ("10.0.2.10", 8080)
    assert client.getsockname()[0] == "10.0.1.10"
    assert client.poll() & POLLOUT and not client.poll() & POLLIN
    assert client.sendmsg(b"hello", None, net.now) == 5
    until(net, lambda: server.poll() & POLLIN)
    assert server.recvmsg(100, net.now).data == b"hello"
    server.sendmsg(b"world!", None, net.now)
    assert read_all(net, client, 6) == b"world!"
    assert h1.tcp.stats.ActiveOpens == 1 and h2.tcp.stats.PassiveOpens == 1
    assert h1.tcp.stats.CurrEstab == 1 and h2.tcp.stats.CurrEstab == 1


def test_a_megabyte_arrives_byte_exact_through_loss():
    net, h1, r1, h2 = host_router_host()
    rng = random.Random(7)
    net.drop = lambda segment, frame: rng.random() < 0.05
    client, server, _ = pair(net, h1, h2, "10.0.2.10")
    payload = random.Random(1).randbytes(1 << 20)
    sent = 0
    received = bytearray()
    deadline = net.now + 300
    while len(received) < len(payload):
        assert net.now < deadline
        if sent < len(payload):
            try:
                sent += client.sendmsg(payload[sent:sent + 65536], None, net.now)
            except BlockingIOError:
                pass
        try:
            received += server.recvmsg(1 << 16, net.now).data
        except BlockingIOError:
            net.run(0.002)
    assert hashlib.sha256(received).digest() == hashlib.sha256(payload).digest()
    assert h1.tcp.stats.RetransSegs > 0


def test_orderly_close_gives_eof_then_the_other_side_closes():
    net, h1, r1, h2 = host_router_host()
    client, server, _ = pair(net, h1, h2, "10.0.2.10")
    client.sendmsg(b"last words", None, net.now)
    client.shutdown(1, net.now)  # SHUT_WR: FIN after the bytes
    assert read_all(net, server, 100) == b"last words"
    assert server.state == TCP_CLOSE_WAIT and server.poll() & POLLIN
    assert server.recvmsg(10, net.now).data == b""
    server.sendmsg(b"bye", None, net.now)  # half-close: the other direction still works
    assert read_all(net, client, 3) == b"bye"
    server.close(net.now)
    until(net, lambda: at_eof(net, client) and client.state != TCP_ESTABLISHED)
    client.close(net.now)
    until(net, lambda: not h1.tcp.ehash and not h2.tcp.ehash, limit=130)
    assert h1.tcp.stats.CurrEstab == 0 and h2.tcp.stats.CurrEstab == 0


def test_connect_to_a_closed_port_is_refused_by_rst():
    net, h1, r1, h2 = host_router_host()
    client = h1.sockets.socket(AF_INET, SOCK_STREAM, 0)
    client.connect(("10.0.2.10", 9), net.now)
    until(net, lambda: client.state == TCP_CLOSE)
    assert client.poll() & POLLERR and client.poll() & POLLHUP
    assert client.getsockopt(SOL_SOCKET, SO_ERROR) == errno.ECONNREFUSED
    assert client.getsockopt(SOL_SOCKET, SO_ERROR) == 0
    assert h2.tcp.stats.OutRsts == 1 and h1.tcp.stats.AttemptFails == 1


def test_rst_for_a_stray_segment_follows_rfc_9293_3_10_7_1():
    net, h1, r1, h2 = host_router_host()
    sent = []
    net.taps.append(lambda segment, frame: sent.append(frame) if segment == "lan2" else None)
    # an ACK to nobody: <SEQ=SEG.ACK><CTL=RST>; a SYN: <SEQ=0><ACK=SEG.SEQ+SEG.LEN><CTL=RST,ACK>
    for header in (TcpHeader(5555, 80, 1000, 777, 0x10, 1000), TcpHeader(5556, 80, 2000, 0, 0x02, 1000)):
        h1.ipv4.output(0x0A00020A, 6, header.build(b"xyz", 0x0A00010A, 0x0A00020A), net.now, src=0x0A00010A)
    until(net, lambda: len(_tcp_from(sent, 0x0A00020A)) == 2)
    first, second = _tcp_from(sent, 0x0A00020A)
    assert (first.flags, first.seq) == (0x04, 777)
    assert (second.flags, second.seq, second.ack) == (0x14, 0, 2000 + 3 + 1)


def _tcp_from(frames, source):
    headers = []
    for frame in frames:
        if frame[12:14] != b"\x08\x00":
            continue
        ip = IPv4Header.parse(frame[ETH:])
        if ip.protocol == 6 and int(ip.src) == source:
            headers.append(TcpHeader.parse(frame[ETH + ip.header_length:]))
    return headers


def test_bind_conflicts_and_so_reuseaddr_after_time_wait():
    net, h1, r1, h2 = host_router_host()
    first = h2.sockets.socket(AF_INET, SOCK_STREAM, 0)
    first.bind(("0.0.0.0", 7000))
    second = h2.sockets.socket(AF_INET, SOCK_STREAM, 0)
    assert errno_of(second.bind, ("10.0.2.10", 7000)) == errno.EADDRINUSE
    first.close(net.now)
    second.bind(("10.0.2.10", 7000))
    second.close(net.now)
    # the active closer keeps its port in TIME-WAIT: rebinding needs SO_REUSEADDR
    client, server, listener = pair(net, h1, h2, "10.0.2.10", port=7001)
    listener.close(net.now)
    server.close(net.now)
    until(net, lambda: at_eof(net, client))
    client.close(net.now)
    until(net, lambda: any(c.state == 6 for c in h2.tcp.ehash.values()))  # TIME-WAIT on the server side
    again = h2.sockets.socket(AF_INET, SOCK_STREAM, 0)
    assert errno_of(again.bind, ("0.0.0.0", 7001)) == errno.EADDRINUSE
    again.setsockopt(SOL_SOCKET, SO_REUSEADDR, 1)
    again.bind(("0.0.0.0", 7001))
    again.listen(1)
    assert again.state == TCP_LISTEN


def test_two_listeners_on_one_port_conflict_even_with_so_reuseaddr():
    net, h1, r1, h2 = host_router_host()
    socks = [h2.sockets.socket(AF_INET, SOCK_STREAM, 0) for _ in range(2)]
    for sock in socks:
        sock.setsockopt(SOL_SOCKET, SO_REUSEADDR, 1)
        sock.bind(("0.0.0.0", 7100))
    socks[0].listen(1)
    assert errno_of(socks[1].listen, 1) == errno.EADDRINUSE


def test_a_full_accept_queue_drops_syns_and_the_client_retries():
    net, h1, r1, h2 = host_router_host()
    listener = h2.sockets.socket(AF_INET, SOCK_STREAM, 0)
    listener.bind(("0.0.0.0", 7200))
    listener.listen(0)  # the queue holds backlog + 1 = 1
    clients = [h1.sockets.socket(AF_INET, SOCK_STREAM, 0) for _ in range(2)]
    for client in clients:
        client.connect(("10.0.2.10", 7200), net.now)
    until(net, lambda: len(listener.accept_queue) == 1)
    net.run(0.5)
    assert len(listener.accept_queue) == 1
    assert h2.tcp.stats.ListenDrops >= 1 and h2.tcp.stats.OutRsts == 0
    listener.accept()
    until(net, lambda: len(listener.accept_queue) == 1, limit=10)  # the SYN retransmitted gets in
    assert all(client.state == TCP_ESTABLISHED for client in clients)


def test_closing_a_socket_with_unread_bytes_resets_the_peer():
    net, h1, r1, h2 = host_router_host()
    client, server, _ = pair(net, h1, h2, "10.0.2.10")
    client.sendmsg(b"never read", None, net.now)
    until(net, lambda: server.recv_ready())
    server.close(net.now)
    until(net, lambda: client.state == TCP_CLOSE)
    assert errno_of(client.recvmsg, 10, net.now) == errno.ECONNRESET
    assert errno_of(client.sendmsg, b"x", None, net.now) == errno.EPIPE
    assert h1.tcp.stats.EstabResets == 1


def test_send_on_an_unconnected_socket_is_epipe_and_recv_enotconn():
    net, h1, r1, h2 = host_router_host()
    sock = h1.sockets.socket(AF_INET, SOCK_STREAM, 0)
    assert errno_of(sock.sendmsg, b"x", None, net.now) == errno.EPIPE
    assert errno_of(sock.recvmsg, 10, net.now) == errno.ENOTCONN
    assert errno_of(sock.getpeername) == errno.ENOTCONN


def test_connect_twice_is_ealready_then_eisconn():
    net, h1, r1, h2 = host_router_host()
    client, server, _ = pair(net, h1, h2, "10.0.2.10")
    assert errno_of(client.connect, ("10.0.2.10", 8080), net.now) == errno.EISCONN
    other = h1.sockets.socket(AF_INET, SOCK_STREAM, 0)
    other.connect(("10.0.2.10", 8080), net.now)
    assert errno_of(other.connect, ("10.0.2.10", 8080), net.now) == errno.EALREADY


def test_tcp_socket_options_and_tcp_info():
    net, h1, r1, h2 = host_router_host()
    sock = h1.sockets.socket(AF_INET, SOCK_STREAM, 0)
    assert sock.getsockopt(SOL_TCP, TCP_CONGESTION).rstrip(b"\0") == b"cubic"
    sock.setsockopt(SOL_TCP, TCP_CONGESTION, b"reno")
    assert errno_of(sock.setsockopt, SOL_TCP, TCP_CONGESTION, b"bbr9") == errno.ENOENT
    sock.setsockopt(SOL_TCP, TCP_NODELAY, 1)
    assert sock.getsockopt(SOL_TCP, TCP_NODELAY) == 1
    assert errno_of(sock.setsockopt, SOL_TCP, TCP_MAXSEG, 20) == errno.EINVAL
    assert sock.getsockopt(SOL_TCP, TCP_MAXSEG) == 536
    listener = h2.sockets.socket(AF_INET, SOCK_STREAM, 0)
    listener.bind(("0.0.0.0", 80))
    listener.listen(1)
    sock.connect(("10.0.2.10", 80), net.now)
    until(net, lambda: sock.state == TCP_ESTABLISHED)
    assert sock.getsockopt(SOL_TCP, TCP_CONGESTION).rstrip(b"\0") == b"reno"
    info = sock.getsockopt(SOL_TCP, TCP_INFO)
    assert len(info) == TCP_INFO_SIZE
    state, _, _, _, _, options = struct.unpack_from("=6B", info)
    assert state == TCP_ESTABLISHED and options & 1 and options & 2  # timestamps, SACK
    snd_mss = struct.unpack_from("=I", info, 8 + 8)[0]
    assert snd_mss == 1448  # 1500 - 40 - 12 bytes of timestamps
    assert sock.getsockopt(SOL_TCP, TCP_MAXSEG) == 1448


def test_ss_rows_show_tcp_states_and_info():
    net, h1, r1, h2 = host_router_host()
    client, server, listener = pair(net, h1, h2, "10.0.2.10")
    rows = {row["state"]: row for row in h2.sockets.table() if row["proto"] == "tcp"}
    assert rows["LISTEN"]["local"] == "0.0.0.0:8080"
    assert rows["ESTAB"]["peer"].startswith("10.0.1.10:")
    assert rows["ESTAB"]["info"]["snd_cwnd"] >= 10


def test_counters_are_in_the_stack_counters():
    net, h1, r1, h2 = host_router_host()
    pair(net, h1, h2, "10.0.2.10")
    counters = h1.counters()["Tcp"]
    assert counters["ActiveOpens"] == 1 and counters["InSegs"] >= 1 and counters["OutSegs"] >= 2


def test_a_syn_that_ends_a_time_wait_reaches_the_listener_at_once():
    # tcp_v4_rcv's TCP_TW_SYN: the server closed first and holds TIME-WAIT; the same 4-tuple
    # connects again and is accepted without waiting for a SYN retransmission
    net, h1, r1, h2 = host_router_host()
    client, server, listener = pair(net, h1, h2, "10.0.2.10")
    port = client.getsockname()[1]
    server.close(net.now)
    until(net, lambda: at_eof(net, client))
    client.close(net.now)
    until(net, lambda: not h1.tcp.ehash)
    assert [conn.state for conn in h2.tcp.ehash.values()] == [6]  # TIME-WAIT
    again = h1.sockets.socket(AF_INET, SOCK_STREAM, 0)
    again.setsockopt(SOL_SOCKET, SO_REUSEADDR, 1)
    again.bind(("0.0.0.0", port))
    start = net.now
    again.connect(("10.0.2.10", 8080), net.now)
    until(net, lambda: again.state == TCP_ESTABLISHED)
    assert net.now - start < 0.5 and h1.tcp.stats.RetransSegs == 0


def test_a_server_restarts_on_its_port_while_its_old_connections_close():
    # sk_clone_lock copies SO_REUSEADDR: an accepted connection in FIN-WAIT-2 does not keep a new
    # SO_REUSEADDR listener off the port (a restarted server on Linux)
    net, h1, r1, h2 = host_router_host()
    listener = h2.sockets.socket(AF_INET, SOCK_STREAM, 0)
    listener.setsockopt(SOL_SOCKET, SO_REUSEADDR, 1)
    listener.bind(("0.0.0.0", 5600))
    listener.listen(1)
    client = h1.sockets.socket(AF_INET, SOCK_STREAM, 0)
    client.connect(("10.0.2.10", 5600), net.now)
    until(net, lambda: listener.accept_queue)
    server = listener.accept()
    listener.close(net.now)
    server.close(net.now)
    until(net, lambda: any(conn.state == 5 for conn in h2.tcp.ehash.values()))  # FIN-WAIT-2
    again = h2.sockets.socket(AF_INET, SOCK_STREAM, 0)
    again.setsockopt(SOL_SOCKET, SO_REUSEADDR, 1)
    again.bind(("0.0.0.0", 5600))
    again.listen(1)
    plain = h2.sockets.socket(AF_INET, SOCK_STREAM, 0)
    assert errno_of(plain.bind, ("0.0.0.0", 5600)) == errno.EADDRINUSE
