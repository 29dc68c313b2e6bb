"""`python -m bench NAME [NAME...]` or `python -m bench all`."""
from __future__ import annotations

import argparse
import importlib
import pkgutil
import sys
from pathlib import Path

from .harness import report

_NOT_BENCHMARKS = {"harness", "baseline", "__main__"}


def available() -> list[str]:
    here = Path(__file__).resolve().parent
    return sorted(m.name for m in pkgutil.iter_modules([str(here)]) if m.name not in _NOT_BENCHMARKS and not m.name.startswith("_"))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description="Run netemu benchmarks.")
    parser.add_argument("names", nargs="+", help=f"benchmarks to run, or 'all' ({', '.join(available())})")
    args = parser.parse_args(argv)
    names = available() if args.names == ["all"] else args.names
    unknown = [n for n in names if n not in available()]
    if unknown:
        parser.error(f"unknown benchmark(s): {', '.join(unknown)}; choose from {', '.join(available())}")
    for name in names:
        module = importlib.import_module(f"bench.{name}")
        report(name, module.run())
    return 0


if __name__ == "__main__":
    sys.exit(main())
