"""TCP's states with Linux's numbers (include/net/tcp_states.h), their `ss` names, and the
per-stack configuration (`TcpConfig`, the net.ipv4.tcp_* knobs) and SNMP counters (`TcpStats`)
every connection of a stack shares.

The socket layer (nodes/socket/) keeps its own copy of the numbers it needs: it sits above TCP
and TCP may not import it; the values are Linux's in both places."""
from __future__ import annotations

from dataclasses import dataclass, fields

TCP_ESTABLISHED = 1
TCP_SYN_SENT = 2
TCP_SYN_RECV = 3
TCP_FIN_WAIT1 = 4
TCP_FIN_WAIT2 = 5
TCP_TIME_WAIT = 6
TCP_CLOSE = 7
TCP_CLOSE_WAIT = 8
TCP_LAST_ACK = 9
TCP_LISTEN = 10
TCP_CLOSING = 11

# ss's names (iproute2 misc/ss.c sstate_name)
STATE_NAMES = {
    TCP_ESTABLISHED: "ESTAB", TCP_SYN_SENT: "SYN-SENT", TCP_SYN_RECV: "SYN-RECV", TCP_FIN_WAIT1: "FIN-WAIT-1",
    TCP_FIN_WAIT2: "FIN-WAIT-2", TCP_TIME_WAIT: "TIME-WAIT", TCP_CLOSE: "UNCONN", TCP_CLOSE_WAIT: "CLOSE-WAIT",
    TCP_LAST_ACK: "LAST-ACK", TCP_LISTEN: "LISTEN", TCP_CLOSING: "CLOSING",
}

# States in which the connection counts in CurrEstab (RFC 1213 tcpCurrEstab: ESTABLISHED or CLOSE-WAIT).
CURR_ESTAB_STATES = frozenset((TCP_ESTABLISHED, TCP_CLOSE_WAIT))


@dataclass(slots=True)
class TcpConfig:
    """One stack's TCP knobs (net.ipv4.tcp_*), Linux's defaults; seconds where Linux has jiffies.

    Built by the stack from its sysctl (`TcpLayer`); connections read it, never write it."""

    timestamps: bool = True              # tcp_timestamps
    window_scaling: bool = True          # tcp_window_scaling
    sack: bool = True                    # tcp_sack
    rmem: int = 131072                   # tcp_rmem[1]: a socket's initial receive buffer
    wmem: int = 16384                    # tcp_wmem[1]: a socket's initial send buffer
    rmem_max: int = 6291456              # tcp_rmem[2]: receive autotuning's ceiling
    wmem_max: int = 4194304              # tcp_wmem[2]: send autotuning's ceiling
    moderate_rcvbuf: bool = True         # tcp_moderate_rcvbuf
    rto_min: float = 0.2                 # TCP_RTO_MIN
    rto_max: float = 120.0               # TCP_RTO_MAX
    rto_initial: float = 1.0             # TCP_TIMEOUT_INIT (RFC 6298 2.1)
    syn_retries: int = 6                 # tcp_syn_retries
    synack_retries: int = 5              # tcp_synack_retries
    retries1: int = 3                    # tcp_retries1
    retries2: int = 15                   # tcp_retries2
    orphan_retries: int = 0              # tcp_orphan_retries (0 means 8, tcp_orphan_retries())
    fin_timeout: float = 60.0            # tcp_fin_timeout: FIN-WAIT-2 of an orphan
    time_wait: float = 1.0               # netemu's net.ipv4.tcp_time_wait (Linux: TCP_TIMEWAIT_LEN, 60 s)
    delack_min: float = 0.04             # TCP_DELACK_MIN
    delack_max: float = 0.2              # TCP_DELACK_MAX
    keepalive_time: float = 7200.0       # tcp_keepalive_time
    keepalive_intvl: float = 75.0        # tcp_keepalive_intvl
    keepalive_probes: int = 9            # tcp_keepalive_probes
    congestion: str = "cubic"            # tcp_congestion_control
    initial_cwnd: int = 10               # TCP_INIT_CWND (RFC 6928)
    slow_start_after_idle: bool = True   # tcp_slow_start_after_idle
    max_syn_backlog: int = 4096          # tcp_max_syn_backlog
    rfc1337: bool = False                # tcp_rfc1337: TIME-WAIT ignores RSTs when set
    challenge_ack_limit: int = 1000      # tcp_challenge_ack_limit: challenge ACKs a second (RFC 5961 7)
    min_snd_mss: int = 48                # tcp_min_snd_mss


@dataclass(slots=True)
class TcpStats:
    """/proc/net/snmp's Tcp: line (RFC 4022 names) and the TcpExt counters netemu keeps.

    The layer counts what it sees before a connection does (InSegs, InErrs, InCsumErrors, the
    RSTs it sends for no socket: OutRsts, OutSegs of every segment it transmits); a connection
    counts its opens, failures, resets and retransmissions, and keeps CurrEstab by its state."""

    ActiveOpens: int = 0
    PassiveOpens: int = 0
    AttemptFails: int = 0
    EstabResets: int = 0
    CurrEstab: int = 0
    InSegs: int = 0
    OutSegs: int = 0
    RetransSegs: int = 0
    InErrs: int = 0
    OutRsts: int = 0
    InCsumErrors: int = 0
    # TcpExt (nstat names)
    ListenOverflows: int = 0
    ListenDrops: int = 0
    TCPChallengeACK: int = 0
    PAWSEstab: int = 0
    TCPTimeouts: int = 0
    TCPFastRetrans: int = 0
    TCPLossProbes: int = 0
    TCPSackRecovery: int = 0
    TCPRenoRecovery: int = 0
    TCPOFOQueue: int = 0
    TCPOFODrop: int = 0
    TCPAbortOnData: int = 0
    TCPAbortOnClose: int = 0
    TCPAbortOnTimeout: int = 0
    TCPAbortOnLinger: int = 0
    DelayedACKs: int = 0
    TCPPureAcks: int = 0
    TCPZeroWindowDrop: int = 0
    TW: int = 0                          # TIME-WAIT entered (TcpExt TW)

    def snmp(self) -> dict[str, int]:
        """The Tcp: line's counters, /proc/net/snmp's order."""
        return {name: getattr(self, name) for name in (
            "ActiveOpens", "PassiveOpens", "AttemptFails", "EstabResets", "CurrEstab", "InSegs", "OutSegs",
            "RetransSegs", "InErrs", "OutRsts", "InCsumErrors")}

    def as_dict(self) -> dict[str, int]:
        return {field.name: getattr(self, field.name) for field in fields(self)}
