"""ping and traceroute run inside a node's kernel, for the control endpoint and the CLI.

Before changing this file, read RFC 792 (echo), RFC 1393's background on
traceroute and the Linux `ping(8)`/`traceroute(8)` man pages: the defaults,
the result fields and the error markers (`!H`, `!N`, `!P`, `!F`) follow them.

Both are sans-I/O sessions driven by the stack's timers: they send through
the stack, receive through the ICMP echo listener table or a UDP endpoint's
error callback, and call `on_done(result)` with a plain dict when finished.
"""
from __future__ import annotations

import statistics
from typing import Any, Callable, Protocol

from .icmp import IcmpLayer
from .ipv4 import Datagram, IPv4Layer
from .udp import UdpLayer
from .wire.addresses import IPv4Address
from .wire.icmp import (
    DEST_UNREACH,
    FRAG_NEEDED,
    HOST_UNREACH,
    NET_UNREACH,
    PKT_FILTERED,
    PORT_UNREACH,
    PROT_UNREACH,
    REDIRECT,
    SOURCE_QUENCH,
    TIME_EXCEEDED,
    IcmpMessage,
    QuotedDatagram,
    echo_header,
)
from .wire.udp import quoted_ports


class ProbeHost(Protocol):
    """What a probe session needs of its node (the stack provides it): the transports and a timer."""

    ipv4: IPv4Layer
    icmp: IcmpLayer
    udp: UdpLayer

    def call_at(self, when: float, callback: Callable[[float], Any]) -> None: ...

# What ping(8) prints for ICMP errors.
_PING_ERROR_TEXT = {
    (DEST_UNREACH, NET_UNREACH): "Destination Net Unreachable",
    (DEST_UNREACH, HOST_UNREACH): "Destination Host Unreachable",
    (DEST_UNREACH, PROT_UNREACH): "Destination Protocol Unreachable",
    (DEST_UNREACH, PORT_UNREACH): "Destination Port Unreachable",
    (DEST_UNREACH, FRAG_NEEDED): "Frag needed",
    (DEST_UNREACH, PKT_FILTERED): "Packet filtered",
    (TIME_EXCEEDED, 0): "Time to live exceeded",
    (TIME_EXCEEDED, 1): "Frag reassembly time exceeded",
}

# traceroute(8) annotations for unreachables other than the final port unreachable.
_TRACEROUTE_MARK = {NET_UNREACH: "!N", HOST_UNREACH: "!H", PROT_UNREACH: "!P", FRAG_NEEDED: "!F", PKT_FILTERED: "!X"}


def describe_icmp_error(message: IcmpMessage) -> str:
    return _PING_ERROR_TEXT.get((message.type, message.code), f"ICMP type {message.type} code {message.code}")


def _payload(size: int) -> bytes:
    """ping's default pattern: bytes counting up from 0x08 after the (here unused) timestamp."""
    return bytes((i + 8) & 0xFF for i in range(size))


MAX_PING_SIZE = 65507  # 65535 - 20 (IP) - 8 (ICMP), as iputils


class PingSession:
    """`ping -c COUNT -s SIZE -i INTERVAL -W TIMEOUT -t TTL DEST` inside the kernel."""

    def __init__(self, stack: ProbeHost, destination: int, on_done: Callable[[dict], Any], *, count: int = 3,
                 size: int = 56, interval: float = 1.0, timeout: float = 2.0, ttl: int | None = None,
                 source: int | None = None, identifier: int = 0x4E45, dont_fragment: bool = False) -> None:
        # iputils' wording for each argument it refuses
        if count < 1:
            raise ValueError(f"ping: invalid argument: '{count}': out of range: 1 <= value <= 9223372036854775807")
        if size > MAX_PING_SIZE:
            raise ValueError(f"ping: packet size {size} is too large. Maximum is {MAX_PING_SIZE}")
        if size < 0:
            raise ValueError(f"ping: invalid argument: '{size}': out of range: 0 <= value <= {MAX_PING_SIZE}")
        if interval < 0:
            raise ValueError(f"ping: bad timing interval: {interval}")
        if timeout <= 0:
            raise ValueError(f"ping: bad linger time: {timeout}")
        self.stack = stack
        self.destination = IPv4Address(destination)
        self.on_done = on_done
        self.count = count
        self.size = size
        self.interval = interval
        self.timeout = timeout
        self.ttl = ttl
        self.source = source
        self.dont_fragment = dont_fragment
        self.identifier = stack.icmp.free_identifier(identifier)
        self.data = _payload(size)
        self.sent_at: dict[int, float] = {}
        self.replies: list[dict] = []
        self._replied: set[int] = set()  # the sequence numbers in `replies`
        self.errors: list[dict] = []
        self.duplicates = 0
        self.send_errors: list[str] = []
        self.next_sequence = 1
        self.done = False
        self.started = 0.0

    def start(self, now: float) -> None:
        self.stack.icmp.echo_listeners[self.identifier] = self
        self.started = now
        self._send(now)

    def _send(self, now: float) -> None:
        if self.done:
            return
        sequence = self.next_sequence
        self.next_sequence += 1
        self.sent_at[sequence] = now
        try:
            self.stack.icmp.send_echo_request(self.destination, self.identifier, sequence, self.data, now,
                                              ttl=self.ttl, src=self.source, dont_fragment=self.dont_fragment)
        except OSError as error:
            # ping(8) gives up at once when the first send fails (e.g. "Network is unreachable").
            self.send_errors.append(error.strerror or str(error))
            if sequence == 1:
                self._finish(now)
                return
        if sequence < self.count:
            self.stack.call_at(now + self.interval, self._send)
        else:
            self.stack.call_at(now + self.timeout, self._deadline)

    def _deadline(self, now: float) -> None:
        self._finish(now)

    def echo_reply(self, message: IcmpMessage, datagram: "Datagram", now: float) -> None:
        if self.done or message.identifier != self.identifier or datagram.src != self.destination and not self._any_source():
            return
        sent = self.sent_at.get(message.sequence)
        if sent is None:
            return
        if message.sequence in self._replied:  # a set: scanning the replies cost O(count) per reply
            self.duplicates += 1
            return
        self._replied.add(message.sequence)
        self.replies.append({
            "seq": message.sequence,
            "from": str(datagram.src),
            "bytes": len(message.payload) + 8,
            "ttl": datagram.ttl,
            "rtt_ms": round((now - sent) * 1000.0, 3),
        })
        if len(self.replies) + len(self.errors) >= self.count and self.next_sequence > self.count:
            self._finish(now)

    def _any_source(self) -> bool:
        # A ping to a broadcast address accepts replies from anyone.
        return self.destination in self.stack.ipv4.broadcast_addresses

    def echo_error(self, message: IcmpMessage, quoted: QuotedDatagram, datagram: "Datagram", now: float) -> None:
        if self.done or message.type in (REDIRECT, SOURCE_QUENCH):
            return  # iputils prints these but does not count them as errors: the echo goes on
        echo = echo_header(quoted.transport_bytes)
        if echo is None:
            return
        sequence = echo[1]
        if sequence not in self.sent_at:
            return
        self.errors.append({"seq": sequence, "from": str(datagram.src), "type": message.type,
                            "code": message.code, "error": describe_icmp_error(message)})
        if len(self.replies) + len(self.errors) >= self.count and self.next_sequence > self.count:
            self._finish(now)

    def _finish(self, now: float) -> None:
        if self.done:
            return
        self.done = True
        if self.stack.icmp.echo_listeners.get(self.identifier) is self:
            del self.stack.icmp.echo_listeners[self.identifier]
        self.on_done(self.result(now))

    def result(self, now: float) -> dict:
        transmitted = len(self.sent_at)
        received = len(self.replies)
        rtts = [reply["rtt_ms"] for reply in self.replies]
        summary: dict[str, Any] = {
            "destination": str(self.destination),
            "size": self.size,
            "transmitted": transmitted,
            "received": received,
            "duplicates": self.duplicates,
            "errors": len(self.errors),
            "loss_percent": round(100.0 * (transmitted - received) / transmitted, 1) if transmitted else 100.0,
            "time_ms": round((now - self.started) * 1000.0, 1),
            "replies": sorted(self.replies, key=lambda reply: reply["seq"]),
            "error_replies": self.errors,
            "send_error": self.send_errors[0] if self.send_errors else None,
        }
        if rtts:
            summary.update(rtt_min=min(rtts), rtt_avg=round(statistics.fmean(rtts), 3), rtt_max=max(rtts),
                           rtt_mdev=round(statistics.pstdev(rtts), 3))
        return summary


class TracerouteSession:
    """`traceroute -q PROBES -m MAX_HOPS -w WAIT DEST` with UDP probes to port 33434 upward."""

    BASE_PORT = 33434

    def __init__(self, stack: ProbeHost, destination: int, on_done: Callable[[dict], Any], *, max_hops: int = 30,
                 probes: int = 3, wait: float = 2.0, first_ttl: int = 1, size: int = 32) -> None:
        # traceroute(8)'s wording
        if not 1 <= max_hops <= 255:
            raise ValueError(f"traceroute: max hops cannot be more than 255 (got {max_hops})")
        if not 1 <= first_ttl <= max_hops:
            raise ValueError(f"traceroute: first hop out of range (1..{max_hops}): {first_ttl}")
        if probes < 1:
            raise ValueError(f"traceroute: no more than 10 probes per hop and at least 1 (got {probes})")
        if wait <= 0:
            raise ValueError(f"traceroute: bad wait specification `{wait}' used")
        self.stack = stack
        self.destination = IPv4Address(destination)
        self.on_done = on_done
        self.max_hops = max_hops
        self.probes = probes
        self.wait = wait
        self.ttl = first_ttl
        self.data = bytes(size)
        self.endpoint = stack.udp.bind(0, 0)
        self.endpoint.on_error = self._icmp_error
        self.endpoint.on_receive = lambda data, source, datagram: None
        self.port = self.BASE_PORT
        self.hops: list[dict] = []
        self.waiting: tuple[int, int, float] | None = None  # the probe in flight: (dst port, index, sent at)
        self.current: list[dict | None] = []
        self.reached = False
        self.done = False
        self.generation = 0
        self.send_error: str | None = None

    def start(self, now: float) -> None:
        self._send_hop(now)

    def _send_hop(self, now: float) -> None:
        self.current = [None] * self.probes
        self._send_probe(now, 0)

    def _send_probe(self, now: float, index: int) -> None:
        """One probe at a time, the next when this one is answered or timed out
        (`traceroute -N 1`): each probe gets its own round trip, and a hop's
        replies cannot share one receive pass and so one timestamp."""
        self.generation += 1
        generation = self.generation
        port = self.port
        self.port += 1
        self.waiting = (port, index, now)  # a reply after its probe's wait is ignored, as traceroute does
        try:
            self.endpoint.sendto(self.data, self.destination, port, now, ttl=self.ttl)
        except OSError as error:
            self.send_error = error.strerror or str(error)
            self._finish(now)
            return
        self.stack.call_at(now + self.wait, lambda when: self._probe_timeout(when, generation, index))

    def _icmp_error(self, message: IcmpMessage, quoted: QuotedDatagram, datagram: "Datagram", now: float) -> None:
        if self.done:
            return
        ports = quoted_ports(quoted.transport_bytes)
        if ports is None or self.waiting is None or self.waiting[0] != ports[1]:
            return
        _, index, sent = self.waiting
        self.waiting = None
        entry: dict[str, Any] = {"address": str(datagram.src), "rtt_ms": round((now - sent) * 1000.0, 3)}
        if message.type == DEST_UNREACH:
            if message.code == PORT_UNREACH:
                self.reached = self.reached or datagram.src == self.destination
            else:
                entry["mark"] = _TRACEROUTE_MARK.get(message.code, f"!<{message.code}>")
                self.reached = True  # traceroute stops after a hop reports unreachable
        self.current[index] = entry
        self._next_probe(now, index)

    def _probe_timeout(self, now: float, generation: int, index: int) -> None:
        if not self.done and generation == self.generation:
            self._next_probe(now, index)

    def _next_probe(self, now: float, index: int) -> None:
        if index + 1 < self.probes:
            self._send_probe(now, index + 1)
        else:
            self._complete_hop(now)

    def _complete_hop(self, now: float) -> None:
        responders = [probe["address"] for probe in self.current if probe is not None]
        self.hops.append({"hop": self.ttl, "address": responders[0] if responders else None, "probes": self.current})
        if self.reached or self.ttl >= self.max_hops:
            self._finish(now)
            return
        self.ttl += 1
        self._send_hop(now)

    def _finish(self, now: float) -> None:
        if self.done:
            return
        self.done = True
        self.generation += 1
        self.endpoint.close()
        self.on_done({
            "destination": str(self.destination),
            "max_hops": self.max_hops,
            "reached": bool(self.reached and self.hops and self.hops[-1]["address"] == str(self.destination)),
            "hops": self.hops,
            "send_error": self.send_error,
        })
