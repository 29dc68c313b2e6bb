"""An IEEE 802.1D transparent learning bridge (a switch), one process per segment.

Before changing this file, read bus/fdb.py (learning, ageing, the forwarding
decision, and the 802.1D / Linux br_fdb.c references there), bus/device.py
(the data path, batching) and bus/port.py (ports, shaping, counters); the
addresses are read through bus/ether.py. `python -m bus.switch CONFIG.json` runs one;
config keys beyond the common ones: `aging_time` (s, default 300) and
`max_entries` (default 8192).
"""
from __future__ import annotations

import sys
from typing import Any

from .device import Device, Port, main, run_device
from .ether import ADDRESSES, DST, SRC
from .fdb import DEFAULT_AGING_TIME, DEFAULT_MAX_ENTRIES, FILTERED, ForwardingDatabase

# How often the FDB is swept; lookups already ignore expired entries, so this
# only bounds how long a dead entry occupies memory.
AGING_SWEEP_INTERVAL = 1.0


class Switch(Device):
    """Learns which port each source MAC is behind and forwards unicast only there."""

    kind = "switch"

    def __init__(self, config: dict[str, Any], **kwargs: Any) -> None:
        aging_time = config.get("aging_time")
        max_entries = config.get("max_entries")
        self.fdb = ForwardingDatabase(DEFAULT_AGING_TIME if aging_time is None else float(aging_time),
                                      DEFAULT_MAX_ENTRIES if max_entries is None else int(max_entries))
        super().__init__(config, **kwargs)
        interval = min(AGING_SWEEP_INTERVAL, max(self.fdb.aging_time / 2, 0.05))
        self.loop.call_every(interval, lambda: self.fdb.age(self.clock()))

    def forward(self, ingress: Port, frames: list[bytes], now: float, packed: bytes | None) -> None:
        resolve = self.fdb.resolve
        if len(frames) == 1:
            frame = frames[0]
            self._deliver(ingress, resolve(frame[SRC], frame[DST], ingress, now), frames, now, packed)
            return
        # Bulk flows repeat the same (dst, src) pair frame after frame: decide once
        # per run of equal headers (learning is already fresh for this `now`).
        decisions = []
        append = decisions.append
        last_header = None
        decision: Any = None
        repeats: dict[str, int] = {}
        for frame in frames:
            header = frame[ADDRESSES]
            if header != last_header:
                last_header = header
                decision = resolve(frame[SRC], frame[DST], ingress, now)
                kind = "floods" if decision is None else "filtered" if decision is FILTERED else "forwarded"
            else:
                repeats[kind] = repeats.get(kind, 0) + 1
            append(decision)
        counters = self.fdb.counters
        for kind, count in repeats.items():
            counters[kind] += count
        first = decisions[0]
        if decisions.count(first) == len(decisions):
            # The common case under load: a whole batch for one destination travels as it came.
            self._deliver(ingress, first, frames, now, packed)
            return
        for frame, decision in zip(frames, decisions):
            self._deliver(ingress, decision, [frame], now, None)

    def _deliver(self, ingress: Port, decision: Any, frames: list[bytes], now: float, packed: bytes | None) -> None:
        if decision is None:  # flood: group or unknown destination
            for port in self.access if ingress.trunk else self.attached:  # split horizon: never trunk to trunk
                if port is not ingress:
                    self.emit_many(port, frames, now, packed, ingress.mtu)
        elif decision is FILTERED or (ingress.trunk and decision.trunk):
            ingress.filtered += len(frames)
        else:
            if decision.attached:
                self.emit_many(decision, frames, now, packed, ingress.mtu)
            else:
                decision.tx_dropped_unreachable += len(frames)

    def port_detached(self, port: Port) -> None:
        self.fdb.flush_port(port)

    def port_down(self, port: Port) -> None:
        self.fdb.flush_port(port)

    def _control_handlers(self) -> dict[str, Any]:
        handlers = super()._control_handlers()
        handlers["fdb"] = self.show_fdb
        return handlers

    def show_fdb(self) -> list[dict[str, Any]]:
        """The table like `bridge fdb show`: mac, port, age (s since last seen), state."""
        now = self.clock()
        self.fdb.age(now)
        return self.fdb.show(now)

    def stats(self) -> dict[str, Any]:
        result = super().stats()
        result["fdb"] = dict(self.fdb.counters, entries=len(self.fdb))
        return result


def run(config: dict[str, Any]) -> int:
    """Run a switch process until shutdown; returns the exit code."""
    return run_device(Switch, config)


if __name__ == "__main__":
    sys.exit(main(Switch))
