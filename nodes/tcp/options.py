"""TCP options: what a SYN offers, what both ends agreed, the options on data segments, PAWS.

Before changing this file, read RFC 9293 section 3.7.1 (MSS, 536 by default),
RFC 6691 (the MSS counts no options), RFC 7323 sections 2 (window scale),
3-4 (timestamps, TS.Recent, RTTM) and 5 (PAWS), RFC 2018 sections 2-3 (SACK),
and Linux's net/ipv4/tcp_output.c (tcp_syn_options, tcp_synack_options,
tcp_established_options, tcp_options_write, tcp_select_initial_window) and
net/ipv4/tcp_input.c (tcp_parse_options, tcp_paws_check, tcp_paws_reject,
tcp_replace_ts_recent, tcp_ack_update_rtt).

The bytes are `nodes/wire/tcp.py`'s business; this module only chooses which
option values go in and what the peer's values mean:

    offer_syn(...)          -> SynOffer     the options of our SYN, in Linux's order
    parse_syn(options)      -> PeerSyn      what the peer's SYN or SYN-ACK carried
    offer_syn_ack(peer,...) -> SynOffer     our SYN-ACK: only what both offered
    negotiate(offer, peer)  -> Negotiated   the result both ends now use
    established_options(...)                timestamps and SACK blocks, within 40 bytes
    TimestampState                          the TSval clock, TS.Recent, PAWS, RTT samples

Linux's order on a SYN (tcp_options_write) is MSS, then SACK-permitted packed
with the timestamp into three words, then NOP + window scale:
``02 04 05 b4 | 04 02 08 0a <TSval> <TSecr> | 01 03 03 07`` (20 bytes).
Without timestamps SACK-permitted travels as NOP NOP 04 02 after the MSS.
Data segments carry NOP NOP + timestamp (12 bytes) and NOP NOP + SACK
(4 + 8n bytes), so 3 SACK blocks fit beside timestamps and 4 without.

Time is an argument (`now`, seconds). Sequence numbers and timestamps compare
modulo 2**32 (a signed 32-bit difference, as Linux's before()/after()).

Not modelled: TCP Fast Open, MD5/AO signatures, usec timestamps (Linux's
TCP_TS_HZ is 1000; so is ours), tcp_disordered_ack's exemption from PAWS
(the caller may pass `disordered_ack`), dropping segments without a timestamp
once timestamps are on (RFC 7323 3.2 says SHOULD drop; Linux accepts them).
"""
from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass

from nodes.wire.tcp import (
    MAX_OPTIONS_LENGTH,
    NOP,
    SACK_PERMITTED,
    MssOption,
    SackOption,
    SackPermittedOption,
    TcpOption,
    TimestampOption,
    WindowScaleOption,
)

TCP_MSS_DEFAULT = 536  # RFC 9293 3.7.1: the send MSS when the SYN carried none
TCP_MIN_SND_MSS = 48  # net.ipv4.tcp_min_snd_mss: the floor under a peer's tiny MSS
IP_RT_MIN_ADVMSS = 256  # ip_rt_min_advmss: the floor of the MSS we advertise
TCP_MAX_WSCALE = 14  # RFC 7323 2.3: a larger shift is used as 14
IPV4_TCP_HEADERS = 40  # IPv4 + TCP headers without options: MSS = MTU - 40
TCPOLEN_TSTAMP_ALIGNED = 12  # NOP NOP kind len TSval TSecr
TCPOLEN_SACK_BASE_ALIGNED = 4  # NOP NOP kind len
TCPOLEN_SACK_PERBLOCK = 8

TS_HZ = 1000  # TSval ticks per second: Linux's TCP_TS_HZ, milliseconds
TCP_PAWS_24DAYS = 24 * 24 * 60 * 60  # RFC 7323 5.5: an older TS.Recent is invalid
TCP_PAWS_MSL = 60  # Linux: a RST passes PAWS once TS.Recent is a minute old
TCP_PAWS_WINDOW = 1  # Linux: tcp_paws_discard tolerates a TSval one tick old
_MAX_RTT_TICKS = (2**31 - 1) // TS_HZ  # tcp_ack_update_rtt: larger deltas give no sample

# Linux's defaults (net.ipv4.tcp_rmem[2], net.core.rmem_max): they, not the
# socket's buffer, pick the window scale, so the window can grow later.
TCP_RMEM_MAX = 6291456
RMEM_MAX = 212992
MAX_TCP_WINDOW = 32767  # the initial window under tcp_workaround_signed_windows


def _signed32(value: int) -> int:
    """`value` modulo 2**32 read as a signed 32-bit int: the sign says before/after."""
    return ((value + 2**31) & 0xFFFFFFFF) - 2**31


@dataclass(frozen=True, slots=True)
class OptionSettings:
    """The knobs net.ipv4.tcp_timestamps, tcp_window_scaling and tcp_sack (all on by default, as on Linux).

    A knob that is off means the option is neither offered nor understood:
    tcp_parse_options ignores a peer's option whose sysctl is off.
    """

    timestamps: bool = True
    window_scaling: bool = True
    sack: bool = True


@dataclass(frozen=True, slots=True)
class InitialWindow:
    """What tcp_select_initial_window chose: the first window, its upper bound, our window scale."""

    receive_window: int
    window_clamp: int
    receive_wscale: int


def advertised_mss(path_mtu: int, user_mss: int = 0) -> int:
    """The MSS our SYN announces: route MTU - 40 (ipv4_default_advmss), at least 256,
    lowered by TCP_MAXSEG (`user_mss`, tcp_mss_clamp). RFC 6691: options are not subtracted."""
    mss = min(max(path_mtu - IPV4_TCP_HEADERS, IP_RT_MIN_ADVMSS), 65535 - IPV4_TCP_HEADERS)
    if user_mss and user_mss < mss:
        mss = user_mss
    return mss


def select_initial_window(
    space: int,
    mss: int,
    *,
    window_clamp: int = 0,
    window_scaling: bool = True,
    init_rcv_wnd: int = 0,
    tcp_rmem_max: int = TCP_RMEM_MAX,
    rmem_max: int = RMEM_MAX,
    workaround_signed_windows: bool = False,
) -> InitialWindow:
    """Linux's tcp_select_initial_window: the SYN's window and the window scale to offer.

    `space` is the receive space a full buffer gives (tcp_full_space: half of
    SO_RCVBUF by default, 65536 for Linux's 131072); `mss` the MSS minus the
    timestamp option when that is on (the passive side subtracts it, an active
    open does not yet know). The space is rounded down to a multiple of the MSS,
    then capped at 65535 (the SYN's window is never scaled, RFC 7323 2.2): hence Linux's 64240
    (44 x 1460) in a SYN and 65160 (45 x 1448) in a SYN-ACK. The scale is chosen
    for the largest buffer the socket may grow to (tcp_rmem[2], 6 MB, gives 7),
    capped by `window_clamp` (set when SO_RCVBUF locks the buffer) and by 14.
    """
    if mss < 1:
        raise ValueError(f"mss must be at least 1, not {mss}")
    space = max(space, 0)
    if window_clamp == 0:
        window_clamp = 65535 << TCP_MAX_WSCALE
    space = min(window_clamp, space)
    if space > mss:
        space -= space % mss
    receive_window = min(space, MAX_TCP_WINDOW if workaround_signed_windows else 65535)
    if init_rcv_wnd:
        receive_window = min(receive_window, init_rcv_wnd * mss)
    wscale = 0
    if window_scaling:
        scale_space = min(max(space, tcp_rmem_max, rmem_max), window_clamp)
        # clamp(ilog2(space) - 15, 0, 14): the smallest shift that fits the space in 16 bits
        wscale = min(max(scale_space.bit_length() - 1 - 15, 0), TCP_MAX_WSCALE) if scale_space else 0
    return InitialWindow(receive_window, min(65535 << wscale, window_clamp), wscale)


@dataclass(frozen=True, slots=True)
class SynOffer:
    """The options our SYN (or SYN-ACK) carries, and the window it announces.

    `window_scale` is None when not offered; `window` is the unscaled window
    field of the SYN; `window_clamp` the largest window we will ever offer.
    """

    mss: int
    window_scale: int | None
    timestamps: bool
    sack_permitted: bool
    window: int
    window_clamp: int

    def options(self, tsval: int = 0, tsecr: int = 0) -> tuple[TcpOption, ...]:
        """The options in Linux's order (tcp_options_write): MSS, SACK-permitted+TS or NOP NOP TS
        or NOP NOP SACK-permitted, then NOP + window scale. `tsecr` is 0 on a SYN, the peer's TSval on a SYN-ACK."""
        options: list[TcpOption] = [MssOption(self.mss)]
        if self.timestamps:
            if self.sack_permitted:
                options.append(SACK_PERMITTED)
            else:
                options += (NOP, NOP)
            options.append(TimestampOption(tsval & 0xFFFFFFFF, tsecr & 0xFFFFFFFF))
        elif self.sack_permitted:
            options += (NOP, NOP, SACK_PERMITTED)
        if self.window_scale is not None:
            options += (NOP, WindowScaleOption(self.window_scale))
        return tuple(options)


def offer_syn(
    path_mtu: int,
    receive_space: int,
    settings: OptionSettings = OptionSettings(),
    *,
    user_mss: int = 0,
    window_clamp: int = 0,
) -> SynOffer:
    """What an active open offers (tcp_connect_init + tcp_syn_options): everything the knobs allow.

    The initial window is computed on the full MSS, as Linux does before it
    knows whether timestamps will be used.
    """
    mss = advertised_mss(path_mtu, user_mss)
    window = select_initial_window(
        receive_space, mss, window_clamp=window_clamp, window_scaling=settings.window_scaling
    )
    return SynOffer(
        mss=mss,
        window_scale=window.receive_wscale if settings.window_scaling else None,
        timestamps=settings.timestamps,
        sack_permitted=settings.sack,
        window=window.receive_window,
        window_clamp=window.window_clamp,
    )


@dataclass(frozen=True, slots=True)
class PeerSyn:
    """What the peer's SYN or SYN-ACK carried, as tcp_parse_options reads it.

    `mss` is None when absent (or zero, which Linux ignores); `window_scale`
    is already capped at 14 (RFC 7323 2.3); `tsval`/`tsecr` are None without
    a timestamp option.
    """

    mss: int | None = None
    window_scale: int | None = None
    sack_permitted: bool = False
    tsval: int | None = None
    tsecr: int | None = None

    @property
    def timestamps(self) -> bool:
        return self.tsval is not None


def parse_syn(
    options: "tuple[TcpOption, ...] | list[TcpOption]", settings: OptionSettings = OptionSettings()
) -> PeerSyn:
    """Read the negotiable options of a SYN or SYN-ACK; a later duplicate wins, as in tcp_parse_options.

    Options whose knob is off are ignored, as Linux ignores them.
    """
    mss = window_scale = tsval = tsecr = None
    sack_permitted = False
    for option in options:
        kind = type(option)
        if kind is MssOption:
            if option.mss:
                mss = option.mss
        elif kind is WindowScaleOption:
            if settings.window_scaling:
                window_scale = min(option.shift, TCP_MAX_WSCALE)
        elif kind is SackPermittedOption:
            if settings.sack:
                sack_permitted = True
        elif kind is TimestampOption:
            if settings.timestamps:
                tsval, tsecr = option.value, option.echo
    return PeerSyn(mss, window_scale, sack_permitted, tsval, tsecr)


def offer_syn_ack(
    peer: PeerSyn,
    path_mtu: int,
    receive_space: int,
    settings: OptionSettings = OptionSettings(),
    *,
    user_mss: int = 0,
    window_clamp: int = 0,
) -> SynOffer:
    """What a passive open answers (tcp_openreq_init_rwin + tcp_synack_options): only what both offered.

    Our MSS is always sent (RFC 9293 3.7.1), whatever the peer sent. The window
    is computed on the MSS less the timestamp option when timestamps are agreed.
    """
    timestamps = settings.timestamps and peer.timestamps
    scaling = settings.window_scaling and peer.window_scale is not None
    mss = advertised_mss(path_mtu, user_mss)
    window = select_initial_window(
        receive_space,
        mss - (TCPOLEN_TSTAMP_ALIGNED if timestamps else 0),
        window_clamp=window_clamp,
        window_scaling=scaling,
    )
    return SynOffer(
        mss=mss,
        window_scale=window.receive_wscale if scaling else None,
        timestamps=timestamps,
        sack_permitted=settings.sack and peer.sack_permitted,
        window=window.receive_window,
        window_clamp=window.window_clamp,
    )


@dataclass(frozen=True, slots=True)
class Negotiated:
    """What both ends agreed at the handshake, fixed for the connection's life.

    `mss_clamp` is the peer's MSS (536 when it sent none, lowered by
    TCP_MAXSEG); `advertised_mss` ours. `snd_wscale` shifts the windows the
    peer sends us, `rcv_wscale` the windows we send; both are 0 unless both
    SYNs carried a window scale (RFC 7323 2.2).
    """

    mss_clamp: int
    advertised_mss: int
    window_scaling: bool
    snd_wscale: int
    rcv_wscale: int
    timestamps: bool
    sack: bool
    window_clamp: int

    @property
    def option_overhead(self) -> int:
        """Option bytes on every data segment (tcp_header_len - 20): 12 with timestamps, else 0."""
        return TCPOLEN_TSTAMP_ALIGNED if self.timestamps else 0

    def send_mss_for_path_mtu(self, path_mtu: int) -> int:
        """Payload bytes per segment for this path MTU (tcp_mtu_to_mss): MTU - 40, at most the
        peer's MSS, at least 48, less the timestamp option (RFC 9293 3.7.1's Eff.snd.MSS)."""
        mss = min(path_mtu - IPV4_TCP_HEADERS, self.mss_clamp)
        return max(mss, TCP_MIN_SND_MSS) - self.option_overhead

    @property
    def send_mss(self) -> int:
        """Payload bytes per segment we send on the route we advertised for (no SACK blocks)."""
        return self.send_mss_for_path_mtu(self.advertised_mss + IPV4_TCP_HEADERS)

    @property
    def receive_mss(self) -> int:
        """The largest payload the peer should send us (Linux's advmss after the handshake)."""
        return self.advertised_mss - self.option_overhead

    def payload_limit(self, options_length: int) -> int:
        """Payload bytes that fit beside `options_length` bytes of options (tcp_current_mss with SACK blocks)."""
        return self.send_mss + self.option_overhead - options_length

    def ss_options(self) -> str:
        """The options as `ss -ti` prints them: "ts sack wscale:7,7" (snd, rcv)."""
        words = []
        if self.timestamps:
            words.append("ts")
        if self.sack:
            words.append("sack")
        if self.window_scaling:
            words.append(f"wscale:{self.snd_wscale},{self.rcv_wscale}")
        return " ".join(words)


def negotiate(offer: SynOffer, peer: PeerSyn, *, user_mss: int = 0) -> Negotiated:
    """The agreement from our SYN (or SYN-ACK) and the peer's: an option is on only if both sent it.

    The same call serves both ends: an active open passes its SYN and the
    peer's SYN-ACK, a passive open its SYN-ACK and the peer's SYN. Without
    window scaling both shifts are 0 and the clamp falls to 65535
    (tcp_rcv_synsent_state_process).
    """
    mss_clamp = peer.mss if peer.mss is not None else TCP_MSS_DEFAULT
    if user_mss and user_mss < mss_clamp:
        mss_clamp = user_mss
    scaling = offer.window_scale is not None and peer.window_scale is not None
    return Negotiated(
        mss_clamp=mss_clamp,
        advertised_mss=offer.mss,
        window_scaling=scaling,
        snd_wscale=min(peer.window_scale, TCP_MAX_WSCALE) if scaling else 0,
        rcv_wscale=offer.window_scale if scaling else 0,
        timestamps=offer.timestamps and peer.timestamps,
        sack=offer.sack_permitted and peer.sack_permitted,
        window_clamp=offer.window_clamp if scaling else min(offer.window_clamp, 65535),
    )


def sack_block_capacity(timestamps: bool) -> int:
    """SACK blocks that fit in 40 option bytes: 4, or 3 beside timestamps (RFC 2018 3)."""
    room = MAX_OPTIONS_LENGTH - (TCPOLEN_TSTAMP_ALIGNED if timestamps else 0)
    return (room - TCPOLEN_SACK_BASE_ALIGNED) // TCPOLEN_SACK_PERBLOCK


def established_options(
    negotiated: Negotiated,
    tsval: int = 0,
    tsecr: int = 0,
    sack_blocks: "tuple[tuple[int, int], ...] | list[tuple[int, int]]" = (),
) -> tuple[TcpOption, ...]:
    """Options of a segment after the handshake (tcp_established_options): NOP NOP timestamp when
    agreed, then NOP NOP SACK with as many of `sack_blocks` as fit, first ones first (the caller
    orders them as RFC 2018 4 asks: the block with the latest segment first, a D-SACK before all).

    Blocks are sent only when SACK was agreed.
    """
    options: tuple[TcpOption, ...] = ()
    if negotiated.timestamps:
        options = (NOP, NOP, TimestampOption(tsval & 0xFFFFFFFF, tsecr & 0xFFFFFFFF))
    if sack_blocks and negotiated.sack:
        blocks = tuple(sack_blocks[: sack_block_capacity(negotiated.timestamps)])
        options += (NOP, NOP, SackOption(blocks))
    return options


def timestamp_offset(secret: bytes, local_ip: int, remote_ip: int) -> int:
    """A per-pair offset added to the TSval clock (RFC 7323 5.4, Linux's secure_tcp_ts_off):
    a keyed hash of the addresses, so TSvals reveal no uptime and differ between peers."""
    digest = hashlib.blake2b(
        local_ip.to_bytes(4, "big") + remote_ip.to_bytes(4, "big"), key=secret[:64], digest_size=4
    ).digest()
    return int.from_bytes(digest, "big")


def syn_ack_echo_ok(tsecr: int | None, first_syn_tsval: int, now_tsval: int) -> bool:
    """Whether a SYN-ACK's TSecr echoes one of our SYNs: 0 or between the first SYN's TSval and now.

    tcp_rcv_synsent_state_process resets otherwise (PAWSActiveRejected).
    """
    if not tsecr:
        return True
    return _signed32(tsecr - first_syn_tsval) >= 0 and _signed32(now_tsval - tsecr) >= 0


@dataclass(slots=True)
class TimestampState:
    """One connection's timestamps: our TSval clock and the peer's TS.Recent (RFC 7323 4-5).

    `offset` shifts our clock (`timestamp_offset`); `ts_recent` is the TSval
    to echo; `ts_recent_stamp` the `now` (seconds) it was stored, None before
    any, which is what the 24-day rule measures.
    """

    offset: int = 0
    ts_recent: int = 0
    ts_recent_stamp: float | None = None

    def tsval(self, now: float) -> int:
        """Our timestamp clock: milliseconds since `now`'s epoch plus the offset, modulo 2**32.

        The tiny epsilon keeps a whole millisecond whole despite binary floats (1.005 s -> 1005).
        """
        return (math.floor(now * TS_HZ + 1e-6) + self.offset) & 0xFFFFFFFF

    def store(self, tsval: int, now: float) -> None:
        """TS.Recent = tsval (tcp_store_ts_recent): on the SYN, the SYN-ACK, and by `update`."""
        self.ts_recent = tsval & 0xFFFFFFFF
        self.ts_recent_stamp = now

    def paws_check(self, tsval: int, now: float, window: int = 0) -> bool:
        """Linux's tcp_paws_check: True if `tsval` may be accepted.

        Accepted when it is not older than TS.Recent by more than `window`
        ticks (modulo 2**32), when TS.Recent is over 24 days old (RFC 7323
        5.5: the peer's clock may have wrapped meanwhile), or when TS.Recent is
        0 (some stacks send 0 on SYNs, then their real clock).
        """
        if _signed32(self.ts_recent - tsval) <= window:
            return True
        if self.ts_recent_stamp is None or now - self.ts_recent_stamp >= TCP_PAWS_24DAYS:
            return True
        return self.ts_recent == 0

    def paws_reject(self, tsval: int, now: float, rst: bool = False) -> bool:
        """Linux's tcp_paws_reject (RFC 7323 5.3 R1): True if the segment must be dropped.

        A RST is let through once TS.Recent is TCP_PAWS_MSL (60 s) old, so a
        peer whose clock went back after a reboot can still reset us.
        """
        if self.paws_check(tsval, now, 0):
            return False
        stamp = self.ts_recent_stamp
        return not (rst and stamp is not None and now - stamp >= TCP_PAWS_MSL)

    def paws_discard(self, tsval: int, now: float, disordered_ack: bool = False) -> bool:
        """Linux's tcp_paws_discard on an established connection: drop (and answer with a duplicate
        ACK, counting PAWSEstabRejected) unless within one tick of TS.Recent or a reordered pure
        duplicate ACK (`disordered_ack`, tcp_disordered_ack, judged by the caller). RSTs skip this."""
        return not self.paws_check(tsval, now, TCP_PAWS_WINDOW) and not disordered_ack

    def update(self, tsval: int, seq: int, last_ack_sent: int, now: float) -> bool:
        """RFC 7323 4.3 / tcp_replace_ts_recent: keep `tsval` as TS.Recent if the segment starts at or
        before the edge we last acknowledged (SEG.SEQ <= Last.ACK.sent, modulo 2**32) and passes
        PAWS. Call it for segments that were accepted. Returns whether TS.Recent changed."""
        if _signed32(seq - last_ack_sent) > 0 or not self.paws_check(tsval, now, 0):
            return False
        self.store(tsval, now)
        return True

    def rtt_sample(self, tsecr: int | None, now: float) -> float | None:
        """An RTT sample in seconds from an ACK's TSecr (tcp_ack_update_rtt): our clock now minus the
        echoed TSval, at least one tick. None when TSecr is 0 or absent, or the delta is absurd
        (over INT_MAX microseconds). RFC 7323 4.1: use it only for ACKs that advance SND.UNA."""
        if not tsecr:
            return None
        delta = (self.tsval(now) - tsecr) & 0xFFFFFFFF
        if delta >= _MAX_RTT_TICKS:
            return None
        return max(delta, 1) / TS_HZ
