"""Run scripts from a shell: `python -m tests.unit.nodes.tcp.drill [SCRIPT.pkt ...]`.

Without arguments it runs scripts/*.pkt and scripts/pending/*.pkt. Prints PASS or the
failure (FILE:LINE, expected and actual segment) per script; exits 1 if any failed."""
from __future__ import annotations

import sys
from pathlib import Path

from .parser import ScriptError
from .runner import run_file


def main(arguments: list[str]) -> int:
    here = Path(__file__).parent / "scripts"
    paths = [Path(argument) for argument in arguments] or sorted(here.glob("*.pkt")) + sorted(
        (here / "pending").glob("*.pkt"))
    failed = 0
    for path in paths:
        try:
            run_file(path)
        except ScriptError as error:
            failed += 1
            print(f"FAIL {error}")
        else:
            print(f"PASS {path}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
