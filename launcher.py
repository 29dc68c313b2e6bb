"""`netemu`: the command line of the emulator (thin: the work lives in control/).

    netemu up TOPO.yaml [-d]      start (foreground CLI, or detached)
    netemu down [NAME | --all]    stop a detached emulation (--all: every one, and stale run dirs)
    netemu status [NAME]          processes, PIDs, liveness, per-link counters
    netemu check TOPO.yaml        validate only
    netemu exec [--name N] NODE [-e VAR=VAL]... -- CMD ARGS...
                                  run a program with its sockets on NODE's stack
    netemu attach [--name N] NODE a shell on NODE (prompt `NODE$ `)
    netemu capture SEG -w FILE    start/stop a capture on a running segment
    netemu graph TOPO.yaml -o F   draw the topology

`from launcher import Emulation` is the scenario API for pytest and scripts.
"""
from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import sys
import time
from pathlib import Path
from typing import Any

from control.emulation import Emulation, EmulationError, Hop, LinkHandle, NodeHandle, PingResult, tap_problems  # noqa: F401

VERBS = {
    "up": "start a topology (TOPO.yaml [-d]); foreground gives the netemu> CLI",
    "down": "stop a detached emulation (NAME | --all)",
    "status": "processes, PIDs, liveness, per-link counters (NAME)",
    "check": "validate a topology file only (TOPO.yaml)",
    "attach": "interactive shell on a node (NODE): its programs use the node's stack",
    "exec": "run a program whose AF_INET sockets use a node's stack (NODE [-e VAR=VAL] -- CMD...)",
    "capture": "start/stop a capture on a running segment (SEGMENT -w FILE.pcap | --stop)",
    "graph": "draw a topology (TOPO.yaml -o FILE.svg|png)",
}

__all__ = ["Emulation", "EmulationError", "Hop", "LinkHandle", "NodeHandle", "PingResult", "main"]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="netemu",
        description="Multiprocess network emulator: one user-space TCP/IP stack per node.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="run `netemu VERB --help` for the options of a verb",
    )
    verbs = parser.add_subparsers(dest="verb", metavar="VERB", required=True)

    up = verbs.add_parser("up", help=VERBS["up"])
    up.add_argument("topology", help="topology YAML file")
    up.add_argument("-d", "--detach", action="store_true", help="run in the background; stop with `netemu down`")
    up.add_argument("--name", help="emulation name (default: the topology's name)")
    up.add_argument("--seed", type=int, default=0, help="seed of every random impairment (reproducible runs)")
    up.add_argument("--script", help="run the CLI commands in this file instead of reading stdin")
    up.add_argument("--keep-logs", action="store_true", help="keep per-process logs after teardown")
    _cluster_options(up)
    up.add_argument("--no-encrypt", action="store_true",
                    help="with --cluster: plaintext links between machines (trusted networks only)")

    down = verbs.add_parser("down", help=VERBS["down"])
    down.add_argument("name", nargs="?", help="emulation name (default: the only one running)")
    down.add_argument("--all", action="store_true",
                      help="stop every running emulation of this user and remove stale run directories")

    status = verbs.add_parser("status", help=VERBS["status"])
    status.add_argument("name", nargs="?", help="emulation name (default: list them all)")
    status.add_argument("--json", action="store_true", help="machine-readable output")

    check = verbs.add_parser("check", help=VERBS["check"])
    check.add_argument("topology")
    _cluster_options(check)

    attach = verbs.add_parser("attach", help=VERBS["attach"])
    attach.add_argument("--name", help="emulation name (default: the only one running)")
    attach.add_argument("node", help="the node (h1, r1...)")

    execute = verbs.add_parser("exec", help=VERBS["exec"], usage="netemu exec [--name N] NODE [-e VAR=VAL]... -- CMD ARGS...")
    execute.add_argument("--name", help="emulation name (default: the only one running)")
    execute.add_argument("-e", "--env", dest="env", action="append", default=[], metavar="VAR=VAL",
                         help="set an environment variable of the program (repeatable)")
    execute.add_argument("node", help="the node (h1, r1...)")
    execute.add_argument("command", nargs=argparse.REMAINDER, help="the program and its arguments, after --")

    capture = verbs.add_parser("capture", help=VERBS["capture"])
    capture.add_argument("segment")
    capture.add_argument("-w", dest="file", help="pcap file to write")
    capture.add_argument("--stop", action="store_true", help="stop the running capture")
    capture.add_argument("--name", help="emulation name (default: the only one running)")

    graph = verbs.add_parser("graph", help=VERBS["graph"])
    graph.add_argument("topology")
    graph.add_argument("-o", dest="output", required=True, help="output file (.svg or .png)")
    return parser


# -- helpers ------------------------------------------------------------------------


def _cluster_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--cluster", metavar="ADDRESS", help="run across the machines of a Ray cluster "
                        "(its address host:port, or auto); see docs/cluster.md")
    parser.add_argument("--insecure", action="store_true",
                        help="with --cluster: accept a Ray cluster without token authentication")


def _cluster_of(info: Any) -> Any:
    """The cluster record of a running emulation (control/cli_cluster.py), None on one machine."""
    if not (info.state or {}).get("cluster"):
        return None
    from control import cli_cluster

    return cli_cluster


def _error(message: str, code: int = 1) -> int:
    print(f"netemu: {message}", file=sys.stderr)
    return code


class _Progress:
    """A one-line progress bar on stderr for emulations of more than ~20 nodes."""

    def __init__(self, total_nodes: int) -> None:
        self.enabled = total_nodes > 20 and sys.stderr.isatty()
        self.enabled = self.enabled or (total_nodes > 20 and os.environ.get("NETEMU_PROGRESS") == "1")

    def __call__(self, label: str, ready: int, total: int) -> None:
        if not self.enabled:
            return
        width = 30
        filled = int(width * ready / total) if total else width
        sys.stderr.write(f"\rstarting {label:<8} [{'#' * filled}{'.' * (width - filled)}] {ready}/{total}")
        if ready >= total:
            sys.stderr.write("\n")
        sys.stderr.flush()


def _sweep_stale() -> None:
    """Remove the run directories of emulations whose supervisor died and whose processes are gone."""
    from control.rundir import sweep_stale

    for info in sweep_stale():
        print(f"netemu: removed the stale run directory of {info.name} (supervisor pid "
              f"{info.supervisor_pid} had died) at {info.path}", file=sys.stderr)


def _find_emulation(name: str | None) -> Any:
    from control.rundir import list_emulations

    found = [info for info in list_emulations() if info.alive]
    if name is not None:
        for info in found:
            if info.name == name:
                return info
        raise LookupError(f"no running emulation named {name!r}" + (
            f" (running: {', '.join(i.name for i in found)})" if found else " (none is running)"))
    if len(found) == 1:
        return found[0]
    if not found:
        raise LookupError("no emulation is running")
    raise LookupError(f"several emulations are running ({', '.join(i.name for i in found)}): name one")


# -- verbs --------------------------------------------------------------------------


def cmd_check(args: argparse.Namespace) -> int:
    from control.topology import TopologyError, format_summary, load_topology

    try:
        topology = load_topology(args.topology)
    except TopologyError as error:
        print(error, file=sys.stderr)
        return 1
    except OSError as error:
        return _error(f"{args.topology}: {error.strerror}")
    print(format_summary(topology))
    if args.cluster:
        from control.cli_cluster import check

        return check(topology, args.cluster, args.insecure)
    for problem in tap_problems(topology):  # validation needs no root; `up` would refuse
        print(f"netemu: warning: {problem} (netemu up will refuse)", file=sys.stderr)
    return 0


def _load(path: str) -> Any:
    from control.topology import TopologyError, load_topology

    try:
        return load_topology(path)
    except TopologyError as error:
        print(error, file=sys.stderr)
        return None
    except OSError as error:
        print(f"netemu: {path}: {error.strerror}", file=sys.stderr)
        return None


def cmd_up(args: argparse.Namespace) -> int:
    topology = _load(args.topology)
    if topology is None:
        return 1
    problems = tap_problems(topology)
    if problems:  # before anything starts
        return _error(f"cannot start {args.name or topology.name}: " + "; ".join(problems))
    _sweep_stale()
    if args.detach:
        return _up_detached(args, topology)
    from control.cli import run_shell

    started = time.monotonic()
    try:
        net = Emulation(topology, name=args.name, seed=args.seed, keep_logs=args.keep_logs,
                        progress=_Progress(len(topology.nodes)),  # a crash prints its own line on stderr
                        **_cluster_arguments(args))
        net.start()
    except Exception as error:  # noqa: BLE001 - report any start failure plainly
        return _error(f"cannot start {args.name or topology.name}: {error}")
    try:
        print(f"*** {net.name} ready in {time.monotonic() - started:.2f} s "
              f"(run directory {net.supervisor.run_dir.path})", flush=True)
        return run_shell(net, script_file=args.script)
    finally:
        began = time.monotonic()
        net.stop()
        print(f"*** {net.name} stopped in {time.monotonic() - began:.2f} s", flush=True)


def _cluster_arguments(args: argparse.Namespace, detached: bool = False) -> dict[str, Any]:
    if not args.cluster:
        return {}
    return {"cluster": args.cluster, "insecure": args.insecure, "encrypt": False if args.no_encrypt else None,
            "detached": detached}


def _up_detached(args: argparse.Namespace, topology: Any) -> int:
    """Fork a session leader that owns the emulation; return once it is ready (or failed)."""
    read_fd, write_fd = os.pipe()
    pid = os.fork()
    if pid == 0:  # the detached supervisor
        os.close(read_fd)
        os.setsid()
        devnull = os.open(os.devnull, os.O_RDWR)
        for fd in (0, 1, 2):
            os.dup2(devnull, fd)
        code = 0
        try:
            net = Emulation(topology, name=args.name, seed=args.seed, keep_logs=args.keep_logs,
                            **_cluster_arguments(args, detached=True))
            net.start()
        except BaseException as error:  # noqa: BLE001 - reported through the pipe
            os.write(write_fd, json.dumps({"ok": False, "error": str(error)}).encode())
            os._exit(1)
        os.write(write_fd, json.dumps({"ok": True, "name": net.name, "pid": os.getpid(),
                                       "run_dir": str(net.supervisor.run_dir.path)}).encode())
        os.close(write_fd)
        try:
            while True:  # SIGTERM (netemu down) raises Terminated through the supervisor's handler
                signal.pause()
        except BaseException:  # noqa: BLE001 - any way out tears down
            code = 0
        finally:
            net.stop()
        os._exit(code)
    os.close(write_fd)
    chunks = []
    while chunk := os.read(read_fd, 65536):
        chunks.append(chunk)
    os.close(read_fd)
    try:
        report = json.loads(b"".join(chunks) or b"{}")
    except json.JSONDecodeError:
        report = {}
    if not report.get("ok"):
        os.waitpid(pid, 0)
        return _error(f"cannot start {args.name or topology.name}: {report.get('error', 'detached supervisor died')}")
    print(f"*** {report['name']} running in the background (supervisor pid {report['pid']}, "
          f"run directory {report['run_dir']}); stop it with `netemu down {report['name']}`")
    return 0


def cmd_down(args: argparse.Namespace) -> int:
    from control.rundir import list_emulations

    if args.all:
        if args.name is not None:
            return _error("down: give a NAME or --all, not both", 2)
        infos = list_emulations()
        running = [i for i in infos if i.alive]
        stale = [i for i in infos if i.stale]
        if not running and not stale:
            print("no emulation is running")
            return 0
        failed = _stop(running)
        _remove_stale(stale)
        return 1 if failed else 0
    try:
        info = _find_emulation(args.name)
    except LookupError as error:
        stale = [i for i in list_emulations() if not i.alive and (args.name is None and i.stale or i.name == args.name)]
        if stale:
            _remove_stale(stale)
            return 0
        return _error(str(error))
    return 1 if _stop([info]) else 0


def _stop(infos: list[Any]) -> list[str]:
    """SIGTERM the supervisor of each emulation, all at once; wait, SIGKILL the slow ones. The failures."""
    from control.rundir import list_emulations, wait_unlocked

    began = time.monotonic()
    failed = []
    signalled = []
    for info in infos:
        if info.supervisor_pid is None:
            failed.append(info.name)
            _error(f"{info.name}: no supervisor pid recorded in {info.path}")
            continue
        try:
            os.kill(info.supervisor_pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
        signalled.append(info)
    for info in signalled:
        if not wait_unlocked(info.path, max(0.0, began + 10.0 - time.monotonic())):
            try:
                os.kill(info.supervisor_pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            wait_unlocked(info.path, 5.0)
            _remove_stale([i for i in list_emulations() if i.name == info.name and not i.alive], quiet=True)
        print(f"*** {info.name} stopped in {time.monotonic() - began:.2f} s")
    return failed


def _remove_stale(infos: list[Any], quiet: bool = False) -> None:
    from control.rundir import remove_run_dir

    for info in infos:
        cluster = _cluster_of(info)
        if cluster is not None and info.stale:  # its detached agents outlive the dead supervisor
            cluster.remove_agents(info)
        if remove_run_dir(info) and not quiet:  # kills what the dead supervisor left running
            what = "the leftovers" if info.stale else "the kept logs"
            print(f"*** removed {what} of {info.name}" + (" (its supervisor had died)" if info.stale else ""))


def cmd_status(args: argparse.Namespace) -> int:
    from control.emulation import call_concurrently
    from control.rundir import list_emulations

    _sweep_stale()
    infos = list_emulations()
    if args.name is None:
        if args.json:
            print(json.dumps([{"name": i.name, "alive": i.alive, "status": i.status, "supervisor_pid": i.supervisor_pid,
                               "path": str(i.path)} for i in infos], indent=1))
            return 0
        if not infos:
            print("no emulation is running")
        labels = {"running": "running", "STALE": "STALE (supervisor died)", "stopped": "stopped (logs kept)"}
        for info in infos:
            processes = (info.state or {}).get("processes", {})
            print(f"{info.name:<20} {labels[info.status]:<24} "
                  f"supervisor {info.supervisor_pid}  {len(processes)} processes  {info.path}")
        return 0
    try:
        info = _find_emulation(args.name)
    except LookupError as error:
        if any(i.name == args.name and i.stale for i in infos):
            return _error(f"{args.name} is STALE: its supervisor died, some of its processes still run; "
                          f"remove them with `netemu down {args.name}`")
        return _error(str(error))
    import psutil

    processes = (info.state or {}).get("processes", {})
    names = sorted(processes)
    cluster = _cluster_of(info)
    with cluster.control_keys(info) if cluster else contextlib.nullcontext():
        replies = call_concurrently([(processes[n]["control"], "status", {}) for n in names], 3.0)
        devices = [n for n, r in zip(names, replies)
                   if not isinstance(r, Exception) and r.get("kind") in ("switch", "hub", "p2p")]
        stats = call_concurrently([(processes[n]["control"], "stats", {}) for n in devices], 3.0)
    machines = cluster.status_rows(info, names) if cluster else {}
    rows = []
    for name, reply in zip(names, replies):
        record = processes[name]
        pid = record.get("pid")
        answering = not isinstance(reply, Exception)
        if record.get("machine") is not None:  # on another machine: its agent's word, and whether it answers
            alive = bool(pid) and record.get("state") != "exited" and answering
        else:
            alive = bool(pid) and record.get("state") != "exited" and psutil.pid_exists(pid)
        rows.append({"name": name, "pid": pid, "alive": alive, "answering": answering,
                     "kind": reply.get("kind") if answering else record.get("target"),
                     "returncode": record.get("returncode"), "signal": record.get("signal"),
                     **({"machine": machines[name]} if machines else {})})
    links = {n: s["ports"] for n, s in zip(devices, stats) if not isinstance(s, Exception)}
    if args.json:
        print(json.dumps({"name": info.name, "processes": rows, "links": links,
                          **({"cluster": _public(info.state["cluster"])} if cluster else {})}, indent=1))
        return 0
    from bus.text import table

    print(f"emulation {info.name}: supervisor pid {info.supervisor_pid}, run directory {info.path}")
    if cluster:
        record = info.state["cluster"]
        print(f"across {len(record['machines'])} machines of the Ray cluster at {record['address']}, links "
              + ("CURVE-encrypted" if record.get("keys") else "NOT encrypted"))
    print("\n".join(table([[r["name"], str(r["kind"]), str(r["pid"]), "yes" if r["alive"] else _exit_status(r),
                            "yes" if r["answering"] else "NO"] + ([r["machine"]] if machines else []) for r in rows],
                          ["process", "kind", "pid", "alive", "answering"] + (["machine"] if machines else []))))
    link_rows = [[device, port, str(c.get("rx_packets", 0)), str(c.get("tx_packets", 0)),
                  str(sum(v for k, v in c.items() if k.startswith("dropped_")))]
                 for device, ports in links.items() for port, c in ports.items()]
    if link_rows:
        print()
        print("\n".join(table(link_rows, ["segment", "port", "rx_pkts", "tx_pkts", "drops"])))
    return 0


def _public(record: dict[str, Any]) -> dict[str, Any]:
    """A cluster record without its keys, for printing."""
    return {key: value for key, value in record.items() if key != "keys"}


def _exit_status(row: dict[str, Any]) -> str:
    """`NO`, with how the process ended when the supervisor recorded it: `NO (SIGKILL)`, `NO (exit 3)`."""
    if row.get("signal") is not None:
        try:
            return f"NO ({signal.Signals(row['signal']).name})"
        except ValueError:
            return f"NO (signal {row['signal']})"
    if row.get("returncode") is not None:
        return f"NO (exit {row['returncode']})"
    return "NO"


def cmd_capture(args: argparse.Namespace) -> int:
    from bus.transport import ControlClient, ControlError
    from control.render import capture_stopped

    try:
        info = _find_emulation(args.name)
    except LookupError as error:
        return _error(str(error))
    cluster = _cluster_of(info)
    if cluster is not None:
        return cluster.capture(info, args.segment, args.file, args.stop)
    processes = (info.state or {}).get("processes", {})
    if args.segment not in processes:
        return _error(f"{info.name} has no segment {args.segment!r}")
    with ControlClient(processes[args.segment]["control"], timeout=3.0) as client:
        try:
            if args.stop:
                print(capture_stopped(args.segment, client.call("capture_stop")))
            elif args.file:
                print(f"capturing {args.segment} to {client.call('capture_start', path=str(Path(args.file).resolve()))}")
            else:
                return _error("capture: give -w FILE.pcap to start or --stop to stop", 2)
        except ControlError as error:
            return _error(f"capture: {error}")
    return 0


def cmd_graph(args: argparse.Namespace) -> int:
    topology = _load(args.topology)
    if topology is None:
        return 1
    from control.graph import draw

    try:
        path = draw(topology, args.output)
    except (ValueError, ImportError) as error:
        return _error(f"graph: {error}")
    print(f"wrote {path}")
    return 0


def _exec_words(args: argparse.Namespace) -> list[str] | None:
    """The command after NODE, once the options given after NODE (`-e VAR=VAL`, `--name N`, up to
    `--`) are moved into `args` (argparse leaves everything after NODE to the command)."""
    words = list(args.command)
    args.env = list(args.env)                      # argparse's default list is shared between parses
    while words and words[0] != "--":
        option, equal, value = words[0].partition("=")
        if option in ("-e", "--env", "--name") and not equal and len(words) > 1:
            option, value = words[0], words[1]
            del words[:2]
        elif option in ("--env", "--name") and equal or option.startswith("-e") and len(option) > 2:
            if option.startswith("-e") and not option.startswith("--"):
                option, value = "-e", words[0][2:]
            del words[:1]
        else:
            break                                  # the command itself, given without `--`
        if option == "--name":
            args.name = value
        else:
            args.env.append(value)
    if words[:1] == ["--"]:
        words.pop(0)
    return words or None


def _node_of(args: argparse.Namespace) -> tuple[Any, Any]:
    """Where `exec`/`attach` reach `args.node`: (control.cli_cluster, the emulation's info) across
    machines, else (None, its NodeSite); LookupError says why not."""
    from control import exec_client

    info = exec_client.find_running(args.name)
    cluster = _cluster_of(info)
    if cluster is not None:
        return cluster, info
    return None, exec_client.find_site(args.name, args.node)


def cmd_exec(args: argparse.Namespace) -> int:
    from control import exec_client
    from control.programs import parse_assignments

    command = _exec_words(args)
    if command is None:
        return _error("exec: no command given (netemu exec [--name N] NODE [-e VAR=VAL]... -- CMD ARGS...)", 2)
    try:
        assignments = parse_assignments(args.env)
    except ValueError as error:
        return _error(f"exec: {error}", 2)
    try:
        cluster, where = _node_of(args)
    except LookupError as error:
        return _error(f"exec: {error}")
    if cluster is not None:
        return cluster.exec_or_attach(where, args.node, command, assignments)
    return exec_client.run_foreground(where, command, assignments=assignments)


def cmd_attach(args: argparse.Namespace) -> int:
    from control import exec_client

    try:
        cluster, where = _node_of(args)
    except LookupError as error:
        return _error(f"attach: {error}")
    if cluster is not None:
        return cluster.exec_or_attach(where, args.node, None, {})
    return exec_client.attach(where)


COMMANDS = {"up": cmd_up, "down": cmd_down, "status": cmd_status, "check": cmd_check, "attach": cmd_attach,
            "exec": cmd_exec, "capture": cmd_capture, "graph": cmd_graph}


def _reader_gone() -> int:
    """The end of `netemu … | head`: stop quietly, as a Unix tool killed by SIGPIPE would.

    Python's advice (signal module docs, "Note on SIGPIPE"): point stdout at
    /dev/null so the interpreter's final flush does not fail again, and exit.
    128 + SIGPIPE is the status a shell shows for a tool SIGPIPE ended.
    """
    devnull = os.open(os.devnull, os.O_WRONLY)
    for stream in (sys.stdout, sys.stderr):
        try:
            os.dup2(devnull, stream.fileno())
        except (AttributeError, OSError, ValueError):  # not a real file (e.g. captured by a test)
            pass
    os.close(devnull)
    return 128 + signal.SIGPIPE


def main(argv: list[str] | None = None) -> int:
    try:
        args = build_parser().parse_args(argv)
        code = COMMANDS[args.verb](args)
        sys.stdout.flush()
    except BrokenPipeError:
        return _reader_gone()
    return code


if __name__ == "__main__":
    sys.exit(main())
