"""control.zygote.warm_up: each preloaded module's `zygote_warm_up` runs once; failures are reported, not fatal."""
from __future__ import annotations

import sys
import types

import pytest

from control.zygote import warm_up


@pytest.fixture
def modules():
    calls: list[str] = []
    made = {
        "warm_ok": types.ModuleType("warm_ok"),
        "warm_broken": types.ModuleType("warm_broken"),
        "warm_none": types.ModuleType("warm_none"),
    }
    made["warm_ok"].zygote_warm_up = lambda: calls.append("warm_ok")

    def broken() -> None:
        calls.append("warm_broken")
        raise RuntimeError("no luck")

    made["warm_broken"].zygote_warm_up = broken
    made["warm_none"].zygote_warm_up = "not callable"
    sys.modules.update(made)
    try:
        yield calls
    finally:
        for name in made:
            sys.modules.pop(name, None)


def test_every_hook_runs_once_and_a_failure_is_reported(modules):
    failed = warm_up(["warm_broken", "warm_none", "warm_ok", "not_imported"])
    assert modules == ["warm_broken", "warm_ok"]
    assert failed == {"warm_broken": "RuntimeError: no luck"}
