"""Time as a dependency: the engine asks a clock, tests control it.

All engine timestamps are UTC epoch seconds as floats (``time.time()`` semantics). Datetimes are
only built at the edges (rendering, HTTP, CLI).
"""

from __future__ import annotations

import asyncio
import time
from typing import Protocol


class Clock(Protocol):
    """What the engine needs to know about time."""

    def now(self) -> float:
        """Current UTC time in epoch seconds."""
        ...

    async def sleep_until(self, deadline: float) -> None:
        """Return once ``now() >= deadline`` (or earlier if woken by ``wake``)."""
        ...

    def wake(self) -> None:
        """Wake every ``sleep_until`` early so sleepers can re-check their deadlines."""
        ...


class SystemClock:
    """Wall-clock time; ``sleep_until`` can be interrupted by ``wake``."""

    def __init__(self) -> None:
        self._woken = asyncio.Event()

    def now(self) -> float:
        return time.time()

    async def sleep_until(self, deadline: float) -> None:
        delay = deadline - time.time()
        if delay <= 0:
            return
        self._woken.clear()
        try:
            await asyncio.wait_for(self._woken.wait(), timeout=delay)
        except TimeoutError:
            pass

    def wake(self) -> None:
        self._woken.set()


class ManualClock:
    """A clock that only moves when told to; for tests of delays and windows."""

    def __init__(self, start: float = 1_800_000_000.0) -> None:
        self._now = start
        self._changed = asyncio.Event()

    def now(self) -> float:
        return self._now

    def advance(self, seconds: float) -> None:
        self._now += seconds
        self._changed.set()

    def set(self, when: float) -> None:
        self._now = when
        self._changed.set()

    async def sleep_until(self, deadline: float) -> None:
        while self._now < deadline:
            self._changed.clear()
            try:
                await asyncio.wait_for(self._changed.wait(), timeout=0.05)
            except TimeoutError:
                pass
            else:
                return

    def wake(self) -> None:
        self._changed.set()
