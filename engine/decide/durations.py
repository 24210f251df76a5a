"""Durations as marketers write them: ``90s``, ``30m``, ``1h30m``, ``7d``, ``2w``.

A duration is one or more ``<number><unit>`` parts with units s, m, h, d, w (numbers may have
a fraction: ``1.5h``). Results are seconds (float). Anything else is a ``ValueError`` whose
message says what was expected; the workflow loader turns it into ``WorkflowInvalid``.
"""

from __future__ import annotations

import re

UNITS = {"s": 1.0, "m": 60.0, "h": 3_600.0, "d": 86_400.0, "w": 604_800.0}
_PART = re.compile(r"(\d+(?:\.\d+)?)([smhdw])")
_WHOLE = re.compile(r"(?:\d+(?:\.\d+)?[smhdw])+")


def parse_duration(text: object) -> float:
    """Seconds in ``text`` (e.g. ``"30m"`` -> 1800.0); ``ValueError`` with the reason if bad."""
    if not isinstance(text, str):
        raise ValueError(f"bad duration {text!r}: expected text such as 30m, 1h or 7d")
    compact = text.strip().replace(" ", "")
    if not compact or not _WHOLE.fullmatch(compact):
        raise ValueError(f"bad duration {text!r}: expected e.g. 90s, 30m, 1h30m, 7d or 2w")
    return sum(float(n) * UNITS[unit] for n, unit in _PART.findall(compact))


def format_duration(seconds: float) -> str:
    """A short readable form for traces: 1800 -> ``30m``, 93600 -> ``1d2h``."""
    if seconds <= 0:
        return "0s"
    remaining = round(seconds)
    parts: list[str] = []
    for unit in ("w", "d", "h", "m", "s"):
        size = int(UNITS[unit])
        count, remaining = divmod(remaining, size)
        if count:
            parts.append(f"{count}{unit}")
    return "".join(parts) or f"{seconds:g}s"
