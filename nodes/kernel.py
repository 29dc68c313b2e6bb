"""The node process: one emulated host or router, its stack driven by a single-threaded loop.

Before changing this file, read docs/design.md (the node config, data-plane
framing, control channel), seeds 002/003 (NAPI, receive livelock) and
`nodes/stack.py`.

This is the only place in a node with I/O and a clock. Each loop pass:
poll the NIC sockets and the control socket once; a readable NIC's frames
go into its rx ring ("DMA"), and those that meet a full ring are dropped
(rx_missed_errors), as a NIC without flow control drops them; then one
NET_RX softirq round (`Stack.poll`, bounded by `netdev_budget`), due
timers, and the devices' tx queues flushed onto the wire as batches. While
frames wait in a ring the poll does not sleep, but control requests and
timers still get their turn between rounds: that is NAPI's promise. With
`net.core.napi = 0` every readable socket is drained and every frame
processed to completion as it arrives, so a flood can starve everything
else (the receive-livelock experiment, tests/integration/test_napi_flood.py).

Where the time of a ping goes (bench/node.py measures it; issue 11): per
hop, the same ZeroMQ hand-offs as a bare relay (application thread to I/O
thread to socket and back up on the other side: four context switches per
echo in the responder, its I/O thread alone ~30% of the responder's CPU,
mostly in the kernel's task switch) plus our Python per packet, ~10 us warm.
On the 2-vCPU VMs we run on, any code runs 3-10x slower after a few
milliseconds of doing something else (caches, branch predictors, vCPU
scheduling), so an idle node's packet costs ~100-150 us of CPU here: the
loop does not wait for anything, it runs cold. A perf profile of the
responder (cpu-clock, 2000 echoes every 2 ms): ~40% in the interpreter, ~17%
in the kernel for the main thread (poll, eventfd, task switch), ~31% in the
kernel for ZeroMQ's I/O thread, the rest in libzmq and libc. Less Python
per packet is the lever we have, and what the latency path does about it:

* the poll result says which socket is readable, so the first recv finds a
  message; before each further one the loop asks ZMQ_EVENTS (~1.5 us, ~1 us
  of which is pyzmq's option lookup) instead of ending every pass on a
  raised `zmq.Again` (~3.3 us warm); flags are plain ints, because
  `int & zmq.POLLIN` builds an `enum.IntFlag` (~2 us) per test;
* an echo request is answered from its own bytes (`wire.icmp.echo_reply_for`:
  the checksum verified, type and code zeroed, the checksum recomputed over
  the unchanged rest), an echo request is built without a message object,
  and IPv4 output writes the header in place (`wire.ipv4.build_header_into`);
* a lone frame leaves through `DataPort.send_frame` (pyzmq's backend send,
  no batch), the route cache and the neighbour's MAC are used inline;
* the bus devices receive and send their ROUTER's two parts by hand
  (`recv_multipart`/`send_multipart` built enum flags and lists per message).

What did not help, measured (a paced pyzmq echo over ipc, 1500 echoes
every 2 ms, CPU of the echo process): polling 1 or 3 items costs the same
as blocking in recv; ZMQ_IMMEDIATE and copy=False sends change nothing
measurable. Pinning the echo's main thread and ZeroMQ's I/O thread to one
vCPU (sched_setaffinity + ZMQ_THREAD_AFFINITY_CPU_ADD) halves a bare echo's
CPU (~50 against ~75-100 us: no cross-vCPU wake-ups), but pinning the
responder kernel alone in the real path did not help (130-165 against
120-200 us: it then shares its vCPU with the switch and ping's side), and a
placement policy for a whole emulation is a decision of its own. What is
left of the responder's CPU beyond the bare echo's is the interpreter
(~40% of its samples) running cold, and the I/O thread's hand-offs.

`python -m nodes.kernel CONFIG.json` starts one by hand; the launcher calls
`run(config)` in a process forked from its zygote.
"""
from __future__ import annotations

import contextlib
import errno
import functools
import gc
import json
import logging
import math
import os
import random
import socket
import sys
import time
from typing import Any

import zmq

from bus.runtime import EventLoop, Lifecycle, prepare_process
from bus.shaping import MAX_MTU, MIN_MTU
from bus.transport import BatchError, ControlServer, DataPort, Deferred, count_frames, unpack_frames

from .memnet import warm_up
from .nic import NetDevice
from .probes import PingSession, TracerouteSession
from .programs import ProgramService
from .route import Route
from .neigh import NeighParams
from .stack import Stack
from .sysctl import Sysctl
from .wire.addresses import IPv4Address, parse_cidr
from .wire.errors import WireError

log = logging.getLogger("netemu.kernel")

# A probe or ping never blocks the loop; the control reply is sent when it finishes.
MAX_PING_COUNT = 10_000
# With NAPI, messages read from one NIC per loop pass (each up to bus.transport.MAX_BATCH_BYTES):
# enough to keep the wire's queue short under any flood, few enough that control and
# timers still get their turn between passes.
NAPI_MESSAGES_PER_PASS = 64
_EVENTS = int(zmq.EVENTS)  # plain ints: `int & zmq.POLLIN` builds an enum.IntFlag (~2 us a test)
_POLLIN = int(zmq.POLLIN)
_NOBLOCK = int(zmq.NOBLOCK)


class Kernel:
    """A node's kernel: the stack, its NICs on the bus, the control endpoint, the loop."""

    def __init__(self, config: dict[str, Any], lifecycle: Lifecycle | None = None,
                 context: zmq.Context | None = None) -> None:
        self.config = config
        self.name = str(config["name"])
        self.kind = str(config.get("kind", "host"))
        self.lifecycle = lifecycle
        self.clock = time.monotonic
        self.started = self.clock()
        self.context = context if context is not None else zmq.Context()
        self._own_context = context is None
        knobs = {"net.ipv4.ip_forward": 1 if self.kind == "router" else 0}
        knobs.update(config.get("sysctl") or {})
        self.stack = Stack(self.name, Sysctl(knobs), random.Random(config.get("seed")))
        self.hosts: dict[str, str] = dict(config.get("hosts") or {})  # extra names, before the file's
        self.hosts_file: str | None = config.get("hosts_file")
        self.ports: dict[str, DataPort] = {}
        self._wired: list[tuple[DataPort, NetDevice]] = []  # (port, device) pairs: the tx flush walks these
        self._stack_deadline: float | None = None  # stack.next_timer() as the last pass left it
        self.loop = EventLoop(self.clock)
        self._configure(config)
        self._stack_deadline = self.stack.next_timer()
        self.programs = ProgramService(self.stack, self.loop, self.clock, config.get("syscall"))
        self.control = ControlServer(self.context, config["control"], self._handlers())
        self.loop.add_reader(self.control.socket, self.control.handle_pending)
        self.loop.add_end_of_pass(self._softirq)
        self.loop.add_end_of_pass(self.programs.service)
        self.loop.add_end_of_pass(self._after_service)
        self.loop.call_every(1.0, self._keepalive)
        if lifecycle is not None:
            self.loop.attach_lifecycle(lifecycle)

    # ---------------------------------------------------------------- configure

    def _configure(self, config: dict[str, Any]) -> None:
        stack = self.stack
        now = self.clock()
        for spec in config.get("interfaces") or []:
            options = {key: spec[key] for key in ("rx_ring_size", "txqueuelen", "weight") if key in spec}
            device = stack.add_device(spec["name"], spec["mac"], mtu=int(spec.get("mtu", 1500)), **options)
            for cidr in ([spec["ip"]] if spec.get("ip") else []) + list(spec.get("addresses") or []):
                address, prefix = parse_cidr(cidr)
                stack.add_address(device.name, address, prefix)
            endpoint = spec.get("endpoint")
            if endpoint:
                port = DataPort(self.context, endpoint, spec.get("attachment") or f"{self.name}:{device.name}", now=now)
                self.ports[device.name] = port
                self._wired.append((port, device))
                self.loop.add_reader(port.socket, functools.partial(self._nic_readable, port, device))
        for route in config.get("routes") or []:
            stack.add_route(route)
        for entry in config.get("arp") or []:
            stack.add_neighbour(entry["ip"], entry["mac"], entry.get("dev"), now)
        # No gratuitous ARP when the node comes up, as Linux with its default
        # arp_notify = 0 (with 1, only a later `ip link set up` announces): a plan
        # gives a restarted node the MAC it had, so no neighbour needs telling, and
        # 500 nodes announcing themselves at once cost 250k broadcast deliveries
        # (about half the start time of 500 nodes).

    # ---------------------------------------------------------------- data path

    def _nic_readable(self, port: DataPort, device: NetDevice) -> None:
        """The NIC's "interrupt": move frames from the wire into the rx ring.

        With NAPI, read at most `NAPI_MESSAGES_PER_PASS` messages: frames that
        find the ring full are dropped and counted as rx_missed_errors, as a
        NIC drops what arrives at a full ring. Reading on while dropping keeps
        the wire's queue short, so a flooded node's memory and the latency
        behind a flood stay bounded (ZeroMQ would otherwise queue up to its
        high-water mark of large batches, hundreds of MiB, seconds of backlog).
        Without NAPI, drain everything and process each message at once.
        """
        stack = self.stack
        recv = port.socket.recv
        counters = port.rx
        stats = device.stats
        if not stack.napi.enabled:
            self._receive_to_completion(port, device)
            return
        ring = device.rx_ring
        events = port.socket.get
        for index in range(NAPI_MESSAGES_PER_PASS):
            # The poll said readable, so the first recv finds a message; before each
            # further one ask ZMQ_EVENTS (~1.5 us) instead of letting recv raise
            # zmq.Again (~3.3 us warm, more cold) at the end of every pass.
            if index and not events(_EVENTS) & _POLLIN:
                break
            try:
                message = recv(_NOBLOCK)
            except zmq.Again:
                break
            if not message:
                continue
            try:
                if len(ring) >= device.rx_ring_size:
                    dropped = count_frames(message)
                    stats.rx_missed_errors += dropped
                    counters["rx_packets"] += dropped
                    counters["rx_bytes"] += len(message) - 2 * dropped
                    continue
                frames = unpack_frames(message)
            except BatchError:
                counters["rx_malformed_batches"] += 1
                stats.rx_errors += 1
                continue
            counters["rx_packets"] += len(frames)
            counters["rx_bytes"] += len(message) - 2 * len(frames)
            stack.receive_many(device, frames)
            if len(frames) == 1:
                # A lone frame is what an idle sender flushes: do not ask ZeroMQ for more
                # (~1.5 us warm, several cold, on every hop of a ping); if more came, the
                # next poll says so at once. Batches (load) keep the loop going.
                break

    def _receive_to_completion(self, port: DataPort, device: NetDevice) -> None:
        """Without NAPI: every readable message processed as it arrives, a ring's worth at a time."""
        stack = self.stack
        recv = port.socket.recv
        counters = port.rx
        size = device.rx_ring_size
        if stack.rx_pending:
            stack.poll(self.clock())  # what NAPI left in the ring when it was switched off
        events = port.socket.get
        first = True
        while True:
            if not first and not events(_EVENTS) & _POLLIN:
                return
            first = False
            try:
                message = recv(_NOBLOCK)
            except zmq.Again:
                return
            if not message:
                continue
            try:
                frames = unpack_frames(message)
            except BatchError:
                counters["rx_malformed_batches"] += 1
                device.stats.rx_errors += 1
                continue
            counters["rx_packets"] += len(frames)
            counters["rx_bytes"] += len(message) - 2 * len(frames)
            for start in range(0, len(frames), size):
                stack.receive_many(device, frames[start:start + size] if len(frames) > size else frames)
                stack.poll(self.clock())
            self._flush_tx()

    def _softirq(self) -> None:
        """End of every loop pass: timers due, one NAPI round, transmit queues to the wire."""
        stack = self.stack
        now = self.clock()
        # The stack's earliest deadline as the last pass left it (asked once a pass): a
        # timer armed since, by a control request, is seen at the end of this pass.
        next_timer = self._stack_deadline
        if next_timer is not None and next_timer <= now:
            stack.tick(now)
        if stack.napi.poll_list:  # stack.rx_pending without its two property calls
            stack.poll(now)
        self._flush_tx()
        self._stack_deadline = stack.next_timer()

    def _after_service(self) -> None:
        """After sockfs: what programs made TCP send leaves now; timers it armed bound the sleep."""
        self._flush_tx()
        self._stack_deadline = self.stack.next_timer()

    def _flush_tx(self) -> None:
        for port, device in self._wired:
            queue = device.tx_queue
            if queue:
                if len(queue) == 1:  # the latency path: one frame, no batch to build
                    dropped = port.send_frame(queue.popleft())
                else:
                    dropped = port.send_frames(device.tx_drain())
                if dropped:
                    device.stats.tx_dropped += dropped

    def _keepalive(self) -> None:
        for port in self.ports.values():
            port.keepalive(self.clock())

    # --------------------------------------------------------------------- loop

    def serve(self) -> None:
        """Run until shutdown: the poll sleeps only when no frame waits in any ring."""
        loop = self.loop
        poll_list = self.stack.napi.poll_list  # non-empty = stack.rx_pending
        clock = self.clock
        loop.running = True
        while loop.running:
            if poll_list:
                timeout = 0
            else:
                now = clock()
                timeout = loop.next_timeout_ms(now)
                next_timer = self._stack_deadline
                if next_timer is not None:
                    timeout = min(timeout, max(0, math.ceil((next_timer - now) * 1000)))
            loop.run_once(timeout)

    def close(self) -> None:
        for port in self.ports.values():
            port.close()
        self.control.close()
        self.programs.close()
        syscall = self.config.get("syscall")
        if syscall and os.path.exists(syscall):
            os.unlink(syscall)
        if self._own_context:
            self.context.term()

    # ------------------------------------------------------------------ control

    def _handlers(self) -> dict[str, Any]:
        return {
            "status": self.op_status,
            "shutdown": self.op_shutdown,
            "interfaces": self.op_interfaces,
            "neigh": lambda: self.stack.neigh.table(self.clock()),
            "neigh_add": self.op_neigh_add,
            "neigh_del": self.op_neigh_del,
            "neigh_flush": self.op_neigh_flush,
            "routes": lambda table="main": self.stack.fib.routes(table),
            "route_cache": self.op_route_cache,
            "route_add": self.op_route_add,
            "route_del": self.op_route_del,
            "counters": self.op_counters,
            "sysctl": self.op_sysctl,
            "link_set": self.op_link_set,
            "addr_add": self.op_addr_add,
            "addr_del": lambda dev, ip: self.stack.remove_address(dev, parse_cidr(ip)[0]),
            "resolve": lambda name: str(self.resolve(name)),
            "ping": self.op_ping,
            "traceroute": self.op_traceroute,
            "sockets": self.programs.table,
            "reassembly": lambda: self.stack.ipv4.reassembly.table(self.clock()),
            "filter_set": self.op_filter_set,
            "udp_bind": self.op_udp_bind,
            "udp_send": self.op_udp_send,
            "udp_recv": self.op_udp_recv,
            "udp_close": self.op_udp_close,
        }

    def op_status(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "kind": self.kind,
            "pid": os.getpid(),
            "uptime": round(self.clock() - self.started, 3),
            "forwarding": bool(self.stack.sysctl["net.ipv4.ip_forward"]),
            "napi": self.stack.napi.enabled,
            "interfaces": [name for name in self.stack.devices if name != "lo"],
            "attached": {name: port.attachment for name, port in self.ports.items()},
        }

    def op_shutdown(self) -> str:
        if self.lifecycle is not None:
            self.lifecycle.request_stop("shutdown requested")
        else:
            self.loop.stop()
        return "bye"

    def op_interfaces(self) -> list[dict[str, Any]]:
        table = self.stack.interfaces()
        for entry in table:
            port = self.ports.get(entry["name"])
            if port is not None:
                entry["attachment"] = port.attachment
                entry["endpoint"] = port.endpoint
        return table

    def op_neigh_add(self, ip: str, mac: str, dev: str | None = None) -> None:
        self.stack.add_neighbour(ip, mac, dev, self.clock())

    def op_neigh_del(self, ip: str, dev: str) -> None:
        self.stack.delete_neighbour(ip, dev, self.clock())

    def op_neigh_flush(self, dev: str | None = None) -> None:
        self.stack.flush_neighbours(dev, self.clock())

    def op_route_cache(self) -> dict[str, Any]:
        return {"entries": self.stack.route_cache.show(self.clock()), "stats": self.stack.route_cache.stats()}

    def op_route_add(self, dst: str, gateway: str | None = None, dev: str | None = None, metric: int = 0,
                     src: str | None = None, type: str = "unicast", replace: bool = False) -> dict[str, Any]:
        route = Route.from_config({"dst": dst, "gateway": gateway, "dev": dev, "metric": metric, "src": src, "type": type})
        stored = self.stack.fib.replace(route) if replace else self.stack.fib.add(route)
        return {"route": str(stored)}

    def op_route_del(self, dst: str, gateway: str | None = None, dev: str | None = None,
                     metric: int | None = None) -> dict[str, Any]:
        removed = self.stack.delete_route({"dst": dst, "gateway": gateway, "dev": dev, "metric": metric})
        return {"route": str(removed)}

    def op_counters(self) -> dict[str, Any]:
        counters = self.stack.counters()
        counters["ports"] = {name: dict(port.counters) for name, port in self.ports.items()}
        counters["control"] = {"requests": self.control.requests, "errors": self.control.errors}
        counters["programs"] = self.programs.counters()
        return counters

    def op_sysctl(self, name: str | None = None, value: Any = None) -> Any:
        """`sysctl -a`, `sysctl NAME` or `sysctl -w NAME=VALUE`."""
        sysctl = self.stack.sysctl
        if name is None:
            return dict(sysctl)
        if value is None:
            if name not in sysctl:
                raise KeyError(f"unknown sysctl {name}")
            return sysctl[name]
        canonical = sysctl.set(name, value)
        self._apply_sysctl(name)
        return canonical

    def _apply_sysctl(self, name: str) -> None:
        """Propagate a knob changed at run time to the object that caches it."""
        stack = self.stack
        sysctl = stack.sysctl
        if name == "net.core.netdev_budget":
            stack.napi.netdev_budget = sysctl[name]
        elif name == "net.core.napi":
            stack.napi.enabled = bool(sysctl[name])
        elif name == "net.core.dev_weight":
            for device in stack.devices.values():
                device.weight = sysctl[name]
        elif name.startswith("net.ipv4.neigh.default."):
            stack.neigh.params = NeighParams.from_sysctl(sysctl)
        elif name.startswith("net.ipv4.ipfrag_"):
            reassembly = stack.ipv4.reassembly
            reassembly.ipfrag_time = sysctl["net.ipv4.ipfrag_time"]
            reassembly.ipfrag_high_thresh = sysctl["net.ipv4.ipfrag_high_thresh"]
            reassembly.ipfrag_low_thresh = sysctl["net.ipv4.ipfrag_low_thresh"]
        elif name == "net.ipv4.route.max_size":
            stack.route_cache.max_size = sysctl[name]
        elif name == "net.ipv4.route.mtu_expires":
            stack.route_cache.mtu_expires = float(sysctl[name])

    def op_link_set(self, dev: str, up: bool | None = None, mtu: int | None = None,
                    txqueuelen: int | None = None) -> dict[str, Any]:
        stack = self.stack
        device = stack.devices.get(dev)
        if device is None:
            raise OSError(errno.ENODEV, f"Cannot find device \"{dev}\"")
        if mtu is not None:
            if not MIN_MTU <= int(mtu) <= MAX_MTU:
                raise OSError(errno.EINVAL, f"Invalid argument: mtu out of range {MIN_MTU}..{MAX_MTU}")
            device.mtu = int(mtu)
            stack.fib.set_mtu(dev, int(mtu))
        if txqueuelen is not None:
            device.txqueuelen = int(txqueuelen)
        if up is not None:
            stack.set_link(dev, bool(up), self.clock())
        return device.describe()

    def op_addr_add(self, dev: str, ip: str) -> None:
        address, prefix = parse_cidr(ip)
        if dev not in self.stack.devices:
            raise OSError(errno.ENODEV, f"Cannot find device \"{dev}\"")
        self.stack.add_address(dev, address, prefix)  # no gratuitous ARP: Linux sends none for a new address

    def resolve(self, name: str) -> IPv4Address:
        """A dotted quad, or a name from the emulation's hosts file (getaddrinfo's order)."""
        text = str(name)
        try:
            return IPv4Address(text)
        except WireError:
            pass
        address = self.hosts.get(text)
        if address is None and self.hosts_file:
            address = lookup_hosts_file(self.hosts_file, text)
        if address is None and text.casefold() == "localhost":
            address = "127.0.0.1"
        if address is not None:
            with contextlib.suppress(WireError):
                return IPv4Address(address)
        raise OSError(socket.EAI_NONAME, f"{text}: Name or service not known")

    def op_ping(self, dst: str, count: int = 3, size: int = 56, interval: float = 1.0, timeout: float = 2.0,
                ttl: int | None = None, dont_fragment: bool = False) -> Deferred:
        """`ping -c COUNT -s SIZE -i INTERVAL -W TIMEOUT -t TTL [-M do] DST`; replies when done."""
        if not 1 <= int(count) <= MAX_PING_COUNT:
            raise ValueError(f"count must be 1..{MAX_PING_COUNT}")
        destination = self.resolve(dst)
        deferred = Deferred()
        session = PingSession(self.stack, destination, deferred.resolve, count=int(count), size=int(size),
                              interval=float(interval), timeout=float(timeout), ttl=ttl,
                              identifier=os.getpid(), dont_fragment=bool(dont_fragment))
        session.start(self.clock())
        return deferred

    def op_traceroute(self, dst: str, max_hops: int = 30, probes: int = 3, wait: float = 2.0) -> Deferred:
        """`traceroute -m MAX_HOPS -q PROBES -w WAIT DST` (UDP probes); replies when done."""
        destination = self.resolve(dst)
        deferred = Deferred()
        session = TracerouteSession(self.stack, destination, deferred.resolve, max_hops=int(max_hops),
                                    probes=int(probes), wait=float(wait))
        session.start(self.clock())
        return deferred

    def op_filter_set(self, blocked: list[str]) -> list[str]:
        """Drop every datagram from or to these addresses (a partition); an empty list heals."""
        self.stack.ipv4.blocked = frozenset(int(IPv4Address(address)) for address in blocked)
        return sorted(str(IPv4Address.from_wire(a)) for a in self.stack.ipv4.blocked)

    # Minimal UDP access over control, for scenarios until the socket API exists.

    def op_udp_bind(self, port: int = 0, address: str = "0.0.0.0") -> dict[str, Any]:
        endpoint = self.stack.udp.bind(IPv4Address(address), int(port))
        return {"address": str(endpoint.address), "port": endpoint.port}

    def op_udp_send(self, dst: str, port: int, data: bytes, sport: int = 0) -> dict[str, Any]:
        udp = self.stack.udp
        endpoint = udp.lookup(0, int(sport)) if sport else None
        temporary = endpoint is None
        if temporary:
            endpoint = udp.bind(0, 0)
        try:
            endpoint.sendto(bytes(data), self.resolve(dst), int(port), self.clock())
        finally:
            if temporary:
                endpoint.close()
        return {"sport": endpoint.port}

    def op_udp_recv(self, port: int, address: str = "0.0.0.0") -> list[dict[str, Any]]:
        endpoint = self.stack.udp.bindings.get((IPv4Address(address), int(port)))
        if endpoint is None:
            raise OSError(errno.EBADF, f"no UDP socket bound to {address}:{port}")
        received = []
        while (item := endpoint.recvfrom()) is not None:
            data, (host, source_port) = item
            received.append({"data": data, "from": host, "port": source_port})
        return received

    def op_udp_close(self, port: int, address: str = "0.0.0.0") -> None:
        endpoint = self.stack.udp.bindings.get((IPv4Address(address), int(port)))
        if endpoint is None:
            raise OSError(errno.EBADF, f"no UDP socket bound to {address}:{port}")
        endpoint.close()


def lookup_hosts_file(path: str, name: str) -> str | None:
    """The address of `name` in an /etc/hosts-format file, or None.

    As glibc's files backend: read at every lookup, `#` starts a comment,
    names and aliases match without regard to case, the first line wins.
    """
    wanted = name.casefold()
    try:
        with open(path, encoding="utf-8") as handle:
            for line in handle:
                fields = line.partition("#")[0].split()
                if len(fields) >= 2 and any(alias.casefold() == wanted for alias in fields[1:]):
                    return fields[0]
    except OSError:
        return None
    return None


def zygote_warm_up() -> dict[str, int]:
    """Called by control/zygote.py before it forks any node: see nodes/memnet.py `warm_up`."""
    return warm_up()


def run(config: dict[str, Any]) -> int:
    """Entry point of a node process (called in a forked child or by `main`)."""
    lifecycle = prepare_process(config)
    kernel = Kernel(config, lifecycle)
    # What exists now lives as long as the node: keep the collector's full
    # passes (pauses of milliseconds in a big heap) from walking it again.
    gc.freeze()
    log.info("%s: up with %d interface(s)", kernel.name, len(kernel.ports))
    try:
        kernel.serve()
    finally:
        kernel.close()
        lifecycle.restore()
    return 0


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        print("usage: python -m nodes.kernel CONFIG.json", file=sys.stderr)
        return 2
    with open(args[0], encoding="utf-8") as handle:
        config = json.load(handle)
    return run(config)


if __name__ == "__main__":
    sys.exit(main())
