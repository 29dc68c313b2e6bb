"""Issue 14 item 2, as a user of the scenario API sees it: all of 127.0.0.0/8 is the node's own
(the local table's `local 127.0.0.0/8 dev lo`), as on Linux."""
from __future__ import annotations

import socket

import pytest

from control.emulation import Emulation

from .helpers import private_run_base, topology

pytestmark = pytest.mark.timeout(60)


def test_ping_127_0_0_2_answers_and_a_socket_binds_it():
    with private_run_base(), Emulation(topology("single_lan"), name="scn-lo-127") as net:
        h1 = net["h1"]
        result = h1.ping("127.0.0.2", count=2, interval=0.1, timeout=2.0)
        assert result.received == 2
        server = h1.socket(socket.AF_INET, socket.SOCK_DGRAM)
        client = h1.socket(socket.AF_INET, socket.SOCK_DGRAM)
        try:
            server.bind(("127.0.0.2", 5353))
            server.settimeout(5.0)
            client.sendto(b"to 127.0.0.2", ("127.0.0.2", 5353))
            data, (source, _) = server.recvfrom(100)
            assert (data, source) == (b"to 127.0.0.2", "127.0.0.1")
        finally:
            server.close()
            client.close()
