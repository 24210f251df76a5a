"""What the store knows about one contact, read for people: the profile with what may stop a
send, the timeline, segment memberships with their enter and exit times, and each enrollment's
decision trace with the outcome of every email it queued.

Plain reads over the tables (blocking; the verbs run them on a worker thread). Times stay epoch
seconds; each decision also carries ``label``, a short word for the kind, so every client tells
the story the same way.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa

from engine.decide.workflow import Workflow
from engine.store import schema

LABELS = {
    "entered": "trigger matched",
    "waiting": "waiting",
    "waited": "waited",
    "timeout": "timed out",
    "resumed": "awaited event arrived",
    "branch": "branch taken",
    "intent": "email queued",
    "no_email": "not sent: no email address",
    "exited": "exited",
    "converted": "converted",
    "completed": "completed",
    "quiet_hours": "deferred by quiet hours",
    "capped": "capped",
    "sent": "sent",
    "suppressed": "suppressed",
    "bounced": "bounced",
    "deferred": "deferred by the relay",
    "expired": "expired",
    "failed": "failed",
    "uncertain": "outcome uncertain",
    "pending": "waiting to be sent",
}
PENDING_STATUSES = ("queued", "claimed", "sending")
GOAL_PREFIX = "goal reached"
_KIND_ORDER = {"event": 0, "email": 1, "segment": 2}
_INTENT_REF = re.compile(r"\bintent ([0-9a-f]{8,32})\b")


def when(ts: float | None) -> str:
    """A moment in words (UTC), for answers read by people."""
    if ts is None:
        return "an unknown time"
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def name_of(traits: Mapping[str, Any]) -> str:
    first, last = traits.get("first_name") or "", traits.get("last_name") or ""
    full = f"{first} {last}".strip()
    return full or str(traits.get("name") or "")


def contact_row(conn: sa.Connection, contact_id: str) -> Any | None:
    c = schema.contacts
    return conn.execute(sa.select(c).where(c.c.id == contact_id)).first()


def suppression_of(conn: sa.Connection, email: str | None) -> dict[str, Any] | None:
    if not email:
        return None
    s = schema.suppressions
    row = conn.execute(sa.select(s).where(s.c.address == email.lower())).first()
    return None if row is None else dict(row._mapping)


def blockers(row: Any, suppression: Mapping[str, Any] | None, category: str) -> list[str]:
    """What would stop a ``category`` email to this contact at send time, in words (the
    deliver stage's own checks, engine/deliver/compose.py)."""
    out: list[str] = []
    if not row.email:
        out.append("the contact has no email address")
    if suppression is not None:
        scope = suppression["scope"]
        if scope == "all" or category == "marketing":
            out.append(
                f"{suppression['address']} is on the suppression list ({suppression['reason']},"
                f" {'all mail' if scope == 'all' else 'marketing mail'}, since"
                f" {when(suppression['created_at'])})"
            )
    if category == "marketing":
        if row.unsubscribed_at is not None:
            out.append(
                f"unsubscribed from marketing at {when(row.unsubscribed_at)} (transactional"
                " mail still goes)"
            )
        entry = (row.consent or {}).get("email_marketing")
        if isinstance(entry, dict) and entry.get("granted") is False:
            out.append("marketing consent was withdrawn (email_marketing: not granted)")
    return out


def profile(conn: sa.Connection, row: Any) -> dict[str, Any]:
    """``contacts.show``: the profile, subscription and suppression, counts, and what would
    stop marketing or transactional mail now."""
    suppression = suppression_of(conn, row.email)
    a, e, i = schema.activity, schema.enrollments, schema.intents

    def count(table: sa.Table) -> int:
        query = sa.select(sa.func.count()).select_from(table)
        return int(conn.execute(query.where(table.c.contact_id == row.id)).scalar() or 0)

    traits = dict(row.traits or {})
    return {
        "id": row.id,
        "email": row.email,
        "name": name_of(traits),
        "traits": traits,
        "timezone": row.timezone,
        "consent": dict(row.consent or {}),
        "subscribed": row.unsubscribed_at is None,
        "unsubscribed_at": row.unsubscribed_at,
        "suppression": suppression,
        "first_seen_at": row.first_seen_at,
        "last_seen_at": row.last_seen_at,
        "updated_at": row.updated_at,
        "counts": {"events": count(a), "enrollments": count(e), "emails": count(i)},
        # Lifetime value from the contact's orders (engine/clv.py), as segments and templates
        # read it.
        "orders": {
            "count": int(row.orders or 0),
            "lifetime_value": float(row.lifetime_value or 0),
            "first_at": row.first_order_at,
            "last_at": row.last_order_at,
        },
        "blocked": {
            "marketing": blockers(row, suppression, "marketing"),
            "transactional": blockers(row, suppression, "transactional"),
        },
    }


def timeline(conn: sa.Connection, contact_id: str, limit: int) -> dict[str, Any]:
    """``contacts.timeline``: the latest ``limit`` entries, oldest first: events, emails (with
    their outcome) and segment entries and exits."""
    a, i, h = schema.activity, schema.intents, schema.segment_history
    entries: list[dict[str, Any]] = []
    # Each kind is read newest first (the limit), then put back in order; equal times keep
    # event, email, segment order (a send follows its event).
    for r in conn.execute(
        sa.select(a.c.message_id, a.c.name, a.c.ts, a.c.properties)
        .where(a.c.contact_id == contact_id)
        .order_by(a.c.ts.desc(), a.c.id.desc())
        .limit(limit + 1)
    ):
        entries.append(
            {
                "ts": r.ts,
                "kind": "event",
                "title": r.name,
                "message_id": r.message_id,
                "properties": r.properties or {},
                "_seq": len(entries),
            }
        )
    for email in conn.execute(
        sa.select(
            i.c.id,
            i.c.template_id,
            i.c.workflow_id,
            i.c.status,
            i.c.reply,
            i.c.decided_at,
            i.c.finished_at,
        )
        .where(i.c.contact_id == contact_id)
        .order_by(i.c.decided_at.desc())
        .limit(limit + 1)
    ):
        entries.append(
            {
                "ts": email.decided_at,
                "kind": "email",
                "title": f"{email.template_id} ({email.workflow_id})",
                "status": email.status,
                "reply": email.reply,
                "intent": email.id,
                "finished_at": email.finished_at,
                "_seq": len(entries),
            }
        )
    for change in conn.execute(
        sa.select(h.c.segment_id, h.c.kind, h.c.at)
        .where(h.c.contact_id == contact_id)
        .order_by(h.c.at.desc(), h.c.id.desc())
        .limit(limit + 1)
    ):
        entries.append(
            {
                "ts": change.at,
                "kind": "segment",
                "title": f"{change.kind} segment {change.segment_id}",
                "segment": change.segment_id,
                "change": change.kind,
                "_seq": len(entries),
            }
        )
    entries.sort(key=lambda e: (e["ts"], _KIND_ORDER[e["kind"]], -e.pop("_seq")))
    more = len(entries) > limit
    return {"contact": contact_id, "entries": entries[-limit:], "more": more}


def memberships(
    conn: sa.Connection, contact_id: str, names: Mapping[str, str]
) -> list[dict[str, Any]]:
    """``contacts.segments``: every segment the contact is or was in, with each period
    (entered, exited or None while still in), current members first."""
    h, m = schema.segment_history, schema.segment_members
    current = {
        r.segment_id: r.entered_at
        for r in conn.execute(
            sa.select(m.c.segment_id, m.c.entered_at).where(m.c.contact_id == contact_id)
        )
    }
    periods: dict[str, list[dict[str, Any]]] = {}
    for r in conn.execute(
        sa.select(h.c.segment_id, h.c.kind, h.c.at)
        .where(h.c.contact_id == contact_id)
        .order_by(h.c.at, h.c.id)
    ):
        mine = periods.setdefault(r.segment_id, [])
        if r.kind == "entered":
            mine.append({"entered_at": r.at, "exited_at": None})
        elif mine and mine[-1]["exited_at"] is None:
            mine[-1]["exited_at"] = r.at
        else:  # an exit whose entry is older than the history kept
            mine.append({"entered_at": None, "exited_at": r.at})
    for sid, entered_at in current.items():
        mine = periods.setdefault(sid, [])
        if not mine or mine[-1]["exited_at"] is not None:
            mine.append({"entered_at": entered_at, "exited_at": None})
    out = [
        {
            "segment": sid,
            "name": names.get(sid, sid),
            "member": sid in current,
            "entered_at": current.get(sid),
            "periods": found,
        }
        for sid, found in periods.items()
    ]
    out.sort(key=lambda s: (not s["member"], s["segment"]))
    return out


def _outcome(intent: Mapping[str, Any]) -> dict[str, Any]:
    """The decision an intent's outcome adds to the trace."""
    status = str(intent["status"])
    kind = "pending" if status in PENDING_STATUSES else status
    reply = intent.get("reply")
    if kind == "sent":
        detail = f"{intent['template_id']} to {intent['to_addr']}: the relay replied {reply}"
        ts = intent.get("accepted_at") or intent.get("finished_at")
    elif kind == "pending":
        detail = f"{intent['template_id']} is {status} (attempts {intent['attempts']})"
        ts = intent.get("decided_at")
    elif kind == "deferred":
        detail = (
            f"{intent['template_id']}: {reply or 'no reply'}; next attempt at"
            f" {when(intent.get('next_attempt_at'))}"
        )
        ts = intent.get("finished_at") or intent.get("decided_at")
    else:
        detail = f"{intent['template_id']}: {reply or status}"
        ts = intent.get("finished_at") or intent.get("decided_at")
    return {
        "ts": ts,
        "kind": kind,
        "label": LABELS.get(kind, kind),
        "step": intent["step_id"],
        "detail": detail,
        "intent": intent["id"],
        "reply": reply,
    }


def enrollments(
    conn: sa.Connection,
    contact_id: str,
    workflows: Mapping[str, Workflow],
    limit: int,
    workflow_id: str | None = None,
) -> list[dict[str, Any]]:
    """``contacts.enrollments``: the latest ``limit`` enrollments (newest first), each with
    every decision in order and the outcome of each email it queued."""
    e, log, i, t = schema.enrollments, schema.enrollment_log, schema.intents, schema.timers
    query = sa.select(e).where(e.c.contact_id == contact_id)
    if workflow_id is not None:
        query = query.where(e.c.workflow_id == workflow_id)
    rows = conn.execute(query.order_by(e.c.entered_at.desc(), e.c.id).limit(limit)).all()
    ids = [r.id for r in rows]
    if not ids:
        return []
    logs: dict[str, list[Any]] = {}
    for r in conn.execute(
        sa.select(log).where(log.c.enrollment_id.in_(ids)).order_by(log.c.ts, log.c.id)
    ):
        logs.setdefault(r.enrollment_id, []).append(r)
    intents: dict[str, list[dict[str, Any]]] = {}
    # An enrollment's intents are its contact's: by contact, the lookup has an index (none
    # covers enrollment_id, and a scan read every intent in the store for each view).
    mails = sa.select(i).where(i.c.contact_id == contact_id, i.c.enrollment_id.in_(ids))
    for r in conn.execute(mails.order_by(i.c.decided_at, i.c.id)):
        row = dict(r._mapping)
        row.pop("context", None)  # the trigger event again, and step data: not for the trace
        row.pop("dedup_key", None)
        intents.setdefault(str(r.enrollment_id), []).append(row)
    timers: dict[str, float] = {}
    for r in conn.execute(
        sa.select(t.c.enrollment_id, sa.func.min(t.c.fire_at).label("fire_at"))
        .where(t.c.enrollment_id.in_(ids), t.c.state == "pending")
        .group_by(t.c.enrollment_id)
    ):
        timers[r.enrollment_id] = float(r.fire_at)
    return [
        _enrollment(r, logs.get(r.id, []), intents.get(r.id, []), timers.get(r.id), workflows)
        for r in rows
    ]


def _enrollment(
    row: Any,
    log: list[Any],
    intents: list[dict[str, Any]],
    waiting_until: float | None,
    workflows: Mapping[str, Workflow],
) -> dict[str, Any]:
    keyed: list[tuple[float, float, dict[str, Any]]] = []
    by_id = {str(x["id"]): x for x in intents}
    placed: set[str] = set()
    for seq, entry in enumerate(log):
        kind = entry.kind
        detail = entry.detail or ""
        if kind == "exited" and detail.startswith(GOAL_PREFIX):
            kind = "converted"
        decision = {
            "ts": entry.ts,
            "kind": kind,
            "label": LABELS.get(kind, kind.replace("_", " ")),
            "step": entry.step_id,
            "detail": detail,
        }
        keyed.append((entry.ts, seq, decision))
        ref = _INTENT_REF.search(detail)
        if ref and ref.group(1) in by_id and ref.group(1) not in placed:
            placed.add(ref.group(1))
            decision["intent"] = ref.group(1)
            outcome = _outcome(by_id[ref.group(1)])
            keyed.append((max(float(outcome["ts"] or entry.ts), entry.ts), seq + 0.5, outcome))
    for intent_id, intent in by_id.items():
        if intent_id not in placed:
            outcome = _outcome(intent)
            keyed.append((float(outcome["ts"] or 0.0), len(log) + 1.0, outcome))
    keyed.sort(key=lambda k: (k[0], k[1]))
    wf = workflows.get(row.workflow_id)
    waiting = row.waiting_for or None
    return {
        "id": row.id,
        "workflow": row.workflow_id,
        "version": row.workflow_version,
        "name": wf.name if wf is not None else row.workflow_id,
        "category": wf.category if wf is not None else None,
        "state": row.state,
        "step": row.step_id,
        "exit_reason": row.exit_reason,
        "converted": bool(row.exit_reason and row.exit_reason.startswith(GOAL_PREFIX)),
        "entered_at": row.entered_at,
        "updated_at": row.updated_at,
        "waiting_until": waiting_until if row.state == "waiting" else None,
        "waiting_for": waiting.get("event") if isinstance(waiting, dict) else None,
        "trigger": {
            "name": (row.trigger or {}).get("name"),
            "ts": (row.trigger or {}).get("ts"),
            "message_id": row.trigger_event_id,
            "properties": (row.trigger or {}).get("properties") or {},
        },
        "decisions": [d for _, _, d in keyed],
        "intents": [
            {
                "id": x["id"],
                "step": x["step_id"],
                "template": x["template_id"],
                "route": x["route"],
                "to": x["to_addr"],
                "status": x["status"],
                "reply": x["reply"],
                "attempts": x["attempts"],
                "decided_at": x["decided_at"],
                "accepted_at": x["accepted_at"],
                "finished_at": x["finished_at"],
            }
            for x in intents
        ],
    }
