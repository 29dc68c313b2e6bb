"""The `netemu>` prompt: Mininet's CLI verbs over a running `Emulation`.

Before changing this file, read ARCHITECTURE.md ("CLI") and Mininet's
`mininet/cli.py` for what users expect: `nodes`, `net`, `links`, `dump`,
`pingall`, `<node> <command>`, `link A B up|down`. Node commands print what
iproute2, ping and traceroute would (see `control/render.py`).

Interactive on a terminal (readline history and completion); with stdin not
a terminal, the lines are run as a script, each echoed after the prompt.
"""
from __future__ import annotations

import cmd
import os
import shlex
import signal
import sys
from pathlib import Path
from typing import Any, TextIO

from bus.text import table
from bus.transport import ControlError

from . import render
from .cli_args import CommandError, _Parser, parse_assignments, parse_ping
from .cli_iperf import HELP as IPERF_HELP, IperfError, parse_iperf, run_iperf
from .cli_node import NODE_COMMANDS, NodeCommands, _node_command_words
from .emulation import Emulation, LinkHandle
from .exec_client import cli_attach

HISTORY_FILE = Path(os.environ.get("NETEMU_HISTORY", Path.home() / ".netemu_history"))
__all__ = ["CommandError", "NODE_COMMANDS", "NetemuShell", "parse_ping", "run_shell"]


class NetemuShell(NodeCommands, cmd.Cmd):
    """The interactive `netemu>` command line."""

    prompt = "netemu> "

    def __init__(self, net: Emulation, stdin: TextIO | None = None, stdout: TextIO | None = None,
                 script: bool = False) -> None:
        super().__init__(stdin=stdin, stdout=stdout)
        self.net = net
        self.script = script
        self.use_rawinput = not script
        if script:
            self.prompt = ""
        self.failures = 0
        self.intro = None if script else (
            f"*** {net.name}: {len(net.topology.nodes)} nodes, {len(net.topology.segments)} segments up. "
            "Type help for commands, exit to stop.")

    # -- plumbing ---------------------------------------------------------------

    def out(self, *lines: str) -> None:
        for line in lines:
            self.stdout.write(line + "\n")
        self.stdout.flush()

    def precmd(self, line: str) -> str:
        # cmd hands over "EOF" at the end of the input: not a line of the script.
        if self.script and line.strip() and not line.lstrip().startswith("#") and line != "EOF":
            self.out(f"netemu> {line.rstrip()}")
        return line

    def onecmd(self, line: str) -> bool:
        line = line.strip()
        if not line or line.startswith("#"):
            return False
        try:
            return bool(super().onecmd(line))
        except BrokenPipeError:
            raise  # whoever read the output has gone: nothing more can be said (launcher.main ends quietly)
        except CommandError as error:
            self.failures += 1
            if str(error):
                self.out(f"*** {error}")
        except (ControlError, OSError, KeyError, ValueError, TimeoutError) as error:
            self.failures += 1
            message = error.args[0] if isinstance(error, KeyError) and error.args else error
            self.out(f"*** error: {message}")
        return False

    def emptyline(self) -> bool:
        return False

    def cmdloop(self, intro: Any = None) -> None:
        while True:
            try:
                super().cmdloop(intro)
                return
            except KeyboardInterrupt:
                # Ctrl-C cancels the line being typed (or a long ping), not the emulation.
                self.out("^C")
                intro = ""

    def preloop(self) -> None:
        if not self.script:
            try:
                import readline

                readline.set_completer_delims(" \t\n")
                if HISTORY_FILE.exists():
                    readline.read_history_file(HISTORY_FILE)
            except (ImportError, OSError):
                pass

    def postloop(self) -> None:
        if not self.script:
            try:
                import readline

                readline.set_history_length(1000)
                readline.write_history_file(HISTORY_FILE)
            except (ImportError, OSError):
                pass

    def completenames(self, text: str, *ignored: Any) -> list[str]:
        return super().completenames(text, *ignored) + [n for n in self.net.topology.nodes if n.startswith(text)]

    def complete_iperf(self, text: str, line: str, begidx: int, endidx: int) -> list[str]:
        before = line[:begidx].split()[1:]
        if before and before[-1] in ("-t", "-p"):
            return []
        return [name for name in self.net.topology.nodes if name.startswith(text)]

    def completedefault(self, text: str, line: str, begidx: int, endidx: int) -> list[str]:
        before = line[:begidx].split()  # the words before the one being completed
        topology = self.net.topology
        if before and before[0] in topology.nodes:
            candidates = _node_command_words(before[1:], list(topology.nodes))
        else:
            candidates = list(topology.nodes) + list(topology.segments)
        return [c for c in candidates if c.startswith(text)]

    def _node(self, name: str) -> Any:
        if not name:
            raise CommandError("a node name is missing (nodes: " + ", ".join(self.net.topology.nodes) + ")")
        if name not in self.net.nodes:
            raise CommandError(f"unknown node {name!r} (nodes: {', '.join(self.net.topology.nodes)})")
        return self.net.nodes[name]

    # -- topology ---------------------------------------------------------------

    def do_nodes(self, arg: str) -> None:
        """nodes: list the nodes and segments."""
        topology = self.net.topology
        self.out("available nodes are:")
        self.out(" ".join(f"{name}({node.kind})" for name, node in topology.nodes.items()))
        self.out("segments: " + " ".join(f"{name}({segment.kind})" for name, segment in topology.segments.items()))

    def do_net(self, arg: str) -> None:
        """net: each node's interfaces and the segment each plugs into."""
        topology = self.net.topology
        for name, node in topology.nodes.items():
            self.out(f"{name} " + " ".join(f"{i.name}:{i.device}" for i in node.interfaces.values()))
        for name, segment in topology.segments.items():
            ports = [i.attachment for i in segment.attachments]
            ports += [link.attachment for link in topology.links if name in (link.a, link.b)]
            if segment.tap is not None:
                ports.append(f"tap@{segment.tap.device}")
            self.out(f"{name} ({segment.kind}) " + " ".join(ports))

    def do_links(self, arg: str) -> None:
        """links: every attachment with its state and link parameters."""
        rows = []
        for segment in self.net.topology.segments:
            for port in self.net.supervisor.call(segment, "ports"):
                params = port["params"]
                shaping = ", ".join(f"{key}={value}" for key, value in _display_params(params).items())
                rows.append([port["name"], segment, "up" if params.get("up", True) else "DOWN",
                             "yes" if port.get("attached") else "no", shaping])
        self.out(*table(rows, ["port", "segment", "link", "attached", "shaping"]))

    def do_dump(self, arg: str) -> None:
        """dump: every process with its PID, and each node's addresses."""
        supervisor = self.net.supervisor
        for name, node in self.net.topology.nodes.items():
            handle = supervisor[name]
            addresses = ",".join(f"{i.name}:{i.ip}" for i in node.interfaces.values())
            self.out(f"<{node.kind.capitalize()} {name}: {addresses} pid={handle.pid} {handle.state.value}>")
        for name, segment in self.net.topology.segments.items():
            handle = supervisor[name]
            self.out(f"<{segment.kind.capitalize()} {name}: {len(segment.attachments)} ports pid={handle.pid} "
                     f"{handle.state.value}>")

    def do_pingall(self, arg: str) -> None:
        """pingall [-c COUNT] [-W TIMEOUT]: ping between every pair of hosts; prints the loss matrix."""
        parser = _Parser(prog="pingall", add_help=False)
        parser.add_argument("-c", dest="count", type=int, default=1)
        parser.add_argument("-W", dest="timeout", type=float, default=1.0)
        args = parser.parse_args(shlex.split(arg))
        self.out("*** Ping: testing ping reachability")
        results = self.net.pingall(count=args.count, timeout=args.timeout)
        hosts = self.net.hosts
        sent = received = 0
        for src in hosts:
            marks = []
            for dst in hosts:
                if dst == src:
                    continue
                result = results[(src, dst)]
                if isinstance(result, Exception):
                    marks.append("X")
                    sent += args.count
                    continue
                sent += result.sent
                received += result.received
                marks.append(dst if result.received else "X")
            self.out(f"{src} -> " + " ".join(marks))
        dropped = 100.0 * (sent - received) / sent if sent else 0.0
        self.out(f"*** Results: {dropped:.0f}% dropped ({received}/{sent} received)")

    def do_iperf(self, arg: str) -> None:
        """iperf [SRC DST] [-t SECONDS] [-p PORT]: TCP goodput SRC -> DST with iperf3 (help iperf)."""
        options = parse_iperf(shlex.split(arg), self.net.hosts)
        self._node(options.client)
        self._node(options.server)
        try:
            run_iperf(self.net, options, self.out)
        except IperfError as error:
            raise CommandError(f"iperf: {error}") from None

    def help_iperf(self) -> None:
        self.out(IPERF_HELP)

    # -- faults ---------------------------------------------------------------------

    def do_link(self, arg: str) -> None:
        """link A B up|down | link A B set KEY=VALUE...: change a link (A, B: node, interface or segment)."""
        words = shlex.split(arg)
        if len(words) < 3:
            raise CommandError("usage: link A B up|down|set KEY=VALUE...")
        handle: LinkHandle = self.net.link(words[0], words[1])
        action = words[2]
        if action in ("up", "down"):
            handle.set(up=action == "up")
            self.out(f"{handle.device} port {handle.port}: {action}")
        elif action == "set":
            canonical = handle.set(**parse_assignments(words[3:]))
            self.out(f"{handle.device} port {handle.port}: " + ", ".join(
                f"{key}={value}" for key, value in _display_params(canonical).items()))
        else:
            raise CommandError(f"link: unknown action {action!r} (up, down, set)")

    def do_kill(self, arg: str) -> None:
        """kill NODE: kill a node's process (SIGKILL)."""
        self._node(arg.strip()).kill()
        self.out(f"{arg.strip()} killed")

    def do_restart(self, arg: str) -> None:
        """restart NODE: start a node again with its original configuration."""
        self._node(arg.strip()).restart()
        self.out(f"{arg.strip()} restarted (pid {self.net.supervisor[arg.strip()].pid})")

    def do_pause(self, arg: str) -> None:
        """pause NODE: freeze a node (SIGSTOP)."""
        self._node(arg.strip()).pause()

    def do_resume(self, arg: str) -> None:
        """resume NODE: thaw a paused node (SIGCONT)."""
        self._node(arg.strip()).resume()

    def do_partition(self, arg: str) -> None:
        """partition A,B C,D: cut every path between the two groups of nodes."""
        words = shlex.split(arg)
        if len(words) != 2:
            raise CommandError("usage: partition NODE[,NODE...] NODE[,NODE...]")
        self.net.partition([name for name in words[0].split(",") if name],
                           [name for name in words[1].split(",") if name])
        self.out(f"partitioned {words[0]} from {words[1]}")

    def do_heal(self, arg: str) -> None:
        """heal: undo every partition."""
        self.net.heal()
        self.out("healed")

    def do_capture(self, arg: str) -> None:
        """capture SEGMENT FILE | capture SEGMENT stop: pcap of everything a segment carries."""
        words = shlex.split(arg)
        if len(words) != 2:
            raise CommandError("usage: capture SEGMENT FILE.pcap | capture SEGMENT stop")
        if words[1] == "stop":
            self.out(render.capture_stopped(words[0], self.net.stop_capture(words[0])))
        else:
            self.out(f"capturing {words[0]} to {self.net.capture(words[0], words[1])}")

    def do_stats(self, arg: str) -> None:
        """stats: per-port frame counters of every segment."""
        status = self.net.status()
        rows = []
        for segment, ports in status["links"].items():
            for port, counters in ports.items():
                drops = sum(value for key, value in counters.items() if key.startswith("dropped_"))
                rows.append([segment, port, str(counters.get("rx_packets", 0)), str(counters.get("tx_packets", 0)),
                             str(counters.get("rx_bytes", 0)), str(counters.get("tx_bytes", 0)), str(drops)])
        self.out(*table(rows, ["segment", "port", "rx_pkts", "tx_pkts", "rx_bytes", "tx_bytes", "drops"]))

    def do_exit(self, arg: str) -> bool:
        """exit: stop the emulation and leave."""
        return True

    do_quit = do_exit

    def do_EOF(self, arg: str) -> bool:  # noqa: N802 - cmd's name for end of input
        """EOF (Ctrl-D): leave, like exit."""
        if not self.script:
            self.out("")
        return True

    def do_attach(self, arg: str) -> None:
        """attach NODE: a shell on the node (`netemu attach NODE`); back here when it exits."""
        if self.script:
            raise CommandError("attach: needs a terminal (scripts: `netemu attach NODE` reads commands from a pipe)")
        cli_attach(self.net, self._node(arg.strip()).name)

def _display_params(params: dict[str, Any]) -> dict[str, str]:
    from bus.shaping import format_link_params

    shown = format_link_params({k: v for k, v in params.items() if k not in ("up",)})
    return {key: value for key, value in shown.items()
            if not (key in ("mtu",) and value == "1500") and value not in ("0", "0bit", "0ms", "0%", "0s")
            and not (key == "queue" and value == "1000")}


def run_shell(net: Emulation, stdin: TextIO | None = None, script_file: str | None = None) -> int:
    """Run the CLI until exit; returns 1 if a scripted command failed, else 0."""
    if script_file is not None:
        with open(script_file, encoding="utf-8") as handle:
            shell = NetemuShell(net, stdin=handle, script=True)
            shell.cmdloop()
        return 1 if shell.failures else 0
    stdin = stdin or sys.stdin
    interactive = stdin.isatty()
    shell = NetemuShell(net, stdin=stdin, script=not interactive)
    previous = None
    if interactive:
        previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        shell.cmdloop()
    finally:
        if previous is not None:
            signal.signal(signal.SIGINT, previous)
    return 1 if shell.failures and not interactive else 0
