"""Quiet hours: a daily window of local time in which marketing mail is not sent.

A window is written ``"21:00-08:00"`` (start inclusive, end exclusive; it may wrap midnight).
``next_allowed`` answers "when may a send planned for ``t`` go out?" in the contact's own
timezone: ``t`` itself outside the window, else the first instant the contact's local clock
shows the window's end. Daylight saving time is handled by asking the zone, not by adding
hours: the night the clocks go back is an hour longer, the night they go forward an hour
shorter, and an end time that falls in the skipped hour (02:30 on the night 02:00 becomes 03:00)
means the moment the clocks jump.
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

_HHMM = re.compile(r"([01]?\d|2[0-3]):([0-5]\d)")


@dataclass(frozen=True, slots=True)
class QuietHours:
    """A daily window of local time, in minutes after midnight; ``start == end`` is refused."""

    start: int
    end: int

    @classmethod
    def parse(cls, text: str) -> QuietHours:
        """``"21:00-08:00"`` -> QuietHours; ``ValueError`` naming the problem otherwise."""
        if not isinstance(text, str):
            raise ValueError(f"quiet hours must be text like '21:00-08:00', got {text!r}")
        parts = text.replace(" ", "").replace("\u2013", "-").split("-")
        if len(parts) != 2 or not all(_HHMM.fullmatch(p) for p in parts):
            raise ValueError(
                f"quiet hours must look like '21:00-08:00' (HH:MM-HH:MM), got {text!r}"
            )
        start, end = (int(p.split(":")[0]) * 60 + int(p.split(":")[1]) for p in parts)
        if start == end:
            raise ValueError(f"quiet hours {text!r} start and end at the same time")
        return cls(start, end)

    def __str__(self) -> str:
        return (
            f"{self.start // 60:02d}:{self.start % 60:02d}-{self.end // 60:02d}:{self.end % 60:02d}"
        )

    def covers(self, minute: int) -> bool:
        """Whether a local time of day (minutes after midnight) is inside the window."""
        if self.start < self.end:
            return self.start <= minute < self.end
        return minute >= self.start or minute < self.end

    def quiet_at(self, t: float, zone: ZoneInfo) -> bool:
        local = datetime.fromtimestamp(t, zone)
        return self.covers(local.hour * 60 + local.minute)

    def next_allowed(self, t: float, zone: ZoneInfo) -> float:
        """``t`` when it is outside the window, else when the window ends (epoch seconds)."""
        if not self.quiet_at(t, zone):
            return t
        local = datetime.fromtimestamp(t, zone)
        end = time(self.end // 60, self.end % 60)
        # The window's end on the local day of t, or on the next day (a window that wraps
        # midnight, entered in the evening, ends tomorrow morning).
        for day in (local.date(), local.date() + timedelta(days=1)):
            candidate = _first_instant_at(day, end, zone)
            if candidate > t:
                return candidate
        raise AssertionError("a quiet window always ends within a day")  # pragma: no cover


def _hhmm(minutes: int) -> str:
    return f"{minutes // 60:02d}:{minutes % 60:02d}"


def _first_instant_at(day: date, wall: time, zone: ZoneInfo) -> float:
    """The first instant the local clock in ``zone`` shows ``wall`` on ``day`` or later; in the
    hour skipped by a spring-forward change that is the instant of the change."""
    naive = datetime.combine(day, wall)
    before = naive.replace(tzinfo=zone, fold=0).timestamp()
    after = naive.replace(tzinfo=zone, fold=1).timestamp()
    shown = datetime.fromtimestamp(before, zone).replace(tzinfo=None)
    if shown == naive:  # an ordinary time, or (fold 0) the first of two in a fall-back hour
        return before
    # Skipped: ``after`` is before the change and ``before`` after it; the change lies between.
    low, high = min(before, after), max(before, after)
    while high - low > 1.0:
        middle = (low + high) / 2
        if datetime.fromtimestamp(middle, zone).replace(tzinfo=None) >= naive:
            high = middle
        else:
            low = middle
    return float(int(high))


@functools.lru_cache(maxsize=1024)
def zone_named(name: str) -> ZoneInfo | None:
    """The IANA zone called ``name``, or None when there is no such zone."""
    if not name or len(name) > 64:
        return None
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        return None


def local_stamp(t: float, zone: ZoneInfo) -> str:
    """A time for traces: ``2027-01-16 08:00 CET``."""
    return datetime.fromtimestamp(t, zone).strftime("%Y-%m-%d %H:%M %Z")
