"""Feedback intake: bounces and complaints from the running engine's two doors.

- ``handle_mail``: a message that arrived by SMTP (the capture inbox's ``on_message`` hook).
  Only messages for the bounce domain are looked at; a report that does not parse is logged in
  one line and counted, never raised into the SMTP server (the sender already got its 250).
- ``handle_report``: a message fetched from a mailbox (the IMAP poller), where there is no
  envelope: the report's own headers (To, Delivered-To, X-Original-To) and the original
  message's Return-Path and Message-ID tie it to its intent. Invalid reports are counted and
  logged, never raised.
- ``handle_webhook``: an ESP webhook body (SES, SendGrid, Postmark) the HTTP layer has already
  authenticated; a body that does not parse raises ``FeedbackInvalid`` naming what was wrong.

Parsed items are applied with ``apply_feedback`` in one transaction, off the event loop unless
the store runs inline (SQLite). Counts ``feedback_total{kind,source}`` per item (kind: hard_bounce,
soft_bounce, complaint) and ``feedback_invalid_total{source}`` per refused report.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

from engine.clock import Clock
from engine.feedback import Bounce, FeedbackInvalid, FeedbackItem, parse_mail
from engine.feedback.apply import FeedbackResult, apply_feedback
from engine.feedback.webhooks import parse_postmark, parse_sendgrid, parse_ses
from engine.store import Store
from engine.telemetry import Telemetry

if TYPE_CHECKING:
    from engine.segments.membership import SegmentRegistry

__all__ = ["PROVIDERS", "FeedbackIntake"]

log = logging.getLogger(__name__)

PROVIDERS: dict[str, Callable[[bytes], list[FeedbackItem]]] = {
    "ses": parse_ses,
    "sendgrid": parse_sendgrid,
    "postmark": parse_postmark,
}


def _kind(item: FeedbackItem) -> str:
    if isinstance(item, Bounce):
        return "hard_bounce" if item.hard else "soft_bounce"
    return "complaint"


class FeedbackIntake:
    """Parses and applies bounces and complaints for one node."""

    def __init__(
        self,
        store: Store,
        clock: Clock,
        telemetry: Telemetry,
        *,
        bounce_domain: str = "bounces.shop.example",
        segments: SegmentRegistry | None = None,
    ) -> None:
        self._store = store
        self._segments = segments
        self._clock = clock
        self._telemetry = telemetry
        self.bounce_domain = bounce_domain.strip().lower().rstrip(".")

    def for_bounce_domain(self, recipient: str) -> bool:
        """Whether an envelope recipient is an address at the bounce domain."""
        _, at, domain = recipient.strip().strip("<>").rpartition("@")
        return bool(at) and domain.lower().rstrip(".") == self.bounce_domain

    async def handle_mail(
        self, raw: bytes, envelope_recipients: Sequence[str]
    ) -> FeedbackResult | None:
        """Apply a report mailed to the bounce domain; None when it was not for it or invalid."""
        recipients = [r for r in envelope_recipients if self.for_bounce_domain(r)]
        if not recipients:
            return None
        try:
            items = parse_mail(raw, envelope_recipient=recipients[0])
        except FeedbackInvalid as exc:
            self._telemetry.count("feedback_invalid_total", source="mail")
            log.warning("feedback: refused a report mailed to %s: %s", recipients[0][:200], exc)
            return None
        return await self._apply(items)

    async def handle_report(self, raw: bytes, *, source: str = "imap") -> FeedbackResult | None:
        """Apply a report fetched from a mailbox; None when it does not parse (counted as
        ``feedback_invalid_total{source}``). Store errors are raised: the caller keeps the
        message to try again."""
        try:
            items = parse_mail(raw)
        except FeedbackInvalid as exc:
            self._telemetry.count("feedback_invalid_total", source=source)
            log.warning("feedback: refused a report from %s: %s", source, exc)
            return None
        return await self._apply(items)

    async def handle_webhook(self, provider: str, body: bytes) -> FeedbackResult:
        """Apply an (authenticated) ESP webhook body; ``FeedbackInvalid`` when it does not parse."""
        parse = PROVIDERS.get(provider)
        if parse is None:
            raise FeedbackInvalid(
                f"webhook: unknown provider {provider[:40]!r} (expected one of "
                f"{', '.join(sorted(PROVIDERS))})"
            )
        try:
            items = parse(body)
        except FeedbackInvalid:
            self._telemetry.count("feedback_invalid_total", source=provider)
            raise
        return await self._apply(items)

    async def _apply(self, items: list[FeedbackItem]) -> FeedbackResult:
        if not items:
            return FeedbackResult()
        now = self._clock.now()
        if self._store.inline:
            result = apply_feedback(self._store, items, now, self._segments)
        else:
            result = await asyncio.to_thread(
                apply_feedback, self._store, items, now, self._segments
            )
        for item in items:
            self._telemetry.count("feedback_total", kind=_kind(item), source=item.source)
        return result
