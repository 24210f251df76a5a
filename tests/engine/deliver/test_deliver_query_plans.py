"""The deliver stage's hot statements on SQLite find their rows by id, whatever the backlog.

SQLite without statistics preferred the (status, next_attempt_at) index for "these ids, still
queued": every claim then read every due intent (the whole backlog) and every dot marker every
claimed one. The plans are checked with EXPLAIN QUERY PLAN on the statements the ledger really
ran (SQLite's trace of each statement, its values in place).
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from deliver_support import add_intent
from sqlalchemy import event

from engine.deliver.ledger import Ledger
from engine.experiments.conversions import _sent_mails
from engine.store import Store
from tests.engine.sqlite_support import plan as query_plan


@contextmanager
def traced(store: Store) -> Iterator[list[str]]:
    """Every statement SQLite runs on the store's connections meanwhile, values in place."""
    statements: list[str] = []

    def on_checkout(dbapi_conn: Any, _record: Any, _proxy: Any) -> None:
        dbapi_conn.set_trace_callback(statements.append)

    event.listen(store.engine, "checkout", on_checkout)
    try:
        yield statements
    finally:
        event.remove(store.engine, "checkout", on_checkout)
        with store.engine.connect() as conn:
            conn.connection.dbapi_connection.set_trace_callback(None)  # type: ignore[union-attr]


def plan(store: Store, statement: str) -> list[str]:
    with store.begin() as conn:
        return query_plan(conn, statement)


def test_claims_and_dot_markers_look_their_ids_up(store: Store) -> None:
    now = time.time()
    backlog = [add_intent(store, f"ok-{n}@example.com", now=now) for n in range(50)]
    ledger = Ledger(store, node="n", owner="n/1")
    with traced(store) as statements:
        assert len(ledger.claim(now=now, lease_until=now + 30, limit=10, ids=backlog[:5]).intents)
        assert len(ledger.claim(now=now, lease_until=now + 30, limit=5).intents) == 5  # a poll
        assert ledger.commit(now=now, dots=backlog[:3], lease_until=now + 30, outcomes=[])
    updates = [s for s in statements if s.startswith("UPDATE intents")]
    assert len(updates) == 3
    for statement in updates:
        steps = plan(store, statement)
        picks = [s for s in steps if "ix_intents_status_next" in s]
        # The rows are found by id; only a poll's pick of the oldest due reads the status
        # index, in order and up to its limit, inside its subquery.
        assert any("INDEX sqlite_autoindex_intents_1 (id=?)" in s for s in steps), steps
        assert len(picks) <= 1 and (not picks or "LIMIT" in statement), steps


def test_conversions_read_the_contacts_mails_not_the_whole_history(store: Store) -> None:
    with traced(store) as statements, store.begin() as conn:
        _sent_mails(conn, ["c1", "c2"], ["order-confirmation", "welcome"], 0.0)
    (statement,) = [s for s in statements if "FROM intents" in s]
    assert plan(store, statement) == [
        "SEARCH intents USING INDEX ix_intents_contact (contact_id=?)"
    ]
