"""`python -m bench sockets`: programs on nodes (issue 12).

Rows, each beside a reference measured in the same run:

* `UDP RTT program to program`: a client program on h1 (connected socket: native
  send/recv through its socketpair) and an echo program on h2 (recvfrom/sendto: both
  trapped, as a plain Python server does), across a switch, paced like bench node's ping;
  beside the node kernel's own ping RTT on the same path and pacing. Target <= 1.5.
* `UDP RTT in-process API`: the same, the client a `node.socket()` in this process.
* `trapped syscall round trip`: getsockname on an emulated socket in a loop, in a program
  under the trap; beside the same loop on a real socket in a program without it. Target
  <= 30 us.
* `UDP 1472 B datagrams/s`: one way, a sender program on h1 as fast as it can, the
  receiver program on h2 counting; beside bench node's router forwarding rate (1514 B
  frames, at most 256 in flight).

Needs root (the trap); run alone on an idle machine, figures on 2 shared vCPUs are noisy.
"""
from __future__ import annotations

import socket
import statistics
import subprocess
import sys
import textwrap
from pathlib import Path

from control.emulation import Emulation

from .harness import Row

TOPOLOGY = Path(__file__).resolve().parent.parent / "topologies" / "single_lan.yaml"
RTT_COUNT = 400
RTT_INTERVAL = 0.002        # s, as bench node's ping
PORT = 7777
SYSCALLS = 20_000
BLAST_SECONDS = 2.0
DATAGRAM = 1472
PY = sys.executable

ECHO = textwrap.dedent("""
    import socket, sys
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind(("0.0.0.0", int(sys.argv[1])))
    print("ready", flush=True)
    while True:
        data, peer = s.recvfrom(2048)
        s.sendto(data, peer)
""")

CLIENT = textwrap.dedent("""
    import socket, statistics, sys, time
    count, interval = int(sys.argv[2]), float(sys.argv[3])
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.connect((sys.argv[1], int(sys.argv[4])))
    s.settimeout(2)
    rtts = []
    for i in range(count + 20):
        start = time.perf_counter()
        s.send(b"x" * 56)
        s.recv(2048)
        if i >= 20:
            rtts.append(time.perf_counter() - start)
        time.sleep(interval)
    print(statistics.median(rtts))
""")

GETSOCKNAME = textwrap.dedent("""
    import socket, sys, time
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind(("0.0.0.0", 0))
    n = int(sys.argv[1])
    for _ in range(500):
        s.getsockname()
    start = time.perf_counter()
    for _ in range(n):
        s.getsockname()
    print((time.perf_counter() - start) / n)
""")

RECEIVER = textwrap.dedent("""
    import socket, sys, time
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
    s.bind(("0.0.0.0", int(sys.argv[1])))
    s.settimeout(5)
    print("ready", flush=True)
    s.recv(2048)
    first = last = time.perf_counter()
    count = 0
    s.settimeout(0.5)
    try:
        while True:
            s.recv(2048)
            count += 1
            last = time.perf_counter()
    except socket.timeout:
        pass
    print(count / (last - first) if last > first else 0.0)
""")

SENDER = textwrap.dedent("""
    import socket, sys, time
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.connect((sys.argv[1], int(sys.argv[2])))
    payload = b"x" * int(sys.argv[3])
    end = time.perf_counter() + float(sys.argv[4])
    sent = 0
    while time.perf_counter() < end:
        s.send(payload)
        sent += 1
    print(sent)
""")


def _ready(process: subprocess.Popen) -> None:
    line = process.stdout.readline()
    if line.strip() != "ready":
        raise RuntimeError(f"the program did not start: {line!r} {process.stderr.read() if process.stderr else ''}")


def _stop(process: subprocess.Popen) -> None:
    process.kill()
    process.wait()


def _kernel_ping_rtt(net: Emulation) -> float:
    result = net["h1"].ping("h2", count=RTT_COUNT, interval=RTT_INTERVAL, timeout=2.0)
    return statistics.median(result.rtts) / 1e3


def _program_rtt(net: Emulation, h2: str) -> float:
    result = net["h1"].run([PY, "-c", CLIENT, h2, str(RTT_COUNT), str(RTT_INTERVAL), str(PORT)],
                           capture_output=True, text=True, timeout=120)
    if result.returncode:
        raise RuntimeError(result.stderr)
    return float(result.stdout)


def _api_rtt(net: Emulation, h2: str) -> float:
    import time
    sock = net["h1"].socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        sock.connect((h2, PORT))
        sock.settimeout(2)
        rtts = []
        for i in range(RTT_COUNT + 20):
            start = time.perf_counter()
            sock.send(b"x" * 56)
            sock.recv(2048)
            if i >= 20:
                rtts.append(time.perf_counter() - start)
            time.sleep(RTT_INTERVAL)
        return statistics.median(rtts)
    finally:
        sock.close()


def _syscall_round_trips(net: Emulation) -> tuple[float, float]:
    trapped = net["h1"].run([PY, "-c", GETSOCKNAME, str(SYSCALLS)], capture_output=True, text=True, timeout=120)
    native = subprocess.run([PY, "-c", GETSOCKNAME, str(SYSCALLS)], capture_output=True, text=True, timeout=120,
                            check=True)
    if trapped.returncode:
        raise RuntimeError(trapped.stderr)
    return float(trapped.stdout), float(native.stdout)


def _datagram_rate(net: Emulation, h2: str) -> tuple[float, int]:
    receiver = net["h2"].exec([PY, "-u", "-c", RECEIVER, str(PORT + 1)], stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True)
    try:
        _ready(receiver)
        sender = net["h1"].run([PY, "-c", SENDER, h2, str(PORT + 1), str(DATAGRAM), str(BLAST_SECONDS)],
                               capture_output=True, text=True, timeout=120)
        if sender.returncode:
            raise RuntimeError(sender.stderr)
        out, err = receiver.communicate(timeout=60)
        return float(out.split()[-1]), int(sender.stdout)
    finally:
        if receiver.poll() is None:
            _stop(receiver)


def run() -> list[Row]:
    from . import node
    with Emulation(TOPOLOGY, name="bench-sockets") as net:
        h2 = net["h2"].addresses[0].split("/")[0]
        echo = net["h2"].exec([PY, "-u", "-c", ECHO, str(PORT)], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True)
        try:
            _ready(echo)
            kernel, program, api = [], [], []
            for _ in range(3):            # alternating rounds, as bench node does
                kernel.append(_kernel_ping_rtt(net))
                program.append(_program_rtt(net, h2))
                api.append(_api_rtt(net, h2))
        finally:
            _stop(echo)
        trapped, native = _syscall_round_trips(net)
        rate, sent = _datagram_rate(net, h2)
    forwarding = node.router_forwarding()
    kernel_rtt = statistics.median(kernel) * 1e6
    note = f"3 alternating rounds of {RTT_COUNT} echoes every {RTT_INTERVAL * 1e3:g} ms across a switch"
    return [
        Row("UDP RTT program to program", statistics.median(program) * 1e6, "us", kernel_rtt,
            "kernel ping RTT, same path and pacing", f"<= 1.5 ({note}; echo: trapped recvfrom/sendto)"),
        Row("UDP RTT in-process API", statistics.median(api) * 1e6, "us", kernel_rtt,
            "kernel ping RTT, same path and pacing", note),
        Row("trapped syscall round trip", trapped * 1e6, "us", native * 1e6, "native getsockname, no trap",
            f"<= 30 us (getsockname x {SYSCALLS} in a program on h1)"),
        Row(f"UDP {DATAGRAM} B datagrams/s", rate, "datagrams/s", forwarding["rate"],
            "router forwarding 1514 B frames/s",
            f"one way, program to program across a switch for {BLAST_SECONDS:g} s; {sent} sent"),
    ]
