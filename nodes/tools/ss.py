"""`ss` for a program on a node: the node's sockets (iproute2's ss), with their processes.

The node kernel's `sockets` op lists every socket of its socket layer and the
kernel's own UDP endpoints: proto (`udp`, `udp6`, `raw`, `icmp`, `tcp`...),
local, peer, state, recv_q and, for a program's socket, the inode of the
program's end of its socketpair. `-p` finds the processes holding that inode
the way ss does, through /proc/PID/fd links `socket:[INODE]`.

As ss: without -a or -l only connected sockets are shown, -l shows only
listening and unconnected ones; the Netid column appears when more than one
protocol is selected; ports are shown by service name unless -n (hosts are
never resolved). netemu addition: ICMP datagram ("ping") sockets are listed
with the raw ones (`-w`) as Netid `icmp` (Linux's ss does not show them).
Filter expressions (`sport = :53`, `state ...`) and -x (Unix sockets, which
are the host's) are not supported. Usage: `ss [-tuwaln4p6eH]`.
"""
from __future__ import annotations

import os
import socket
import sys
from dataclasses import dataclass, field
from typing import Any, Iterable, Mapping, TextIO

from .common import Node, ToolExit, emit, option_cluster, run

LONG_OPTIONS = {"--tcp": "t", "--udp": "u", "--raw": "w", "--all": "a", "--listening": "l", "--numeric": "n", "--info": "i",
                "--processes": "p", "--extended": "e", "--ipv4": "4", "--ipv6": "6", "--no-header": "H",
                "--unix": "x", "--help": "h"}
SHORT_OPTIONS = "tuwalnpei46Hxh"
# Which protocols each selection option means; the kernel's proto names without the family suffix.
PROTOCOLS = {"t": ("tcp",), "u": ("udp",), "w": ("raw", "icmp")}
# In the order ss dumps them (raw, then udp, then tcp).
ALL_PROTOCOLS = ("raw", "icmp", "udp", "tcp")
LISTENING_STATES = ("LISTEN", "UNCONN")
# ss's default filter (SS_CONN) leaves these out too; -a shows them
HIDDEN_STATES = ("TIME-WAIT", "SYN-RECV")

USAGE = """Usage: ss [ OPTIONS ]
   -t, --tcp  -u, --udp  -w, --raw     sockets of these protocols (default: all)
   -a, --all  -l, --listening          all sockets / only listening and unconnected ones
   -n, --numeric  -p, --processes  -e, --extended  -i, --info (TCP internals)  -4, --ipv4  -6, --ipv6  -H, --no-header"""


@dataclass
class Selection:
    protocols: set[str] = field(default_factory=set)
    all_states: bool = False
    listening: bool = False
    numeric: bool = False
    processes: bool = False
    extended: bool = False
    info: bool = False
    family: str | None = None  # "4", "6" or None
    header: bool = True

    @property
    def chosen(self) -> tuple[str, ...]:
        return tuple(proto for proto in ALL_PROTOCOLS if not self.protocols or proto in self.protocols)


def parse(argv: list[str]) -> Selection:
    selection = Selection()
    for word in argv:
        letters = option_cluster(word, SHORT_OPTIONS, LONG_OPTIONS)
        if letters is None:
            if word.startswith("-"):
                raise ToolExit(f"ss: unrecognized option '{word}'\n{USAGE}", 255)
            raise ToolExit(f"ss: filter expressions are not supported on a netemu node ({word!r})", 255)
        for letter in letters:
            if letter in PROTOCOLS:
                selection.protocols.update(PROTOCOLS[letter])
            elif letter == "x":
                selection.protocols.add("unix")
            elif letter == "a":
                selection.all_states = True
            elif letter == "l":
                selection.listening = True
            elif letter == "n":
                selection.numeric = True
            elif letter == "p":
                selection.processes = True
            elif letter == "e":
                selection.extended = True
            elif letter == "i":
                selection.info = True
            elif letter in "46":
                selection.family = letter
            elif letter == "H":
                selection.header = False
            elif letter == "h":
                raise ToolExit(USAGE, 0)
    return selection


def main(argv: list[str] | None = None, *, node: Node | None = None, stdout: TextIO | None = None,
         stderr: TextIO | None = None) -> int:
    return run("ss", ss, argv, node, stdout, stderr)


def ss(argv: list[str], node: Node, out: TextIO) -> int:
    selection = parse(argv)
    entries = select(node.call("sockets"), selection)
    owners = socket_owners() if selection.processes else {}
    emit(out, table(entries, selection, owners))
    return 0


def _split_proto(proto: str) -> tuple[str, bool]:
    """`udp6` -> ("udp", True)."""
    return (proto[:-1], True) if proto.endswith("6") else (proto, False)


def select(entries: Iterable[Mapping[str, Any]], selection: Selection) -> list[Mapping[str, Any]]:
    """The sockets the options ask for: protocols, families, states (ss's default: connected only),
    grouped by protocol in ss's order."""
    chosen = selection.chosen
    kept = []
    for entry in entries:
        protocol, inet6 = _split_proto(entry["proto"])
        if protocol not in chosen:
            continue
        if selection.family == "4" and inet6 or selection.family == "6" and not inet6:
            continue
        listening = entry["state"] in LISTENING_STATES
        if selection.listening and not selection.all_states and not listening:
            continue
        if not selection.listening and not selection.all_states and (listening or entry["state"] in HIDDEN_STATES):
            continue
        kept.append(entry)
    return sorted(kept, key=lambda entry: chosen.index(_split_proto(entry["proto"])[0]))


def _address(text: str, inet6: bool, port_names: bool, protocol: str) -> tuple[str, str]:
    """`10.0.0.1:53` as ss shows it: (`10.0.0.1`, `53` or `domain`); `*` ports and v6 brackets as ss."""
    host, _, port = text.rpartition(":")
    if inet6 and host not in ("*", "") and not host.startswith("["):
        host = f"[::ffff:{host}]" if "." in host else f"[{host}]"
    if host == "*" and not inet6 and port == "*":
        host = "0.0.0.0"  # an unconnected IPv4 socket's peer, as ss prints it
    if port in ("0", "") and host in ("*", "0.0.0.0", "[::]"):
        port = "*"
    if port_names and port.isdigit() and protocol in ("tcp", "udp"):
        try:
            port = socket.getservbyport(int(port), protocol)
        except (OSError, OverflowError):
            pass
    return host, port


def _process_column(entry: Mapping[str, Any], selection: Selection, owners: Mapping[int, list[tuple]]) -> str:
    words = []
    inode = entry.get("inode")
    if selection.processes:
        users = owners.get(inode, []) if inode else []
        if not users and entry.get("pid"):
            users = [(process_name(entry["pid"]), entry["pid"], None)]
        if users:
            words.append("users:(" + ",".join(
                f'("{name}",pid={pid}' + (f",fd={fd})" if fd is not None else ")") for name, pid, fd in users) + ")")
    if selection.extended:
        words.append(f"ino:{inode or 0}")
    return " ".join(words)


def table(entries: list[Mapping[str, Any]], selection: Selection, owners: Mapping[int, list[tuple]]) -> list[str]:
    """ss's columns: Netid (several protocols), State, Recv-Q, Send-Q, Local and Peer Address:Port, Process."""
    show_netid = len(selection.chosen) > 1
    rows = []
    for entry in entries:
        protocol, inet6 = _split_proto(entry["proto"])
        local = _address(entry["local"], inet6, not selection.numeric, protocol)
        peer = _address(entry["peer"], inet6, not selection.numeric, protocol)
        rows.append(([protocol] if show_netid else []) + [
            entry["state"], str(entry.get("recv_q", 0)), str(entry.get("send_q", 0)), local, peer,
            _process_column(entry, selection, owners)])
    header = (["Netid"] if show_netid else []) + [
        "State", "Recv-Q", "Send-Q", ("Local Address", "Port"), ("Peer Address", "Port"), "Process"]
    lines = _align(([header] if selection.header else []) + rows)
    if not selection.info:
        return lines
    first = 1 if selection.header else 0
    out = lines[:first]
    for line, entry in zip(lines[first:], entries):
        out.append(line)
        if entry.get("info"):
            out.append("\t " + info_line(entry["info"]))
    return out


def info_line(info: Mapping[str, Any]) -> str:
    """tcp_show_info's line: algorithm, options, timers (ms), sizes and counters, as `ss -ti` prints them."""
    def ms(key: str) -> str:
        return f"{float(info.get(key) or 0) * 1000:g}"

    words = []
    if info.get("congestion"):
        words.append(str(info["congestion"]))
    if info.get("options"):
        words.extend(str(info["options"]).split())
    words.append(f"rto:{round(float(info.get('rto') or 0) * 1000)}")  # jiffies: whole ms at HZ=1000
    if info.get("backoff"):
        words.append(f"backoff:{info['backoff']}")
    if info.get("rtt"):
        words.append(f"rtt:{float(info['rtt']) * 1000:.3g}/{float(info.get('rttvar') or 0) * 1000:.3g}")
    if info.get("ato"):
        words.append(f"ato:{round(float(info['ato']) * 1000)}")
    for key, name in (("snd_mss", "mss"), ("pmtu", "pmtu"), ("rcv_mss", "rcvmss"), ("advmss", "advmss"),
                      ("snd_cwnd", "cwnd")):
        if info.get(key) is not None:
            words.append(f"{name}:{info[key]}")
    ssthresh = info.get("snd_ssthresh")
    if ssthresh is not None and ssthresh < 0x7FFFFFFF:
        words.append(f"ssthresh:{ssthresh}")
    for key in ("bytes_sent", "bytes_retrans", "bytes_acked", "bytes_received", "segs_out", "segs_in",
                "data_segs_out", "data_segs_in"):
        if info.get(key):
            words.append(f"{key}:{info[key]}")
    for key, name in (("last_data_sent", "lastsnd"), ("last_data_recv", "lastrcv"), ("last_ack_recv", "lastack")):
        if info.get(key) is not None:
            words.append(f"{name}:{int(float(info[key]) * 1000)}")
    if info.get("delivered"):
        words.append(f"delivered:{info['delivered']}")
    if info.get("unacked"):
        words.append(f"unacked:{info['unacked']}")
    if info.get("retransmits") or info.get("total_retrans"):
        words.append(f"retrans:{info.get('retransmits') or 0}/{info.get('total_retrans') or 0}")
    for key in ("lost", "sacked", "reordering"):
        if info.get(key) and not (key == "reordering" and info[key] == 3):
            words.append(f"{key}:{info[key]}")
    for key in ("rcv_space", "rcv_ssthresh"):
        if info.get(key):
            words.append(f"{key}:{info[key]}")
    if info.get("min_rtt"):
        words.append(f"minrtt:{float(info['min_rtt']) * 1000:.3g}")
    if info.get("snd_wnd") is not None:
        words.append(f"snd_wnd:{info['snd_wnd']}")
    if info.get("rcv_wnd") is not None:
        words.append(f"rcv_wnd:{info['rcv_wnd']}")
    if info.get("notsent_bytes"):
        words.append(f"notsent:{info['notsent_bytes']}")
    return " ".join(words)


def _align(rows: list[list[Any]]) -> list[str]:
    """Left-aligned text columns; an address column right-aligns the host so the `:` line up."""
    if not rows:
        return []
    widths = []
    for column in range(len(rows[0])):
        cells = [row[column] for row in rows]
        if isinstance(cells[0], tuple):
            widths.append((max(len(c[0]) for c in cells), max(len(c[1]) for c in cells)))
        else:
            widths.append(max(len(c) for c in cells))
    lines = []
    for row in rows:
        parts = []
        for cell, width in zip(row, widths):
            if isinstance(cell, tuple):
                parts.append(f"{cell[0]:>{width[0]}}:{cell[1]:<{width[1]}}")
            else:
                parts.append(f"{cell:<{width}}")
        lines.append("  ".join(parts).rstrip())
    return lines


def process_name(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/comm", encoding="utf-8", errors="replace") as handle:
            return handle.read().strip()
    except OSError:
        return "?"


def socket_owners(proc: str = "/proc") -> dict[int, list[tuple[str, int, int]]]:
    """Socket inode -> [(command name, pid, fd)] for every process whose fds we may read (as ss -p)."""
    owners: dict[int, list[tuple[str, int, int]]] = {}
    try:
        pids = sorted(int(name) for name in os.listdir(proc) if name.isdigit())
    except OSError:
        return owners
    for pid in pids:
        fd_dir = f"{proc}/{pid}/fd"
        try:
            fds = sorted(int(fd) for fd in os.listdir(fd_dir) if fd.isdigit())
        except OSError:
            continue  # gone, or not ours to read
        name = None
        for fd in fds:
            try:
                target = os.readlink(f"{fd_dir}/{fd}")
            except OSError:
                continue
            if target.startswith("socket:[") and target.endswith("]"):
                if name is None:
                    name = process_name(pid)
                owners.setdefault(int(target[len("socket:["):-1]), []).append((name, pid, fd))
    return owners


if __name__ == "__main__":
    sys.exit(main())
