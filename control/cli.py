"""The `netemu>` prompt: Mininet's CLI verbs over a running `Emulation`.

Before changing this file, read ARCHITECTURE.md ("CLI") and Mininet's
`mininet/cli.py` for what users expect: `nodes`, `net`, `links`, `dump`,
`pingall`, `<node> <command>`, `link A B up|down`. Node commands print what
iproute2, ping and traceroute would (see `control/render.py`).

Interactive on a terminal (readline history and completion); with stdin not
a terminal, the lines are run as a script, each echoed after the prompt.
"""
from __future__ import annotations

import argparse
import cmd
import os
import shlex
import signal
import sys
from pathlib import Path
from typing import Any, Callable, TextIO

from bus.text import table
from bus.transport import ControlError

from . import render
from .emulation import Emulation, LinkHandle
from .exec_client import cli_attach, cli_run
from .topology_parse import parse_route

HISTORY_FILE = Path(os.environ.get("NETEMU_HISTORY", Path.home() / ".netemu_history"))
NODE_COMMANDS = ("ping", "traceroute", "ip", "sysctl", "counters", "netstat", "arp", "route")


class CommandError(Exception):
    """A command line that cannot be run (bad arguments, unknown names)."""


class _Parser(argparse.ArgumentParser):
    """argparse that raises instead of exiting (a typo must not end the session)."""

    def error(self, message: str) -> None:  # type: ignore[override]
        raise CommandError(f"{self.prog}: {message}")

    def exit(self, status: int = 0, message: str | None = None) -> None:  # type: ignore[override]
        if message:
            raise CommandError(message.strip())
        raise CommandError("")


# iputils' limits: -c 1..LONG_MAX, -s 0..INT_MAX then at most 65507 (65535 less the IP and ICMP headers),
# -t 0..255, -i and -W 0..INT_MAX/1000 seconds.
LONG_MAX, INT_MAX = 2**63 - 1, 2**31 - 1
MAX_PING_SIZE = 65535 - 20 - 8


def _iputils_integer(text: str, minimum: int, maximum: int) -> int:
    """iputils' strtol_or_err: an integer in range, or ping's own words for what is wrong."""
    try:
        value = int(text, 10)
    except ValueError:
        raise CommandError(f"ping: invalid argument: '{text}'") from None
    if not minimum <= value <= maximum:
        raise CommandError(f"ping: invalid argument: '{text}': out of range: {minimum} <= value <= {maximum}")
    return value


def _iputils_seconds(text: str, what: str) -> float:
    """-i and -W: a non-negative number of seconds (iputils says `bad timing interval` / `bad linger time`)."""
    try:
        value = float(text)
    except ValueError:
        raise CommandError(f"ping: {what}: {text}") from None
    if not 0 <= value <= INT_MAX / 1000:  # NaN fails this too
        raise CommandError(f"ping: {what}: {text}")
    return value


def _ping_parser() -> _Parser:
    parser = _Parser(prog="ping", add_help=False)
    parser.add_argument("-c", dest="count", default="3")
    parser.add_argument("-s", dest="size", default="56")
    parser.add_argument("-i", dest="interval", default="1")
    parser.add_argument("-W", dest="timeout", default="2")
    parser.add_argument("-t", dest="ttl")
    parser.add_argument("-M", dest="pmtudisc", choices=["do", "dont", "want"])
    parser.add_argument("destination")
    return parser


def parse_ping(args: list[str]) -> argparse.Namespace:
    """`ping` options as iputils reads them, with iputils' messages for values out of range."""
    options = _ping_parser().parse_args(args)
    options.count = _iputils_integer(options.count, 1, LONG_MAX)
    options.size = _iputils_integer(options.size, 0, INT_MAX)
    if options.size > MAX_PING_SIZE:
        raise CommandError(f"ping: packet size {options.size} is too large. Maximum is {MAX_PING_SIZE}")
    options.interval = _iputils_seconds(options.interval, "bad timing interval")
    timeout_text, options.timeout = options.timeout, _iputils_seconds(options.timeout, "bad linger time")
    if options.timeout == 0:
        # The node waits -W seconds for each reply: 0 would give up before any could come.
        raise CommandError(f"ping: bad linger time: {timeout_text} (must be more than 0)")
    if options.ttl is not None:
        options.ttl = _iputils_integer(options.ttl, 0, 255)
        if options.ttl == 0:
            raise CommandError("ping: cannot set unicast time-to-live: Invalid argument")  # Linux's IP_TTL: 1..255
    return options


def _traceroute_parser() -> _Parser:
    parser = _Parser(prog="traceroute", add_help=False)
    parser.add_argument("-m", dest="max_hops", type=int, default=30)
    parser.add_argument("-q", dest="probes", type=int, default=3)
    parser.add_argument("-w", dest="wait", type=float, default=2.0)
    parser.add_argument("destination")
    return parser


def parse_assignments(words: list[str]) -> dict[str, str]:
    """`delay=10ms loss=1%` -> {"delay": "10ms", "loss": "1%"}."""
    params = {}
    for word in words:
        key, sep, value = word.partition("=")
        if not sep or not key:
            raise CommandError(f"expected KEY=VALUE, got {word!r}")
        params[key] = value
    return params


class NetemuShell(cmd.Cmd):
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

    # -- <node> <command> -----------------------------------------------------------

    def default(self, line: str) -> None:
        words = shlex.split(line)
        if words[0] not in self.net.topology.nodes:
            raise CommandError(f"unknown command {words[0]!r}; type help")
        if len(words) < 2:
            raise CommandError(f"usage: {words[0]} COMMAND (one of: {', '.join(NODE_COMMANDS)}) or PROGRAM [ARGS]")
        node = self._node(words[0])
        command, args = words[1], words[2:]
        handler: Callable[[Any, list[str]], None] | None = getattr(self, f"node_{command}", None)
        if handler is None:  # any other program runs on the node's stack, as Mininet's `h1 cmd`
            if status := cli_run(self.net, node.name, words[1:], self.stdout, self.script):
                raise CommandError(f"{words[0]}: {command} exited with status {status}")
            return
        handler(node, args)

    def do_attach(self, arg: str) -> None:
        """attach NODE: a shell on the node (`netemu attach NODE`); back here when it exits."""
        if self.script:
            raise CommandError("attach: needs a terminal (scripts: `netemu attach NODE` reads commands from a pipe)")
        cli_attach(self.net, self._node(arg.strip()).name)

    def node_ping(self, node: Any, args: list[str]) -> None:
        options = parse_ping(args)
        result = node.request("ping", {"dst": options.destination, "count": options.count, "size": options.size,
                                       "interval": options.interval, "timeout": options.timeout,
                                       "ttl": options.ttl, "dont_fragment": options.pmtudisc == "do"},
                              timeout=options.count * options.interval + options.timeout + 5)
        self.out(*render.ping(result, options.destination))

    def node_traceroute(self, node: Any, args: list[str]) -> None:
        options = _traceroute_parser().parse_args(args)
        result = node.request("traceroute", {"dst": options.destination, "max_hops": options.max_hops,
                                             "probes": options.probes, "wait": options.wait},
                              timeout=options.max_hops * options.probes * (options.wait + 0.5) + 5)
        self.out(*render.traceroute(result, options.destination))

    def node_ip(self, node: Any, args: list[str]) -> None:
        statistics = False
        while args and args[0].startswith("-"):
            statistics |= args.pop(0) in ("-s", "-stats")
        if not args:
            raise CommandError("usage: ip addr|link|route|neigh ...")
        obj, rest = args[0], args[1:]
        verb = rest[0] if rest else "show"
        if "addr".startswith(obj) or obj == "address":
            if verb in ("show", "list", "ls"):
                self.out(*render.ip_addr(node.call("interfaces")))
            elif verb == "add" and len(rest) == 4 and rest[2] == "dev":
                node.call("addr_add", dev=rest[3], ip=rest[1])
            elif verb in ("del", "delete") and len(rest) == 4 and rest[2] == "dev":
                node.call("addr_del", dev=rest[3], ip=rest[1])
            else:
                raise CommandError("usage: ip addr [show] | ip addr add|del CIDR dev DEV")
        elif "link".startswith(obj):
            if verb in ("show", "list", "ls"):
                self.out(*render.ip_link(node.call("interfaces"), statistics=statistics))
            elif verb == "set" and len(rest) >= 3:
                self._ip_link_set(node, rest[1:])
            else:
                raise CommandError("usage: ip [-s] link [show] | ip link set DEV up|down|mtu N|txqueuelen N")
        elif "route".startswith(obj) and obj.startswith("r"):
            self._ip_route(node, rest)
        elif "neighbour".startswith(obj) or "neighbor".startswith(obj):
            if verb in ("show", "list", "ls"):
                self.out(*render.ip_neigh(node.call("neigh")))
            elif verb == "flush":
                dev = rest[rest.index("dev") + 1] if "dev" in rest else None
                node.call("neigh_flush", dev=dev)
            elif verb in ("add", "replace") and "lladdr" in rest:
                dev = rest[rest.index("dev") + 1] if "dev" in rest else None
                node.call("neigh_add", ip=rest[1], mac=rest[rest.index("lladdr") + 1], dev=dev)
            elif verb in ("del", "delete") and "dev" in rest:
                node.call("neigh_del", ip=rest[1], dev=rest[rest.index("dev") + 1])
            else:
                raise CommandError("usage: ip neigh [show] | ip neigh flush [dev DEV] | "
                                   "ip neigh add IP lladdr MAC [dev DEV] | ip neigh del IP dev DEV")
        else:
            raise CommandError(f"ip: unknown object {obj!r} (addr, link, route, neigh)")

    def _ip_link_set(self, node: Any, words: list[str]) -> None:
        dev, settings = words[0], words[1:]
        args: dict[str, Any] = {"dev": dev}
        index = 0
        while index < len(settings):
            word = settings[index]
            if word in ("up", "down"):
                args["up"] = word == "up"
            elif word in ("mtu", "txqueuelen") and index + 1 < len(settings):
                args[word] = int(settings[index + 1])
                index += 1
            else:
                raise CommandError(f"ip link set: unknown setting {word!r}")
            index += 1
        node.call("link_set", **args)

    def _ip_route(self, node: Any, words: list[str]) -> None:
        verb = words[0] if words else "show"
        if verb in ("show", "list", "ls"):
            rest = words[1:]
            if rest[:1] == ["cache"]:
                self.out(*render.ip_route_cache(node.call("route_cache")))
                return
            table_name = rest[rest.index("table") + 1] if "table" in rest else "main"
            self.out(*render.ip_route(node.call("routes", table=table_name), table=table_name))
            return
        if verb not in ("add", "del", "delete", "replace") or len(words) < 2:
            raise CommandError("usage: ip route [show [table main|local|all]|show cache] | "
                               "ip route add|del|replace DST [via GW] [dev DEV] [metric N] [src ADDR]")
        deleting = verb in ("del", "delete")
        route, problem = parse_route(" ".join(words[1:]), require_nexthop=not deleting)
        if route is None:
            raise CommandError(f"ip route: {problem}")
        if deleting:
            # As Linux's fib_table_delete: an unset (zero) metric matches a route of any metric.
            node.call("route_del", dst=route.dst, gateway=route.gateway, dev=route.dev, metric=route.metric or None)
        else:
            node.call("route_add", dst=route.dst, gateway=route.gateway, dev=route.dev, metric=route.metric,
                      src=route.src, replace=verb == "replace")

    def node_route(self, node: Any, args: list[str]) -> None:
        self.node_ip(node, ["route", *args])

    def node_arp(self, node: Any, args: list[str]) -> None:
        self.node_ip(node, ["neigh"])

    def node_sysctl(self, node: Any, args: list[str]) -> None:
        if not args or args == ["-a"]:
            values = node.call("sysctl")
            self.out(*(f"{name} = {value}" for name, value in sorted(values.items())))
        elif args[0] == "-w" and len(args) == 2 and "=" in args[1]:
            name, value = args[1].split("=", 1)
            self.out(f"{name} = {node.call('sysctl', name=name.strip(), value=value.strip())}")
        elif len(args) == 1:
            self.out(f"{args[0]} = {node.call('sysctl', name=args[0])}")
        else:
            raise CommandError("usage: sysctl [-a] | sysctl NAME | sysctl -w NAME=VALUE")

    def node_counters(self, node: Any, args: list[str]) -> None:
        """`counters [-a]`: the non-zero counters of each group (`-a`: every one, like /proc/net/snmp)."""
        if args not in ([], ["-a"]):
            raise CommandError("usage: <node> counters [-a]")
        counters = node.call("counters")
        for group in ("Ip", "Icmp", "Udp", "arp_cache", "softnet", "route_cache", "link"):
            values = counters.get(group) or {}
            shown = " ".join(f"{key}={value}" for key, value in values.items() if value or args)
            self.out(f"{group}: {shown or '(all zero)'}")

    node_netstat = node_counters

    def help_node(self) -> None:
        self.out("<node> ping [-c N] [-s SIZE] [-i INTERVAL] [-W TIMEOUT] [-t TTL] [-M do] DEST",
                 "<node> traceroute [-m MAX_HOPS] [-q PROBES] [-w WAIT] DEST",
                 "<node> ip [-s] addr|link|route|neigh [show]   (ip route show cache|table local)",
                 "<node> ip route add|del DST [via GW] [dev DEV] [metric N]",
                 "<node> ip link set DEV up|down|mtu N   <node> ip neigh flush [dev DEV]",
                 "<node> sysctl [-a | NAME | -w NAME=VALUE]   <node> counters [-a]")


IP_OBJECTS = {"addr": ("show", "add", "del"), "link": ("show", "set"), "route": ("show", "add", "del", "replace"),
              "neigh": ("show", "flush", "add", "del")}


def _node_command_words(before: list[str], nodes: list[str]) -> list[str]:
    """What may come next after `<node> WORDS...`: Tab completion of node commands and their arguments."""
    if not before:
        return list(NODE_COMMANDS)
    command, args = before[0], before[1:]
    if command in ("ping", "traceroute"):
        return nodes
    if command == "ip":
        args = [word for word in args if not word.startswith("-")]
        if not args:
            return list(IP_OBJECTS)
        if len(args) == 1:
            obj = next((name for name in IP_OBJECTS if name.startswith(args[0]) or args[0].startswith(name)), None)
            return list(IP_OBJECTS[obj]) if obj else []
        return []
    if command == "sysctl" and (not args or args == ["-w"]):
        from nodes.sysctl import KNOBS

        return ([] if args else ["-a", "-w"]) + list(KNOBS)
    if command in ("counters", "netstat") and not args:
        return ["-a"]
    return []


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
