"""Numbers with units and sensible precision, as an operator reads them at a glance.

Pure functions, no Qt. Thousands are grouped with commas ("2,431/s") whatever the locale, so
figures look the same in screenshots, logs and runbooks. Missing values (None, NaN) read as an
em dash. Precision is about three significant figures: enough to see a change, few enough to read.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

MISSING = "\u2014"  # em dash
MICRO = "\u00b5"  # micro sign, as in "340 µs"
UP = "\u25b2"  # black up-pointing triangle
DOWN = "\u25bc"  # black down-pointing triangle
ABOUT = "\u2248"  # almost equal to

Formatter = Callable[[float], str]


def _missing(value: float | None) -> bool:
    return value is None or math.isnan(value)


def _round_sig(value: float, digits: int) -> float:
    """``value`` rounded to ``digits`` significant figures."""
    if value == 0 or not math.isfinite(value):
        return value
    return round(value, digits - 1 - math.floor(math.log10(abs(value))))


def _plain(value: float, decimals: int) -> str:
    """Fixed-point with at most ``decimals`` decimals, trailing zeros dropped, commas grouped."""
    text = f"{value:,.{max(decimals, 0)}f}"
    if "." in text:
        text = text.rstrip("0").rstrip(".")
    return "0" if text in ("-0", "") else text


def _sig(value: float, digits: int = 3) -> str:
    """``value`` to ``digits`` significant figures, without exponent notation."""
    rounded = _round_sig(value, digits)
    if rounded == 0:
        return "0"
    decimals = digits - 1 - math.floor(math.log10(abs(rounded)))
    return _plain(rounded, decimals)


def _sign(value: float) -> str:
    return "-" if value < 0 else ""


def format_count(value: float | None, *, compact: bool = False) -> str:
    """A count: ``12,408``; with ``compact``, ``1.2M`` / ``48.1k`` above ten thousand."""
    if _missing(value):
        return MISSING
    assert value is not None
    n = abs(value)
    if compact and n >= 10_000:
        for threshold, suffix in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
            if _round_sig(n, 3) >= threshold:
                return f"{_sign(value)}{_sig(n / threshold)}{suffix}"
    return f"{_sign(value) if round(n) else ''}{round(n):,}"


def format_rate(value: float | None, unit: str = "/s") -> str:
    """A rate per second: ``2,431/s``, ``18.2/s``, ``0.42/s``, ``0/s``, ``1.24M/s``."""
    if _missing(value):
        return MISSING
    assert value is not None
    n = abs(value)
    sign = _sign(value)
    if n == 0:
        return f"0{unit}"
    if n < 0.01:
        return f"<0.01{unit}"
    if _round_sig(n, 3) >= 1e6:
        for threshold, suffix in ((1e9, "G"), (1e6, "M")):
            if _round_sig(n, 3) >= threshold:
                return f"{sign}{_sig(n / threshold)}{suffix}{unit}"
    if _round_sig(n, 3) >= 100:
        return f"{sign}{round(n):,}{unit}"
    return f"{sign}{_sig(n)}{unit}"


def format_duration(seconds: float | None) -> str:
    """A latency or duration: ``340 µs``, ``18.2 ms``, ``1.24 s``, ``3 min 10 s``, ``2 h 5 min``."""
    if _missing(seconds):
        return MISSING
    assert seconds is not None
    if seconds < 0:
        return "-" + format_duration(-seconds)
    if seconds == 0:
        return "0 s"
    if math.isinf(seconds):
        return "\u221e"
    for scale, unit in ((1e-9, "ns"), (1e-6, f"{MICRO}s"), (1e-3, "ms"), (1.0, "s")):
        limit = 60.0 if unit == "s" else 1000.0
        value = _round_sig(seconds / scale, 3)
        if value < limit:
            return f"{_sig(value)} {unit}"
    whole = round(seconds)
    if whole < 3600:
        minutes, secs = divmod(whole, 60)
        return f"{minutes} min {secs} s" if secs else f"{minutes} min"
    whole_minutes = round(seconds / 60)
    if whole_minutes < 24 * 60:
        hours, minutes = divmod(whole_minutes, 60)
        return f"{hours} h {minutes} min" if minutes else f"{hours} h"
    whole_hours = round(seconds / 3600)
    days, hours = divmod(whole_hours, 24)
    return f"{days} d {hours} h" if hours else f"{days} d"


def format_percent(ratio: float | None) -> str:
    """A ratio as a percentage: ``0.4%``, ``12.5%``, ``99.96%``, ``100%``, ``<0.01%``.

    Near 100 % two decimals are kept, because 99.96 % and 99.5 % delivered are different days.
    """
    if _missing(ratio):
        return MISSING
    assert ratio is not None
    pct = ratio * 100.0
    sign = _sign(pct)
    p = abs(pct)
    if p == 0:
        return "0%"
    if p < 0.01:
        return f"{sign}<0.01%"
    if p < 1:
        return f"{sign}{_sig(p, 2)}%"
    if 99 <= p < 100:
        text = _plain(p, 2)
        return f"{sign}>99.99%" if text == "100" else f"{sign}{text}%"
    if p < 1000:
        return f"{sign}{_plain(p, 1)}%"
    return f"{sign}{round(p):,}%"


_IEC = ("B", "KiB", "MiB", "GiB", "TiB", "PiB")


def format_bytes(size: float | None) -> str:
    """A size in binary units: ``512 B``, ``12.4 KiB``, ``148 MiB``, ``1.5 GiB``."""
    if _missing(size):
        return MISSING
    assert size is not None
    sign = _sign(size)
    n = abs(size)
    if n < 1000:
        return f"{sign}{round(n)} B"
    for exponent, unit in enumerate(_IEC[1:], start=1):
        value = _round_sig(n / 1024**exponent, 3)
        if value < 1000 or unit == _IEC[-1]:
            return f"{sign}{_sig(value)} {unit}"
    raise AssertionError("unreachable")  # pragma: no cover


def format_age(seconds: float | None, prefix: str = "updated") -> str:
    """How long ago data arrived: ``updated just now``, ``updated 12 s ago``, ``updated 3 min ago``.

    ``None``/NaN (nothing has arrived) reads ``no data yet``.
    """
    if _missing(seconds):
        return "no data yet"
    assert seconds is not None
    if seconds < 1:
        return f"{prefix} just now"
    if seconds < 60:
        return f"{prefix} {int(seconds)} s ago"
    if seconds < 3600:
        return f"{prefix} {int(seconds // 60)} min ago"
    if seconds < 86400:
        return f"{prefix} {int(seconds // 3600)} h ago"
    return f"{prefix} {int(seconds // 86400)} d ago"


def format_window(seconds: float) -> str:
    """A time window as people say it: ``45 s``, ``1 min``, ``15 min``, ``1 h``, ``1 h 30 min``."""
    whole = round(seconds)
    if whole < 60:
        return f"{whole} s"
    if whole < 3600:
        minutes, secs = divmod(whole, 60)
        return f"{minutes} min {secs} s" if secs else f"{minutes} min"
    hours, rest = divmod(whole, 3600)
    minutes = round(rest / 60)
    return f"{hours} h {minutes} min" if minutes else f"{hours} h"


def format_si(value: float | None, unit: str = "") -> str:
    """A value with an SI prefix: ``1.24 k``, ``340 m``; for units without a dedicated formatter."""
    if _missing(value):
        return MISSING
    assert value is not None
    if value == 0:
        return f"0 {unit}".rstrip()
    prefixes = ((1e9, "G"), (1e6, "M"), (1e3, "k"), (1.0, ""), (1e-3, "m"), (1e-6, MICRO))
    n = abs(value)
    for scale, prefix in prefixes:
        if _round_sig(n, 3) >= scale:
            return f"{_sign(value)}{_sig(n / scale)} {prefix}{unit}".rstrip()
    return f"{_sign(value)}{_sig(n / 1e-9)} n{unit}".rstrip()


@dataclass(frozen=True, slots=True)
class Change:
    """A change over a window: ``direction`` is +1 (up), -1 (down) or 0 (steady)."""

    direction: int
    text: str


STEADY_BELOW = 0.005  # relative changes under 0.5 % read as "steady"


def describe_change(
    current: float | None,
    previous: float | None,
    ago_seconds: float,
    *,
    formatter: Formatter | None = None,
    absolute: bool = False,
) -> Change:
    """``▲ 12% vs 15 min ago`` (relative), or ``▲ 2,431/s vs 15 min ago`` (``absolute``).

    From zero, or with ``absolute``, the difference is shown through ``formatter`` (for error
    rates, "▲ 0.2%" in points says more than "▲ 100%"). Changes under 0.5 % (relative), or too
    small to show through ``formatter`` (absolute), read ``≈ same as 15 min ago``.
    """
    since = f"vs {format_window(ago_seconds)} ago"
    if _missing(current) or _missing(previous):
        return Change(0, MISSING)
    assert current is not None and previous is not None
    delta = current - previous
    show = formatter or _sig
    if absolute:
        # Steady when the difference does not show at the metric's own precision ("0%", or
        # "<0.01%" below it).
        shown_delta = show(abs(delta))
        steady = shown_delta == show(0.0) or shown_delta.startswith("<")
    else:
        steady = delta == 0 or (previous != 0 and abs(delta) / abs(previous) < STEADY_BELOW)
    if steady:
        return Change(0, f"{ABOUT} same as {format_window(ago_seconds)} ago")
    direction = 1 if delta > 0 else -1
    arrow = UP if direction > 0 else DOWN
    if absolute or previous == 0:
        shown = show(abs(delta))
        return Change(direction, f"{arrow} {shown} {since}")
    relative = abs(delta) / abs(previous)
    if relative >= 2:
        if direction > 0 and previous > 0:
            shown = f"{_sig(current / previous, 2)}\u00d7"  # "3.1x" reads better than "210%"
        else:
            shown = f"{round(relative * 100):,}%"
    elif relative < 0.1:
        shown = f"{_plain(relative * 100, 1)}%"
    else:
        shown = f"{round(relative * 100)}%"
    return Change(direction, f"{arrow} {shown} {since}")
