"""`ip`'s output, from the node kernel's tables, in the shape iproute2 6.x prints.

Pure functions from the control ops' plain data (`interfaces`, `routes`,
`neigh`, `route_cache`) to lines of text. Lines carry no trailing blanks
(iproute2 leaves one at the end of many lines). A field equal to a `show`
filter is left out, as iproute2 does (`ip route show dev eth0` prints no `dev`).

The `netemu>` CLI prints its `ip` tables with these same functions (through
control/render.py), asking for two netemu additions the node's `ip` never
prints: `attached to PORT` on `ip link`'s link/ether line (`attachments`) and
`(queued N)` after an unresolved neighbour (`queued`).
"""
from __future__ import annotations

from typing import Any, Iterable, Mapping

# `ip -s link` column widths before numbers widen them (iproute2 6.x print_stats64).
_STATS_MIN_WIDTHS = (10, 7, 6, 7, 7, 7)


def _loopback(dev: Mapping[str, Any]) -> bool:
    return dev.get("link_type") == "loopback"


def _qdisc(dev: Mapping[str, Any]) -> str:
    # Loopback has no queue; a NIC's tx queue is one FIFO of txqueuelen packets,
    # which Linux shows as the default qdisc of such a device.
    return dev.get("qdisc") or ("noqueue" if _loopback(dev) else "pfifo_fast")


def link_header(dev: Mapping[str, Any], mode: bool) -> str:
    """`2: eth0: <FLAGS> mtu 1500 qdisc Q state UP [mode DEFAULT] group default qlen 1000`."""
    return (f"{dev['ifindex']}: {dev['name']}: <{','.join(dev['flags'])}> mtu {dev['mtu']} qdisc {_qdisc(dev)} "
            f"state {dev['state']} " + ("mode DEFAULT " if mode else "") + f"group default qlen {dev['txqueuelen']}")


def link_address(dev: Mapping[str, Any], attachment: bool = False) -> str:
    """`    link/ether 02:00:00:00:00:01 brd ff:ff:ff:ff:ff:ff` (with `attachment`, netemu's
    ` attached to PORT`: where the NIC plugs into its segment)."""
    if _loopback(dev):
        line = f"    link/loopback {dev['mac']} brd 00:00:00:00:00:00"
    else:
        line = f"    link/ether {dev['mac']} brd ff:ff:ff:ff:ff:ff"
    if attachment and dev.get("attachment"):
        line += f" attached to {dev['attachment']}"
    return line


def inet_line(dev: Mapping[str, Any], address: Mapping[str, Any]) -> str:
    """`    inet 10.0.1.10/24 brd 10.0.1.255 scope global eth0`."""
    loopback = _loopback(dev)
    # Linux gives lo's addresses no broadcast, nor /31 and /32 ones.
    broadcast = ""
    if address.get("broadcast") and not loopback and address["prefix_length"] < 31:
        broadcast = f"brd {address['broadcast']} "
    return (f"    inet {address['address']}/{address['prefix_length']} {broadcast}"
            f"scope {'host' if loopback else 'global'} {dev['name']}")


LIFETIME = "       valid_lft forever preferred_lft forever"


def addr_show(interfaces: Iterable[Mapping[str, Any]], *, inet_only: bool = False, statistics: bool = False,
              oneline: bool = False) -> list[str]:
    """`ip [-4] [-s] [-o] addr show`: with -4 only the interfaces that have an address, and no link line."""
    lines = []
    for dev in interfaces:
        if oneline:
            lines += [f"{dev['ifindex']}: {dev['name']}    {inet_line(dev, a).strip()}\\{LIFETIME}"
                      for a in dev["addresses"]]
            continue
        if inet_only and not dev["addresses"]:
            continue
        lines.append(link_header(dev, mode=False))
        if not inet_only:
            lines.append(link_address(dev))
        for address in dev["addresses"]:
            lines += [inet_line(dev, address), LIFETIME]
        if statistics and not inet_only:
            lines += link_statistics(dev["stats"])
    return lines


def link_show(interfaces: Iterable[Mapping[str, Any]], *, statistics: bool = False,
              oneline: bool = False, attachments: bool = False) -> list[str]:
    """`ip [-s] [-o] link show` (`attachments`: netemu's `attached to PORT`, for the CLI)."""
    lines = []
    for dev in interfaces:
        block = [link_header(dev, mode=True), link_address(dev, attachments)]
        if statistics:
            block += link_statistics(dev["stats"])
        lines += ["\\".join(block)] if oneline else block
    return lines


def brief(interfaces: Iterable[Mapping[str, Any]], link: bool) -> list[str]:
    """`ip -br addr` / `ip -br link`: one line per interface (`%-16s %-14s` then the addresses)."""
    lines = []
    for dev in interfaces:
        if link:
            rest = f"{dev['mac']} <{','.join(dev['flags'])}>"
        else:
            rest = " ".join(f"{a['address']}/{a['prefix_length']}" for a in dev["addresses"])
        lines.append(f"{dev['name']:<16} {dev['state']:<14} {rest}".rstrip())
    return lines


def link_statistics(stats: Mapping[str, Any]) -> list[str]:
    """The RX/TX block of `ip -s link`: right-aligned columns, as wide as the widest number needs."""
    rx = [stats.get(key, 0) for key in ("rx_bytes", "rx_packets", "rx_errors", "rx_dropped", "rx_missed_errors",
                                         "multicast")]
    tx = [stats.get(key, 0) for key in ("tx_bytes", "tx_packets", "tx_errors", "tx_dropped", "tx_carrier_errors",
                                         "collisions")]
    widths = [max(minimum, len(str(a)), len(str(b))) for minimum, a, b in zip(_STATS_MIN_WIDTHS, rx, tx)]

    def header(label: str, names: tuple[str, ...]) -> str:
        return f"    {label}: {names[0]:>{widths[0] - 4}} " + " ".join(
            f"{name:>{width}}" for name, width in zip(names[1:], widths[1:]))

    def numbers(values: list[int]) -> str:
        return "    " + " ".join(f"{value:>{width}}" for value, width in zip(values, widths))

    return [header("RX", ("bytes", "packets", "errors", "dropped", "missed", "mcast")), numbers(rx),
            header("TX", ("bytes", "packets", "errors", "dropped", "carrier", "collsns")), numbers(tx)]


def route_show(routes: Iterable[Mapping[str, Any]], *, table: str = "main", dev: str | None = None) -> list[str]:
    """`ip route show [table T] [dev D]`: a route names its table only in `table all`, as iproute2 does."""
    lines = []
    for route in routes:
        if dev is not None and route.get("dev") != dev:
            continue
        words = []
        if route.get("type", "unicast") != "unicast":
            words.append(route["type"])
        words.append(route["dst"])
        if route.get("gateway"):
            words += ["via", route["gateway"]]
        if route.get("dev") and dev is None:
            words += ["dev", route["dev"]]
        if table == "all" and route.get("table") not in (None, "", "main"):
            words += ["table", route["table"]]
        if route.get("protocol") not in (None, "", "boot"):
            words += ["proto", route["protocol"]]
        if route.get("scope") not in (None, "", "global"):
            words += ["scope", route["scope"]]
        if route.get("prefsrc"):
            words += ["src", route["prefsrc"]]
        if route.get("metric"):
            words += ["metric", str(route["metric"])]
        words += list(route.get("flags") or [])
        if route.get("mtu"):
            words += ["mtu", str(route["mtu"])]
        lines.append(" ".join(words))
    return lines


def route_cache(cache: Mapping[str, Any]) -> list[str]:
    """`ip route show cache`: the entries as Linux 2.6 printed them (the cache left Linux in 3.6)."""
    lines = []
    for entry in cache.get("entries", []):
        words = [entry["dst"]]
        if entry.get("gateway"):
            words += ["via", entry["gateway"]]
        words += ["dev", str(entry.get("dev")), "src", str(entry.get("src"))]
        lines.append(" ".join(words))
        flags = "<redirected> " if entry.get("redirected") else " "
        detail = f"    cache {flags}used {entry['used']} age {entry['age']:.1f}sec mtu {entry['mtu']}"
        if entry.get("expires") is not None:
            detail += f" expires {entry['expires']:.0f}sec"
        lines.append(detail)
    return lines


def neigh_show(entries: Iterable[Mapping[str, Any]], *, dev: str | None = None, statistics: bool = False,
               all_states: bool = False, queued: bool = False) -> list[str]:
    """`ip [-s] neigh show [dev D] [nud all]`: NOARP entries only with `nud all`, as iproute2
    (`queued`: netemu's `(queued N)` after an entry holding packets, for the CLI)."""
    lines = []
    for entry in entries:
        if dev is not None and entry["dev"] != dev:
            continue
        if entry["state"] == "NOARP" and not all_states:
            continue
        words = [entry["ip"]]
        if dev is None:
            words += ["dev", entry["dev"]]
        if entry.get("lladdr"):
            words += ["lladdr", entry["lladdr"]]
        if statistics:
            ages = "/".join(str(int(entry.get(key) or 0)) for key in ("used", "confirmed", "updated"))
            words += ["used", ages, "probes", str(entry.get("probes", 0))]
        words.append(entry["state"])
        if queued and entry.get("queue_len"):
            words.append(f"(queued {entry['queue_len']})")
        lines.append(" ".join(words))
    return lines
