"""The data plane: the wires between nodes, and the plumbing every process speaks.

One bus device process per segment (hub, switch or point-to-point link)
carries raw Ethernet frames between the NICs attached to it, shapes each
port like Linux's netem + tbf, and can write a pcap of what it carries.
Contracts: docs/design.md ("Bus device", "Data plane framing", "Control
channel", "Measured baselines").

The modules, by layer; each imports only from the layers below it (`->`
lists what it imports from the bus):

    kinds     hub.py, p2p.py       -> device            where a frame goes: `forward()`, `run(config)`
              switch.py            -> device, fdb, ether
    device    device.py            -> curve, device_control, port, capture, ether, shaping, runtime, tap, transport
                                                        Device: sockets, port table, uplinks, the data
                                                        path of each loop pass; `run_device`, `main`
              tap.py               -> transport         a port bridged to a Linux TAP device (opened
                                                        in a network namespace), privilege checks
              device_control.py    -> capture, shaping, transport
                                                        the control ops (status, stats, set_port, capture...)
              port.py              -> ether, shaping, transport
                                                        Port: link params, shapers, length checks, counters
              capture.py           -> runtime, pcap     a running capture (pcap imported when one starts)
    shared    transport.py         -> curve, dataplane  endpoints, the msgpack control channel, and the
                                                        data-plane names re-exported for everyone
              dataplane.py         -> curve             frame batches, BatchError, FrameBatcher, DataPort
              runtime.py           -> curve             process lifecycle and the event loop (which polls
                                                        a CURVE server's ZAP handler and monitor)
              shaping.py           -> text              link parameters, the per-direction Shaper (sans-I/O)
    leaves    curve.py                                  CURVE keys, ZAP handler, refusal logs (tcp:// only)
              ether.py                                  the Ethernet header layout the bus may read
              fdb.py                                    the switch's learning table (sans-I/O)
              pcap.py                                   pcap writer and strict reader
              text.py                                   "did you mean" and text tables, for every layer
    tests     testing.py           -> transport, ether  fake NICs, device processes, short run dirs

Leaves import nothing of the bus. Code outside the bus imports the
plumbing from `bus.transport` (the name the architecture gives it), never
from `bus.dataplane`.

Nothing in `bus/` imports `nodes/` or `control/`: they sit above the bus and
may import it, never the reverse (rule 3 of the architecture). So the bus
keeps its own small Ethernet layout (`ether.py`) instead of the codecs in
`nodes/wire/`, and its own error for a malformed batch (`BatchError`, a
`ValueError`) instead of `WireError`.
"""
