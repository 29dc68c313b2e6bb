"""`ip` for a program on a node: iproute2's addr, link, route and neigh, answered by the node's kernel.

Grammar and messages follow iproute2 6.x: objects and commands may be
abbreviated as iproute2 allows (`ip a`, `ip r`, `ip n`, `ip l`, `ip ro`,
`ip addr sh`: the first of iproute2's own list that the word begins); exit
status 2 when the kernel refuses a change (iproute2's `RTNETLINK answers:` and
`Error: ...` extack messages), 1 for a missing device or an argument that is
not an address, 255 for a malformed command line. What netemu's kernel has no
op for (rules, tunnels, `ip route get`, IPv6 addresses) is
refused by name rather than ignored. Usage: `ip [OPTIONS] OBJECT [COMMAND [ARGS]]`.
"""
from __future__ import annotations

import ipaddress
import os
import sys
from dataclasses import dataclass
from typing import Any, TextIO

from bus.transport import ControlError

from . import ip_format, ip_json
from .common import Node, ToolExit, emit, run

# iproute2's objects in the order of ip.c's table: an abbreviation means the first one it begins.
OBJECTS = ("address", "addrlabel", "maddress", "route", "rule", "neighbor", "neighbour", "ntable", "ntbl",
           "link", "l2tp", "fou", "ila", "macsec", "tunnel", "tuntap", "tap", "token", "tcpmetrics",
           "tcp_metrics", "monitor", "xfrm", "mroute", "mrule", "netns", "netconf", "vrf", "sr", "nexthop",
           "mptcp", "ioam", "stats", "help")
SUPPORTED = {"address": "addr", "route": "route", "neighbor": "neigh", "neighbour": "neigh", "link": "link"}

# Kernel refusals iproute2 reports as an extack message (`Error: TEXT.`) rather than a bare errno.
EXTACK_MESSAGES = ("Nexthop has invalid gateway", "Invalid prefix for given prefix length")

USAGE = """Usage: ip [ OPTIONS ] OBJECT { COMMAND | help }
where  OBJECT := { address | link | neighbour | route }   (netemu: these four)
       OPTIONS := { -4 | -6 | -0 | -s[tatistics] | -o[neline] | -br[ief] | -j[son] | -p[retty] |
                    -d[etails] | -c[olor] | -V[ersion] }"""


@dataclass
class Options:
    """The global options iproute2 takes before the object."""

    family: str | None = None  # "inet", "inet6" or "link"
    statistics: int = 0
    oneline: bool = False
    brief: bool = False
    version: bool = False
    json: bool = False
    pretty: bool = False


def usage_error(message: str) -> ToolExit:
    """A malformed command line: iproute2's exit(-1)."""
    return ToolExit(message, 255)


def incomplete_command() -> ToolExit:
    """iproute2's incomplete_command(): a keyword without the value it takes, or a command cut short."""
    return usage_error('Command line is not complete. Try option "help"')


def next_argument(rest: list[str]) -> str:
    """iproute2's NEXT_ARG(): the word after a keyword, taken from `rest`; none left is an incomplete command."""
    if not rest:
        raise incomplete_command()
    return rest.pop(0)


def matches(word: str, full: str) -> bool:
    """iproute2's matches(): `word` is a non-empty prefix of `full`."""
    return bool(word) and full.startswith(word)


def parse_options(argv: list[str]) -> tuple[Options, list[str]]:
    options = Options()
    while argv and argv[0].startswith("-") and argv[0] != "-":
        word = argv.pop(0)
        opt = word[1:] if word.startswith("--") else word  # iproute2 accepts --stats for -stats
        if opt == "-4":
            options.family = "inet"
        elif opt == "-6":
            options.family = "inet6"
        elif opt == "-0":
            options.family = "link"
        elif matches(opt, "-family") or opt == "-f":
            value = next_argument(argv)
            options.family = {"inet": "inet", "inet6": "inet6", "link": "link"}.get(value)
            if options.family is None:
                raise usage_error(f'Error: argument "{value}" is wrong: invalid protocol family')
        elif matches(opt, "-stats") or matches(opt, "-statistics"):
            options.statistics += 1
        elif matches(opt, "-oneline"):
            options.oneline = True
        elif matches(opt, "-brief") and len(opt) > 2:
            options.brief = True
        elif matches(opt, "-details") or matches(opt, "-resolve") or matches(opt, "-human") \
                or opt.split("=")[0] in ("-c", "-color", "-colour"):
            pass  # nothing to add to what netemu prints, or only colours
        elif matches(opt, "-json"):
            options.json = True
        elif matches(opt, "-pretty"):
            options.pretty = True
        elif matches(opt, "-Version"):
            options.version = True
        elif matches(opt, "-help"):
            raise ToolExit(USAGE, 255)
        else:
            raise usage_error(f'Option "{word}" is unknown, try "ip -help".')
    return options, argv


def main(argv: list[str] | None = None, *, node: Node | None = None, stdout: TextIO | None = None,
         stderr: TextIO | None = None) -> int:
    return run("ip", ip, argv, node, stdout, stderr)


def ip(argv: list[str], node: Node, out: TextIO) -> int:
    options, words = parse_options(list(argv))
    if options.version:
        emit(out, ["ip utility, netemu (a subset of iproute2 6.x, answered by the node's kernel)"])
        return 0
    if not words:
        raise ToolExit(USAGE, 255)
    obj = next((name for name in OBJECTS if matches(words[0], name)), None)
    if obj is None:
        raise ToolExit(f'Object "{words[0]}" is unknown, try "ip help".', 1)
    if obj == "help":
        raise ToolExit(USAGE, 255)
    kind = SUPPORTED.get(obj)
    if kind is None:
        raise ToolExit(f'ip: object "{obj}" is not supported on a netemu node (address, link, route, neigh)', 255)
    command = IpCommand(node, options, out)
    return getattr(command, kind)(words[1:]) or 0


class IpCommand:
    """One `ip OBJECT ...` run: parses the words and calls the node."""

    def __init__(self, node: Node, options: Options, out: TextIO) -> None:
        self.node = node
        self.options = options
        self.out = out
        self._interfaces: list[dict[str, Any]] | None = None

    # -- talking to the node ----------------------------------------------

    def interfaces(self) -> list[dict[str, Any]]:
        if self._interfaces is None:
            self._interfaces = self.node.call("interfaces")
        return self._interfaces

    def device(self, name: str, showing: bool) -> dict[str, Any]:
        for dev in self.interfaces():
            if dev["name"] == name:
                return dev
        raise ToolExit(f'Device "{name}" does not exist.' if showing else f'Cannot find device "{name}"', 1)

    def change(self, op: str, **args: Any) -> Any:
        """An op that changes the kernel's tables: a refusal is an RTNETLINK error (exit 2)."""
        try:
            return self.node.call(op, **args)
        except ControlError as error:
            raise rtnetlink_error(error) from None

    def emit(self, lines: list[str]) -> int:
        emit(self.out, lines)
        return 0

    def emit_json(self, value: object) -> int:
        """`ip -j [-p]`: one JSON array (iproute2 prints `[]` for an empty table)."""
        emit(self.out, [ip_json.dumps(value, self.options.pretty)])
        return 0

    # -- ip address --------------------------------------------------------

    def addr(self, words: list[str]) -> int:
        if not words or any(matches(words[0], name) for name in ("list", "show", "lst")):
            return self.addr_show(words[1:])
        if matches(words[0], "add") or matches(words[0], "delete") or matches(words[0], "replace"):
            return self.addr_modify(words[0], words[1:])
        if matches(words[0], "flush"):
            dev = self.dev_argument(words[1:])
            if dev is None:
                raise usage_error("Flush requires arguments.")
            for address in self.device(dev, showing=True)["addresses"]:
                self.change("addr_del", dev=dev, ip=f"{address['address']}/{address['prefix_length']}")
            return 0
        raise usage_error(f'Command "{words[0]}" is unknown, try "ip address help".')

    def addr_show(self, words: list[str]) -> int:
        devices = self.selected_devices(words)
        options = self.options
        if options.family in ("inet6",):
            return self.emit_json([]) if options.json else 0  # netemu nodes have no IPv6 addresses yet
        if options.json:
            if options.family == "link":
                return self.emit_json([ip_json.link(dev, bool(options.statistics)) for dev in devices])
            return self.emit_json(ip_json.addr(devices, options.family == "inet", bool(options.statistics)))
        if options.brief:
            return self.emit(ip_format.brief(devices, link=options.family == "link"))
        if options.family == "link":
            return self.emit(ip_format.link_show(devices, statistics=bool(options.statistics),
                                                 oneline=options.oneline))
        return self.emit(ip_format.addr_show(devices, inet_only=options.family == "inet",
                                             statistics=bool(options.statistics), oneline=options.oneline))

    def selected_devices(self, words: list[str]) -> list[dict[str, Any]]:
        """`[dev] NAME` and `up` of `ip addr|link show`."""
        name, only_up = None, False
        rest = list(words)
        while rest:
            word = rest.pop(0)
            if word == "dev":
                word = next_argument(rest)
            elif word == "up":
                only_up = True
                continue
            if name is not None:
                raise usage_error(f'Error: either "dev" is duplicate, or "{word}" is a garbage.')
            name = word
        devices = [self.device(name, showing=True)] if name is not None else self.interfaces()
        return [dev for dev in devices if not only_up or "UP" in dev["flags"]]

    def addr_modify(self, verb: str, words: list[str]) -> int:
        local = dev = None
        rest = list(words)
        while rest:
            word = rest.pop(0)
            if word in ("dev", "local"):
                value = next_argument(rest)
                if word == "dev":
                    dev = value
                else:
                    local = value
            elif word in ("broadcast", "brd") and rest and rest[0] in ("+", "-"):
                rest.pop(0)  # the broadcast Linux computes anyway
            elif word in ("label", "scope", "peer", "valid_lft", "preferred_lft", "broadcast", "brd", "anycast"):
                raise usage_error(f'Error: netemu\'s ip addr: "{word}" is not supported.')
            elif local is None:
                local = word
            else:
                raise usage_error(f'Error: either "local" is duplicate, or "{word}" is a garbage.')
        if local is None:
            raise incomplete_command()
        cidr = inet_prefix(local)
        if dev is None:
            raise ToolExit('Not enough information: "dev" argument is required.', 1)
        device = self.device(dev, showing=False)
        if matches(verb, "delete"):
            self.change("addr_del", dev=dev, ip=cidr)
        elif matches(verb, "replace") and any(f"{a['address']}/{a['prefix_length']}" == cidr
                                              for a in device["addresses"]):
            return 0  # already there: replace leaves it as it is
        else:
            self.change("addr_add", dev=dev, ip=cidr)
        return 0

    # -- ip link -------------------------------------------------------------

    def link(self, words: list[str]) -> int:
        if not words or any(matches(words[0], name) for name in ("list", "show", "lst")):
            devices = self.selected_devices(words[1:])
            if self.options.json:
                return self.emit_json([ip_json.link(dev, bool(self.options.statistics)) for dev in devices])
            if self.options.brief:
                return self.emit(ip_format.brief(devices, link=True))
            return self.emit(ip_format.link_show(devices, statistics=bool(self.options.statistics),
                                                 oneline=self.options.oneline))
        if words[0] in ("set", "change"):
            return self.link_set(words[1:])
        raise usage_error(f'Command "{words[0]}" is unknown, try "ip link help".')

    def link_set(self, words: list[str]) -> int:
        rest = list(words)
        dev = None
        args: dict[str, Any] = {}
        while rest:
            word = rest.pop(0)
            if word in ("up", "down"):
                args["up"] = word == "up"
            elif word in ("mtu", "txqueuelen", "txqlen", "qlen", "dev"):
                value = next_argument(rest)
                if word == "dev":
                    dev = value
                    continue
                key = "mtu" if word == "mtu" else "txqueuelen"
                if not value.isdigit():
                    raise usage_error(f'Error: argument "{value}" is wrong: Invalid "{word}" value')
                args[key] = int(value)
            elif dev is None:
                dev = word
            else:
                raise usage_error(f'Error: netemu\'s ip link set: "{word}" is not supported '
                                  f'(up, down, mtu N, txqueuelen N).')
        if dev is None:
            raise ToolExit('Not enough information: "dev" argument is required.', 1)
        device = self.device(dev, showing=False)
        try:
            self.node.call("link_set", dev=dev, **args)
        except ControlError as error:
            if "mtu out of range" in str(error) and "mtu" in args:
                low = args["mtu"] < int(device.get("mtu", 1500))
                raise ToolExit(f"Error: mtu {'less than device minimum' if low else 'greater than device maximum'}.",
                               2) from None
            raise rtnetlink_error(error) from None
        return 0

    # -- ip route ------------------------------------------------------------

    def route(self, words: list[str]) -> int:
        if not words or any(matches(words[0], name) for name in ("list", "show", "lst")):
            return self.route_show(words[1:])
        verb = words[0]
        for full in ("add", "change", "replace", "delete", "append", "prepend"):
            if matches(verb, full):
                return self.route_modify(full, words[1:])
        for full in ("get", "flush", "save", "restore", "showdump"):
            if matches(verb, full):
                raise ToolExit(f'ip: "ip route {full}" is not supported on a netemu node', 255)
        raise usage_error(f'Command "{verb}" is unknown, try "ip route help".')

    def route_show(self, words: list[str]) -> int:
        if self.options.family in ("inet6", "link"):
            return self.emit_json([]) if self.options.json else 0
        table, dev, prefix = "main", None, None
        rest = list(words)
        while rest:
            word = rest.pop(0)
            if word == "cache":
                if self.options.json:
                    raise ToolExit('ip: "ip -j route show cache" is not supported on a netemu node', 255)
                return self.emit(ip_format.route_cache(self.node.call("route_cache")))
            if word in ("table", "dev", "oif"):
                value = next_argument(rest)
                if word == "table":
                    if value not in ("main", "local", "all"):
                        raise usage_error(f'Error: argument "{value}" is wrong: "table" value is invalid')
                    table = value
                else:
                    dev = value
                    self.device(dev, showing=True)
            elif word in ("root", "match", "exact", "to"):
                continue
            else:
                prefix = route_destination(word)
        routes = self.node.call("routes", table=table)
        if prefix is not None:
            routes = [route for route in routes if route_destination(route["dst"]) == prefix]
        if self.options.json:
            return self.emit_json(ip_json.routes(routes, table=table, dev=dev))
        return self.emit(ip_format.route_show(routes, table=table, dev=dev))

    def route_modify(self, verb: str, words: list[str]) -> int:
        args: dict[str, Any] = {}
        rest = list(words)
        if rest and rest[0] in ("unicast", "local", "broadcast", "blackhole", "unreachable", "prohibit", "throw",
                                "multicast", "anycast", "nat"):
            args["type"] = rest.pop(0)
        while rest:
            word = rest.pop(0)
            if word in ("via", "dev", "oif", "metric", "preference", "priority", "src"):
                value = next_argument(rest)
                if word == "via":
                    if value == "inet" and rest:
                        value = rest.pop(0)
                    args["gateway"] = inet_address(value)
                elif word in ("dev", "oif"):
                    self.device(value, showing=False)
                    args["dev"] = value
                elif word == "src":
                    args["src"] = inet_address(value)
                else:
                    if not value.isdigit():
                        raise usage_error(f'Error: argument "{value}" is wrong: "metric" value is invalid')
                    args["metric"] = int(value)
            elif word in ("table", "proto", "protocol", "scope", "mtu", "onlink", "advmss", "realm", "nexthop",
                          "tos", "dsfield", "expires", "congctl", "initcwnd", "rtt", "window"):
                raise usage_error(f'Error: netemu\'s ip route: "{word}" is not supported (via, dev, metric, src).')
            elif "dst" not in args:
                if word == "to" and rest:
                    word = rest.pop(0)
                args["dst"] = route_destination(word)
            else:
                raise usage_error(f'Error: either "to" is duplicate, or "{word}" is a garbage.')
        if "dst" not in args:
            raise incomplete_command()
        if verb == "delete":
            # As Linux's fib_table_delete: an unset metric matches a route of any metric.
            args.pop("src", None)
            args.pop("type", None)
            self.change("route_del", **args)
        else:
            self.change("route_add", replace=verb in ("replace", "change"), **args)
        return 0

    # -- ip neigh ------------------------------------------------------------

    def neigh(self, words: list[str]) -> int:
        if not words or any(matches(words[0], name) for name in ("list", "show", "lst")):
            return self.neigh_show(words[1:])
        verb = words[0]
        if matches(verb, "flush"):
            return self.neigh_flush(words[1:])
        for full in ("add", "change", "replace", "delete"):
            if matches(verb, full):
                return self.neigh_modify(full, words[1:])
        raise usage_error(f'Command "{verb}" is unknown, try "ip neigh help".')

    def neigh_show(self, words: list[str]) -> int:
        if self.options.family in ("inet6", "link"):
            return self.emit_json([]) if self.options.json else 0
        dev, address, all_states = None, None, False
        rest = list(words)
        while rest:
            word = rest.pop(0)
            if word in ("dev", "nud", "to"):
                value = next_argument(rest)
                if word == "dev":
                    dev = value
                    self.device(dev, showing=True)
                elif word == "nud":
                    all_states = value == "all"
                else:
                    address = inet_address(value)
            else:
                address = inet_address(word)
        entries = self.node.call("neigh")
        if address is not None:
            entries = [entry for entry in entries if entry["ip"] == address]
        if self.options.json:
            return self.emit_json(ip_json.neighbours(entries, dev=dev, all_states=all_states or address is not None))
        return self.emit(ip_format.neigh_show(entries, dev=dev, statistics=bool(self.options.statistics),
                                              all_states=all_states or address is not None))

    def neigh_flush(self, words: list[str]) -> int:
        if not words:
            raise usage_error("Flush requires arguments.")
        dev = self.dev_argument(words)
        if dev is not None:
            self.device(dev, showing=True)
        elif words != ["all"]:
            raise usage_error(f'Error: netemu\'s ip neigh flush: "{" ".join(words)}" is not supported '
                              f'(dev DEV, all).')
        self.change("neigh_flush", dev=dev)
        return 0

    def neigh_modify(self, verb: str, words: list[str]) -> int:
        address = mac = dev = None
        rest = list(words)
        while rest:
            word = rest.pop(0)
            if word in ("lladdr", "dev", "nud", "to"):
                value = next_argument(rest)
                if word == "lladdr":
                    mac = value
                elif word == "dev":
                    dev = value
                elif word == "nud" and value not in ("permanent", "perm"):
                    raise usage_error(f'Error: netemu\'s ip neigh: "nud {value}" is not supported (permanent).')
                elif word == "to":
                    address = inet_address(value)
            elif word in ("permanent", "router", "proxy", "extern_learn"):
                if word != "permanent":
                    raise usage_error(f'Error: netemu\'s ip neigh: "{word}" is not supported.')
            elif address is None:
                address = inet_address(word)
            else:
                raise usage_error(f'Error: either "to" is duplicate, or "{word}" is a garbage.')
        if address is None or dev is None:
            raise usage_error("Device and destination are required arguments.")
        self.device(dev, showing=False)
        if verb == "delete":
            self.change("neigh_del", ip=address, dev=dev)
            return 0
        if mac is None:
            raise usage_error('Error: netemu\'s ip neigh: an entry needs "lladdr MAC" (ARP entries only).')
        if verb == "add" and any(e["ip"] == address and e["dev"] == dev and e["state"] == "PERMANENT"
                                 for e in self.node.call("neigh")):
            raise ToolExit("RTNETLINK answers: File exists", 2)
        self.change("neigh_add", ip=address, mac=mac, dev=dev)
        return 0

    @staticmethod
    def dev_argument(words: list[str]) -> str | None:
        """`dev NAME` in a command's words, or None."""
        if "dev" in words:
            index = words.index("dev")
            if index + 1 >= len(words):
                raise incomplete_command()
            return words[index + 1]
        return None


def inet_address(text: str) -> str:
    """A dotted quad, or iproute2's complaint (exit 1)."""
    try:
        return str(ipaddress.IPv4Address(text))
    except ValueError:
        raise ToolExit(f'Error: inet address is expected rather than "{text}".', 1) from None


def inet_prefix(text: str) -> str:
    """`ADDRESS[/LENGTH]` (no length: /32), or iproute2's complaint (exit 1)."""
    address, slash, length = text.partition("/")
    try:
        ipaddress.IPv4Address(address)
        if slash and not (length.isdigit() and 0 <= int(length) <= 32):
            raise ValueError(length)
    except ValueError:
        raise ToolExit(f'Error: inet prefix is expected rather than "{text}".', 1) from None
    return f"{address}/{length if slash else 32}"


def route_destination(text: str) -> str:
    """A route's destination as the kernel's ops take it: `default` or `ADDRESS/LENGTH`."""
    if text in ("default", "all", "any", "0/0", "0.0.0.0/0"):
        return "default"
    if "/" not in text:
        return inet_prefix(text).removesuffix("/32")  # a host route is shown without its /32
    return inet_prefix(text)


def rtnetlink_error(error: ControlError) -> ToolExit:
    """How iproute2 reports the kernel refusing a change: `Error: TEXT.` or `RTNETLINK answers: STRERROR`."""
    text = str(error)
    for message in EXTACK_MESSAGES:
        if text.startswith(message):
            return ToolExit(f"Error: {message}.", 2)
    if error.errno:
        return ToolExit(f"RTNETLINK answers: {os.strerror(error.errno)}", 2)
    return ToolExit(f"Error: {text.strip(chr(39))}.", 2)


if __name__ == "__main__":
    sys.exit(main())
