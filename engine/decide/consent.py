"""Consent in the decide transaction: load it for the contacts that need it, apply the batch's
consent events in stream order, write the changed purposes and their history.

Loading is targeted: only contacts with a consent event in the batch, or whose events trigger a
workflow with ``requires_consent``, pay for reading ``contacts.consent``. Writing re-reads the
stored consent of the changed contacts (``FOR UPDATE`` on PostgreSQL) and replaces only the
purposes this batch changed, so an import or another writer changing another purpose at the same
moment is not overwritten.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from typing import Any

import sqlalchemy as sa
from sqlalchemy import Connection

from engine.consent import CONSENT_EVENTS, apply_changes, changes_in, granted, history_row
from engine.decide.profiles import Contact
from engine.decide.registry import WorkflowIndex
from engine.decide.workflow import Workflow
from engine.errors import EventInvalid
from engine.events import Event
from engine.store import schema

log = logging.getLogger(__name__)


def needs_consent(index: WorkflowIndex, event: Event) -> bool:
    """Whether deciding ``event`` reads or changes the contact's consent."""
    if event.type == "track" and event.name in CONSENT_EVENTS:
        return True
    return any(wf.requires_consent for wf in index.triggered_by(event.activity_name))


def load_consent(
    conn: Connection, contacts: Mapping[str, Contact], events: Iterable[Event], index: WorkflowIndex
) -> None:
    """Fill ``consent`` of the stored contacts whose events need it (one query)."""
    wanted = sorted({e.contact_key for e in events if needs_consent(index, e)})
    for cid in wanted:
        contacts[cid].consent = {}
    stored = [cid for cid in wanted if contacts[cid].stored]
    if not stored:
        return
    c = schema.contacts
    for start in range(0, len(stored), 500):
        chunk = stored[start : start + 500]
        for row in conn.execute(sa.select(c.c.id, c.c.consent).where(c.c.id.in_(chunk))):
            contacts[row.id].consent = dict(row.consent) if isinstance(row.consent, dict) else {}


def observe_consent(event: Event, contact: Contact) -> None:
    """Apply the consent changes ``event`` makes to the in-memory contact (stream order)."""
    if event.type != "track" or event.name not in CONSENT_EVENTS:
        return
    try:
        changes = changes_in(
            event.name,
            event.properties,
            event.context,
            at=event.timestamp,
            event_id=event.message_id,
        )
    except EventInvalid as exc:  # stored before the validator checked consent events
        log.warning("consent event %s ignored: %s", event.message_id, exc)
        return
    if contact.consent is None:
        contact.consent = {}
    contact.consent_log.extend(apply_changes(contact.consent, changes))


def consent_allows(wf: Workflow, contact: Contact) -> bool:
    """The workflow's ``requires_consent`` holds for the contact now (True if it has none)."""
    return wf.requires_consent is None or granted(contact.consent, wf.requires_consent)


def write_consent(conn: Connection, contacts: Iterable[Contact], now: float) -> set[str]:
    """Store the batch's consent changes and their history; the ids of contacts whose
    consent in effect changed (their consent segments need a refresh)."""
    changed = [c for c in contacts if c.consent_log]
    if not changed:
        return set()
    history = [
        history_row(c.id, change, applied, now)
        for c in changed
        for change, applied in c.consent_log
    ]
    conn.execute(schema.consent_history.insert(), history)
    effective = {
        c.id: {change.purpose for change, applied in c.consent_log if applied} for c in changed
    }
    effective = {cid: purposes for cid, purposes in effective.items() if purposes}
    if not effective:
        return set()
    tbl = schema.contacts
    query = sa.select(tbl.c.id, tbl.c.consent).where(tbl.c.id.in_(sorted(effective)))
    if conn.dialect.name == "postgresql":
        query = query.with_for_update()
    stored: dict[str, dict[str, Any]] = {
        row.id: dict(row.consent) if isinstance(row.consent, dict) else {}
        for row in conn.execute(query)
    }
    by_id = {c.id: c for c in changed}
    rows = []
    for cid, purposes in effective.items():
        merged = stored.get(cid, {})
        mine = by_id[cid].consent or {}
        merged.update({p: mine[p] for p in purposes})
        rows.append({"b_id": cid, "b_consent": merged, "b_updated": now})
    conn.execute(
        sa.update(tbl)
        .where(tbl.c.id == sa.bindparam("b_id"))
        .values(consent=sa.bindparam("b_consent"), updated_at=sa.bindparam("b_updated")),
        rows,
    )
    for contact in changed:
        contact.consent_log = []
    return set(effective)
