"""TCP options (nodes/tcp/options.py): Linux's SYN bytes, the negotiation matrix, SACK room, PAWS at the wrap.

Bytes are checked three ways: against a Linux SYN written out by hand, through
nodes/wire/tcp.py's parser, and through scapy as an independent oracle.
"""
from __future__ import annotations

from dataclasses import replace

import pytest
from hypothesis import given
from hypothesis import strategies as st
from scapy.all import TCP, raw

from nodes.wire.tcp import (
    ACK,
    NOP,
    SACK_PERMITTED,
    SYN,
    MssOption,
    SackOption,
    TcpHeader,
    TimestampOption,
    WindowScaleOption,
    encode_options,
    parse_options,
)
from nodes.tcp.options import (
    TCP_MSS_DEFAULT,
    TCP_PAWS_24DAYS,
    Negotiated,
    OptionSettings,
    PeerSyn,
    SynOffer,
    TimestampState,
    advertised_mss,
    established_options,
    negotiate,
    offer_syn,
    offer_syn_ack,
    parse_syn,
    sack_block_capacity,
    select_initial_window,
    syn_ack_echo_ok,
    timestamp_offset,
)

u32 = st.integers(0, 2**32 - 1)
LINUX_SPACE = 65536  # tcp_full_space for Linux's default SO_RCVBUF of 131072
ALL_OFF = OptionSettings(timestamps=False, window_scaling=False, sack=False)

# What Linux 6.x puts in a SYN on a 1500-byte route: MSS 1460, SACK-permitted
# packed with the timestamp, NOP + window scale 7 (20 bytes, 5 words).
LINUX_SYN_OPTIONS = bytes.fromhex("020405b4" "0402080a" "01020304" "00000000" "01030307")


def test_syn_offer_is_linux_bytes_and_window():
    offer = offer_syn(1500, LINUX_SPACE)
    assert offer == SynOffer(
        mss=1460, window_scale=7, timestamps=True, sack_permitted=True, window=64240, window_clamp=65535 << 7
    )
    assert encode_options(offer.options(tsval=0x01020304)) == LINUX_SYN_OPTIONS


def test_syn_offer_without_timestamps_sends_sack_permitted_after_two_nops():
    offer = offer_syn(1500, LINUX_SPACE, OptionSettings(timestamps=False))
    assert encode_options(offer.options()) == bytes.fromhex("020405b4" "01010402" "01030307")


def test_syn_offer_without_sack_pads_timestamp_with_two_nops():
    offer = offer_syn(1500, LINUX_SPACE, OptionSettings(sack=False))
    assert encode_options(offer.options(5, 0)) == bytes.fromhex("020405b4" "0101080a" "00000005" "00000000" "01030307")


def test_syn_offer_with_everything_off_is_mss_alone():
    offer = offer_syn(9000, LINUX_SPACE, ALL_OFF)
    assert offer.options() == (MssOption(8960),)
    assert offer.window_scale is None and offer.window_clamp == 65535


@pytest.mark.parametrize("settings", [OptionSettings(t, w, s) for t in (0, 1) for w in (0, 1) for s in (0, 1)])
def test_every_syn_offer_round_trips_through_wire_parser_and_scapy(settings):
    offer = offer_syn(1500, LINUX_SPACE, settings)
    options = offer.options(tsval=0xFFFFFFFF, tsecr=0)
    header = TcpHeader(1, 2, 0, 0, SYN, offer.window, options=options)
    segment = header.build(b"", 0x0A000001, 0x0A000002)
    assert len(segment) - 20 <= 20 and len(segment) % 4 == 0
    assert TcpHeader.parse(segment).options == options
    assert parse_syn(options, settings) == PeerSyn(
        1460, 7 if settings.window_scaling else None, bool(settings.sack),
        0xFFFFFFFF if settings.timestamps else None, 0 if settings.timestamps else None,
    )
    scapy_options = [item for item in TCP(segment).options if item[0] not in ("NOP", "EOL")]
    expected = [("MSS", 1460)]
    if settings.sack:
        expected.append(("SAckOK", b""))
    if settings.timestamps:
        expected.append(("Timestamp", (0xFFFFFFFF, 0)))
    if settings.window_scaling:
        expected.append(("WScale", 7))
    assert sorted(scapy_options) == sorted(expected)


def test_scapy_built_linux_syn_parses_into_peer_syn():
    segment = raw(TCP(flags="S", options=[
        ("MSS", 1460), ("SAckOK", b""), ("Timestamp", (123, 0)), ("NOP", None), ("WScale", 7),
    ]))
    peer = parse_syn(TcpHeader.parse(segment).options)
    assert peer == PeerSyn(mss=1460, window_scale=7, sack_permitted=True, tsval=123, tsecr=0)


class TestAdvertisedMssAndWindow:
    def test_mss_is_route_mtu_minus_40_with_linux_floor_and_user_clamp(self):
        assert advertised_mss(1500) == 1460
        assert advertised_mss(9000) == 8960
        assert advertised_mss(68) == 256  # ip_rt_min_advmss
        assert advertised_mss(65535 + 100) == 65495
        assert advertised_mss(1500, user_mss=1000) == 1000
        assert advertised_mss(1500, user_mss=2000) == 1460

    def test_linux_windows_on_syn_and_syn_ack(self):
        assert select_initial_window(LINUX_SPACE, 1460).receive_window == 64240  # 44 x 1460
        assert select_initial_window(LINUX_SPACE, 1448).receive_window == 65160  # 45 x 1448

    @pytest.mark.parametrize(
        ("clamp", "wscale"), [(0, 7), (65535, 0), (65536, 1), (131071, 1), (131072, 2), (2**30, 7)]
    )
    def test_window_scale_follows_the_largest_buffer_capped_by_the_clamp(self, clamp, wscale):
        window = select_initial_window(LINUX_SPACE, 1460, window_clamp=clamp)
        assert window.receive_wscale == wscale
        assert window.window_clamp == min(65535 << wscale, clamp or 65535 << 14)

    def test_window_scale_never_exceeds_14(self):
        window = select_initial_window(2**31, 1460, tcp_rmem_max=2**31)
        assert window.receive_wscale == 14
        assert window.receive_window == 65535  # rounded to the MSS before the 16-bit cap, as Linux

    def test_no_scaling_no_shift_and_the_signed_window_workaround(self):
        assert select_initial_window(10**6, 1000, window_scaling=False).receive_wscale == 0
        assert select_initial_window(10**6, 1000, workaround_signed_windows=True).receive_window == 32767
        assert select_initial_window(10**6, 1000, init_rcv_wnd=10).receive_window == 10000

    def test_small_space_is_not_rounded_below_the_mss(self):
        assert select_initial_window(1000, 1460).receive_window == 1000

    @given(st.integers(0, 2**31), st.integers(1, 65535), st.integers(0, 2**31))
    def test_window_fits_16_bits_and_scale_fits_the_clamp(self, space, mss, clamp):
        window = select_initial_window(space, mss, window_clamp=clamp)
        assert 0 <= window.receive_window <= 65535
        assert 0 <= window.receive_wscale <= 14
        assert window.window_clamp <= 65535 << window.receive_wscale

    def test_mss_below_one_is_a_callers_mistake(self):
        with pytest.raises(ValueError):
            select_initial_window(LINUX_SPACE, 0)


class TestNegotiation:
    def client_and_server(self, client_settings=OptionSettings(), server_settings=OptionSettings()):
        syn = offer_syn(1500, LINUX_SPACE, client_settings)
        peer_syn = parse_syn(syn.options(tsval=100), server_settings)
        syn_ack = offer_syn_ack(peer_syn, 1500, LINUX_SPACE, server_settings)
        server = negotiate(syn_ack, peer_syn)
        client = negotiate(syn, parse_syn(syn_ack.options(tsval=900, tsecr=100), client_settings))
        return syn_ack, client, server

    def test_peer_offers_all(self):
        syn_ack, client, server = self.client_and_server()
        assert encode_options(syn_ack.options(900, 100)) == bytes.fromhex(
            "020405b4" "0402080a" "00000384" "00000064" "01030307"
        )
        assert syn_ack.window == 65160
        expected = Negotiated(1460, 1460, True, 7, 7, True, True, 65535 << 7)
        assert client == server == expected
        assert (client.send_mss, client.receive_mss) == (1448, 1448)
        assert client.ss_options() == "ts sack wscale:7,7"

    def test_peer_offers_nothing(self):
        syn = offer_syn(1500, LINUX_SPACE)
        syn_ack = offer_syn_ack(PeerSyn(), 1500, LINUX_SPACE)
        assert syn_ack.options() == (MssOption(1460),)
        assert syn_ack.window == 64240  # no timestamps: computed on the full MSS
        agreed = negotiate(syn, PeerSyn())
        assert agreed == Negotiated(TCP_MSS_DEFAULT, 1460, False, 0, 0, False, False, 65535)
        assert agreed.send_mss == 536 and agreed.receive_mss == 1460
        assert agreed.ss_options() == ""

    @pytest.mark.parametrize("client", [OptionSettings(t, w, s) for t in (0, 1) for w in (0, 1) for s in (0, 1)])
    @pytest.mark.parametrize("server", [OptionSettings(t, w, s) for t in (0, 1) for w in (0, 1) for s in (0, 1)])
    def test_matrix_each_option_on_only_when_both_ends_have_it(self, client, server):
        syn_ack, client_view, server_view = self.client_and_server(client, server)
        assert client_view == server_view
        assert client_view.timestamps == bool(client.timestamps and server.timestamps)
        assert client_view.sack == bool(client.sack and server.sack)
        assert client_view.window_scaling == bool(client.window_scaling and server.window_scaling)
        assert syn_ack.timestamps == client_view.timestamps and syn_ack.sack_permitted == client_view.sack
        assert (syn_ack.window_scale is not None) == client_view.window_scaling
        if not client_view.window_scaling:
            assert (client_view.snd_wscale, client_view.rcv_wscale, client_view.window_clamp) == (0, 0, 65535)
        assert client_view.send_mss == 1460 - (12 if client_view.timestamps else 0)

    def test_window_scale_only_from_peer_is_ignored_both_ways(self):
        offer = offer_syn(1500, LINUX_SPACE, OptionSettings(window_scaling=False))
        agreed = negotiate(offer, PeerSyn(mss=1460, window_scale=9))
        assert (agreed.window_scaling, agreed.snd_wscale, agreed.rcv_wscale) == (False, 0, 0)

    def test_peer_window_scale_over_14_is_used_as_14(self):
        peer = parse_syn((MssOption(1460), NOP, WindowScaleOption(15)))
        assert peer.window_scale == 14
        agreed = negotiate(offer_syn(1500, LINUX_SPACE), PeerSyn(1460, window_scale=255))
        assert agreed.snd_wscale == 14 and agreed.rcv_wscale == 7
        assert offer_syn_ack(peer, 1500, LINUX_SPACE).window_scale == 7  # ours, not an echo

    def test_mss_536_when_peer_sends_none_or_zero(self):
        assert parse_syn((MssOption(0),)).mss is None
        agreed = negotiate(offer_syn(1500, LINUX_SPACE), parse_syn((MssOption(0),)))
        assert agreed.mss_clamp == 536 and agreed.send_mss == 536

    def test_smaller_peer_mss_and_user_mss_bound_what_we_send(self):
        offer = offer_syn(1500, LINUX_SPACE)
        assert negotiate(offer, PeerSyn(mss=1200)).send_mss == 1200
        assert negotiate(offer, PeerSyn(mss=9000)).send_mss == 1460
        assert negotiate(offer, PeerSyn(mss=1460), user_mss=1000).send_mss == 1000
        tiny = negotiate(offer, PeerSyn(mss=1, tsval=1, tsecr=0))
        assert tiny.send_mss == 48 - 12  # tcp_min_snd_mss, then the timestamp option

    def test_path_mtu_lowers_the_send_mss(self):
        agreed = negotiate(offer_syn(1500, LINUX_SPACE), PeerSyn(1460, 7, True, 1, 0))
        assert agreed.send_mss_for_path_mtu(1400) == 1348
        assert agreed.send_mss_for_path_mtu(9000) == 1448  # never above the peer's MSS

    def test_later_duplicate_option_wins_and_disabled_options_are_ignored(self):
        options = (MssOption(1000), MssOption(1200), TimestampOption(1, 2), SACK_PERMITTED, NOP, WindowScaleOption(3))
        assert parse_syn(options) == PeerSyn(1200, 3, True, 1, 2)
        assert parse_syn(options, ALL_OFF) == PeerSyn(mss=1200)


class TestEstablishedOptions:
    agreed = Negotiated(1460, 1460, True, 7, 7, timestamps=True, sack=True, window_clamp=65535 << 7)
    blocks = ((1000, 2000), (3000, 4000), (5000, 6000), (7000, 8000))

    def test_capacity_is_3_blocks_with_timestamps_and_4_without(self):
        assert (sack_block_capacity(True), sack_block_capacity(False)) == (3, 4)

    def test_three_blocks_beside_timestamps_fill_40_bytes(self):
        options = established_options(self.agreed, 7, 9, self.blocks)
        raw_options = encode_options(options)
        assert len(raw_options) == 40
        assert raw_options[:12] == bytes.fromhex("0101080a" "00000007" "00000009")
        assert raw_options[12:16] == bytes.fromhex("0101051a")  # NOP NOP SACK length 26
        assert parse_options(raw_options) == options
        assert options[-1] == SackOption(self.blocks[:3])
        assert self.agreed.payload_limit(len(raw_options)) == 1420

    def test_four_blocks_without_timestamps_fit_and_a_fifth_would_not(self):
        five = self.blocks + ((9000, 9500),)
        options = established_options(replace(self.agreed, timestamps=False), sack_blocks=five)
        raw_options = encode_options(options)
        assert len(raw_options) == 36 and raw_options[:4] == bytes.fromhex("01010522")  # 4 + 5 x 8 = 44 > 40
        assert options == (NOP, NOP, SackOption(self.blocks))

    def test_timestamps_alone_are_linux_aligned_12_bytes(self):
        options = established_options(self.agreed, 2**32 + 5, 6)
        assert options == (NOP, NOP, TimestampOption(5, 6))
        assert len(encode_options(options)) == 12 and self.agreed.payload_limit(12) == 1448

    def test_nothing_without_agreement(self):
        off = replace(self.agreed, timestamps=False, sack=False)
        assert established_options(off, 1, 2, self.blocks) == ()

    @given(st.booleans(), st.lists(st.tuples(u32, u32), max_size=6), u32, u32)
    def test_any_block_list_fits_and_scapy_reads_the_same(self, timestamps, blocks, tsval, tsecr):
        agreed = replace(self.agreed, timestamps=timestamps)
        options = established_options(agreed, tsval, tsecr, blocks)
        segment = TcpHeader(1, 2, 3, 4, ACK, 5, options=options).build(b"", 1, 2)
        assert len(segment) <= 60
        assert TcpHeader.parse(segment).options == options
        scapy_options = dict(item for item in TCP(segment).options if item[0] not in ("NOP", "EOL"))
        if timestamps:
            assert scapy_options.pop("Timestamp") == (tsval, tsecr)
        if blocks:
            kept = blocks[: sack_block_capacity(timestamps)]
            assert scapy_options.pop("SAck") == tuple(edge for block in kept for edge in block)
        assert scapy_options == {}


class TestTimestampClockAndRtt:
    def test_tsval_is_milliseconds_plus_offset_modulo_2_32(self):
        state = TimestampState(offset=2**32 - 1000)
        assert state.tsval(0.0) == 2**32 - 1000
        assert state.tsval(1.005) == 5
        assert state.tsval(2.0) == 1000

    def test_rtt_sample_from_echo_across_the_wrap(self):
        state = TimestampState(offset=2**32 - 10)
        sent = state.tsval(0.0)
        assert state.rtt_sample(sent, 0.025) == pytest.approx(0.025)
        assert state.rtt_sample(sent, 0.0) == pytest.approx(0.001)  # at least one tick

    def test_no_rtt_sample_from_zero_or_absurd_echo(self):
        state = TimestampState()
        assert state.rtt_sample(0, 5.0) is None and state.rtt_sample(None, 5.0) is None
        assert state.rtt_sample(state.tsval(1.0), 1.0 + 2147.483) is None
        assert state.rtt_sample(state.tsval(1.0), 1.0 + 2147.482) == pytest.approx(2147.482)

    def test_offset_is_keyed_per_address_pair(self):
        one = timestamp_offset(b"k" * 16, 0x0A000001, 0x0A000002)
        assert one == timestamp_offset(b"k" * 16, 0x0A000001, 0x0A000002)
        assert one != timestamp_offset(b"k" * 16, 0x0A000001, 0x0A000003)
        assert one != timestamp_offset(b"j" * 16, 0x0A000001, 0x0A000002)
        assert 0 <= one < 2**32

    def test_syn_ack_echo_must_fall_between_first_syn_and_now(self):
        assert syn_ack_echo_ok(None, 100, 200) and syn_ack_echo_ok(0, 100, 200)
        assert syn_ack_echo_ok(150, 100, 200) and syn_ack_echo_ok(100, 100, 200)
        assert not syn_ack_echo_ok(99, 100, 200) and not syn_ack_echo_ok(201, 100, 200)
        assert syn_ack_echo_ok(3, 2**32 - 5, 10)  # across the wrap


class TestPaws:
    def state(self, ts_recent, stamp=100.0):
        return TimestampState(ts_recent=ts_recent, ts_recent_stamp=stamp)

    def test_accepts_equal_and_newer_rejects_older(self):
        state = self.state(5000)
        assert not state.paws_reject(5000, 101.0) and not state.paws_reject(5001, 101.0)
        assert state.paws_reject(4999, 101.0)

    def test_accept_and_reject_at_the_2_32_wrap(self):
        state = self.state(2**32 - 5)
        assert not state.paws_reject(3, 101.0)  # 8 ticks newer, past the wrap
        assert state.paws_reject(2**32 - 10, 101.0)
        assert not state.paws_reject(2**31 - 6, 101.0)  # the far edge of "newer": 2**31 - 1 ahead
        assert state.paws_reject(2**31 - 4, 101.0)  # one more is 2**31 behind: older

    @given(u32, st.integers(0, 2**31 - 1))
    def test_property_newer_by_less_than_2_31_passes_older_fails(self, recent, distance):
        state = self.state(recent)
        assert not state.paws_reject((recent + distance) & 0xFFFFFFFF, 101.0)
        if distance and recent:
            assert state.paws_reject((recent - distance) & 0xFFFFFFFF, 101.0)

    def test_24_day_rule_makes_stale_ts_recent_invalid(self):
        state = self.state(5000, stamp=10.0)
        assert state.paws_reject(1, 10.0 + TCP_PAWS_24DAYS - 1)
        assert not state.paws_reject(1, 10.0 + TCP_PAWS_24DAYS)

    def test_zero_or_missing_ts_recent_accepts_anything(self):
        assert not self.state(0).paws_reject(2**32 - 1, 101.0)
        assert not TimestampState().paws_reject(0, 0.0)

    def test_rst_passes_once_ts_recent_is_a_minute_old(self):
        state = self.state(5000, stamp=100.0)
        assert state.paws_reject(10, 159.0, rst=True)
        assert not state.paws_reject(10, 160.0, rst=True)
        assert state.paws_reject(10, 160.0, rst=False)

    def test_discard_tolerates_one_tick_and_disordered_acks(self):
        state = self.state(5000)
        assert not state.paws_discard(4999, 101.0)
        assert state.paws_discard(4998, 101.0)
        assert not state.paws_discard(4998, 101.0, disordered_ack=True)

    def test_update_only_from_segments_at_or_before_last_ack_sent(self):
        state = self.state(5000)
        assert not state.update(6000, seq=2**32 - 99, last_ack_sent=2**32 - 100, now=102.0)
        assert state.ts_recent == 5000
        assert state.update(6000, seq=3, last_ack_sent=10, now=102.0)  # across the wrap: 2**32-100 < 3 < 10
        assert (state.ts_recent, state.ts_recent_stamp) == (6000, 102.0)
        assert not state.update(5999, seq=10, last_ack_sent=10, now=103.0)  # older: PAWS fails
        assert state.update(6000, seq=10, last_ack_sent=10, now=103.0) and state.ts_recent_stamp == 103.0

    def test_handshake_stores_peer_tsval_and_echoes_it(self):
        state = TimestampState()
        peer = parse_syn(TcpHeader.parse(raw(TCP(flags="S", options=[("Timestamp", (777, 0))]))).options)
        state.store(peer.tsval, 1.0)
        agreed = replace(TestEstablishedOptions.agreed, sack=False)
        options = established_options(agreed, state.tsval(1.5), state.ts_recent)
        assert options[-1] == TimestampOption(1500, 777)
