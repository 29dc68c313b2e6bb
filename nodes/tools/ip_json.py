"""`ip -j` (and `-j -p`): the node kernel's tables as iproute2 6.x's JSON objects.

The keys are iproute2's (`ifname`, `operstate`, `addr_info`, `prefixlen`,
`stats64`, `dst`, `gateway`, `prefsrc`, `lladdr`, `state` as a list...), so a
script written against a Linux host's `ip -j` reads a node's the same way.
"""
from __future__ import annotations

import json
from typing import Any, Iterable, Mapping

FOREVER = 4294967295  # iproute2's valid_life_time/preferred_life_time for "forever"


def dumps(value: Any, pretty: bool) -> str:
    return json.dumps(value, indent=4 if pretty else None, separators=None if pretty else (",", ":"))


def link(dev: Mapping[str, Any], statistics: bool = False) -> dict[str, Any]:
    loopback = dev.get("link_type") == "loopback"
    entry = {
        "ifindex": dev["ifindex"], "ifname": dev["name"], "flags": list(dev["flags"]), "mtu": dev["mtu"],
        "qdisc": dev.get("qdisc") or ("noqueue" if loopback else "pfifo_fast"), "operstate": dev["state"],
        "group": "default", "txqlen": dev["txqueuelen"], "link_type": "loopback" if loopback else "ether",
        "address": dev["mac"], "broadcast": "00:00:00:00:00:00" if loopback else "ff:ff:ff:ff:ff:ff",
    }
    if statistics:
        stats = dev.get("stats") or {}
        entry["stats64"] = {
            "rx": {"bytes": stats.get("rx_bytes", 0), "packets": stats.get("rx_packets", 0),
                   "errors": stats.get("rx_errors", 0), "dropped": stats.get("rx_dropped", 0),
                   "over_errors": 0, "multicast": stats.get("multicast", 0)},
            "tx": {"bytes": stats.get("tx_bytes", 0), "packets": stats.get("tx_packets", 0),
                   "errors": stats.get("tx_errors", 0), "dropped": stats.get("tx_dropped", 0),
                   "carrier_errors": stats.get("tx_carrier_errors", 0), "collisions": stats.get("collisions", 0)},
        }
    return entry


def addr(interfaces: Iterable[Mapping[str, Any]], inet_only: bool = False,
         statistics: bool = False) -> list[dict[str, Any]]:
    """`ip -j addr`: each link with its `addr_info` (with -4, only links that have an address)."""
    result = []
    for dev in interfaces:
        if inet_only and not dev["addresses"]:
            continue
        entry = link(dev, statistics)
        loopback = dev.get("link_type") == "loopback"
        infos = []
        for address in dev["addresses"]:
            info: dict[str, Any] = {"family": "inet", "local": address["address"],
                                    "prefixlen": address["prefix_length"]}
            if address.get("broadcast") and not loopback and address["prefix_length"] < 31:
                info["broadcast"] = address["broadcast"]
            info.update(scope="host" if loopback else "global", label=dev["name"],
                        valid_life_time=FOREVER, preferred_life_time=FOREVER)
            infos.append(info)
        entry["addr_info"] = infos
        result.append(entry)
    return result


def routes(entries: Iterable[Mapping[str, Any]], table: str = "main", dev: str | None = None) -> list[dict]:
    result = []
    for route in entries:
        if dev is not None and route.get("dev") != dev:
            continue
        entry: dict[str, Any] = {}
        if route.get("type", "unicast") != "unicast":
            entry["type"] = route["type"]
        entry["dst"] = route["dst"]
        if route.get("gateway"):
            entry["gateway"] = route["gateway"]
        if route.get("dev") and dev is None:  # iproute2 leaves out what the filter fixed
            entry["dev"] = route["dev"]
        if table == "all" and route.get("table") not in (None, "", "main"):
            entry["table"] = route["table"]
        if route.get("protocol") not in (None, "", "boot"):
            entry["protocol"] = route["protocol"]
        if route.get("scope") not in (None, "", "global"):
            entry["scope"] = route["scope"]
        if route.get("prefsrc"):
            entry["prefsrc"] = route["prefsrc"]
        if route.get("metric"):
            entry["metric"] = route["metric"]
        entry["flags"] = list(route.get("flags") or [])
        if route.get("mtu"):
            entry["metrics"] = [{"mtu": route["mtu"]}]
        result.append(entry)
    return result


def neighbours(entries: Iterable[Mapping[str, Any]], dev: str | None = None, all_states: bool = False) -> list[dict]:
    result = []
    for entry in entries:
        if dev is not None and entry["dev"] != dev or entry["state"] == "NOARP" and not all_states:
            continue
        item: dict[str, Any] = {"dst": entry["ip"]}
        if dev is None:
            item["dev"] = entry["dev"]
        if entry.get("lladdr"):
            item["lladdr"] = entry["lladdr"]
        item["state"] = [entry["state"]]
        result.append(item)
    return result
