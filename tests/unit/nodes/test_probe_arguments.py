"""The kernel's ping and traceroute refuse bad arguments naming the argument and its range, as iputils/traceroute do."""
from __future__ import annotations

import pytest

from nodes.memnet import host_router_host
from nodes.probes import PingSession, TracerouteSession
from nodes.wire.addresses import IPv4Address

H2 = IPv4Address("10.0.2.10")


@pytest.mark.parametrize("options, message", [
    ({"size": 70000}, "ping: packet size 70000 is too large. Maximum is 65507"),
    ({"size": -1}, "ping: invalid argument: '-1': out of range: 0 <= value <= 65507"),
    ({"count": 0}, "ping: invalid argument: '0': out of range: 1 <= value"),
    ({"interval": -1}, "ping: bad timing interval: -1"),
    ({"timeout": 0}, "ping: bad linger time: 0"),
])
def test_ping_names_the_bad_argument(options, message):
    net, h1, r1, h2 = host_router_host()
    with pytest.raises(ValueError) as error:
        PingSession(h1, H2, lambda result: None, **options)
    assert str(error.value).startswith(message)


def test_the_largest_ping_is_accepted():
    net, h1, r1, h2 = host_router_host()
    PingSession(h1, H2, lambda result: None, size=65507)


@pytest.mark.parametrize("options, message", [
    ({"max_hops": 256}, "max hops cannot be more than 255"),
    ({"first_ttl": 5, "max_hops": 3}, "first hop out of range (1..3): 5"),
    ({"probes": 0}, "at least 1"),
    ({"wait": 0}, "bad wait specification"),
])
def test_traceroute_names_the_bad_argument(options, message):
    net, h1, r1, h2 = host_router_host()
    with pytest.raises(ValueError, match=None) as error:
        TracerouteSession(h1, H2, lambda result: None, **options)
    assert message in str(error.value)
