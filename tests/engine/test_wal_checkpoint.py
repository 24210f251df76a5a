"""A running node's SQLite store checkpoints its WAL on a thread, never inside a commit."""

from __future__ import annotations

import time
from pathlib import Path

import sqlalchemy as sa

from engine.store import Store, open_store, schema


def _fill(store: Store, first: int, count: int) -> None:
    """One commit of ``count`` audit rows of ~3 KB each (about one page apiece)."""
    with store.begin() as conn:
        conn.execute(
            schema.audit_log.insert(),
            [
                {"ts": float(i), "actor": "t", "action": "fill", "target": str(i),
                 "detail": {"pad": "x" * 3000}}
                for i in range(first, first + count)
            ],
        )  # fmt: skip


def test_commits_leave_the_wal_to_the_checkpoint_thread(tmp_path: Path) -> None:
    db = tmp_path / "engine.sqlite3"
    store = open_store(f"sqlite:///{db}", background_checkpoints=True)
    try:
        assert store.checkpointer is not None
        with store.begin() as conn:
            assert conn.exec_driver_sql("PRAGMA wal_autocheckpoint").scalar() == 0
        # Far more than the 1,000 pages that would make a commit checkpoint by itself.
        for batch in range(40):
            _fill(store, batch * 100, 100)
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


def test_a_steady_stream_of_commits_does_not_grow_the_wal_without_bound(tmp_path: Path) -> None:
    """Passive checkpoints never catch up with commits that keep coming (measured: the log grew
    by 10,000 pages a second here); the restart starts the log over."""
    from engine.store.checkpoint import WalCheckpointer

    db = tmp_path / "engine.sqlite3"
    store = open_store(f"sqlite:///{db}", background_checkpoints=True)
    assert store.checkpointer is not None
    store.checkpointer.close()  # this test's own, with a low restart threshold and fast turns
    checkpointer = store.checkpointer = WalCheckpointer(str(db), interval=0.02, restart_pages=300)
    checkpointer.start()
    wal = Path(f"{db}-wal")
    biggest = 0
    try:
        for batch in range(1000):  # a commit every half millisecond, like a busy engine
            _fill(store, batch * 5, 5)
            biggest = max(biggest, wal.stat().st_size)
            time.sleep(0.0005)
        assert checkpointer.restarts > 0
        pages = biggest // 4120  # a WAL frame: a 4 KiB page and its 24-byte header
        assert pages < 1500, f"the WAL grew to {pages:,} pages"
    finally:
        store.dispose()


def test_a_deliver_process_leaves_the_checkpoints_to_its_parent(tmp_path: Path) -> None:
    """Two checkpointers on one file did the work twice, and a restart from the child made the
    parent's commits wait."""
    store = open_store(
        f"sqlite:///{tmp_path / 'engine.sqlite3'}",
        background_checkpoints=True,
        checkpointed_elsewhere=True,
    )
    try:
        assert store.checkpointer is None
        with store.begin() as conn:  # nor inside its own commits
            assert conn.exec_driver_sql("PRAGMA wal_autocheckpoint").scalar() == 0
    finally:
        store.dispose()
