"""Raw ZeroMQ limits measured in the same run as a benchmark, to compare against.

Each function runs a bare sender/receiver (or relay) in forked processes on a
private ipc endpoint and returns the figure; nothing of netemu is involved.
"""
from __future__ import annotations

import multiprocessing
import os
import tempfile
import time

import zmq

_fork = multiprocessing.get_context("fork")


def _private_endpoint(directory: str, name: str) -> str:
    return f"ipc://{os.path.join(directory, name)}"


def _push_frames(endpoint: str, size: int, count: int) -> None:
    context = zmq.Context()
    push = context.socket(zmq.PUSH)
    push.setsockopt(zmq.SNDHWM, 100_000)
    push.connect(endpoint)
    frame = bytes(size)
    for _ in range(count):
        push.send(frame, copy=False if size > 1024 else True)
    push.close(linger=-1)
    context.term()


def zmq_frame_rate(size: int = 1514, count: int = 100_000) -> float:
    """Frames per second, one raw frame per message, PUSH -> PULL between two processes over ipc."""
    with tempfile.TemporaryDirectory(prefix="netemu-bench-") as directory:
        endpoint = _private_endpoint(directory, "pushpull")
        context = zmq.Context()
        pull = context.socket(zmq.PULL)
        pull.setsockopt(zmq.RCVHWM, 100_000)
        pull.bind(endpoint)
        sender = _fork.Process(target=_push_frames, args=(endpoint, size, count))
        sender.start()
        pull.recv()
        start = time.perf_counter()
        for _ in range(count - 1):
            pull.recv(copy=False)
        elapsed = time.perf_counter() - start
        sender.join()
        pull.close(linger=0)
        context.term()
    return (count - 1) / elapsed
