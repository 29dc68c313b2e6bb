"""`route` for a program on a node: net-tools' view of the node's main routing table, and its changes.

`route [-n]` prints `Kernel IP routing table` with net-tools' columns
(`Destination Gateway Genmask Flags Metric Ref Use Iface`; flags U up,
G gateway, H host, ! reject; Ref and Use are 0, as Linux reports them).
Without -n the destination 0.0.0.0/0 shows as `default` and other addresses
by their name in the node's /etc/hosts (files only, no DNS).
`route add|del [-net|-host] TARGET[/LEN] [netmask MASK] [gw GW] [metric N]
[[dev] IF]` and `route add default gw GW` change the table through the same
ops as `ip route` (-net without a mask takes the classful one, as net-tools;
a bare target is a host). It is here because the host's own
/usr/sbin/route would otherwise show the host's table on a node.
"""
from __future__ import annotations

import ipaddress
import os
import sys
from typing import Any, Iterable, Mapping, TextIO

from bus.transport import ControlError

from .arp import hosts_names
from .common import Node, ToolExit, emit, option_cluster, run

HEADER = ["Kernel IP routing table",
          "Destination     Gateway         Genmask         Flags Metric Ref    Use Iface"]
USAGE = """Usage: route [-nNvee] [-FC] [<AF>]           List kernel routing tables
       route [-v] [-FC] {add|del|flush} ...  Modify routing table for AF.
  inet_route [-vF] add {-host|-net} Target[/prefix] [gw Gw] [metric M] [[dev] If]
  inet_route [-vF] add {-host|-net} Target [netmask Nm] [gw Gw] [metric M] [[dev] If]
  inet_route [-vF] add default [gw Gw] [metric M] [[dev] If]"""
REJECT_TYPES = ("unreachable", "prohibit", "blackhole")


def main(argv: list[str] | None = None, *, node: Node | None = None, stdout: TextIO | None = None,
         stderr: TextIO | None = None) -> int:
    return run("route", route, argv, node, stdout, stderr)


def route(argv: list[str], node: Node, out: TextIO) -> int:
    numeric = False
    words = []
    for word in argv:
        letters = option_cluster(word, "nNveFCA")
        if letters is None:
            if word in ("-h", "--help"):
                emit(out, [USAGE])
                return 0
            if word.startswith("-") and word not in ("-net", "-host"):
                raise ToolExit(f"route: invalid option -- '{word.lstrip('-')[:1]}'\n{USAGE}", 4)
            words.append(word)
            continue
        numeric = numeric or "n" in letters
    if words and words[0] == "inet":
        words = words[1:]
    if not words:
        emit(out, table(node.call("routes", table="main"), {} if numeric else hosts_names()))
        return 0
    if words[0] not in ("add", "del"):
        raise ToolExit(f"route: unknown command {words[0]!r}\n{USAGE}", 4)
    return modify(node, words[0], words[1:])


def _mask(length: int) -> str:
    return str(ipaddress.IPv4Network(f"0.0.0.0/{length}").netmask)


def table(routes: Iterable[Mapping[str, Any]], names: Mapping[str, str]) -> list[str]:
    """net-tools' `%-15s %-15s %-15s %-6s%-6d %-2d %7d %s` rows under its header."""
    lines = list(HEADER)
    for entry in routes:
        kind = entry.get("type", "unicast")
        if kind not in ("unicast",) + REJECT_TYPES:
            continue  # local and broadcast routes live in the local table, which route(8) never shows
        network = ipaddress.IPv4Network("0.0.0.0/0" if entry["dst"] == "default" else entry["dst"])
        flags = "U" + ("G" if entry.get("gateway") else "") + ("H" if network.prefixlen == 32 else "")
        if kind in REJECT_TYPES:
            flags = "!H" if network.prefixlen == 32 else "!"
        if "linkdown" in (entry.get("flags") or []):
            flags = flags.replace("U", "")
        destination = str(network.network_address)
        if names and network.prefixlen == 0:
            destination = "default"
        elif names:
            destination = names.get(destination, destination)
        gateway = entry.get("gateway") or "0.0.0.0"
        if names and entry.get("gateway"):
            gateway = names.get(gateway, gateway)
        lines.append(f"{destination:<15.15} {gateway:<15.15} {_mask(network.prefixlen):<15} {flags:<6}"
                     f"{entry.get('metric') or 0:<6d} {0:<2d} {0:>7d} {entry.get('dev') or '*'}")
    return lines


def modify(node: Node, verb: str, words: list[str]) -> int:
    """`route add|del [-net|-host] TARGET [netmask M] [gw G] [metric N] [[dev] IF]`."""
    rest = list(words)
    host = None
    if rest and rest[0] in ("-net", "-host"):
        host = rest.pop(0) == "-host"
    if not rest:
        raise ToolExit(USAGE, 4)
    target = rest.pop(0)
    args: dict[str, Any] = {}
    netmask = None
    while rest:
        word = rest.pop(0)
        if word in ("netmask", "gw", "metric", "dev") and rest:
            value = rest.pop(0)
            if word == "netmask":
                netmask = value
            elif word == "gw":
                args["gateway"] = _address(value)
            elif word == "metric":
                if not value.isdigit():
                    raise ToolExit(f"route: bogus metric {value}", 4)
                args["metric"] = int(value)
            else:
                args["dev"] = value
        elif word in ("reject",):
            args["type"] = "unreachable"
        elif not rest and word not in ("netmask", "gw", "metric", "dev"):
            args["dev"] = word  # the last word alone is the interface, as net-tools takes it
        else:
            raise ToolExit(USAGE, 4)
    args["dst"] = _destination(target, netmask, host)
    try:
        if verb == "add":
            node.call("route_add", **args)
        else:
            args.pop("type", None)
            node.call("route_del", **args)
    except ControlError as error:
        raise ToolExit(f"SIOC{'ADD' if verb == 'add' else 'DEL'}RT: {_strerror(error)}", 7) from None
    return 0


def _address(text: str) -> str:
    try:
        return str(ipaddress.IPv4Address(text))
    except ValueError:
        for address, name in hosts_names().items():
            if name == text:
                return address
    raise ToolExit(f"{text}: Unknown host", 4)


def _destination(target: str, netmask: str | None, host: bool | None) -> str:
    if target == "default":
        return "default"
    address, slash, length = target.partition("/")
    address = _address(address)
    try:
        if slash:
            prefix = int(length)
        elif netmask is not None:
            prefix = ipaddress.IPv4Network(f"0.0.0.0/{netmask}").prefixlen
        elif host is False:
            first = int(address.split(".")[0])
            prefix = 8 if first < 128 else 16 if first < 192 else 24  # the classful mask net-tools guesses
        else:
            prefix = 32
        network = ipaddress.IPv4Network(f"{address}/{prefix}")
    except ValueError:
        raise ToolExit("route: netmask doesn't match route address", 4) from None
    return str(network) if network.prefixlen < 32 else str(network.network_address)


def _strerror(error: ControlError) -> str:
    return os.strerror(error.errno) if error.errno else str(error)


if __name__ == "__main__":
    sys.exit(main())
