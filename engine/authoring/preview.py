"""Previews: a template rendered as a real contact and event through the deliver stage's composer.

A preview is built the way the deliver stage builds the message for a send intent: an intent
with the same context decide would write (``{"event": {name, properties, ts}}``, the trigger
event as recorded in the contact's activity), the contact's stored traits, the same
unsubscribe token, ``Composer.build``. So the HTML and text parts are the bytes the capture inbox
receives for that contact and event; only Date, Message-ID (and the MIME boundary derived from
it) and a DKIM signature differ between two builds.
"""

from __future__ import annotations

import email.header
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa

from engine.clv import value_fields
from engine.deliver.compose import MARKETING, BuiltMessage, Composer
from engine.deliver.model import ClaimedIntent, ContactRow
from engine.ids import new_id
from engine.render import Renderer, TemplateSource
from engine.store import schema

DEFAULT_ROUTE = "default"


@dataclass(frozen=True, slots=True)
class Target:
    """Who the preview is for, and which event triggered it."""

    contact: ContactRow
    event: dict[str, Any]  # {"name", "properties", "ts"}: the intent context's "event"
    event_id: str  # the trigger event's messageId ("sample" for sample data)
    sample: bool = False

    def describe(self) -> dict[str, Any]:
        name = self.contact.traits.get("first_name") or self.contact.traits.get("name") or ""
        return {
            "contact": self.contact.id,
            "email": self.contact.email,
            "name": str(name),
            "event": self.event.get("name", ""),
            "event_id": self.event_id,
            "event_ts": self.event.get("ts"),
            "sample": self.sample,
        }


class PreviewRefused(LookupError):
    """The preview cannot be made (no such contact or event, no address); says why."""


def load_contact(conn: sa.Connection, contact_id: str) -> ContactRow:
    """The stored contact as the deliver stage reads it; ``PreviewRefused`` if unknown."""
    c = schema.contacts
    row = conn.execute(
        sa.select(
            c.c.id, c.c.email, c.c.traits, c.c.consent, c.c.unsubscribed_at, c.c.lifetime_value,
            c.c.orders, c.c.first_order_at, c.c.last_order_at,
        ).where(c.c.id == contact_id)
    ).first()  # fmt: skip
    if row is None:
        raise PreviewRefused(f"there is no contact {contact_id!r}")
    return ContactRow(
        id=row.id,
        email=row.email,
        traits=dict(row.traits or {}),
        consent=dict(row.consent or {}),
        unsubscribed_at=row.unsubscribed_at,
        value=value_fields(row.lifetime_value, row.orders, row.first_order_at, row.last_order_at),
    )


def _event(row: Any) -> dict[str, Any]:
    return {"name": row.name, "properties": row.properties, "ts": row.ts}


def load_event(conn: sa.Connection, contact_id: str, event_id: str) -> tuple[dict[str, Any], str]:
    """One recorded event of the contact by its messageId: (intent context event, messageId)."""
    a = schema.activity
    row = conn.execute(
        sa.select(a.c.name, a.c.properties, a.c.ts, a.c.message_id)
        .where(a.c.contact_id == contact_id, a.c.message_id == event_id)
        .limit(1)
    ).first()
    if row is None:
        raise PreviewRefused(f"contact {contact_id!r} has no recorded event {event_id!r}")
    return _event(row), str(row.message_id)


def latest_event(
    conn: sa.Connection, contact_id: str, names: list[str]
) -> tuple[dict[str, Any], str] | None:
    """The contact's most recent event among ``names`` (any event when empty), or None."""
    a = schema.activity
    query = sa.select(a.c.name, a.c.properties, a.c.ts, a.c.message_id).where(
        a.c.contact_id == contact_id
    )
    if names:
        query = query.where(a.c.name.in_(names))
    row = conn.execute(query.order_by(a.c.ts.desc(), a.c.id.desc()).limit(1)).first()
    return None if row is None else (_event(row), str(row.message_id))


def recent_events(conn: sa.Connection, contact_id: str, limit: int) -> list[dict[str, Any]]:
    """The contact's recent events, newest first: message_id, name, ts, properties."""
    a = schema.activity
    rows = conn.execute(
        sa.select(a.c.message_id, a.c.name, a.c.ts, a.c.properties)
        .where(a.c.contact_id == contact_id)
        .order_by(a.c.ts.desc(), a.c.id.desc())
        .limit(limit)
    )
    return [dict(r._mapping) for r in rows]


def draft_composer(composer: Composer, source: TemplateSource) -> Composer:
    """A composer like ``composer`` whose renderer holds only ``source`` (a draft): same
    identity and unsubscribe tokens, no signing. ``TemplateInvalid`` if it does not compile."""
    return Composer(Renderer([source]), composer.tokens, composer.identity)


def build_preview(
    composer: Composer,
    template_id: str,
    target: Target,
    *,
    category: str,
    now: float,
    workflow_id: str = "preview",
) -> BuiltMessage:
    """The message the deliver stage would build for this contact and trigger event.

    ``RenderError`` or ``HeaderInvalid`` when it cannot be built (as a send would fail).
    """
    intent = intent_for(target, template_id, category=category, now=now, workflow_id=workflow_id)
    return composer.build(intent, target.contact, now)


def intent_for(
    target: Target,
    template_id: str,
    *,
    category: str,
    now: float,
    workflow_id: str = "preview",
    to_addr: str | None = None,
) -> ClaimedIntent:
    """A send intent as decide writes it for this contact and trigger event."""
    contact = target.contact
    if not contact.email:
        raise PreviewRefused(
            f"contact {contact.id!r} has no email address: the engine sends them nothing"
        )
    return ClaimedIntent(
        id=new_id(),
        workflow_id=workflow_id,
        step_id="preview",
        contact_id=contact.id,
        event_id=target.event_id,
        template_id=template_id,
        route=DEFAULT_ROUTE,
        category=category,
        to_addr=to_addr or contact.email,
        context={"event": target.event},
        attempts=0,
        expires_at=None,
        received_at=now,
    )


def headers_of(message: bytes) -> list[tuple[str, str]]:
    """The message's top-level headers, unfolded and decoded (RFC 2047) for reading."""
    head = message.split(b"\r\n\r\n", 1)[0].decode("utf-8", "replace")
    out: list[tuple[str, str]] = []
    for line in head.split("\r\n"):
        if line[:1] in (" ", "\t") and out:
            name, value = out[-1]
            out[-1] = (name, value + line)
            continue
        name, _, value = line.partition(":")
        out.append((name, value.strip()))
    decoded = []
    for name, value in out:
        try:
            text = str(email.header.make_header(email.header.decode_header(value)))
        except (ValueError, LookupError):  # not decodable: show it as sent
            text = value
        decoded.append((name, text))
    return decoded


def describe_preview(built: BuiltMessage, target: Target, category: str) -> dict[str, Any]:
    """The wire form of a preview (``templates.preview``'s reply)."""
    rendered = built.email
    return {
        "template": rendered.template_id,
        "version": rendered.template_version,
        "subject": rendered.subject,
        "html": rendered.html,
        "text": rendered.text,
        "headers": [list(h) for h in headers_of(built.message)],
        "raw": built.message.decode("utf-8", "replace"),
        "size": len(built.message),
        "html_size": len(rendered.html.encode("utf-8")),
        "message_id": built.message_id,
        "unsubscribe_url": built.unsubscribe_url,
        "category": category,
        "marketing": category == MARKETING,
        "target": target.describe(),
    }
