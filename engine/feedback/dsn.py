"""Bounces: RFC 3464 delivery status notifications, and plain-text ones as best effort.

A DSN is ``multipart/report; report-type=delivery-status`` with a human-readable part, a
``message/delivery-status`` part (one block of per-message fields, then one block per
recipient: Final-Recipient, Action, Status, Diagnostic-Code) and usually the original message
or its headers (``message/rfc822`` / ``text/rfc822-headers``).

Many servers still send plain text ("Delivery to the following recipient failed permanently:
... 550 5.1.1 ..."). Those are recognised by their wording and an RFC 3463 status code; the
recipient is the first address in the text that is not ours or a mailer daemon's.
"""

from __future__ import annotations

import re
from email.message import Message

from engine.feedback import (
    ACTIONS,
    Bounce,
    FeedbackInvalid,
    check_address,
    check_status,
    clean,
    header,
    intent_from_address,
    intent_from_message_id,
    intent_of,
    load_message,
    original_headers,
)

__all__ = ["parse_dsn"]

MAX_RECIPIENTS = 1000

_FAILURE_WORDS = re.compile(
    r"failed permanently|permanent (?:error|failure|fatal)|could not be delivered"
    r"|undeliverable|delivery has failed|delivery (?:status notification )?\(?failure"
    r"|user unknown|does not exist|no such (?:user|mailbox)|mailbox unavailable"
    r"|returned mail|address rejected|recipient address rejected",
    re.IGNORECASE,
)
_DELAY_WORDS = re.compile(
    r"delivery (?:has been )?delayed|will (?:continue to )?retry|temporar(?:y|ily)",
    re.IGNORECASE,
)
_STATUS_IN_TEXT = re.compile(r"(?<![\d.])([245])\.(\d{1,3})\.(\d{1,3})(?![\d.])")
_SMTP_CODE = re.compile(r"(?<!\d)([45]\d\d)[ -]")
_ADDRESS_IN_TEXT = re.compile(
    r"<?([^\s@<>()\[\],;:\"'\\]{1,64}@[A-Za-z0-9][A-Za-z0-9.-]*[A-Za-z0-9])>?"
)
_DAEMONS = re.compile(r"^(mailer-daemon|postmaster|bounce[+-]|noreply|no-reply)", re.IGNORECASE)
_MESSAGE_ID_IN_TEXT = re.compile(r"Message-ID:\s*(<[^>\s]{1,400}>)", re.IGNORECASE)


def parse_dsn(raw: bytes | Message, envelope_recipient: str | None = None) -> list[Bounce]:
    """The bounces in a report: one per recipient block of a DSN, or one for a plain-text
    bounce. ``envelope_recipient`` (the RCPT TO the report came with) is the surest VERP.

    ``FeedbackInvalid`` when it is neither, or a field is malformed (nothing is returned then).
    """
    report = load_message(raw, "bounce")
    if report.get_content_type() == "multipart/report":
        if str(report.get_param("report-type", "")).lower() != "delivery-status":
            raise FeedbackInvalid(
                f"bounce: multipart/report of type {report.get_param('report-type')!r}, "
                "not delivery-status"
            )
        return _standard(report, envelope_recipient)
    return _plain_text(report, envelope_recipient)


def _status_blocks(report: Message) -> list[Message]:
    parts = report.get_payload()
    if not isinstance(parts, list) or not parts:
        raise FeedbackInvalid("bounce: multipart/report with no parts")
    for part in report.walk():
        if part.get_content_type() in ("message/delivery-status", "message/global-delivery-status"):
            blocks = part.get_payload()
            if isinstance(blocks, list):
                return [b for b in blocks if isinstance(b, Message) and b.keys()]
            raise FeedbackInvalid("bounce: the message/delivery-status part has no fields")
    raise FeedbackInvalid("bounce: no message/delivery-status part")


def _standard(report: Message, envelope_recipient: str | None) -> list[Bounce]:
    blocks = _status_blocks(report)
    per_recipient = [b for b in blocks if b.get("Final-Recipient") or b.get("Action")]
    if not per_recipient:
        raise FeedbackInvalid("bounce: no per-recipient fields (Final-Recipient, Action, Status)")
    if len(per_recipient) > MAX_RECIPIENTS:
        raise FeedbackInvalid(f"bounce: more than {MAX_RECIPIENTS} recipients")
    original = original_headers(report)
    intent = intent_of(report, original, (envelope_recipient,))
    bounces = []
    for n, block in enumerate(per_recipient, 1):
        where = f"bounce recipient {n}"
        recipient = block.get("Final-Recipient") or block.get("Original-Recipient")
        address = check_address(str(recipient) if recipient else None, f"{where}: Final-Recipient")
        action = str(block.get("Action", "")).strip().lower()
        if action not in ACTIONS:
            raise FeedbackInvalid(
                f"{where}: Action {action[:40]!r} is not one of {sorted(ACTIONS)}"
            )
        status = check_status(block.get("Status"), f"{where}: Status", "")
        if not status:
            raise FeedbackInvalid(f"{where}: missing Status")
        diagnostic = clean(block.get("Diagnostic-Code"))
        if diagnostic.lower().startswith("smtp;"):
            diagnostic = diagnostic[5:].strip()
        bounces.append(
            Bounce(
                intent_id=intent,
                recipient=address,
                action=action,
                status=status,
                diagnostic=diagnostic,
                hard=action == "failed" and status.startswith("5"),
                source="dsn",
            )
        )
    return bounces


def _text_of(message: Message) -> str:
    texts: list[str] = []
    for part in message.walk():
        if part.get_content_maintype() == "text":
            data = part.get_payload(decode=True)
            if isinstance(data, bytes):
                charset = part.get_content_charset() or "utf-8"
                try:
                    texts.append(data.decode(charset, "replace"))
                except LookupError:
                    texts.append(data.decode("utf-8", "replace"))
    return "\n".join(texts)


def _plain_text(message: Message, envelope_recipient: str | None) -> list[Bounce]:
    text = _text_of(message)
    subject = header(message, "Subject") or ""
    if not text.strip():
        raise FeedbackInvalid("bounce: no report parts and no text")
    permanent = _FAILURE_WORDS.search(subject) or _FAILURE_WORDS.search(text)
    delayed = _DELAY_WORDS.search(subject) or _DELAY_WORDS.search(text)
    statuses = ["{}.{}.{}".format(*m.groups()) for m in _STATUS_IN_TEXT.finditer(text)]
    if not statuses:
        codes = _SMTP_CODE.findall(text)
        statuses = [f"{code[0]}.0.0" for code in codes]
    if not (permanent or delayed) or not statuses:
        raise FeedbackInvalid(
            "bounce: not a delivery status report, and no bounce wording with a status code "
            "(like 'failed permanently ... 5.1.1') in its text"
        )
    status = next((s for s in statuses if s[0] == "5"), statuses[0])
    recipient = None
    for match in _ADDRESS_IN_TEXT.finditer(text):
        candidate = match.group(1).strip(".")
        if _DAEMONS.match(candidate) or intent_from_address(candidate):
            continue
        recipient = check_address(candidate, "bounce text: recipient")
        break
    if recipient is None:
        raise FeedbackInvalid("bounce text: no recipient address in it")
    line = next(
        (ln.strip() for ln in text.splitlines() if status in ln or status[0] + "." in ln), ""
    )
    original = original_headers(message)
    intent = intent_of(message, original, (envelope_recipient,))
    if intent is None:
        for match in _MESSAGE_ID_IN_TEXT.finditer(text):
            intent = intent_from_message_id(match.group(1))
            if intent:
                break
    if intent is None:
        verp = re.search(r"bounce\+[0-9a-fA-F]{32}@", text)
        intent = intent_from_address(verp.group(0)) if verp else None
    action = "failed" if status[0] == "5" or (permanent and not delayed) else "delayed"
    return [
        Bounce(
            intent_id=intent,
            recipient=recipient,
            action=action,
            status=status,
            diagnostic=clean(line, 500),
            hard=action == "failed" and status[0] == "5",
            source="text",
        )
    ]
