"""ICMP redirects, both sides, as Linux's route.c does them (issue 14, item 10).

Topology (two routers on one LAN with the host):

    h1 10.0.1.10 --- lan1 --- r1 10.0.1.1   (h1's default gateway; 10.0.2.0/24 via r2)
                         \\--- r2 10.0.1.2 --- lan2 --- h2 10.0.2.10

h1 -> h2 goes to r1, which sends it back out of eth0 to r2: r1 redirects h1 to r2.
"""
from __future__ import annotations

from nodes.memnet import Network
from nodes.probes import PingSession
from nodes.sysctl import Sysctl
from nodes.tools import ip_format
from nodes.wire.addresses import IPv4Address
from nodes.wire.icmp import REDIR_HOST, REDIRECT
from nodes.wire.ipv4 import IPPROTO_UDP

H2 = IPv4Address("10.0.2.10")
R1 = IPv4Address("10.0.1.1")
R2 = IPv4Address("10.0.1.2")


def two_routers_one_lan(*, h1_knobs=None, r1_knobs=None):
    net = Network()
    h1 = net.node("h1", **(h1_knobs or {}))
    r1 = net.node("r1", router=True, **(r1_knobs or {}))
    r2 = net.node("r2", router=True)
    h2 = net.node("h2")
    net.attach(h1, "eth0", "lan1", "10.0.1.10/24")
    net.attach(r1, "eth0", "lan1", "10.0.1.1/24")
    net.attach(r2, "eth0", "lan1", "10.0.1.2/24")
    net.attach(r2, "eth1", "lan2", "10.0.2.1/24")
    net.attach(h2, "eth0", "lan2", "10.0.2.10/24")
    h1.add_route({"dst": "default", "gateway": "10.0.1.1"})
    r1.add_route({"dst": "10.0.2.0/24", "gateway": "10.0.1.2"})
    h2.add_route({"dst": "default", "gateway": "10.0.2.1"})
    return net, h1, r1, r2, h2


def ping(net, host, count=3, interval=1.0):
    results = []
    PingSession(host, H2, results.append, count=count, interval=interval).start(net.now)
    net.run(count * interval + 2)
    return results[0]


def udp_stream(net, host, count, interval):
    """`count` UDP datagrams to h2, one every `interval` seconds."""
    for _ in range(count):
        host.ipv4.output(int(H2), IPPROTO_UDP, bytes(16), net.now)
        net.run(interval)


def test_a_router_redirects_a_host_to_the_better_gateway_and_the_host_uses_it():
    net, h1, r1, r2, h2 = two_routers_one_lan()
    result = ping(net, h1, count=3)
    assert result["received"] == 3 and result["errors"] == 0
    assert r1.counters()["Icmp"]["OutRedirects"] == 1
    assert h1.counters()["Icmp"]["InRedirects"] == 1
    assert r1.counters()["Ip"]["ForwDatagrams"] == 1  # only the first echo went through r1
    (row,) = [row for row in h1.route_cache.show(net.now) if row["dst"] == "10.0.2.10"]
    assert (row["gateway"], row["redirected"], row["dev"]) == ("10.0.1.2", True, "eth0")
    lines = ip_format.route_cache({"entries": [row]})
    assert lines[0] == "10.0.2.10 via 10.0.1.2 dev eth0 src 10.0.1.10"
    assert lines[1].startswith("    cache <redirected> used ")


def test_the_redirect_quotes_the_datagram_and_names_the_next_hop():
    net, h1, r1, r2, h2 = two_routers_one_lan()
    seen = []

    def tap(segment, frame):
        if segment == "lan1" and frame[23] == 1 and frame[34] == REDIRECT:
            seen.append(frame)

    net.taps.append(tap)
    ping(net, h1, count=1)
    (frame,) = seen
    assert bytes(frame[26:30]) == R1.packed and bytes(frame[30:34]) == IPv4Address("10.0.1.10").packed
    assert frame[35] == REDIR_HOST
    assert bytes(frame[38:42]) == R2.packed  # the gateway field
    assert bytes(frame[58:62]) == H2.packed  # the quoted header's destination


def test_no_redirect_when_send_redirects_is_off():
    net, h1, r1, r2, h2 = two_routers_one_lan(r1_knobs={"net__ipv4__conf__all__send_redirects": 0})
    assert ping(net, h1, count=3)["received"] == 3
    assert r1.counters()["Icmp"]["OutRedirects"] == 0
    assert r1.counters()["Ip"]["ForwDatagrams"] == 3
    assert not any(row["redirected"] for row in h1.route_cache.show(net.now))


def test_a_host_with_accept_redirects_off_keeps_its_gateway():
    net, h1, r1, r2, h2 = two_routers_one_lan(h1_knobs={"net__ipv4__conf__all__accept_redirects": 0})
    assert ping(net, h1, count=3)["received"] == 3
    assert h1.counters()["Icmp"]["InRedirects"] >= 1
    assert r1.counters()["Ip"]["ForwDatagrams"] == 3
    (row,) = [row for row in h1.route_cache.show(net.now) if row["dst"] == "10.0.2.10"]
    assert (row["gateway"], row["redirected"]) == ("10.0.1.1", False)


def test_redirects_back_off_to_a_host_that_ignores_them_then_start_again_after_silence():
    """ip_rt_send_redirect: the n-th after redirect_load << n (20 ms << n), at most 9, then none
    until 20.48 s without a redirected datagram."""
    net, h1, r1, r2, h2 = two_routers_one_lan(h1_knobs={"net__ipv4__conf__all__accept_redirects": 0})
    sent = []
    net.taps.append(lambda segment, frame: sent.append(net.now)
                    if segment == "lan1" and frame[23] == 1 and frame[34] == REDIRECT else None)
    udp_stream(net, h1, 300, 0.05)  # 15 s
    assert len(sent) == 9
    gaps = [round(later - earlier, 2) for earlier, later in zip(sent, sent[1:])]
    assert all(gap > 0.02 * 2 ** n for n, gap in enumerate(gaps, start=1))
    udp_stream(net, h1, 100, 0.05)  # still ignored: each datagram restarts the silence
    assert len(sent) == 9
    net.run(21)
    udp_stream(net, h1, 1, 0.05)
    assert len(sent) == 10


def test_the_redirect_lasts_gc_timeout_then_the_route_s_gateway_returns():
    net, h1, r1, r2, h2 = two_routers_one_lan(h1_knobs={"net__ipv4__route__gc_timeout": 30})
    ping(net, h1, count=1)
    assert h1.route_cache.lookup(int(H2), net.now).next_hop == R2
    net.run(31)
    entry = h1.route_cache.lookup(int(H2), net.now)
    assert entry.next_hop == R1 and not entry.redirected


def test_a_redirect_survives_a_route_change_elsewhere_and_goes_with_a_cache_flush():
    net, h1, r1, r2, h2 = two_routers_one_lan()
    ping(net, h1, count=1)
    h1.add_route({"dst": "192.168.0.0/16", "gateway": "10.0.1.1"})  # the FIB generation changes
    assert h1.route_cache.lookup(int(H2), net.now).next_hop == R2
    h1.route_cache.flush()
    assert h1.route_cache.lookup(int(H2), net.now).next_hop == R1


def test_udp_sockets_never_see_a_redirect_as_an_error():
    net, h1, r1, r2, h2 = two_routers_one_lan()
    endpoint = h1.udp.bind(0, 0)
    errors = []
    endpoint.on_error = lambda message, quoted, datagram, now: errors.append(message.type)
    endpoint.sendto(b"x", int(H2), 9, net.now)
    net.run(1)
    assert h1.counters()["Icmp"]["InRedirects"] == 1
    assert REDIRECT not in errors


# ----------------------------------------------------- __ip_do_redirect's checks

def _host_cache():
    net, h1, r1, r2, h2 = two_routers_one_lan()
    return net, h1.route_cache


def _redirect(cache, net, old=R1, new=R2, *, shared_media=True, secure=True):
    return cache.ip_do_redirect(int(H2), int(old), int(new), "eth0", net.now, shared_media=shared_media,
                                secure=secure, expires=300.0)


def test_a_redirect_is_accepted_only_from_the_current_gateway():
    net, cache = _host_cache()
    assert _redirect(cache, net, old=IPv4Address("10.0.1.99")) is False
    assert _redirect(cache, net) is True
    assert _redirect(cache, net, old=R1, new=IPv4Address("10.0.1.3")) is False  # r1 is no longer it
    assert _redirect(cache, net, old=R2, new=IPv4Address("10.0.1.3")) is True


def test_a_redirect_toward_a_non_unicast_gateway_is_refused():
    net, cache = _host_cache()
    for gateway in ("10.0.1.255", "255.255.255.255", "224.0.0.1", "0.0.0.1", "10.0.1.10", "10.0.1.1"):
        assert _redirect(cache, net, new=IPv4Address(gateway)) is False, gateway


def test_a_redirect_about_a_directly_connected_destination_is_refused():
    net, cache = _host_cache()
    assert cache.ip_do_redirect(int(IPv4Address("10.0.1.50")), int(R1), int(R2), "eth0", net.now,
                                shared_media=True, secure=True, expires=300.0) is False


def test_without_shared_media_secure_redirects_allows_only_a_default_gateway():
    net, cache = _host_cache()
    assert _redirect(cache, net, shared_media=False, secure=True) is False  # r2 is no default gateway
    assert _redirect(cache, net, new=IPv4Address("10.9.0.1"), shared_media=False, secure=False) is False  # off-link
    assert _redirect(cache, net, shared_media=False, secure=False) is True


def test_enabling_forwarding_turns_accept_redirects_off_as_inet_forward_change_does():
    assert Sysctl()["net.ipv4.conf.all.accept_redirects"] == 1
    router = Sysctl({"net.ipv4.ip_forward": 1})
    assert router["net.ipv4.conf.all.accept_redirects"] == 0
    router.set("net.ipv4.ip_forward", 0)
    assert router["net.ipv4.conf.all.accept_redirects"] == 1
    explicit = Sysctl({"net.ipv4.conf.all.accept_redirects": 1, "net.ipv4.ip_forward": 1})
    assert explicit["net.ipv4.conf.all.accept_redirects"] == 1
