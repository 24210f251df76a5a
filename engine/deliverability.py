"""Delivery and complaint rates from the ledger and the feedback records, against Gmail's
bulk sender thresholds (complaints under 0.1%, never 0.3% or more).

Over a window ending now (24 hours and 7 days by default), by when each intent's last attempt
finished (``finished_at``):

- ``attempted``: intents that went to the relay at least once and ended sent, bounced,
  deferred (still retrying), failed or uncertain;
- ``accepted``: of those, the ones the relay took (250), including those that bounced later;
- ``delivered``: accepted and not bounced since (an asynchronous DSN turns one back);
- ``delivery_rate`` = delivered / attempted (1.0 when nothing was attempted);
- ``complaints``: ``complaint`` audit rows written in the window (one per address, see
  ``engine.feedback.apply``); ``complaint_rate`` = complaints / delivered (0.0 when none).

``state`` is ``ok`` under 0.1%, ``warning`` from 0.1%, ``failing`` from 0.3%. Small volumes
make the rate jumpy: the counts come with it so a reader can judge.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import asdict, dataclass
from typing import Any

import sqlalchemy as sa

from engine.clock import Clock
from engine.feedback.apply import GMAIL_COMPLAINT_LIMIT, GMAIL_COMPLAINT_TARGET
from engine.store import Store, schema
from engine.telemetry import Telemetry

__all__ = [
    "WINDOWS",
    "WindowRates",
    "complaint_state",
    "publish_gauges",
    "summary",
    "window_rates",
]

log = logging.getLogger(__name__)

WINDOWS: dict[str, float] = {"24h": 86_400.0, "7d": 7 * 86_400.0}
_ATTEMPTED = ("sent", "bounced", "deferred", "failed", "uncertain")


@dataclass(frozen=True)
class WindowRates:
    window: str
    since: float
    attempted: int
    accepted: int
    delivered: int
    bounced: int
    complaints: int
    delivery_rate: float
    complaint_rate: float
    state: str


def complaint_state(rate: float) -> str:
    """``ok`` under Gmail's 0.1%, ``warning`` from 0.1%, ``failing`` from 0.3%."""
    if rate >= GMAIL_COMPLAINT_LIMIT:
        return "failing"
    if rate >= GMAIL_COMPLAINT_TARGET:
        return "warning"
    return "ok"


def window_rates(store: Store, now: float, window: str, seconds: float) -> WindowRates:
    """The rates over the ``seconds`` before ``now`` (two queries, one transaction)."""
    if seconds <= 0:
        raise ValueError(f"window {window!r}: length must be positive, got {seconds}")
    since = now - seconds
    intents, audit = schema.intents, schema.audit_log
    accepted_col = sa.func.sum(sa.case((intents.c.accepted_at.is_not(None), 1), else_=0))
    with store.begin() as conn:
        rows = conn.execute(
            sa.select(intents.c.status, sa.func.count(), accepted_col)
            .where(
                intents.c.finished_at >= since,
                intents.c.finished_at <= now,
                intents.c.attempts >= 1,
                intents.c.status.in_(_ATTEMPTED),
            )
            .group_by(intents.c.status)
        ).all()
        complaints = int(
            conn.execute(
                sa.select(sa.func.count()).where(
                    audit.c.action == "complaint", audit.c.ts >= since, audit.c.ts <= now
                )
            ).scalar_one()
        )
    counts = {str(status): (int(n), int(acc or 0)) for status, n, acc in rows}
    attempted = sum(n for n, _ in counts.values())
    delivered = counts.get("sent", (0, 0))[1]
    bounced_accepted = counts.get("bounced", (0, 0))[1]
    accepted = delivered + bounced_accepted
    delivery_rate = delivered / attempted if attempted else 1.0
    complaint_rate = complaints / delivered if delivered else 0.0
    return WindowRates(
        window=window,
        since=since,
        attempted=attempted,
        accepted=accepted,
        delivered=delivered,
        bounced=counts.get("bounced", (0, 0))[0],
        complaints=complaints,
        delivery_rate=delivery_rate,
        complaint_rate=complaint_rate,
        state=complaint_state(complaint_rate),
    )


def summary(store: Store, now: float, windows: dict[str, float] | None = None) -> dict[str, Any]:
    """What ``deliverability.summary`` returns: per window the counts, rates and state, the
    thresholds, and the worst state over the windows."""
    rates = [window_rates(store, now, name, s) for name, s in (windows or WINDOWS).items()]
    order = ("ok", "warning", "failing")
    worst = max((r.state for r in rates), key=order.index, default="ok")
    return {
        "at": now,
        "thresholds": {"warning": GMAIL_COMPLAINT_TARGET, "failing": GMAIL_COMPLAINT_LIMIT},
        "state": worst,
        "windows": {r.window: asdict(r) for r in rates},
    }


async def publish_gauges(
    store: Store, clock: Clock, telemetry: Telemetry, *, interval: float = 60.0
) -> None:
    """Keep the gauges ``delivery_rate{window}`` and ``complaint_rate{window}`` current
    (every ``interval`` seconds, off the event loop unless the store runs inline); until
    cancelled. A failed query is logged and retried at the next tick."""
    while True:
        try:
            if store.inline:
                result = summary(store, clock.now())
            else:
                result = await asyncio.to_thread(summary, store, clock.now())
        except Exception as exc:
            log.warning("deliverability: computing the rates failed: %s", exc)
        else:
            for name, rates in result["windows"].items():
                telemetry.gauge("delivery_rate", rates["delivery_rate"], window=name)
                telemetry.gauge("complaint_rate", rates["complaint_rate"], window=name)
        await asyncio.sleep(interval)
