"""parse_link_params / format_link_params / LinkParams: every unit, every error message."""
from __future__ import annotations

import dataclasses

import pytest
from hypothesis import given
from hypothesis import strategies as st

from bus.shaping import (
    LINK_PARAM_KEYS,
    LinkParamError,
    LinkParams,
    format_link_params,
    parse_link_params,
)


def parse_one(key, value):
    return parse_link_params({key: value})[key]


def error_for(key, value) -> LinkParamError:
    with pytest.raises(LinkParamError) as info:
        parse_link_params({key: value})
    return info.value


# --- rate: tc(8) units, bit = bits/s, bps = bytes/s, case-insensitive ---------------------

@pytest.mark.parametrize("text, bits_per_second", [
    ("100Mbit", 100_000_000),
    ("1.5Gbit", 1_500_000_000),
    ("64kbit", 64_000),
    ("2tbit", 2_000_000_000_000),
    ("9600bit", 9600),
    ("10Mbps", 80_000_000),       # tc: bps is BYTES per second
    ("1kbps", 8_000),
    ("1gbps", 8_000_000_000),
    ("1bps", 8),
    ("1tbps", 8_000_000_000_000),
    ("1kibit", 1024),
    ("1mibit", 1024 ** 2),
    ("1gibit", 1024 ** 3),
    ("1tibit", 1024 ** 4),
    ("1kibps", 8 * 1024),
    ("1mibps", 8 * 1024 ** 2),
    ("100MBIT", 100_000_000),
    ("100mbit", 100_000_000),
    (" 100 Mbit ", 100_000_000),
    ("1e6bit", 1_000_000),
    ("1000000", 1_000_000),       # bare number = bit/s
    (1_000_000, 1_000_000),
    (2.5e6, 2_500_000),
    ("0", 0),                     # 0 = unlimited
    (0, 0),
])
def test_rate_units_follow_tc(text, bits_per_second):
    rate = parse_one("rate", text)
    assert rate == bits_per_second
    assert type(rate) is int


@pytest.mark.parametrize("value, message", [
    ("fast", "'fast' is not a rate (use e.g. 100Mbit, 1.5Gbit, 64kbit; bps means bytes/s)"),
    ("10Mb", "'10Mb' is not a rate (use e.g. 100Mbit, 1.5Gbit, 64kbit; bps means bytes/s)"),
    ("10%", "'10%' is not a rate (use e.g. 100Mbit, 1.5Gbit, 64kbit; bps means bytes/s)"),
    ("-5Mbit", "'-5Mbit' is negative"),
    (-1, "-1 is negative"),
    ("0.1bit", "'0.1bit' is below 1 bit/s (use 0 for unlimited)"),
    (True, "True is not a rate (use e.g. 100Mbit, 1.5Gbit, 64kbit; bps means bytes/s)"),
    (None, "None is not a rate (use e.g. 100Mbit, 1.5Gbit, 64kbit; bps means bytes/s)"),
    (float("inf"), "inf is not a rate (use e.g. 100Mbit, 1.5Gbit, 64kbit; bps means bytes/s)"),
])
def test_rate_errors_say_what_is_wrong(value, message):
    error = error_for("rate", value)
    assert error.key == "rate"
    assert error.message == message
    assert str(error) == f"rate: {message}"


# --- delay / jitter: seconds, bare number = milliseconds ---------------------------------

@pytest.mark.parametrize("key", ["delay", "jitter"])
@pytest.mark.parametrize("text, seconds", [
    ("10ms", 0.010),
    ("1.5ms", 0.0015),
    ("500us", 0.0005),
    ("500usec", 0.0005),
    ("500µs", 0.0005),
    ("1s", 1.0),
    ("2sec", 2.0),
    ("2secs", 2.0),
    ("3msec", 0.003),
    ("3msecs", 0.003),
    ("250ns", 250e-9),
    ("10MS", 0.010),
    ("10 ms", 0.010),
    ("10", 0.010),                # bare number = milliseconds (docs/design.md)
    (10, 0.010),
    (0.5, 0.0005),
    ("0", 0.0),
])
def test_duration_units(key, text, seconds):
    value = parse_one(key, text)
    assert value == pytest.approx(seconds, rel=1e-12)
    assert type(value) is float


@pytest.mark.parametrize("value, message", [
    ("10 parsecs", "'10 parsecs' is not a duration (use e.g. 10ms, 500us, 1s)"),
    ("soon", "'soon' is not a duration (use e.g. 10ms, 500us, 1s)"),
    ("10m", "'10m' is not a duration (use e.g. 10ms, 500us, 1s)"),
    ("", "'' is not a duration (use e.g. 10ms, 500us, 1s)"),
    ([10], "[10] is not a duration (use e.g. 10ms, 500us, 1s)"),
    ("-1ms", "'-1ms' is negative"),
    (-3, "-3 is negative"),
])
def test_duration_errors_say_what_is_wrong(value, message):
    for key in ("delay", "jitter"):
        error = error_for(key, value)
        assert (error.key, error.message) == (key, message)


# --- probabilities: percent in, 0..1 out --------------------------------------------------

@pytest.mark.parametrize("key", ["loss", "duplicate", "corrupt", "reorder", "loss_correlation"])
@pytest.mark.parametrize("text, probability", [
    ("1%", 0.01),
    ("0.5%", 0.005),
    ("100%", 1.0),
    ("0%", 0.0),
    (" 25 % ", 0.25),
    ("5", 0.05),                  # bare number = percent (netem, Mininet)
    (5, 0.05),
    (0.5, 0.005),
])
def test_percentages_become_probabilities(key, text, probability):
    assert parse_one(key, text) == pytest.approx(probability, rel=1e-12)


@pytest.mark.parametrize("value, message", [
    ("150%", "'150%' is more than 100%"),
    (101, "101 is more than 100%"),
    ("-1%", "'-1%' is negative"),
    ("lots", "'lots' is not a percentage (use e.g. 1%, 0.5%)"),
    ("5ms", "'5ms' is not a percentage (use e.g. 1%, 0.5%)"),
    (float("nan"), "nan is not a percentage (use e.g. 1%, 0.5%)"),
])
def test_percentage_errors_say_what_is_wrong(value, message):
    error = error_for("loss", value)
    assert (error.key, error.message) == ("loss", message)


# --- queue, mtu, up ---------------------------------------------------------------------

@pytest.mark.parametrize("value, packets", [(1000, 1000), ("100", 100), (" 7 ", 7), (1, 1), (50.0, 50)])
def test_queue_is_a_positive_packet_count(value, packets):
    assert parse_one("queue", value) == packets


@pytest.mark.parametrize("value", [0, -5, "0", "ten", 2.5, True, None])
def test_queue_rejects_non_positive_or_non_integers(value):
    error = error_for("queue", value)
    assert (error.key, error.message) == ("queue", f"{value!r} is not a packet count (a positive integer)")


@pytest.mark.parametrize("value, mtu", [(68, 68), (1500, 1500), ("9000", 9000), (65535, 65535)])
def test_mtu_in_range(value, mtu):
    assert parse_one("mtu", value) == mtu


@pytest.mark.parametrize("value, message", [
    (67, "67 is outside 68..65535"),
    (65536, "65536 is outside 68..65535"),
    ("9000x", "'9000x' is not an MTU (an integer 68..65535)"),
    (1500.5, "1500.5 is not an MTU (an integer 68..65535)"),
    (False, "False is not an MTU (an integer 68..65535)"),
])
def test_mtu_errors_say_what_is_wrong(value, message):
    error = error_for("mtu", value)
    assert (error.key, error.message) == ("mtu", message)


@pytest.mark.parametrize("value, up", [
    (True, True), (False, False), (1, True), (0, False),
    ("up", True), ("DOWN", False), ("true", True), ("false", False),
    ("yes", True), ("no", False), ("on", True), ("off", False),
])
def test_up_accepts_booleans_and_link_words(value, up):
    assert parse_one("up", value) is up


@pytest.mark.parametrize("value", ["maybe", 2, None, 1.0])
def test_up_rejects_anything_else(value):
    error = error_for("up", value)
    assert (error.key, error.message) == ("up", f"{value!r} is not a boolean (use true/false or up/down)")


# --- keys ---------------------------------------------------------------------------------

@pytest.mark.parametrize("key, suggestion", [
    ("dealy", "delay"), ("los", "loss"), ("jiter", "jitter"), ("duplicat", "duplicate"),
    ("bw", "rate"), ("limit", "queue"), ("latency", "delay"), ("Delay", "delay"),
])
def test_unknown_key_suggests_the_closest(key, suggestion):
    error = error_for(key, 1)
    assert error.key == key
    assert error.message == f"unknown link parameter {key!r} (did you mean {suggestion!r}?)"


def test_unknown_key_without_a_close_match_lists_the_known_ones():
    error = error_for("frobnicate", 1)
    assert error.key == "frobnicate"
    assert error.message == ("unknown link parameter 'frobnicate' (known: " + ", ".join(LINK_PARAM_KEYS) + ")")


def test_parse_returns_only_the_given_keys():
    assert parse_link_params({"delay": "5ms", "loss": "1%"}) == {"delay": 0.005, "loss": 0.01}
    assert parse_link_params({}) == {}


def test_link_param_error_is_a_value_error():
    assert issubclass(LinkParamError, ValueError)


# --- format -------------------------------------------------------------------------------

def test_format_gives_tc_style_strings():
    shown = format_link_params({
        "rate": 100_000_000, "delay": 0.005, "jitter": 0.0015, "loss": 0.01,
        "loss_correlation": 0.25, "duplicate": 0.005, "corrupt": 0.0, "reorder": 1.0,
        "queue": 1000, "mtu": 1500, "up": False,
    })
    assert shown == {
        "rate": "100Mbit", "delay": "5ms", "jitter": "1.5ms", "loss": "1%",
        "loss_correlation": "25%", "duplicate": "0.5%", "corrupt": "0%", "reorder": "100%",
        "queue": "1000", "mtu": "1500", "up": "down",
    }


@pytest.mark.parametrize("rate, text", [
    (0, "0bit"), (999, "999bit"), (64_000, "64kbit"), (1_500_000_000, "1.5Gbit"),
    (1_234_567, "1.234567Mbit"), (3_000_000_000_000, "3Tbit"),
])
def test_format_rate_picks_the_largest_unit(rate, text):
    assert format_link_params({"rate": rate}) == {"rate": text}


@pytest.mark.parametrize("seconds, text", [
    (0.0, "0s"), (2.0, "2s"), (0.25, "250ms"), (0.0005, "500us"), (2.5e-7, "250ns"),
])
def test_format_duration_picks_the_largest_unit(seconds, text):
    assert format_link_params({"delay": seconds}) == {"delay": text}


def test_format_rejects_unknown_keys():
    with pytest.raises(LinkParamError) as info:
        format_link_params({"dealy": 0.1})
    assert info.value.key == "dealy"


@given(
    rate=st.integers(min_value=0, max_value=10**13),
    delay=st.floats(min_value=0, max_value=100, allow_nan=False),
    loss=st.floats(min_value=0, max_value=1, allow_nan=False),
    queue=st.integers(min_value=1, max_value=10**6),
    up=st.booleans(),
)
def test_format_then_parse_round_trips(rate, delay, loss, queue, up):
    canonical = {"rate": rate, "delay": delay, "loss": loss, "queue": queue, "up": up}
    back = parse_link_params(format_link_params(canonical))
    assert back["rate"] == rate
    assert back["delay"] == pytest.approx(delay, rel=1e-9, abs=1e-15)
    assert back["loss"] == pytest.approx(loss, rel=1e-9, abs=1e-15)
    assert (back["queue"], back["up"]) == (queue, up)


# --- LinkParams ---------------------------------------------------------------------------

def test_link_params_defaults():
    params = LinkParams()
    assert params.to_canonical() == {
        "mtu": 1500, "rate": 0, "delay": 0.0, "jitter": 0.0, "loss": 0.0,
        "loss_correlation": 0.0, "duplicate": 0.0, "corrupt": 0.0, "reorder": 0.0,
        "queue": 1000, "up": True,
    }
    assert tuple(params.to_canonical()) == LINK_PARAM_KEYS
    assert params.is_passthrough


def test_link_params_replace_updates_from_canonical_values():
    params = LinkParams().replace(delay=0.01, loss=0.05)
    assert (params.delay, params.loss, params.rate) == (0.01, 0.05, 0)
    assert LinkParams.from_canonical({"rate": 10_000_000}).rate == 10_000_000
    assert LinkParams.from_user({"delay": "10ms", "loss": "1%"}) == LinkParams(delay=0.01, loss=0.01)


def test_link_params_is_an_immutable_value():
    params = LinkParams()
    with pytest.raises(dataclasses.FrozenInstanceError):
        params.delay = 1.0  # type: ignore[misc]
    assert LinkParams(delay=0.01) == LinkParams(delay=0.01)


def test_link_params_replace_rejects_unknown_keys_with_a_suggestion():
    with pytest.raises(LinkParamError) as info:
        LinkParams().replace(dealy=0.01)
    assert info.value.key == "dealy"
    assert "did you mean 'delay'" in info.value.message


@pytest.mark.parametrize("key, value", [
    ("loss", 5), ("loss", -0.1), ("reorder", 1.5), ("delay", -1.0), ("jitter", float("nan")),
    ("rate", -1), ("rate", 1.5), ("queue", 0), ("mtu", 67), ("mtu", 70000), ("up", 1), ("delay", "10ms"),
])
def test_link_params_reject_out_of_range_canonical_values(key, value):
    with pytest.raises(LinkParamError) as info:
        LinkParams().replace(**{key: value})
    assert info.value.key == key
    assert info.value.message.startswith(f"canonical value {value!r} is not ")


def test_link_params_coerce_integral_seconds_and_probabilities_to_float():
    params = LinkParams(delay=1, loss=1)
    assert type(params.delay) is float and type(params.loss) is float


@pytest.mark.parametrize("key, value", [
    ("rate", 1), ("delay", 0.001), ("jitter", 0.001), ("loss", 0.01),
    ("duplicate", 0.01), ("corrupt", 0.01), ("reorder", 0.01),
])
def test_any_impairment_makes_params_not_passthrough(key, value):
    assert not LinkParams().replace(**{key: value}).is_passthrough


@pytest.mark.parametrize("key, value", [("mtu", 9000), ("queue", 5), ("up", False), ("loss_correlation", 0.5)])
def test_device_level_params_keep_passthrough(key, value):
    assert LinkParams().replace(**{key: value}).is_passthrough
