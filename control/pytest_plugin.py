"""pytest plugin: the `emulation` fixture, so a scenario test is `def test_x(emulation): ...`.

Installed with netemu (entry point `pytest11`), so any project that installs
netemu gets it. Choose the topology per test with a marker, or for a whole
suite with the `netemu_topology` ini option:

    @pytest.mark.topology("topologies/two_lans.yaml")
    def test_ping(emulation):
        assert emulation["h1"].ping("h2").received == 3

The emulation starts before the test and is torn down after it, pass or fail.
Marker keyword arguments go to `Emulation` (e.g. `seed=7`).

Crashes are loud: a process of the emulation that exited unexpectedly fails
the test at teardown (with its exit status and the last lines of its log),
unless the test asked for it: `emulation["r1"].kill()`, or
`emulation.expect_crash("r1")` for an exit the test provokes otherwise.
"""
from __future__ import annotations

from pathlib import Path
from typing import Iterator

import pytest


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addini("netemu_topology", "default topology file for the `emulation` fixture", default="")


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "topology(path, **options): the topology the `emulation` fixture starts")


@pytest.fixture
def emulation(request: pytest.FixtureRequest) -> Iterator["Emulation"]:  # noqa: F821
    """A running `Emulation` of the test's topology, torn down after the test."""
    from control.emulation import Emulation

    marker = request.node.get_closest_marker("topology")
    options: dict = {}
    if marker is not None:
        if not marker.args:
            raise pytest.UsageError("@pytest.mark.topology needs a topology path")
        path = marker.args[0]
        options = dict(marker.kwargs)
    else:
        path = request.config.getini("netemu_topology")
        if not path:
            raise pytest.UsageError("the emulation fixture needs @pytest.mark.topology(PATH) "
                                    "or the netemu_topology ini option")
    topology = Path(path)
    if not topology.is_absolute():
        topology = Path(request.config.rootpath) / topology
    with Emulation(topology, **options) as net:
        yield net
        crashes = net.unexpected_crashes()
    if crashes:
        lines = [f"{len(crashes)} process(es) of emulation {net.name!r} exited unexpectedly "
                 "(call emulation.expect_crash(NAME) if the test means it):"]
        for event in crashes:
            lines.append(f"  {event.describe()}; last lines of its log:")
            lines.extend(f"    {line}" for line in event.log_tail[-10:])
        pytest.fail("\n".join(lines), pytrace=False)
