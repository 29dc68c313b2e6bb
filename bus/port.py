"""One port of a bus device: its link parameters, two shapers, output batch and counters.

Before changing this file, read docs/design.md ("Bus device", "Data plane
framing") and bus/shaping.py (the `Shaper` each direction runs).

A port is named by its attachment (the NIC's ZeroMQ routing id, ``h1:eth0``).
Directions are seen from the node, like `ip -s link` on its interface: rx is
node -> device (the `ingress` shaper), tx is device -> node (`egress`). The
port also owns the length checks of the frames crossing it: a runt (shorter
than an Ethernet header) is malformed, a frame longer than MTU + 14 (+ 4 when
802.1Q tagged) is an MTU drop, as Linux's bridge drops it
(`is_skb_forwardable`). Drops are counted by reason; `stats()` merges each
reason across directions and the two shapers. What went out (tx packets and
bytes, sends refused by a full queue) is counted by the port's
`FrameBatcher`, which sees every send. No sockets here: the device gives the
port its batcher and, for an uplink, its DEALER.
"""
from __future__ import annotations

import hashlib
import random
from typing import Any

import zmq

from . import ether
from .shaping import LinkParams, Shaper
from .transport import FrameBatcher

# Kept per direction (rx = node -> device, tx = device -> node).
PORT_COUNTERS = ("rx_packets", "rx_bytes", "rx_dropped_malformed", "rx_dropped_mtu", "rx_dropped_down",
                 "tx_dropped_mtu", "tx_dropped_down", "tx_dropped_queue", "tx_dropped_unreachable", "filtered")


def derive_seed(seed: int, port: str, direction: str) -> int:
    """A stable per-shaper seed from the device seed, so a run replays exactly."""
    digest = hashlib.sha256(f"{seed}:{port}:{direction}".encode()).digest()
    return int.from_bytes(digest[:8], "big")


class Port:
    """One attachment of the device: its link parameters, two shapers, output batch and counters."""

    __slots__ = ("name", "identity", "params", "up", "mtu", "max_untagged", "max_tagged", "ingress", "egress",
                 "attached", "uplink", "via", "trunk", "out", "dirty", "send_failure", "tx_dropped_seen", "ingress_timer",
                 "egress_timer", *PORT_COUNTERS)

    def __init__(self, name: str, params: LinkParams, seed: int) -> None:
        self.name = name
        self.identity = name.encode()
        self.ingress = Shaper(params, random.Random(derive_seed(seed, name, "ingress")))
        self.egress = Shaper(params, random.Random(derive_seed(seed, name, "egress")))
        self.set_params(params)
        self.attached = False
        self.uplink: zmq.Socket | None = None
        self.via: zmq.Socket | None = None  # the device's ROUTER this port is reached through (None: uplink)
        self.trunk = False  # an intra-segment mesh link: split horizon, not captured (config "trunks")
        self.out: FrameBatcher | None = None
        self.dirty = False
        self.send_failure = ""
        self.tx_dropped_seen = 0  # out.dropped already sorted into the tx_dropped_* counters
        self.ingress_timer = self.egress_timer = float("inf")
        for counter in PORT_COUNTERS:
            setattr(self, counter, 0)

    def set_params(self, params: LinkParams) -> None:
        self.params = params
        self.up = params.up
        self.mtu = params.mtu
        self.max_untagged = params.mtu + ether.HEADER_LENGTH
        self.max_tagged = params.mtu + ether.HEADER_LENGTH + ether.VLAN_TAG_LENGTH
        self.ingress.set_params(params)
        self.egress.set_params(params)

    def reseed(self, seed: int) -> None:
        self.ingress.set_seed(derive_seed(seed, self.name, "ingress"))
        self.egress.set_seed(derive_seed(seed, self.name, "egress"))

    def fits(self, frame: bytes) -> bool:
        """Whether `frame` fits this port's MTU (an 802.1Q tag may add 4 bytes beyond MTU + 14)."""
        length = len(frame)
        return length <= self.max_untagged or (length <= self.max_tagged and ether.is_vlan_tagged(frame))

    def check_ingress(self, frames: list[bytes]) -> list[bytes]:
        """The slow path of the ingress checks: keep the frames that pass, count the runts and the too long."""
        good = []
        max_untagged = self.max_untagged
        for frame in frames:
            length = len(frame)
            if length < ether.HEADER_LENGTH:
                self.rx_dropped_malformed += 1
            elif length <= max_untagged or self.fits(frame):
                good.append(frame)
            else:
                self.rx_dropped_mtu += 1
        return good

    def fit_egress(self, frames: list[bytes]) -> list[bytes]:
        """The frames (from a port of larger MTU) that fit this one; the others are counted as tx MTU drops."""
        kept = []
        max_untagged = self.max_untagged
        for frame in frames:
            if len(frame) <= max_untagged or self.fits(frame):  # the common case without a call
                kept.append(frame)
            else:
                self.tx_dropped_mtu += 1
        return kept

    def stats(self) -> dict[str, Any]:
        """Counters like `ip -s link` (rx = from the node), drops by reason merged across directions."""
        ingress, egress = self.ingress.counters, self.egress.counters
        rx_dropped = (self.rx_dropped_malformed + self.rx_dropped_mtu + self.rx_dropped_down
                      + ingress["dropped_down"] + ingress["dropped_queue"] + ingress["dropped_loss"])
        tx_dropped = (self.tx_dropped_mtu + self.tx_dropped_down + self.tx_dropped_queue + self.tx_dropped_unreachable
                      + egress["dropped_down"] + egress["dropped_queue"] + egress["dropped_loss"])
        return {
            "rx_packets": self.rx_packets, "rx_bytes": self.rx_bytes,
            "tx_packets": self.out.frames if self.out is not None else 0,
            "tx_bytes": self.out.payload if self.out is not None else 0,
            "rx_dropped": rx_dropped, "tx_dropped": tx_dropped,
            "dropped_malformed": self.rx_dropped_malformed,
            "dropped_mtu": self.rx_dropped_mtu + self.tx_dropped_mtu,
            "dropped_down": self.rx_dropped_down + self.tx_dropped_down + ingress["dropped_down"] + egress["dropped_down"],
            "dropped_loss": ingress["dropped_loss"] + egress["dropped_loss"],
            "dropped_queue": self.tx_dropped_queue + ingress["dropped_queue"] + egress["dropped_queue"],
            "dropped_unreachable": self.tx_dropped_unreachable,
            "filtered": self.filtered,
            "ingress": ingress, "egress": egress,
        }

    def describe(self) -> dict[str, Any]:
        return {"name": self.name, "attached": self.attached, "up": self.up,
                "uplink": self.uplink is not None, "trunk": self.trunk, "params": self.params.to_canonical()}
