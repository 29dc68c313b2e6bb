"""The process runtime in-process: event loop timers and readers, signal wakeup, parent check."""
from __future__ import annotations

import os
import signal

import pytest
import zmq

from bus.runtime import EventLoop, Lifecycle, prepare_process
from tests.fakes import FakeClock

pytestmark = pytest.mark.timeout(10)


def test_timers_run_in_deadline_order_and_cancelled_ones_never():
    clock = FakeClock(100.0)
    loop = EventLoop(clock)
    fired = []
    loop.call_at(100.3, fired.append, "c")
    loop.call_at(100.1, fired.append, "a")
    cancelled = loop.call_at(100.2, fired.append, "never")
    loop.call_later(0.15, fired.append, "b")
    cancelled.cancel()
    assert loop.next_timeout_ms(clock.now) == 100
    clock.now = 100.25
    loop.run_due_timers(clock.now)
    assert fired == ["a", "b"]
    assert loop.next_timeout_ms(clock.now) == 50
    clock.now = 101.0
    loop.run_due_timers(clock.now)
    assert fired == ["a", "b", "c"]
    assert loop.next_timeout_ms(clock.now) == int(EventLoop.MAX_SLEEP * 1000)


def test_poll_timeout_rounds_up_so_the_loop_never_wakes_early():
    loop = EventLoop(FakeClock(100.0))
    loop.call_at(100.0201, lambda: None)
    assert loop.next_timeout_ms(100.0) == 21


def test_call_every_repeats():
    clock = FakeClock(100.0)
    loop = EventLoop(clock)
    ticks = []
    loop.call_every(1.0, lambda: ticks.append(clock.now))
    for step in range(1, 4):
        clock.now = 100.0 + step
        loop.run_due_timers(clock.now)
    assert ticks == [101.0, 102.0, 103.0]


def test_reader_callbacks_and_end_of_pass_hooks_run_each_pass():
    context = zmq.Context()
    try:
        a, b = context.socket(zmq.PAIR), context.socket(zmq.PAIR)
        a.bind("inproc://loop-test")
        b.connect("inproc://loop-test")
        loop = EventLoop()
        got, passes = [], []

        def drain():
            while True:
                try:
                    got.append(b.recv(zmq.NOBLOCK))
                except zmq.Again:
                    return

        loop.add_reader(b, drain)
        loop.add_end_of_pass(lambda: passes.append(len(got)))
        a.send(b"one")
        a.send(b"two")
        loop.run_once(timeout_ms=1000)
        assert got == [b"one", b"two"] and passes == [2]
        loop.remove_reader(b)
        a.send(b"three")
        loop.run_once(timeout_ms=10)
        assert got == [b"one", b"two"]
        a.close(linger=0)
        b.close(linger=0)
    finally:
        context.term()


def test_sigterm_wakes_a_sleeping_loop_and_stops_it():
    lifecycle = prepare_process({"name": "t", "parent_pid": None})
    try:
        loop = EventLoop()
        loop.attach_lifecycle(lifecycle)
        loop.call_later(0.05, os.kill, os.getpid(), signal.SIGTERM)
        fallback: list[str] = []
        loop.call_later(5.0, fallback.append, "the loop slept through the signal until its next timer")
        loop.run()
        assert fallback == []  # the signal woke it, not the next timer
        assert lifecycle.stop_requested and lifecycle.stop_reason == "SIGTERM"
    finally:
        lifecycle.restore()
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL


def test_parent_check_requests_a_stop_when_the_parent_is_not_ours():
    lifecycle = Lifecycle("t", parent_pid=os.getppid())
    assert lifecycle.parent_alive()
    lifecycle.check_parent()
    assert not lifecycle.stop_requested
    orphan = Lifecycle("t", parent_pid=1 if os.getppid() != 1 else 2)
    stopped = []
    orphan.on_stop(lambda: stopped.append(True))
    orphan.check_parent()
    assert orphan.stop_requested and stopped == [True] and "died" in orphan.stop_reason
