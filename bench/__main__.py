"""`python -m bench NAME [NAME...]` or `python -m bench all`."""
from __future__ import annotations

import argparse
import importlib
import inspect
import pkgutil
import sys
from pathlib import Path

from .harness import report

_NOT_BENCHMARKS = {"harness", "baseline", "fuzzframes", "__main__"}


def available() -> list[str]:
    here = Path(__file__).resolve().parent
    return sorted(m.name for m in pkgutil.iter_modules([str(here)]) if m.name not in _NOT_BENCHMARKS and not m.name.startswith("_"))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description="Run netemu benchmarks.")
    parser.add_argument("names", nargs="+", help=f"benchmarks to run, or 'all' ({', '.join(available())}); "
                                                 "options after the names go to benchmarks whose run() takes argv "
                                                 "(e.g. `fuzz --frames 100000`)")
    args, options = parser.parse_known_args(argv)
    names = available() if args.names == ["all"] else args.names
    unknown = [n for n in names if n not in available()]
    if unknown:
        parser.error(f"unknown benchmark(s): {', '.join(unknown)}; choose from {', '.join(available())}")
    modules = {name: importlib.import_module(f"bench.{name}") for name in names}
    takes_options = {name for name, module in modules.items() if "argv" in inspect.signature(module.run).parameters}
    if options and not takes_options:
        parser.error(f"unrecognized arguments: {' '.join(options)} (none of {', '.join(names)} takes options)")
    for name, module in modules.items():
        report(name, module.run(options) if name in takes_options else module.run())
    return 0


if __name__ == "__main__":
    sys.exit(main())
