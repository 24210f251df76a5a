"""Frequency caps, enforced where a send is decided, in the transaction that stores it.

Why at decide time (docs/caps.md): the cap is a promise about mail a contact receives, and the
decision that breaks it is the one that adds the (N+1)th mail. Taking a place under the cap in
the same transaction that inserts the intent makes the place as durable as the intent itself
(a restart neither loses nor double-counts it), lets a higher-priority mail take the place of a
lower-priority one that is still queued (at send time the promotion due now would already be
gone when the cart reminder due in 30 minutes asks), and leaves the deliver stage's hot claim
untouched. Concurrent deciders (a decide batch, the timer service, a broadcast, on any node)
are serialized per contact: SQLite has one writer (each caller's transaction has written before
it gets here), PostgreSQL locks the contacts' rows ``FOR UPDATE`` first. A pre-emption only
moves a row still ``queued``/``deferred`` (``UPDATE ... WHERE status IN (...)``), so a deliver
node that claimed it a moment earlier wins and the mail counts as sent.

What counts: marketing intents of the contact planned for the same local day (``cap_day``) or
ISO week (``cap_week``) that are pending, in flight, sent or uncertain. Ones that ended without
reaching the contact (suppressed, bounced, expired, failed, cancelled) free their place.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from sqlalchemy import Connection

from engine.pacing.policy import Pacing
from engine.store import schema

QUEUED = "queued"
DEFERRED = "deferred"
SUPPRESSED = "suppressed"
PENDING = (QUEUED, DEFERRED)
HOLDING = (QUEUED, DEFERRED, "claimed", "sending", "sent", "uncertain")
_CHUNK = 500

_I = schema.intents.c


@dataclass(slots=True)
class Capped:
    """An intent the cap ended: dropped when decided, or pre-empted while queued."""

    intent_id: str
    workflow_id: str
    enrollment_id: str | None
    step_id: str
    reason: str
    preempted: bool


@dataclass(slots=True)
class _Holder:
    """A place under the cap: an intent already stored, or one decided in this transaction."""

    id: str
    workflow_id: str
    enrollment_id: str | None
    step_id: str
    priority: int
    day: str | None
    week: str | None
    decided_at: float
    pending: bool
    new: dict[str, Any] | None = None  # the intent's row when it is not stored yet


def enforce_caps(
    conn: Connection, pacing: Pacing, intents: Sequence[dict[str, Any]], now: float
) -> list[Capped]:
    """Apply the caps to ``intents`` (rows about to be inserted, in decision order).

    A row the cap drops gets ``status = suppressed`` with the reason in ``reply``; a stored
    intent it pre-empts is updated here. Returns every intent the cap ended.
    """
    if not pacing.capped:
        return []
    wanted = [i for i in intents if i.get("cap_day") is not None and i["status"] == QUEUED]
    if not wanted:
        return []
    # A decision taken twice (its dedup_key is stored) inserts nothing: it must not take a
    # place or pre-empt anyone either.
    keys = [i["dedup_key"] for i in wanted]
    known: set[str] = set()
    for chunk in _chunks(keys):
        known.update(conn.execute(sa.select(_I.dedup_key).where(_I.dedup_key.in_(chunk))).scalars())
    wanted = [i for i in wanted if i["dedup_key"] not in known]
    if not wanted:
        return []
    contact_ids = sorted({i["contact_id"] for i in wanted})
    if conn.dialect.name == "postgresql":
        contacts = schema.contacts.c
        for chunk in _chunks(contact_ids):
            conn.execute(
                sa.select(contacts.id)
                .where(contacts.id.in_(chunk))
                .order_by(contacts.id)
                .with_for_update()
            ).all()
    holders = _load_holders(conn, wanted, contact_ids)
    capped: list[Capped] = []

    def preempt(victim: _Holder, reason: str) -> bool:
        return _preempt(conn, victim, reason, now)

    for intent in wanted:
        mine = holders.setdefault(intent["contact_id"], [])
        result = _place(pacing, intent, mine, now, preempt)
        capped.extend(result)
    return capped


def preview_caps(
    conn: Connection, pacing: Pacing, intents: Sequence[dict[str, Any]]
) -> list[Capped]:
    """The caps applied to ``intents`` (in decision order) as ``enforce_caps`` would, without
    writing: the dry run (engine.dry_run). Stored intents hold their places as they do for a
    real decision; one a new intent would pre-empt is reported (``preempted``) and left as it
    is; the new rows the cap drops get ``status = suppressed`` in memory."""
    if not pacing.capped:
        return []
    wanted = [i for i in intents if i.get("cap_day") is not None and i["status"] == QUEUED]
    if not wanted:
        return []
    holders = _load_holders(conn, wanted, sorted({i["contact_id"] for i in wanted}))
    capped: list[Capped] = []
    for intent in wanted:
        mine = holders.setdefault(intent["contact_id"], [])
        now = float(intent["decided_at"])

        def preempt(victim: _Holder, reason: str, now: float = now) -> bool:
            if victim.new is not None:
                return _preempt(conn, victim, reason, now)  # in memory only: no stored row
            return True

        capped.extend(_place(pacing, intent, mine, now, preempt))
    return capped


def _load_holders(
    conn: Connection, wanted: list[dict[str, Any]], contact_ids: list[str]
) -> dict[str, list[_Holder]]:
    days = sorted({i["cap_day"] for i in wanted})
    weeks = sorted({i["cap_week"] for i in wanted})
    holders: dict[str, list[_Holder]] = {}
    for chunk in _chunks(contact_ids):
        rows = conn.execute(
            sa.select(
                _I.id,
                _I.contact_id,
                _I.workflow_id,
                _I.enrollment_id,
                _I.step_id,
                _I.priority,
                _I.status,
                _I.cap_day,
                _I.cap_week,
                _I.decided_at,
            ).where(
                _I.contact_id.in_(chunk),
                _I.category == "marketing",
                _I.status.in_(HOLDING),
                sa.or_(_I.cap_day.in_(days), _I.cap_week.in_(weeks)),
            )
        ).all()
        for row in rows:
            holders.setdefault(row.contact_id, []).append(
                _Holder(
                    id=row.id,
                    workflow_id=row.workflow_id,
                    enrollment_id=row.enrollment_id,
                    step_id=row.step_id,
                    priority=50 if row.priority is None else int(row.priority),
                    day=row.cap_day,
                    week=row.cap_week,
                    decided_at=float(row.decided_at),
                    pending=row.status in PENDING,
                )
            )
    return holders


def _place(
    pacing: Pacing,
    intent: dict[str, Any],
    mine: list[_Holder],
    now: float,
    preempt: Callable[[_Holder, str], bool],
) -> list[Capped]:
    """Give ``intent`` a place under the caps, pre-empting a lower priority if it must."""
    day, week, priority = intent["cap_day"], intent["cap_week"], int(intent["priority"])
    on_day = sum(1 for h in mine if h.day == day)
    in_week = sum(1 for h in mine if h.week == week)
    day_full = pacing.per_day > 0 and on_day >= pacing.per_day
    week_full = pacing.per_week > 0 and in_week >= pacing.per_week
    holder = _Holder(
        id=intent["id"],
        workflow_id=intent["workflow_id"],
        enrollment_id=intent.get("enrollment_id"),
        step_id=intent["step_id"],
        priority=priority,
        day=day,
        week=week,
        decided_at=float(intent["decided_at"]),
        pending=True,
        new=intent,
    )
    if not day_full and not week_full:
        mine.append(holder)
        return []
    # Freeing a place on the day also frees one in its week; a full week alone can be relieved
    # by any day of it. Lowest priority first, then the most recently decided.
    candidates = sorted(
        (
            h
            for h in mine
            if h.pending
            and h.priority < priority
            and h.week == week
            and (not day_full or h.day == day)
        ),
        key=lambda h: (h.priority, -h.decided_at),
    )
    for victim in candidates:
        reason = (
            f"frequency cap: pre-empted by {intent['workflow_id']} "
            f"(priority {priority} over {victim.priority})"
        )
        if not preempt(victim, reason):
            victim.pending = False  # a deliver node claimed it meanwhile: it stays counted
            continue
        mine.remove(victim)
        mine.append(holder)
        return [
            Capped(
                victim.id, victim.workflow_id, victim.enrollment_id, victim.step_id, reason, True
            )
        ]
    if day_full:
        limit = f"{pacing.per_day} marketing mail{'s' if pacing.per_day != 1 else ''} a day"
        where = f"on {day}"
    else:
        limit = f"{pacing.per_week} marketing mail{'s' if pacing.per_week != 1 else ''} a week"
        where = f"in {week}"
    reason = (
        f"frequency cap: {limit} already planned {where}; none queued with a priority "
        f"below {priority}"
    )
    intent["status"] = SUPPRESSED
    intent["reply"] = reason
    intent["finished_at"] = now
    return [
        Capped(
            intent["id"],
            intent["workflow_id"],
            intent.get("enrollment_id"),
            intent["step_id"],
            reason,
            False,
        )
    ]


def _preempt(conn: Connection, victim: _Holder, reason: str, now: float) -> bool:
    if victim.new is not None:
        victim.new["status"] = SUPPRESSED
        victim.new["reply"] = reason
        victim.new["finished_at"] = now
        return True
    done = conn.execute(
        sa.update(schema.intents)
        .where(_I.id == victim.id, _I.status.in_(PENDING))
        .values(
            status=SUPPRESSED,
            reply=reason,
            finished_at=now,
            claimed_by=None,
            lease_until=None,
        )
        .returning(_I.id)
    ).first()
    return done is not None


def _chunks(items: Sequence[str]) -> list[Sequence[str]]:
    return [items[i : i + _CHUNK] for i in range(0, len(items), _CHUNK)]
