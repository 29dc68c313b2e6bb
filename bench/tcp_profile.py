"""`python -m bench tcp_profile [--quick] [--mib N] [--mtu M] [--top K]`: the TCP stack's cost per segment.

Two `Stack`s on one in-memory segment (nodes/memnet.py: no processes, no ZeroMQ, a fake
clock), h1 (10.0.0.1) sends N MiB to h2 (10.0.0.2) through stream sockets of
`stack.sockets.socket(AF_INET, SOCK_STREAM, 0)`, the loop of tests/unit/nodes/tcp/test_layer.py:
sendmsg what fits, recvmsg what waits, else advance the clock.

The stack's time is split by side: the sender is everything h1's stack does (its `sendmsg`
calls, `poll` of the frames it received, i.e. the ACKs, `tick` of its timers, `receive`),
the receiver the same on h2 (`recvmsg`, `poll` of the data segments, `tick`, `receive`).
What memnet does between them (moving frames, its clock) counts for neither.

* Timed run (perf_counter around each of those calls, no profiler): the rows. Sender cost per
  segment = sender's time / segments h1 sent (its TcpStats.OutSegs); receiver = receiver's
  time / segments h2 received (InSegs). Beside them, measured in the same run: one Internet
  checksum of a full segment (MSS + 20 bytes of header) with nodes/wire/checksum.py, the one
  thing every segment pays on each side.
* Profiled run (the same transfer under cProfile): the top functions by own time, and the
  same per-segment figures as cProfile sees them (inflated by its per-call overhead; read the
  timed rows for the cost, the listing for where it goes).
"""
from __future__ import annotations

import argparse
import cProfile
import io
import pstats
import time
from typing import Any, Callable

from nodes.memnet import Network
from nodes.socket.constants import AF_INET, SOCK_STREAM, TCP_ESTABLISHED
from nodes.stack import Stack
from nodes.wire.checksum import internet_checksum

from .harness import Row, ns_per_call

PORT = 5001
CHUNK = 1 << 16
STEP = 0.0005               # s of emulated time per idle turn of the loop
EMULATED_LIMIT = 600.0      # s of emulated time before the transfer counts as stuck
SIDES = ("sender", "receiver")


def _sender_side(function: Callable[..., Any], clock: list) -> Callable[..., Any]:
    perf = time.perf_counter

    def sender_side(*args: Any, **kwargs: Any) -> Any:   # one code object: cProfile sums every sender call here
        if clock[1]:                                     # nested in another of this side's calls: counted there
            return function(*args, **kwargs)
        clock[1] = 1
        start = perf()
        try:
            return function(*args, **kwargs)
        finally:
            clock[0] += perf() - start
            clock[1] = 0
    return sender_side


def _receiver_side(function: Callable[..., Any], clock: list) -> Callable[..., Any]:
    perf = time.perf_counter

    def receiver_side(*args: Any, **kwargs: Any) -> Any:
        if clock[1]:
            return function(*args, **kwargs)
        clock[1] = 1
        start = perf()
        try:
            return function(*args, **kwargs)
        finally:
            clock[0] += perf() - start
            clock[1] = 0
    return receiver_side


def _two_hosts(mtu: int) -> tuple[Network, Stack, Stack]:
    net = Network()
    h1, h2 = net.node("h1"), net.node("h2")
    net.attach(h1, "eth0", "lan1", "10.0.0.1/24", mtu=mtu)
    net.attach(h2, "eth0", "lan1", "10.0.0.2/24", mtu=mtu)
    return net, h1, h2


def _data_segments(stack: Stack, key: str) -> int | None:
    """data_segs_out / data_segs_in of the stack's one connection (tcp_info), None when it is gone."""
    for conn in getattr(stack.tcp, "ehash", {}).values():
        return getattr(conn, key, None)
    return None


def transfer(size: int, mtu: int, profiler: cProfile.Profile | None = None) -> dict[str, Any]:
    """Send `size` bytes h1 -> h2; the time of each side (s) and the segments each side counted."""
    net, h1, h2 = _two_hosts(mtu)
    listener = h2.sockets.socket(AF_INET, SOCK_STREAM, 0)
    listener.bind(("0.0.0.0", PORT))
    listener.listen(8)
    client = h1.sockets.socket(AF_INET, SOCK_STREAM, 0)
    client.connect(("10.0.0.2", PORT), net.now)
    deadline = net.now + 10
    while not (client.state == TCP_ESTABLISHED and listener.accept_queue):
        if net.now > deadline:
            raise RuntimeError("tcp_profile: no connection within 10 emulated seconds")
        net.run(0.001)
    server = listener.accept()
    # Counted from here: the handshake and ARP are not the per-segment path.
    base = {"out": h1.tcp.stats.OutSegs, "in": h2.tcp.stats.InSegs}
    clocks = {side: [0.0, 0] for side in SIDES}   # seconds, inside a call
    for stack, wrap, clock in ((h1, _sender_side, clocks["sender"]), (h2, _receiver_side, clocks["receiver"])):
        for name in ("poll", "tick", "receive"):
            setattr(stack, name, wrap(getattr(stack, name), clock))
    send = _sender_side(client.sendmsg, clocks["sender"])
    recv = _receiver_side(server.recvmsg, clocks["receiver"])
    payload = bytes(range(256)) * (size // 256 + 1)
    sent = received = 0
    limit = net.now + EMULATED_LIMIT
    wall = time.perf_counter()
    if profiler is not None:
        profiler.enable()
    try:
        while received < size:
            if sent < size:
                try:
                    sent += send(payload[sent:min(size, sent + CHUNK)], None, net.now)
                except BlockingIOError:
                    pass
            try:
                data = recv(CHUNK, net.now).data
            except BlockingIOError:
                if net.now > limit:
                    raise RuntimeError(f"tcp_profile: {received} of {size} bytes in {EMULATED_LIMIT:g} emulated s")
                net.run(STEP)
                continue
            if not data:
                raise RuntimeError(f"tcp_profile: EOF after {received} of {size} bytes")
            received += len(data)
    finally:
        if profiler is not None:
            profiler.disable()
    wall = time.perf_counter() - wall
    return {"sender": clocks["sender"][0], "receiver": clocks["receiver"][0], "wall": wall,
            "segments_sent": h1.tcp.stats.OutSegs - base["out"], "segments_received": h2.tcp.stats.InSegs - base["in"],
            "data_segments_sent": _data_segments(h1, "data_segs_out"),
            "data_segments_received": _data_segments(h2, "data_segs_in"),
            "retransmitted": h1.tcp.stats.RetransSegs, "bytes": received, "emulated": net.now}


def _profiled_sides(profiler: cProfile.Profile) -> dict[str, float]:
    """Cumulative seconds cProfile gave the sender_side / receiver_side wrappers."""
    stats = pstats.Stats(profiler)
    found = {}
    for (_, _, name), (_, _, _, cumulative, _) in stats.stats.items():  # type: ignore[attr-defined]
        side = name.removesuffix("_side")
        if side in SIDES:
            found[side] = found.get(side, 0.0) + cumulative
    return found


def _print_result(title: str, result: dict[str, Any], sides: dict[str, float]) -> None:
    sent, got = result["segments_sent"], result["segments_received"]
    print(f"{title}:")
    print(f"  sender   (h1: sendmsg, poll of the ACKs, tick, receive): {sides['sender']:.3f} s / {sent} segments sent "
          f"= {sides['sender'] / sent * 1e6:.1f} us/segment")
    print(f"  receiver (h2: recvmsg, poll of the data, tick, receive): {sides['receiver']:.3f} s / {got} segments "
          f"received = {sides['receiver'] / got * 1e6:.1f} us/segment")
    elsewhere = result["wall"] - result["sender"] - result["receiver"]
    print(f"  wall {result['wall']:.3f} s (memnet and the loop: {elsewhere:.3f} s); {result['bytes']} bytes, "
          f"data segments {result['data_segments_sent']} sent / {result['data_segments_received']} received, "
          f"{result['retransmitted']} retransmitted, {result['emulated'] - 1000:.2f} emulated s")


def run(argv: list[str] | None = None) -> list[Row]:
    parser = argparse.ArgumentParser(prog="python -m bench tcp_profile", description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="4 MiB instead of 16")
    parser.add_argument("--mib", type=int, default=None, help="MiB to transfer (default 16, --quick 4)")
    parser.add_argument("--mtu", type=int, default=1500)
    parser.add_argument("--top", type=int, default=30, help="functions listed from the profile (by own time)")
    args = parser.parse_args(argv or [])
    size = (args.mib if args.mib is not None else 4 if args.quick else 16) << 20
    what = f"{size >> 20} MiB h1 -> h2 on one in-memory segment, MTU {args.mtu}"

    timed = transfer(size, args.mtu)
    _print_result(f"\ntcp_profile, timed (no profiler): {what}", timed, timed)

    profiler = cProfile.Profile()
    profiled = transfer(size, args.mtu, profiler)
    _print_result(f"\ntcp_profile under cProfile (inflated by its overhead): {what}", profiled,
                  _profiled_sides(profiler))
    listing = io.StringIO()
    pstats.Stats(profiler, stream=listing).sort_stats("tottime").print_stats(args.top)
    print(listing.getvalue())

    segment = bytes(args.mtu - 20)          # TCP header + MSS bytes: what one full segment's checksum covers
    checksum_us = ns_per_call(lambda: internet_checksum(segment)) / 1e3
    base_name = f"Internet checksum of {len(segment)} B (nodes/wire/checksum.py)"
    note = f"{what}; timed, no profiler; fake clock (nodes/memnet.py)"
    return [
        Row("TCP sender cost per segment", timed["sender"] / timed["segments_sent"] * 1e6, "us", checksum_us,
            base_name, f"{note}; h1's stack time / {timed['segments_sent']} segments sent"),
        Row("TCP receiver cost per segment", timed["receiver"] / timed["segments_received"] * 1e6, "us",
            checksum_us, base_name, f"{note}; h2's stack time / {timed['segments_received']} segments received"),
        Row("TCP stack goodput, one core", timed["bytes"] * 8 / (timed["sender"] + timed["receiver"]) / 1e6,
            "Mbit/s", timed["bytes"] * 8 / timed["wall"] / 1e6, "the same transfer, wall time incl. memnet",
            "both stacks' time only: the ceiling of the stack code itself"),
    ]
