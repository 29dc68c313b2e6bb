"""The bus device: its sockets, its port table and the data path every kind shares.

Before changing this file, read docs/design.md ("Bus device", "Data plane
framing", "Control channel", and "Measured baselines" for why the loop
drains with NOBLOCK and forwards whole batches).

A device is one single-threaded process. Per loop pass it polls once, drains
its ROUTER data socket with NOBLOCK (each message: one NIC's batch of frames),
runs each frame through

    ingress checks (runt -> malformed, > MTU+14/18 -> mtu, port down)
    -> ingress shaper (node -> device direction; skipped when passthrough)
    -> capture (the frame as the segment carried it, once per device: after
       ingress shaping, so frames lost or delayed on the way in appear as
       carried; before egress, so a flood to N ports is one record)
    -> `forward()` of the subclass (hub: everyone else; switch: FDB decision)
    -> egress shaper of each output port (device -> node direction)
    -> the port's output batch, flushed once at the end of the pass.

A port is named by its attachment (the NIC's ZeroMQ routing id, ``h1:eth0``)
and created on hello or first frame with the config's `defaults`, or
pre-declared in `config["ports"]`. Uplinks (`config["uplinks"]`) are ports
whose far end is another device: we connect a DEALER to it exactly as a NIC
would. `config["data_tcp"]` binds a second ROUTER for peers on other
machines (a port answers through the socket it last spoke on); ports named
in `config["trunks"]` join the per-machine devices of one segment: split
horizon (trunk to trunk never) and not captured. Every tcp:// socket is
CURVE when the config has keys (bus/curve.py; docs/design.md, "Cross-machine
links: CURVE and trunks").

Who does what:

* bus/port.py -- `Port`: link parameters, shapers, output batch, the length
  checks and the counters (`ip -s link` names, drops split by reason);
* bus/capture.py -- `Capture`: the pcap file of a running capture;
* bus/device_control.py -- `DeviceControl`: the control ops (`status`,
  `stats`, `set_port`, `capture_start`...), mixed into `Device`;
* this module -- `Device`: sockets, creating/attaching/detaching ports,
  uplinks, the data path above, lifecycle; `run_device` and `main`, the
  entry points of every kind (bus/hub.py, bus/switch.py, bus/p2p.py).

`Port`, `PORT_COUNTERS` and `derive_seed` stay importable from here.
"""
from __future__ import annotations

import errno
import json
import logging
import sys
import time
from typing import Any, Callable

import zmq

from . import curve, ether
from .capture import FLUSH_INTERVAL as CAPTURE_FLUSH_INTERVAL
from .capture import Capture
from .device_control import DeviceControl
from .port import PORT_COUNTERS, Port, derive_seed
from .runtime import EventLoop, Lifecycle, prepare_process
from .shaping import LinkParams
from .tap import TapLink, attach_tap
from .transport import (DATA_HIGH_WATER_MARK, BatchError, ControlServer, FrameBatcher, cleanup_endpoint, count_frames,
                        holds_one_frame, unpack_frames)

__all__ = ["CAPTURE_FLUSH_INTERVAL", "PORT_COUNTERS", "RECEIVE_BUDGET", "UPLINK_KEEPALIVE", "Device", "Port",
           "derive_seed", "main", "run_device"]

log = logging.getLogger("netemu.bus")

# Messages drained per readable event before timers and control get a turn (NAPI-like budget).
RECEIVE_BUDGET = 256
_EVENTS = int(zmq.EVENTS)  # plain ints: `int & zmq.POLLIN` builds an enum.IntFlag (~2 us a test)
_POLLIN = int(zmq.POLLIN)
_NOBLOCK = int(zmq.NOBLOCK)
_SNDMORE_NOBLOCK = int(zmq.SNDMORE) | int(zmq.NOBLOCK)
UPLINK_KEEPALIVE = 5.0


def _frame_count(message: bytes) -> int:
    """How many frames a message carries (a malformed one counts as one), for drop counters."""
    try:
        return count_frames(message)
    except BatchError:
        return 1


class Device(DeviceControl):
    """The common machinery; subclasses say where frames go by overriding `forward`."""

    kind = "device"
    max_ports: int | None = None

    def __init__(self, config: dict[str, Any], context: zmq.Context | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.config = config
        self.name = str(config.get("name", self.kind))
        self.clock = clock
        self.seed = int(config.get("seed") or 0)
        self.defaults = LinkParams.from_canonical(config.get("defaults") or {})
        self.context = context if context is not None else zmq.Context()
        self.loop = EventLoop(clock)
        self.lifecycle: Lifecycle | None = None
        self.ports: dict[bytes, Port] = {}
        self.attached: list[Port] = []  # ports currently reachable, in attach order (flood order)
        # Split horizon: what came in on a trunk floods only to these, the attached non-trunk ports.
        self.access: list[Port] = []
        self.trunks = frozenset(str(name) for name in config.get("trunks") or ())
        self.keys = curve.CurveKeys.from_dict(config["curve"]) if config.get("curve") else None
        self.capture: Capture | None = None
        self.tap: TapLink | None = None  # a segment bridged to a Linux TAP device (bus/tap.py)
        self.counters = {"rx_messages": 0, "malformed_batches": 0, "dropped_unknown_port": 0,
                         "refused_ports": 0}
        self._refused: set[bytes] = set()
        self._dirty: list[Port] = []
        self._wall_offset_ns = time.time_ns() - int(clock() * 1e9)
        self.data_endpoint = config["data"]
        self.control_endpoint = config["control"]
        self.data, self.data_endpoint = self._router(self.data_endpoint)
        self.data_tcp: zmq.Socket | None = None  # a second ROUTER for NICs and devices on other machines
        self.data_tcp_endpoint: str | None = None
        self.control: ControlServer | None = None
        try:
            if config.get("data_tcp"):
                self.data_tcp, self.data_tcp_endpoint = self._router(config["data_tcp"])
            self.control = ControlServer(self.context, self.control_endpoint, self._control_handlers(), keys=self.keys)
            for name, overrides in (config.get("ports") or {}).items():
                self._create_port(name, self.defaults.replace(**(overrides or {})))
            for uplink in config.get("uplinks") or []:
                self._create_uplink(uplink)
            if config.get("capture"):
                self.capture_start(config["capture"])
            if config.get("tap"):
                self.tap = attach_tap(self, config["tap"])
        except BaseException:
            self.close()
            raise
        self.loop.add_reader(self.data, self._on_data)
        if self.data_tcp is not None:
            data_tcp = self.data_tcp
            self.loop.add_reader(data_tcp, lambda: self._on_data(data_tcp))
        self.loop.add_reader(self.control.socket, self.control.handle_pending)
        self.loop.add_end_of_pass(self._flush)
        self.started = clock()

    def _router(self, endpoint: str) -> tuple[zmq.Socket, str]:
        """A data ROUTER bound to `endpoint` (a CURVE server when tcp:// and keyed, bus/curve.py),
        and the endpoint it is bound to (a tcp port 0 resolved)."""
        data = self.context.socket(zmq.ROUTER)
        data.setsockopt(zmq.LINGER, 0)
        data.setsockopt(zmq.SNDHWM, DATA_HIGH_WATER_MARK)
        data.setsockopt(zmq.RCVHWM, DATA_HIGH_WATER_MARK)
        # Sends to a gone peer or into a full queue must fail loudly so we can count them.
        data.setsockopt(zmq.ROUTER_MANDATORY, 1)
        # A restarted node reconnects under the same name: let the new pipe take over.
        data.setsockopt(zmq.ROUTER_HANDOVER, 1)
        try:
            return data, curve.bind(data, endpoint, self.keys)
        except BaseException:
            data.close(linger=0)
            raise

    # ------------------------------------------------------------------ ports

    def _create_port(self, name: str, params: LinkParams, identity: bytes | None = None,
                     via: zmq.Socket | None = None) -> Port | None:
        identity = name.encode() if identity is None else identity
        if self.max_ports is not None and len(self.ports) >= self.max_ports:
            if identity not in self._refused:
                self._refused.add(identity)
                self.counters["refused_ports"] += 1
                log.warning("%s: refusing port %s: a %s has at most %d ports", self.name, name, self.kind, self.max_ports)
            return None
        port = Port(name, params, self.seed)
        port.identity = identity
        port.trunk = name in self.trunks
        port.out = FrameBatcher(self._router_send(port, self.data if via is None else via))
        self.ports[identity] = port
        return port

    def _router_send(self, port: Port, data: zmq.Socket) -> Callable[[bytes], bool]:
        """The send of a port reached through ROUTER `data` (the ipc one or `data_tcp`)."""
        port.via = data
        identity_frame = port.identity
        send_part = data.send

        def send(message: bytes) -> bool:
            # send_multipart's two sends by hand, with plain-int flags: its type checks
            # and its `zmq.SNDMORE | flags` (an enum.IntFlag built per message) cost
            # ~5 us a message on the latency path. A ROUTER refuses (HWM or
            # ROUTER_MANDATORY) at the identity part, before anything is queued.
            try:
                send_part(identity_frame, _SNDMORE_NOBLOCK)
                send_part(message, _NOBLOCK, copy=False)
                return True
            except zmq.Again:
                port.send_failure = "queue"
            except zmq.ZMQError as exc:
                port.send_failure = "unreachable" if exc.errno == errno.EHOSTUNREACH else "queue"
            return False

        return send

    def _create_uplink(self, uplink: dict[str, Any]) -> None:
        """A port whose far end is another device's data endpoint; we dial it like a NIC."""
        name = uplink["attachment"]
        params = self.defaults.replace(**{k: v for k, v in uplink.items() if k not in ("attachment", "endpoint")})
        port = self._create_port(name, params)
        if port is None:
            raise ValueError(f"{self.name}: no room for uplink {name}")
        socket = self.context.socket(zmq.DEALER)
        socket.setsockopt(zmq.ROUTING_ID, port.identity)
        socket.setsockopt(zmq.LINGER, 0)
        socket.setsockopt(zmq.SNDHWM, DATA_HIGH_WATER_MARK)
        socket.setsockopt(zmq.RCVHWM, DATA_HIGH_WATER_MARK)
        curve.secure_client(socket, uplink["endpoint"], self.keys)  # a far device's data_tcp
        socket.connect(uplink["endpoint"])
        port.uplink = socket
        port.via = None

        def send(message: bytes) -> bool:
            try:
                socket.send(message, zmq.NOBLOCK, copy=False)
                return True
            except zmq.Again:
                port.send_failure = "queue"
                return False

        port.out = FrameBatcher(send)
        socket.send(b"", zmq.NOBLOCK)  # hello: the far device attaches us as one of its ports
        self.loop.call_every(UPLINK_KEEPALIVE, lambda: self._uplink_hello(socket))
        self.loop.add_reader(socket, lambda: self._on_uplink(port))
        self._attach(port)

    @staticmethod
    def _uplink_hello(socket: zmq.Socket) -> None:
        try:
            socket.send(b"", zmq.NOBLOCK)
        except zmq.Again:
            pass

    def _attach(self, port: Port) -> None:
        if not port.attached:
            port.attached = True
            self.attached.append(port)
            if not port.trunk:
                self.access.append(port)
            log.info("%s: port %s attached", self.name, port.name)

    def _detach(self, port: Port) -> None:
        """The node behind `port` went away: stop flooding to it until it speaks again."""
        if port.attached:
            port.attached = False
            self.attached.remove(port)
            if port in self.access:
                self.access.remove(port)
            self.port_detached(port)
            log.info("%s: port %s detached", self.name, port.name)

    def port_detached(self, port: Port) -> None:
        """Hook for subclasses (the switch forgets stations behind the port)."""

    # --------------------------------------------------------------- data path

    def _on_data(self, data: zmq.Socket | None = None) -> None:
        data = self.data if data is None else data
        recv = data.recv
        events = data.get
        ports = self.ports
        now = self.clock()
        received = 0
        for received in range(1, RECEIVE_BUDGET + 1):
            # The poll said readable: the first recv finds a message. Before each further
            # one, ZMQ_EVENTS (~1.5 us) is cheaper than a recv raising zmq.Again (~3.3 us).
            if received > 1 and not events(_EVENTS) & _POLLIN:
                received -= 1
                break
            # recv_multipart by hand: a ROUTER's message is the peer's identity, then what
            # the peer sent, which must be one part. Received as zmq.Frames, whose `more`
            # is zmq_msg_more: cheaper than getsockopt(RCVMORE), which pyzmq makes look
            # the option up in an enum (~1 us a call); `.bytes` is the one copy recv makes.
            try:
                part = recv(_NOBLOCK, copy=False)
            except zmq.Again:
                received -= 1
                break
            if not part.more:
                self.counters["malformed_batches"] += 1  # no payload part: not our framing
                continue
            identity = part.bytes
            part = recv(_NOBLOCK, copy=False)
            if part.more:
                while part.more:
                    part = recv(_NOBLOCK, copy=False)  # the rest of the multipart message
                self.counters["malformed_batches"] += 1  # a DEALER sent a multipart message: not our framing
                continue
            message = part.bytes
            port = ports.get(identity)
            if port is None:
                port = self._port_on_first_contact(identity, data)
                if port is None:
                    self.counters["dropped_unknown_port"] += _frame_count(message)
                    continue
            elif port.via is not data and port.uplink is None:
                port.out.retarget(self._router_send(port, data))  # type: ignore[union-attr]  # answer where it spoke
            if not port.attached:
                self._attach(port)
            if message:
                self._receive(port, message, now)
                if holds_one_frame(message):
                    break  # an idle sender's lone frame: the next poll says if more came (see nodes/kernel.py)
        self.counters["rx_messages"] += received

    def _on_uplink(self, port: Port) -> None:
        recv = port.uplink.recv  # type: ignore[union-attr]
        events = port.uplink.get  # type: ignore[union-attr]
        now = self.clock()
        for index in range(RECEIVE_BUDGET):
            if index and not events(_EVENTS) & _POLLIN:
                break
            try:
                message = recv(zmq.NOBLOCK)
            except zmq.Again:
                break
            self.counters["rx_messages"] += 1
            if message:
                self._receive(port, message, now)

    def _port_on_first_contact(self, identity: bytes, data: zmq.Socket | None = None) -> Port | None:
        # Attachment names are UTF-8; anything else still gets a port, under a printable name.
        name = identity.decode("utf-8", errors="backslashreplace")
        return self._create_port(name, self.defaults, identity, data)

    def _receive(self, port: Port, message: bytes, now: float) -> None:
        """Unpack and check one NIC message, then shape it in or hand it straight to forwarding."""
        try:
            frames = unpack_frames(message)
        except BatchError:
            self.counters["malformed_batches"] += 1
            port.rx_dropped_malformed += 1
            return
        if not frames:
            return
        lengths = list(map(len, frames))  # C loops: cheaper than testing each frame in Python
        intact = min(lengths) >= ether.HEADER_LENGTH and max(lengths) <= port.max_untagged
        if intact:
            port.rx_bytes += len(message) - 2 * len(frames)
        else:
            frames = port.check_ingress(frames)
            if not frames:
                return
            port.rx_bytes += sum(map(len, frames))
        port.rx_packets += len(frames)
        if not port.up:
            port.rx_dropped_down += len(frames)
            return
        shaper = port.ingress
        if shaper.passthrough:
            self._carried(port, frames, now, message if intact else None)
            return
        for frame in frames:
            shaper.offer(frame, now)
        self._schedule(port, True)

    def _carried(self, port: Port, frames: list[bytes], now: float, packed: bytes | None) -> None:
        """Frames that made it onto the segment: capture them, then forward.

        Not a frame from a trunk: the device of the segment it entered on
        recorded it, so the per-machine pcaps of a segment merge to each frame once.
        """
        if self.capture is not None and not port.trunk:
            self.capture.write(frames, now)
        self.forward(port, frames, now, packed)

    def forward(self, ingress: Port, frames: list[bytes], now: float, packed: bytes | None) -> None:
        """Send `frames` from `ingress` on; `packed` is their original message when it is intact."""
        raise NotImplementedError

    def emit_many(self, port: Port, frames: list[bytes], now: float, packed: bytes | None, ingress_mtu: int) -> None:
        """Queue frames toward `port` (egress shaper unless passthrough); an intact `packed` message goes unchanged.

        Frames passed the ingress port's MTU check; only when this port's MTU is
        smaller must each be checked again (Linux's bridge drops them at
        egress too, `is_skb_forwardable`).
        """
        if not port.up:
            port.tx_dropped_down += len(frames)
            return
        if port.mtu < ingress_mtu:
            frames = port.fit_egress(frames)
            packed = None
            if not frames:
                return
        shaper = port.egress
        if shaper.passthrough:
            if packed is not None:
                port.out.append_packed(packed, len(frames))  # type: ignore[union-attr]
            else:
                append = port.out.append  # type: ignore[union-attr]
                for frame in frames:
                    append(frame)
            if not port.dirty:
                port.dirty = True
                self._dirty.append(port)
            return
        for frame in frames:
            shaper.offer(frame, now)
        self._schedule(port, False)

    def _schedule(self, port: Port, ingress: bool) -> None:
        """Make sure a timer fires when the shaper's next frame is due."""
        deadline = (port.ingress if ingress else port.egress).next_deadline()
        if deadline is None:
            return
        current = port.ingress_timer if ingress else port.egress_timer
        if deadline < current:
            if ingress:
                port.ingress_timer = deadline
            else:
                port.egress_timer = deadline
            self.loop.call_at(deadline, self._shaper_due, port, ingress)

    def _shaper_due(self, port: Port, ingress: bool) -> None:
        now = self.clock()
        if ingress:
            port.ingress_timer = float("inf")
            frames = port.ingress.pop_ready(now)
            if frames:
                self._carried(port, frames, now, None)
        else:
            port.egress_timer = float("inf")
            frames = port.egress.pop_ready(now)
            if frames:
                append = port.out.append  # type: ignore[union-attr]
                for frame in frames:
                    append(frame)
                if not port.dirty:
                    port.dirty = True
                    self._dirty.append(port)
        self._schedule(port, ingress)

    def _flush(self) -> None:
        """End of pass: every port with queued output sends it as one message (or a few)."""
        if not self._dirty:
            return
        dirty, self._dirty = self._dirty, []
        for port in dirty:
            port.dirty = False
            out = port.out
            out.flush()  # type: ignore[union-attr]
            dropped = out.dropped  # type: ignore[union-attr]
            if dropped == port.tx_dropped_seen:
                continue
            # Part or all of this pass's output did not go (here or when a batch
            # filled up during the pass): count what was lost, and why.
            lost = dropped - port.tx_dropped_seen
            port.tx_dropped_seen = dropped
            if port.send_failure == "unreachable":
                port.tx_dropped_unreachable += lost
                self._detach(port)
            else:
                port.tx_dropped_queue += lost

    # -------------------------------------------------------------- lifecycle

    def run(self, lifecycle: Lifecycle | None = None) -> int:
        """Serve until shutdown, SIGTERM/SIGINT or parent death; then clean up. Returns the exit code."""
        self.lifecycle = lifecycle
        if lifecycle is not None:
            self.loop.attach_lifecycle(lifecycle)
            if lifecycle.stop_requested:
                self.close()
                return 0
        try:
            self.loop.run()
        finally:
            self.close()
        return 0

    def close(self) -> None:
        """Finish the pcap, close sockets, unlink the ipc files we bound."""
        self.capture_stop()
        if self.tap is not None:
            self.tap.close()
        self.data.close(linger=0)
        cleanup_endpoint(self.data_endpoint)
        if self.data_tcp is not None:
            curve.release(self.data_tcp)
            self.data_tcp.close(linger=0)
        if self.control is not None:
            self.control.close(unlink=True)
        for port in self.ports.values():
            if port.uplink is not None:
                port.uplink.close(linger=0)
        self.context.term()


def run_device(device_class: type[Device], config: dict[str, Any]) -> int:
    """Entry point shared by every kind: prepare the process, build the device, serve."""
    lifecycle = prepare_process(config)
    try:
        device = device_class(config)
    except Exception:
        log.exception("%s: cannot start", config.get("name"))
        lifecycle.restore()
        return 1
    try:
        return device.run(lifecycle)
    finally:
        lifecycle.restore()


def main(device_class: type[Device], argv: list[str] | None = None) -> int:
    """`python -m bus.<kind> CONFIG.json`."""
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        print(f"usage: python -m bus.{device_class.kind} CONFIG.json", file=sys.stderr)
        return 2
    with open(args[0], encoding="utf-8") as handle:
        config = json.load(handle)
    return run_device(device_class, config)
