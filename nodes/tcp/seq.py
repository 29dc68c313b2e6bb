"""TCP sequence numbers modulo 2**32, and initial sequence numbers (RFC 9293 3.4, RFC 6528).

Before changing this file, read RFC 9293 section 3.4 ("Sequence Numbers", with the table of
acceptable segments), RFC 6528 (ISN generation), and Linux's before()/after()/between() in
include/net/tcp.h, tcp_sequence() in net/ipv4/tcp_input.c and secure_tcp_seq() in
net/core/secure_seq.c.

Every comparison of two sequence numbers in nodes/tcp/ goes through this module: a plain `<`
on sequence numbers is wrong as soon as a connection crosses 2**32 - 1 -> 0.

Comparisons are Linux's: `seq_lt(a, b)` is `(s32)(a - b) < 0`. Two numbers exactly 2**31 apart
are each "before" the other (the distance is ambiguous, and Linux does not break the tie); every
window TCP uses is below 2**30 (RFC 7323 2.3), so that half-way point never matters in practice.

Not modelled: IPv6 addresses in the ISN hash (the tuple is IPv4 only, like the stack).
"""
from __future__ import annotations

import hashlib
import secrets
import struct

SEQ_MODULUS = 1 << 32
SEQ_MASK = SEQ_MODULUS - 1
_HALF = 1 << 31

# RFC 6528 section 3: M is "a timer that is incremented every 4 microseconds".
ISN_CLOCK_TICK = 4e-6

_ISN_TUPLE = struct.Struct("!IIHH")
_TS_PAIR = struct.Struct("!II")


def seq_add(seq: int, count: int) -> int:
    """`seq + count` modulo 2**32 (`count` may be negative)."""
    return (seq + count) & SEQ_MASK


def seq_sub(seq: int, count: int) -> int:
    """`seq - count` modulo 2**32."""
    return (seq - count) & SEQ_MASK


def seq_diff(a: int, b: int) -> int:
    """The signed distance `a - b` in [-2**31, 2**31): how far `a` lies after `b`.

    Linux writes this as `(s32)(a - b)`; e.g. bytes in flight are `seq_diff(snd_nxt, snd_una)`.
    """
    return ((a - b + _HALF) & SEQ_MASK) - _HALF


def seq_lt(a: int, b: int) -> bool:
    """`a` comes before `b` (Linux's before(a, b))."""
    return ((a - b) & SEQ_MASK) >= _HALF


def seq_le(a: int, b: int) -> bool:
    """`a` is `b` or comes before it (Linux's !after(a, b))."""
    return ((b - a) & SEQ_MASK) < _HALF


def seq_gt(a: int, b: int) -> bool:
    """`a` comes after `b` (Linux's after(a, b), which is before(b, a))."""
    return ((b - a) & SEQ_MASK) >= _HALF


def seq_ge(a: int, b: int) -> bool:
    """`a` is `b` or comes after it (Linux's !before(a, b))."""
    return ((a - b) & SEQ_MASK) < _HALF


# Linux's spellings, for code ported line by line from net/ipv4/tcp_*.c.
before = seq_lt
after = seq_gt


def between(seq: int, low: int, high: int) -> bool:
    """`low <= seq <= high` on the circle, counting from `low` (Linux's between(seq1, seq2, seq3)).

    Unlike two comparisons, this holds for a range of any length up to 2**32 - 1, because both
    distances are measured from `low` the same way round: `high - low >= seq - low` unsigned.
    """
    return ((high - low) & SEQ_MASK) >= ((seq - low) & SEQ_MASK)


def seq_in_window(seq: int, left: int, size: int) -> bool:
    """`left <= seq < left + size`: whether `seq` falls in a window of `size` numbers.

    The half-open test RFC 9293 3.4 writes as `RCV.NXT =< SEG.SEQ < RCV.NXT+RCV.WND`; an empty
    window (`size == 0`) holds nothing.
    """
    return ((seq - left) & SEQ_MASK) < size


def segment_acceptable(seg_seq: int, seg_len: int, rcv_nxt: int, rcv_wnd: int) -> bool:
    """RFC 9293 3.4's acceptability test (also 3.10.7.4, "first check sequence number").

    `seg_len` counts the octets the segment occupies in sequence space: data, plus one for SYN
    and one for FIN. The four cases of the RFC's table:

        len 0, window 0:  SEG.SEQ = RCV.NXT
        len 0, window >0: RCV.NXT =< SEG.SEQ < RCV.NXT+RCV.WND
        len >0, window 0: not acceptable
        len >0, window >0: the first or the last octet lies in the window

    The caller still accepts valid ACKs, URGs and RSTs of an unacceptable segment when the window
    is zero, as 3.10.7.4 says; this function only answers the table.
    """
    if seg_len < 0 or rcv_wnd < 0:
        raise ValueError("segment length and window are never negative")
    if seg_len == 0:
        if rcv_wnd == 0:
            return seg_seq & SEQ_MASK == rcv_nxt & SEQ_MASK
        return seq_in_window(seg_seq, rcv_nxt, rcv_wnd)
    if rcv_wnd == 0:
        return False
    return seq_in_window(seg_seq, rcv_nxt, rcv_wnd) or seq_in_window(
        seg_seq + seg_len - 1, rcv_nxt, rcv_wnd
    )


def linux_sequence_acceptable(
    seq: int, end_seq: int, rcv_wup: int, rcv_nxt: int, receive_window: int
) -> bool:
    """Linux's looser test, tcp_sequence() in net/ipv4/tcp_input.c.

    Linux drops a segment only if it ends before `rcv_wup` (the RCV.NXT at which the window was
    last advertised: RFC 9293's test is against RCV.NXT, so a retransmission that ends between
    the two is still taken for its ACK) or starts after `rcv_nxt + rcv_wnd`; a zero-length
    segment at the right edge of the window is therefore acceptable here and not under the RFC.
    `end_seq` is `seq + len`, SYN and FIN counted (TCP_SKB_CB(skb)->end_seq);
    `receive_window` is what tcp_receive_window() returns, the window still open from `rcv_nxt`
    (`rcv_wup + rcv_wnd - rcv_nxt`, never below zero).
    """
    if seq_lt(end_seq, rcv_wup):
        return False
    return not seq_gt(seq, seq_add(rcv_nxt, receive_window))


def ack_acceptable(seg_ack: int, snd_una: int, snd_nxt: int) -> bool:
    """`SND.UNA < SEG.ACK =< SND.NXT`: the ACK acknowledges something new (RFC 9293 3.4)."""
    return seq_lt(snd_una, seg_ack) and seq_le(seg_ack, snd_nxt)


class IsnGenerator:
    """Initial sequence numbers per RFC 6528: `ISN = M + F(4-tuple, secretkey)`.

    F is a keyed hash (BLAKE2s keyed with `secret`, 32 bits of it) of the connection's local and
    remote address and port; M is a clock ticking every 4 microseconds, here computed from `now`
    (seconds, from the caller's clock). Connections to one peer thus get increasing ISNs across
    incarnations, while another 4-tuple's ISNs are unpredictable without the secret.

    Linux's secure_tcp_seq() is the same construction with SipHash and a clock of 64 ns ticks
    (seq_scale: ktime_get_real_ns() >> 6); this follows the RFC's 4 microseconds, which wraps
    every 4.77 hours instead of 4.6 minutes.

    One generator belongs to one stack (the secret is per host, like Linux's net_secret), so
    that two emulated hosts don't share a key.
    """

    __slots__ = ("_secret",)

    def __init__(self, secret: bytes) -> None:
        if not 1 <= len(secret) <= 32:
            raise ValueError("the secret is 1 to 32 bytes (BLAKE2s key)")
        self._secret = bytes(secret)

    @classmethod
    def with_random_secret(cls) -> "IsnGenerator":
        """A generator with 16 bytes from the system's CSPRNG, as Linux fills net_secret once."""
        return cls(secrets.token_bytes(16))

    def _hash32(self, data: bytes, person: bytes) -> int:
        digest = hashlib.blake2s(data, digest_size=4, key=self._secret, person=person).digest()
        return int.from_bytes(digest, "big")

    def isn(self, saddr: int, sport: int, daddr: int, dport: int, now: float) -> int:
        """The ISN for a connection from `saddr:sport` (ours) to `daddr:dport` at time `now`.

        Addresses are IPv4 as integers (nodes.wire.addresses.IPv4Address is an int).
        """
        try:
            tuple_bytes = _ISN_TUPLE.pack(saddr, daddr, sport, dport)
        except struct.error:
            raise ValueError("addresses are 32-bit and ports 16-bit unsigned integers") from None
        clock = int(now / ISN_CLOCK_TICK)
        return (clock + self._hash32(tuple_bytes, b"isn")) & SEQ_MASK

    def timestamp_offset(self, saddr: int, daddr: int) -> int:
        """A per-address-pair offset for TCP timestamps (RFC 7323 5.4; Linux's secure_tcp_ts_off).

        Hides the host's uptime from TSval, and keeps TSval monotonic between the same two
        hosts, which PAWS on the peer needs across connections.
        """
        try:
            pair = _TS_PAIR.pack(saddr, daddr)
        except struct.error:
            raise ValueError("addresses are 32-bit unsigned integers") from None
        return self._hash32(pair, b"tsoff")
