"""Unsubscribes and suppressions in the store.

An unsubscribe stops all marketing mail to the address at once: the deliver stage re-checks
``suppressions`` and ``contacts.unsubscribed_at`` when it claims each intent, so intents already
queued are suppressed too. Transactional mail (order confirmations) still goes.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

import sqlalchemy as sa

from engine.clock import Clock
from engine.store import Store, schema

if TYPE_CHECKING:
    from engine.segments.membership import SegmentRegistry


def record_unsubscribe(
    store: Store,
    contact_id: str,
    address: str,
    source: str,
    now: float,
    segments: SegmentRegistry | None = None,
) -> bool:
    """Suppress marketing mail to ``address``; returns False if it already was. Segments that
    read the subscription state are re-evaluated for the contact in the same transaction."""
    address = address.strip().lower()
    with store.begin() as conn:
        inserted = conn.execute(
            store.insert_ignore(schema.suppressions, index=["address"]).returning(
                schema.suppressions.c.address
            ),
            {
                "address": address,
                "scope": "marketing",
                "reason": "unsubscribe",
                "source": source[:200],
                "created_at": now,
            },
        ).all()
        conn.execute(
            sa.update(schema.contacts)
            .where(schema.contacts.c.id == contact_id, schema.contacts.c.unsubscribed_at.is_(None))
            .values(unsubscribed_at=now, updated_at=now)
        )
        if segments is not None and segments.index.by_consent:
            from engine.segments.membership import refresh

            refresh(conn, segments.index, {contact_id: segments.index.by_consent}, now)
        conn.execute(
            schema.audit_log.insert(),
            {
                "ts": now,
                "actor": "recipient",
                "action": "unsubscribe",
                "target": address,
                "count": 1,
                "detail": {"contact_id": contact_id, "source": source[:200]},
            },
        )
    return bool(inserted)


class StoreUnsubscriber:
    """The HTTP one-click unsubscribe handler, writing to the store off the event loop."""

    def __init__(self, store: Store, clock: Clock, segments: SegmentRegistry | None = None) -> None:
        self._store = store
        self._clock = clock
        self._segments = segments

    async def __call__(self, contact_id: str, address: str, source: str) -> None:
        await asyncio.to_thread(
            record_unsubscribe,
            self._store,
            contact_id,
            address,
            source,
            self._clock.now(),
            self._segments,
        )
