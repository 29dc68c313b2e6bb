"""`bench tcp`'s impaired row: 50 MB (`--quick`: 5 MB) h1 -> r1 -> h2 with 5% loss and 20 ms
delay on r1's port toward h2 (both directions: data and ACKs), sha256 compared at both ends.

Metric `TCP 50 MB through 5% loss and 20 ms delay` (Mbit/s of goodput). Its baseline is what
theory allows a loss-based TCP on that path: Mathis et al.'s bound MSS / RTT * sqrt(3/2) / sqrt(p),
with the RTT measured by ping on the impaired path in the same run and p the data loss (5%).
A ratio near or above 1 means the stack recovers from loss as well as the model's Reno would
(CUBIC and SACK can beat it). There is no pass mark in the issue beyond "byte-exact"."""
from __future__ import annotations

import hashlib
import math
import random
import socket
import statistics
import threading
import time
from typing import Any

from control.emulation import Emulation

from .harness import Row

METRIC = "TCP 50 MB through 5% loss and 20 ms delay"
LOSS, DELAY = 0.05, "20ms"
MSS = 1448                 # 1500 - 40 - 12 (timestamps)
PORT = 5003
CHUNK = 1 << 16
TIMEOUT = 900.0            # s: at 5% loss both ways 50 MB takes minutes


def transfer(net: Emulation, size: int, seed: int = 13) -> tuple[float, bool, int]:
    """(seconds, sha256 equal, bytes received) of `size` random bytes h1 -> h2 over in-process sockets."""
    payload = random.Random(seed).randbytes(size)
    listener = net["h2"].socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.bind(("0.0.0.0", PORT))
    listener.listen(1)
    listener.settimeout(TIMEOUT)
    result: dict[str, Any] = {}
    errors: list[BaseException] = []

    def receive() -> None:
        try:
            conn, _ = listener.accept()
            digest, received = hashlib.sha256(), 0
            with conn:
                conn.settimeout(TIMEOUT)
                while data := conn.recv(1 << 20):
                    digest.update(data)
                    received += len(data)
            result["end"], result["digest"], result["bytes"] = time.perf_counter(), digest.digest(), received
        except BaseException as error:  # reported below, never lost in the thread
            errors.append(error)

    receiver = threading.Thread(target=receive, daemon=True)
    receiver.start()
    try:
        with net["h1"].socket(socket.AF_INET, socket.SOCK_STREAM) as sender:
            sender.settimeout(TIMEOUT)
            sender.connect((net["h2"].addresses[0].split("/")[0], PORT))
            start = time.perf_counter()
            view = memoryview(payload)
            for offset in range(0, size, CHUNK):
                sender.sendall(view[offset:offset + CHUNK])
        receiver.join(TIMEOUT)
    finally:
        listener.close()
    if errors:
        raise RuntimeError(f"impaired transfer receiver: {errors[0]!r}") from errors[0]
    if receiver.is_alive():
        raise RuntimeError(f"impaired transfer: no end within {TIMEOUT:g} s")
    equal = result["digest"] == hashlib.sha256(payload).digest()
    return result["end"] - start, equal, result["bytes"]


def mathis_mbits(rtt: float, loss: float = LOSS, mss: int = MSS) -> float:
    """Mathis, Semke, Mahdavi, Ott (1997): the goodput bound of a loss-based TCP, Mbit/s."""
    return mss * 8 / rtt * math.sqrt(1.5) / math.sqrt(loss) / 1e6


def impaired_row(topology: Any, quick: bool) -> Row:
    size = (5 if quick else 50) << 20
    with Emulation(topology, name="bench-tcp-impaired") as net:
        net.link("r1", "eth1").set(loss=f"{LOSS * 100:g}%", delay=DELAY)
        # the path's RTT with the delay (the median of pings that came back: 5% may not)
        rtts = net["h1"].ping(net["h2"].addresses[0].split("/")[0], count=20, interval=0.05).rtts
        rtt = statistics.median(rtts) / 1000 if rtts else 0.04
        seconds, equal, received = transfer(net, size)
        counters = net["h1"].counters()["Tcp"]
    goodput = received * 8 / seconds / 1e6
    bound = mathis_mbits(rtt)
    note = (f"{size >> 20} MB h1 -> r1 -> h2, loss {LOSS:.0%} and delay {DELAY} on r1's port toward h2 (both "
            f"directions); {seconds:.1f} s, sha256 {'equal' if equal else 'DIFFERENT'}; RTT {rtt * 1000:.1f} ms "
            f"(ping); h1 sent {counters['OutSegs']} segments, {counters['RetransSegs']} retransmitted")
    if not equal:
        raise RuntimeError(f"{METRIC}: the bytes received differ from the bytes sent ({note})")
    return Row(METRIC, goodput, "Mbit/s", bound, "Mathis bound MSS/RTT*sqrt(1.5/p), same path", note)
