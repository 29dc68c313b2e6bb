"""`arp` for a program on a node: the node's ARP table as net-tools' arp shows and changes it.

`arp [-n] [-i IF] [HOST]` (Linux style: `Address HWtype HWaddress Flags Mask
Iface`), `arp -a` (BSD style: `? (10.0.1.1) at 02:... [ether] on eth0`),
`arp -s HOST MAC [-i IF]` (a permanent entry), `arp -d HOST [-i IF]`. Without
-n an address is shown by the name the node's /etc/hosts gives it (files
only: no DNS query leaves the node). As /proc/net/arp, NOARP entries
(broadcast) are not listed; flags: C complete, M permanent.
"""
from __future__ import annotations

import ipaddress
import sys
from typing import Any, Iterable, Mapping, TextIO

from bus.transport import ControlError

from .common import Node, ToolExit, emit, option_cluster, run

HEADER = "Address                  HWtype  HWaddress           Flags Mask            Iface"
# /proc/net/arp's ATF_COM: the entry has a hardware address (NUD_VALID states).
COMPLETE_STATES = ("PERMANENT", "REACHABLE", "STALE", "DELAY", "PROBE")
USAGE = """Usage:
  arp [-vn]  [<HW>] [-i <if>] [-a] [<hostname>]             <-Display ARP cache
  arp [-v]          [-i <if>] -d  <host> [pub]               <-Delete ARP entry
  arp [-v]   [<HW>] [-i <if>] -s  <host> <hwaddr> [temp]     <-Add entry"""
LONG_OPTIONS = {"--numeric": "n", "--all": "a", "--display": "a", "--delete": "d", "--set": "s",
                "--device": "i", "--verbose": "v", "--help": "h"}


def main(argv: list[str] | None = None, *, node: Node | None = None, stdout: TextIO | None = None,
         stderr: TextIO | None = None) -> int:
    return run("arp", arp, argv, node, stdout, stderr)


def arp(argv: list[str], node: Node, out: TextIO) -> int:
    numeric = bsd = False
    action, device = "show", None
    operands: list[str] = []
    words = list(argv)
    while words:
        word = words.pop(0)
        letters = option_cluster(word, "naedsivhH", LONG_OPTIONS)
        if letters is None:
            if word.startswith("-"):
                raise ToolExit(f"arp: invalid option -- '{word.lstrip('-')[:1]}'\n{USAGE}", 255)
            operands.append(word)
            continue
        for letter in letters:
            if letter == "n":
                numeric = True
            elif letter == "a":
                bsd = True
            elif letter == "e":
                bsd = False
            elif letter in "ds":
                action = "delete" if letter == "d" else "set"
            elif letter == "i":
                if not words:
                    raise ToolExit(f"arp: option requires an argument -- 'i'\n{USAGE}", 255)
                device = words.pop(0)
            elif letter == "H":
                if not words or words.pop(0) != "ether":
                    raise ToolExit("arp: only the ether hardware type exists on a netemu node", 255)
            elif letter == "h":
                emit(out, [USAGE])
                return 0
    if action == "set":
        return set_entry(node, operands, device)
    if action == "delete":
        return delete_entry(node, operands, device)
    hosts = {} if numeric else hosts_names()
    entries = [entry for entry in node.call("neigh") if entry["state"] not in ("NOARP",)]
    if device is not None:
        entries = [entry for entry in entries if entry["dev"] == device]
    if operands:
        wanted = resolve(operands[0])
        entries = [entry for entry in entries if entry["ip"] == wanted]
    lines = bsd_lines(entries, hosts) if bsd else linux_lines(entries, hosts)
    if not entries and (operands or device):
        lines = [f"arp: in {len(node.call('neigh'))} entries no match found."]
    emit(out, lines)
    return 0


def _flags(entry: Mapping[str, Any]) -> str:
    complete = entry["state"] in COMPLETE_STATES and entry.get("lladdr")
    return ("C" if complete else "") + ("M" if entry["state"] == "PERMANENT" else "")


def linux_lines(entries: Iterable[Mapping[str, Any]], hosts: Mapping[str, str]) -> list[str]:
    """net-tools' default style: `%-23.23s  %-8.8s%-20.20s%-6.6s%-15.15s %s` under its header."""
    lines = []
    for entry in entries:
        flags = _flags(entry)
        if "C" in flags:
            hardware = f"{'ether':<8.8}{entry['lladdr']:<20.20}"
        else:
            hardware = f"{'':<8}{'(incomplete)':<20}"
        lines.append(f"{hosts.get(entry['ip'], entry['ip']):<23.23}  {hardware}{flags:<6.6}{'':<15} {entry['dev']}")
    return [HEADER] + lines if lines else []


def bsd_lines(entries: Iterable[Mapping[str, Any]], hosts: Mapping[str, str]) -> list[str]:
    """`arp -a`: `NAME (ADDRESS) at MAC [ether] [PERM] on IF` (`?` when the address has no name)."""
    lines = []
    for entry in entries:
        flags = _flags(entry)
        hardware = f"{entry['lladdr']} [ether]" if "C" in flags else "<incomplete>"
        permanent = " PERM" if "M" in flags else ""
        lines.append(f"{hosts.get(entry['ip'], '?')} ({entry['ip']}) at {hardware}{permanent} on {entry['dev']}")
    return lines


def hosts_names(path: str = "/etc/hosts") -> dict[str, str]:
    """Address -> its first name in the hosts file (a program on a node sees the emulation's)."""
    names: dict[str, str] = {}
    try:
        with open(path, encoding="utf-8", errors="replace") as handle:
            for line in handle:
                fields = line.partition("#")[0].split()
                if len(fields) >= 2:
                    names.setdefault(fields[0], fields[1])
    except OSError:
        pass
    return names


def resolve(host: str) -> str:
    """A dotted quad, or the address /etc/hosts gives a name (net-tools: `HOST: Unknown host`)."""
    try:
        return str(ipaddress.IPv4Address(host))
    except ValueError:
        pass
    for address, name in hosts_names().items():
        if name == host:
            return address
    raise ToolExit(f"{host}: Unknown host", 255)


def set_entry(node: Node, operands: list[str], device: str | None) -> int:
    if len(operands) < 2:
        raise ToolExit(f"arp: need host and hardware address\n{USAGE}", 255)
    if len(operands) > 2:
        raise ToolExit("arp: only permanent entries (no pub, temp, netmask) exist on a netemu node", 255)
    try:
        node.call("neigh_add", ip=resolve(operands[0]), mac=operands[1], dev=device)
    except ControlError as error:
        raise ToolExit(f"SIOCSARP: {error}", 255) from None
    return 0


def delete_entry(node: Node, operands: list[str], device: str | None) -> int:
    if len(operands) != 1:
        raise ToolExit(f"arp: need host name\n{USAGE}", 255)
    address = resolve(operands[0])
    devices = [device] if device else sorted({e["dev"] for e in node.call("neigh") if e["ip"] == address})
    if not devices:
        raise ToolExit(f"No ARP entry for {operands[0]}", 255)
    for dev in devices:
        try:
            node.call("neigh_del", ip=address, dev=dev)
        except ControlError:
            raise ToolExit(f"No ARP entry for {operands[0]}", 255) from None
    return 0


if __name__ == "__main__":
    sys.exit(main())
