"""Stored template versions: list, read, save a new version, and diff two versions.

Every save is a new row of ``email_templates`` (id, version); nothing is overwritten, so any
version can be read back and compared. The newest version of a template is the live one.
"""

from __future__ import annotations

import difflib
from typing import Any

import sqlalchemy as sa

from engine.render import TemplateSource
from engine.store import schema

PARTS = ("subject", "preheader", "body", "text", "from_address", "name", "format", "route")
"""The fields a version holds, in the order a diff shows them."""


def source_from_row(row: dict[str, Any]) -> TemplateSource:
    """The template source a stored row holds."""
    return TemplateSource(
        id=row["id"],
        version=row["version"],
        name=row["name"],
        subject=row["subject"],
        body=row["body"],
        format=row["format"],
        text=row["text"],
        from_address=row["from_address"],
        preheader=row["preheader"],
        route=row.get("route"),
    )


def source_to_dict(source: TemplateSource) -> dict[str, Any]:
    """The wire form of a source (what ``templates.get`` replies and ``templates.save`` takes)."""
    return {
        "id": source.id,
        "version": source.version,
        "name": source.name,
        "subject": source.subject,
        "body": source.body,
        "format": source.format,
        "text": source.text,
        "from_address": source.from_address,
        "preheader": source.preheader,
        "route": source.route,
    }


def latest_versions(conn: sa.Connection) -> dict[str, int]:
    """The newest version number of every template."""
    t = schema.email_templates
    rows = conn.execute(sa.select(t.c.id, sa.func.max(t.c.version)).group_by(t.c.id)).all()
    return {str(tid): int(version) for tid, version in rows}


def load_version(
    conn: sa.Connection, template_id: str, version: int | None = None
) -> dict[str, Any]:
    """One stored version (the newest when ``version`` is None); ``LookupError`` if missing."""
    t = schema.email_templates
    query = sa.select(t).where(t.c.id == template_id)
    if version is None:
        query = query.order_by(t.c.version.desc()).limit(1)
    else:
        query = query.where(t.c.version == version)
    row = conn.execute(query).first()
    if row is None:
        raise LookupError(template_id if version is None else f"{template_id} v{version}")
    return dict(row._mapping)


def list_versions(conn: sa.Connection, template_id: str) -> list[dict[str, Any]]:
    """Every version of a template, newest first: version, created_at, source, subject."""
    t = schema.email_templates
    rows = conn.execute(
        sa.select(t.c.version, t.c.created_at, t.c.source, t.c.subject, t.c.name)
        .where(t.c.id == template_id)
        .order_by(t.c.version.desc())
    )
    return [dict(r._mapping) for r in rows]


def summaries(conn: sa.Connection) -> list[dict[str, Any]]:
    """The newest version of every template with its number of versions, sorted by id."""
    t = schema.email_templates
    counts = (
        sa.select(
            t.c.id,
            sa.func.max(t.c.version).label("version"),
            sa.func.count().label("versions"),
        )
        .group_by(t.c.id)
        .subquery()
    )
    rows = conn.execute(
        sa.select(
            t.c.id,
            t.c.version,
            t.c.name,
            t.c.subject,
            t.c.format,
            t.c.created_at,
            t.c.source,
            counts.c.versions,
        )
        .join(counts, sa.and_(t.c.id == counts.c.id, t.c.version == counts.c.version))
        .order_by(t.c.id)
    )
    return [dict(r._mapping) for r in rows]


def insert_version(conn: sa.Connection, source: TemplateSource, actor: str, now: float) -> None:
    """Store ``source`` as a new row (its version must be free: the key refuses a duplicate)."""
    conn.execute(
        schema.email_templates.insert(),
        {
            "id": source.id,
            "version": source.version,
            "name": source.name,
            "subject": source.subject,
            "body": source.body,
            "format": source.format,
            "text": source.text,
            "from_address": source.from_address,
            "preheader": source.preheader,
            "route": source.route,
            "source": f"console:{actor}"[:500],
            "created_at": now,
        },
    )


def same_content(a: TemplateSource, b: TemplateSource) -> bool:
    """Whether two versions hold the same template (version numbers aside)."""
    return all(getattr(a, part) == getattr(b, part) for part in PARTS)


def diff_versions(old: TemplateSource, new: TemplateSource) -> list[dict[str, Any]]:
    """A unified diff per changed part: ``[{"part", "diff", "added", "removed"}]``."""
    out: list[dict[str, Any]] = []
    for part in PARTS:
        before = getattr(old, part) or ""
        after = getattr(new, part) or ""
        if before == after:
            continue
        lines = list(
            difflib.unified_diff(
                str(before).splitlines(),
                str(after).splitlines(),
                fromfile=f"{part} v{old.version}",
                tofile=f"{part} v{new.version}",
                lineterm="",
            )
        )
        added = sum(1 for line in lines if line.startswith("+") and not line.startswith("+++"))
        removed = sum(1 for line in lines if line.startswith("-") and not line.startswith("---"))
        out.append({"part": part, "diff": "\n".join(lines), "added": added, "removed": removed})
    return out
