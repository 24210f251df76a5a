"""Number formatting: units and sensible precision."""

from __future__ import annotations

import math

import pytest

from widgets.format import (
    describe_change,
    format_age,
    format_bytes,
    format_count,
    format_duration,
    format_percent,
    format_rate,
    format_si,
    format_window,
)


@pytest.mark.parametrize(
    ("value", "text"),
    [
        (2431.4, "2,431/s"),
        (18.24, "18.2/s"),
        (0, "0/s"),
        (0.42, "0.42/s"),
        (3.456, "3.46/s"),
        (12.0, "12/s"),
        (99.96, "100/s"),
        (0.004, "<0.01/s"),
        (1_240_000, "1.24M/s"),
        (999_999.6, "1M/s"),
        (-18.24, "-18.2/s"),
        (None, "\u2014"),
        (math.nan, "\u2014"),
    ],
)
def test_rates(value: float | None, text: str) -> None:
    assert format_rate(value) == text


def test_rate_unit() -> None:
    assert format_rate(12.5, " emails/s") == "12.5 emails/s"


@pytest.mark.parametrize(
    ("seconds", "text"),
    [
        (0.0182, "18.2 ms"),
        (1.24, "1.24 s"),
        (0.00034, "340 \u00b5s"),
        (190, "3 min 10 s"),
        (180, "3 min"),
        (0.9996, "1 s"),  # rounding promotes the unit, never "1000 ms"
        (59.98, "1 min"),
        (0.000_000_85, "850 ns"),
        (0.1, "100 ms"),
        (12.44, "12.4 s"),
        (7500, "2 h 5 min"),
        (3 * 86400 + 4 * 3600, "3 d 4 h"),
        (0, "0 s"),
        (-0.0182, "-18.2 ms"),
        (None, "\u2014"),
        (math.inf, "\u221e"),
    ],
)
def test_durations(seconds: float | None, text: str) -> None:
    assert format_duration(seconds) == text


@pytest.mark.parametrize(
    ("ratio", "text"),
    [
        (0.004, "0.4%"),
        (0.9996, "99.96%"),
        (0.999, "99.9%"),
        (0.99999, ">99.99%"),
        (1.0, "100%"),
        (0.0, "0%"),
        (0.00004, "<0.01%"),
        (0.00042, "0.042%"),
        (0.042, "4.2%"),
        (0.125, "12.5%"),
        (0.5, "50%"),
        (2.5, "250%"),
        (-0.004, "-0.4%"),
        (None, "\u2014"),
    ],
)
def test_percentages(ratio: float | None, text: str) -> None:
    assert format_percent(ratio) == text


@pytest.mark.parametrize(
    ("n", "text"),
    [(12408, "12,408"), (0, "0"), (7, "7"), (1_234_567, "1,234,567"), (-3, "-3"), (2.6, "3")],
)
def test_counts(n: float, text: str) -> None:
    assert format_count(n) == text


def test_compact_counts() -> None:
    assert format_count(48_100, compact=True) == "48.1k"
    assert format_count(1_240_000, compact=True) == "1.24M"
    assert format_count(9_999, compact=True) == "9,999"


@pytest.mark.parametrize(
    ("size", "text"),
    [
        (148 * 1024**2, "148 MiB"),
        (512, "512 B"),
        (12.4 * 1024, "12.4 KiB"),
        (1.5 * 1024**3, "1.5 GiB"),
        (0, "0 B"),
        (1023.9 * 1024, "1 MiB"),
    ],
)
def test_bytes(size: float, text: str) -> None:
    assert format_bytes(size) == text


@pytest.mark.parametrize(
    ("age", "text"),
    [
        (12.7, "updated 12 s ago"),
        (0.3, "updated just now"),
        (190, "updated 3 min ago"),
        (7300, "updated 2 h ago"),
        (200_000, "updated 2 d ago"),
        (None, "no data yet"),
    ],
)
def test_ages(age: float | None, text: str) -> None:
    assert format_age(age) == text


def test_windows_and_si() -> None:
    assert format_window(60) == "1 min"
    assert format_window(900) == "15 min"
    assert format_window(3600) == "1 h"
    assert format_window(45) == "45 s"
    assert format_window(5400) == "1 h 30 min"
    assert format_si(1240, "B") == "1.24 kB"
    assert format_si(0.018, "s") == "18 ms"
    assert format_si(0) == "0"


def test_change_relative() -> None:
    change = describe_change(112.0, 100.0, 900)
    assert change.direction == 1
    assert change.text == "\u25b2 12% vs 15 min ago"
    change = describe_change(97.6, 100.0, 900)
    assert change.direction == -1
    assert change.text == "\u25bc 2.4% vs 15 min ago"
    assert describe_change(310.0, 100.0, 60).text == "\u25b2 3.1\u00d7 vs 1 min ago"


def test_change_steady_and_missing() -> None:
    change = describe_change(100.2, 100.0, 900)
    assert change.direction == 0
    assert change.text == "\u2248 same as 15 min ago"
    assert describe_change(None, 1.0, 60).text == "\u2014"


def test_change_absolute_uses_the_formatter() -> None:
    change = describe_change(0.006, 0.004, 900, formatter=format_percent, absolute=True)
    assert change.text == "\u25b2 0.2% vs 15 min ago"
    # 99.85% -> 99.45% is 0.4 points: not "same", although it is under 0.5% relative.
    down = describe_change(0.9945, 0.9985, 900, formatter=format_percent, absolute=True)
    assert down.direction == -1
    assert down.text == "\u25bc 0.4% vs 15 min ago"
    flat = describe_change(0.99851, 0.9985, 900, formatter=format_percent, absolute=True)
    assert flat.direction == 0


def test_change_from_zero_shows_the_difference() -> None:
    change = describe_change(2431.0, 0.0, 900, formatter=format_rate)
    assert change.text == "\u25b2 2,431/s vs 15 min ago"
