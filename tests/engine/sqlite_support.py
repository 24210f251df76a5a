"""Watching what SQLite runs: for the tests that check a statement's query plan."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import sqlalchemy as sa


@contextmanager
def traced(conn: sa.Connection) -> Iterator[list[str]]:
    """The statements SQLite runs on ``conn`` meanwhile, values in place."""
    seen: list[str] = []
    dbapi = conn.connection.dbapi_connection
    assert dbapi is not None
    dbapi.set_trace_callback(seen.append)
    try:
        yield seen
    finally:
        dbapi.set_trace_callback(None)


def plan(conn: sa.Connection, statement: str) -> list[str]:
    """SQLite's EXPLAIN QUERY PLAN of ``statement``, a step a line."""
    return [row[3] for row in conn.exec_driver_sql(f"EXPLAIN QUERY PLAN {statement}")]
