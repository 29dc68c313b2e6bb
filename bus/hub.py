"""A hub (repeater): every frame goes out of every other attached port.

Before changing this file, read bus/device.py and bus/port.py (the data path
and port machinery this relies on) and IEEE 802.3 clause 9 in spirit: a
repeater does not look at addresses, so no byte of a frame is read here.
`python -m bus.hub CONFIG.json` runs one (config: docs/design.md, "Bus device").
"""
from __future__ import annotations

import sys
from typing import Any

from .device import Device, Port, main, run_device


class Hub(Device):
    """Floods everything: the simplest shared segment."""

    kind = "hub"

    def forward(self, ingress: Port, frames: list[bytes], now: float, packed: bytes | None) -> None:
        for port in self.access if ingress.trunk else self.attached:  # split horizon (bus/device.py)
            if port is not ingress:
                self.emit_many(port, frames, now, packed, ingress.mtu)


def run(config: dict[str, Any]) -> int:
    """Run a hub process until shutdown; returns the exit code."""
    return run_device(Hub, config)


if __name__ == "__main__":
    sys.exit(main(Hub))
