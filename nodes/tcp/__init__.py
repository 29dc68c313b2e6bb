"""TCP (RFC 9293), sans-I/O: the protocol core the node's kernel drives (issue 13).

Before changing this package, read issue 13, the TCP seed page (../shared/seeds/) and Linux's
net/ipv4/tcp_*.c for each rule (cited where not obvious).

Built so far, each module pure and tested on its own (tests/unit/nodes/tcp/), not yet wired
into the stack or the socket layer:

    seq          sequence numbers modulo 2**32 (one helper, tested at the wrap); RFC 6528 ISNs
    rtt          the retransmission timer's estimator (RFC 6298: SRTT/RTTVAR, Karn, backoff)
    congestion   pluggable congestion control: Reno/NewReno (RFC 5681/6582), CUBIC (RFC 9438)
    reassembly   the receive side's out-of-order queue and the SACK blocks it reports (RFC 2018)
    scoreboard   the send side's SACK scoreboard and loss detection (RFC 6675)
    options      the options a SYN offers and what both ends agreed (MSS, window scale,
                 timestamps with PAWS, SACK-permitted: RFC 7323, RFC 2018)
"""
