"""The packet buffer every layer of a node passes down and up: Linux's sk_buff.

Before changing this file, read seed 001's "소켓 버퍼(Socket Buffer)" section
(head/data/tail/end, push/pull/put/trim) and Linux `include/linux/skbuff.h`
(`skb_push`, `skb_pull`, `skb_put`, `skb_trim`, `skb_reserve`,
`skb_realloc_headroom`, `skb_cow`, `skb_reset_*_header`).

One storage object holds a packet and the room around it::

    0 (head)      data_offset          tail                 end
    |  headroom   |  packet (len bytes) |  tailroom          |

Offsets index `buffer` (a `bytearray`, or a read-only `bytes`/`memoryview` for
a received frame). Sending, a layer allocates with headroom for every header
below it, `put`s the payload, and each lower layer `push`es its header in
front: the payload is never copied. Receiving, each layer `pull`s its header
off the front. The only copies are `make_writable` (copy-on-write of a
read-only received frame, e.g. before a router rewrites the TTL) and a `push`
that outgrows the headroom (a reallocation, like `skb_realloc_headroom`);
both are counted in `copies` so tests and the kernel can see them.

Header offsets (`mac_header`, `network_header`, `transport_header`) are
absolute offsets into `buffer`, as Linux keeps them relative to `head`, so
pushes and pulls leave them valid; only a reallocation shifts them (and does).
"""
from __future__ import annotations

from typing import Any

# skb->pkt_type values, as in include/uapi/linux/if_packet.h.
PACKET_HOST = 0       # to us
PACKET_BROADCAST = 1  # to all
PACKET_MULTICAST = 2  # to a group
PACKET_OTHERHOST = 3  # to someone else (seen only in promiscuous mode)
PACKET_OUTGOING = 4   # our own outgoing packet

# What Linux charges a socket for an skb beyond its data: SKB_TRUESIZE adds
# SKB_DATA_ALIGN(sizeof(struct sk_buff)) + SKB_DATA_ALIGN(sizeof(struct
# skb_shared_info)), 256 + 320 on x86-64. Socket memory accounting (tcp_rmem,
# SO_RCVBUF) uses truesize, so small packets cost far more than their bytes.
SKB_TRUESIZE_OVERHEAD = 576

# Slack added when a push outgrows the headroom, so a second small push does
# not reallocate again (Linux rounds up with NET_SKB_PAD similarly).
HEADROOM_GROWTH_PAD = 32

# Headroom a locally generated packet needs for Ethernet (with an 802.1Q tag),
# IPv4 and TCP headers with their maximum options: 18 + 60 + 60.
MAX_HEADER = 18 + 60 + 60

_UNSET = -1


class SkbuffError(ValueError):
    """A layer asked the buffer for something impossible (over-pull, over-put, reserve on data).

    This is a programming error in the caller, not bad input from the wire:
    layers check lengths (through their codecs) before pulling.
    """


class SkBuff:
    """One packet and its metadata; see the module docstring for the layout."""

    __slots__ = (
        "buffer",
        "_view",
        "data_offset",
        "tail",
        "end",
        "dev",
        "protocol",
        "tstamp",
        "pkt_type",
        "mac_header",
        "network_header",
        "transport_header",
        "cb",
        "copies",
    )

    buffer: "bytearray | bytes | memoryview"
    data_offset: int  # Linux skb->data, as an offset from head
    tail: int
    end: int
    dev: str | None  # ingress interface on receive, egress on transmit
    protocol: int  # ethertype, host byte order (skb->protocol)
    tstamp: float  # when it was received or created (kernel clock)
    pkt_type: int  # PACKET_HOST, PACKET_BROADCAST, ...
    mac_header: int
    network_header: int
    transport_header: int
    cb: Any  # control buffer: scratch owned by the layer currently holding the skb
    copies: int  # data copies made so far (copy-on-write or headroom reallocation)

    def __init__(self, buffer: "bytearray | bytes | memoryview", data_offset: int, tail: int,
                 dev: str | None = None, now: float = 0.0) -> None:
        view = memoryview(buffer)
        self.buffer = buffer
        self._view = view
        self.data_offset = data_offset
        self.tail = tail
        self.end = len(view)
        self.dev = dev
        self.protocol = 0
        self.tstamp = now
        self.pkt_type = PACKET_HOST
        self.mac_header = _UNSET
        self.network_header = _UNSET
        self.transport_header = _UNSET
        self.cb = None
        self.copies = 0

    # -- construction -------------------------------------------------------

    @classmethod
    def alloc(cls, size: int, headroom: int = 0, *, dev: str | None = None, now: float = 0.0) -> "SkBuff":
        """An empty buffer with `size` bytes of tailroom after `headroom` bytes (alloc_skb + skb_reserve)."""
        if size < 0 or headroom < 0:
            raise SkbuffError(f"cannot allocate size={size} headroom={headroom}")
        return cls(bytearray(headroom + size), headroom, headroom, dev, now)

    @classmethod
    def from_payload(cls, payload: "bytes | bytearray | memoryview", headroom: int, *, dev: str | None = None,
                     now: float = 0.0) -> "SkBuff":
        """A buffer holding a copy of `payload` after `headroom` bytes (alloc_skb, skb_reserve, skb_put_data).

        What a locally generated datagram starts as; one step instead of
        `alloc` then `put_data`, as this is on every packet a node sends.
        """
        size = len(payload)
        if headroom < 0:
            raise SkbuffError(f"cannot allocate headroom={headroom}")
        buffer = bytearray(headroom + size)
        buffer[headroom:] = payload
        return cls(buffer, headroom, headroom + size, dev, now)

    @classmethod
    def from_frame(cls, frame: "bytes | bytearray | memoryview", *, dev: str | None = None,
                   now: float = 0.0) -> "SkBuff":
        """Wrap a received Ethernet frame without copying it; data starts at the MAC header.

        A `bytes` frame stays read-only: pulls and reads work on it directly,
        and `make_writable` copies it only if a layer needs to write.
        """
        skb = cls(frame, 0, len(frame), dev, now)
        skb.mac_header = 0
        return skb

    def copy(self) -> "SkBuff":
        """A private writable copy of buffer and metadata (skb_copy); `cb` is shared, not copied."""
        clone = SkBuff(bytearray(self._view), self.data_offset, self.tail, self.dev, self.tstamp)
        clone.protocol = self.protocol
        clone.pkt_type = self.pkt_type
        clone.mac_header = self.mac_header
        clone.network_header = self.network_header
        clone.transport_header = self.transport_header
        clone.cb = self.cb
        return clone

    # -- sizes --------------------------------------------------------------

    def __len__(self) -> int:
        return self.tail - self.data_offset

    @property
    def len(self) -> int:
        """Bytes of packet from data to tail (skb->len)."""
        return self.tail - self.data_offset

    @property
    def head(self) -> int:
        """Offset of the start of the storage: always 0 (kept for the Linux picture)."""
        return 0

    @property
    def headroom(self) -> int:
        return self.data_offset

    @property
    def tailroom(self) -> int:
        return self.end - self.tail

    @property
    def truesize(self) -> int:
        """Memory this packet costs its socket: storage plus the fixed struct overhead (SKB_TRUESIZE)."""
        return self.end + SKB_TRUESIZE_OVERHEAD

    @property
    def writable(self) -> bool:
        return not self._view.readonly

    # -- moving the boundaries ---------------------------------------------

    def reserve(self, length: int) -> None:
        """Move data and tail forward to make headroom; only on an empty buffer, as skb_reserve."""
        if self.tail != self.data_offset:
            raise SkbuffError("reserve on a buffer that already holds data")
        if length < 0 or length > self.end - self.tail:
            raise SkbuffError(f"reserve {length} with tailroom {self.end - self.tail}")
        self.data_offset += length
        self.tail += length

    def push(self, length: int) -> memoryview:
        """Prepend `length` bytes of header; returns the writable view of the new header.

        Outgrowing the headroom reallocates (one copy, counted); pushing onto
        a read-only received frame copies it first (skb_cow_head).
        """
        if length > self.data_offset:
            self._grow_headroom(length - self.data_offset + HEADROOM_GROWTH_PAD)
        elif length < 0:
            raise SkbuffError(f"push of {length} bytes")
        if self._view.readonly:
            self.make_writable()
        start = self.data_offset - length
        self.data_offset = start
        return self._view[start:start + length]

    def pull(self, length: int) -> memoryview:
        """Strip `length` bytes from the front; returns a view of the stripped bytes."""
        start = self.data_offset
        if length > self.tail - start or length < 0:
            raise SkbuffError(f"pull of {length} bytes from a packet of {self.tail - start}")
        self.data_offset = start + length
        return self._view[start:start + length]

    def put(self, length: int) -> memoryview:
        """Append `length` bytes at the tail; returns the writable view of them (skb_put)."""
        start = self.tail
        if length > self.end - start or length < 0:
            raise SkbuffError(f"put of {length} bytes with tailroom {self.end - start}")
        if self._view.readonly:
            self.make_writable()
        self.tail = start + length
        return self._view[start:start + length]

    def put_data(self, data: "bytes | bytearray | memoryview") -> None:
        """Append a copy of `data` at the tail (skb_put_data)."""
        self.put(len(data))[:] = data

    def trim(self, length: int) -> None:
        """Cut the packet to `length` bytes from the tail end; no-op when already shorter (skb_trim).

        IPv4 input uses this to drop Ethernet padding beyond the datagram's total length.
        """
        if length < 0:
            raise SkbuffError(f"trim to {length} bytes")
        if length < self.tail - self.data_offset:
            self.tail = self.data_offset + length

    # -- copies -------------------------------------------------------------

    def make_writable(self) -> bool:
        """Copy a read-only buffer into a private bytearray (skb_cow); returns whether it copied."""
        if not self._view.readonly:
            return False
        self._replace_buffer(bytearray(self._view), 0)
        return True

    def _grow_headroom(self, extra: int) -> None:
        """Reallocate with `extra` more bytes in front; every offset shifts (skb_realloc_headroom)."""
        grown = bytearray(extra + self.end)
        grown[extra:] = self._view
        self._replace_buffer(grown, extra)

    def _replace_buffer(self, new: bytearray, shift: int) -> None:
        self.buffer = new
        self._view = memoryview(new)
        self.end = len(new)
        self.copies += 1
        if shift:
            self.data_offset += shift
            self.tail += shift
            if self.mac_header != _UNSET:
                self.mac_header += shift
            if self.network_header != _UNSET:
                self.network_header += shift
            if self.transport_header != _UNSET:
                self.transport_header += shift

    # -- views --------------------------------------------------------------

    @property
    def data(self) -> memoryview:
        """The packet bytes from data to tail (read-only if the frame is)."""
        return self._view[self.data_offset:self.tail]

    def tobytes(self) -> bytes:
        """The packet bytes as an immutable copy (what a NIC puts on the wire)."""
        return self._view[self.data_offset:self.tail].tobytes()

    # -- layer header offsets (skb_reset_*_header / skb_*_header) ----------

    def reset_mac_header(self) -> None:
        """Mark the current data start as the MAC header."""
        self.mac_header = self.data_offset

    def reset_network_header(self) -> None:
        """Mark the current data start as the network (IP) header."""
        self.network_header = self.data_offset

    def reset_transport_header(self) -> None:
        """Mark the current data start as the transport (TCP/UDP/ICMP) header."""
        self.transport_header = self.data_offset

    def mac_header_view(self) -> memoryview:
        """From the MAC header to the tail."""
        return self._header_view(self.mac_header, "mac")

    def network_header_view(self) -> memoryview:
        """From the network header to the tail (an IP layer reads its header here after pulls)."""
        return self._header_view(self.network_header, "network")

    def transport_header_view(self) -> memoryview:
        """From the transport header to the tail."""
        return self._header_view(self.transport_header, "transport")

    def _header_view(self, offset: int, name: str) -> memoryview:
        if offset == _UNSET:
            raise SkbuffError(f"{name} header offset is not set")
        return self._view[offset:self.tail]

    @property
    def network_offset(self) -> int:
        """Network header position relative to data (skb_network_offset); negative after pulling past it."""
        if self.network_header == _UNSET:
            raise SkbuffError("network header offset is not set")
        return self.network_header - self.data_offset

    def __repr__(self) -> str:
        return (f"<SkBuff dev={self.dev} len={self.tail - self.data_offset} headroom={self.data_offset} "
                f"tailroom={self.end - self.tail} protocol={self.protocol:#06x} pkt_type={self.pkt_type}"
                f"{' ro' if self._view.readonly else ''}>")
