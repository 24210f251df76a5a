"""Writing exposures (who got which arm) inside the decide or timer transaction."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import sqlalchemy as sa
from sqlalchemy import Connection
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.sql import Insert

from engine.store import schema


def insert_ignore(conn: Connection, table: sa.Table, index: list[str]) -> Insert:
    """INSERT that skips rows whose unique key exists (PostgreSQL and SQLite)."""
    if conn.dialect.name == "postgresql":
        return postgresql.insert(table).on_conflict_do_nothing(index_elements=index)
    return sqlite.insert(table).on_conflict_do_nothing(index_elements=index)


def write_exposures(conn: Connection, rows: Sequence[Mapping[str, Any]]) -> None:
    """Store exposures; one per experiment and enrollment (a replayed decision adds none)."""
    if rows:
        stmt = insert_ignore(conn, schema.experiment_exposures, ["experiment_id", "enrollment_id"])
        conn.execute(stmt, list(rows))


def load_winners(conn: Connection, experiment_ids: Sequence[str]) -> dict[str, str]:
    """Promoted winners of these experiments (experiment id -> variant id)."""
    if not experiment_ids:
        return {}
    t = schema.experiments
    found = conn.execute(
        sa.select(t.c.id, t.c.winner).where(
            t.c.id.in_(sorted(experiment_ids)), t.c.state == "promoted"
        )
    )
    return {str(eid): str(winner) for eid, winner in found if winner}


def winners_for(conn: Connection, workflows: Iterable[Any]) -> dict[str, str]:
    """Promoted winners of the experiments these workflows run (no query when none has one)."""
    ids = sorted({e.id for wf in workflows for e in wf.experiments()})
    return load_winners(conn, ids)
