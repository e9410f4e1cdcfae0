"""Time tokens: seconds <-> token conversion and parsing model output."""

from __future__ import annotations

import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lita_serve.config import LitaConfig
from lita_serve.errors import InvalidInputError
from lita_serve.text.time_tokens import (
    Segment,
    index_to_seconds,
    parse_time_tokens,
    seconds_to_index,
    seconds_to_token,
    time_token,
    time_tokens,
)


def test_token_strings() -> None:
    assert time_token(0) == "<t0>"
    assert time_tokens(3) == ["<t0>", "<t1>", "<t2>"]
    assert len(time_tokens()) == LitaConfig().lita.num_time_tokens


def test_worked_example_two_minute_video() -> None:
    assert index_to_seconds(50, 120.0) == pytest.approx(60.606, abs=1e-3)
    assert seconds_to_token(60.0, 120.0) == "<t50>"  # round(49.5) -> 50 (half to even, like np.round)
    assert parse_time_tokens("<t50>", 120.0).text == "60.6s"


@pytest.mark.parametrize(
    "t, duration, expected",
    [
        (0.0, 10.0, 0),
        (10.0, 10.0, 99),
        (-5.0, 10.0, 0),  # before the start clamps to the first token
        (1e9, 10.0, 99),  # past the end clamps to the last token
        (5.0, 10.0, 50),  # 49.5 rounds half to even
        (1.0, 99.0, 1),
        (0.004, 0.01, 40),  # very short clip
    ],
)
def test_seconds_to_index(t: float, duration: float, expected: int) -> None:
    assert seconds_to_index(t, duration) == expected


def test_seconds_to_index_respects_num_time_tokens() -> None:
    assert seconds_to_index(10.0, 10.0, num_time_tokens=10) == 9
    assert seconds_to_index(5.0, 10.0, num_time_tokens=3) == 1


@pytest.mark.parametrize("duration", [0.0, -1.0, math.inf, math.nan])
def test_bad_duration_raises(duration: float) -> None:
    with pytest.raises(InvalidInputError, match="duration"):
        seconds_to_index(1.0, duration)
    with pytest.raises(InvalidInputError, match="duration"):
        index_to_seconds(1, duration)
    with pytest.raises(InvalidInputError, match="duration"):
        parse_time_tokens("<t1>", duration)


def test_non_finite_time_raises() -> None:
    with pytest.raises(InvalidInputError):
        seconds_to_index(math.nan, 10.0)


def test_index_to_seconds_clamps_and_round_trips() -> None:
    assert index_to_seconds(0, 30.0) == 0.0
    assert index_to_seconds(99, 30.0) == 30.0
    assert index_to_seconds(150, 30.0) == 30.0
    assert index_to_seconds(-3, 30.0) == 0.0
    for k in range(100):
        assert seconds_to_index(index_to_seconds(k, 37.5), 37.5) == k


def test_parse_segments_and_points() -> None:
    p = parse_time_tokens("<t4> <t18> apply concealer. Then <t50>, and <t60>-<t70>, <t80> to <t90>", 120.0)
    assert p.problems == []
    assert p.raw_text.startswith("<t4> <t18>")
    assert p.text == "4.8s 21.8s apply concealer. Then 60.6s, and 72.7s-84.8s, 97.0s to 109.1s"
    spans = [(round(s.start, 1), round(s.end, 1)) for s in p.segments]
    assert spans == [(4.8, 21.8), (60.6, 60.6), (72.7, 84.8), (97.0, 109.1)]
    assert p.segments[1].is_point and not p.segments[0].is_point
    assert len(p.times) == 7


def test_parse_reversed_pair_is_ordered() -> None:
    p = parse_time_tokens("<t20><t10>", 99.0)
    assert p.segments == [Segment(10.0, 20.0)]


def test_parse_keeps_bad_tokens_verbatim_and_reports_them() -> None:
    text = "a <t100> b <t-1> c <t05x> d <t> e <t05> f <t7> <table> <to>"
    p = parse_time_tokens(text, 99.0)
    assert p.text == "a <t100> b <t-1> c <t05x> d <t> e <t05> f 7.0s <table> <to>"
    assert len(p.problems) == 5
    assert "out of range" in p.problems[0] and "<t100>" in p.problems[0]
    assert all("malformed" in msg for msg in p.problems[1:])
    assert p.segments == [Segment(7.0, 7.0)]


def test_parse_custom_format_and_num_tokens() -> None:
    p = parse_time_tokens("<t9> <t10>", 9.0, num_time_tokens=10, fmt="{:.2f} sec")
    assert p.text == "9.00 sec <t10>"
    assert len(p.problems) == 1


def test_parse_text_without_tokens() -> None:
    p = parse_time_tokens("no times here", 5.0)
    assert (p.text, p.segments, p.times, p.problems) == ("no times here", [], [], [])


_TOKENISH = st.sampled_from(["<t", ">", "<t5>", "<t99>", "<t100>", "<t-1>", "<t>", " to ", "-", " ", "\n", "<t0", "9"])


@settings(max_examples=300, deadline=None)
@given(
    text=st.lists(st.one_of(st.text(max_size=12), _TOKENISH), max_size=20).map("".join),
    duration=st.floats(min_value=1e-3, max_value=1e6, allow_nan=False, allow_infinity=False),
)
def test_parse_never_raises(text: str, duration: float) -> None:
    p = parse_time_tokens(text, duration)
    assert p.raw_text == text
    assert all(0.0 <= t <= duration for t in p.times)
    assert all(s.start <= s.end for s in p.segments)
    assert "<t5>" not in p.text  # every valid token was rendered
