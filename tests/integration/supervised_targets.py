"""Small stand-ins for bus devices and kernels, for the supervisor's tests.

Each is a `run(config) -> int` like the real processes: it binds a ROUTER on
`config["control"]`, answers `status` and `shutdown` in msgpack, exits 0 on
SIGTERM, and leaves with its parent (`config["parent_pid"]`). Knobs in the
config make it misbehave: `crash_after` (seconds, then exit `exit_code` with a
message on stderr), `ignore_sigterm`, `ignore_shutdown`, `start_delay`,
`grandchild` (forks a child that sleeps forever in the same process group).
"""
from __future__ import annotations

import os
import random
import signal
import sys
import time

import msgpack
import zmq


class _Stop(Exception):
    pass


def _raise_stop(signum: int, frame: object) -> None:
    raise _Stop()


def serve(config: dict) -> int:
    """Answer control requests until told to stop; misbehave as the config asks."""
    started = time.monotonic()
    if config.get("start_delay"):
        time.sleep(config["start_delay"])
    signal.signal(signal.SIGTERM, signal.SIG_IGN if config.get("ignore_sigterm") else _raise_stop)
    print(f"{config['name']}: serving on {config['control']}", flush=True)
    grandchild = None
    if config.get("grandchild"):
        grandchild = os.fork()
        if grandchild == 0:
            signal.signal(signal.SIGTERM, signal.SIG_IGN)
            while True:
                signal.pause()          # a grandchild that lives until it is killed
    crash_at = started + config["crash_after"] if config.get("crash_after") is not None else None
    context = zmq.Context()
    router = context.socket(zmq.ROUTER)
    router.linger = 0
    endpoint = config["control"]
    router.bind(endpoint)
    try:
        while True:
            now = time.monotonic()
            if crash_at is not None and now >= crash_at:
                print(f"{config['name']}: simulated failure, goodbye", file=sys.stderr, flush=True)
                return config.get("exit_code", 3)
            if config.get("parent_pid") and os.getppid() != config["parent_pid"]:
                return 0
            wait = 200 if crash_at is None else max(0, min(200, int((crash_at - now) * 1000)))
            if not router.poll(wait):
                continue
            frames = router.recv_multipart()
            request = msgpack.unpackb(frames[-1], raw=False)
            op = request.get("op")
            if op == "status":
                result = {"name": config["name"], "kind": "test", "pid": os.getpid(),
                          "uptime": time.monotonic() - started, "parent_pid": config.get("parent_pid"),
                          "grandchild": grandchild, "random": random.random()}
                reply = {"ok": True, "result": result}
            elif op == "shutdown":
                reply = {"ok": True, "result": None}
            elif op == "echo":
                reply = {"ok": True, "result": request.get("value")}
            else:
                reply = {"ok": False, "error": f"unknown op {op!r}", "errno": None}
            router.send_multipart(frames[:-1] + [msgpack.packb(reply, use_bin_type=True)])
            if op == "shutdown" and not config.get("ignore_shutdown"):
                return 0
    except _Stop:
        return 0
    finally:
        router.close(0)
        context.term()
        if endpoint.startswith("ipc://"):
            try:
                os.unlink(endpoint[len("ipc://"):])
            except FileNotFoundError:
                pass


def fail_at_once(config: dict) -> int:
    """Raise straight away: the zygote logs the traceback and exits 1."""
    raise RuntimeError(f"{config['name']} cannot start: broken on purpose")
