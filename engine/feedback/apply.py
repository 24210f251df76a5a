"""Applying bounces and complaints to the store, and the complaint rate.

In one transaction per call:
- a hard bounce sets its intent to ``bounced`` (the relay's 250 reply kept in ``reply``, after
  the report's status and diagnostic) and suppresses the address for all mail;
- a complaint suppresses the address for marketing mail and marks the contact unsubscribed;
- soft bounces and delays are only counted;
- one ``audit_log`` row (actor "engine", action "feedback") summarises the call, and each
  complaint also gets its own ``complaint`` row (the complaint rate counts those).

Reports that came by mail (DSN, ARF, plain text) change something only when they name one of
our intents: anyone can mail the bounce address, but not guess an 80-bit random intent id.
Webhook items (authenticated by the HTTP layer) suppress their address even without an intent.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa
from sqlalchemy import Connection

from engine.feedback import Bounce, Complaint, FeedbackInvalid, FeedbackItem
from engine.store import Store, schema

if TYPE_CHECKING:
    from engine.segments.membership import SegmentRegistry

__all__ = [
    "GMAIL_COMPLAINT_LIMIT",
    "GMAIL_COMPLAINT_TARGET",
    "FeedbackResult",
    "apply_feedback",
    "complaint_level",
    "complaint_rate",
    "delivery_rate",
]

# Gmail's bulk sender guidelines: keep spam complaints under 0.1%, never reach 0.3%.
GMAIL_COMPLAINT_TARGET = 0.001
GMAIL_COMPLAINT_LIMIT = 0.003

_MAIL_SOURCES = frozenset({"dsn", "text", "arf"})
_BOUNCEABLE = ("sent", "uncertain", "sending", "deferred")  # a later bounce may still come


@dataclass
class FeedbackResult:
    hard_bounces: int = 0
    soft_bounces: int = 0  # soft failures and delays: counted, nothing changed
    complaints: int = 0
    unknown_intents: int = 0  # items not tied to an intent in the store
    intents_bounced: int = 0
    suppressed: int = 0  # new or widened suppressions
    unsubscribed: int = 0  # contacts marked unsubscribed
    addresses: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {
            "hard_bounces": self.hard_bounces,
            "soft_bounces": self.soft_bounces,
            "complaints": self.complaints,
            "unknown_intents": self.unknown_intents,
            "intents_bounced": self.intents_bounced,
            "suppressed": self.suppressed,
            "unsubscribed": self.unsubscribed,
        }


def apply_feedback(
    store: Store,
    items: Iterable[FeedbackItem],
    now: float,
    segments: SegmentRegistry | None = None,
) -> FeedbackResult:
    """Apply parsed feedback; all or nothing (one transaction). A complaint unsubscribes the
    contact, and the segments that read subscription or consent are re-evaluated for it in the
    same transaction (as a one-click unsubscribe does), so membership changes at once."""
    batch = list(items)
    for item in batch:
        if not isinstance(item, Bounce | Complaint):
            raise FeedbackInvalid(f"feedback: {type(item).__name__} is not a Bounce or Complaint")
    result = FeedbackResult()
    intents = schema.intents
    unsubscribed: set[str] = set()
    with store.begin() as conn:
        ids = sorted({i.intent_id for i in batch if i.intent_id})
        known: dict[str, Any] = {}
        if ids:
            rows = conn.execute(
                sa.select(
                    intents.c.id, intents.c.contact_id, intents.c.to_addr, intents.c.status
                ).where(intents.c.id.in_(ids))
            )
            known = {row.id: row for row in rows}
        for item in batch:
            row = known.get(item.intent_id) if item.intent_id else None
            if row is None:
                result.unknown_intents += 1
            trusted = row is not None or item.source not in _MAIL_SOURCES
            if isinstance(item, Bounce):
                if not item.hard:
                    result.soft_bounces += 1
                    continue
                result.hard_bounces += 1
                if row is not None and _bounce_intent(conn, item, row.id):
                    result.intents_bounced += 1
                if trusted:
                    address = (row.to_addr if row is not None else item.recipient).lower()
                    result.suppressed += _suppress(conn, store, address, "all", item, now)
                    result.addresses.append(address)
            else:
                result.complaints += 1
                address_raw = row.to_addr if row is not None else item.recipient
                if not trusted or not address_raw:
                    continue
                address = address_raw.lower()
                result.suppressed += _suppress(conn, store, address, "marketing", item, now)
                result.addresses.append(address)
                _record_complaint(conn, address, item, now)
                done = _unsubscribe(conn, row.contact_id if row else None, address, now)
                result.unsubscribed += len(done)
                unsubscribed.update(done)
        if unsubscribed and segments is not None and segments.index.by_consent:
            from engine.segments.membership import refresh

            by_consent = segments.index.by_consent
            refresh(conn, segments.index, dict.fromkeys(sorted(unsubscribed), by_consent), now)
        conn.execute(
            schema.audit_log.insert(),
            {
                "ts": now,
                "actor": "engine",
                "action": "feedback",
                "target": ", ".join(sorted(set(result.addresses)))[:400] or None,
                "count": len(batch),
                "detail": {
                    **result.as_dict(),
                    "sources": sorted({i.source for i in batch}),
                },
            },
        )
    return result


def _bounce_intent(conn: Connection, bounce: Bounce, intent_id: str) -> bool:
    intents = schema.intents
    prefix = f"{bounce.status} {bounce.diagnostic}".strip()
    old = sa.func.coalesce(intents.c.reply, "")
    reply = sa.func.substr(sa.literal(prefix + " | relay: ") + old, 1, 4000)
    done = conn.execute(
        sa.update(intents)
        .where(intents.c.id == intent_id, intents.c.status.in_(_BOUNCEABLE))
        .values(status="bounced", reply=reply)
    )
    return bool(done.rowcount)


def _suppress(
    conn: Connection, store: Store, address: str, scope: str, item: FeedbackItem, now: float
) -> int:
    table = schema.suppressions
    reason = "hard_bounce" if scope == "all" else "complaint"
    what = (
        f"{item.status} {item.diagnostic}"
        if isinstance(item, Bounce)
        else f"{item.feedback_type} {item.user_agent}"
    )
    source = f"{item.source} {item.intent_id or '-'}: {what}"[:200]
    inserted = conn.execute(
        store.insert_ignore(table, index=["address"]).returning(table.c.address),
        {"address": address, "scope": scope, "reason": reason, "source": source, "created_at": now},
    ).all()
    if inserted:
        return 1
    if scope == "all":  # a hard bounce widens an earlier marketing-only suppression
        widened = conn.execute(
            sa.update(table)
            .where(table.c.address == address, table.c.scope != "all")
            .values(scope="all", reason=reason, source=source)
        )
        return 1 if widened.rowcount else 0
    return 0


def _record_complaint(conn: Connection, address: str, item: Complaint, now: float) -> None:
    """One ``complaint`` audit row per address (a report fetched twice is not counted twice):
    what ``complaint_rate`` counts."""
    audit = schema.audit_log
    seen = conn.execute(
        sa.select(audit.c.id)
        .where(audit.c.action == "complaint", audit.c.target == address)
        .limit(1)
    ).first()
    if seen is None:
        conn.execute(
            audit.insert(),
            {
                "ts": now,
                "actor": "engine",
                "action": "complaint",
                "target": address,
                "count": 1,
                "detail": {
                    "intent_id": item.intent_id,
                    "feedback_type": item.feedback_type,
                    "user_agent": item.user_agent,
                    "source": item.source,
                },
            },
        )


def _unsubscribe(conn: Connection, contact_id: str | None, address: str, now: float) -> list[str]:
    """Unsubscribe the contact (by id, else by address); the ids it changed."""
    contacts = schema.contacts
    where = (
        contacts.c.id == contact_id if contact_id else sa.func.lower(contacts.c.email) == address
    )
    done = conn.execute(
        sa.update(contacts)
        .where(where, contacts.c.unsubscribed_at.is_(None))
        .values(unsubscribed_at=now, updated_at=now)
        .returning(contacts.c.id)
    )
    return list(done.scalars())


def complaint_rate(store: Store, since: float) -> float:
    """Complaints per message accepted by the relay since ``since`` (0.0 when none were sent).

    Complaints are the ``complaint`` audit rows written since then (one per address, also
    when the address was already suppressed); compare with ``GMAIL_COMPLAINT_TARGET`` (0.1%)
    and ``GMAIL_COMPLAINT_LIMIT`` (0.3%), or use ``complaint_level``.
    """
    intents, audit = schema.intents, schema.audit_log
    with store.begin() as conn:
        sent = conn.execute(
            sa.select(sa.func.count()).where(
                intents.c.accepted_at >= since, intents.c.status.in_(("sent", "bounced"))
            )
        ).scalar_one()
        complaints = conn.execute(
            sa.select(sa.func.count()).where(audit.c.action == "complaint", audit.c.ts >= since)
        ).scalar_one()
    return complaints / sent if sent else 0.0


def complaint_level(rate: float) -> str:
    """``ok`` under Gmail's 0.1% target, ``warning`` up to its 0.3% limit, ``over`` past it."""
    if rate >= GMAIL_COMPLAINT_LIMIT:
        return "over"
    if rate >= GMAIL_COMPLAINT_TARGET:
        return "warning"
    return "ok"


def delivery_rate(store: Store, since: float) -> float:
    """Of the messages the relay accepted since ``since``, the share that did not bounce later
    (1.0 when none were sent)."""
    intents = schema.intents
    with store.begin() as conn:
        rows = conn.execute(
            sa.select(intents.c.status, sa.func.count())
            .where(intents.c.accepted_at >= since, intents.c.status.in_(("sent", "bounced")))
            .group_by(intents.c.status)
        ).all()
    counts = {status: n for status, n in rows}
    total = counts.get("sent", 0) + counts.get("bounced", 0)
    return counts.get("sent", 0) / total if total else 1.0
