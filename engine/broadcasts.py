"""Broadcasts: one template to every member of a segment, now or at a set time (docs/caps.md).

A broadcast is a row of ``broadcasts``. Once due, one node's ``BroadcastService`` claims it
(``state = sending`` with a lease) and fans it out: a page of members at a time, in contact id
order from ``cursor``, each page in one transaction that creates the page's intents and moves
the cursor. The intents enter the same ledger as triggered mail (workflow ``broadcast:<id>``,
step ``send``) and go through the same deliver stage, routes, limits, suppression checks,
frequency caps and quiet hours. Their dedup key is (broadcast, contact): a page done twice (a
crash after its commit and before the next, a second node after a lease ran out) inserts
nothing, so nobody is mailed twice.

Cancelling stops the fan-out (the page transaction only proceeds while the row is still
``sending`` and still ours) and cancels the broadcast's intents still pending; sent mail stays
sent. Creation and cancellation write an audit entry in their transaction; ``preview`` counts
and changes nothing.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy import Connection

from engine.clock import Clock
from engine.decide.workflow import CATEGORIES, PRIORITIES, parse_priority
from engine.errors import EngineError
from engine.ids import dedup_key, new_id
from engine.pacing.caps import enforce_caps
from engine.pacing.policy import Pacing
from engine.store import Store, schema
from engine.telemetry import Telemetry

log = logging.getLogger(__name__)

SCHEDULED = "scheduled"
SENDING = "sending"
SENT = "sent"
CANCELLED = "cancelled"
STATES = (SCHEDULED, SENDING, SENT, CANCELLED)
PREFIX = "broadcast:"  # the intents' workflow_id is PREFIX + the broadcast id
STEP = "send"
DEFAULT_PRIORITY = PRIORITIES["low"]  # a promotion gives way to triggered mail under a cap
LEASE_S = 60.0
PAGE = 500
_MAX_REASON = 500

_B = schema.broadcasts
_I = schema.intents.c


class BroadcastError(EngineError, ValueError):
    """A broadcast request was refused; nothing was changed. Shown to the operator as is."""


@dataclass(frozen=True, slots=True)
class BroadcastRequest:
    """What ``create`` needs, checked by :meth:`checked`."""

    template: str
    segment: str
    name: str = ""
    send_at: float | None = None  # None: now
    category: str = "marketing"
    route: str = "default"
    priority: int | str = DEFAULT_PRIORITY

    def checked(self, now: float) -> BroadcastRequest:
        for key in ("template", "segment", "route"):
            value = getattr(self, key)
            if not isinstance(value, str) or not value.strip() or len(value) > 100:
                raise BroadcastError(f"{key} must be a name of at most 100 characters")
        if not isinstance(self.name, str) or len(self.name) > 200:
            raise BroadcastError("name must be text of at most 200 characters")
        if self.category not in CATEGORIES:
            raise BroadcastError(
                f"category must be marketing or transactional, got {self.category!r}"
            )
        try:
            priority = parse_priority(self.priority, "priority")
        except ValueError as exc:
            raise BroadcastError(str(exc)) from None
        send_at = self.send_at
        if send_at is not None and (
            isinstance(send_at, bool) or not isinstance(send_at, int | float)
        ):
            raise BroadcastError("send_at must be a time (epoch seconds or ISO 8601)")
        if send_at is not None and send_at > now + 366 * 86_400:
            raise BroadcastError("send_at is more than a year away")
        return BroadcastRequest(
            template=self.template.strip(),
            segment=self.segment.strip(),
            name=self.name.strip() or f"{self.template.strip()} to {self.segment.strip()}",
            send_at=now if send_at is None or send_at < now else float(send_at),
            category=self.category,
            route=self.route.strip(),
            priority=priority,
        )


def parse_when(value: object) -> float | None:
    """``None``/``"now"`` -> None; epoch seconds; or ISO 8601 with an offset (``Z`` allowed)."""
    if value is None or value == "now":
        return None
    if isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    if isinstance(value, str):
        try:
            parsed = datetime.fromisoformat(value.strip().replace("Z", "+00:00"))
        except ValueError:
            raise BroadcastError(
                f"bad time {value!r}: expected ISO 8601 such as 2027-01-15T09:00:00+01:00"
            ) from None
        if parsed.tzinfo is None:
            raise BroadcastError(
                f"time {value!r} has no offset: add one, e.g. Z or +01:00, so it is not "
                "read in the wrong timezone"
            )
        return parsed.timestamp()
    raise BroadcastError("the time must be 'now', epoch seconds or ISO 8601 text")


def _stamp(t: float) -> str:
    return datetime.fromtimestamp(t, UTC).strftime("%Y-%m-%d %H:%M UTC")


def recipients(conn: Connection, segment: str) -> int:
    """Members of ``segment`` with an email address (those a broadcast would mail)."""
    m, c = schema.segment_members, schema.contacts
    query = (
        sa.select(sa.func.count())
        .select_from(m.join(c, c.c.id == m.c.contact_id))
        .where(m.c.segment_id == segment, c.c.email.is_not(None))
    )
    return int(conn.execute(query).scalar() or 0)


def create(
    store: Store,
    request: BroadcastRequest,
    *,
    actor: str,
    now: float,
    routes: Sequence[str],
    preview: bool = False,
) -> dict[str, Any]:
    """Schedule a broadcast (or, with ``preview``, say what it would do)."""
    req = request.checked(now)
    if req.route not in routes:
        raise BroadcastError(f"there is no route {req.route!r} (routes: {', '.join(routes)})")
    assert req.send_at is not None
    with store.begin() as conn:
        templates = schema.email_templates.c
        if (
            conn.execute(sa.select(templates.id).where(templates.id == req.template)).first()
            is None
        ):
            known = sorted(set(conn.execute(sa.select(templates.id)).scalars()))
            raise BroadcastError(
                f"there is no template {req.template!r} (templates: {', '.join(known) or 'none'})"
            )
        segments = schema.segments.c
        if conn.execute(sa.select(segments.id).where(segments.id == req.segment)).first() is None:
            known = sorted(set(conn.execute(sa.select(segments.id)).scalars()))
            raise BroadcastError(
                f"there is no segment {req.segment!r} (segments: {', '.join(known) or 'none'})"
            )
        count = recipients(conn, req.segment)
        when = "now" if req.send_at <= now else f"at {_stamp(req.send_at)}"
        verb = "Send" if preview else "Scheduled:"
        summary = (
            f"{verb} {req.template} to {count:,} members of segment {req.segment} {when}"
            f" ({req.category}, priority {req.priority})"
        )
        reply: dict[str, Any] = {
            "action": "broadcasts.create",
            "preview": preview,
            "recipients": count,
            "send_at": req.send_at,
            "summary": summary,
        }
        if preview:
            return reply
        ident = new_id()
        conn.execute(
            _B.insert(),
            {
                "id": ident,
                "name": req.name,
                "template_id": req.template,
                "segment_id": req.segment,
                "category": req.category,
                "route": req.route,
                "priority": req.priority,
                "send_at": req.send_at,
                "state": SCHEDULED,
                "actor": actor[:200],
                "created_at": now,
                "queued": 0,
                "capped": 0,
                "skipped": 0,
            },
        )
        audit_id = _audit(
            conn,
            actor=actor,
            action="broadcasts.create",
            target=f"broadcast {ident}",
            count=count,
            now=now,
            detail={
                "name": req.name,
                "template": req.template,
                "segment": req.segment,
                "send_at": req.send_at,
                "category": req.category,
                "route": req.route,
                "priority": req.priority,
            },
        )
    return {**reply, "id": ident, "name": req.name, "audit_id": audit_id}


def cancel(
    store: Store, broadcast: str, *, reason: str, actor: str, now: float, preview: bool = False
) -> dict[str, Any]:
    """Stop a broadcast's fan-out and cancel its pending intents (sent mail stays sent)."""
    reason = (reason or "").strip()
    if not reason:
        raise BroadcastError("a reason is required")
    if len(reason) > _MAX_REASON:
        raise BroadcastError(f"reason is too long (at most {_MAX_REASON} characters)")
    workflow = PREFIX + broadcast
    pending = (_I.workflow_id == workflow, _I.status.in_(("queued", "deferred")))
    with store.begin() as conn:
        # The broadcast row first: on PostgreSQL this waits for a page in progress, so the
        # intents that page commits are among those cancelled below.
        row = conn.execute(sa.select(_B).where(_B.c.id == broadcast)).first()
        if row is None:
            raise BroadcastError(f"there is no broadcast {broadcast!r}")
        if row.state in (SCHEDULED, SENDING) and not preview:
            conn.execute(
                sa.update(_B)
                .where(_B.c.id == broadcast)
                .values(state=CANCELLED, reason=reason, finished_at=now, claimed_by=None)
            )
        elif row.state == CANCELLED:
            raise BroadcastError(f"broadcast {broadcast} is already cancelled")
        if preview:
            count = int(conn.execute(sa.select(sa.func.count()).where(*pending)).scalar() or 0)
        else:
            count = len(
                conn.execute(
                    sa.update(schema.intents)
                    .where(*pending)
                    .values(
                        status="cancelled",
                        reply=f"cancelled by {actor}: {reason}"[:4000],
                        finished_at=now,
                        claimed_by=None,
                        lease_until=None,
                    )
                    .returning(_I.id)
                ).all()
            )
        stops = " and stop its fan-out" if row.state in (SCHEDULED, SENDING) else ""
        summary = (
            f"Cancel {count:,} pending emails of broadcast {row.name!r}{stops}"
            if preview
            else f"Cancelled {count:,} pending emails of broadcast {row.name!r}"
        )
        reply: dict[str, Any] = {
            "action": "broadcasts.cancel",
            "preview": preview,
            "id": broadcast,
            "count": count,
            "reason": reason,
            "summary": summary,
        }
        if preview:
            return reply
        reply["audit_id"] = _audit(
            conn,
            actor=actor,
            action="broadcasts.cancel",
            target=f"broadcast {broadcast}",
            count=count,
            now=now,
            detail={"reason": reason, "state_before": row.state},
        )
    return reply


def list_broadcasts(store: Store, *, limit: int = 50) -> list[dict[str, Any]]:
    """The newest broadcasts with their progress: fan-out counts and the intents' outcomes."""
    with store.begin() as conn:
        rows = conn.execute(sa.select(_B).order_by(_B.c.created_at.desc()).limit(limit)).all()
        out = []
        for row in rows:
            outcomes = conn.execute(
                sa.select(_I.status, sa.func.count())
                .where(_I.workflow_id == PREFIX + row.id)
                .group_by(_I.status)
            ).all()
            out.append(describe(row, {str(s): int(n) for s, n in outcomes}))
    return out


def describe(row: Any, outcomes: dict[str, int]) -> dict[str, Any]:
    members = row.members
    done = int(row.queued) + int(row.capped) + int(row.skipped)
    return {
        "id": row.id,
        "name": row.name,
        "template": row.template_id,
        "segment": row.segment_id,
        "category": row.category,
        "route": row.route,
        "priority": row.priority,
        "state": row.state,
        "send_at": row.send_at,
        "actor": row.actor,
        "reason": row.reason,
        "created_at": row.created_at,
        "started_at": row.started_at,
        "finished_at": row.finished_at,
        "members": members,
        "queued": int(row.queued),
        "capped": int(row.capped),
        "skipped": int(row.skipped),
        # Fan-out progress: members given an intent (or skipped) of those counted at the start.
        "progress": 1.0 if row.state == SENT else (min(1.0, done / members) if members else 0.0),
        "outcomes": outcomes,  # intents by status: sent, queued, suppressed, ...
    }


def _audit(
    conn: Connection,
    *,
    actor: str,
    action: str,
    target: str,
    count: int,
    now: float,
    detail: dict[str, Any],
) -> int:
    log_table = schema.audit_log
    row = conn.execute(
        log_table.insert()
        .values(
            ts=now,
            actor=actor[:200],
            action=action,
            target=target[:400],
            count=count,
            detail=detail,
        )
        .returning(log_table.c.id)
    ).first()
    assert row is not None
    return int(row[0])


# -- the fan-out ------------------------------------------------------------------------------


@dataclass
class PageOutcome:
    """What one fan-out page did."""

    intent_ids: list[str]
    queued: int = 0
    capped: int = 0
    skipped: int = 0
    done: bool = False  # the fan-out is finished (or was cancelled / taken over)
    capped_workflows: dict[str, int] | None = None


def claim_due(store: Store, owner: str, now: float) -> str | None:
    """Take one due broadcast: scheduled and due, or sending with its lease run out (a node
    died mid-fan-out) or held by an earlier incarnation of this node's service."""
    with store.begin() as conn:
        due = conn.execute(
            sa.select(_B.c.id)
            .where(
                sa.or_(
                    sa.and_(_B.c.state == SCHEDULED, _B.c.send_at <= now),
                    sa.and_(
                        _B.c.state == SENDING,
                        sa.or_(_B.c.lease_until.is_(None), _B.c.lease_until < now),
                    ),
                )
            )
            .order_by(_B.c.send_at)
            .limit(1)
        ).first()
        if due is None:
            return None
        taken = conn.execute(
            sa.update(_B)
            .where(
                _B.c.id == due.id,
                sa.or_(
                    _B.c.state == SCHEDULED,
                    sa.and_(
                        _B.c.state == SENDING,
                        sa.or_(_B.c.lease_until.is_(None), _B.c.lease_until < now),
                    ),
                ),
            )
            .values(
                state=SENDING,
                claimed_by=owner,
                lease_until=now + LEASE_S,
                started_at=sa.func.coalesce(_B.c.started_at, now),
            )
            .returning(_B.c.id)
        ).first()
    return None if taken is None else str(taken.id)


def fan_out_page(
    store: Store, pacing: Pacing, broadcast: str, owner: str, now: float, page: int = PAGE
) -> PageOutcome:
    """Create the intents of the next ``page`` members, in one transaction with the cursor."""
    c, m = schema.contacts.c, schema.segment_members.c
    with store.begin() as conn:
        # A write first: on SQLite it takes the write lock, so what is read below is current;
        # it also proves the broadcast is still ours and still sending (not cancelled).
        row = conn.execute(
            sa.update(_B)
            .where(_B.c.id == broadcast, _B.c.state == SENDING, _B.c.claimed_by == owner)
            .values(lease_until=now + LEASE_S)
            .returning(*_B.c)
        ).first()
        if row is None:
            return PageOutcome([], done=True)
        if row.members is None:
            members = int(
                conn.execute(
                    sa.select(sa.func.count()).where(m.segment_id == row.segment_id)
                ).scalar()
                or 0
            )
            conn.execute(sa.update(_B).where(_B.c.id == broadcast).values(members=members))
        query = (
            sa.select(m.contact_id, c.email, c.timezone)
            .select_from(
                schema.segment_members.join(schema.contacts, c.id == m.contact_id, isouter=True)
            )
            .where(m.segment_id == row.segment_id)
            .order_by(m.contact_id)
            .limit(page)
        )
        if row.cursor is not None:
            query = query.where(m.contact_id > row.cursor)
        found = conn.execute(query).all()
        workflow = PREFIX + broadcast
        intents: list[dict[str, Any]] = []
        skipped = 0
        for member in found:
            if not member.email:
                skipped += 1
                continue
            intent = _intent(row, workflow, member.contact_id, member.email, now)
            pacing.plan(
                intent, priority=row.priority, quiet_hours="default", timezone=member.timezone
            )
            intents.append(intent)
        capped = enforce_caps(conn, pacing, intents, now)
        traced = [
            {
                "enrollment_id": x.enrollment_id,
                "ts": now,
                "step_id": x.step_id,
                "kind": "capped",
                "detail": f"intent {x.intent_id}: {x.reason}",
            }
            for x in capped
            if x.enrollment_id is not None
        ]
        if traced:  # the workflow mails this broadcast pre-empted say so in their trace
            conn.execute(schema.enrollment_log.insert(), traced)
        inserted: list[tuple[str, str]] = []
        if intents:
            statement = store.insert_ignore(schema.intents, index=["dedup_key"]).returning(
                _I.id, _I.status
            )
            inserted = [(r.id, r.status) for r in conn.execute(statement, intents)]
        queued = [i for i, status in inserted if status == "queued"]
        mine = {x.intent_id for x in capped if not x.preempted}
        dropped = sum(1 for i, _ in inserted if i in mine)
        done = len(found) < page
        values: dict[str, Any] = {
            "queued": _B.c.queued + len(queued),
            "capped": _B.c.capped + dropped,
            "skipped": _B.c.skipped + skipped,
        }
        if found:
            values["cursor"] = found[-1].contact_id
        if done:
            values.update(state=SENT, finished_at=now, claimed_by=None, lease_until=None)
        conn.execute(sa.update(_B).where(_B.c.id == broadcast).values(**values))
    per_workflow: dict[str, int] = {}
    for x in capped:
        per_workflow[x.workflow_id] = per_workflow.get(x.workflow_id, 0) + 1
    return PageOutcome(
        intent_ids=queued,
        queued=len(queued),
        capped=dropped,
        skipped=skipped,
        done=done,
        capped_workflows=per_workflow,
    )


def _intent(row: Any, workflow: str, contact_id: str, email: str, now: float) -> dict[str, Any]:
    return {
        "id": new_id(),
        "dedup_key": dedup_key(workflow, STEP, contact_id, row.id, row.created_at),
        "workflow_id": workflow,
        "workflow_version": 1,
        "step_id": STEP,
        "enrollment_id": None,
        "contact_id": contact_id,
        "event_id": row.id,
        "template_id": row.template_id,
        "route": row.route,
        "category": row.category,
        "to_addr": email,
        "domain": email.rpartition("@")[2].lower(),
        "context": {
            "event": {"name": "Broadcast", "properties": {"broadcast": row.name}, "ts": now},
            "broadcast": {"id": row.id, "name": row.name},
        },
        "status": "queued",
        "attempts": 0,
        "next_attempt_at": now,
        "expires_at": None,
        "received_at": now,
        "decided_at": now,
        "reply": None,
        "finished_at": None,
    }


class BroadcastService:
    """Fans out due broadcasts on this node (roles all and decide); see the module docstring."""

    def __init__(
        self,
        *,
        store: Store,
        clock: Clock,
        telemetry: Telemetry,
        node: str,
        pacing: Pacing,
        on_intents: Callable[[Sequence[str]], None],
        poll_s: float = 1.0,
        page: int = PAGE,
    ) -> None:
        self.store = store
        self.clock = clock
        self.telemetry = telemetry
        self.owner = f"{node}/{secrets.token_hex(4)}"
        self.pacing = pacing
        self.on_intents = on_intents
        self.poll_s = poll_s
        self.page = page
        self._poked = asyncio.Event()
        self._stopping = False
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        self._stopping = False
        self._task = asyncio.create_task(self._run(), name=f"broadcasts-{self.owner}")

    async def stop(self) -> None:
        """Finish the page in hand, then stop (the lease lets another node go on)."""
        self._stopping = True
        self._poked.set()
        if self._task is not None:
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    def poke(self) -> None:
        """A broadcast was created or changed: look now rather than at the next poll."""
        self._poked.set()

    async def _blocking(self, fn: Callable[[], Any]) -> Any:
        if self.store.inline:
            return fn()
        return await asyncio.to_thread(fn)

    async def _run(self) -> None:
        while not self._stopping:
            self._poked.clear()
            try:
                ident = await self._blocking(
                    lambda: claim_due(self.store, self.owner, self.clock.now())
                )
                if ident is not None:
                    await self._fan_out(ident)
                    continue
            except Exception as exc:  # the database is down, or worse: never die
                log.warning("broadcasts: fan-out failed (%s); retrying", exc)
            await self._sleep(self.clock.now() + self.poll_s)

    async def _fan_out(self, ident: str) -> None:
        log.info("broadcasts: fanning out %s", ident)
        while not self._stopping:
            outcome: PageOutcome = await self._blocking(
                lambda: fan_out_page(
                    self.store, self.pacing, ident, self.owner, self.clock.now(), self.page
                )
            )
            if outcome.queued:
                self.telemetry.count(
                    "intents_created_total", outcome.queued, workflow=PREFIX + ident
                )
            for workflow, n in (outcome.capped_workflows or {}).items():
                self.telemetry.count("intents_total", n, outcome="suppressed", workflow=workflow)
            if outcome.intent_ids:
                try:
                    self.on_intents(outcome.intent_ids)
                except Exception:  # deliver also polls the store
                    log.exception("broadcasts: the on_intents callback failed")
            if outcome.done:
                return
            await asyncio.sleep(0)  # let decide and deliver run between pages

    async def _sleep(self, deadline: float) -> None:
        if self._poked.is_set() or self._stopping:
            return
        sleeper = asyncio.ensure_future(self.clock.sleep_until(deadline))
        poked = asyncio.ensure_future(self._poked.wait())
        try:
            await asyncio.wait({sleeper, poked}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in (sleeper, poked):
                task.cancel()
            await asyncio.gather(sleeper, poked, return_exceptions=True)
