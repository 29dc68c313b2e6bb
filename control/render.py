"""Text renderings of the kernels' structured tables, in the shape iproute2, ping and traceroute print.

Pure functions from the control ops' plain data to lines of text: the CLI
prints them, tests compare them. Formats follow iproute2 6.x (`ip addr`,
`ip -s link`, `ip route`, `ip neigh`), iputils `ping -n` and `traceroute -n`
(addresses are not turned back into names). Lines carry no trailing blanks
(iproute2 leaves one at the end of many lines). netemu additions, marked
where they are made: `attached to PORT` on `ip link`'s link/ether line and
`(queued N)` on an unresolved neighbour.
"""
from __future__ import annotations

from typing import Any, Iterable, Mapping

# `ip -s link` column widths before numbers widen them (iproute2 6.x print_stats64).
_STATS_MIN_WIDTHS = (10, 7, 6, 7, 7, 7)


def _qdisc(dev: Mapping[str, Any]) -> str:
    # Loopback has no queue; a NIC's tx queue is one FIFO of txqueuelen packets,
    # which Linux shows as its default qdisc for such a device.
    return dev.get("qdisc") or ("noqueue" if dev["link_type"] == "loopback" else "pfifo_fast")


def _link_header(dev: Mapping[str, Any], mode: bool) -> str:
    """`2: eth0: <FLAGS> mtu 1500 qdisc Q state UP [mode DEFAULT] group default qlen 1000`."""
    return (f"{dev['ifindex']}: {dev['name']}: <{','.join(dev['flags'])}> mtu {dev['mtu']} qdisc {_qdisc(dev)} "
            f"state {dev['state']} " + ("mode DEFAULT " if mode else "") + f"group default qlen {dev['txqueuelen']}")


def _link_address(dev: Mapping[str, Any]) -> str:
    kind = "loopback" if dev["link_type"] == "loopback" else "ether"
    broadcast = "00:00:00:00:00:00" if kind == "loopback" else "ff:ff:ff:ff:ff:ff"
    return f"    link/{kind} {dev['mac']} brd {broadcast}"


def ip_addr(interfaces: Iterable[Mapping[str, Any]]) -> list[str]:
    """`ip addr show`."""
    lines = []
    for dev in interfaces:
        lines.append(_link_header(dev, mode=False))
        lines.append(_link_address(dev))
        loopback = dev["link_type"] == "loopback"
        for address in dev["addresses"]:
            # Linux gives lo's address no broadcast, nor /31 and /32 ones.
            broadcast = f"brd {address['broadcast']} " if address.get("broadcast") and not loopback else ""
            lines.append(f"    inet {address['address']}/{address['prefix_length']} {broadcast}"
                         f"scope {'host' if loopback else 'global'} {dev['name']}")
            lines.append("       valid_lft forever preferred_lft forever")
    return lines


def ip_link(interfaces: Iterable[Mapping[str, Any]], statistics: bool = True) -> list[str]:
    """`ip [-s] link show` (netemu adds `attached to PORT`: where the NIC plugs into its segment)."""
    lines = []
    for dev in interfaces:
        lines.append(_link_header(dev, mode=True))
        lines.append(_link_address(dev) + (f" attached to {dev['attachment']}" if dev.get("attachment") else ""))
        if statistics:
            lines += _link_statistics(dev["stats"])
    return lines


def _link_statistics(s: Mapping[str, Any]) -> list[str]:
    """The RX/TX block of `ip -s link`: right-aligned columns, as wide as the widest number needs."""
    rx = [s["rx_bytes"], s["rx_packets"], s["rx_errors"], s["rx_dropped"], s["rx_missed_errors"], s["multicast"]]
    tx = [s["tx_bytes"], s["tx_packets"], s["tx_errors"], s["tx_dropped"], s["tx_carrier_errors"], s.get("collisions", 0)]
    widths = [max(minimum, len(str(a)), len(str(b))) for minimum, a, b in zip(_STATS_MIN_WIDTHS, rx, tx)]

    def header(label: str, names: tuple[str, ...]) -> str:
        return f"    {label}: {names[0]:>{widths[0] - 4}} " + " ".join(
            f"{name:>{width}}" for name, width in zip(names[1:], widths[1:]))

    def numbers(values: list[int]) -> str:
        return "    " + " ".join(f"{value:>{width}}" for value, width in zip(values, widths))

    return [header("RX", ("bytes", "packets", "errors", "dropped", "missed", "mcast")), numbers(rx),
            header("TX", ("bytes", "packets", "errors", "dropped", "carrier", "collsns")), numbers(tx)]


def ip_route(routes: Iterable[Mapping[str, Any]], table: str = "main") -> list[str]:
    """`ip route show [table TABLE]`: a route names its table only in `table all` (as iproute2 does)."""
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
        if table == "all" and route.get("table", "main") != "main":
            words += ["table", route["table"]]
        if route.get("protocol") not in (None, "boot"):
            words += ["proto", route["protocol"]]
        if route.get("scope") not in (None, "global", ""):
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


def _ping_time(rtt_ms: float) -> str:
    """iputils' `time=`: three significant digits, kept even when they are zeros (17.0, 1.50, 0.123)."""
    micros = round(rtt_ms * 1000)
    if micros >= 100000 - 50:
        return f"{(micros + 500) // 1000}"
    if micros >= 10000 - 5:
        return f"{(micros + 50) // 1000}.{(micros + 50) % 1000 // 100}"
    if micros >= 1000:
        return f"{(micros + 5) // 1000}.{(micros + 5) % 1000 // 10:02d}"
    return f"{micros // 1000}.{micros % 1000:03d}"


def ping(result: Mapping[str, Any], name: str | None = None) -> list[str]:
    """iputils `ping -n` output for a finished ping."""
    destination = result["destination"]
    if result.get("send_error") and not result["replies"] and not result["error_replies"]:
        # ping(8) connects a probe socket before it prints anything, and stops there.
        return [f"ping: connect: {result['send_error']}"]
    lines = [f"PING {name or destination} ({destination}) {result['size']}({result['size'] + 28}) bytes of data."]
    events = [(reply["seq"], f"{reply['bytes']} bytes from {reply['from']}: icmp_seq={reply['seq']} "
                             f"ttl={reply['ttl']} time={_ping_time(reply['rtt_ms'])} ms") for reply in result["replies"]]
    events += [(error["seq"], f"From {error['from']} icmp_seq={error['seq']} {error['error']}")
               for error in result["error_replies"]]
    lines += [text for _, text in sorted(events, key=lambda event: event[0])]
    if result.get("send_error"):
        lines.append(f"ping: sendmsg: {result['send_error']}")
    lines.append("")
    lines.append(f"--- {name or destination} ping statistics ---")
    transmitted, received = result["transmitted"], result["received"]
    summary = f"{transmitted} packets transmitted, {received} received"
    if result.get("duplicates"):
        summary += f", +{result['duplicates']} duplicates"
    if result.get("errors"):
        summary += f", +{result['errors']} errors"
    if transmitted:
        loss = (transmitted - received) * 100.0 / transmitted
        summary += f", {loss:g}% packet loss, time {int(result['time_ms'] + 0.5)}ms"
    lines.append(summary)
    if received and "rtt_min" in result:
        lines.append(f"rtt min/avg/max/mdev = {result['rtt_min']:.3f}/{result['rtt_avg']:.3f}/"
                     f"{result['rtt_max']:.3f}/{result['rtt_mdev']:.3f} ms")
    return lines


def traceroute(result: Mapping[str, Any], name: str | None = None) -> list[str]:
    """`traceroute -n` output: an address once per run of probes it answered, `*` for silence."""
    destination = result["destination"]
    lines = [f"traceroute to {name or destination} ({destination}), {result['max_hops']} hops max, 60 byte packets"]
    if result.get("send_error"):
        lines.append(f"traceroute: {result['send_error']}")
    for hop in result["hops"]:
        line = f"{hop['hop']:>2} "
        shown_address = None
        for probe in hop["probes"]:
            if probe is None:
                line += " *"
                continue
            if probe["address"] != shown_address:
                line += f" {probe['address']}"
                shown_address = probe["address"]
            line += f"  {probe['rtt_ms']:.3f} ms" + (f" {probe['mark']}" if probe.get("mark") else "")
        lines.append(line)
    return lines


def capture_stopped(segment: str, result: Mapping[str, Any] | None) -> str:
    """What `capture SEG stop` says: how many frames went to which file, or that none was running."""
    if not result:
        return f"no capture was running on {segment}"
    frames = result["frames"]
    return f"capture of {segment} stopped: {frames} frame{'' if frames == 1 else 's'} in {result['path']}"
