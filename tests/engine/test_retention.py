"""Retention deletes only what can no longer matter, in chunks, on both databases."""

from __future__ import annotations

import sqlalchemy as sa

from engine.retention import CHUNK, prune
from engine.store import open_store, schema


def test_prunes_old_rows_only(store_url: str) -> None:
    store = open_store(store_url)
    try:
        with store.begin() as conn:
            conn.execute(
                schema.processed_events.insert(),
                [
                    {"message_id": f"old-{i}", "stream_seq": i, "processed_at": 100.0}
                    for i in range(CHUNK + 5)
                ]
                + [{"message_id": "new", "stream_seq": 1, "processed_at": 5_000.0}],
            )
            conn.execute(
                schema.activity.insert(),
                [
                    {
                        "contact_id": "c",
                        "name": "Product Viewed",
                        "properties": {},
                        "message_id": f"m{i}",
                        "ts": ts,
                    }
                    for i, ts in enumerate((50.0, 60.0, 9_000.0))
                ],
            )
        assert prune(store, processed_before=1_000.0, activity_before=1_000.0) == (CHUNK, 2)
        assert prune(store, processed_before=1_000.0, activity_before=1_000.0) == (5, 0)
        assert prune(store, processed_before=1_000.0, activity_before=1_000.0) == (0, 0)
        with store.begin() as conn:
            kept_ids = conn.execute(sa.select(schema.processed_events.c.message_id)).scalars().all()
            kept_ts = conn.execute(sa.select(schema.activity.c.ts)).scalars().all()
        assert kept_ids == ["new"]
        assert kept_ts == [9_000.0]
    finally:
        store.dispose()
