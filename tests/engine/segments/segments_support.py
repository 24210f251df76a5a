"""Helpers for segment tests: events at the manual clock's time, a decide batch and a timer
service over one store and one segment registry, and readers for membership rows."""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from typing import Any

import orjson
import sqlalchemy as sa

from engine.clock import ManualClock
from engine.decide.batch import BatchOutcome, DecideBatch, Delivery
from engine.decide.registry import WorkflowRegistry
from engine.decide.timers import FireOutcome, TimerService
from engine.ingest.validate import format_time, parse_event
from engine.segments.membership import SegmentRegistry
from engine.segments.model import Segment
from engine.segments.text import parse_condition
from engine.store import Store, schema
from engine.telemetry import Telemetry

_ids = itertools.count(1)


def segment(sid: str, text: str, version: int = 1) -> Segment:
    return Segment(sid, sid.replace("-", " ").title(), version, parse_condition(text))


def track(clock: ManualClock, user: str, event: str, **properties: Any) -> dict[str, Any]:
    return {
        "type": "track",
        "userId": user,
        "event": event,
        "properties": properties,
        "messageId": f"seg-{next(_ids):06d}",
        "timestamp": format_time(clock.now()),
        "receivedAt": format_time(clock.now()),
    }


def identify(clock: ManualClock, user: str, **traits: Any) -> dict[str, Any]:
    return {
        "type": "identify",
        "userId": user,
        "traits": traits,
        "messageId": f"seg-{next(_ids):06d}",
        "timestamp": format_time(clock.now()),
        "receivedAt": format_time(clock.now()),
    }


@dataclass
class SegmentRig:
    """A decide batch and a timer service sharing a store, a clock and the segments."""

    store: Store
    clock: ManualClock
    segments: SegmentRegistry
    workflows: WorkflowRegistry = field(default_factory=WorkflowRegistry)

    def decide(self, *events: dict[str, Any]) -> BatchOutcome:
        batch = DecideBatch(
            store=self.store,
            registry=self.workflows,
            clock=self.clock,
            parse=parse_event,
            segments=self.segments,
        )
        deliveries = [
            Delivery(orjson.dumps(e), "events.track", next(_ids), None, self.clock.now())
            for e in events
        ]
        return batch.run(deliveries)

    def fire(self) -> FireOutcome:
        """What the timer service does when it wakes: due timers and due segment re-checks."""
        timers = TimerService(
            store=self.store,
            clock=self.clock,
            telemetry=Telemetry("test"),
            node="test",
            workflows=self.workflows,
            on_intents=lambda ids: None,
            segments=self.segments,
        )
        return timers.fire_due()

    def members(self, sid: str) -> list[str]:
        m = schema.segment_members
        with self.store.begin() as conn:
            query = sa.select(m.c.contact_id).where(m.c.segment_id == sid).order_by(m.c.contact_id)
            return list(conn.execute(query).scalars())

    def history(self, sid: str) -> list[tuple[str, str, float]]:
        h = schema.segment_history
        with self.store.begin() as conn:
            rows = conn.execute(
                sa.select(h.c.contact_id, h.c.kind, h.c.at)
                .where(h.c.segment_id == sid)
                .order_by(h.c.id)
            )
            return [(r.contact_id, r.kind, r.at) for r in rows]
