"""The stack under test and its wire: one `nodes.stack.Stack` on a fake clock, frames in and out.

The stack has eth0 192.168.0.1/24 and reaches the script's peer 192.0.2.1 through the
gateway 192.168.0.2, a static neighbour (so no ARP ever crosses the wire). Injected frames
come from the gateway's MAC; what the stack transmits is taken off eth0's tx queue, stamped
with the time it left, and decoded with nodes.wire, as memnet moves frames between stacks.

Script time 0 is START on the stack's clock. The clock only moves forward, and only to the
next timer deadline or to the time the script asks for: no real time passes.
"""
from __future__ import annotations

import random
from collections import deque
from dataclasses import dataclass
from typing import Callable

from nodes.stack import Stack
from nodes.sysctl import Sysctl
from nodes.wire.addresses import IPv4Address, MacAddress
from nodes.wire.errors import WireError
from nodes.wire.ethernet import ETH_P_IP, EthernetHeader
from nodes.wire.icmp import IcmpMessage
from nodes.wire.ipv4 import IPPROTO_ICMP, IPPROTO_TCP, IPv4Header
from nodes.wire.tcp import TcpHeader, checksum_ok

LOCAL_IP = IPv4Address("192.168.0.1")
GATEWAY_IP = IPv4Address("192.168.0.2")
REMOTE_IP = IPv4Address("192.0.2.1")
LOCAL_MAC = MacAddress("02:00:00:00:00:01")
GATEWAY_MAC = MacAddress("02:00:00:00:00:02")
START = 1000.0
_ETH_IP = ETH_P_IP.to_bytes(2, "big")


@dataclass(slots=True)
class Sent:
    """A frame the stack transmitted, decoded: `tcp` (with `payload`) or `icmp`, or neither
    (`problem` says why: not IPv4, bad checksum, wrong addresses...)."""

    time: float  # script time
    frame: bytes
    ip: IPv4Header | None = None
    tcp: TcpHeader | None = None
    payload: bytes = b""
    icmp: IcmpMessage | None = None
    problem: str = ""


class Harness:
    """One stack, its clock, and the frames it sent that the script has not looked at yet."""

    def __init__(self, sysctl: dict[str, object] | None = None, mtu: int = 1500, seed: int = 13) -> None:
        self.now = START
        self.stack = stack = Stack("drill", Sysctl(sysctl or {}), random.Random(seed))
        self.device = stack.add_device("eth0", LOCAL_MAC, mtu=mtu)
        stack.add_address("eth0", str(LOCAL_IP), 24)
        stack.add_route({"dst": "192.0.2.0/24", "gateway": str(GATEWAY_IP)})
        stack.add_neighbour(str(GATEWAY_IP), str(GATEWAY_MAC), "eth0", self.now)
        self.sent: deque[Sent] = deque()
        self.identification = 0
        # Called after every step of the stack (a frame in, a timer): blocked calls retry.
        # Returns True when it did something that may have sent frames.
        self.on_step: Callable[[], bool] = lambda: False

    @property
    def time(self) -> float:
        """The script's time now."""
        return self.now - START

    # ---------------------------------------------------------------- in

    def inject_ip(self, protocol: int, payload: bytes, src: IPv4Address = REMOTE_IP) -> None:
        """An IPv4 datagram from `src` to us arrives on eth0 from the gateway, now."""
        self.identification = (self.identification + 1) & 0xFFFF
        header = IPv4Header(src=src, dst=LOCAL_IP, protocol=protocol, ttl=64,
                            identification=self.identification, dont_fragment=True)
        frame = bytes(LOCAL_MAC) + bytes(GATEWAY_MAC) + _ETH_IP + header.build(payload)
        self.stack.receive("eth0", frame)
        self.settle()

    def inject_tcp(self, header: TcpHeader, payload: bytes) -> None:
        self.inject_ip(IPPROTO_TCP, header.build(payload, int(REMOTE_IP), int(LOCAL_IP)))

    # ---------------------------------------------------------------- time

    def settle(self) -> None:
        """Everything that happens at this instant: softirq rounds, blocked calls, transmissions."""
        stack = self.stack
        while True:
            while stack.rx_pending:
                stack.poll(self.now)
            self._collect()
            if not self.on_step():
                if not stack.rx_pending:
                    self._collect()
                    return

    def advance(self, until: float, *, stop_on_send: bool = False) -> None:
        """Run timers up to script time `until` (stopping at the first frame sent if asked)."""
        deadline_now = START + until
        self.settle()
        while not (stop_on_send and self.sent):
            deadline = self.stack.next_timer()
            if deadline is None or deadline > deadline_now:
                break
            self.now = max(self.now, deadline)
            self.stack.tick(self.now)
            self.settle()
        if not (stop_on_send and self.sent) and self.now < deadline_now:
            self.now = deadline_now
            self.settle()

    # ---------------------------------------------------------------- out

    def _collect(self) -> None:
        for frame in self.device.tx_drain():
            self.sent.append(decode(frame, self.time))


def decode(frame: bytes, time: float) -> Sent:
    """A transmitted frame taken apart, with what is wrong with it in `problem`."""
    sent = Sent(time, frame)
    try:
        ethernet = EthernetHeader.parse(frame)
        if ethernet.ethertype != ETH_P_IP:
            sent.problem = f"ethertype {ethernet.ethertype:#06x}, not IPv4"
            return sent
        if ethernet.dst != GATEWAY_MAC or ethernet.src != LOCAL_MAC:
            sent.problem = f"Ethernet {ethernet.src} > {ethernet.dst}, not {LOCAL_MAC} > {GATEWAY_MAC}"
        datagram = frame[ethernet.header_length:]
        ip = sent.ip = IPv4Header.parse(datagram, verify_checksum=True)
        body = datagram[ip.header_length : ip.total_length]
        if ip.src != LOCAL_IP:
            sent.problem = sent.problem or f"IP source {ip.src}, not {LOCAL_IP}"
        if ip.protocol == IPPROTO_TCP:
            if not checksum_ok(body, int(ip.src), int(ip.dst)):
                sent.problem = sent.problem or "bad TCP checksum"
            sent.tcp = TcpHeader.parse(body)
            sent.payload = bytes(body[sent.tcp.header_length:])
            if ip.dst != REMOTE_IP:
                sent.problem = sent.problem or f"IP destination {ip.dst}, not {REMOTE_IP}"
        elif ip.protocol == IPPROTO_ICMP:
            sent.icmp = IcmpMessage.parse(body, verify_checksum=True)
        else:
            sent.problem = sent.problem or f"IP protocol {ip.protocol}"
    except WireError as error:
        sent.problem = f"malformed: {error}"
    return sent
