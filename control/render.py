"""Text renderings of the kernels' structured tables, in the shape iproute2, ping and traceroute print.

Pure functions from the control ops' plain data to lines of text: the CLI
prints them, tests compare them. Formats follow iproute2 6.x (`ip addr`,
`ip -s link`, `ip route`, `ip neigh`), iputils `ping -n` and `traceroute -n`
(addresses are not turned back into names). The `ip` tables are the node's
own `ip` tool's (nodes/tools/ip_format.py), so the CLI and a program on a node
print them alike; the CLI asks for netemu's additions: `attached to PORT` on
`ip link`'s link/ether line, `(queued N)` on an unresolved neighbour and the
route cache's counters after `ip route show cache`.
"""
from __future__ import annotations

from typing import Any, Iterable, Mapping

from nodes.tools import ip_format


def ip_addr(interfaces: Iterable[Mapping[str, Any]]) -> list[str]:
    """`ip addr show`."""
    return ip_format.addr_show(interfaces)


def ip_link(interfaces: Iterable[Mapping[str, Any]], statistics: bool = True) -> list[str]:
    """`ip [-s] link show`, with netemu's `attached to PORT` (where the NIC plugs into its segment)."""
    return ip_format.link_show(interfaces, statistics=statistics, attachments=True)


def ip_route(routes: Iterable[Mapping[str, Any]], table: str = "main") -> list[str]:
    """`ip route show [table TABLE]`: a route names its table only in `table all` (as iproute2 does)."""
    return ip_format.route_show(routes, table=table)


def ip_route_cache(cache: Mapping[str, Any]) -> list[str]:
    """`ip route show cache` plus the cache's hit/miss counters (a netemu addition)."""
    lines = ip_format.route_cache(cache)
    stats = cache.get("stats") or {}
    if stats:
        lines.append("stats: " + " ".join(f"{key} {value}" for key, value in stats.items()))
    return lines


def ip_neigh(entries: Iterable[Mapping[str, Any]]) -> list[str]:
    """`ip neigh show` (NOARP entries left out, as iproute2), with netemu's `(queued N)`."""
    return ip_format.neigh_show(entries, queued=True)


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
