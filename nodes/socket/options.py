"""Socket options common to every INET socket: `SocketOptions`, the setsockopt/getsockopt half
of `InetSocket` (sk_setsockopt, ip_setsockopt, ipv6_setsockopt; the protocol classes override
the raw and IP_HDRINCL hooks).

A mixin: it holds no state of its own and reads and writes the attributes `InetSocket.__init__`
sets (and `self.layer`'s sysctl, ipv4 and now). Imports constants only."""
from __future__ import annotations

import errno

from .constants import (
    _INT, _IPV6_DEFAULTS, _IPV6_HELD, _TIMEVAL, AF_INET6, IP_HDRINCL, IP_MTU, IP_MTU_DISCOVER, IP_MULTICAST_LOOP,
    IP_MULTICAST_TTL, IP_OPTIONS, IP_PKTINFO, IP_PMTUDISC_DONT, IP_PMTUDISC_OMIT, IP_RECVERR, IP_RECVOPTS, IP_RECVTOS, IP_RETOPTS,
    IP_RECVTTL, IP_TOS, IP_TTL, IPV6_RECVERR, IPV6_RECVPKTINFO, IPV6_UNICAST_HOPS, IPV6_V6ONLY, SO_ACCEPTCONN,
    SO_BROADCAST, SO_DEBUG, SO_DOMAIN, SO_DONTROUTE, SO_ERROR, SO_KEEPALIVE, SO_LINGER, SO_NO_CHECK, SO_OOBINLINE,
    SO_PRIORITY, SO_PROTOCOL, SO_RCVBUF, SO_RCVBUFFORCE, SO_RCVLOWAT, SO_RCVTIMEO, SO_REUSEADDR, SO_REUSEPORT,
    SO_SNDBUF, SO_SNDBUFFORCE, SO_SNDLOWAT, SO_SNDTIMEO, SO_TIMESTAMP, SO_TIMESTAMPNS, SO_TYPE, SOCK_MIN_RCVBUF,
    SOCK_MIN_SNDBUF, SOCK_RAW, SOL_IP, SOL_IPV6, SOL_RAW, SOL_SOCKET, TCP_ESTABLISHED, TCP_LISTEN, _error,
)


class SocketOptions:
    """sock_setsockopt / ip_setsockopt / ipv6_setsockopt / raw_setsockopt and their getsockopt sides,
    for `InetSocket` (which inherits them)."""

    # ------------------------------------------------------------ options

    def setsockopt(self, level: int, option: int, value: "int | bytes") -> None:
        """sock_setsockopt / ip_setsockopt / ipv6_setsockopt / raw_setsockopt; ENOPROTOOPT for the unknown."""
        self._check_open()
        if level == SOL_SOCKET:
            self._set_socket_option(option, value)
        elif level == SOL_IP:
            if self.family == AF_INET6 and self.type == SOCK_RAW:
                raise _error(errno.ENOPROTOOPT)
            self._set_ip_option(option, value)
        elif level == SOL_IPV6 and self.family == AF_INET6:
            self._set_ipv6_option(option, value)
        elif level == SOL_RAW and self.type == SOCK_RAW:
            self._set_raw_option(option, value)
        else:
            raise _error(errno.ENOPROTOOPT)

    def getsockopt(self, level: int, option: int) -> "int | bytes":
        self._check_open()
        if level == SOL_SOCKET:
            return self._get_socket_option(option)
        if level == SOL_IP:
            return self._get_ip_option(option)
        if level == SOL_IPV6 and self.family == AF_INET6:
            return self._get_ipv6_option(option)
        if level == SOL_RAW and self.type == SOCK_RAW:
            return self._get_raw_option(option)
        raise _error(errno.ENOPROTOOPT)

    @staticmethod
    def _int(value: "int | bytes", *, socket_level: bool = True) -> int:
        """An int option's value: sk_setsockopt needs sizeof(int) bytes (EINVAL); ip_setsockopt also takes one byte."""
        if isinstance(value, int):
            return value
        value = bytes(value)
        if len(value) >= 4:
            return _INT.unpack_from(value)[0]
        if not socket_level and len(value) >= 1:
            return value[0]
        raise _error(errno.EINVAL)

    def _set_socket_option(self, option: int, value: "int | bytes") -> None:
        if option in (SO_RCVTIMEO, SO_SNDTIMEO):
            raw = bytes(value) if not isinstance(value, int) else _TIMEVAL.pack(value, 0)
            if len(raw) < _TIMEVAL.size:
                raise _error(errno.EINVAL)
            seconds, micros = _TIMEVAL.unpack_from(raw)
            if not 0 <= micros < 1_000_000:
                raise _error(errno.EDOM)  # sock_set_timeout
            timeout = 0.0 if seconds < 0 else seconds + micros / 1e6
            if option == SO_RCVTIMEO:
                self.rcvtimeo = timeout
            else:
                self.sndtimeo = timeout
            return
        if option == SO_LINGER:
            raw = bytes(value) if not isinstance(value, int) else bytes(8)
            if len(raw) < 8:
                raise _error(errno.EINVAL)
            self.linger = raw[:8]
            return
        number = self._int(value)
        sysctl = self.layer.sysctl
        if option == SO_REUSEADDR:
            self.reuseaddr = bool(number)
        elif option == SO_REUSEPORT:
            self.reuseport = bool(number)
        elif option == SO_BROADCAST:
            self.broadcast = bool(number)
        elif option == SO_KEEPALIVE:
            self.keepalive = bool(number)
        elif option == SO_DONTROUTE:
            self.dontroute = bool(number)
        elif option in (SO_DEBUG, SO_OOBINLINE, SO_NO_CHECK):
            pass  # accepted, as Linux, and without effect here
        elif option == SO_PRIORITY:
            if not 0 <= number <= 6 and not self.privileged:
                raise _error(errno.EPERM)
            self.priority = number
        elif option == SO_RCVLOWAT:
            self.rcvlowat = max(number, 1) if number >= 0 else 0x7FFFFFFF
        elif option == SO_SNDBUF or (option == SO_SNDBUFFORCE and self.privileged):
            # sk_setsockopt: min(val, wmem_max) unless forced, doubled for the kernel's overhead
            requested = number & 0xFFFFFFFF if option == SO_SNDBUF else max(number, 0)
            if option == SO_SNDBUF:
                requested = min(requested, sysctl["net.core.wmem_max"])
            self.sndbuf = max(min(requested, 0x7FFFFFFF // 2) * 2, SOCK_MIN_SNDBUF)
            self._wake()
        elif option == SO_RCVBUF or (option == SO_RCVBUFFORCE and self.privileged):
            requested = number & 0xFFFFFFFF if option == SO_RCVBUF else max(number, 0)
            if option == SO_RCVBUF:
                requested = min(requested, sysctl["net.core.rmem_max"])
            self.rcvbuf = max(min(requested, 0x7FFFFFFF // 2) * 2, SOCK_MIN_RCVBUF)
        elif option in (SO_SNDBUFFORCE, SO_RCVBUFFORCE):
            raise _error(errno.EPERM)  # CAP_NET_ADMIN
        elif option in (SO_TIMESTAMP, SO_TIMESTAMPNS):
            if number:
                self.timestamp = option
            elif self.timestamp == option:
                self.timestamp = 0
        else:
            raise _error(errno.ENOPROTOOPT)  # also SO_ERROR, SO_TYPE...: read-only

    privileged = True  # the caller's CAP_NET_BIND_SERVICE / CAP_NET_RAW / CAP_NET_ADMIN (root: all)
    uid = 0

    def _get_socket_option(self, option: int) -> "int | bytes":
        if option == SO_ERROR:
            return self._take_error()  # sock_error: reading clears it
        if option == SO_TYPE:
            return self.type
        if option == SO_PROTOCOL:
            return self.protocol
        if option == SO_DOMAIN:
            return self.family
        if option == SO_ACCEPTCONN:
            return int(self.state == TCP_LISTEN)
        if option == SO_RCVTIMEO or option == SO_SNDTIMEO:
            timeout = self.rcvtimeo if option == SO_RCVTIMEO else self.sndtimeo
            return _TIMEVAL.pack(int(timeout), int(round((timeout - int(timeout)) * 1e6)))
        if option == SO_LINGER:
            return self.linger
        values = {
            SO_REUSEADDR: int(self.reuseaddr), SO_REUSEPORT: int(self.reuseport), SO_BROADCAST: int(self.broadcast),
            SO_KEEPALIVE: int(self.keepalive), SO_DONTROUTE: int(self.dontroute), SO_PRIORITY: self.priority,
            SO_RCVLOWAT: self.rcvlowat, SO_SNDLOWAT: 1, SO_SNDBUF: self.sndbuf, SO_RCVBUF: self.rcvbuf,
            SO_TIMESTAMP: int(self.timestamp == SO_TIMESTAMP), SO_TIMESTAMPNS: int(self.timestamp == SO_TIMESTAMPNS),
            SO_DEBUG: 0, SO_OOBINLINE: 0, SO_NO_CHECK: 0,
        }
        if option not in values:
            raise _error(errno.ENOPROTOOPT)
        return values[option]

    def _set_ip_option(self, option: int, value: "int | bytes") -> None:
        if option == IP_OPTIONS:
            if bytes(value if not isinstance(value, int) else b""):
                raise _error(errno.EINVAL)  # IP options on output: not modelled, refused rather than ignored
            return
        number = self._int(value, socket_level=False)
        if option == IP_TTL:
            if number != -1 and not 1 <= number <= 255:
                raise _error(errno.EINVAL)
            self.uc_ttl = number
        elif option == IP_TOS:
            self.tos = number & 0xFF
        elif option == IP_RECVTTL:
            self.recvttl = bool(number)
        elif option == IP_RECVTOS:
            self.recvtos = bool(number)
        elif option in (IP_RECVOPTS, IP_RETOPTS):
            # flags only (ip_sockglue): our datagrams carry no IP options, so no cmsg ever follows
            self.ip_flags[option] = bool(number)
        elif option == IP_PKTINFO:
            self.pktinfo = bool(number)
        elif option == IP_RECVERR:
            self.recverr = bool(number)
            if not number:  # ip_setsockopt: turning it off purges the queue
                for entry in self.error_queue:
                    self.rmem -= entry.truesize
                self.error_queue.clear()
        elif option == IP_MTU_DISCOVER:
            if not IP_PMTUDISC_DONT <= number <= IP_PMTUDISC_OMIT:
                raise _error(errno.EINVAL)
            self.pmtudisc = number
        elif option == IP_MULTICAST_TTL:
            if number == -1:
                number = 1
            if not 0 <= number <= 255:
                raise _error(errno.EINVAL)
            self.mc_ttl = number
        elif option == IP_MULTICAST_LOOP:
            self.mc_loop = bool(number)
        elif option == IP_HDRINCL:
            if self.type != SOCK_RAW:
                raise _error(errno.ENOPROTOOPT)
            self._set_hdrincl(bool(number))
        else:
            raise _error(errno.ENOPROTOOPT)

    def _set_hdrincl(self, on: bool) -> None:
        raise _error(errno.ENOPROTOOPT)

    def _get_ip_option(self, option: int) -> "int | bytes":
        if option == IP_TTL:
            return self.uc_ttl if self.uc_ttl != -1 else self.layer.sysctl["net.ipv4.ip_default_ttl"]
        if option == IP_MTU:
            # ip_sockglue: dst_mtu(sk_dst_get(sk)); the route cache lowers a cached entry's pmtu in place.
            if self.state != TCP_ESTABLISHED or self.dst is None:
                raise _error(errno.ENOTCONN)
            return self.dst.pmtu
        if option == IP_OPTIONS:
            return b""
        if option == IP_HDRINCL and self.type == SOCK_RAW:
            return int(getattr(self, "hdrincl", False))
        values = {IP_TOS: self.tos, IP_RECVTTL: int(self.recvttl), IP_RECVTOS: int(self.recvtos),
                  IP_RECVOPTS: int(self.ip_flags.get(IP_RECVOPTS, False)),
                  IP_RETOPTS: int(self.ip_flags.get(IP_RETOPTS, False)),
                  IP_PKTINFO: int(self.pktinfo), IP_RECVERR: int(self.recverr), IP_MTU_DISCOVER: self.pmtudisc,
                  IP_MULTICAST_TTL: self.mc_ttl, IP_MULTICAST_LOOP: int(self.mc_loop)}
        if option not in values:
            raise _error(errno.ENOPROTOOPT)
        return values[option]

    def _set_ipv6_option(self, option: int, value: "int | bytes") -> None:
        number = self._int(value)
        if option == IPV6_V6ONLY:
            if self._bound_port():
                raise _error(errno.EINVAL)  # do_ipv6_setsockopt: not once bound
            self.v6only = bool(number)
        elif option == IPV6_RECVERR:
            self.recverr6 = bool(number)
        elif option == IPV6_UNICAST_HOPS:
            if number != -1 and not 0 <= number <= 255:
                raise _error(errno.EINVAL)
            self.hop_limit = number
        elif option == IPV6_RECVPKTINFO:
            self.pktinfo6 = bool(number)
        elif option in _IPV6_HELD:
            low, high = _IPV6_HELD[option]
            if not low <= number <= high:
                raise _error(errno.EINVAL)
            self.ipv6_held[option] = number if number != -1 else _IPV6_DEFAULTS.get(option, 0)
        else:
            raise _error(errno.ENOPROTOOPT)

    def _get_ipv6_option(self, option: int) -> int:
        if option == IPV6_V6ONLY:
            return int(self.v6only)
        if option == IPV6_RECVERR:
            return int(self.recverr6)
        if option == IPV6_UNICAST_HOPS:
            return self.hop_limit if self.hop_limit != -1 else 64
        if option == IPV6_RECVPKTINFO:
            return int(self.pktinfo6)
        if option in _IPV6_HELD:
            return self.ipv6_held.get(option, _IPV6_DEFAULTS.get(option, 0))
        raise _error(errno.ENOPROTOOPT)

    def _set_raw_option(self, option: int, value: "int | bytes") -> None:
        raise _error(errno.ENOPROTOOPT)

    def _get_raw_option(self, option: int) -> "int | bytes":
        raise _error(errno.ENOPROTOOPT)

    def _bound_port(self) -> int:
        return 0
