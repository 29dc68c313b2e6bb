"""UDP sockets of the INET socket layer over memnet (h1 -- r1 -- h2), errno for errno."""
import errno
import struct

import pytest

from nodes.memnet import host_router_host
from nodes.socket import (
    AF_INET,
    AF_UNSPEC,
    IP_MTU_DISCOVER,
    IP_PKTINFO,
    IP_PMTUDISC_DONT,
    IP_RECVERR,
    IP_RECVTOS,
    IP_RECVTTL,
    IP_TOS,
    IP_TTL,
    IPV6_V6ONLY,
    MSG_ERRQUEUE,
    MSG_PEEK,
    MSG_TRUNC,
    POLLERR,
    POLLIN,
    POLLOUT,
    SHUT_WR,
    SO_BROADCAST,
    SO_ERROR,
    SO_RCVBUF,
    SO_SNDBUF,
    SO_TIMESTAMP,
    SO_EE_ORIGIN_ICMP,
    SOCK_DGRAM,
    SOL_IP,
    SOL_IPV6,
    SOL_SOCKET,
    pack_sockaddr,
)
from nodes.wire.ipv4 import IPv4Header

H1, H2 = "10.0.1.10", "10.0.2.10"


def udp(stack):
    return stack.sockets.socket(AF_INET, SOCK_DGRAM, 0)


def errno_of(call, *args, **kwargs):
    with pytest.raises(OSError) as error:
        call(*args, **kwargs)
    return error.value.errno


def server(stack, port=5000):
    sock = udp(stack)
    sock.bind(("0.0.0.0", port))
    return sock


def test_a_datagram_arrives_with_its_true_source():
    net, h1, r1, h2 = host_router_host()
    srv, client = server(h2), udp(h1)
    client.sendto(b"hello", (H2, 5000), net.now)
    net.run(1)
    assert srv.recvfrom(100, net.now) == (b"hello", (H1, client.getsockname()[1]))


def test_indatagrams_counts_what_the_program_reads_not_what_is_queued():
    net, h1, r1, h2 = host_router_host()
    srv = server(h2)
    udp(h1).sendto(b"x", (H2, 5000), net.now)
    net.run(1)
    assert h2.counters()["Udp"]["InDatagrams"] == 0
    srv.recvfrom(100, net.now, MSG_PEEK)
    assert h2.counters()["Udp"]["InDatagrams"] == 0
    srv.recvfrom(100, net.now)
    assert h2.counters()["Udp"]["InDatagrams"] == 1
    assert h1.counters()["Udp"]["OutDatagrams"] == 1


def test_an_empty_queue_is_eagain():
    net, h1, r1, h2 = host_router_host()
    with pytest.raises(BlockingIOError):
        server(h2).recvfrom(100, net.now)


def test_peek_leaves_the_datagram_queued():
    net, h1, r1, h2 = host_router_host()
    srv = server(h2)
    udp(h1).sendto(b"twice", (H2, 5000), net.now)
    net.run(1)
    assert srv.recvfrom(100, net.now, MSG_PEEK)[0] == b"twice"
    assert srv.recvfrom(100, net.now)[0] == b"twice"
    assert not srv.recv_ready()


def test_a_short_buffer_truncates_and_msg_trunc_returns_the_real_length():
    net, h1, r1, h2 = host_router_host()
    srv = server(h2)
    udp(h1).sendto(b"0123456789", (H2, 5000), net.now)
    net.run(1)
    message = srv.recvmsg(4, net.now, MSG_TRUNC)
    assert (message.data, message.flags & MSG_TRUNC, message.length) == (b"0123", MSG_TRUNC, 10)


def test_send_without_a_destination_is_edestaddrreq():
    net, h1, r1, h2 = host_router_host()
    assert errno_of(udp(h1).sendmsg, b"x", None, net.now) == errno.EDESTADDRREQ


def test_sendto_port_zero_is_einval():
    net, h1, r1, h2 = host_router_host()
    assert errno_of(udp(h1).sendto, b"x", (H2, 0), net.now) == errno.EINVAL


def test_a_datagram_over_65507_bytes_is_emsgsize():
    net, h1, r1, h2 = host_router_host()
    assert errno_of(udp(h1).sendto, bytes(65508), (H2, 9), net.now) == errno.EMSGSIZE


def test_a_short_raw_sockaddr_is_einval_and_a_foreign_family_eafnosupport():
    net, h1, r1, h2 = host_router_host()
    raw = pack_sockaddr((H2, 5000), AF_INET)
    assert errno_of(udp(h1).sendto, b"x", raw[:8], net.now) == errno.EINVAL
    foreign = (1).to_bytes(2, "little") + raw[2:]
    assert errno_of(udp(h1).sendto, b"x", foreign, net.now) == errno.EAFNOSUPPORT


def test_no_route_is_enetunreach():
    net, h1, r1, h2 = host_router_host()
    h1.delete_route({"dst": "default"})
    assert errno_of(udp(h1).sendto, b"x", ("192.0.2.1", 9), net.now) == errno.ENETUNREACH


def test_broadcast_needs_so_broadcast():
    net, h1, r1, h2 = host_router_host()
    sock = udp(h1)
    assert errno_of(sock.sendto, b"x", ("10.0.1.255", 9), net.now) == errno.EACCES
    assert errno_of(sock.sendto, b"x", ("255.255.255.255", 9), net.now) == errno.EACCES
    sock.setsockopt(SOL_SOCKET, SO_BROADCAST, 1)
    assert sock.sendto(b"x", ("10.0.1.255", 9), net.now) == 1


def test_connect_sets_the_peer_and_the_source_address():
    net, h1, r1, h2 = host_router_host()
    sock = udp(h1)
    assert errno_of(sock.getpeername) == errno.ENOTCONN
    sock.connect((H2, 5000), net.now)
    assert sock.getpeername() == (H2, 5000)
    assert sock.getsockname()[0] == H1 and sock.getsockname()[1] != 0


def test_a_connected_socket_sends_without_an_address():
    net, h1, r1, h2 = host_router_host()
    srv, client = server(h2), udp(h1)
    client.connect((H2, 5000), net.now)
    client.sendmsg(b"default peer", None, net.now)
    net.run(1)
    assert srv.recvfrom(100, net.now)[0] == b"default peer"


def test_a_connected_socket_takes_only_its_peer():
    net, h1, r1, h2 = host_router_host()
    srv = server(h2)
    srv.connect((H1, 6000), net.now)
    stranger = udp(h1)
    stranger.bind(("0.0.0.0", 6001))
    stranger.sendto(b"not you", (H2, 5000), net.now)
    net.run(1)
    assert not srv.recv_ready()
    assert h2.counters()["Udp"]["NoPorts"] == 1


def test_connect_af_unspec_dissolves_and_gives_back_an_autobound_port():
    net, h1, r1, h2 = host_router_host()
    sock = udp(h1)
    sock.connect((H2, 5000), net.now)
    port = sock.getsockname()[1]
    sock.connect(AF_UNSPEC.to_bytes(2, "little") + bytes(14), net.now)
    assert errno_of(sock.getpeername) == errno.ENOTCONN
    assert sock.getsockname() == ("0.0.0.0", 0)
    assert port not in h1.udp.hash


def test_connect_af_unspec_keeps_an_explicitly_bound_port():
    net, h1, r1, h2 = host_router_host()
    sock = udp(h1)
    sock.bind(("0.0.0.0", 6000))
    sock.connect((H2, 5000), net.now)
    sock.connect(AF_UNSPEC.to_bytes(2, "little") + bytes(14), net.now)
    assert sock.getsockname() == ("0.0.0.0", 6000)


def test_port_unreachable_is_econnrefused_on_a_connected_socket_once():
    net, h1, r1, h2 = host_router_host()
    sock = udp(h1)
    sock.connect((H2, 9), net.now)
    sock.sendmsg(b"anyone?", None, net.now)
    net.run(1)
    assert sock.poll() & POLLERR
    assert errno_of(sock.recvfrom, 100, net.now) == errno.ECONNREFUSED
    with pytest.raises(BlockingIOError):
        sock.recvfrom(100, net.now)
    assert h2.counters()["Udp"]["NoPorts"] == 1


def test_with_ip_recverr_a_pending_error_fails_the_next_send_once():
    net, h1, r1, h2 = host_router_host()
    sock = udp(h1)
    sock.setsockopt(SOL_IP, IP_RECVERR, 1)
    sock.sendto(b"a", (H2, 9), net.now)
    net.run(1)
    assert errno_of(sock.sendto, b"b", (H2, 9), net.now) == errno.ECONNREFUSED  # sock_alloc_send_pskb
    assert len(sock.error_queue) == 1


def test_a_pending_error_is_reported_by_the_next_send():
    net, h1, r1, h2 = host_router_host()
    sock = udp(h1)
    sock.connect((H2, 9), net.now)
    sock.sendmsg(b"a", None, net.now)
    net.run(1)
    assert errno_of(sock.sendmsg, b"b", None, net.now) == errno.ECONNREFUSED
    assert sock.sendmsg(b"c", None, net.now) == 1


def test_port_unreachable_is_not_reported_to_an_unconnected_socket():
    net, h1, r1, h2 = host_router_host()
    sock = udp(h1)
    sock.sendto(b"x", (H2, 9), net.now)
    net.run(1)
    assert sock.getsockopt(SOL_SOCKET, SO_ERROR) == 0
    assert h1.counters()["Icmp"]["InDestUnreachs"] == 1


def test_time_exceeded_is_a_soft_error_not_reported_without_ip_recverr():
    net, h1, r1, h2 = host_router_host()
    sock = udp(h1)
    sock.setsockopt(SOL_IP, IP_TTL, 1)
    sock.connect((H2, 9), net.now)
    sock.sendmsg(b"x", None, net.now)
    net.run(1)
    assert h1.counters()["Icmp"]["InTimeExcds"] == 1
    assert sock.getsockopt(SOL_SOCKET, SO_ERROR) == 0


def test_ip_recverr_queues_the_icmp_error_with_its_extended_fields():
    net, h1, r1, h2 = host_router_host()
    sock = udp(h1)
    sock.setsockopt(SOL_IP, IP_RECVERR, 1)
    sock.setsockopt(SOL_IP, IP_TTL, 1)
    sock.sendto(b"probe", (H2, 33434), net.now)  # traceroute's first probe, unconnected
    net.run(1)
    assert sock.poll() & POLLERR
    message = sock.recvmsg(100, net.now, MSG_ERRQUEUE)
    assert message.data == b"probe"
    assert message.address == (H2, 33434)
    assert message.flags & MSG_ERRQUEUE
    ((level, kind, data),) = message.ancillary
    assert (level, kind) == (SOL_IP, IP_RECVERR)
    ee_errno, origin, ee_type, code, _, info, _ = struct.unpack_from("=IBBBBII", data)
    assert (ee_errno, origin, ee_type, code, info) == (errno.EHOSTUNREACH, SO_EE_ORIGIN_ICMP, 11, 0, 0)
    assert data[16:] == pack_sockaddr(("10.0.1.1", 0), AF_INET)  # SO_EE_OFFENDER: the router
    assert sock.getsockopt(SOL_SOCKET, SO_ERROR) == 0  # dequeuing the last error cleared sk_err


def test_ip_recverr_sets_sk_err_to_the_next_queued_error():
    net, h1, r1, h2 = host_router_host()
    sock = udp(h1)
    sock.setsockopt(SOL_IP, IP_RECVERR, 1)
    sock.setsockopt(SOL_IP, IP_TTL, 1)
    sock.sendto(b"1", (H2, 33434), net.now)
    sock.setsockopt(SOL_IP, IP_TTL, 64)
    sock.sendto(b"2", (H2, 33435), net.now)
    net.run(1)
    assert len(sock.error_queue) == 2
    sock.recvmsg(100, net.now, MSG_ERRQUEUE)
    assert sock.sk_err == errno.ECONNREFUSED
    assert sock.recvmsg(100, net.now, MSG_ERRQUEUE).address == (H2, 33435)
    assert sock.sk_err == 0
    with pytest.raises(BlockingIOError):
        sock.recvmsg(100, net.now, MSG_ERRQUEUE)


def test_ip_ttl_and_ip_recvttl_and_recvtos_as_ancillary_data():
    net, h1, r1, h2 = host_router_host()
    srv, client = server(h2), udp(h1)
    srv.setsockopt(SOL_IP, IP_RECVTTL, 1)
    srv.setsockopt(SOL_IP, IP_RECVTOS, 1)
    client.setsockopt(SOL_IP, IP_TTL, 10)
    client.setsockopt(SOL_IP, IP_TOS, 0x10)
    client.sendto(b"x", (H2, 5000), net.now)
    net.run(1)
    message = srv.recvmsg(100, net.now)
    assert message.ancillary == [(SOL_IP, IP_TTL, struct.pack("=i", 9)), (SOL_IP, IP_TOS, b"\x10")]


def test_getsockopt_ip_ttl_reports_the_default_until_set():
    net, h1, r1, h2 = host_router_host()
    sock = udp(h1)
    assert sock.getsockopt(SOL_IP, IP_TTL) == 64
    assert errno_of(sock.setsockopt, SOL_IP, IP_TTL, 256) == errno.EINVAL
    sock.setsockopt(SOL_IP, IP_TTL, 5)
    assert sock.getsockopt(SOL_IP, IP_TTL) == 5


def test_a_per_datagram_ip_ttl_control_message_wins():
    net, h1, r1, h2 = host_router_host()
    srv, client = server(h2), udp(h1)
    srv.setsockopt(SOL_IP, IP_RECVTTL, 1)
    client.sendmsg(b"x", (H2, 5000), net.now, 0, [(SOL_IP, IP_TTL, struct.pack("=i", 3))])
    net.run(1)
    assert srv.recvmsg(100, net.now).ancillary == [(SOL_IP, IP_TTL, struct.pack("=i", 2))]


def test_so_timestamp_gives_the_arrival_time_as_a_timeval():
    net, h1, r1, h2 = host_router_host()
    srv = server(h2)
    srv.setsockopt(SOL_SOCKET, SO_TIMESTAMP, 1)
    udp(h1).sendto(b"x", (H2, 5000), net.now)
    net.run(1)
    ((level, kind, data),) = srv.recvmsg(100, net.now).ancillary
    seconds, micros = struct.unpack("=qq", data)
    assert (level, kind) == (SOL_SOCKET, SO_TIMESTAMP)
    assert 1000.0 < seconds + micros / 1e6 < 1000.1


def test_so_timestamp_is_wall_clock_time_given_the_layers_offset():
    """The stack's time is monotonic; SO_TIMESTAMP is CLOCK_REALTIME (ping compares it with gettimeofday)."""
    net, h1, r1, h2 = host_router_host()
    h2.sockets.wall_offset = 1_700_000_000.0
    srv = server(h2)
    srv.setsockopt(SOL_SOCKET, SO_TIMESTAMP, 1)
    udp(h1).sendto(b"x", (H2, 5000), net.now)
    net.run(1)
    ((_, _, data),) = srv.recvmsg(100, net.now).ancillary
    seconds, micros = struct.unpack("=qq", data)
    assert 1_700_001_000.0 < seconds + micros / 1e6 < 1_700_001_000.1


def test_ip_recvopts_and_ip_retopts_are_flags_as_linux_keeps_them():
    """iputils ping sets IP_RETOPTS (7); Linux stores it (ip_sockglue), ENOPROTOOPT would be a warning."""
    sock = udp(host_router_host()[1])
    for option in (6, 7):
        assert sock.getsockopt(SOL_IP, option) == 0
        sock.setsockopt(SOL_IP, option, 1)
        assert sock.getsockopt(SOL_IP, option) == 1


def test_so_rcvbuf_is_doubled_capped_and_floored_as_linux():
    net, h1, r1, h2 = host_router_host()
    sock = udp(h1)
    assert sock.getsockopt(SOL_SOCKET, SO_RCVBUF) == 212992
    sock.setsockopt(SOL_SOCKET, SO_RCVBUF, 4096)
    assert sock.getsockopt(SOL_SOCKET, SO_RCVBUF) == 8192
    sock.setsockopt(SOL_SOCKET, SO_RCVBUF, 1)
    assert sock.getsockopt(SOL_SOCKET, SO_RCVBUF) == 2304
    sock.setsockopt(SOL_SOCKET, SO_RCVBUF, 10**9)
    assert sock.getsockopt(SOL_SOCKET, SO_RCVBUF) == 2 * 212992
    sock.setsockopt(SOL_SOCKET, SO_SNDBUF, 1)
    assert sock.getsockopt(SOL_SOCKET, SO_SNDBUF) == 4608


def test_a_full_receive_buffer_drops_and_counts_rcvbuferrors():
    net, h1, r1, h2 = host_router_host()
    srv, client = server(h2), udp(h1)
    srv.setsockopt(SOL_SOCKET, SO_RCVBUF, 1)  # 2304 bytes: four 100-byte datagrams (676 each) fit
    client.sendto(b"arp", (H2, 5000), net.now)
    net.run(1)
    for _ in range(9):
        client.sendto(bytes(100), (H2, 5000), net.now)
    net.run(1)
    received = 0
    while srv.recv_ready():
        srv.recvfrom(200, net.now)
        received += 1
    udp_counters = h2.counters()["Udp"]
    assert received == 4
    assert udp_counters["RcvbufErrors"] == 6 and udp_counters["InErrors"] == 6
    assert udp_counters["InDatagrams"] == 4


def test_unknown_options_are_enoprotoopt():
    net, h1, r1, h2 = host_router_host()
    sock = udp(h1)
    assert errno_of(sock.setsockopt, SOL_SOCKET, 9999, 1) == errno.ENOPROTOOPT
    assert errno_of(sock.getsockopt, SOL_IP, 9999) == errno.ENOPROTOOPT
    assert errno_of(sock.setsockopt, SOL_IPV6, IPV6_V6ONLY, 1) == errno.ENOPROTOOPT  # not on AF_INET
    assert errno_of(sock.setsockopt, SOL_SOCKET, SO_ERROR, 1) == errno.ENOPROTOOPT  # read-only


def test_poll_and_on_ready_report_arrivals():
    net, h1, r1, h2 = host_router_host()
    srv = server(h2)
    woken = []
    srv.on_ready = woken.append
    assert srv.poll() & (POLLIN | POLLOUT) == POLLOUT
    udp(h1).sendto(b"x", (H2, 5000), net.now)
    net.run(1)
    assert woken == [srv]
    assert srv.poll() & POLLIN


def test_shutdown_of_an_unconnected_socket_is_enotconn():
    net, h1, r1, h2 = host_router_host()
    assert errno_of(udp(h1).shutdown, SHUT_WR, net.now) == errno.ENOTCONN


def test_send_after_shut_wr_is_epipe():
    net, h1, r1, h2 = host_router_host()
    sock = udp(h1)
    sock.connect((H2, 5000), net.now)
    sock.shutdown(SHUT_WR, net.now)
    assert errno_of(sock.sendmsg, b"x", None, net.now) == errno.EPIPE


def test_datagrams_carry_df_by_default_and_not_with_pmtudisc_dont():
    net, h1, r1, h2 = host_router_host()
    frames = []
    net.taps.append(lambda segment, frame: segment == "lan1" and frame[12:14] == b"\x08\x00" and frame[23] == 17
                    and frames.append(IPv4Header.parse(frame[14:])))
    sock = udp(h1)
    sock.sendto(b"x", (H2, 5000), net.now)
    net.run(1)
    sock.setsockopt(SOL_IP, IP_MTU_DISCOVER, IP_PMTUDISC_DONT)
    sock.sendto(b"y", (H2, 5000), net.now)
    net.run(1)
    assert [header.dont_fragment for header in frames] == [True, False]


def test_ip_pktinfo_names_the_interface_and_the_destination():
    net, h1, r1, h2 = host_router_host()
    srv = server(h2)
    srv.setsockopt(SOL_IP, IP_PKTINFO, 1)
    udp(h1).sendto(b"x", (H2, 5000), net.now)
    net.run(1)
    ((level, kind, data),) = srv.recvmsg(100, net.now).ancillary
    ifindex, spec_dst, addr = struct.unpack("=i4s4s", data)
    assert (level, kind) == (SOL_IP, IP_PKTINFO)
    assert ifindex == h2.devices["eth0"].ifindex and spec_dst == addr == bytes((10, 0, 2, 10))


def test_an_ip_pktinfo_control_message_picks_the_source_address():
    net, h1, r1, h2 = host_router_host()
    h1.add_address("eth0", "10.0.1.11", 24)
    srv = server(h2)
    client = udp(h1)
    pktinfo = struct.pack("=i4s4s", 0, bytes((10, 0, 1, 11)), bytes(4))
    client.sendmsg(b"x", (H2, 5000), net.now, 0, [(SOL_IP, IP_PKTINFO, pktinfo)])
    net.run(1)
    assert srv.recvfrom(100, net.now)[1][0] == "10.0.1.11"
    not_ours = struct.pack("=i4s4s", 0, bytes((10, 0, 1, 99)), bytes(4))
    assert errno_of(client.sendmsg, b"x", (H2, 5000), net.now, 0, [(SOL_IP, IP_PKTINFO, not_ours)]) == errno.EINVAL


def test_the_error_queue_carries_timestamp_and_ttl_of_the_icmp_error_as_traceroute_reads_them():
    net, h1, r1, h2 = host_router_host()
    sock = udp(h1)
    for level, option in ((SOL_IP, IP_RECVERR), (SOL_IP, IP_RECVTTL), (SOL_SOCKET, SO_TIMESTAMP)):
        sock.setsockopt(level, option, 1)
    sock.setsockopt(SOL_IP, IP_TTL, 1)
    sock.connect((H2, 33434), net.now)  # Debian traceroute: one connected socket per probe
    sock.sendmsg(b"probe", None, net.now)
    net.run(1)
    message = sock.recvmsg(100, net.now, MSG_ERRQUEUE)
    assert [(level, kind) for level, kind, _ in message.ancillary] == [
        (SOL_SOCKET, SO_TIMESTAMP), (SOL_IP, IP_TTL), (SOL_IP, IP_RECVERR)]
    assert message.ancillary[1][2] == struct.pack("=i", 64)  # the router's error arrived with its TTL


def test_a_connected_socket_with_ip_recverr_queues_port_unreachable():
    net, h1, r1, h2 = host_router_host()
    sock = udp(h1)
    sock.setsockopt(SOL_IP, IP_RECVERR, 1)
    sock.connect((H2, 33434), net.now)
    sock.sendmsg(b"probe", None, net.now)
    net.run(1)
    message = sock.recvmsg(100, net.now, MSG_ERRQUEUE)
    assert struct.unpack_from("=IBBB", message.ancillary[0][2]) == (errno.ECONNREFUSED, SO_EE_ORIGIN_ICMP, 3, 3)
    assert message.ancillary[0][2][16:] == pack_sockaddr((H2, 0), AF_INET)


def test_pmtudisc_do_refuses_a_datagram_over_the_path_mtu_and_queues_a_local_error():
    net, h1, r1, h2 = host_router_host()
    sock = udp(h1)
    sock.setsockopt(SOL_IP, IP_RECVERR, 1)
    sock.setsockopt(SOL_IP, IP_MTU_DISCOVER, 2)  # IP_PMTUDISC_DO
    assert errno_of(sock.sendto, bytes(1473), (H2, 5000), net.now) == errno.EMSGSIZE
    message = sock.recvmsg(100, net.now, MSG_ERRQUEUE)
    ee_errno, origin, _, _, _, info, _ = struct.unpack_from("=IBBBBII", message.ancillary[0][2])
    assert (ee_errno, origin, info) == (errno.EMSGSIZE, 1, 1500)  # SO_EE_ORIGIN_LOCAL, ee_info = MTU
    assert message.address == (H2, 5000) and message.data == b""
    assert sock.sendto(bytes(1472), (H2, 5000), net.now) == 1472


def test_frag_needed_is_a_hard_emsgsize_then_the_datagram_fragments_locally():
    net, h1, r1, h2 = host_router_host(mtu_right=576)
    srv, client = server(h2), udp(h1)
    client.connect((H2, 5000), net.now)
    client.sendmsg(b"arp", None, net.now)
    net.run(1)
    srv.recvfrom(100, net.now)
    client.sendmsg(bytes(1000), None, net.now)  # DF (IP_PMTUDISC_WANT): r1 answers frag-needed
    net.run(1)
    assert r1.counters()["Ip"]["FragFails"] == 1
    assert errno_of(client.sendmsg, bytes(1000), None, net.now) == errno.EMSGSIZE
    client.sendmsg(bytes(1000), None, net.now)  # over the learned 576: no DF, fragmented by h1
    net.run(1)
    assert srv.recvfrom(2000, net.now)[0] == bytes(1000)
    assert h1.counters()["Ip"]["FragOKs"] == 1


def test_loopback_datagrams_reach_a_socket_bound_to_127_0_0_1_only_by_that_address():
    net, h1, r1, h2 = host_router_host()
    local = udp(h1)
    local.bind(("127.0.0.1", 9000))
    sender = udp(h1)
    sender.sendto(b"lo", ("127.0.0.1", 9000), net.now)
    sender.sendto(b"eth0", (H1, 9000), net.now)  # another local address: not this socket's
    net.run(0.1)
    assert local.recvfrom(100, net.now) == (b"lo", ("127.0.0.1", sender.getsockname()[1]))
    assert not local.recv_ready()
    assert h1.counters()["Udp"]["NoPorts"] == 1


def test_ip_mtu_is_enotconn_unconnected_and_the_path_mtu_once_connected():
    from nodes.socket import IP_MTU

    net, h1, r1, h2 = host_router_host(mtu_right=576)
    sock = udp(h1)
    assert errno_of(sock.getsockopt, SOL_IP, IP_MTU) == errno.ENOTCONN
    sock.connect((H2, 5000), net.now)
    assert sock.getsockopt(SOL_IP, IP_MTU) == 1500
    sock.sendmsg(bytes(1000), None, net.now)
    net.run(1)
    assert sock.getsockopt(SOL_IP, IP_MTU) == 576
