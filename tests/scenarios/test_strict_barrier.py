"""The suite fails an emulation whose nodes' exception barrier caught anything (issue 10)."""
from __future__ import annotations

import pytest

import control.emulation as emulation_module
from control.emulation import Emulation, EmulationError

from .helpers import topology

pytestmark = pytest.mark.timeout(60)


def test_the_suite_runs_emulations_strict():
    with Emulation(topology("single_lan"), name="scn-strict-default") as net:
        assert net.strict is True
        assert net.barrier_exceptions() == {}


def test_leaving_an_emulation_whose_node_counted_rx_exceptions_fails(monkeypatch):
    real = emulation_module.call_concurrently

    def counters_with_a_caught_exception(requests, timeout, *args, **kwargs):
        replies = real(requests, timeout, *args, **kwargs)
        for (endpoint, op, _), reply in zip(requests, replies):
            if op == "counters" and endpoint.endswith("/h1.ctl") and isinstance(reply, dict):
                reply["softnet"]["rx_exceptions"] += 2  # as a node whose barrier caught two frames reports it
        return replies

    net = Emulation(topology("single_lan"), name="scn-strict-caught")
    with pytest.raises(EmulationError, match=r"h1: 2"):
        with net:
            monkeypatch.setattr(emulation_module, "call_concurrently", counters_with_a_caught_exception)
    assert not net.supervisor.processes["h1"].alive  # torn down all the same


def test_a_block_that_raised_keeps_its_own_exception():
    with pytest.raises(KeyError):
        with Emulation(topology("single_lan"), name="scn-strict-raised") as net:
            raise KeyError("the test's own failure")
    assert not net.supervisor.processes["h1"].alive
