"""Ancillary data (`pack_cmsgs`/`unpack_cmsgs`: struct cmsghdr lists as put_cmsg and __scm_send
see them) and the messages of the queues: `Message` (what recvmsg returns), `_Queued` (a
receive-queue entry), `QueuedError` (an sk_error_queue entry).

Imports constants only."""
from __future__ import annotations

import errno
import struct
from dataclasses import dataclass
from typing import Iterable

from .constants import MSG_CTRUNC, _error

_CMSGHDR = struct.Struct("=Qii")  # struct cmsghdr on LP64: size_t cmsg_len; int cmsg_level; int cmsg_type


def _cmsg_align(length: int) -> int:
    return (length + 7) & ~7  # CMSG_ALIGN: sizeof(long)


def pack_cmsgs(ancillary: Iterable[tuple[int, int, bytes]], control_size: int) -> tuple[bytes, int]:
    """Control messages as a program's msg_control gets them, and MSG_CTRUNC when they did not fit.

    put_cmsg (net/core/scm.c): a message whose header does not fit ends the list with
    MSG_CTRUNC; one whose data does not fit is cut short, with MSG_CTRUNC."""
    out = bytearray()
    flags = 0
    for level, kind, data in ancillary:
        space = control_size - len(out)
        if space < _CMSGHDR.size:
            flags |= MSG_CTRUNC
            break
        length = _CMSGHDR.size + len(data)
        if length > space:
            flags |= MSG_CTRUNC
            length = space
        out += _CMSGHDR.pack(length, level, kind) + data[:length - _CMSGHDR.size]
        out += bytes(min(_cmsg_align(length), space) - length)  # msg_controllen advances by CMSG_SPACE
        if flags & MSG_CTRUNC:
            break
    return bytes(out), flags


def unpack_cmsgs(control: bytes) -> list[tuple[int, int, bytes]]:
    """A program's msg_control as (level, type, data) triples; EINVAL for a malformed header (__scm_send)."""
    ancillary = []
    offset = 0
    while len(control) - offset >= _CMSGHDR.size:
        length, level, kind = _CMSGHDR.unpack_from(control, offset)
        if length < _CMSGHDR.size or length > len(control) - offset:
            raise _error(errno.EINVAL)
        ancillary.append((level, kind, bytes(control[offset + _CMSGHDR.size:offset + length])))
        offset += _cmsg_align(length)
    return ancillary


# -------------------------------------------------------------------------------- messages

@dataclass(slots=True)
class Message:
    """What recvmsg returns: `length` is the datagram's size with MSG_TRUNC in the flags, else len(data)."""

    data: bytes
    address: tuple | None
    flags: int
    ancillary: list[tuple[int, int, bytes]]
    length: int


@dataclass(slots=True)
class _Queued:
    """One datagram in a receive queue, with what ip_cmsg_recv and sock_recv_timestamp need."""

    data: bytes
    source: int
    port: int
    ttl: int
    tos: int
    stamp: float
    truesize: int
    dst: int = 0
    dev: str = ""


@dataclass(slots=True)
class QueuedError:
    """An skb on sk_error_queue: sock_extended_err, the offender, the original destination, the payload."""

    ee_errno: int
    ee_origin: int
    ee_type: int
    ee_code: int
    ee_info: int
    offender: int
    address: int
    port: int
    payload: bytes
    stamp: float
    ttl: int = 0  # of the ICMP datagram, for IP_RECVTTL
    tos: int = 0
    truesize: int = 0
