"""The local ports of TCP (inet_bind_bucket, inet_csk_get_port, inet_csk_bind_conflict,
__inet_hash_connect): `TcpPorts`, `TcpLayer`'s mixin, and `_Bind`, one holder of a port.

Part of nodes/tcp/layer.py (read its docstring first)."""
from __future__ import annotations

import errno
import os
from random import Random
from typing import Any

from .states import TCP_LISTEN, TCP_TIME_WAIT


def _error(code: int) -> OSError:
    return OSError(code, os.strerror(code))


class _Bind:
    """One holder of a local port (inet_bind_bucket's owners): a socket, or the orphaned
    connection that outlived it (FIN-WAIT, TIME-WAIT) and keeps the port until it is CLOSED."""

    __slots__ = ("port", "address", "reuseaddr", "reuseport", "uid", "sock", "conn", "v6only")

    def __init__(self, port: int, address: int, sock: Any) -> None:
        self.port = port
        self.address = address
        self.sock = sock
        self.conn: Any = None
        self.reuseaddr = bool(getattr(sock, "reuseaddr", False))
        self.reuseport = bool(getattr(sock, "reuseport", False))
        self.uid = getattr(sock, "uid", 0)
        self.v6only = bool(getattr(sock, "v6only", False))

    @property
    def listening(self) -> bool:
        return self.sock is not None and self.sock.state == TCP_LISTEN

    @property
    def time_wait(self) -> bool:
        return self.sock is None and self.conn is not None and self.conn.state == TCP_TIME_WAIT



class TcpPorts:
    """The port table of `TcpLayer`: `bhash` (port -> holders), binding, autobinding, giving back."""

    bhash: dict[int, list[_Bind]]
    ehash: dict
    sysctl: Any
    rng: Random

    def port_range(self) -> tuple[int, int]:
        low, high = self.sysctl["net.ipv4.ip_local_port_range"]
        return low, high

    def _conflict(self, holder: _Bind, address: int, sock: Any, *, listen: bool = False) -> bool:
        """inet_csk_bind_conflict (+ inet_rcv_saddr_equal): do `holder` and a new binding overlap?"""
        if holder.sock is sock:
            return False
        if holder.address and address and holder.address != address:
            return False
        reuseaddr = bool(getattr(sock, "reuseaddr", False))
        if holder.time_wait:
            return not reuseaddr  # SO_REUSEADDR rebinds a port held only by TIME-WAIT
        if reuseaddr and holder.reuseaddr and not holder.listening and not listen:
            return False
        if getattr(sock, "reuseport", False) and holder.reuseport and holder.uid == getattr(sock, "uid", 0):
            return False
        return True

    def get_port(self, sock: Any, address: int, port: int) -> int:
        """inet_csk_get_port: `port`, or a free ephemeral one when 0; EADDRINUSE when taken."""
        if port == 0:
            low, high = self.port_range()
            span = high - low + 1
            first = self.rng.randrange(span)
            for step in range(span):
                candidate = low + (first + step) % span
                if not any(self._conflict(h, address, sock) for h in self.bhash.get(candidate, ())):
                    port = candidate
                    break
            else:
                raise _error(errno.EADDRINUSE)
        elif any(self._conflict(h, address, sock) for h in self.bhash.get(port, ())):
            raise _error(errno.EADDRINUSE)
        holder = _Bind(port, address, sock)
        self.bhash.setdefault(port, []).append(holder)
        sock.tcp_bind = holder
        return port

    def _put_port(self, holder: _Bind | None) -> None:
        """inet_put_port."""
        if holder is None:
            return
        holders = self.bhash.get(holder.port)
        if holders is not None and holder in holders:
            holders.remove(holder)
            if not holders:
                del self.bhash[holder.port]

    def _connect_port(self, sock: Any, local: int, address: int, port: int) -> int:
        """__inet_hash_connect: an ephemeral port whose 4-tuple is free (shared with other destinations)."""
        low, high = self.port_range()
        span = high - low + 1
        first = self.rng.randrange(span)
        for step in range(span):
            candidate = low + (first + step) % span
            holders = self.bhash.get(candidate, ())
            if any(h.sock is not None and (h.conn is None or h.listening) for h in holders):
                continue  # bound by bind() or listening: never shared by an autobind
            if (local, candidate, address, port) in self.ehash:
                continue
            holder = _Bind(candidate, local, sock)
            self.bhash.setdefault(candidate, []).append(holder)
            sock.tcp_bind = holder
            sock.tcp_autobound = True
            return candidate
        raise _error(errno.EADDRNOTAVAIL)

