"""What comes back after a 250: asynchronous bounces and spam complaints.

A 250 only means the relay took the message. Later, bounces (RFC 3464 delivery status
notifications, and the non-standard plain-text kind) and complaints (RFC 5965 ARF feedback
reports) arrive at the bounce address, or as webhook calls from an ESP (SES, SendGrid,
Postmark). They are parsed into ``Bounce`` and ``Complaint`` items (``dsn``, ``arf``,
``webhooks``) and applied to the store in one transaction (``apply``).

Each item is tied to its send intent through the VERP envelope sender
``bounce+<intent_id>@<bounce_domain>`` or the Message-ID ``<intent_id@from-domain>``; both
carry the 32-hex-digit intent id. Reports are hostile input: anything that does not parse, is
too large, or holds an address with control characters raises ``FeedbackInvalid`` naming what
was wrong, before anything is written.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from email import message_from_bytes
from email.header import decode_header, make_header
from email.message import Message
from email.policy import compat32

from engine.errors import EngineError

__all__ = [
    "MAX_REPORT_BYTES",
    "Bounce",
    "Complaint",
    "FeedbackInvalid",
    "FeedbackItem",
    "check_address",
    "check_size",
    "intent_from_address",
    "intent_from_message_id",
    "parse_mail",
]

# Reports quote at most the original message; ours are tens of kilobytes. A larger report is
# refused rather than parsed (the email parser keeps everything in memory).
MAX_REPORT_BYTES = 2 * 1024 * 1024
MAX_HEADER_BYTES = 64 * 1024

ACTIONS = frozenset({"failed", "delayed", "delivered", "relayed", "expanded"})

_INTENT = r"[0-9a-f]{32}"
_VERP = re.compile(rf"bounce\+({_INTENT})@", re.IGNORECASE)
_MESSAGE_ID = re.compile(rf"<?({_INTENT})@[^>\s]+>?", re.IGNORECASE)
_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029]")
_ADDRESS = re.compile(
    r"[^\s@<>()\[\],;:\"\\]{1,64}@[A-Za-z0-9](?:[A-Za-z0-9.-]{0,251}[A-Za-z0-9])?"
)
_STATUS = re.compile(r"[245]\.\d{1,3}\.\d{1,3}")


class FeedbackInvalid(EngineError, ValueError):
    """A bounce, complaint or webhook body cannot be used; the message says what was missing."""


@dataclass(frozen=True)
class Bounce:
    """One recipient's delivery status from a DSN or an ESP webhook.

    ``hard`` is a permanent failure (action ``failed`` with a 5.x.x status, or the ESP's own
    "permanent" verdict): the address is suppressed. Delays and soft failures are only counted.
    """

    intent_id: str | None
    recipient: str
    action: str  # failed | delayed | delivered | relayed | expanded
    status: str  # "5.1.1"
    diagnostic: str
    hard: bool
    source: str = "dsn"  # dsn | text | ses | sendgrid | postmark


@dataclass(frozen=True)
class Complaint:
    """A spam complaint (ARF report or ESP webhook). ``recipient`` may be redacted (None)."""

    intent_id: str | None
    recipient: str | None
    feedback_type: str  # abuse | fraud | virus | other | not-spam | ...
    user_agent: str
    arrival_date: float | None  # epoch seconds, when the report gives one
    source: str = "arf"  # arf | ses | sendgrid | postmark


FeedbackItem = Bounce | Complaint


def intent_from_address(value: str | None) -> str | None:
    """The intent id in a VERP address ``bounce+<id>@...``, else None."""
    if not value:
        return None
    match = _VERP.search(value)
    return match.group(1).lower() if match else None


def intent_from_message_id(value: str | None) -> str | None:
    """The intent id of a Message-ID ``<id@domain>`` the engine wrote, else None."""
    if not value:
        return None
    match = _MESSAGE_ID.fullmatch(value.strip())
    return match.group(1).lower() if match else None


def check_address(value: object, what: str) -> str:
    """``value`` as a lower-cased bare address; ``FeedbackInvalid`` for anything else.

    Control characters (a header injection attempt: ``a@b.com\\r\\nBcc: ...``) are refused
    outright, not cleaned: such a report was not written by a mail server.
    """
    if not isinstance(value, str) or not value.strip():
        raise FeedbackInvalid(f"{what}: missing address")
    if _CONTROL.search(value):
        raise FeedbackInvalid(f"{what}: control characters in address {value[:80]!r}")
    text = value.strip()
    if text.lower().startswith("rfc822;"):
        text = text[7:].strip()
    if text.startswith("<") and text.endswith(">"):
        text = text[1:-1].strip()
    if len(text) > 320 or not _ADDRESS.fullmatch(text):
        raise FeedbackInvalid(f"{what}: not an email address: {text[:80]!r}")
    return text.lower()


def check_status(value: str | None, what: str, default: str) -> str:
    """An RFC 3463 status code ``x.y.z`` from ``value``; ``default`` when absent."""
    if value is None or not value.strip():
        return default
    match = _STATUS.search(value)
    if match is None:
        raise FeedbackInvalid(f"{what}: not a status code: {value[:40]!r}")
    return match.group(0)


def clean(value: object, limit: int = 1000) -> str:
    """Free text from a report, with control characters as spaces, at most ``limit`` chars."""
    if value is None:
        return ""
    text = value if isinstance(value, str) else str(value)
    return " ".join(_CONTROL.sub(" ", text).split())[:limit]


def check_size(raw: bytes | str, what: str) -> None:
    if len(raw) > MAX_REPORT_BYTES:
        raise FeedbackInvalid(
            f"{what}: {len(raw):,} bytes is over the {MAX_REPORT_BYTES:,}-byte limit for reports"
        )
    if not raw.strip():
        raise FeedbackInvalid(f"{what}: empty")


def parse_mail(raw: bytes, envelope_recipient: str | None = None) -> list[FeedbackItem]:
    """A report that arrived by mail (local inbox, IMAP): a DSN, an ARF report or a plain-text
    bounce, told apart by its Content-Type. ``envelope_recipient`` is the RCPT TO it came with.
    """
    from engine.feedback import arf, dsn  # here: both import this module

    message = load_message(raw, "report")
    if str(message.get_param("report-type", "")).lower() == "feedback-report":
        return [arf.parse_arf(message, envelope_recipient=envelope_recipient)]
    return list(dsn.parse_dsn(message, envelope_recipient=envelope_recipient))


def load_message(raw: bytes | Message, what: str) -> Message:
    """``raw`` parsed as a MIME message (size checked first); a Message is returned as is."""
    if isinstance(raw, Message):
        return raw
    if not isinstance(raw, bytes | bytearray):
        raise FeedbackInvalid(f"{what}: expected the message as bytes")
    check_size(raw, what)
    if b"\n" not in raw[:MAX_HEADER_BYTES] or b":" not in raw[:MAX_HEADER_BYTES]:
        raise FeedbackInvalid(f"{what}: no header fields")
    message = message_from_bytes(bytes(raw), policy=compat32)
    if not message.keys():
        raise FeedbackInvalid(f"{what}: no header fields")
    return message


def header(message: Message, name: str) -> str | None:
    """A header's value as text (encoded-words decoded), or None."""
    value = message.get(name)
    if value is None:
        return None
    text = str(make_header(decode_header(value))) if "=?" in str(value) else str(value)
    return text


def original_headers(report: Message) -> Message | None:
    """The original message's header fields from a ``message/rfc822`` or
    ``text/rfc822-headers`` part of a report, if it has one."""
    for part in report.walk():
        ctype = part.get_content_type()
        if ctype in ("message/rfc822", "message/global"):
            payload = part.get_payload()
            if isinstance(payload, list) and payload and isinstance(payload[0], Message):
                return payload[0]
        elif ctype in ("text/rfc822-headers", "text/global-headers"):
            data = part.get_payload(decode=True)
            if isinstance(data, bytes):
                return message_from_bytes(data.lstrip(b"\r\n"), policy=compat32)
    return None


def intent_of(
    outer: Message | None, original: Message | None, addresses: tuple[str | None, ...] = ()
) -> str | None:
    """The intent id: from VERP ``addresses`` (envelope recipient, Original-Mail-From), the
    report's own recipient headers (it was mailed to the VERP address), then the original
    message's Return-Path / X-Original-To and its Message-ID. The report's own Message-ID is
    the reporting server's, never ours, so it is not looked at."""
    for address in addresses:
        found = intent_from_address(address)
        if found:
            return found
    for message in (outer, original):
        if message is None:
            continue
        for name in ("Return-Path", "X-Original-To", "Delivered-To", "Envelope-To", "To"):
            for value in message.get_all(name) or ():
                found = intent_from_address(str(value))
                if found:
                    return found
    if original is not None:
        return intent_from_message_id(header(original, "Message-ID"))
    return None
