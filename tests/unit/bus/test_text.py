"""bus/text.py: the one did-you-mean and the one text table every layer prints with."""
from __future__ import annotations

import pytest

from bus.text import closest, did_you_mean, table

# -- did you mean --------------------------------------------------------------------------


def test_a_misspelling_suggests_the_closest_choice_in_quotes():
    assert did_you_mean("dealy", ["delay", "rate", "loss"]) == " (did you mean 'delay'?)"


def test_case_is_ignored():
    assert closest("DELAY", ["delay", "rate"]) == "delay"


def test_a_customary_spelling_in_the_hints_wins_over_spelling():
    assert closest("bw", ["rate", "bw_limit"], {"bw": "rate"}) == "rate"


def test_a_hint_naming_no_choice_is_not_suggested():
    assert closest("bw", ["delay", "loss"], {"bw": "rate"}) is None


def test_nothing_close_gives_no_suggestion():
    assert did_you_mean("frobnicate", ["delay", "rate"]) == ""
    assert did_you_mean("x", []) == ""


def test_non_string_words_are_compared_as_text():
    assert closest(1500, ["15000", "mtu"]) == "15000"


# -- table ------------------------------------------------------------------------------------


def test_table_left_aligns_columns_to_the_widest_cell_without_trailing_blanks():
    assert table([["h1:eth0", "lan1", ""], ["r1:eth1", "lan2", "delay=5ms"]], ["port", "segment", "shaping"]) == [
        "port     segment  shaping",
        "h1:eth0  lan1",
        "r1:eth1  lan2     delay=5ms",
    ]


def test_table_without_rows_is_its_header():
    assert table([], ["segment", "port"]) == ["segment  port"]


def test_table_rule_underlines_each_header_as_wide_as_its_column():
    assert table([("ping_rtt", "12.5")], ("metric", "value"), rule=True) == [
        "metric    value",
        "--------  -----",
        "ping_rtt  12.5",
    ]


def test_table_row_of_the_wrong_width_is_refused():
    with pytest.raises(ValueError, match=r"has 1 cells for 2 columns"):
        table([["only one"]], ["a", "b"])
