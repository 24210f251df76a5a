"""Publishing accepted events to the JetStream EVENTS stream.

An event counts as accepted only once JetStream has acknowledged it (the PubAck): that is what
an HTTP 200 promises. Every publish carries ``Nats-Msg-Id`` = the event's ``messageId``, so a
client retrying after a timeout or a 503 cannot put the same event in the stream twice (within
the stream's duplicate window; decide drops older duplicates by messageId).
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

import nats.errors
import nats.js.errors
import orjson
from nats.js import JetStreamContext

from engine.bus import EVENTS_STREAM, event_subject
from engine.errors import BusError
from engine.telemetry import Telemetry

MSG_ID_HEADER = "Nats-Msg-Id"

# What nats-py raises when the server is unreachable, refuses, or does not answer in time.
_NATS_FAILURES = (nats.errors.Error, TimeoutError, OSError)


class EventPublisher:
    """Publishes wire-form events (see ``validate.normalize_for_wire``) and waits for the ack.

    Records ``publish_failures_total`` and ``events_duplicate_total`` (a publish JetStream
    dropped because it had already stored that messageId).
    """

    def __init__(self, js: JetStreamContext, telemetry: Telemetry, *, timeout: float = 5.0) -> None:
        """``timeout``: how long to wait for each PubAck before reporting NATS unavailable."""
        self._js = js
        self._telemetry = telemetry
        self._timeout = timeout

    async def publish(self, event: dict[str, Any]) -> None:
        """Publish one event on ``events.<type>.<contact token>``; wait until JetStream stored it.

        Raises ``BusError`` when NATS is unreachable, the EVENTS stream is missing or the ack
        does not arrive within the timeout. The event may still have been stored; publishing
        it again with the same messageId is safe.
        """
        subject, payload, headers = _message(event)
        try:
            ack = await self._js.publish(subject, payload, timeout=self._timeout, headers=headers)
        except _NATS_FAILURES as exc:
            self._telemetry.count("publish_failures_total")
            raise self._bus_error(exc, subject) from exc
        if ack.duplicate:
            self._telemetry.count("events_duplicate_total")

    async def publish_many(self, events: Sequence[dict[str, Any]]) -> list[BusError | None]:
        """Publish events concurrently; one entry per event: ``None`` if stored, else the error.

        All messages are written to the connection at once and the acks are awaited together,
        so a batch costs about one round-trip rather than one per event.
        """
        # Build every message first so a malformed event fails before anything is sent.
        messages = [_message(event) for event in events]
        results: list[BusError | None] = [None] * len(messages)
        pending: dict[asyncio.Future[Any], int] = {}
        for index, (subject, payload, headers) in enumerate(messages):
            try:
                future = await self._js.publish_async(subject, payload, headers=headers)
            except _NATS_FAILURES as exc:
                results[index] = self._bus_error(exc, subject)
                continue
            pending[future] = index
        if pending:
            done, late = await asyncio.wait(pending.keys(), timeout=self._timeout)
            for future in late:
                # Cancelling releases nats-py's slot for this publish; a late ack is ignored.
                future.cancel()
                index = pending[future]
                results[index] = self._bus_error(TimeoutError(), messages[index][0])
            duplicates = 0
            for future in done:
                failure = future.exception()
                if failure is not None:
                    index = pending[future]
                    results[index] = self._bus_error(failure, messages[index][0])
                elif future.result().duplicate:
                    duplicates += 1
            if duplicates:
                self._telemetry.count("events_duplicate_total", duplicates)
        failures = sum(1 for result in results if result is not None)
        if failures:
            self._telemetry.count("publish_failures_total", failures)
        return results

    def _bus_error(self, exc: BaseException, subject: str) -> BusError:
        if isinstance(exc, nats.js.errors.NoStreamResponseError | nats.errors.NoRespondersError):
            return BusError(
                f"no JetStream stream stores {subject} (is the {EVENTS_STREAM} stream set up?)"
            )
        if isinstance(exc, TimeoutError):
            return BusError(f"NATS did not acknowledge the event within {self._timeout:g} s")
        if isinstance(exc, nats.errors.ConnectionClosedError):
            return BusError("the NATS connection is closed")
        return BusError(f"NATS refused the event: {exc or type(exc).__name__}")


def _message(event: dict[str, Any]) -> tuple[str, bytes, dict[str, str]]:
    message_id = event.get("messageId")
    if not isinstance(message_id, str) or not message_id:
        # Publishing without a stable id would defeat deduplication of client retries.
        raise ValueError("event has no messageId: pass it through normalize_for_wire first")
    return event_subject(event), orjson.dumps(event), {MSG_ID_HEADER: message_id}
