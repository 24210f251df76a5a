"""Bounces and complaints from ESP webhooks: Amazon SES (through SNS), SendGrid, Postmark.

``parse_webhook(body)`` recognises the format by its shape; ``parse_ses``, ``parse_sendgrid``
and ``parse_postmark`` take one format each. Authenticating the call (SNS signature, SendGrid's
signed webhook, Postmark's basic auth) is the HTTP handler's job, before this.

The intent comes from the original Message-ID ``<intent_id@domain>`` where the ESP passes it
on (SES ``mail.headers`` / ``commonHeaders``, SendGrid ``smtp-id``), from an ``intent_id``
custom argument / metadata, or from the VERP envelope sender (SES ``mail.source``).
Events that are not bounces or complaints (deliveries, opens, clicks) give no item.
"""

from __future__ import annotations

import re
from datetime import datetime
from typing import Any

import orjson

from engine.feedback import (
    Bounce,
    Complaint,
    FeedbackInvalid,
    FeedbackItem,
    check_address,
    check_size,
    check_status,
    clean,
    intent_from_address,
    intent_from_message_id,
)

__all__ = ["parse_postmark", "parse_sendgrid", "parse_ses", "parse_webhook"]

MAX_EVENTS = 10_000
_HARD_POSTMARK = frozenset({"HardBounce", "BadEmailAddress", "ManuallyDeactivated"})
_STATUS_CODE = re.compile(r"\b[245]\.\d{1,3}\.\d{1,3}\b")
_DELAY_POSTMARK = frozenset({"Transient", "DnsError", "SoftBounce"})


def _json(body: bytes | str | Any, what: str) -> Any:
    if isinstance(body, bytes | str):
        check_size(body, what)
        try:
            return orjson.loads(body)
        except orjson.JSONDecodeError as exc:
            raise FeedbackInvalid(f"{what}: not JSON ({exc})") from None
    return body


def _obj(value: Any, what: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise FeedbackInvalid(f"{what}: missing or not an object")
    return value


def _text(value: Any, what: str) -> str:
    if not isinstance(value, str) or not value:
        raise FeedbackInvalid(f"{what}: missing")
    return value


def _list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else []


def _dict(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _iso(value: Any) -> float | None:
    if not isinstance(value, str):
        return None
    try:
        return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None


def _intent(*candidates: Any, addresses: tuple[Any, ...] = ()) -> str | None:
    for value in candidates:
        if isinstance(value, str):
            found = intent_from_message_id(value)
            if found:
                return found
            if len(value) == 32 and all(c in "0123456789abcdef" for c in value.lower()):
                return value.lower()
    for address in addresses:
        found = intent_from_address(address) if isinstance(address, str) else None
        if found:
            return found
    return None


def parse_webhook(body: bytes | str | Any) -> list[FeedbackItem]:
    """Any of the supported webhook bodies; ``FeedbackInvalid`` names what was missing."""
    data = _json(body, "webhook")
    if isinstance(data, list):
        return list(parse_sendgrid(data))
    obj = _obj(data, "webhook")
    if ("Type" in obj and ("Message" in obj or "TopicArn" in obj)) or "notificationType" in obj:
        return list(parse_ses(obj))
    if "eventType" in obj and "mail" in obj:
        return list(parse_ses(obj))
    if "RecordType" in obj or ("Type" in obj and "Email" in obj):
        return list(parse_postmark(obj))
    raise FeedbackInvalid(
        "webhook: unknown format (expected an SNS notification from SES, a SendGrid event "
        "array, or a Postmark Bounce/SpamComplaint object)"
    )


# Amazon SES ------------------------------------------------------------------------------


def parse_ses(body: bytes | str | Any) -> list[FeedbackItem]:
    """An SNS notification whose ``Message`` is an SES Bounce or Complaint notification
    (or that notification itself, or an SES event-publishing record)."""
    data = _obj(_json(body, "SES webhook"), "SES webhook")
    if data.get("Type") == "SubscriptionConfirmation":
        raise FeedbackInvalid(
            "SES webhook: an SNS SubscriptionConfirmation, not a notification; confirm the "
            "subscription (SubscribeURL) first"
        )
    if "Message" in data:
        message = data["Message"]
        note = _obj(_json(message, "SES webhook: Message") if isinstance(message, str) else message,
                    "SES webhook: Message")  # fmt: skip
    else:
        note = data
    kind = note.get("notificationType") or note.get("eventType")
    mail = _obj(note.get("mail"), "SES webhook: mail")
    headers = _list(mail.get("headers"))
    message_id = next(
        (
            h.get("value")
            for h in headers
            if isinstance(h, dict) and str(h.get("name", "")).lower() == "message-id"
        ),
        None,
    )
    common = _dict(mail.get("commonHeaders"))
    tags = _dict(mail.get("tags"))
    tag_intent = (
        (tags.get("intent_id") or [None])[0] if isinstance(tags.get("intent_id"), list) else None
    )
    intent = _intent(
        message_id, common.get("messageId"), tag_intent, addresses=(mail.get("source"),)
    )
    if kind == "Bounce":
        bounce = _obj(note.get("bounce"), "SES webhook: bounce")
        bounce_type = _text(bounce.get("bounceType"), "SES webhook: bounce.bounceType")
        recipients = bounce.get("bouncedRecipients")
        if not isinstance(recipients, list) or not recipients:
            raise FeedbackInvalid("SES webhook: bounce.bouncedRecipients missing or empty")
        hard = bounce_type == "Permanent"
        items: list[FeedbackItem] = []
        for n, rcpt in enumerate(recipients[:MAX_EVENTS], 1):
            where = f"SES webhook: bouncedRecipients[{n - 1}]"
            rcpt = _obj(rcpt, where)
            status = check_status(
                rcpt.get("status"), f"{where}.status", "5.0.0" if hard else "4.0.0"
            )
            action = str(rcpt.get("action") or ("failed" if hard else "delayed")).lower()
            diagnostic = clean(rcpt.get("diagnosticCode")) or clean(
                f"{bounce_type} {bounce.get('bounceSubType', '')}"
            )
            items.append(
                Bounce(
                    intent_id=intent,
                    recipient=check_address(rcpt.get("emailAddress"), f"{where}.emailAddress"),
                    action=action if action in ("failed", "delayed") else "failed",
                    status=status,
                    diagnostic=diagnostic,
                    hard=hard,
                    source="ses",
                )
            )
        return items
    if kind == "Complaint":
        complaint = _obj(note.get("complaint"), "SES webhook: complaint")
        recipients = complaint.get("complainedRecipients")
        if not isinstance(recipients, list) or not recipients:
            raise FeedbackInvalid("SES webhook: complaint.complainedRecipients missing or empty")
        return [
            Complaint(
                intent_id=intent,
                recipient=check_address(
                    _obj(r, "SES webhook: complainedRecipients[]").get("emailAddress"),
                    "SES webhook: complainedRecipients[].emailAddress",
                ),
                feedback_type=clean(complaint.get("complaintFeedbackType") or "abuse", 40).lower(),
                user_agent=clean(complaint.get("userAgent"), 200),
                arrival_date=_iso(complaint.get("arrivalDate") or complaint.get("timestamp")),
                source="ses",
            )
            for r in recipients[:MAX_EVENTS]
        ]
    if kind in (
        "Delivery",
        "Send",
        "Open",
        "Click",
        "Reject",
        "DeliveryDelay",
        "Rendering Failure",
    ):
        return []
    raise FeedbackInvalid(f"SES webhook: notificationType {kind!r} is not Bounce or Complaint")


# SendGrid --------------------------------------------------------------------------------


def parse_sendgrid(body: bytes | str | Any) -> list[FeedbackItem]:
    """A SendGrid Event Webhook body: an array of events; bounce, dropped, deferred and
    spamreport events give items, the others (processed, delivered, open...) none."""
    data = _json(body, "SendGrid webhook")
    if not isinstance(data, list):
        raise FeedbackInvalid("SendGrid webhook: expected an array of events")
    if len(data) > MAX_EVENTS:
        raise FeedbackInvalid(f"SendGrid webhook: more than {MAX_EVENTS} events")
    items: list[FeedbackItem] = []
    for n, raw in enumerate(data):
        where = f"SendGrid webhook: event {n}"
        event = _obj(raw, where)
        kind = _text(event.get("event"), f"{where}: event")
        if kind not in ("bounce", "dropped", "deferred", "spamreport"):
            continue
        recipient = check_address(event.get("email"), f"{where}: email")
        intent = _intent(event.get("smtp-id"), event.get("intent_id"))
        if kind == "spamreport":
            items.append(
                Complaint(
                    intent_id=intent,
                    recipient=recipient,
                    feedback_type="abuse",
                    user_agent="SendGrid",
                    arrival_date=float(event["timestamp"])
                    if isinstance(event.get("timestamp"), int | float)
                    else None,
                    source="sendgrid",
                )
            )
            continue
        reason = clean(event.get("reason") or event.get("response"))
        if kind == "bounce":
            blocked = event.get("type") == "blocked"  # a block: the server refused us, for now
            status = check_status(
                str(event.get("status") or ""), f"{where}: status", "4.0.0" if blocked else "5.0.0"
            )
            hard = not blocked and status.startswith("5")
            action = "failed"
        elif kind == "deferred":
            status = check_status(str(event.get("status") or ""), f"{where}: status", "4.0.0")
            hard, action = False, "delayed"
        else:  # dropped: SendGrid did not send it (suppressed there, invalid, spam content)
            status, hard, action = "5.0.0", False, "failed"
        items.append(
            Bounce(
                intent_id=intent,
                recipient=recipient,
                action=action,
                status=status,
                diagnostic=reason,
                hard=hard,
                source="sendgrid",
            )
        )
    return items


# Postmark --------------------------------------------------------------------------------


def parse_postmark(body: bytes | str | Any) -> list[FeedbackItem]:
    """A Postmark Bounce or SpamComplaint webhook (one object per call)."""
    data = _obj(_json(body, "Postmark webhook"), "Postmark webhook")
    record = data.get("RecordType") or (
        "SpamComplaint" if data.get("Type") == "SpamComplaint" else "Bounce"
    )
    kind = _text(data.get("Type"), "Postmark webhook: Type")
    recipient = check_address(data.get("Email"), "Postmark webhook: Email")
    metadata = _dict(data.get("Metadata"))
    headers = _list(data.get("Headers"))
    header_id = next(
        (
            h.get("Value")
            for h in headers
            if isinstance(h, dict) and str(h.get("Name", "")).lower() == "message-id"
        ),
        None,
    )
    intent = _intent(header_id, data.get("MessageID"), metadata.get("intent_id"))
    if record == "SpamComplaint" or kind == "SpamComplaint":
        return [
            Complaint(
                intent_id=intent,
                recipient=recipient,
                feedback_type="abuse",
                user_agent="Postmark",
                arrival_date=_iso(data.get("BouncedAt")),
                source="postmark",
            )
        ]
    if record != "Bounce":
        return []  # Delivery, Open, Click, SubscriptionChange: not feedback
    hard = kind in _HARD_POSTMARK
    return [
        Bounce(
            intent_id=intent,
            recipient=recipient,
            action="delayed" if kind in _DELAY_POSTMARK and not hard else "failed",
            status=check_status(str(data.get("Details") or ""), "Postmark webhook: Details", "")
            if _has_status(data.get("Details"))
            else ("5.0.0" if hard else "4.0.0"),
            diagnostic=clean(data.get("Description") or data.get("Details")),
            hard=hard,
            source="postmark",
        )
    ]


def _has_status(value: Any) -> bool:
    return isinstance(value, str) and _STATUS_CODE.search(value) is not None
