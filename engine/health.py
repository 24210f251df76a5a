"""A node's health checks, judged from what it already knows (no query of its own).

The node publishes its snapshot four times a second with a ``health`` part; the checks here
must cost next to nothing, so none of them touches the database or the network:

- ``store``: the stages count the database errors they retry (``db_errors_total``) and time
  every commit (``db_commit_seconds``). Errors in the last ``window`` seconds with no commit
  read as ``failing`` (the store is unreachable), errors beside commits as ``degraded``.
- ``routes``: the deliver stage's routes, as they stand in memory: a route that is down (its
  relay does not answer) or paused itself on errors makes ``degraded``, all of them ``failing``.
  An operator's pause is not a fault and leaves the check ``healthy``.

Words are the console's status vocabulary: ``healthy``, ``degraded``, ``failing``.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Iterable, Mapping
from typing import Any

from engine.telemetry import Telemetry

HEALTHY = "healthy"
DEGRADED = "degraded"
FAILING = "failing"

STORE_WINDOW_S = 10.0
"""How far back database errors and commits are compared."""


def _total(values: Mapping[str, float], name: str) -> float:
    """The sum of every labelled series of counter ``name``."""
    return float(sum(v for k, v in values.items() if k == name or k.startswith(name + "{")))


def _commits(telemetry: Telemetry) -> float:
    return float(
        sum(
            h.count
            for k, h in telemetry.histograms.items()
            if k == "db_commit_seconds" or k.startswith("db_commit_seconds{")
        )
    )


class StoreHealth:
    """The ``store`` check: database errors against commits over the last ``window`` seconds.

    ``check()`` is called with every snapshot; it keeps one sample per call and forgets those
    older than the window, so it costs a few additions.
    """

    def __init__(self, telemetry: Telemetry, window: float = STORE_WINDOW_S) -> None:
        self._telemetry = telemetry
        self._window = window
        self._samples: deque[tuple[float, float, float]] = deque()

    def check(self, now: float | None = None) -> tuple[str, str]:
        """``(status, detail)``: the status word and, unless healthy, why."""
        now = time.monotonic() if now is None else now
        errors = _total(self._telemetry.counters, "db_errors_total")
        commits = _commits(self._telemetry)
        samples = self._samples
        samples.append((now, errors, commits))
        # Keep the newest sample at or before the window's start as the baseline.
        while len(samples) > 1 and samples[1][0] <= now - self._window:
            samples.popleft()
        _t0, errors0, commits0 = samples[0]
        new_errors = errors - errors0
        if new_errors <= 0:
            return HEALTHY, ""
        window = f"{self._window:g} s"
        if commits - commits0 <= 0:
            return FAILING, f"{new_errors:g} database errors and no commit in the last {window}"
        return DEGRADED, f"{new_errors:g} database errors in the last {window}"


def routes_check(states: Iterable[Mapping[str, Any]]) -> tuple[str, str]:
    """The ``routes`` check from ``DeliveryService.route_states()``: ``(status, detail)``."""
    states = list(states)
    troubled = []
    for route in states:
        if route.get("down"):
            why = str(route.get("down_reason") or "the relay does not answer")
            troubled.append(f"{route.get('name')} down: {why}")
        elif route.get("auto_paused"):
            why = str(route.get("paused_reason") or "too many errors")
            troubled.append(f"{route.get('name')} paused itself: {why}")
    if not troubled:
        return HEALTHY, ""
    status = FAILING if len(troubled) == len(states) else DEGRADED
    return status, "; ".join(troubled)
