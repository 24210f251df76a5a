"""The values the deliver stage passes around: claimed intents, jobs, replies and outcomes."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

# Intent statuses (``intents.status``); the last eight are the outcomes.
QUEUED = "queued"
CLAIMED = "claimed"
SENDING = "sending"
SENT = "sent"
DEFERRED = "deferred"
BOUNCED = "bounced"
SUPPRESSED = "suppressed"
EXPIRED = "expired"
FAILED = "failed"
UNCERTAIN = "uncertain"
CANCELLED = "cancelled"  # an operator cancelled it while it was pending (queues.cancel)
OUTCOMES = (SENT, DEFERRED, BOUNCED, SUPPRESSED, EXPIRED, FAILED, UNCERTAIN, CANCELLED)
PENDING = (QUEUED, DEFERRED)  # waiting in a queue (claimable once due)
IN_FLIGHT = (CLAIMED, SENDING)  # a node holds it; it finishes whatever the queue controls say

_ENHANCED = re.compile(r"([245])\.(\d{1,3})\.(\d{1,3})(?:\s|$)")


@dataclass(frozen=True, slots=True)
class Reply:
    """One SMTP reply: ``code`` and the text after it (continuation lines joined by newlines)."""

    code: int
    text: str

    @property
    def enhanced(self) -> str:
        """The RFC 3463 enhanced status code that starts the text ("5.1.1"), or ""."""
        match = _ENHANCED.match(self.text)
        return ".".join(match.groups()) if match else ""

    @property
    def positive(self) -> bool:
        return 200 <= self.code < 300

    @property
    def transient(self) -> bool:
        return 400 <= self.code < 500

    @property
    def permanent(self) -> bool:
        return 500 <= self.code < 600

    def __str__(self) -> str:
        return f"{self.code} {self.text}".strip()


@dataclass(frozen=True, slots=True)
class ClaimedIntent:
    """An intent row this node claimed, with what rendering needs from it."""

    id: str
    workflow_id: str
    step_id: str
    contact_id: str
    event_id: str
    template_id: str
    route: str
    category: str
    to_addr: str
    context: dict[str, Any]
    attempts: int
    expires_at: float | None
    received_at: float


@dataclass(frozen=True, slots=True)
class ContactRow:
    """The contact fields the deliver stage reads (one batched query per claim)."""

    id: str
    email: str | None
    traits: dict[str, Any]
    consent: dict[str, Any]
    unsubscribed_at: float | None
    value: dict[str, Any] = field(default_factory=dict)  # engine.clv.value_fields


@dataclass(slots=True)
class ClaimBatch:
    """Intents claimed in one transaction plus their contacts and suppression scopes."""

    intents: list[ClaimedIntent]
    contacts: dict[str, ContactRow] = field(default_factory=dict)
    suppressions: dict[str, str] = field(default_factory=dict)  # lower-cased address -> scope


@dataclass(slots=True)
class Job:
    """One message ready for the wire, and where it stands on the way there."""

    intent: ClaimedIntent
    sender: str  # envelope MAIL FROM (VERP bounce address)
    recipient: str  # envelope RCPT TO, ASCII
    body: bytes  # CRLF, dot-stuffed, without the final ".\r\n"
    message_id: str
    rendered_at: float
    eight_bit: bool
    dot_at: float | None = None  # set once the dot marker is committed
    dot_written: bool = False  # the final dot was handed to the socket
    data_started: float = 0.0  # perf_counter at DATA, for stage_seconds{stage="smtp"}
    unsigned: bytes | None = None  # the built message awaiting its DKIM signature (then body)


@dataclass(slots=True)
class Outcome:
    """A change to one intent row, committed in the next group commit.

    ``status`` is an outcome, or ``queued`` to hand the intent back (connection lost before the
    final dot, relay unavailable, shutting down). Every column is written, so the row ends up
    exactly as described here whatever it held before.
    """

    intent_id: str
    workflow_id: str
    status: str
    attempts: int
    reply: str | None = None
    next_attempt_at: float | None = None  # for queued/deferred
    rendered_at: float | None = None
    message_id: str | None = None
    dot_at: float | None = None
    accepted_at: float | None = None
    finished_at: float | None = None
    suppress_address: str | None = None  # a hard bounce: suppress this address (scope all)
    counted: bool = True  # False for hand-backs, which are not outcomes
