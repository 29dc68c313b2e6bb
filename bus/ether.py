"""The Ethernet header as the bus sees it: where the addresses and the type are, nothing more.

Before changing this file, read IEEE 802.3 clause 3.2 (the MAC frame: six
bytes of destination, six of source, two of type/length) and IEEE 802.1Q
clause 9 (a tag of four bytes after the source address, starting with the
TPID 0x8100).

Byte offsets live in codecs only. The full Ethernet codec is
`nodes/wire/ethernet.py`, but the bus sits below the nodes and imports
nothing of them, and it needs only this much of a frame: a switch learns
and forwards on the two addresses, and a device's MTU check lets a tagged
frame be four bytes longer. So this module is the one place in `bus/` that
knows where those fields are; everything else in the bus slices frames with
these names. No state, no I/O.
"""
from __future__ import annotations

DST = slice(0, 6)            # destination MAC
SRC = slice(6, 12)           # source MAC
ADDRESSES = slice(0, 12)     # destination + source: all a switch's decision depends on
TYPE = slice(12, 14)         # EtherType, or the 802.1Q TPID when the frame is tagged
MAC_LENGTH = 6
HEADER_LENGTH = 14           # an untagged header; a shorter frame is a runt
VLAN_TAG_LENGTH = 4          # an 802.1Q tag may add this much beyond MTU + HEADER_LENGTH
TPID_8021Q = b"\x81\x00"


def is_vlan_tagged(frame: bytes) -> bool:
    """Whether `frame` carries an 802.1Q tag (its type field holds the TPID 0x8100)."""
    return frame[TYPE] == TPID_8021Q
