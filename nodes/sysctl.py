"""The node's sysctl knobs: Linux names, defaults, types and ranges.

One registry shared by the kernel (which reads the values) and the topology
validator (which rejects unknown names and bad values before anything runs).
Where Linux has the knob, the name, unit and default are Linux's
(Documentation/networking/ip-sysctl.rst); netemu-only knobs say so.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Iterator, Mapping

from bus.text import did_you_mean


@dataclass(frozen=True)
class Knob:
    """One knob; `count` > 1 makes a vector knob (Linux's "32768 60999"), held as a tuple of ints
    in non-decreasing order, each within minimum..maximum."""

    name: str
    default: Any
    minimum: int
    maximum: int
    help: str
    count: int = 1
    ordered: bool = True  # a vector knob's values may not decrease (ip_local_port_range)
    # A second face of knob `view_of`, in units of `scale` of it: Linux's unres_qlen reads and
    # writes unres_qlen_bytes in full frames (proc_unres_qlen). Only `view_of` holds a value.
    view_of: str | None = None
    scale: int = 1
    # A word knob (tcp_congestion_control): its value is one of `choices`, not an integer.
    choices: tuple[str, ...] = ()


def _knobs(*knobs: Knob) -> dict[str, Knob]:
    return {k.name: k for k in knobs}


INT_MAX = 2**31 - 1
# SKB_TRUESIZE(ETH_FRAME_LEN): a 1514-byte frame plus nodes.skbuff.SKB_TRUESIZE_OVERHEAD (576);
# the packet unit of unres_qlen (212992 bytes / 2090 = 101 packets, as `ip ntable` shows).
ETH_FRAME_TRUESIZE = 1514 + 576

KNOBS: dict[str, Knob] = _knobs(
    Knob("net.ipv4.ip_forward", 0, 0, 1, "forward IPv4 between interfaces (on for routers)"),
    Knob("net.ipv4.ip_default_ttl", 64, 1, 255, "TTL of locally generated datagrams"),
    Knob("net.ipv4.ip_forward_use_pmtu", 0, 0, 1, "forwarded datagrams obey path MTUs learnt by this node (0: the route's or device's MTU)"),
    # One value for every interface: Linux's conf.all (per-device conf.<dev> knobs are not modelled).
    Knob("net.ipv4.conf.all.rp_filter", 0, 0, 2,
         "reverse-path source validation: 0 none (kernel default; systemd distros set 2), 1 strict, 2 loose"),
    Knob("net.ipv4.conf.all.log_martians", 0, 0, 1, "log datagrams dropped for a martian source or destination"),
    Knob("net.ipv4.conf.all.route_localnet", 0, 0, 1, "accept 127/8 sources and destinations from the wire"),
    Knob("net.ipv4.conf.all.accept_source_route", 0, 0, 1,
         "accept datagrams with a loose or strict source route option (kernel default 0: conf.all is 0)"),
    Knob("net.ipv4.icmp_ratelimit", 1000, 0, INT_MAX, "ms between ICMP errors to one destination (token bucket); 0 = no limit"),
    Knob("net.ipv4.icmp_ratemask", 6168, 0, 2**19 - 1, "ICMP types (bit mask) subject to icmp_ratelimit"),
    Knob("net.ipv4.icmp_msgs_per_sec", 1000, 0, INT_MAX, "global ICMP messages per second"),
    Knob("net.ipv4.icmp_msgs_burst", 50, 0, INT_MAX, "global ICMP burst"),
    Knob("net.ipv4.icmp_echo_ignore_all", 0, 0, 1, "do not answer echo requests"),
    Knob("net.ipv4.icmp_echo_ignore_broadcasts", 1, 0, 1, "do not answer echo requests sent to broadcast"),
    Knob("net.ipv4.ipfrag_time", 30, 1, INT_MAX, "seconds a reassembly queue waits for missing fragments"),
    Knob("net.ipv4.ipfrag_high_thresh", 4 * 1024 * 1024, 0, INT_MAX, "reassembly memory (bytes) above which queues are evicted"),
    Knob("net.ipv4.ipfrag_low_thresh", 3 * 1024 * 1024, 0, INT_MAX, "eviction stops below this many bytes"),
    Knob("net.ipv4.route.max_size", 4096, 16, INT_MAX, "route cache entries (LRU)"),
    Knob("net.ipv4.route.mtu_expires", 600, 0, INT_MAX, "seconds a learned path MTU is kept"),
    Knob("net.ipv4.route.gc_timeout", 300, 0, INT_MAX, "seconds an accepted ICMP redirect is kept (ip_rt_gc_timeout)"),
    # ip_rt_send_redirect's back-off, in jiffies as Linux shows them (HZ = 1000: milliseconds).
    Knob("net.ipv4.route.redirect_number", 9, 0, INT_MAX, "redirects sent to one host that ignores them, then silence"),
    Knob("net.ipv4.route.redirect_load", 20, 0, INT_MAX, "jiffies (ms) before the 2nd redirect; doubles with each"),
    Knob("net.ipv4.route.redirect_silence", 20480, 0, INT_MAX, "jiffies (ms) without redirected datagrams that reset the count"),
    Knob("net.ipv4.conf.all.send_redirects", 1, 0, 1, "send ICMP redirects when forwarding back out of the ingress interface"),
    Knob("net.ipv4.conf.all.accept_redirects", 1, 0, 1,
         "accept ICMP redirects; setting ip_forward sets it to the opposite (inet_forward_change): 1 host, 0 router"),
    Knob("net.ipv4.conf.all.secure_redirects", 1, 0, 1, "with shared_media 0: accept redirects only toward a default gateway"),
    Knob("net.ipv4.conf.all.shared_media", 1, 0, 1, "subnets share the medium: redirects toward any unicast address on it"),
    Knob("net.ipv4.neigh.default.unres_qlen_bytes", 212992, 0, INT_MAX,
         "bytes (truesize) queued per unresolved neighbour; the newest packet always waits (Linux >= 3.3)"),
    Knob("net.ipv4.neigh.default.unres_qlen", 212992 // ETH_FRAME_TRUESIZE, 0, INT_MAX // ETH_FRAME_TRUESIZE,
         "unres_qlen_bytes counted in full Ethernet frames (its packet view, as Linux shows it)",
         view_of="net.ipv4.neigh.default.unres_qlen_bytes", scale=ETH_FRAME_TRUESIZE),
    Knob("net.ipv4.neigh.default.retrans_time_ms", 1000, 1, INT_MAX, "ms between ARP requests"),
    Knob("net.ipv4.neigh.default.mcast_solicit", 3, 0, 255, "broadcast ARP requests before FAILED"),
    Knob("net.ipv4.neigh.default.ucast_solicit", 3, 0, 255, "unicast probes of a stale entry"),
    Knob("net.ipv4.neigh.default.base_reachable_time_ms", 30000, 1, INT_MAX, "ms an entry stays REACHABLE"),
    Knob("net.ipv4.neigh.default.delay_first_probe_time", 5, 0, INT_MAX, "seconds in DELAY before probing"),
    Knob("net.ipv4.neigh.default.gc_stale_time", 60, 1, INT_MAX, "seconds before an unused stale entry is collected"),
    Knob("net.ipv4.neigh.default.locktime", 100, 0, INT_MAX, "1/100 s (USER_HZ): an ARP update may not change a MAC learnt this recently"),
    Knob("net.ipv4.neigh.default.gc_thresh3", 1024, 1, INT_MAX, "hard limit on neighbour entries"),
    Knob("net.ipv4.conf.all.arp_notify", 0, 0, 1,
         "gratuitous ARP for every address of an interface when it comes up (NETDEV_UP); 0: none"),
    Knob("net.ipv4.ip_local_port_range", (32768, 60999), 1, 65535,
         "ephemeral ports (low high) for bind to port 0 and autobind (udp_lib_get_port, inet_csk_get_port)", count=2),
    Knob("net.ipv4.ip_unprivileged_port_start", 1024, 0, 65535, "ports below this need CAP_NET_BIND_SERVICE (EACCES)"),
    Knob("net.ipv4.ping_group_range", (0, 2147483647), 0, 2147483647,
         "groups (low high) allowed ICMP datagram sockets; systemd's default, as on Debian (the bare kernel's is 1 0: nobody)",
         count=2, ordered=False),
    # TCP (nodes/tcp/): Linux's names and defaults; seconds where Linux has seconds
    Knob("net.ipv4.tcp_timestamps", 1, 0, 1, "offer and accept RFC 7323 timestamps"),
    Knob("net.ipv4.tcp_window_scaling", 1, 0, 1, "offer and accept RFC 7323 window scaling"),
    Knob("net.ipv4.tcp_sack", 1, 0, 1, "offer and accept SACK (RFC 2018)"),
    Knob("net.ipv4.tcp_rmem", (4096, 131072, 6291456), 1, INT_MAX,
         "receive buffer of a TCP socket: min, default, max (autotuning's ceiling)", count=3),
    Knob("net.ipv4.tcp_wmem", (4096, 16384, 4194304), 1, INT_MAX,
         "send buffer of a TCP socket: min, default, max (autotuning's ceiling)", count=3),
    Knob("net.ipv4.tcp_moderate_rcvbuf", 1, 0, 1, "grow the receive buffer with the connection's needs"),
    Knob("net.ipv4.tcp_syn_retries", 6, 1, 127, "SYN retransmissions before connect() fails (ETIMEDOUT)"),
    Knob("net.ipv4.tcp_synack_retries", 5, 1, 255, "SYN-ACK retransmissions before a half-open child is dropped"),
    Knob("net.ipv4.tcp_retries1", 3, 0, 255, "retransmissions before the route is doubted (negative advice)"),
    Knob("net.ipv4.tcp_retries2", 15, 0, 255, "retransmissions (as a timeout) before an established connection fails"),
    Knob("net.ipv4.tcp_orphan_retries", 0, 0, 255, "retransmissions of a closed socket's connection (0: 8)"),
    Knob("net.ipv4.tcp_fin_timeout", 60, 1, INT_MAX, "seconds an orphaned connection stays in FIN-WAIT-2"),
    Knob("net.ipv4.tcp_time_wait", 1000, 0, INT_MAX,
         "netemu only: ms in TIME-WAIT (Linux's TCP_TIMEWAIT_LEN is a constant 60000; short suits emulation)"),
    Knob("net.ipv4.tcp_keepalive_time", 7200, 1, INT_MAX, "seconds idle before the first keepalive probe"),
    Knob("net.ipv4.tcp_keepalive_intvl", 75, 1, INT_MAX, "seconds between keepalive probes"),
    Knob("net.ipv4.tcp_keepalive_probes", 9, 1, 127, "unanswered keepalive probes before the connection fails"),
    Knob("net.ipv4.tcp_congestion_control", "cubic", 0, 0, "congestion control of new connections",
         choices=("cubic", "reno")),
    Knob("net.ipv4.tcp_slow_start_after_idle", 1, 0, 1, "restart from the initial window after an idle RTO"),
    Knob("net.ipv4.tcp_max_syn_backlog", 4096, 1, INT_MAX, "handshakes in progress per listener, at most"),
    Knob("net.ipv4.tcp_rfc1337", 0, 0, 1, "TIME-WAIT ignores RSTs (RFC 1337)"),
    Knob("net.ipv4.tcp_challenge_ack_limit", 1000, 0, INT_MAX, "challenge ACKs per second (RFC 5961)"),
    Knob("net.ipv4.tcp_min_snd_mss", 48, 48, 65535, "the smallest MSS a peer may impose"),
    Knob("net.core.rmem_default", 212992, 2304, INT_MAX, "SO_RCVBUF of a new socket (bytes)"),
    Knob("net.core.rmem_max", 212992, 2304, INT_MAX, "largest SO_RCVBUF setsockopt may ask for (halved value)"),
    Knob("net.core.wmem_default", 212992, 4608, INT_MAX, "SO_SNDBUF of a new socket (bytes)"),
    Knob("net.core.wmem_max", 212992, 4608, INT_MAX, "largest SO_SNDBUF setsockopt may ask for (halved value)"),
    Knob("net.core.netdev_budget", 300, 1, INT_MAX, "frames processed per NAPI softirq round"),
    Knob("net.core.dev_weight", 64, 1, INT_MAX, "frames per device per NAPI visit"),
    Knob("net.core.napi", 1, 0, 1, "netemu only: 0 turns NAPI off (every frame processed on arrival: receive livelock)"),
)


class SysctlError(ValueError):
    """An unknown knob or a value out of range, with a did-you-mean."""

    def __init__(self, name: str, message: str) -> None:
        super().__init__(f"{name}: {message}")
        self.name = name
        self.message = message


def check(name: str, value: Any) -> Any:
    """The canonical value of `name` (an int, or a tuple for a vector knob), or SysctlError."""
    knob = KNOBS.get(name)
    if knob is None:
        raise SysctlError(name, f"unknown sysctl{did_you_mean(name, KNOBS)}")
    if knob.count > 1:
        return _check_vector(knob, value)
    return _check_scalar(knob, name, value)


def _check_vector(knob: Knob, value: Any) -> tuple[int, ...]:
    """`"32768 60999"` (as `sysctl -w` takes it) or a sequence of ints; each in range, non-decreasing."""
    parts = value.split() if isinstance(value, str) else value
    if not isinstance(parts, (list, tuple)) or len(parts) != knob.count:
        raise SysctlError(knob.name, f"expected {knob.count} integers, got {value!r}")
    values = tuple(_check_scalar(knob, knob.name, part) for part in parts)
    if knob.ordered and list(values) != sorted(values):
        raise SysctlError(knob.name, f"{' '.join(map(str, values))}: values must not decrease")
    return values


def _check_scalar(knob: Knob, name: str, value: Any) -> Any:
    if knob.choices:
        if not isinstance(value, str) or value.strip() not in knob.choices:
            raise SysctlError(name, f"{value!r} is not one of {', '.join(knob.choices)}")
        return value.strip()
    if isinstance(value, bool):
        value = int(value)
    if isinstance(value, str) and value.strip().lstrip("-").isdigit():
        value = int(value.strip())
    if not isinstance(value, int):
        raise SysctlError(name, f"expected an integer, got {value!r}")
    if not knob.minimum <= value <= knob.maximum:
        raise SysctlError(name, f"{value} is out of range {knob.minimum}..{knob.maximum}")
    return value


class Sysctl(Mapping[str, int]):
    """A node's knob values: defaults overridden by config and at run time."""

    def __init__(self, overrides: Mapping[str, Any] | None = None) -> None:
        self._values = {name: knob.default for name, knob in KNOBS.items() if knob.view_of is None}
        # ip_forward first: it resets accept_redirects, which the config may then override.
        for name, value in sorted((overrides or {}).items(), key=lambda item: item[0] != "net.ipv4.ip_forward"):
            self.set(name, value)

    def set(self, name: str, value: Any) -> Any:
        canonical = check(name, value)
        knob = KNOBS[name]
        if knob.view_of is not None:
            self._values[knob.view_of] = canonical * knob.scale
        else:
            self._values[name] = canonical
        if name == "net.ipv4.ip_forward":
            # inet_forward_change: a router stops accepting redirects, a host starts again.
            self._values["net.ipv4.conf.all.accept_redirects"] = 0 if canonical else 1
        return canonical

    def __getitem__(self, name: str) -> int:
        try:
            return self._values[name]
        except KeyError:
            knob = KNOBS.get(name)
            if knob is None or knob.view_of is None:
                raise
            return self._values[knob.view_of] // knob.scale

    def __iter__(self) -> Iterator[str]:
        return iter(KNOBS)

    def __len__(self) -> int:
        return len(KNOBS)
