"""The segment control verbs (``segments.*``; envelope in engine/control.py).

- ``segments.list`` -> every segment: id, name, version, text, members, build (or null);
- ``segments.get {segment}`` -> the same for one, with ``versions`` (version, actor, created_at);
- ``segments.save {segment, name, text}`` -> validates the text (positioned errors), refuses
  unknown references and cycles, stores a new version with an audit entry (``segments.save``,
  the actor), puts it live and starts its build over the stored contacts; replies with the
  canonical text, the version, ``audit_id`` and the build's status;
- ``segments.count {segment}`` -> ``{segment, members, at}``;
- ``segments.sample {segment, limit?}`` -> up to ``limit`` (default 10, at most 100) members
  ``{contact_id, email, entered_at}``, most recent first;
- ``segments.why {segment, contact}`` -> ``{member, holds, explanation}``: ``member`` as
  stored, ``holds`` evaluated now, ``explanation`` the condition tree with ``held`` and the
  ``value`` each atom looked at;
- ``segments.history {segment, since?, bucket?}`` -> member count at the end of each bucket
  (default 1 h, at most 1,000 buckets) with the entries and exits in it;
- ``segments.build_status {segment?}`` -> the builds this node ran or runs;
- ``segments.preview {text, limit?}`` -> a draft evaluated over the stored contacts without
  saving: ``{text, members, scanned, total, complete, stopped, sample, at, seconds}``, bounded
  (at most 50,000 contacts and about 3 s; ``complete`` false and ``stopped`` say so).

A save goes live on the node that took it at once, and on every other node within a round
trip: it publishes ``segments.changed`` (core NATS) and each node reloads the newest versions
from the store (:func:`follow_segment_changes`), so decide everywhere evaluates the same
definition. Only the saving node builds the membership over the stored contacts.

Bad arguments and bad definitions are refused with a message naming the problem, and nothing
changes.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

import orjson
import sqlalchemy as sa

from engine import notices
from engine.control import ControlError, ControlServer, check_keys, required_text
from engine.segments import definitions
from engine.segments.build import SegmentBuilder
from engine.segments.evaluate import explain, holds
from engine.segments.membership import SegmentRegistry, load_profiles
from engine.segments.model import SEGMENT_ID, SegmentInvalid
from engine.segments.preview import count_draft, parse_draft
from engine.store import schema

if TYPE_CHECKING:
    from engine.node import Node

log = logging.getLogger(__name__)

_MAX_TEXT = 20_000
CHANGED_SUBJECT = "segments.changed"


def _number(args: dict[str, Any], key: str, default: float, low: float, high: float) -> float:
    value = args.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int | float) or not low <= value <= high:
        raise ControlError(f"{key} must be a number from {low:g} to {high:g}")
    return float(value)


def register_segment_operations(control: ControlServer, node: Node) -> None:
    """Register the segment verbs on the node's control server."""

    store = node.require_store

    def registry() -> SegmentRegistry:
        found = node.components.get("segments")
        if not isinstance(found, SegmentRegistry):
            raise ControlError("segments are not loaded on this node")
        return found

    def builder() -> SegmentBuilder:
        found = node.components.get("segment_builder")
        if not isinstance(found, SegmentBuilder):
            raise ControlError("this node does not build segments")
        return found

    def known(args: dict[str, Any]) -> str:
        sid = required_text(args, "segment", 100)
        if sid not in registry().index.segments:
            names = ", ".join(sorted(registry().index.segments)) or "none yet"
            raise ControlError(f"there is no segment {sid!r} (segments: {names})")
        return sid

    def members(conn: sa.Connection, sid: str) -> int:
        m = schema.segment_members
        query = sa.select(sa.func.count()).select_from(m).where(m.c.segment_id == sid)
        return int(conn.execute(query).scalar() or 0)

    def describe(conn: sa.Connection, sid: str) -> dict[str, Any]:
        seg = registry().index.segments[sid]
        from engine.segments.text import format_condition

        builds = builder().status(sid) if "segment_builder" in node.components else []
        return {
            "id": seg.id,
            "name": seg.name,
            "version": seg.version,
            "text": format_condition(seg.condition),
            "members": members(conn, sid),
            "build": builds[0] if builds else None,
        }

    async def segments_list(args: dict[str, Any], actor: str) -> Any:
        check_keys(args, ())

        def run() -> list[dict[str, Any]]:
            with store().begin() as conn:
                return [describe(conn, sid) for sid in sorted(registry().index.segments)]

        return await asyncio.to_thread(run)

    async def segments_get(args: dict[str, Any], actor: str) -> Any:
        check_keys(args, ("segment",))
        sid = known(args)

        def run() -> dict[str, Any]:
            with store().begin() as conn:
                return {**describe(conn, sid), "versions": definitions.versions(conn, sid)}

        return await asyncio.to_thread(run)

    async def segments_save(args: dict[str, Any], actor: str) -> Any:
        check_keys(args, ("segment", "name", "text"))
        sid = required_text(args, "segment", 100)
        if not SEGMENT_ID.fullmatch(sid):
            raise ControlError(
                f"bad segment id {sid!r}: lower-case letters, digits, - and _ (at most 100)"
            )
        name = required_text(args, "name", 200)
        text = required_text(args, "text", _MAX_TEXT)
        segments = registry()
        now = node.clock.now()

        def run() -> tuple[definitions.Prepared, int]:
            with store().begin() as conn:
                version = definitions.next_version(conn, sid)
                prepared = definitions.prepare(
                    sid, name, text, segments.index.segments.values(), version
                )
                audit_id = definitions.save(conn, prepared, actor, now)
            return prepared, audit_id

        try:
            prepared, audit_id = await asyncio.to_thread(run)
        except SegmentInvalid as exc:
            raise ControlError(str(exc)) from exc
        except sa.exc.IntegrityError as exc:  # the same version saved at the same moment
            raise ControlError(
                f"segment {sid!r} was saved by someone else at the same time; load it and retry"
            ) from exc
        segments.index = prepared.index
        status = builder().build(sid)
        if node.nc is not None:
            notice = {"segment": sid, "version": prepared.segment.version}
            await node.nc.publish(
                CHANGED_SUBJECT, orjson.dumps({**notice, "node": node.settings.engine.node})
            )
        return {
            "id": sid,
            "name": name,
            "version": prepared.segment.version,
            "text": prepared.text,
            "audit_id": audit_id,
            "build": status.as_dict(),
        }

    async def segments_count(args: dict[str, Any], actor: str) -> Any:
        check_keys(args, ("segment",))
        sid = known(args)

        def run() -> dict[str, Any]:
            with store().begin() as conn:
                return {"segment": sid, "members": members(conn, sid), "at": node.clock.now()}

        return await asyncio.to_thread(run)

    async def segments_sample(args: dict[str, Any], actor: str) -> Any:
        check_keys(args, ("segment", "limit"))
        sid = known(args)
        limit = int(_number(args, "limit", 10, 1, 100))

        def run() -> dict[str, Any]:
            m, c = schema.segment_members, schema.contacts
            query = (
                sa.select(m.c.contact_id, m.c.entered_at, c.c.email)
                .join(c, c.c.id == m.c.contact_id, isouter=True)
                .where(m.c.segment_id == sid)
                .order_by(m.c.entered_at.desc(), m.c.contact_id)
                .limit(limit)
            )
            with store().begin() as conn:
                rows = [dict(r._mapping) for r in conn.execute(query)]
            return {"segment": sid, "members": rows}

        return await asyncio.to_thread(run)

    async def segments_why(args: dict[str, Any], actor: str) -> Any:
        check_keys(args, ("segment", "contact"))
        sid = known(args)
        contact = required_text(args, "contact")
        index = registry().index
        now = node.clock.now()

        def run() -> dict[str, Any]:
            with store().begin() as conn:
                profiles = load_profiles(conn, index, [contact], now)
            profile = profiles.get(contact)
            if profile is None:
                raise ControlError(f"there is no contact {contact!r}")
            member = profile.memberships.get(sid, False)
            condition = index.segments[sid].condition
            return {
                "segment": sid,
                "contact": contact,
                "member": member,
                "holds": holds(condition, profile, now),
                "at": now,
                "explanation": explain(condition, profile, now),
            }

        return await asyncio.to_thread(run)

    async def segments_history(args: dict[str, Any], actor: str) -> Any:
        check_keys(args, ("segment", "since", "bucket"))
        sid = known(args)
        now = node.clock.now()
        bucket = _number(args, "bucket", 3600, 1, 366 * 86_400)
        since = _number(args, "since", now - 24 * 3600, 0, now)
        if (now - since) / bucket > 1000:
            raise ControlError("too many buckets: at most 1,000 (widen bucket or move since)")

        def run() -> dict[str, Any]:
            h = schema.segment_history
            with store().begin() as conn:
                current = members(conn, sid)
                rows = conn.execute(
                    sa.select(h.c.kind, h.c.at)
                    .where(h.c.segment_id == sid, h.c.at > since)
                    .order_by(h.c.at, h.c.id)
                ).all()
            net = sum(1 if r.kind == "entered" else -1 for r in rows)
            count = current - net  # members at ``since``
            points: list[dict[str, Any]] = []
            edge, i = since, 0
            while edge < now:
                edge = min(edge + bucket, now)
                entered = exited = 0
                while i < len(rows) and rows[i].at <= edge:
                    if rows[i].kind == "entered":
                        entered += 1
                    else:
                        exited += 1
                    i += 1
                count += entered - exited
                points.append({"at": edge, "members": count, "entered": entered, "exited": exited})
            return {"segment": sid, "since": since, "bucket": bucket, "points": points}

        return await asyncio.to_thread(run)

    async def segments_build_status(args: dict[str, Any], actor: str) -> Any:
        check_keys(args, ("segment",))
        sid = known(args) if "segment" in args else None
        return {"builds": builder().status(sid)}

    async def segments_preview(args: dict[str, Any], actor: str) -> Any:
        check_keys(args, ("text", "limit"))
        text = required_text(args, "text", _MAX_TEXT)
        limit = int(_number(args, "limit", 10, 0, 100))
        index = registry().index
        try:
            condition = parse_draft(text, index)
        except SegmentInvalid as exc:
            raise ControlError(str(exc)) from exc
        now = node.clock.now()
        found = await asyncio.to_thread(count_draft, store(), index, condition, now, sample=limit)
        return found.as_dict()

    for verb, handler in (
        ("segments.list", segments_list),
        ("segments.get", segments_get),
        ("segments.save", segments_save),
        ("segments.count", segments_count),
        ("segments.sample", segments_sample),
        ("segments.why", segments_why),
        ("segments.history", segments_history),
        ("segments.build_status", segments_build_status),
        ("segments.preview", segments_preview),
    ):
        control.register(verb, handler)


async def follow_segment_changes(node: Node) -> Callable[[], Awaitable[None]]:
    """Subscribe to ``segments.changed``: on a notice from another node, reload every segment's
    newest version from the store and swap the index as a whole (decide never sees half of
    it). Notices that arrive during a reload are folded into one more reload.

    Returns the coroutine function that unsubscribes (for the node's shutdown stack).
    """
    nc, store = node.nc, node.store
    if nc is None or store is None:
        raise ControlError("not connected to NATS and the store")
    me = node.settings.engine.node

    async def reload_segments() -> None:
        loaded = await asyncio.to_thread(definitions.load_segments, store)
        registry = node.components.get("segments")
        if isinstance(registry, SegmentRegistry):
            registry.replace(loaded)
            log.info("segments reloaded: %d live", len(loaded))

    reload = notices.folded(reload_segments)

    async def on_notice(notice: dict[str, Any]) -> None:
        if str(notice["node"]) != me:  # the saving node swapped its index already
            await reload()

    return await notices.follow(
        nc,
        CHANGED_SUBJECT,
        on_notice,
        errors=(sa.exc.SQLAlchemyError, SegmentInvalid),
        what="reload the segments",
    )
