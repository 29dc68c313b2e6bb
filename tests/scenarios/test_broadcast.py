"""A broadcast to 255.255.255.255 reaches every host on the LAN, the sender's own listener included
(issue 14 item 5), through the scenario API's sockets on real nodes.

single_lan: h1..h4 on 10.0.0.0/24 behind one switch, no default route. As on Linux, with no
route for 255.255.255.255 the sender names its device by binding to its own address
(ip_route_output_key_hash_rcu); unbound, the send is ENETUNREACH.
"""
from __future__ import annotations

import errno
from socket import AF_INET, SO_BROADCAST, SOCK_DGRAM, SOL_SOCKET

import pytest

from control.emulation import Emulation

from .helpers import private_run_base, topology

PORT = 6100


@pytest.fixture(scope="module")
def net():
    with private_run_base(), Emulation(topology("single_lan"), name="scn-bcast") as net:
        yield net


@pytest.mark.timeout(60)
def test_a_limited_broadcast_reaches_every_host_on_the_lan_and_the_sender_itself(net):
    receivers = {name: net[name].socket(AF_INET, SOCK_DGRAM) for name in ("h1", "h2", "h3", "h4")}
    sender = net["h1"].socket(AF_INET, SOCK_DGRAM)
    try:
        for receiver in receivers.values():
            receiver.bind(("", PORT))
            receiver.settimeout(10)
        sender.setsockopt(SOL_SOCKET, SO_BROADCAST, 1)
        sender.bind(("10.0.0.1", 0))
        assert sender.sendto(b"hello, lan", ("255.255.255.255", PORT)) == 10
        source = ("10.0.0.1", sender.getsockname()[1])
        for name, receiver in receivers.items():
            assert receiver.recvfrom(100) == (b"hello, lan", source), name
    finally:
        sender.close()
        for receiver in receivers.values():
            receiver.close()


@pytest.mark.timeout(60)
def test_without_a_route_an_unbound_limited_broadcast_is_unreachable(net):
    with net["h2"].socket(AF_INET, SOCK_DGRAM) as sender:
        sender.setsockopt(SOL_SOCKET, SO_BROADCAST, 1)
        with pytest.raises(OSError) as caught:
            sender.sendto(b"x", ("255.255.255.255", PORT))
        assert caught.value.errno == errno.ENETUNREACH
