"""ARP packets for IPv4 over Ethernet (RFC 826), the only pairing we speak.

Before changing this file, read RFC 826 ("Packet format" and "Packet
Reception"), RFC 5227 section 3 on gratuitous ARP (announcements), and seed
001's ARP section (arp_table, arp_send).

The codec checks the fixed part (hardware type 1, protocol 0x0800, address
lengths 6 and 4) and accepts any operation code: deciding what to do with an
unknown operation (Linux drops it) is the neighbour layer's job, not the
codec's. Bytes after the 28-byte packet are Ethernet padding and ignored.
"""
from __future__ import annotations

import struct
from dataclasses import dataclass

from .addresses import ZERO_MAC, IPv4Address, MacAddress
from .errors import WireError

ARP_REQUEST = 1
ARP_REPLY = 2

ARPHRD_ETHER = 1
ETH_P_IP = 0x0800

PACKET_LENGTH = 28

_PACKET = struct.Struct("!HHBBH6sI6sI")
_ETHER_IPV4 = (ARPHRD_ETHER, ETH_P_IP, 6, 4)
_mac = MacAddress.from_wire
_int_new = int.__new__


@dataclass(slots=True)
class ArpPacket:
    """An Ethernet/IPv4 ARP packet."""

    operation: int
    sender_mac: MacAddress
    sender_ip: IPv4Address
    target_mac: MacAddress
    target_ip: IPv4Address

    @classmethod
    def parse(cls, data: "bytes | bytearray | memoryview") -> "ArpPacket":
        """Parse the 28-byte packet at the start of `data` (trailing padding allowed)."""
        if len(data) < PACKET_LENGTH:
            raise WireError("arp", f"packet of {len(data)} bytes is shorter than 28")
        hardware, protocol, hlen, plen, operation, sender_mac, sender_ip, target_mac, target_ip = (
            _PACKET.unpack_from(data)
        )
        if (hardware, protocol, hlen, plen) != _ETHER_IPV4:
            raise WireError(
                "arp",
                f"not Ethernet/IPv4: hardware {hardware}, protocol {protocol:#06x}, lengths {hlen}/{plen}",
            )
        return cls(
            operation,
            _mac(sender_mac),
            _int_new(IPv4Address, sender_ip),
            _mac(target_mac),
            _int_new(IPv4Address, target_ip),
        )

    def build_into(self, buffer: "bytearray | memoryview", offset: int = 0) -> int:
        """Write the packet at `offset`; returns its length (28)."""
        try:
            # struct pads or truncates "6s" silently; a wrong-sized MAC is a bug upstream.
            if len(self.sender_mac) != 6 or len(self.target_mac) != 6:
                raise WireError("arp", "MAC addresses must be 6 bytes")
            _PACKET.pack_into(
                buffer,
                offset,
                ARPHRD_ETHER,
                ETH_P_IP,
                6,
                4,
                self.operation,
                self.sender_mac,
                self.sender_ip,
                self.target_mac,
                self.target_ip,
            )
        except (struct.error, TypeError) as error:
            raise WireError("arp", f"cannot build packet: {error}") from None
        return PACKET_LENGTH

    def build(self) -> bytes:
        """The 28-byte packet (no Ethernet padding: see `ethernet.pad`)."""
        buffer = bytearray(PACKET_LENGTH)
        self.build_into(buffer)
        return bytes(buffer)

    @property
    def is_gratuitous(self) -> bool:
        """Sender and target protocol addresses equal: an announcement (RFC 5227 3)."""
        return self.sender_ip == self.target_ip

    @classmethod
    def request(cls, sender_mac: MacAddress, sender_ip: IPv4Address, target_ip: IPv4Address) -> "ArpPacket":
        """Who has `target_ip`? Tell `sender_ip`. Target MAC is zero, as Linux sends it."""
        return cls(ARP_REQUEST, sender_mac, sender_ip, ZERO_MAC, target_ip)

    @classmethod
    def reply(
        cls,
        sender_mac: MacAddress,
        sender_ip: IPv4Address,
        target_mac: MacAddress,
        target_ip: IPv4Address,
    ) -> "ArpPacket":
        """`sender_ip` is at `sender_mac`, told to the asker (`target_*`)."""
        return cls(ARP_REPLY, sender_mac, sender_ip, target_mac, target_ip)

    def reply_with(self, mac: MacAddress) -> "ArpPacket":
        """The reply to this request from the owner of its target address, at `mac`."""
        return ArpPacket(ARP_REPLY, mac, self.target_ip, self.sender_mac, self.sender_ip)

    @classmethod
    def gratuitous(cls, mac: MacAddress, ip: IPv4Address, operation: int = ARP_REQUEST) -> "ArpPacket":
        """Announce `ip` at `mac`: sender and target IP both `ip`, target MAC zero (RFC 5227 3)."""
        return cls(operation, mac, ip, ZERO_MAC, ip)
