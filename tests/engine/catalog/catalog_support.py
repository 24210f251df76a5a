"""Helpers for catalog tests: events at the manual clock's time, a decide batch and the fan-out
over one store, alert workflows, and readers for the catalog tables."""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from typing import Any

import orjson
import sqlalchemy as sa

from engine.catalog.fanout import Fanout, FanoutStep
from engine.clock import ManualClock
from engine.decide.batch import BatchOutcome, DecideBatch, Delivery
from engine.decide.registry import WorkflowRegistry
from engine.decide.workflow import Workflow, parse_workflow
from engine.ingest.validate import format_time, parse_event
from engine.store import Store, schema

_ids = itertools.count(1)
DAY = 86_400.0


def track(clock: ManualClock, user: str, event: str, **properties: Any) -> dict[str, Any]:
    return {
        "type": "track",
        "userId": user,
        "event": event,
        "properties": properties,
        "context": {"traits": {"email": f"{user}@example.com"}},
        "messageId": f"cat-{next(_ids):06d}",
        "timestamp": format_time(clock.now()),
        "receivedAt": format_time(clock.now()),
    }


def catalog(clock: ManualClock, product_id: str, **values: Any) -> dict[str, Any]:
    """A ``Product Updated`` event from the catalog source."""
    event = track(clock, "catalog-feed", "Product Updated", product_id=product_id, **values)
    del event["context"]
    return event


def alert_workflow(wid: str, kind: str, **trigger: Any) -> Workflow:
    table: dict[str, Any] = {"catalog": kind, "lookback": "7d", "window": "7d", **trigger}
    if kind == "price_drop":
        table.setdefault("min_drop_percent", 10)
    return parse_workflow(
        {
            "id": wid,
            "name": wid,
            "category": "marketing",
            "trigger": table,
            "steps": [{"id": "send", "type": "send", "template": wid}],
        },
        source="test",
    )


@dataclass
class CatalogRig:
    """A decide batch and the fan-out sharing a store, a clock and the workflows."""

    store: Store
    clock: ManualClock
    workflows: WorkflowRegistry = field(default_factory=WorkflowRegistry)

    def decide(self, *events: dict[str, Any]) -> BatchOutcome:
        batch = DecideBatch(
            store=self.store, registry=self.workflows, clock=self.clock, parse=parse_event
        )
        deliveries = [
            Delivery(orjson.dumps(e), "events.track", next(_ids), None, self.clock.now())
            for e in events
        ]
        return batch.run(deliveries)

    def fan_out(self, chunk: int = 500) -> list[FanoutStep]:
        """Run the fan-out until no job is pending; every chunk's step."""
        fanout = Fanout(self.store, self.clock, self.workflows, chunk)
        steps = []
        while True:
            step = fanout.step()
            if step.job_id is None:
                return steps
            steps.append(step)

    def rows(self, table: sa.Table, *order: str) -> list[Any]:
        with self.store.begin() as conn:
            query = sa.select(table).order_by(*(table.c[o] for o in order))
            return list(conn.execute(query))

    def product(self, product_id: str) -> Any:
        p = schema.products
        with self.store.begin() as conn:
            return conn.execute(sa.select(p).where(p.c.id == product_id)).first()

    def interest(self, contact: str, product_id: str) -> Any:
        cp = schema.contact_products
        with self.store.begin() as conn:
            query = sa.select(cp).where(cp.c.contact_id == contact, cp.c.product_id == product_id)
            return conn.execute(query).first()

    def intents(self) -> list[Any]:
        return self.rows(schema.intents, "contact_id", "workflow_id")

    def alerted(self, workflow_id: str) -> list[str]:
        return [i.contact_id for i in self.intents() if i.workflow_id == workflow_id]
