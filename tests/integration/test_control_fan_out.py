"""`ControlClient.fan_out`: many control requests at once, the one fan-out the supervisor and the scenario API use.

Servers are `ControlServer`s answered by a thread of this process over real
ipc sockets; one endpoint has nobody behind it (a dead process).
"""
from __future__ import annotations

import threading
import time

import pytest
import zmq

from bus.transport import ControlClient, ControlError, ControlServer, ControlTimeout, Deferred

pytestmark = pytest.mark.timeout(30)


@pytest.fixture
def servers(run_dir):
    """Three live servers `s0..s2`: `echo` returns its server's name and the value, `boom` raises,
    `flaky` never answers its first call and returns the call count afterwards."""
    context = zmq.Context()
    stop = threading.Event()
    endpoints = {f"s{i}": f"ipc://{run_dir}/s{i}.ctl" for i in range(3)}
    live = []
    for name, endpoint in endpoints.items():
        def boom() -> None:
            raise ValueError("no such thing")
        calls = []

        def flaky(calls=calls) -> object:
            calls.append(1)
            return Deferred() if len(calls) == 1 else len(calls)  # the first one is never answered
        live.append(ControlServer(context, endpoint, {"echo": lambda value, name=name: [name, value], "boom": boom,
                                                      "flaky": flaky}))

    def serve() -> None:
        poller = zmq.Poller()
        for server in live:
            poller.register(server.socket, zmq.POLLIN)
        while not stop.is_set():
            for sock, _ in poller.poll(20):
                next(s for s in live if s.socket is sock).handle_pending()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield {**endpoints, "dead": f"ipc://{run_dir}/dead.ctl"}
    finally:
        stop.set()
        thread.join(2.0)
        for server in live:
            server.close()
        context.term()


def test_outcomes_come_back_in_request_order_errors_as_values(servers):
    requests = [(servers["s2"], "echo", {"value": 2}), (servers["dead"], "echo", {"value": 0}),
                (servers["s0"], "boom", None), (servers["s1"], "echo", {"value": 1}),
                (servers["s0"], "nope", {})]
    began = time.monotonic()
    outcomes = ControlClient.fan_out(requests, timeout=0.5)
    elapsed = time.monotonic() - began
    assert outcomes[0] == ["s2", 2] and outcomes[3] == ["s1", 1]
    assert isinstance(outcomes[1], ControlTimeout) and "no reply to 'echo' within 0.5 s" in str(outcomes[1])
    assert type(outcomes[2]) is ControlError and str(outcomes[2]) == "no such thing" and outcomes[2].op == "boom"
    assert type(outcomes[4]) is ControlError and "unknown op 'nope'" in str(outcomes[4])
    assert 0.5 <= elapsed < 4.0  # waits for the dead one until the timeout, not much longer


def test_all_answered_returns_without_waiting_for_the_timeout(servers):
    began = time.monotonic()
    outcomes = ControlClient.fan_out([(servers[f"s{i % 3}"], "echo", {"value": i}) for i in range(30)], timeout=10.0)
    assert outcomes == [[f"s{i % 3}", i] for i in range(30)]
    assert time.monotonic() - began < 5.0


def test_a_window_of_one_still_sends_everything_and_on_reply_sees_each_answer(servers):
    seen = []
    requests = [(servers[f"s{i % 3}"], "echo", {"value": i}) for i in range(7)]
    outcomes = ControlClient.fan_out(requests, timeout=5.0, window=1, on_reply=lambda i, o: seen.append((i, o)))
    assert outcomes == [[f"s{i % 3}", i] for i in range(7)]
    assert seen == list(enumerate(outcomes))  # one in flight at a time: in order


def test_skip_and_abort_end_the_wait_early(servers):
    began = time.monotonic()
    outcomes = ControlClient.fan_out([(servers["dead"], "echo", {"value": 1}), (servers["s0"], "echo", {"value": 2})],
                                     timeout=10.0, skip=lambda index: index == 0)
    assert isinstance(outcomes[0], ControlTimeout) and outcomes[1] == ["s0", 2]
    aborted = ControlClient.fan_out([(servers["dead"], "echo", {"value": 1})], timeout=10.0, abort=lambda: True)
    assert isinstance(aborted[0], ControlTimeout)
    assert time.monotonic() - began < 5.0


def test_an_unanswered_request_goes_again_after_the_retry_interval(servers):
    # s0's `flaky` leaves its first request unanswered (a reply that never comes), answers the next ones
    assert ControlClient.fan_out([(servers["s0"], "flaky", None)], timeout=0.5)[0].__class__ is ControlTimeout
    assert ControlClient.fan_out([(servers["s1"], "flaky", None)], timeout=5.0, retry_interval=0.2) == [2]
