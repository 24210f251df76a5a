"""Helpers for decide tests: Segment event builders and a running decide stack.

``DecideStack`` is a real nats-server stream, a real store, a ``DecideWorker`` and a
``TimerService`` driven by a ``ManualClock``. Events carry the manual clock's time as their
``timestamp`` so activity windows and last-seen follow the test's clock.
"""

from __future__ import annotations

import asyncio
import itertools
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
import sqlalchemy as sa
from nats.aio.client import Client as NatsClient
from nats.js import JetStreamContext

from engine.bus import DECIDE_CONSUMER, EVENTS_STREAM, events_subject
from engine.clock import ManualClock
from engine.decide import DecideWorker, TimerService, WorkflowRegistry, load_workflow_dir
from engine.decide.workflow import parse_workflow
from engine.ingest.validate import format_time
from engine.store import Store, schema
from engine.telemetry import Telemetry

STARTERS = Path(__file__).resolve().parents[3] / "templates" / "workflows"
_ids = itertools.count(1)


def message_id() -> str:
    return f"msg-{next(_ids):06d}"


def track(
    clock: ManualClock,
    user: str,
    event: str,
    properties: dict[str, Any] | None = None,
    **extra: Any,
) -> dict[str, Any]:
    """A Segment ``track`` event happening now on ``clock``."""
    return {
        "type": "track",
        "userId": user,
        "event": event,
        "properties": properties or {},
        "messageId": message_id(),
        "timestamp": format_time(clock.now()),
        "receivedAt": format_time(clock.now()),  # as ingest sets it
        **extra,
    }


def identify(clock: ManualClock, user: str, traits: dict[str, Any], **extra: Any) -> dict[str, Any]:
    return {
        "type": "identify",
        "userId": user,
        "traits": traits,
        "messageId": message_id(),
        "timestamp": format_time(clock.now()),
        "receivedAt": format_time(clock.now()),  # as ingest sets it
        **extra,
    }


def page(clock: ManualClock, user: str, name: str = "Home", **extra: Any) -> dict[str, Any]:
    return {
        "type": "page",
        "userId": user,
        "name": name,
        "properties": {"path": "/"},
        "messageId": message_id(),
        "timestamp": format_time(clock.now()),
        "receivedAt": format_time(clock.now()),  # as ingest sets it
        **extra,
    }


def toml_value(value: Any) -> str:
    """A TOML inline value (enough for workflow files: text, numbers, lists, tables)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return json.dumps(value)
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, list):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    if isinstance(value, dict):
        inner = ", ".join(f"{json.dumps(k)} = {toml_value(v)}" for k, v in value.items())
        return "{ " + inner + " }"
    raise TypeError(type(value).__name__)


def to_toml(data: dict[str, Any]) -> str:
    """A workflow definition written as a TOML file."""
    lines = [f"{k} = {toml_value(v)}" for k, v in data.items() if not isinstance(v, dict | list)]
    lines += [
        f"{k} = {toml_value(v)}" for k, v in data.items() if isinstance(v, list) and k != "steps"
    ]
    for key, table in data.items():
        if isinstance(table, dict):
            lines.append(f"[{key}]")
            lines += [f"{k} = {toml_value(v)}" for k, v in table.items()]
    for step in data.get("steps", []):
        lines.append("[[steps]]")
        lines += [f"{k} = {toml_value(v)}" for k, v in step.items()]
    return "\n".join(lines) + "\n"


def registry_of(*definitions: dict[str, Any]) -> WorkflowRegistry:
    return WorkflowRegistry(parse_workflow(d, source=f"test:{d['id']}") for d in definitions)


def rows(store: Store, table: sa.Table, *where: Any) -> list[sa.Row[Any]]:
    with store.begin() as conn:
        return list(conn.execute(sa.select(table).where(*where)).all())


def intents(store: Store, *where: Any) -> list[sa.Row[Any]]:
    i = schema.intents
    with store.begin() as conn:
        return list(conn.execute(sa.select(i).where(*where).order_by(i.c.decided_at, i.c.id)))


def trace(store: Store, enrollment_id: str) -> list[str]:
    log = schema.enrollment_log
    with store.begin() as conn:
        found = conn.execute(
            sa.select(log.c.kind, log.c.detail)
            .where(log.c.enrollment_id == enrollment_id)
            .order_by(log.c.id)
        )
        return [f"{kind}: {detail}" for kind, detail in found]


@dataclass
class DecideStack:
    """A decide worker and timer service over a real stream and store."""

    nc: NatsClient
    store: Store
    clock: ManualClock
    registry: WorkflowRegistry
    telemetry: Telemetry = field(default_factory=lambda: Telemetry("test"))
    notified: list[str] = field(default_factory=list)
    worker: DecideWorker | None = None
    timers: TimerService | None = None

    @property
    def js(self) -> JetStreamContext:
        return self.nc.jetstream()

    async def start(self, *, batch: int = 256) -> None:
        self.timers = TimerService(
            store=self.store,
            clock=self.clock,
            telemetry=self.telemetry,
            node="test",
            workflows=self.registry,
            on_intents=self.notified.extend,
        )
        self.worker = DecideWorker(
            js=self.js,
            store=self.store,
            clock=self.clock,
            telemetry=self.telemetry,
            node="test",
            workflows=self.registry,
            on_intents=self.notified.extend,
            batch=batch,
            on_timer=self.timers.poke,
        )
        await self.timers.start()
        await self.worker.start()

    async def stop(self) -> None:
        if self.worker is not None:
            await self.worker.stop()
            self.worker = None
        if self.timers is not None:
            await self.timers.stop()
            self.timers = None

    async def send(self, *events: dict[str, Any], header_id: str | None = None) -> None:
        """Publish Segment events as ingest does (``Nats-Msg-Id`` = messageId)."""
        for event in events:
            headers = {"Nats-Msg-Id": header_id or str(event.get("messageId") or message_id())}
            subject = events_subject(str(event.get("type", "track")))
            await self.js.publish(subject, orjson.dumps(event), headers=headers)

    async def send_raw(self, data: bytes, subject: str = "events.track") -> None:
        await self.js.publish(subject, data, headers={"Nats-Msg-Id": message_id()})

    async def settle(self, timeout: float = 10.0) -> None:
        """Wait until every published message is decided and acked and no timer is due."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            info = await self.js.consumer_info(EVENTS_STREAM, DECIDE_CONSUMER)
            if not info.num_pending and not info.num_ack_pending and not self._due_timers():
                await asyncio.sleep(0.02)  # let on_intents run after the acks
                return
            if loop.time() > deadline:
                raise AssertionError(f"decide did not settle: {info}")
            await asyncio.sleep(0.01)

    async def advance(self, seconds: float) -> None:
        """Move the clock and wait for whatever became due."""
        self.clock.advance(seconds)
        await self.settle()

    def _due_timers(self) -> int:
        t = schema.timers
        with self.store.begin() as conn:
            found = conn.execute(
                sa.select(sa.func.count())
                .select_from(t)
                .where(t.c.state == "pending", t.c.fire_at <= self.clock.now())
            ).scalar()
        return int(found or 0)

    def sends(self, user: str | None = None) -> list[str]:
        """Template ids of the intents created, in order (optionally for one contact)."""
        where = [] if user is None else [schema.intents.c.contact_id == user]
        return [row.template_id for row in intents(self.store, *where)]

    def enrollments(self, user: str, workflow: str) -> list[sa.Row[Any]]:
        e = schema.enrollments
        with self.store.begin() as conn:
            return list(
                conn.execute(
                    sa.select(e)
                    .where(e.c.contact_id == user, e.c.workflow_id == workflow)
                    .order_by(e.c.entered_at, e.c.id)
                )
            )


def starters(overrides: dict[str, dict[str, Any]] | None = None) -> WorkflowRegistry:
    """The starter workflows, with ``settings.workflows``-style overrides."""
    return WorkflowRegistry(load_workflow_dir(STARTERS, overrides=overrides))


def counter(telemetry: Telemetry, key: str) -> float:
    return telemetry.counters.get(key, 0.0)
