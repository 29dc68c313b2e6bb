"""Test harness for nodes/tcp/connection.py: one connection against scripted segments
(`Endpoint`), or two connections through an in-memory link with seeded impairments (`Pair`).

Segments go through the wire codec (build with checksum, parse back), so what a test sees
is what a peer would. Time is a fake clock advanced by the harness."""
from __future__ import annotations

import dataclasses
import heapq
import random

from nodes.tcp.connection import TcpConnection
from nodes.tcp.states import TcpConfig, TcpStats
from nodes.wire.tcp import ACK, FIN, PSH, RST, SYN, TcpHeader, checksum_ok

IP_A = 0x0A000001
IP_B = 0x0A000002
PORT_A = 40000
PORT_B = 80

__all__ = ["ACK", "FIN", "PSH", "RST", "SYN", "Endpoint", "Pair", "IP_A", "IP_B", "PORT_A", "PORT_B",
           "seg", "make_conn"]


def make_conn(config=None, stats=None, *, isn=1000, ts_offset=0, path_mtu=1500, sent=None, changes=None,
              rcvbuf=None, sndbuf=None, local=(IP_A, PORT_A), remote=(IP_B, PORT_B)):
    """A connection whose segments land in `sent` as (header, bytes(payload)) after a wire round trip."""
    sent = [] if sent is None else sent

    def transmit(conn, header, payload):
        raw = header.build(payload, conn.local_ip, conn.remote_ip)
        assert checksum_ok(raw, conn.local_ip, conn.remote_ip)
        parsed = TcpHeader.parse(raw)
        sent.append((parsed, bytes(raw[parsed.header_length:])))

    def on_change(conn):
        if changes is not None:
            changes.append(conn.state)

    conn = TcpConnection(config or TcpConfig(), stats or TcpStats(), local[0], local[1], remote[0], remote[1],
                         isn=isn, ts_offset=ts_offset, path_mtu=path_mtu, transmit=transmit,
                         on_change=on_change, rcvbuf=rcvbuf, sndbuf=sndbuf)
    return conn, sent


def seg(seq, ack=0, flags=ACK, window=65535, options=(), src=PORT_B, dst=PORT_A):
    """A segment from the peer (template: an ACK from B to A)."""
    return TcpHeader(src, dst, seq & 0xFFFFFFFF, ack & 0xFFFFFFFF, flags, window, 0, 0, tuple(options))


class Endpoint:
    """One connection under test with a fake clock; `sent` collects what it transmits."""

    def __init__(self, config=None, **kwargs):
        self.stats = TcpStats()
        self.changes = []
        self.conn, self.sent = make_conn(config, self.stats, changes=self.changes, **kwargs)
        self.now = 0.0

    def take(self):
        out = list(self.sent)
        self.sent.clear()
        return out

    def one(self):
        out = self.take()
        assert len(out) == 1, out
        return out[0]

    def deliver(self, header, payload=b""):
        return self.conn.receive(header, payload, self.now)

    def advance(self, seconds):
        """Advance the clock by `seconds`, running every timer due on the way."""
        end = self.now + seconds
        while True:
            deadline = self.conn.next_timer()
            if deadline is None or deadline > end + 1e-12:
                break
            self.now = max(self.now, deadline)
            self.conn.tick(self.now)
        self.now = end

    def run_timer(self):
        """Jump to the next deadline and run it; returns the time waited."""
        deadline = self.conn.next_timer()
        assert deadline is not None
        waited = deadline - self.now
        self.now = deadline
        self.conn.tick(self.now)
        return waited


@dataclasses.dataclass
class Impairment:
    loss: float = 0.0
    duplicate: float = 0.0
    corrupt: float = 0.0
    reorder: float = 0.0
    delay: float = 0.005
    jitter: float = 0.0


class Pair:
    """Two connections back to back through an in-memory link: A connects, B answers A's SYN."""

    def __init__(self, config=None, *, seed=0, impair=None, isn_a=1000, isn_b=5000, config_b=None,
                 rcvbuf=None, sndbuf=None, mtu=1500):
        self.rng = random.Random(seed)
        self.impair = impair or Impairment()
        self.now = 0.0
        self.queue = []
        self.counter = 0
        self.stats_a = TcpStats()
        self.stats_b = TcpStats()
        self.config_b = config_b or config or TcpConfig()
        self.isn_b = isn_b
        self.rcvbuf, self.sndbuf, self.mtu = rcvbuf, sndbuf, mtu
        self.received = {"a": bytearray(), "b": bytearray()}
        self.a = TcpConnection(config or TcpConfig(), self.stats_a, IP_A, PORT_A, IP_B, PORT_B, isn=isn_a,
                               ts_offset=123, path_mtu=mtu, transmit=self._transmit, on_change=self._changed,
                               rcvbuf=rcvbuf, sndbuf=sndbuf)
        self.b = None
        self.log = []

    def _changed(self, conn):
        key = "a" if conn is self.a else "b"
        data = conn.recv(1 << 20, self.now)
        if data:
            self.received[key] += data

    def _transmit(self, conn, header, payload):
        raw = bytearray(header.build(payload, conn.local_ip, conn.remote_ip))
        dst = "b" if conn is self.a else "a"
        self.log.append((self.now, "a" if dst == "b" else "b", header.flags, header.seq, len(payload)))
        imp = self.impair
        rng = self.rng
        if rng.random() < imp.loss:
            return
        copies = 2 if rng.random() < imp.duplicate else 1
        for _ in range(copies):
            data = bytearray(raw)
            if rng.random() < imp.corrupt:
                data[rng.randrange(len(data))] ^= 1 << rng.randrange(8)
            delay = imp.delay + rng.random() * imp.jitter
            if rng.random() < imp.reorder:
                delay += rng.random() * 3 * imp.delay
            self.counter += 1
            heapq.heappush(self.queue, (self.now + delay, self.counter, dst, bytes(data)))

    def _deliver(self, dst, raw):
        src_ip, dst_ip = (IP_A, IP_B) if dst == "b" else (IP_B, IP_A)
        if not checksum_ok(raw, src_ip, dst_ip):
            return  # a checksum failure: the layer drops it
        header = TcpHeader.parse(raw)
        payload = memoryview(raw)[header.header_length:]
        if dst == "b":
            if self.b is None:
                if not header.flags & SYN or header.flags & ACK:
                    return
                self.b = TcpConnection(self.config_b, self.stats_b, IP_B, PORT_B, IP_A, PORT_A, isn=self.isn_b,
                                       ts_offset=999, path_mtu=self.mtu, transmit=self._transmit,
                                       on_change=self._changed, rcvbuf=self.rcvbuf, sndbuf=self.sndbuf)
                self.b.accept_syn(header, self.now)
                return
            self.b.receive(header, payload, self.now)
        else:
            self.a.receive(header, payload, self.now)

    def conns(self):
        return [c for c in (self.a, self.b) if c is not None]

    def step(self):
        """Run the next event (delivery or timer); False when nothing is left."""
        deadlines = [c.next_timer() for c in self.conns()]
        deadlines = [d for d in deadlines if d is not None]
        next_timer = min(deadlines) if deadlines else None
        next_packet = self.queue[0][0] if self.queue else None
        if next_packet is None and next_timer is None:
            return False
        if next_packet is not None and (next_timer is None or next_packet <= next_timer):
            when, _, dst, raw = heapq.heappop(self.queue)
            self.now = max(self.now, when)
            self._deliver(dst, raw)
        else:
            self.now = max(self.now, next_timer)
            for conn in self.conns():
                deadline = conn.next_timer()
                if deadline is not None and deadline <= self.now:
                    conn.tick(self.now)
        return True

    def run(self, until=None, *, condition=None, limit=1_000_000):
        for _ in range(limit):
            if condition is not None and condition():
                return True
            if until is not None and self.now >= until:
                return False
            if not self.step():
                return condition() if condition is not None else True
        raise AssertionError("the pair did not settle")


def established(config=None, peer_options=None, *, isn=1000, peer_isn=5000, rtt=0.01, window=65535, **kwargs):
    """An Endpoint whose active open completed against a scripted peer (ISN `peer_isn`) that
    offered `peer_options` (default: MSS 1460 only). The clock stands at `rtt`; nothing pending."""
    from nodes.wire.tcp import MssOption

    ep = Endpoint(config, isn=isn, **kwargs)
    ep.conn.connect(ep.now)
    ep.take()
    ep.now = rtt
    options = (MssOption(1460),) if peer_options is None else peer_options
    ep.deliver(seg(peer_isn, isn + 1, SYN | ACK, window, options))
    ep.take()
    return ep


__all__ += ["established"]
