"""Segment definitions in the store: every version kept, the text in its canonical form.

``prepare`` validates a definition against the segments already defined (text, id, name, no
unknown references, no cycles) before anything is written; ``save`` writes the new version and
its audit entry in one transaction.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from sqlalchemy import Connection

from engine.segments.membership import SegmentIndex
from engine.segments.model import Segment, SegmentInvalid
from engine.segments.text import format_condition, parse_condition
from engine.store import Store, schema


@dataclass(frozen=True)
class Prepared:
    """A validated new version and the index it will make."""

    segment: Segment
    text: str  # canonical
    index: SegmentIndex


def prepare(sid: str, name: str, text: str, current: Iterable[Segment], version: int) -> Prepared:
    """Validate ``text`` as version ``version`` of segment ``sid``; ``SegmentInvalid`` if not."""
    try:
        condition = parse_condition(text)
    except SegmentInvalid as exc:
        raise SegmentInvalid(f"segment {sid!r}: {exc}") from None
    segment = Segment(sid, name, version, condition)
    others = [s for s in current if s.id != sid]
    index = SegmentIndex.build([*others, segment])
    return Prepared(segment, format_condition(condition), index)


def next_version(conn: Connection, sid: str) -> int:
    t = schema.segments
    found = conn.execute(sa.select(sa.func.max(t.c.version)).where(t.c.id == sid)).scalar()
    return int(found or 0) + 1


def save(conn: Connection, prepared: Prepared, actor: str, now: float) -> int:
    """Insert the version and an audit entry (action ``segments.save``); returns the audit id."""
    seg = prepared.segment
    conn.execute(
        schema.segments.insert(),
        {
            "id": seg.id,
            "version": seg.version,
            "name": seg.name,
            "definition": prepared.text,
            "actor": actor[:200],
            "created_at": now,
        },
    )
    audit = conn.execute(
        schema.audit_log.insert().returning(schema.audit_log.c.id),
        {
            "ts": now,
            "actor": actor[:200],
            "action": "segments.save",
            "target": f"segment {seg.id} v{seg.version}",
            "count": 1,
            "detail": {"name": seg.name, "text": prepared.text},
        },
    )
    return int(audit.scalar_one())


def load_segments(store: Store) -> list[Segment]:
    """The newest version of every stored segment."""
    return [_segment(row) for row in _newest(store)]


def _newest(store: Store) -> list[Any]:
    t = schema.segments
    newest = (
        sa.select(t.c.id, sa.func.max(t.c.version).label("version")).group_by(t.c.id).subquery()
    )
    query = (
        sa.select(t)
        .join(newest, sa.and_(t.c.id == newest.c.id, t.c.version == newest.c.version))
        .order_by(t.c.id)
    )
    with store.begin() as conn:
        return list(conn.execute(query))


def _segment(row: Any) -> Segment:
    return Segment(row.id, row.name, row.version, parse_condition(row.definition))


def versions(conn: Connection, sid: str) -> list[dict[str, Any]]:
    t = schema.segments
    rows = conn.execute(
        sa.select(t.c.version, t.c.actor, t.c.created_at)
        .where(t.c.id == sid)
        .order_by(t.c.version.desc())
    )
    return [dict(r._mapping) for r in rows]
