"""The contact verbs of the "Why" explorer (envelope in engine/control.py).

- ``contacts.show {contact}`` -> the profile: traits, consent, subscription, suppression, counts
  and ``blocked`` (what would stop marketing / transactional mail now, in words);
- ``contacts.timeline {contact, limit?}`` -> ``{entries, more}``: the latest ``limit`` (default
  50, at most 500) events, emails and segment entries/exits, oldest first;
- ``contacts.segments {contact}`` -> every segment the contact is or was in, with each period's
  enter and exit time;
- ``contacts.enrollments {contact, workflow?, limit?}`` -> the latest enrollments (default 20,
  at most 100), newest first, each with every decision in order (trigger matched, waited,
  branch taken, queued, sent with the relay's reply, suppressed, exited, converted ...);
- ``contacts.why_not {contact, workflow}`` -> the first reason the contact did not get that
  workflow's email, in words (engine/why_not.py), and what would still stop it; without
  ``workflow``, ``{contact, answers}`` with one answer per workflow (newest versions).

``contacts.search`` and ``contacts.events`` live with the template editor's verbs
(engine/authoring/operations.py). Bad arguments are refused with a message naming the problem.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa

from engine import contact_story
from engine.control import ControlError, ControlServer, check_keys, limit_arg, required_text
from engine.decide.registry import WorkflowRegistry
from engine.segments.membership import SegmentRegistry
from engine.why_not import why_not

if TYPE_CHECKING:
    from engine.node import Node


def register_contact_operations(control: ControlServer, node: Node) -> None:
    """Register the contact verbs on the node's control server."""

    store = node.require_store

    def registry() -> WorkflowRegistry:
        library = node.components.get("library")
        if library is None:
            raise ControlError("workflows are not loaded on this node")
        found = library.workflows
        assert isinstance(found, WorkflowRegistry)
        return found

    def segment_names() -> dict[str, str]:
        found = node.components.get("segments")
        if not isinstance(found, SegmentRegistry):
            return {}
        return {sid: seg.name for sid, seg in found.index.segments.items()}

    def contact(conn: sa.Connection, contact_id: str) -> Any:
        row = contact_story.contact_row(conn, contact_id)
        if row is None:
            raise ControlError(f"there is no contact {contact_id!r}")
        return row

    async def contacts_show(args: dict[str, Any], actor: str) -> Any:
        check_keys(args, ("contact",))
        cid = required_text(args, "contact")

        def run() -> dict[str, Any]:
            with store().begin() as conn:
                return contact_story.profile(conn, contact(conn, cid))

        return await asyncio.to_thread(run)

    async def contacts_timeline(args: dict[str, Any], actor: str) -> Any:
        check_keys(args, ("contact", "limit"))
        cid = required_text(args, "contact")
        limit = limit_arg(args, 50, 500)

        def run() -> dict[str, Any]:
            with store().begin() as conn:
                contact(conn, cid)
                return contact_story.timeline(conn, cid, limit)

        return await asyncio.to_thread(run)

    async def contacts_segments(args: dict[str, Any], actor: str) -> Any:
        check_keys(args, ("contact",))
        cid = required_text(args, "contact")
        names = segment_names()

        def run() -> dict[str, Any]:
            with store().begin() as conn:
                contact(conn, cid)
                return {"contact": cid, "segments": contact_story.memberships(conn, cid, names)}

        return await asyncio.to_thread(run)

    async def contacts_enrollments(args: dict[str, Any], actor: str) -> Any:
        check_keys(args, ("contact", "workflow", "limit"))
        cid = required_text(args, "contact")
        limit = limit_arg(args, 20, 100)
        workflow = required_text(args, "workflow", 100) if "workflow" in args else None
        newest = dict(registry().index.live)

        def run() -> dict[str, Any]:
            with store().begin() as conn:
                contact(conn, cid)
                found = contact_story.enrollments(conn, cid, newest, limit, workflow)
            return {"contact": cid, "enrollments": found}

        return await asyncio.to_thread(run)

    async def contacts_why_not(args: dict[str, Any], actor: str) -> Any:
        check_keys(args, ("contact", "workflow"))
        cid = required_text(args, "contact")
        index = registry().index
        newest = dict(index.live)
        if "workflow" in args:
            wid = required_text(args, "workflow", 100)
            if wid not in newest:
                names = ", ".join(sorted(newest)) or "none yet"
                raise ControlError(f"there is no workflow {wid!r} (workflows: {names})")
            chosen = [newest[wid]]
        else:
            chosen = [newest[w] for w in sorted(newest)]
        now = node.clock.now()

        def run() -> list[dict[str, Any]]:
            with store().begin() as conn:
                row = contact(conn, cid)
                return [why_not(conn, row, wf, newest, now) for wf in chosen]

        answers = await asyncio.to_thread(run)
        return answers[0] if "workflow" in args else {"contact": cid, "answers": answers}

    for verb, handler in (
        ("contacts.show", contacts_show),
        ("contacts.timeline", contacts_timeline),
        ("contacts.segments", contacts_segments),
        ("contacts.enrollments", contacts_enrollments),
        ("contacts.why_not", contacts_why_not),
    ):
        control.register(verb, handler)
