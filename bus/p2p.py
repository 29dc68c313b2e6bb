"""A point-to-point link: exactly two ports, each frame goes to the other one.

Before changing this file, read bus/device.py and bus/port.py. A third attachment is refused
and counted (`refused_ports`, its frames in `dropped_unknown_port`), as a
cable has two ends. `python -m bus.p2p CONFIG.json` runs one.
"""
from __future__ import annotations

import sys
from typing import Any

from .device import Device, Port, main, run_device


class PointToPoint(Device):
    """A wire between two NICs, with each end shaped like any other port."""

    kind = "p2p"
    max_ports = 2

    def forward(self, ingress: Port, frames: list[bytes], now: float, packed: bytes | None) -> None:
        for port in self.access if ingress.trunk else self.attached:  # split horizon (bus/device.py)
            if port is not ingress:
                self.emit_many(port, frames, now, packed, ingress.mtu)


def run(config: dict[str, Any]) -> int:
    """Run a point-to-point link process until shutdown; returns the exit code."""
    return run_device(PointToPoint, config)


if __name__ == "__main__":
    sys.exit(main(PointToPoint))
