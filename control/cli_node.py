"""`netemu> <node> <command>`: the node commands of the CLI (control/cli.py).

The built-in ones print what iproute2, ping and traceroute would (control/render.py);
any other word runs that program on the node (`h1 ss -ti`, `h1 curl ...`) through
`node.exec`, as Mininet's `h1 cmd` runs it in the host's namespace.
"""
from __future__ import annotations

import shlex
from typing import Any, Callable, TextIO

from . import render
from .cli_args import CommandError, parse_ping, traceroute_parser
from .exec_client import cli_run
from .topology_parse import parse_route

NODE_COMMANDS = ("ping", "traceroute", "ip", "sysctl", "counters", "netstat", "arp", "route")


class NodeCommands:
    """The `<node> <command>` half of `NetemuShell` (a mixin: the shell gives `net`, `out`, `_node`)."""

    net: Any
    script: bool
    stdout: TextIO

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

    def node_ping(self, node: Any, args: list[str]) -> None:
        options = parse_ping(args)
        result = node.request("ping", {"dst": options.destination, "count": options.count, "size": options.size,
                                       "interval": options.interval, "timeout": options.timeout,
                                       "ttl": options.ttl, "dont_fragment": options.pmtudisc == "do"},
                              timeout=options.count * options.interval + options.timeout + 5)
        self.out(*render.ping(result, options.destination))

    def node_traceroute(self, node: Any, args: list[str]) -> None:
        options = traceroute_parser().parse_args(args)
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
        for group in ("Ip", "Icmp", "Udp", "Tcp", "TcpExt", "arp_cache", "softnet", "route_cache", "link"):
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
                 "<node> sysctl [-a | NAME | -w NAME=VALUE]   <node> counters [-a]",
                 "<node> PROGRAM [ARGS]: any other program, run on the node (e.g. h1 ss -ti: TCP sockets "
                 "with cwnd, rtt, rto...)")


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
