"""`netemu`: the command line of the emulator (thin: the work lives in control/)."""
from __future__ import annotations

import argparse
import sys

VERBS = {
    "up": "start a topology (TOPO.yaml [-d]); foreground gives the netemu> CLI",
    "down": "stop a detached emulation (NAME)",
    "status": "processes, PIDs, liveness, per-link counters (NAME)",
    "check": "validate a topology file only (TOPO.yaml)",
    "attach": "interactive shell on a node (NODE)",
    "exec": "run a program whose AF_INET sockets use a node's stack (NODE -- CMD...)",
    "capture": "start/stop a capture on a running segment (SEGMENT -w FILE.pcap)",
    "graph": "draw a topology (TOPO.yaml -o FILE.svg|png)",
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="netemu",
        description="Multiprocess network emulator: one user-space TCP/IP stack per node.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="verbs:\n" + "\n".join(f"  {verb:<8} {text}" for verb, text in VERBS.items()),
    )
    parser.add_argument("verb", choices=list(VERBS), metavar="VERB", help="one of: " + ", ".join(VERBS))
    parser.add_argument("args", nargs=argparse.REMAINDER, help="arguments of the verb")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    print(f"netemu {args.verb}: not implemented yet (arrives with the launcher issue)", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
