"""`config_from_sysctl`: a stack's TcpConfig from its net.ipv4.tcp_* knobs (nodes/sysctl.py)."""
from __future__ import annotations

from typing import Mapping

from .states import TcpConfig


def config_from_sysctl(sysctl: Mapping) -> TcpConfig:
    """The knobs as they are now; Linux's units turned into TcpConfig's (seconds)."""
    get = sysctl.get
    rmem = get("net.ipv4.tcp_rmem", (4096, 131072, 6291456))
    wmem = get("net.ipv4.tcp_wmem", (4096, 16384, 4194304))
    config = TcpConfig(
        timestamps=bool(get("net.ipv4.tcp_timestamps", 1)),
        window_scaling=bool(get("net.ipv4.tcp_window_scaling", 1)),
        sack=bool(get("net.ipv4.tcp_sack", 1)),
        rmem=rmem[1], rmem_max=rmem[2], wmem=wmem[1], wmem_max=wmem[2],
        moderate_rcvbuf=bool(get("net.ipv4.tcp_moderate_rcvbuf", 1)),
        syn_retries=get("net.ipv4.tcp_syn_retries", 6),
        synack_retries=get("net.ipv4.tcp_synack_retries", 5),
        retries1=get("net.ipv4.tcp_retries1", 3),
        retries2=get("net.ipv4.tcp_retries2", 15),
        orphan_retries=get("net.ipv4.tcp_orphan_retries", 0),
        fin_timeout=float(get("net.ipv4.tcp_fin_timeout", 60)),
        time_wait=get("net.ipv4.tcp_time_wait", 1000) / 1000.0,
        keepalive_time=float(get("net.ipv4.tcp_keepalive_time", 7200)),
        keepalive_intvl=float(get("net.ipv4.tcp_keepalive_intvl", 75)),
        keepalive_probes=get("net.ipv4.tcp_keepalive_probes", 9),
        congestion=get("net.ipv4.tcp_congestion_control", "cubic"),
        slow_start_after_idle=bool(get("net.ipv4.tcp_slow_start_after_idle", 1)),
        max_syn_backlog=get("net.ipv4.tcp_max_syn_backlog", 4096),
        rfc1337=bool(get("net.ipv4.tcp_rfc1337", 0)),
        challenge_ack_limit=get("net.ipv4.tcp_challenge_ack_limit", 1000),
        min_snd_mss=get("net.ipv4.tcp_min_snd_mss", 48),
    )
    return config
