"""One node's network stack as an instance: devices, NAPI, ARP, FIB, IPv4, ICMP, UDP.

Before changing this file, read seed 001's receive/transmit path sections
(netif_rx, the backlog and bottom half, ptype dispatch, dev_queue_xmit) and
seeds 002/003 on NAPI.

This is the sans-I/O heart of a node, the `struct net` of Linux: everything a
node's kernel knows, with no sockets and no clock. The kernel process
(`nodes/kernel.py`) moves frames between the wire and `receive`/the devices'
tx queues, and calls `poll` and `tick` with the time; tests wire several
stacks together in one process with in-memory links instead.

Receive: `receive(dev, frame)` is the interrupt (the frame lands in the rx
ring, the device goes on the NAPI poll list); `poll(now)` is the NET_RX
softirq, which runs `netif_receive` per frame: Ethernet checks, then ARP or
IPv4 by ethertype. Transmit: IPv4 calls `neigh_output` with an skb whose
data starts at the IP header; the neighbour layer supplies the MAC and
`dev_queue_xmit` pushes the Ethernet header and queues the frame.

This is the composition root: it builds each layer with exactly what that
layer needs (IPv4 gets the route cache, the devices and the three link-layer
entry points; ICMP and UDP get IPv4 and register with it), so no layer
reaches another through this object. Time is always an argument (`now`):
the stack keeps no clock of its own.

Every frame and every timer runs behind an exception barrier (the NAPI
scheduler's and `tick`'s): an unexpected exception drops that frame, counts
`softnet.rx_exceptions` (`timer_exceptions`), and is logged with its
traceback once per code site. Each is a bug: the test suite fails on any.
"""
from __future__ import annotations

import errno
import heapq
import itertools
import logging
import random
import traceback
from dataclasses import dataclass
from typing import Any, Callable

from .icmp import IcmpLayer
from .ipv4 import IPv4Layer
from .neigh import (
    NeighParams,
    NeighTable,
    ResolutionFailed,
    SendArpReply,
    SendArpRequest,
    TransmitQueued,
    gratuitous_arp,
)
from .nic import InterfaceAddress, NapiScheduler, NetDevice, make_loopback
from .route import Fib, Route
from .route_cache import RouteCache
from .skbuff import PACKET_BROADCAST, PACKET_HOST, PACKET_MULTICAST, SkBuff
from .sysctl import Sysctl
from .socket import SocketLayer
from .socket.constants import SOCK_STREAM
from .tcp.layer import TcpLayer
from .udp import UdpLayer
from .wire.addresses import BROADCAST_MAC, ZERO_MAC, IPv4Address, MacAddress, prefix_mask
from .wire.arp import ArpPacket
from .wire.errors import WireError
from .wire.ethernet import DST, ETH_P_8021Q, ETH_P_ARP, ETH_P_IP, ETHERTYPE, HEADER_LENGTH
from .wire.icmp import DEST_UNREACH, HOST_UNREACH
from .wire.tcp import IPPROTO_TCP

log = logging.getLogger("netemu.stack")

_ETH_IP = ETH_P_IP.to_bytes(2, "big")
_ETH_ARP = ETH_P_ARP.to_bytes(2, "big")
_ETH_8021Q = ETH_P_8021Q.to_bytes(2, "big")
_DST_START = DST.start
_DST_STOP = DST.stop
_TYPE_START = ETHERTYPE.start
_TYPE_STOP = ETHERTYPE.stop


@dataclass(slots=True)
class LinkLayerStats:
    """Drops before any protocol saw the frame (Linux counts these per device or not at all)."""

    runt_frames: int = 0  # shorter than an Ethernet header
    otherhost_frames: int = 0  # unicast to another MAC (flooded by a switch)
    vlan_tagged: int = 0  # 802.1Q frames: no VLAN sub-interfaces here
    arp_malformed: int = 0

    def as_dict(self) -> dict[str, int]:
        return {name: getattr(self, name) for name in self.__slots__}


class Stack:
    """A node's whole network stack; see the module docstring."""

    def __init__(self, name: str = "node", sysctl: Sysctl | None = None, rng: random.Random | None = None) -> None:
        self.name = name
        self.sysctl = sysctl = sysctl if sysctl is not None else Sysctl()
        self.rng = rng = rng if rng is not None else random.Random()
        self.link_stats = LinkLayerStats()
        self.devices: dict[str, NetDevice] = {}
        self.lo = make_loopback()
        self.devices["lo"] = self.lo
        self.napi = NapiScheduler(sysctl["net.core.netdev_budget"], enabled=bool(sysctl["net.core.napi"]),
                                  on_exception=self._rx_exception)
        self._reported_sites: set[tuple[str, int]] = set()
        self.fib = Fib(loopback=True)
        self.route_cache = RouteCache(self.fib, max_size=sysctl["net.ipv4.route.max_size"],
                                      mtu_expires=float(sysctl["net.ipv4.route.mtu_expires"]))
        self.neigh = NeighTable(NeighParams.from_sysctl(sysctl), rng=rng)
        self.ipv4 = IPv4Layer(sysctl, rng, self.route_cache, self.devices, self.lo,
                              neigh_output=self.neigh_output, loopback_xmit=self.loopback_xmit,
                              broadcast_xmit=self.broadcast_xmit)
        self.icmp = IcmpLayer(self.ipv4, sysctl)
        self.udp = UdpLayer(self.ipv4, rng)
        self.tcp = TcpLayer(self.ipv4, sysctl, rng)
        self.sockets = SocketLayer(self.ipv4, self.icmp, self.udp, sysctl, rng, self.devices)  # inet_init: the INET socket layer
        self.sockets.register_protosw(SOCK_STREAM, IPPROTO_TCP, self.tcp)  # inet_register_protosw(tcp)
        self._timers: list[tuple[float, int, Callable[[float], Any]]] = []
        self._timer_sequence = itertools.count()
        self._refresh_addresses()

    # ------------------------------------------------------------ configuration

    def add_device(self, name: str, mac: MacAddress | str, mtu: int = 1500, **options: Any) -> NetDevice:
        """Create an Ethernet interface (down until `set_link(name, True)` unless `up=True`)."""
        if name in self.devices:
            raise FileExistsError(f"device {name} exists")
        up = options.pop("up", True)
        options.setdefault("weight", self.sysctl["net.core.dev_weight"])
        device = NetDevice(name=name, mac=MacAddress(mac), mtu=mtu, ifindex=len(self.devices) + 1, admin_up=up, **options)
        self.devices[name] = device
        self.fib.add_device(name, mtu=mtu, up=up)
        return device

    def add_address(self, dev: str, address: int | str, prefix_length: int) -> None:
        """`ip addr add ADDRESS/PREFIX dev DEV`: connected, local and broadcast routes follow."""
        device = self.devices[dev]
        ip = IPv4Address(address)
        device.addresses.append(InterfaceAddress(ip, prefix_length))
        self.fib.add_address(dev, ip, prefix_length)
        self._refresh_addresses()

    def remove_address(self, dev: str, address: int | str) -> None:
        device = self.devices[dev]
        ip = IPv4Address(address)
        kept = [a for a in device.addresses if a.address != ip]
        if len(kept) == len(device.addresses):
            raise OSError(errno.EADDRNOTAVAIL, "Cannot assign requested address")
        device.addresses = kept
        self.fib.remove_address(dev, ip)
        self._refresh_addresses()

    def _refresh_addresses(self) -> None:
        local: set[int] = set()
        broadcast: set[int] = {0xFFFFFFFF}
        for device in self.devices.values():
            for entry in device.addresses:
                local.add(int(entry.address))
                if not device.loopback and entry.prefix_length < 31:
                    broadcast.add(int(entry.broadcast))
        self.ipv4.local_addresses = local
        self.ipv4.broadcast_addresses = broadcast
        self.neigh.local_addresses = set(local)
        self.neigh.broadcast_addresses = set(broadcast)

    def set_link(self, dev: str, up: bool, now: float) -> None:
        """`ip link set DEV up|down`: routes follow; on down every neighbour of DEV goes, permanent
        ones too (neigh_ifdown); on up a gratuitous ARP only with arp_notify = 1 (inetdev_event)."""
        device = self.devices[dev]
        if device.admin_up == up:
            return
        device.admin_up = up
        if up:
            self.fib.link_up(dev)
            if self.sysctl["net.ipv4.conf.all.arp_notify"]:
                self.announce(dev, now)
        else:
            self.fib.link_down(dev)
            self.neigh.ifdown(dev)  # what waited for resolution is dropped silently, as Linux does
            device.rx_ring.clear()
            device.tx_queue.clear()

    def announce(self, dev: str, now: float) -> None:
        """Gratuitous ARP for every address of `dev` (RFC 5227 3; Linux inetdev_send_gratuitous_arp).

        Sent on link up when arp_notify = 1; never on an address added (Linux sends none then)."""
        device = self.devices[dev]
        if device.loopback or not device.running:
            return
        for entry in device.addresses:
            dst_mac, packet = gratuitous_arp(device.mac, entry.address)
            self._xmit_arp(device, dst_mac, packet, now)

    def add_route(self, spec: dict[str, Any] | Route) -> Route:
        """`ip route add`; spec in the node-config form (dst, gateway, dev, metric, src)."""
        route = spec if isinstance(spec, Route) else Route.from_config(spec)
        return self.fib.add(route)

    def delete_route(self, spec: dict[str, Any]) -> Route:
        return self.fib.delete(spec["dst"], gateway=spec.get("gateway"), dev=spec.get("dev"),
                               metric=spec.get("metric"))

    def add_neighbour(self, ip: int | str, mac: str | MacAddress, dev: str | None, now: float) -> None:
        """`ip neigh add IP lladdr MAC dev DEV nud permanent` (dev from the connected route if omitted)."""
        if dev is None:
            route = self.fib.lookup(IPv4Address(ip))
            if route is None or route.dev is None:
                raise OSError(errno.ENETUNREACH, "Network is unreachable")
            dev = route.dev
        self.neigh.add(ip, dev, mac, now)

    def delete_neighbour(self, ip: int | str, dev: str, now: float) -> None:
        """`ip neigh del IP dev DEV`: what waited for it is answered as a failed resolution."""
        self.neigh_effects(self.neigh.delete(IPv4Address(ip), dev), now)

    def flush_neighbours(self, dev: str | None, now: float) -> None:
        """`ip neigh flush [dev DEV]`."""
        self.neigh_effects(self.neigh.flush(dev), now)

    # ------------------------------------------------------------------ receive

    def receive(self, dev: str | NetDevice, frame: bytes) -> bool:
        """A frame arrived on `dev` (the interrupt): into the rx ring, device onto the poll list."""
        device = self.devices[dev] if isinstance(dev, str) else dev
        if device.rx_enqueue(frame):
            self.napi.schedule(device)
            return True
        return False

    def receive_many(self, device: NetDevice, frames: list[bytes]) -> int:
        """Several frames arrived on `device` at once (one message from the wire); returns how many fit the ring."""
        accepted = device.rx_enqueue_many(frames)
        if accepted:
            self.napi.schedule(device)
        return accepted

    def poll(self, now: float) -> int:
        """One NET_RX softirq round (bounded by netdev_budget unless NAPI is off)."""
        return self.napi.run(self._netif_receive, now)

    def _rx_exception(self, device: NetDevice, frame: bytes, error: BaseException) -> None:
        """The barrier caught a frame's exception: log its traceback once per code site."""
        self._report_once("frame of %d bytes on %s" % (len(frame), device.name), error, frame)

    def _report_once(self, what: str, error: BaseException, frame: bytes | None = None) -> None:
        innermost = traceback.extract_tb(error.__traceback__)[-1] if error.__traceback__ else None
        site = (innermost.filename, innermost.lineno or 0) if innermost is not None else ("?", 0)
        if site in self._reported_sites:
            return
        self._reported_sites.add(site)
        detail = f" (first 64 bytes: {bytes(frame[:64]).hex()})" if frame is not None else ""
        log.error("%s: BUG: %s dropped by the exception barrier at %s:%d%s\n%s", self.name, what, site[0],
                  site[1], detail, "".join(traceback.format_exception(error)).rstrip())

    @property
    def rx_pending(self) -> bool:
        return self.napi.pending

    def _netif_receive(self, device: NetDevice, frame: bytes, now: float) -> None:
        """netif_receive_skb: classify the frame and hand it to ARP or IPv4."""
        if len(frame) < HEADER_LENGTH:
            self.link_stats.runt_frames += 1
            device.stats.rx_errors += 1
            return
        destination = frame[_DST_START:_DST_STOP]
        if device.loopback or destination == device.mac:
            pkt_type = PACKET_HOST
        elif frame[_DST_START] & 1:  # the group bit
            if destination == BROADCAST_MAC:
                pkt_type = PACKET_BROADCAST
            else:
                pkt_type = PACKET_MULTICAST
                device.stats.multicast += 1
        else:
            # A NIC's filter drops unicast for other stations; a switch flooding unknown
            # unicast makes these common, so they are counted apart from errors.
            self.link_stats.otherhost_frames += 1
            return
        # The frame wrapped without a copy, its Ethernet header already pulled.
        skb = SkBuff(frame, HEADER_LENGTH, len(frame), device.name, now)
        skb.mac_header = 0
        skb.pkt_type = pkt_type
        ethertype = frame[_TYPE_START:_TYPE_STOP]
        if ethertype == _ETH_IP:
            skb.protocol = ETH_P_IP
            self.ipv4.receive(skb, now)
        elif ethertype == _ETH_ARP:
            skb.protocol = ETH_P_ARP
            self._arp_receive(device, skb, now)
        else:
            if ethertype == _ETH_8021Q:
                self.link_stats.vlan_tagged += 1
            device.stats.rx_nohandler += 1
            device.stats.rx_dropped += 1

    def _arp_receive(self, device: NetDevice, skb: SkBuff, now: float) -> None:
        try:
            packet = ArpPacket.parse(skb.data)
        except WireError:
            self.link_stats.arp_malformed += 1
            device.stats.rx_errors += 1
            return
        self.neigh_effects(self.neigh.arp_input(packet, device.name, now, skb.pkt_type), now)

    # ----------------------------------------------------------------- transmit

    def neigh_output(self, device: NetDevice, next_hop: int, skb: SkBuff, now: float) -> None:
        """ip_finish_output2: resolve the next hop's MAC, or park the packet in the ARP queue."""
        mac = self.neigh.lookup(next_hop, device.name, now)
        if mac is not None:
            if device.loopback:
                self.dev_queue_xmit(device, skb, mac, _ETH_IP)
                return
            # dev_queue_xmit inline: this is every unicast datagram a node sends or forwards.
            skb.push(HEADER_LENGTH)[:] = mac + device.mac + _ETH_IP
            skb.mac_header = skb.data_offset  # skb_reset_mac_header
            device.tx_enqueue(skb.tobytes())
        else:
            self.neigh_effects(self.neigh.enqueue(next_hop, device.name, skb, now), now)

    def dev_queue_xmit(self, device: NetDevice, skb: SkBuff, dst_mac: bytes, ethertype: bytes = _ETH_IP) -> None:
        """Push the Ethernet header and queue the frame on the device."""
        skb.push(HEADER_LENGTH)[:] = dst_mac + device.mac + ethertype
        skb.mac_header = skb.data_offset  # skb_reset_mac_header
        if device.loopback:
            self.loopback_xmit_frame(skb.tobytes())
        else:
            device.tx_enqueue(skb.tobytes())

    def broadcast_xmit(self, device: NetDevice, skb: SkBuff) -> None:
        self.dev_queue_xmit(device, skb, BROADCAST_MAC, _ETH_IP)

    def loopback_xmit(self, skb: SkBuff) -> None:
        """A datagram to one of our own addresses: through `lo`, back in at the next softirq round."""
        self.dev_queue_xmit(self.lo, skb, ZERO_MAC, _ETH_IP)

    def loopback_xmit_frame(self, frame: bytes) -> None:
        lo = self.lo
        lo.stats.tx_packets += 1
        lo.stats.tx_bytes += len(frame)
        self.receive(lo, frame)

    def _xmit_arp(self, device: NetDevice, dst_mac: bytes, packet: ArpPacket, now: float) -> None:
        skb = SkBuff.alloc(28, HEADER_LENGTH, dev=device.name, now=now)
        packet.build_into(skb.put(28))
        self.dev_queue_xmit(device, skb, dst_mac, _ETH_ARP)

    def neigh_effects(self, effects: list, now: float) -> None:
        """Carry out what the neighbour table asked for."""
        for effect in effects:
            device = self.devices.get(effect.dev)
            if device is None:
                continue
            if isinstance(effect, TransmitQueued):
                for skb in effect.packets:
                    self.dev_queue_xmit(device, skb, effect.mac, _ETH_IP)
            elif isinstance(effect, SendArpRequest):
                source = self._arp_source(device, effect.target_ip)
                if source is not None:
                    self._xmit_arp(device, effect.dst_mac, effect.packet(device.mac, source), now)
            elif isinstance(effect, SendArpReply):
                self._xmit_arp(device, effect.target_mac, effect.packet(device.mac), now)
            elif isinstance(effect, ResolutionFailed):
                # Linux arp_error_report: every queued packet, ours or forwarded, earns an
                # ICMP host unreachable to its source (ours come back to us over lo).
                for skb in effect.packets:
                    self.ipv4.stats.OutDiscards += 1
                    self.ipv4.icmp_send(DEST_UNREACH, HOST_UNREACH, skb.network_header_view(), now)

    @staticmethod
    def _arp_source(device: NetDevice, target: int) -> IPv4Address | None:
        """inet_select_addr for an ARP request: our address in the target's subnet, else the first."""
        for entry in device.addresses:
            if not (entry.address ^ target) & prefix_mask(entry.prefix_length):
                return entry.address
        return device.addresses[0].address if device.addresses else None

    # ------------------------------------------------------------------- timers

    def call_at(self, when: float, callback: Callable[[float], Any]) -> None:
        """Run `callback(now)` at `when` (the kernel's timer wheel)."""
        heapq.heappush(self._timers, (when, next(self._timer_sequence), callback))

    def next_timer(self) -> float | None:
        """The earliest deadline at which `tick` has work, or None (the kernel asks once per loop pass)."""
        earliest = self.neigh.next_timer()
        deadline = self.ipv4.reassembly.next_timer()  # ipv4.next_timer, without the call: asked every loop pass
        if deadline is not None and (earliest is None or deadline < earliest):
            earliest = deadline
        deadline = self.tcp.next_timer()
        if deadline is not None and (earliest is None or deadline < earliest):
            earliest = deadline
        if self._timers:
            deadline = self._timers[0][0]
            if earliest is None or deadline < earliest:
                earliest = deadline
        return earliest

    def tick(self, now: float) -> None:
        """Run every timer due at `now`, each behind the exception barrier."""
        deadline = self.neigh.next_timer()
        if deadline is not None and deadline <= now:
            self._guarded(self._neigh_tick, now)
        deadline = self.ipv4.next_timer()
        if deadline is not None and deadline <= now:
            self._guarded(self.ipv4.tick, now)
        deadline = self.tcp.next_timer()
        if deadline is not None and deadline <= now:
            self._guarded(self.tcp.tick, now)
        timers = self._timers
        while timers and timers[0][0] <= now:
            _, _, callback = heapq.heappop(timers)
            self._guarded(callback, now)

    def _neigh_tick(self, now: float) -> None:
        self.neigh_effects(self.neigh.tick(now), now)

    def _guarded(self, callback: Callable[[float], Any], now: float) -> None:
        try:
            callback(now)
        except Exception as error:
            if NapiScheduler.reraise:
                raise
            self.napi.stat.timer_exceptions += 1
            self._report_once(f"timer {getattr(callback, '__qualname__', callback)!r}", error)

    # ------------------------------------------------------------------- tables

    def interfaces(self) -> list[dict]:
        return [device.describe() for device in self.devices.values()]

    def counters(self) -> dict[str, Any]:
        """Everything countable, grouped like /proc/net/snmp, softnet_stat and arp_cache."""
        return {
            "Ip": self.ipv4.counters(),
            "Icmp": self.icmp.counters(),
            "Udp": self.udp.counters(),
            "Tcp": self.tcp.counters(),
            "TcpExt": self.tcp.ext_counters(),
            "arp_cache": self.neigh.stats.as_dict(),
            "softnet": self.napi.stat.as_dict(),
            "route_cache": self.route_cache.stats(),
            "link": self.link_stats.as_dict(),
            "devices": {name: device.stats.as_dict() for name, device in self.devices.items()},
        }
