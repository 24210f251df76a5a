"""Spam complaints: RFC 5965 Abuse Reporting Format (feedback loops).

An ARF report is ``multipart/report; report-type=feedback-report``: a human-readable part, a
``message/feedback-report`` part (Feedback-Type, User-Agent, Version, and optionally
Original-Mail-From, Original-Rcpt-To, Arrival-Date) and the original message or its headers.
Mailbox providers often redact the recipient; the intent (and so the address) is then found
through the original's VERP Return-Path or its Message-ID.
"""

from __future__ import annotations

import re
from email import message_from_string
from email.message import Message
from email.policy import compat32
from email.utils import parsedate_to_datetime

from engine.feedback import (
    Complaint,
    FeedbackInvalid,
    check_address,
    clean,
    header,
    intent_of,
    load_message,
    original_headers,
)

__all__ = ["parse_arf"]

_FEEDBACK_TYPE = re.compile(r"[a-z][a-z0-9-]{0,39}")


def _fields(report: Message) -> Message:
    parts = report.get_payload()
    if not isinstance(parts, list) or not parts:
        raise FeedbackInvalid("complaint: multipart/report with no parts")
    for part in report.walk():
        if part.get_content_type() == "message/feedback-report":
            payload = part.get_payload()
            if isinstance(payload, list) and payload and isinstance(payload[0], Message):
                return payload[0]
            if isinstance(payload, str) and payload.strip():
                return message_from_string(payload.lstrip("\r\n"), policy=compat32)
            break
    raise FeedbackInvalid("complaint: no message/feedback-report part")


def _date(value: str | None) -> float | None:
    if not value:
        return None
    try:
        return parsedate_to_datetime(value).timestamp()
    except (TypeError, ValueError, IndexError, OverflowError):
        return None


def parse_arf(raw: bytes | Message, envelope_recipient: str | None = None) -> Complaint:
    """The complaint in an ARF report; ``FeedbackInvalid`` when it is not one."""
    report = load_message(raw, "complaint")
    if report.get_content_type() != "multipart/report" or (
        str(report.get_param("report-type", "")).lower() != "feedback-report"
    ):
        raise FeedbackInvalid(
            "complaint: not a multipart/report; report-type=feedback-report message"
        )
    fields = _fields(report)
    feedback_type = str(fields.get("Feedback-Type", "")).strip().lower()
    if not feedback_type:
        raise FeedbackInvalid("complaint: missing Feedback-Type")
    if not _FEEDBACK_TYPE.fullmatch(feedback_type):
        raise FeedbackInvalid(f"complaint: Feedback-Type {feedback_type[:40]!r} is not a token")
    original = original_headers(report)
    mail_from = fields.get("Original-Mail-From")
    intent = intent_of(None, original, (str(mail_from) if mail_from else None, envelope_recipient))
    rcpt = fields.get("Original-Rcpt-To")
    recipient: str | None = None
    if rcpt:
        recipient = check_address(str(rcpt), "complaint: Original-Rcpt-To")
    elif original is not None and original.get("To"):
        to = header(original, "To") or ""
        match = re.search(r"<([^<>]+)>\s*$", to)
        try:
            recipient = check_address(match.group(1) if match else to, "complaint: original To")
        except FeedbackInvalid:
            recipient = None  # redacted ("xxxxx@example.com" stays; garbage is dropped)
        if recipient is not None and _redacted(recipient):
            recipient = None
    return Complaint(
        intent_id=intent,
        recipient=recipient,
        feedback_type=feedback_type,
        user_agent=clean(fields.get("User-Agent"), 200),
        arrival_date=_date(str(fields.get("Arrival-Date") or fields.get("Received-Date") or "")),
        source="arf",
    )


def _redacted(address: str) -> bool:
    local = address.split("@", 1)[0]
    return len(set(local)) == 1 and local[0] in "x*#"
