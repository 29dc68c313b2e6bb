"""The control ops every bus device answers: status, ports, stats, set_port, capture, seed, shutdown.

Before changing this file, read docs/design.md ("Control channel": the ops
and their replies are a contract with control/ and the CLI).

`DeviceControl` is a mixin of `bus.device.Device`: the ops read and change
the device's ports and capture, never its sockets. A handler returns plain
data (msgpack-able) or raises; `ControlServer` turns an exception into an
``ok: false`` reply with its errno, so a bad request never stops a device.
Subclasses add ops by extending `_control_handlers` (the switch's `fdb`).
"""
from __future__ import annotations

import errno
import os
from typing import TYPE_CHECKING, Any, Callable

from .capture import Capture
from .shaping import LinkParamError
from .transport import ControlError

if TYPE_CHECKING:
    from .port import Port
    from .runtime import EventLoop, Lifecycle
    from .tap import TapLink


class DeviceControl:
    """The device's answers on its control endpoint (see the module docstring)."""

    # Provided by Device.
    name: str
    kind: str
    seed: int
    started: float
    data_endpoint: str
    data_tcp_endpoint: str | None
    ports: dict[bytes, "Port"]
    attached: list["Port"]
    counters: dict[str, int]
    capture: Capture | None
    tap: "TapLink | None"
    loop: "EventLoop"
    lifecycle: "Lifecycle | None"
    clock: Callable[[], float]
    _wall_offset_ns: int

    def port_down(self, port: "Port") -> None:
        """Hook for subclasses, called when a port is set down."""

    def _control_handlers(self) -> dict[str, Callable[..., Any]]:
        return {"status": self.status, "ports": self.list_ports, "stats": self.stats, "set_port": self.set_port,
                "capture_start": self.capture_start, "capture_stop": self.capture_stop,
                "set_seed": self.set_seed, "shutdown": self.shutdown}

    def _port_named(self, name: str) -> "Port":
        port = self.ports.get(str(name).encode())
        if port is None:
            port = next((p for p in self.ports.values() if p.name == name), None)
        if port is None:
            raise ControlError(f"{self.name}: no port {name!r} (ports: {', '.join(p.name for p in self.ports.values()) or 'none'})", errno.ENODEV)
        return port

    def status(self) -> dict[str, Any]:
        return {"name": self.name, "kind": self.kind, "pid": os.getpid(), "uptime": self.clock() - self.started,
                "ports": len(self.ports), "attached": len(self.attached),
                "capture": self.capture.path if self.capture is not None else None,
                "seed": self.seed, "data": self.data_endpoint, "data_tcp": self.data_tcp_endpoint,
                "tap": self.tap.describe() if self.tap is not None else None}

    def list_ports(self) -> list[dict[str, Any]]:
        return [port.describe() for port in self.ports.values()]

    def stats(self) -> dict[str, Any]:
        messages = sum(port.out.messages for port in self.ports.values() if port.out is not None)
        return {"device": {**self.counters, "tx_messages": messages},
                "ports": {port.name: port.stats() for port in self.ports.values()}}

    def set_port(self, port: str, **params: Any) -> dict[str, Any]:
        """Change a port's canonical link parameters at run time (both directions, like TCLink)."""
        target = self._port_named(port)
        try:
            new = target.params.replace(**params)
        except LinkParamError as exc:
            raise ControlError(str(exc), errno.EINVAL) from None
        was_up = target.up
        target.set_params(new)
        if was_up and not new.up:
            self.port_down(target)
        return new.to_canonical()

    def capture_start(self, path: str) -> str:
        if self.capture is not None:
            raise ControlError(f"{self.name}: already capturing to {self.capture.path}", errno.EBUSY)
        self.capture = Capture(path, self.loop, self._wall_offset_ns)
        return self.capture.path

    def capture_stop(self) -> dict[str, Any] | None:
        """Finish the capture file; returns its path and how many frames it holds (None if idle)."""
        capture, self.capture = self.capture, None
        return capture.close() if capture is not None else None

    def set_seed(self, seed: int) -> int:
        self.seed = int(seed)
        for port in self.ports.values():
            port.reseed(self.seed)
        return self.seed

    def shutdown(self) -> bool:
        if self.lifecycle is not None:
            self.lifecycle.request_stop("shutdown requested")
        self.loop.stop()
        return True
