"""A running node's SQLite store checkpoints its WAL on a thread, never inside a commit."""

from __future__ import annotations

import time
from pathlib import Path

import sqlalchemy as sa

from engine.store import open_store, schema


def test_commits_leave_the_wal_to_the_checkpoint_thread(tmp_path: Path) -> None:
    db = tmp_path / "engine.sqlite3"
    store = open_store(f"sqlite:///{db}", background_checkpoints=True)
    try:
        assert store.checkpointer is not None
        with store.begin() as conn:
            assert conn.exec_driver_sql("PRAGMA wal_autocheckpoint").scalar() == 0
        # Far more than the 1,000 pages that would make a commit checkpoint by itself.
        payload = "x" * 3000
        for batch in range(40):
            with store.begin() as conn:
                conn.execute(
                    schema.audit_log.insert(),
                    [
                        {"ts": float(i), "actor": "t", "action": "fill", "target": str(i),
                         "detail": {"pad": payload}}
                        for i in range(batch * 100, batch * 100 + 100)
                    ],
                )  # fmt: skip
        deadline = time.monotonic() + 10
        while store.checkpointer.pages == 0 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert store.checkpointer.pages > 1000
        with store.begin() as conn:
            count = conn.execute(sa.select(sa.func.count()).select_from(schema.audit_log)).scalar()
        assert count == 4000
    finally:
        checkpointer = store.checkpointer
        store.dispose()
    assert checkpointer is not None and not checkpointer._thread.is_alive()
    # Everything is in the database file itself once the WAL is checkpointed and dropped.
    reopened = open_store(f"sqlite:///{db}", migrate=False)
    try:
        with reopened.begin() as conn:
            assert conn.exec_driver_sql("PRAGMA wal_autocheckpoint").scalar() == 1000
            count = conn.execute(sa.select(sa.func.count()).select_from(schema.audit_log)).scalar()
        assert count == 4000
    finally:
        reopened.dispose()


def test_memory_and_default_stores_keep_sqlite_checkpoints(tmp_path: Path) -> None:
    store = open_store(f"sqlite:///{tmp_path / 'cli.sqlite3'}")
    try:
        assert store.checkpointer is None
    finally:
        store.dispose()
