"""`python -m bench fuzz [--frames N] [--seed S]`: the long run of issue 10's frame fuzzer.

Starts tests/scenarios/fuzz_chain.yaml (h1 - west - r1 = r2 = r3 - east - h2),
attaches a foreign port to west's switch and sends N seeded, mutated frames
(default 1,000,000) from `bench/fuzzframes.py` at r1 and h1, paced by the
nodes' counters. Then it checks what the short test asserts: crashes,
`rx_exceptions`, and how long until h1 <-> h2 ping again.

Rows (a table, and bench/out/fuzz.json; benches never assert):

* `frames injected`: frames handed to the switch, beside the frames asked for;
* `frames/s injected`: frames over the time spent sending them (pacing waits
  included, generating them not), beside the raw limit measured in the same
  run: the same packed batches through a bare ZeroMQ ROUTER relay
  (bench/baseline.py), where nothing parses a frame;
* `crashes`: processes that exited unasked (`net.crashes`), or whose pid changed;
* `rx_exceptions`: the sum over every node of softnet `rx_exceptions`
  (NaN when a node has no such counter or does not answer);
* `recovery time`: seconds from the end of the fuzz until h1 -> h2 and
  h2 -> h1 both answer a ping, beside the same check before the fuzz.
"""
from __future__ import annotations

import argparse
import math
import time
from pathlib import Path

import psutil

from bus.transport import pack_frames
from control.emulation import Emulation

from . import baseline
from .fuzzframes import BackgroundProbes, FrameFuzzer, Injector, health, rx_exceptions, snapshot, wait_recovered
from .harness import Row

TOPOLOGY = Path(__file__).resolve().parent.parent / "tests" / "scenarios" / "fuzz_chain.yaml"
DEFAULT_FRAMES = 1_000_000
CHUNK = 5000                 # frames generated at a time (generation is not timed)
BASELINE_FRAMES = 100_000    # the first frames, replayed through the bare relay
PAIRS = [("h1", "h2"), ("h2", "h1")]
RECOVERY_TIMEOUT = 60.0


def relay_rate(messages: list[bytes], frames_per_message: list[int]) -> float:
    """Frames/s of these exact packed messages through a bare ROUTER relay process (no frame is parsed)."""
    elapsed = baseline.relay_elapsed(messages)
    return sum(frames_per_message[1:]) / elapsed if elapsed > 0 else float("nan")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench fuzz", description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=DEFAULT_FRAMES, help="frames to inject (default 1,000,000)")
    parser.add_argument("--seed", type=int, default=10, help="the fuzzer's seed (same seed, same frames)")
    return parser.parse_args(argv or [])


def run(argv: list[str] | None = None) -> list[Row]:
    args = parse_args(argv)
    saved: list[bytes] = []
    saved_counts: list[int] = []
    # strict=False: the bench reports rx_exceptions in its table instead of failing on the way out.
    with Emulation(TOPOLOGY, name="bench-fuzz", seed=args.seed, strict=False) as net:
        before_start = time.monotonic()
        healthy_before = wait_recovered(net, PAIRS, RECOVERY_TIMEOUT)
        print(f"fuzz: chain answers pings before the fuzz ({time.monotonic() - before_start:.2f} s)")
        before = snapshot(net)
        with Injector(net, "west") as injector, BackgroundProbes(net, "h1", "h2") as probes:
            fuzzer = FrameFuzzer(injector.view, seed=args.seed)
            sent = 0
            next_report = 100_000
            while sent < args.frames:
                frames = fuzzer.frames(min(CHUNK, args.frames - sent))
                if sum(saved_counts) < BASELINE_FRAMES:
                    for offset in range(0, len(frames), injector.batch):
                        chunk = frames[offset: offset + injector.batch]
                        saved.append(pack_frames(chunk))
                        saved_counts.append(len(chunk))
                injector.send(frames)
                sent += len(frames)
                if sent >= next_report:
                    next_report += 100_000
                    print(f"fuzz: {sent:,} frames, {sent / injector.stats.elapsed:,.0f} frames/s, "
                          f"crashes {len(net.crashes)}", flush=True)
            injector.settle()
            stats = injector.stats
        problems = health(net, before) + probes.errors
        rss = {name: (psutil.Process(pid).memory_info().rss - before.rss[name]) / 2**20
               for name, pid in before.pids.items() if psutil.pid_exists(pid)}
        crashed = {event.name for event in net.crashes}
        crashed |= {name for name, handle in net.supervisor.processes.items()
                    if handle.pid != before.pids.get(name) or not handle.alive}
        exceptions = rx_exceptions(net)
        total_exceptions = (float("nan") if any(v is None for v in exceptions.values())
                            else float(sum(v for v in exceptions.values() if v is not None)))
        try:
            recovery = wait_recovered(net, PAIRS, RECOVERY_TIMEOUT)
        except TimeoutError:
            recovery = float("nan")
        r1 = net["r1"].counters() if net.supervisor["r1"].alive else {}
    print(f"fuzz: generated per generator {fuzzer.generated}")
    print(f"fuzz: {stats.messages:,} messages, {stats.bytes / 2**20:.1f} MiB, {stats.received:,} messages back, "
          f"pacing stalls {stats.stalls}, addressed per node {stats.per_node}")
    if r1:
        print("fuzz: r1 Ip " + ", ".join(f"{k} {v}" for k, v in r1["Ip"].items() if v and k[0].isupper()))
        print("fuzz: r1 Icmp " + ", ".join(f"{k} {v}" for k, v in r1["Icmp"].items() if v))
    print(f"fuzz: rx_exceptions per node {exceptions}")
    print(f"fuzz: background ping/traceroute rounds h1 -> h2 during the fuzz: {probes.rounds}")
    print("fuzz: RSS growth MiB " + ", ".join(f"{name} {grown:+.1f}" for name, grown in rss.items()))
    for problem in problems:
        print(f"fuzz: PROBLEM {problem}")
    limit = relay_rate(saved, saved_counts) if len(saved) > 1 else float("nan")
    rate = stats.frames / stats.elapsed if stats.elapsed else float("nan")
    return [
        Row("frames injected", stats.frames, "frames", args.frames, "asked (--frames)", f"seed {args.seed}"),
        Row("frames/s injected", rate, "frames/s", limit, "bare relay, same batches",
            f"{injector.batch} frames/msg, paced by the nodes"),
        Row("crashes", len(crashed), "processes", 0, "", ", ".join(sorted(crashed))),
        Row("rx_exceptions", total_exceptions, "exceptions", 0, "", "sum over nodes"),
        Row("recovery time", recovery if not math.isnan(recovery) else float("nan"), "s", healthy_before,
            "same pings before the fuzz", f"deadline {RECOVERY_TIMEOUT:g} s"),
    ]
