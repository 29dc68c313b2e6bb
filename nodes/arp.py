"""IPv4 specifics of the neighbour table: Linux `net/ipv4/arp.c`.

* the effects the table asks the kernel to carry out (what `arp_send`,
  `arp_solicit`, `neigh_resolve_output` and `arp_error_report` do there);
* which addresses need no resolution (`arp_constructor`, `arp_mc_map`);
* the rules for a received ARP packet (`arp_rcv`, `arp_process`), with
  Linux's default sysctls: arp_accept=0, arp_ignore=0, arp_filter=0,
  arp_announce=0, rp_filter=0, no proxy ARP.

The table itself (`nodes/neigh.py`) owns entries and timers; `arp_process`
reads it and changes it only through `NeighTable.event_ns` and
`NeighTable.neigh_update`, Linux's `neigh_event_ns` and `neigh_update`.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Collection, Protocol

from .neigh_entry import REACHABLE, STALE, NeighParams, NeighStats, Neighbour, NudState
from .skbuff import PACKET_HOST, PACKET_OTHERHOST
from .wire.addresses import BROADCAST_MAC, IPv4Address, MacAddress
from .wire.arp import ARP_REPLY, ARP_REQUEST, ArpPacket

LIMITED_BROADCAST = 0xFFFFFFFF


# -- effects -----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class SendArpRequest:
    """Ask who has `target_ip` on `dev`; `dst_mac` is the Ethernet destination (broadcast or the old MAC)."""

    dev: str
    target_ip: IPv4Address
    dst_mac: MacAddress

    def packet(self, dev_mac: MacAddress, source_ip: IPv4Address) -> ArpPacket:
        """The request from `dev`'s MAC; the kernel picks `source_ip` (an address of `dev`, as inet_select_addr)."""
        return ArpPacket.request(dev_mac, source_ip, self.target_ip)


@dataclass(frozen=True, slots=True)
class SendArpReply:
    """Tell `target_ip` at `target_mac` (the asker) that our `sender_ip` is at `dev`'s MAC."""

    dev: str
    sender_ip: IPv4Address
    target_ip: IPv4Address
    target_mac: MacAddress

    def packet(self, dev_mac: MacAddress) -> ArpPacket:
        return ArpPacket.reply(dev_mac, self.sender_ip, self.target_mac, self.target_ip)


@dataclass(frozen=True, slots=True)
class TransmitQueued:
    """Send `packets` (in this order) to `mac` on `dev`: they waited for resolution."""

    dev: str
    mac: MacAddress
    packets: tuple


@dataclass(frozen=True, slots=True)
class ResolutionFailed:
    """`ip` on `dev` did not resolve (or its entry was removed): these packets cannot be sent."""

    dev: str
    ip: IPv4Address
    packets: tuple


Effect = SendArpRequest | SendArpReply | TransmitQueued | ResolutionFailed


def gratuitous_arp(dev_mac: MacAddress, ip: IPv4Address) -> tuple[MacAddress, ArpPacket]:
    """Ethernet destination and packet announcing `ip` at `dev_mac` (interface up, RFC 5227 3)."""
    return BROADCAST_MAC, ArpPacket.gratuitous(dev_mac, ip)


# -- address classes ------------------------------------------------------------------


def is_multicast(ip: int) -> bool:
    return ip >> 28 == 0xE  # 224.0.0.0/4, ipv4_is_multicast


def is_loopback(ip: int) -> bool:
    return ip >> 24 == 127


def multicast_mac(ip: int) -> MacAddress:
    """01:00:5e and the low 23 bits of the group (ip_eth_mc_map, RFC 1112 6.4)."""
    return MacAddress(0x01005E000000 | (ip & 0x7FFFFF))


def noarp_mac(ip: int, broadcast_addresses: Collection[int]) -> MacAddress | None:
    """The MAC of an address that is never resolved (arp_constructor): multicast or broadcast, else None."""
    if is_multicast(ip):
        return multicast_mac(ip)  # RTN_MULTICAST: NUD_NOARP, arp_mc_map
    if ip == LIMITED_BROADCAST or ip in broadcast_addresses:
        return BROADCAST_MAC  # RTN_BROADCAST: NUD_NOARP, dev->broadcast
    return None


def _martian_sender(ip: int, broadcast_addresses: Collection[int]) -> bool:
    # ip_route_input_slow/fib_validate_source refuse these sources, so arp_process never
    # answers them, and their only possible entries are NOARP ones neigh_update leaves alone.
    return is_multicast(ip) or is_loopback(ip) or ip == LIMITED_BROADCAST or ip in broadcast_addresses


def _martian_target(ip: int) -> bool:
    return is_multicast(ip) or is_loopback(ip)  # arp_process: "bad requests for 127.x.x.x and multicast"


# -- input ---------------------------------------------------------------------------


class ArpTable(Protocol):
    """What `arp_process` needs of the table (`nodes.neigh.NeighTable`, which sits above this module)."""

    params: NeighParams
    stats: NeighStats
    local_addresses: Collection[int]
    broadcast_addresses: Collection[int]

    def get(self, ip: int, dev: str) -> Neighbour | None: ...

    def event_ns(self, ip: int, dev: str, mac: MacAddress, now: float, effects: list) -> Neighbour | None: ...

    def neigh_update(self, entry: Neighbour, mac: MacAddress, state: NudState, now: float, effects: list, *,
                     override: bool) -> None: ...


def arp_process(table: ArpTable, arp: ArpPacket, dev: str, now: float, pkt_type: int) -> list[Effect]:
    """Learn from an ARP packet received on `dev` and answer it if it asks for one of our addresses."""
    effects: list[Effect] = []
    if pkt_type == PACKET_OTHERHOST:
        return effects  # arp_rcv: not addressed to us at the link layer
    stats = table.stats
    operation = arp.operation
    sender_ip, target_ip, sender_mac = arp.sender_ip, arp.target_ip, arp.sender_mac
    broadcast = table.broadcast_addresses
    if ((operation != ARP_REQUEST and operation != ARP_REPLY) or sender_mac[0] & 0x01
            or _martian_target(target_ip) or _martian_sender(sender_ip, broadcast)):
        stats.rcv_invalid += 1
        return effects
    local = table.local_addresses
    if sender_ip == 0:
        # RFC 5227 probe (duplicate address detection): answered, nothing learnt (arp_process "sip == 0").
        if operation == ARP_REQUEST and target_ip in local:
            _reply(table, dev, target_ip, 0, sender_mac, pkt_type, effects)
        return effects
    if sender_ip in local:
        # Our own address from someone else (a conflict) or our own broadcast looped back:
        # fib_validate_source refuses a local source, so no reply and no entry.
        stats.rcv_from_own_address += 1
        return effects
    if operation == ARP_REQUEST and target_ip in local:
        # The asker will talk to us next: neigh_event_ns creates its entry and overrides the
        # MAC whatever locktime says. With rp_filter=0 the sender need not be on our subnet.
        # No entry (table full) means no reply, as in Linux ("if (n) arp_send").
        if table.event_ns(sender_ip, dev, sender_mac, now, effects) is not None:
            _reply(table, dev, target_ip, sender_ip, sender_mac, pkt_type, effects)
        return effects
    # Anything else only updates an entry we already have (arp_accept=0 creates none).
    entry = table.get(sender_ip, dev)
    if entry is None:
        return effects
    # arp_is_garp: a request with sip == tip, or such a reply whose tha is its sha.
    is_garp = sender_ip == target_ip and (operation == ARP_REQUEST or arp.target_mac == sender_mac)
    # "If several different ARP replies follow back-to-back, use the FIRST one": a new MAC is
    # only taken once locktime has passed since the entry last changed (time_after: strictly).
    override = is_garp or now > entry.last_updated + table.params.locktime
    # Broadcast replies and requests do not assert reachability.
    state = REACHABLE if operation == ARP_REPLY and pkt_type == PACKET_HOST else STALE
    table.neigh_update(entry, sender_mac, state, now, effects, override=override)
    return effects


def _reply(table: ArpTable, dev: str, our_ip: int, asker_ip: int, asker_mac: MacAddress, pkt_type: int,
           effects: list[Effect]) -> None:
    stats = table.stats
    if pkt_type == PACKET_HOST:
        stats.rcv_probes_ucast += 1
    else:
        stats.rcv_probes_mcast += 1
    stats.replies_sent += 1
    effects.append(SendArpReply(dev, IPv4Address(our_ip), IPv4Address(asker_ip), MacAddress(asker_mac)))
