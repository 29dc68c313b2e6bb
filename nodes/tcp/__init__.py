"""TCP (RFC 9293), sans-I/O: the protocol core the node's kernel drives (issue 13).

Before changing this package, read issue 13, the TCP seed page (../shared/seeds/) and Linux's
net/ipv4/tcp_*.c for each rule (cited where not obvious).

Each module pure and tested on its own (tests/unit/nodes/tcp/):

    seq          sequence numbers modulo 2**32 (Linux's before/after/between, RFC 9293 3.4
                 acceptability and Linux's looser tcp_sequence); RFC 6528 ISNs and per-pair
                 timestamp offsets
    rtt          the retransmission timer's estimator in Linux's arithmetic (RFC 6298: SRTT/RTTVAR,
                 Karn, backoff; rto_min floors the variance term; ss -ti fields; tcp_model_timeout)
    congestion   pluggable congestion control after tcp_congestion_ops: Reno/NewReno (RFC 5681/
                 6582 inflation, not PRR), CUBIC (RFC 9438, tcp_cubic.c, HyStart by delay)
    reassembly   the receive side: in-order bytes for recv(), the bounded out-of-order queue
                 (tcp_data_queue_ofo), FIN, the receive window, SACK/D-SACK blocks (RFC 2018/2883)
    scoreboard   the send side's SACK scoreboard (RFC 6675: IsLost, pipe, NextSeg; an RTO as
                 tcp_timeout_mark_lost)
    options      the options a SYN offers as Linux does and what both ends agreed (MSS, window
                 scale, timestamps, SACK-permitted), PAWS, the timestamp clock and its RTT samples
                 (RFC 7323, RFC 2018)
    states       Linux's state numbers, TcpConfig (net.ipv4.tcp_*), TcpStats (Tcp/TcpExt counters)

The connection, `connection.TcpConnection` (one struct tcp_sock with its timers, sans-I/O: time
is an argument, segments leave through a callback), is one class split by concern:

    connection   construction, the user calls (connect, accept_syn, send, recv, shutdown, close,
                 abort), ICMP errors, socket options, info() for ss -ti
    input        a segment arrives (RFC 9293 3.10.7): header prediction, SYN-SENT, TIME-WAIT,
                 PAWS, acceptability, RST/SYN rules with RFC 5961 challenge ACKs, data, FIN,
                 quick-ACK mode and delayed ACKs, receive-buffer autotuning
    ack          ACK processing (tcp_ack): window, RTT, congestion control, NewReno and SACK
                 recovery, our FIN acknowledged
    output       tcp_write_xmit (cwnd, peer window, Nagle, SWS), retransmissions, the receive
                 window (__tcp_select_window), RSTs, tail loss probes (RFC 8985 7)
    timers       retransmission/SYN/SYN-ACK (backoff, retries, TCP_USER_TIMEOUT), persist,
                 delayed ACK, keepalive, FIN-WAIT-2, TIME-WAIT

`layer.TcpLayer` wires connections into a node's stack and its socket layer.

Not modelled: HyStart's ACK-train detection, PRR, RACK, D-SACK undo, ECN, Fast Open, MD5/AO, urgent data.
"""
