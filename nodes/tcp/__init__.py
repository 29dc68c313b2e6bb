"""TCP (RFC 9293), sans-I/O: the protocol core the node's kernel drives (issue 13).

Before changing this package, read issue 13, the TCP seed page (../shared/seeds/) and Linux's
net/ipv4/tcp_*.c for each rule (cited where not obvious).

Built so far, each module pure and tested on its own (tests/unit/nodes/tcp/), not yet wired
into the stack or the socket layer:

    seq          sequence numbers modulo 2**32 (Linux's before/after/between, RFC 9293 3.4
                 acceptability and Linux's looser tcp_sequence); RFC 6528 ISNs and per-pair
                 timestamp offsets
    rtt          the retransmission timer's estimator in Linux's arithmetic (RFC 6298: SRTT/RTTVAR,
                 Karn, backoff; rto_min floors the variance term; ss -ti fields; tcp_model_timeout)
    congestion   pluggable congestion control after tcp_congestion_ops: Reno/NewReno (RFC 5681/
                 6582 inflation, not PRR), CUBIC (RFC 9438, tcp_cubic.c, without HyStart)
    reassembly   the receive side: in-order bytes for recv(), the bounded out-of-order queue
                 (tcp_data_queue_ofo), FIN, the receive window, SACK/D-SACK blocks (RFC 2018/2883)
    scoreboard   the send side's SACK scoreboard (RFC 6675: IsLost, pipe, NextSeg; an RTO as
                 tcp_timeout_mark_lost)
    options      the options a SYN offers as Linux does and what both ends agreed (MSS, window
                 scale, timestamps, SACK-permitted), PAWS, the timestamp clock and its RTT samples
                 (RFC 7323, RFC 2018)

Not built yet: the connection itself (the state machine, the TCB, timers, the segment
path through ipv4, the stream pump into nodes/sockfs.py), HyStart, PRR, RACK-TLP, D-SACK
undo, ECN, Fast Open, MD5/AO.
"""
