"""Unsubscribes and suppressions in the store.

An unsubscribe stops all marketing mail to the address at once: the deliver stage re-checks
``suppressions`` and ``contacts.unsubscribed_at`` when it claims each intent, so intents already
queued are suppressed too. Transactional mail (order confirmations) still goes.
"""

from __future__ import annotations

import asyncio

import sqlalchemy as sa

from engine.clock import Clock
from engine.store import Store, schema


def record_unsubscribe(
    store: Store, contact_id: str, address: str, source: str, now: float
) -> bool:
    """Suppress marketing mail to ``address``; returns False if it already was."""
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

    def __init__(self, store: Store, clock: Clock) -> None:
        self._store = store
        self._clock = clock

    async def __call__(self, contact_id: str, address: str, source: str) -> None:
        await asyncio.to_thread(
            record_unsubscribe, self._store, contact_id, address, source, self._clock.now()
        )
