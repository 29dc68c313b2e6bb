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


# ---------------------------------------------------------------- one relay hop

def _relay(endpoint_in: str, ready: "multiprocessing.synchronize.Event") -> None:
    """A bare ROUTER relay: what arrives from `a` goes to `b` and back, unchanged (no netemu code)."""
    context = zmq.Context()
    router = context.socket(zmq.ROUTER)
    router.setsockopt(zmq.ROUTER_MANDATORY, 1)  # block on a full peer instead of dropping silently
    router.setsockopt(zmq.SNDHWM, 1000)
    router.setsockopt(zmq.RCVHWM, 1000)
    router.bind(endpoint_in)
    ready.set()
    peer = {b"a": b"b", b"b": b"a"}
    recv, send = router.recv_multipart, router.send_multipart
    try:
        while True:
            router.poll()
            while True:
                try:
                    identity, message = recv(zmq.NOBLOCK)
                except zmq.Again:
                    break
                if message == b"quit":
                    return
                if message:
                    while True:
                        try:
                            send((peer[identity], message), copy=False)
                            break
                        except zmq.ZMQError:
                            time.sleep(0.001)  # the peer has not connected yet
    finally:
        router.close(linger=0)
        context.term()


def _start_relay(directory: str) -> tuple[str, "multiprocessing.process.BaseProcess"]:
    endpoint = _private_endpoint(directory, "relay")
    ready = _fork.Event()
    relay = _fork.Process(target=_relay, args=(endpoint, ready), daemon=True)
    relay.start()
    ready.wait(10)
    return endpoint, relay


def _dealer(context: zmq.Context, endpoint: str, identity: bytes) -> zmq.Socket:
    socket = context.socket(zmq.DEALER)
    socket.setsockopt(zmq.ROUTING_ID, identity)
    socket.setsockopt(zmq.LINGER, 0)
    socket.setsockopt(zmq.SNDHWM, 1000)
    socket.setsockopt(zmq.RCVHWM, 1000)
    socket.connect(endpoint)
    socket.send(b"")  # hello, so the relay knows us before traffic flows
    return socket


def _relay_sender(endpoint: str, messages: list[bytes], done: "multiprocessing.synchronize.Event") -> None:
    context = zmq.Context()
    dealer = _dealer(context, endpoint, b"a")
    time.sleep(0.05)
    for message in messages:
        dealer.send(message, copy=False)
    # Stay connected until the receiver has everything: libzmq drops what is
    # still unread in the socket buffer when a sender disconnects behind a full pipe.
    done.wait(60)
    dealer.close(linger=0)
    context.term()


def relay_elapsed(messages: list[bytes]) -> float:
    """Seconds a bare ROUTER relay process (DEALER -> relay -> DEALER, ipc) takes to carry
    `messages[1:]` (the first one starts the clock), each moved as an opaque blob."""
    with tempfile.TemporaryDirectory(prefix="netemu-bench-") as directory:
        endpoint, relay = _start_relay(directory)
        context = zmq.Context()
        receiver = _dealer(context, endpoint, b"b")
        time.sleep(0.05)
        done = _fork.Event()
        sender = _fork.Process(target=_relay_sender, args=(endpoint, messages, done))
        sender.start()
        receiver.recv()
        start = time.perf_counter()
        for _ in range(len(messages) - 1):
            receiver.recv(copy=False)
        elapsed = time.perf_counter() - start
        done.set()
        sender.join()
        receiver.send(b"quit")
        relay.join(5)
        receiver.close(linger=0)
        context.term()
    return elapsed


def relay_frame_rate(size: int = 1514, count: int = 100_000, batch: int = 1) -> float:
    """Frames per second through a bare ROUTER relay process (DEALER -> relay -> DEALER), ipc.

    `batch` = 1: one raw frame per message, the plain ZeroMQ limit of one hop.
    `batch` > 1: that many frames joined into one message, which the relay
    moves as an opaque blob: the best any batching relay could do.
    """
    frame = bytes(size)
    message = frame if batch == 1 else (size.to_bytes(2, "big") + frame) * batch
    messages = max(2, count // batch)
    return (messages - 1) * batch / relay_elapsed([message] * messages)


def _echo(endpoint: str, identity: bytes) -> None:
    context = zmq.Context()
    dealer = _dealer(context, endpoint, identity)
    try:
        while True:
            message = dealer.recv()
            if message == b"quit":
                return
            dealer.send(message)
    finally:
        dealer.close(linger=0)
        context.term()


def round_trip_times(endpoint: str, frame: bytes, count: int, *, pack: bool, warmup: int = 200) -> list[float]:
    """RTT samples (seconds) of `frame` from identity `a` to an echoing `b` and back through `endpoint`."""
    message = (len(frame).to_bytes(2, "big") + frame) if pack else frame
    context = zmq.Context()
    dealer = _dealer(context, endpoint, b"a")
    samples = []
    try:
        for i in range(warmup + count):
            start = time.perf_counter()
            dealer.send(message)
            dealer.recv()
            if i >= warmup:
                samples.append(time.perf_counter() - start)
    finally:
        dealer.close(linger=0)
        context.term()
    return samples


def relay_rtt(size: int = 64, count: int = 2000) -> list[float]:
    """Round-trip samples (seconds) of one frame through a bare ROUTER relay to an echo and back."""
    with tempfile.TemporaryDirectory(prefix="netemu-bench-") as directory:
        endpoint, relay = _start_relay(directory)
        echo = _fork.Process(target=_echo, args=(endpoint, b"b"))
        echo.start()
        time.sleep(0.1)
        samples = round_trip_times(endpoint, bytes(size), count, pack=False)
        context = zmq.Context()
        quitter = _dealer(context, endpoint, b"a")
        quitter.send(b"quit")  # to the relay: it stops; the echo gets killed below
        relay.join(5)
        quitter.close(linger=0)
        context.term()
        echo.terminate()
        echo.join(5)
    return samples
