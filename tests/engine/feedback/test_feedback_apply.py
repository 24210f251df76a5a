"""Applying feedback to a real store (SQLite and PostgreSQL through ``store_url``)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiosmtplib
import pytest
import sqlalchemy as sa
from test_feedback_parse import (
    ARF,
    ARF_REDACTED,
    DSN,
    DSN_RFC822_ONLY,
    INTENT,
    OTHER,
    POSTMARK_SPAM,
    SENDGRID,
    SES_MESSAGE,
    TEXT_BOUNCE,
    sns,
)

from engine.feedback import Bounce, Complaint, FeedbackInvalid, parse_mail
from engine.feedback.apply import (
    GMAIL_COMPLAINT_LIMIT,
    GMAIL_COMPLAINT_TARGET,
    apply_feedback,
    complaint_level,
    complaint_rate,
    delivery_rate,
)
from engine.feedback.webhooks import parse_webhook
from engine.inbox import CaptureInbox, get_message, list_messages
from engine.store import Store, open_store, schema

NOW = 1_715_090_000.0
SENT_AT = 1_715_083_200.0


def add_intent(store: Store, intent_id: str, to_addr: str, contact_id: str, **kw: Any) -> None:
    row: dict[str, Any] = {
        "id": intent_id,
        "dedup_key": intent_id,
        "workflow_id": "cart",
        "workflow_version": 1,
        "step_id": "email1",
        "contact_id": contact_id,
        "event_id": f"ev-{intent_id}",
        "template_id": "cart",
        "route": "default",
        "category": "marketing",
        "to_addr": to_addr,
        "domain": to_addr.split("@")[1],
        "context": {},
        "status": "sent",
        "attempts": 1,
        "next_attempt_at": SENT_AT,
        "reply": "250 2.0.0 Ok: queued as 1A2B3C",
        "message_id": f"<{intent_id}@shop.example>",
        "received_at": SENT_AT,
        "decided_at": SENT_AT,
        "accepted_at": SENT_AT,
        "finished_at": SENT_AT,
    }
    row.update(kw)
    with store.begin() as conn:
        conn.execute(schema.intents.insert(), row)
        conn.execute(
            store.insert_ignore(schema.contacts, index=["id"]),
            {
                "id": contact_id,
                "email": to_addr,
                "traits": {},
                "consent": {},
                "first_seen_at": SENT_AT,
                "last_seen_at": SENT_AT,
                "updated_at": SENT_AT,
            },
        )


def snapshot(store: Store) -> dict[str, list[tuple[Any, ...]]]:
    with store.begin() as conn:
        return {
            "intents": [
                tuple(r)
                for r in conn.execute(
                    sa.select(
                        schema.intents.c.id, schema.intents.c.status, schema.intents.c.reply
                    ).order_by(schema.intents.c.id)
                )
            ],
            "suppressions": [
                tuple(r)
                for r in conn.execute(
                    sa.select(schema.suppressions).order_by(schema.suppressions.c.address)
                )
            ],
            "contacts": [
                tuple(r)
                for r in conn.execute(
                    sa.select(schema.contacts.c.id, schema.contacts.c.unsubscribed_at).order_by(
                        schema.contacts.c.id
                    )
                )
            ],
            "audit": [
                tuple(r)
                for r in conn.execute(
                    sa.select(schema.audit_log).where(schema.audit_log.c.action == "feedback")
                )
            ],
        }


@pytest.fixture
def store(store_url: str) -> Iterator[Store]:
    s = open_store(store_url)
    add_intent(s, INTENT, "Ann@example.org", "user-ann")
    add_intent(s, OTHER, "carl@example.net", "user-carl")
    try:
        yield s
    finally:
        s.dispose()


def test_hard_bounce_from_dsn(store: Store) -> None:
    result = apply_feedback(store, parse_mail(DSN), NOW)
    assert (result.hard_bounces, result.soft_bounces, result.unknown_intents) == (1, 1, 0)
    assert (result.intents_bounced, result.suppressed) == (1, 1)
    state = snapshot(store)
    assert (INTENT, "bounced", (
        "5.1.1 550 5.1.1 <ann@example.org>: Recipient address rejected: User unknown in "
        "virtual mailbox table | relay: 250 2.0.0 Ok: queued as 1A2B3C"
    )) in state["intents"]  # fmt: skip
    assert (OTHER, "sent", "250 2.0.0 Ok: queued as 1A2B3C") in state["intents"]
    ((address, scope, reason, source, created),) = state["suppressions"]
    assert (address, scope, reason, created) == ("ann@example.org", "all", "hard_bounce", NOW)
    assert source.startswith(f"dsn {INTENT}: 5.1.1")
    ((_, ts, actor, action, _target, count, detail),) = state["audit"]
    assert (ts, actor, action, count) == (NOW, "engine", "feedback", 2)
    assert detail["hard_bounces"] == 1 and detail["soft_bounces"] == 1

    # The same report again (a retried fetch) changes nothing more.
    again = apply_feedback(store, parse_mail(DSN), NOW + 1)
    assert (again.intents_bounced, again.suppressed) == (0, 0)
    assert snapshot(store)["intents"] == state["intents"]


def test_complaint_from_arf(store: Store) -> None:
    result = apply_feedback(store, parse_mail(ARF), NOW)
    assert (result.complaints, result.suppressed, result.unsubscribed) == (1, 1, 1)
    state = snapshot(store)
    ((address, scope, reason, _, _),) = state["suppressions"]
    assert (address, scope, reason) == ("ann@example.org", "marketing", "complaint")
    assert ("user-ann", NOW) in state["contacts"] and ("user-carl", None) in state["contacts"]
    assert all(status == "sent" for _, status, _ in state["intents"])  # a complaint: delivered
    # A later hard bounce widens the suppression to all mail.
    apply_feedback(store, parse_mail(DSN), NOW + 5)
    ((address, scope, reason, _, _),) = snapshot(store)["suppressions"]
    assert (address, scope, reason) == ("ann@example.org", "all", "hard_bounce")


def test_redacted_complaint_uses_the_intents_address(store: Store) -> None:
    result = apply_feedback(store, parse_mail(ARF_REDACTED), NOW)
    assert (result.complaints, result.suppressed, result.unknown_intents) == (1, 1, 0)
    assert snapshot(store)["suppressions"][0][:3] == ("carl@example.net", "marketing", "complaint")


def test_text_bounce_and_webhooks(store: Store) -> None:
    result = apply_feedback(store, parse_mail(TEXT_BOUNCE), NOW)
    assert result.intents_bounced == 1
    # The suppressed address is the one the intent was sent to.
    assert [s[0] for s in snapshot(store)["suppressions"]] == ["ann@example.org"]

    items = parse_webhook(SENDGRID) + parse_webhook(POSTMARK_SPAM)
    result = apply_feedback(store, items, NOW + 1)
    assert (result.hard_bounces, result.soft_bounces, result.complaints) == (1, 1, 2)
    state = snapshot(store)
    assert {s[0]: s[1:3] for s in state["suppressions"]} == {
        "ann@example.org": ("all", "hard_bounce"),
        "carl@example.net": ("marketing", "complaint"),
    }
    assert ("user-carl", NOW + 1) in state["contacts"]


def test_ses_webhook_without_a_known_intent_still_suppresses(store: Store) -> None:
    message = json.loads(json.dumps(SES_MESSAGE))
    message["mail"]["source"] = "news@shop.example"
    message["mail"]["headers"] = []
    message["mail"]["commonHeaders"] = {}
    message["bounce"]["bouncedRecipients"][0]["emailAddress"] = "eve@example.com"
    result = apply_feedback(store, parse_webhook(sns(message)), NOW)
    assert (result.unknown_intents, result.suppressed) == (1, 1)
    assert snapshot(store)["suppressions"][0][:3] == ("eve@example.com", "all", "hard_bounce")


def test_mailed_reports_for_unknown_intents_change_nothing(store: Store) -> None:
    before = snapshot(store)
    forged = DSN.replace(INTENT.encode(), b"f" * 32)
    result = apply_feedback(store, parse_mail(forged), NOW)
    assert (result.hard_bounces, result.unknown_intents, result.suppressed) == (1, 2, 0)
    after = snapshot(store)
    assert after["intents"] == before["intents"] and after["suppressions"] == []
    assert len(after["audit"]) == 1  # counted


def test_hostile_input_changes_nothing(store: Store) -> None:
    before = snapshot(store)
    for body in (
        b'[{"event": "bounce", "email": "ann@example.org\\r\\nBcc: all@example.org"}]',
        b"[" + b" " * (10 * 1024 * 1024) + b"]",
    ):
        with pytest.raises(FeedbackInvalid):
            apply_feedback(store, parse_webhook(body), NOW)
    with pytest.raises(FeedbackInvalid, match="not a Bounce or Complaint"):
        apply_feedback(
            store,
            [Bounce(INTENT, "ann@example.org", "failed", "5.1.1", "", True), "junk"],  # type: ignore[list-item]
            NOW,
        )
    assert snapshot(store) == before


def test_rates(store: Store) -> None:
    for n in range(2, 1000):
        add_intent(store, f"{n:032x}", f"u{n}@example.org", f"user-{n}")
    assert complaint_rate(store, SENT_AT - 1) == 0.0
    assert delivery_rate(store, SENT_AT - 1) == 1.0
    apply_feedback(store, parse_mail(DSN) + parse_mail(ARF), NOW)
    assert complaint_rate(store, SENT_AT - 1) == pytest.approx(1 / 1000)
    assert delivery_rate(store, SENT_AT - 1) == pytest.approx(999 / 1000)
    assert complaint_rate(store, NOW + 1) == 0.0  # nothing sent since
    assert (GMAIL_COMPLAINT_TARGET, GMAIL_COMPLAINT_LIMIT) == (0.001, 0.003)
    assert [complaint_level(r) for r in (0.0005, 0.001, 0.0029, 0.003)] == [
        "ok",
        "warning",
        "warning",
        "over",
    ]


def test_plain_sqlite_path(tmp_path: Path) -> None:
    store = open_store(f"sqlite:///{tmp_path}/e.db")
    try:
        add_intent(store, INTENT, "ann@example.org", "user-ann")
        result = apply_feedback(
            store, [Complaint(INTENT, None, "abuse", "test", None, source="arf")], NOW
        )
        assert (result.complaints, result.unsubscribed, result.unknown_intents) == (1, 1, 0)
    finally:
        store.dispose()


async def test_report_through_the_local_inbox(store: Store, tmp_path: Path) -> None:
    """A DSN mailed to the VERP address lands in the capture inbox and is applied from there."""
    box = CaptureInbox(tmp_path / "inbox", keep=10)
    host, port = await box.start("127.0.0.1", 0)
    # A report whose headers say nothing about the intent: only the envelope recipient does.
    report = DSN_RFC822_ONLY.replace(OTHER.encode(), b"0" * 32)
    try:
        await aiosmtplib.send(
            report,
            sender="MAILER-DAEMON@mx.example.net",
            recipients=[f"bounce+{OTHER}@bounces.shop.example"],
            hostname=host,
            port=port,
            start_tls=False,
            local_hostname="mx.example.net",
        )
    finally:
        await box.stop()
    (entry,) = list_messages(tmp_path / "inbox")
    _, raw = get_message(tmp_path / "inbox", entry.id)
    items = parse_mail(raw, envelope_recipient=entry.rcpt_tos[0])
    assert [i.intent_id for i in items] == [OTHER]
    result = apply_feedback(store, items, NOW)
    assert (result.intents_bounced, result.suppressed) == (1, 1)
    assert (OTHER, "bounced") in [row[:2] for row in snapshot(store)["intents"]]
