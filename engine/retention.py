"""Retention: the store keeps what the engine can still need, and no more.

- ``processed_events`` guards against redelivery and replay; a messageId older than the EVENTS
  stream's own age limit (plus a margin) can never be delivered again, so its row can go.
- ``activity`` feeds triggers, waits and windows; rows older than ``activity_days`` can go.

Deletes run in small chunks so a large backlog never holds the write lock for long.
"""

from __future__ import annotations

import asyncio
import logging

import sqlalchemy as sa

from engine.clock import Clock
from engine.store import Store, schema
from engine.telemetry import Telemetry

log = logging.getLogger(__name__)

CHUNK = 2000
DAY = 86_400.0


def prune(store: Store, *, processed_before: float, activity_before: float) -> tuple[int, int]:
    """Delete one chunk of each; returns how many rows went (processed ids, activity)."""
    pe, act = schema.processed_events, schema.activity
    with store.begin() as conn:
        old_ids = (
            sa.select(pe.c.message_id).where(pe.c.processed_at < processed_before).limit(CHUNK)
        )
        n_processed = conn.execute(sa.delete(pe).where(pe.c.message_id.in_(old_ids))).rowcount
    with store.begin() as conn:
        old_rows = sa.select(act.c.id).where(act.c.ts < activity_before).limit(CHUNK)
        n_activity = conn.execute(sa.delete(act).where(act.c.id.in_(old_rows))).rowcount
    return int(n_processed or 0), int(n_activity or 0)


async def run_retention(
    store: Store,
    clock: Clock,
    telemetry: Telemetry,
    *,
    stream_max_age_days: float,
    activity_days: float,
    interval: float = 60.0,
) -> None:
    """Prune forever, every ``interval`` seconds (faster while there is a backlog)."""
    while True:
        now = clock.now()
        try:
            n_processed, n_activity = await asyncio.to_thread(
                prune,
                store,
                processed_before=now - (stream_max_age_days + 1) * DAY,
                activity_before=now - activity_days * DAY,
            )
        except sa.exc.SQLAlchemyError as exc:
            log.warning("retention: pruning failed (%s); retrying later", exc)
            n_processed = n_activity = 0
        telemetry.count("retention_deleted_total", n_processed, table="processed_events")
        telemetry.count("retention_deleted_total", n_activity, table="activity")
        backlog = n_processed >= CHUNK or n_activity >= CHUNK
        await asyncio.sleep(1.0 if backlog else interval)
