"""One node's kernel: a user-space IPv4 stack modelled on Linux, in layers.

Imports point down only (ARCHITECTURE.md rule 3), checked by the import-linter
contracts in pyproject.toml (tests/unit/test_layering.py runs them):

    kernel        the node process: event loop, clock, NICs on the bus, control ops
    memnet        several stacks wired in memory with a fake clock (tests, zygote warm-up)
    syscalls      the syscall front end: trapped socket calls of programs, one handler each
                  (`HANDLERS`, the one table), answered by the socket layer; it names every
                  public name of the two below
    syscall_dispatch              its machinery: listeners, dispatch, pending calls, the
                                  program's fds and memory
    syscall_args  what the socket layer sees of a call (SockAddr, Call, Deferred...); the codecs
    trap          seccomp user notification: availability, `spawn_trapped`; it names every
                  public name of the two below
    trap_listener the listener's calls (receive, answer, inject an fd); the task's fds and memory
    trap_abi      syscall numbers, uapi layouts and ioctl numbers, the BPF filter builder
    stack         the composition root (`struct net`): builds every layer with what it
                  needs, the receive path (netif_receive), the timer heap, the
                  exception barrier's logging
    probes | socket               the kernel's own ping and traceroute sessions; the INET
                  socket layer (inet_create, bind/connect/sendmsg/recvmsg, options,
                  UDP, ping and raw sockets, SOCK_STREAM's half): below stack, which builds it
    icmp | udp    transports: register with ipv4 (`add_protocol`), send through
                  `ipv4.output`, report through `ipv4.icmp_send`; (tcp) planned
    ipv4          ip_rcv/ip_forward/ip_queue_xmit; `inet_protos`
    ip_fragment   ip_fragment and the ipq reassembly queues
    nic | neigh | route_cache     NetDevice rings + NAPI; the ARP table; the LRU route cache
    neigh_nud | route             the NUD state machine (neigh_update, timers); the FIB
                                  (RouteType, one error mapping)
    arp           ARP rules (arp_process) and the neighbour effects
    neigh_entry   NUD states, neighbour entries, their knobs and counters
    skbuff        the packet buffer
    wire | sysctl pure codecs (the only place that knows byte offsets); the knob table
                  (the one source of every default)

The user side, `api` (in-process sockets) and `tools/` (ip, ss, sysctl in an
attached shell), is planned; it may import no stack module at all.
"""
