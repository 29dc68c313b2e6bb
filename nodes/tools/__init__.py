"""The node's command-line tools, as programs: `ip`, `ss`, `sysctl`, `arp`, `route`.

`netemu exec` and `netemu attach` put `BIN_DIR` first on PATH, so `ip route`
run by a program on node h1 shows h1's routes, never the host's. Each file of
`bin/` is a two-line shell shim running `python -m nodes.tools.TOOL` with the
netemu interpreter (`$NETEMU_PYTHON`); the tool talks to its node's kernel over
the control channel named by `$NETEMU_CONTROL` (see `common.py`).

The user side of a node: these modules import no stack module (nodes.kernel,
nodes.route, ...), only `bus.transport` and the standard library
(tests/unit/test_layering.py). docs/tools.md says what each tool supports.
"""
from __future__ import annotations

from pathlib import Path

BIN_DIR = str(Path(__file__).resolve().parent / "bin")
"""Absolute path of the directory of tool executables, to put first on a node program's PATH."""

TOOLS = ("ip", "ss", "sysctl", "arp", "route")
"""The programs in BIN_DIR, each the shim of the module `nodes.tools.<name>`."""

__all__ = ["BIN_DIR", "TOOLS"]
