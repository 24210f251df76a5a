"""The contact traits and event properties actually seen in the stream, for completion and lint.

Read from the store: the traits of the most recently updated contacts and the properties of the
most recent activity. Nested objects give dotted paths (``properties.products``, and
``properties.products[].name`` for lists of objects), each with how often it was seen and an
example value (cut short), so the editor can offer ``{{ contact.first_name }}`` and the lint can
tell a typo from a field the stream has.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from typing import Any

import sqlalchemy as sa

from engine.store import schema

CONTACTS_SCANNED = 500
EVENTS_SCANNED = 2_000
EXAMPLE_CHARS = 60
_DEPTH = 3


def _walk(value: Any, prefix: str, depth: int) -> Iterable[tuple[str, Any]]:
    if not isinstance(value, dict) or depth > _DEPTH:
        return
    for key, item in value.items():
        if not isinstance(key, str):
            continue
        path = f"{prefix}{key}"
        yield path, item
        if isinstance(item, dict):
            yield from _walk(item, f"{path}.", depth + 1)
        elif isinstance(item, list) and item and isinstance(item[0], dict):
            yield from _walk(item[0], f"{path}[].", depth + 1)


def _example(value: Any) -> str:
    if isinstance(value, dict):
        return "{…}"
    if isinstance(value, list):
        return f"[{len(value)} items]"
    text = str(value)
    return text if len(text) <= EXAMPLE_CHARS else text[: EXAMPLE_CHARS - 1] + "…"


def _tally(objects: Iterable[Any]) -> list[dict[str, Any]]:
    counts: Counter[str] = Counter()
    examples: dict[str, str] = {}
    for obj in objects:
        for path, value in _walk(obj, "", 1):
            counts[path] += 1
            if path not in examples and value not in (None, "", [], {}):
                examples[path] = _example(value)
    return [
        {"path": path, "count": count, "example": examples.get(path, "")}
        for path, count in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))
    ]


def fields_seen(conn: sa.Connection) -> dict[str, Any]:
    """``{"traits": [...], "properties": [...], "events": {name: [...]}}``; each entry
    ``{"path", "count", "example"}``, most common first."""
    c, a = schema.contacts, schema.activity
    traits = conn.execute(
        sa.select(c.c.traits).order_by(c.c.updated_at.desc()).limit(CONTACTS_SCANNED)
    ).scalars()
    rows = conn.execute(
        sa.select(a.c.name, a.c.properties).order_by(a.c.id.desc()).limit(EVENTS_SCANNED)
    ).all()
    by_event: dict[str, list[Any]] = {}
    for name, properties in rows:
        by_event.setdefault(str(name), []).append(properties)
    return {
        "traits": _tally(traits),
        "properties": _tally(p for _, p in rows),
        "events": {name: _tally(props) for name, props in sorted(by_event.items())},
    }


def top_level(entries: list[dict[str, Any]]) -> frozenset[str]:
    """The first path segment of every entry (what ``contact.X`` or ``properties.X`` can be)."""
    return frozenset(str(e["path"]).split(".", 1)[0].split("[", 1)[0] for e in entries)
