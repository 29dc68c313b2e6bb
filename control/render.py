"""Text renderings of the kernels' structured tables, in the shape iproute2, ping and traceroute print.

Pure functions from the control ops' plain data to lines of text: the CLI
prints them, tests compare them. Formats follow iproute2 (`ip addr`, `ip -s
link`, `ip route`, `ip neigh`), iputils `ping` and `traceroute`.
"""
from __future__ import annotations

from typing import Any, Iterable, Mapping


def ip_addr(interfaces: Iterable[Mapping[str, Any]]) -> list[str]:
    """`ip addr show`."""
    lines = []
    for dev in interfaces:
        lines.append(f"{dev['ifindex']}: {dev['name']}: <{','.join(dev['flags'])}> mtu {dev['mtu']} "
                     f"qlen {dev['txqueuelen']} state {dev['state']}")
        kind = "loopback" if dev["link_type"] == "loopback" else "ether"
        broadcast = "00:00:00:00:00:00" if kind == "loopback" else "ff:ff:ff:ff:ff:ff"
        lines.append(f"    link/{kind} {dev['mac']} brd {broadcast}")
        for address in dev["addresses"]:
            scope = "host" if kind == "loopback" else "global"
            lines.append(f"    inet {address['address']}/{address['prefix_length']} brd {address['broadcast']} "
                         f"scope {scope} {dev['name']}")
    return lines


def ip_link(interfaces: Iterable[Mapping[str, Any]], statistics: bool = True) -> list[str]:
    """`ip -s link show`."""
    lines = []
    for dev in interfaces:
        kind = "loopback" if dev["link_type"] == "loopback" else "ether"
        lines.append(f"{dev['ifindex']}: {dev['name']}: <{','.join(dev['flags'])}> mtu {dev['mtu']} "
                     f"state {dev['state']} qlen {dev['txqueuelen']}")
        lines.append(f"    link/{kind} {dev['mac']}" + (f"  attached to {dev['attachment']}" if dev.get("attachment") else ""))
        if statistics:
            s = dev["stats"]
            lines.append("    RX:  bytes packets errors dropped  missed   mcast")
            lines.append(f"    {s['rx_bytes']:>10} {s['rx_packets']:>7} {s['rx_errors']:>6} {s['rx_dropped']:>7} "
                         f"{s['rx_missed_errors']:>7} {s['multicast']:>7}")
            lines.append("    TX:  bytes packets errors dropped carrier")
            lines.append(f"    {s['tx_bytes']:>10} {s['tx_packets']:>7} {s['tx_errors']:>6} {s['tx_dropped']:>7} "
                         f"{s['tx_carrier_errors']:>7}")
    return lines


def ip_route(routes: Iterable[Mapping[str, Any]]) -> list[str]:
    """`ip route show` (add `table local` lines when given local routes)."""
    lines = []
    for route in routes:
        words = []
        if route.get("type", "unicast") != "unicast":
            words.append(route["type"])
        words.append(route["dst"])
        if route.get("gateway"):
            words += ["via", route["gateway"]]
        if route.get("dev"):
            words += ["dev", route["dev"]]
        if route.get("table") == "local":
            words += ["table", "local"]
        if route.get("protocol") not in (None, "boot"):
            words += ["proto", route["protocol"]]
        if route.get("scope") not in (None, "global", ""):
            words += ["scope", route["scope"]]
        if route.get("prefsrc"):
            words += ["src", route["prefsrc"]]
        if route.get("metric"):
            words += ["metric", str(route["metric"])]
        if route.get("mtu"):
            words += ["mtu", str(route["mtu"])]
        words += list(route.get("flags") or [])
        lines.append(" ".join(words))
    return lines


def ip_route_cache(cache: Mapping[str, Any]) -> list[str]:
    """`ip route show cache` plus the cache's hit/miss counters."""
    lines = []
    for entry in cache["entries"]:
        words = [entry["dst"]]
        if entry.get("gateway"):
            words += ["via", entry["gateway"]]
        words += ["dev", str(entry.get("dev")), "src", str(entry.get("src"))]
        line = " ".join(words)
        lines.append(line)
        detail = f"    cache  used {entry['used']} age {entry['age']:.1f}sec mtu {entry['mtu']}"
        if entry.get("expires") is not None:
            detail += f" expires {entry['expires']:.0f}sec"
        lines.append(detail)
    stats = cache.get("stats") or {}
    if stats:
        lines.append("stats: " + " ".join(f"{key} {value}" for key, value in stats.items()))
    return lines


def ip_neigh(entries: Iterable[Mapping[str, Any]]) -> list[str]:
    """`ip neigh show`."""
    lines = []
    for entry in entries:
        words = [entry["ip"], "dev", entry["dev"]]
        if entry.get("lladdr"):
            words += ["lladdr", entry["lladdr"]]
        words.append(entry["state"])
        if entry.get("queue_len"):
            words.append(f"(queued {entry['queue_len']})")
        lines.append(" ".join(words))
    return lines


def ping(result: Mapping[str, Any], name: str | None = None) -> list[str]:
    """iputils `ping` output for a finished ping."""
    destination = result["destination"]
    shown = f"{name} ({destination})" if name and name != destination else destination
    lines = [f"PING {shown} {result['size']}({result['size'] + 28}) bytes of data."]
    if result.get("send_error"):
        lines.append(f"ping: connect: {result['send_error']}")
    events = [(reply["seq"], f"{reply['bytes']} bytes from {reply['from']}: icmp_seq={reply['seq']} "
                             f"ttl={reply['ttl']} time={reply['rtt_ms']:.3g} ms") for reply in result["replies"]]
    events += [(error["seq"], f"From {error['from']} icmp_seq={error['seq']} {error['error']}")
               for error in result["error_replies"]]
    lines += [text for _, text in sorted(events, key=lambda event: event[0])]
    lines.append("")
    lines.append(f"--- {name or destination} ping statistics ---")
    summary = f"{result['transmitted']} packets transmitted, {result['received']} received"
    if result.get("duplicates"):
        summary += f", +{result['duplicates']} duplicates"
    if result.get("errors"):
        summary += f", +{result['errors']} errors"
    summary += f", {result['loss_percent']:g}% packet loss, time {result['time_ms']:.0f}ms"
    lines.append(summary)
    if "rtt_min" in result:
        lines.append(f"rtt min/avg/max/mdev = {result['rtt_min']:.3f}/{result['rtt_avg']:.3f}/"
                     f"{result['rtt_max']:.3f}/{result['rtt_mdev']:.3f} ms")
    return lines


def traceroute(result: Mapping[str, Any], name: str | None = None) -> list[str]:
    """`traceroute` output."""
    destination = result["destination"]
    shown = f"{name} ({destination})" if name and name != destination else destination
    lines = [f"traceroute to {shown}, {result['max_hops']} hops max, 60 byte packets"]
    if result.get("send_error"):
        lines.append(f"traceroute: {result['send_error']}")
    for hop in result["hops"]:
        parts = []
        shown_address = None
        for probe in hop["probes"]:
            if probe is None:
                parts.append("*")
                continue
            if probe["address"] != shown_address:
                parts.append(probe["address"])
                shown_address = probe["address"]
            parts.append(f"{probe['rtt_ms']:.3f} ms" + (f" {probe['mark']}" if probe.get("mark") else ""))
        lines.append(f"{hop['hop']:>2}  " + "  ".join(parts))
    return lines


def table(rows: list[list[str]], headers: list[str]) -> list[str]:
    """A plain aligned text table."""
    widths = [max([len(h)] + [len(row[i]) for row in rows]) for i, h in enumerate(headers)]
    out = ["  ".join(h.ljust(w) for h, w in zip(headers, widths)).rstrip()]
    out += ["  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip() for row in rows]
    return out
