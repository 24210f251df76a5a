"""The decide hot path's statements on SQLite, run on the DBAPI cursor of the Core connection.

Why: at 1,000 events/s a decide batch holds 3-4 events, and SQLAlchemy's per-``execute``
machinery (execution context, bind and result processors, expanding ``IN`` lists) cost more
than SQLite running the statements: py-spy put ~28% of the engine's samples in
``Connection.execute``. The same statements issued on the raw ``sqlite3`` cursor (inside the
same transaction: the cursor belongs to the Core connection) take a fraction of that.
Measured with ``bench.pipeline --rate 1000`` (together with the deliver claim and dot marker on
the same cursor, ``engine.deliver.ledger``): ``Connection.execute`` 27% -> 3% of samples, engine
CPU 50-59% -> 41-47%, publish-to-250 p50 6.4-9.5 ms -> 5.0-5.9 ms.
PostgreSQL keeps the Core statements of :mod:`engine.decide.sql`.

JSON columns are written and read exactly as the store's engine does (``orjson``, see
``engine.store.db``), and errors are raised as SQLAlchemy's, so ``TRANSIENT_DB_ERRORS``
still sees a locked database.
"""

from __future__ import annotations

import functools
import operator
import sqlite3
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import orjson
from sqlalchemy import JSON, Connection, Table
from sqlalchemy.exc import DBAPIError

_UPSERT_CONTACTS = (
    "INSERT INTO contacts (id, email, traits, timezone, consent, first_seen_at, last_seen_at, "
    "updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (id) DO UPDATE SET "
    "email = excluded.email, traits = excluded.traits, timezone = excluded.timezone, "
    "first_seen_at = excluded.first_seen_at, last_seen_at = excluded.last_seen_at, "
    "updated_at = excluded.updated_at"
)
_INSERT_ACTIVITY = (
    "INSERT INTO activity (contact_id, name, properties, message_id, ts) VALUES (?, ?, ?, ?, ?)"
)


def dumps(value: Any) -> str:
    """A JSON column's value as the store's engine writes it (``engine.store.db._json_dumps``)."""
    return orjson.dumps(value, default=str).decode("utf-8")


def loads(value: str | bytes | None) -> Any:
    return None if value is None else orjson.loads(value)


def padded(values: Sequence[Any]) -> list[Any]:
    """``values`` with its last one repeated up to the next power of two: for an ``IN`` list
    (or rows an ``INSERT ... DO NOTHING`` skips as duplicates), so the statement's text is one
    of a few and stays in the connection's prepared-statement cache. A statement of a hundred
    ids compiled afresh took 0.1-0.5 ms, more than running it; decide and the claim run half a
    dozen such statements a batch."""
    n = len(values)
    if n <= 2:
        return list(values)
    size = 1 << (n - 1).bit_length()
    return [*values, *([values[-1]] * (size - n))]


def in_list(values: Sequence[Any]) -> tuple[str, list[Any]]:
    """The placeholders of an ``IN (...)`` for ``values``, and the values, both padded."""
    values = padded(values)
    return marks(len(values)), values


def marks(n: int) -> str:
    """``n`` comma-separated ``?`` placeholders."""
    return ", ".join("?" * n)


@contextmanager
def _cursor(conn: Connection, statement: str) -> Iterator[sqlite3.Cursor]:
    dbapi: Any = conn.connection.dbapi_connection
    cursor: sqlite3.Cursor = dbapi.cursor()
    try:
        yield cursor
    except sqlite3.Error as exc:
        raise DBAPIError.instance(statement, None, exc, sqlite3.Error) from exc
    finally:
        cursor.close()


def run(conn: Connection, statement: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
    """One statement; its rows (RETURNING included)."""
    with _cursor(conn, statement) as cursor:
        cursor.execute(statement, params)
        return cursor.fetchall()


def run_many(conn: Connection, statement: str, rows: Sequence[Sequence[Any]]) -> None:
    with _cursor(conn, statement) as cursor:
        cursor.executemany(statement, rows)


def claim_events(conn: Connection, rows: Sequence[tuple[str, int, float]]) -> set[str]:
    """INSERT OR IGNORE of (message_id, stream_seq, processed_at); the message ids inserted."""
    rows = padded(rows)  # a repeated row clashes with itself: skipped, not returned twice
    values = ", ".join(["(?, ?, ?)"] * len(rows))
    statement = (
        f"INSERT INTO processed_events (message_id, stream_seq, processed_at) VALUES {values} "
        "ON CONFLICT (message_id) DO NOTHING RETURNING message_id"
    )
    params = [v for row in rows for v in row]
    return {row[0] for row in run(conn, statement, params)}


def contacts(conn: Connection, ids: Sequence[str]) -> list[tuple[Any, ...]]:
    """(id, email, traits, timezone, first_seen_at, last_seen_at) of the stored ``ids``."""
    places, values = in_list(ids)
    statement = (
        "SELECT id, email, traits, timezone, first_seen_at, last_seen_at FROM contacts "
        f"WHERE id IN ({places})"
    )
    return run(conn, statement, values)


def upsert_contacts(conn: Connection, rows: Sequence[dict[str, Any]]) -> None:
    run_many(
        conn,
        _UPSERT_CONTACTS,
        [
            (
                r["id"],
                r["email"],
                dumps(r["traits"]),
                r["timezone"],
                dumps(r["consent"]),
                r["first_seen_at"],
                r["last_seen_at"],
                r["updated_at"],
            )
            for r in rows
        ],
    )


def insert_activity(conn: Connection, rows: Sequence[dict[str, Any]]) -> None:
    run_many(
        conn,
        _INSERT_ACTIVITY,
        [
            (r["contact_id"], r["name"], dumps(r["properties"]), r["message_id"], r["ts"])
            for r in rows
        ],
    )


def activity(
    conn: Connection, ids: Sequence[str], names: Sequence[str], since: float
) -> list[tuple[Any, ...]]:
    """(contact_id, name, ts, properties) of these contacts' events since ``since``, in order."""
    who, ids = in_list(ids)
    what, names = in_list(names)
    statement = (
        "SELECT contact_id, name, ts, properties FROM activity "
        f"WHERE contact_id IN ({who}) AND name IN ({what}) AND ts > ? ORDER BY id"
    )
    return run(conn, statement, [*ids, *names, since])


def cancel_timers(conn: Connection, enrollment_ids: Sequence[str]) -> None:
    """End the pending timers of these enrollments. ``+state``: without statistics SQLite's
    planner looked them up through the ``(state, fire_at)`` index, reading every pending timer
    of every contact (13,000 after five minutes at 1,000 events/s) for each enrollment, rather
    than through the enrollment's own index."""
    which, enrollment_ids = in_list(enrollment_ids)
    statement = (
        "UPDATE timers SET state = 'cancelled' "
        f"WHERE enrollment_id IN ({which}) AND +state = 'pending'"
    )
    run(conn, statement, enrollment_ids)


_ENROLLMENT_COLUMNS = (
    "id, workflow_id, workflow_version, contact_id, trigger_event_id, trigger, step_id, state, "
    "waiting_for, exit_reason, entered_at, updated_at"
)


def enrollments(
    conn: Connection, ids: Sequence[str], workflows: Sequence[str], live: Sequence[str]
) -> list[tuple[Any, ...]]:
    """Enrollments of these contacts that are ``live`` or in ``workflows``, oldest first
    (columns as :data:`_ENROLLMENT_COLUMNS`; JSON columns still encoded)."""
    who, ids = in_list(ids)
    which, workflows = in_list(workflows)
    in_workflows = f"workflow_id IN ({which})" if workflows else "0"
    statement = (
        f"SELECT {_ENROLLMENT_COLUMNS} FROM enrollments WHERE contact_id IN ({who}) "
        f"AND (state IN ({marks(len(live))}) OR {in_workflows}) ORDER BY entered_at, id"
    )
    return run(conn, statement, [*ids, *live, *workflows])


@functools.cache
def _json_columns(table: Table) -> frozenset[str]:
    return frozenset(c.name for c in table.c if isinstance(c.type, JSON))


_INSERT_SQL: dict[tuple[str, tuple[str, ...], tuple[str, ...]], str] = {}


def insert(
    conn: Connection,
    table: Table,
    rows: Sequence[dict[str, Any]],
    *,
    conflict: Sequence[str] = (),
    returning: Sequence[str] = (),
) -> list[tuple[Any, ...]]:
    """INSERT ``rows`` (all with the same keys; JSON columns encoded here), skipping rows that
    clash on the ``conflict`` columns; the ``returning`` columns of the rows inserted, in the
    order given.

    ``returning`` starts with the table's primary key, whose values the rows bring: the rows
    go in with one ``executemany`` of a one-row statement, and when some clashed, the ones
    inserted are the ones whose key is in the table now. Why not ``RETURNING``: it needs one
    statement holding every row, a new statement text for every batch size, which SQLite
    compiles afresh (a connection keeps 256 prepared); measured on the intents table at 100
    rows, 24-27 us a row against 15-17 us.

    A ``None`` in a JSON column is stored as SQL NULL here (callers rely on that only where
    Core did the same: ``waiting_for`` of an enrollment not waiting)."""
    if not rows:
        return []
    keys = tuple(rows[0])
    json_columns = _json_columns(table)
    encoded = [i for i, k in enumerate(keys) if k in json_columns]
    pick = _tuple_of(keys)
    values: list[Sequence[Any]] = [pick(row) for row in rows]
    if encoded:
        fixed: list[Sequence[Any]] = []
        for value in values:
            row = list(value)
            for i in encoded:
                if row[i] is not None:
                    row[i] = dumps(row[i])
            fixed.append(row)
        values = fixed
    if returning and [c.name for c in table.primary_key.columns] != [returning[0]]:
        raise ValueError(f"returning must start with {table.name}'s primary key")
    statement = _insert_sql(table, keys, conflict)
    with _cursor(conn, statement) as cursor:
        cursor.executemany(statement, values)
        inserted = cursor.rowcount
    if not returning:
        return []
    key = returning[0]
    back = _tuple_of(tuple(returning))
    found = [back(row) for row in rows]
    if inserted == len(rows):
        return found
    present: set[Any] = set()
    ids = [row[key] for row in rows]
    for start in range(0, len(ids), 30_000):
        chunk = ids[start : start + 30_000]
        query = f"SELECT {key} FROM {table.name} WHERE {key} IN ({marks(len(chunk))})"
        present.update(r[0] for r in run(conn, query, chunk))
    return [f for f, row in zip(found, rows, strict=True) if row[key] in present]


def _tuple_of(keys: tuple[str, ...]) -> Callable[[dict[str, Any]], tuple[Any, ...]]:
    """A row's values for ``keys`` as a tuple (``itemgetter`` in C; it returns a bare value
    for a single key)."""
    if len(keys) == 1:
        (only,) = keys
        return lambda row: (row[only],)
    return operator.itemgetter(*keys)


def _insert_sql(table: Table, keys: tuple[str, ...], conflict: Sequence[str]) -> str:
    cache_key = (table.name, keys, tuple(conflict))
    statement = _INSERT_SQL.get(cache_key)
    if statement is None:
        statement = f"INSERT INTO {table.name} ({', '.join(keys)}) VALUES ({marks(len(keys))})"
        if conflict:
            statement += f" ON CONFLICT ({', '.join(conflict)}) DO NOTHING"
        if len(_INSERT_SQL) < 4096:
            _INSERT_SQL[cache_key] = statement
    return statement


def update_enrollments(conn: Connection, rows: Sequence[dict[str, Any]], waiting: bool) -> None:
    """Rows as ``changes._changed_row`` makes them; ``waiting`` False: waiting_for := NULL."""
    statement = (
        "UPDATE enrollments SET step_id = ?, state = ?, exit_reason = ?, updated_at = ?, "
        "waiting_for = ? WHERE id = ?"
    )
    run_many(
        conn,
        statement,
        [
            (
                r["step_id"],
                r["state"],
                r["exit_reason"],
                r["updated_at"],
                dumps(r["waiting_for"]) if waiting else None,
                r["b_id"],
            )
            for r in rows
        ],
    )
