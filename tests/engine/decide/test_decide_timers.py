"""Durable timers: on time, never early, after restarts, woken by poke, claimed once across
nodes, and never fired for an enrollment the decide worker holds."""

from __future__ import annotations

import asyncio
import threading
import time
from typing import Any

import orjson
import pytest
import sqlalchemy as sa
from decide_support import intents, registry_of, rows, trace, track

from engine.clock import ManualClock, SystemClock
from engine.decide import TimerService, WorkflowRegistry
from engine.decide.batch import DecideBatch, Delivery
from engine.ingest.validate import parse_event
from engine.store import Store, open_store, schema
from engine.telemetry import Telemetry

DELAYED = {
    "id": "delayed",
    "name": "Delayed",
    "category": "marketing",
    "version": 1,
    "trigger": {"event": "Order Delivered"},
    "steps": [
        {"id": "wait", "type": "wait", "duration": "$delay"},
        {"id": "ask", "type": "send", "template": "feedback-request"},
    ],
    "params": {"delay": "1h"},
}


def enroll(store: Store, clock: Any, registry: WorkflowRegistry, users: list[str]) -> None:
    """Put contacts into the workflow through a real decide batch."""
    batch = DecideBatch(store=store, registry=registry, clock=clock, parse=parse_event)
    deliveries = [
        Delivery(
            data=orjson.dumps(
                track(
                    clock,
                    user,
                    "Order Delivered",
                    context={"traits": {"email": f"{user}@example.com"}},
                )
            ),
            subject="events.track",
            stream_seq=n,
            msg_id=None,
            published_at=clock.now(),
        )
        for n, user in enumerate(users, 1)
    ]
    assert batch.run(deliveries).processed == len(users)


def service(
    store: Store, clock: Any, registry: WorkflowRegistry, node: str = "n1", **kw: Any
) -> TimerService:
    return TimerService(
        store=store,
        clock=clock,
        telemetry=Telemetry(node),
        node=node,
        workflows=registry,
        on_intents=lambda ids: None,
        **kw,
    )


async def wait_for(predicate: Any, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached in time")
        await asyncio.sleep(0.01)


async def test_a_timer_fires_on_time_and_not_before(store: Store, clock: ManualClock) -> None:
    registry = registry_of(DELAYED)
    enroll(store, clock, registry, ["u1"])
    notified: list[str] = []
    timers = service(store, clock, registry)
    timers.on_intents = notified.extend
    await timers.start()
    try:
        clock.advance(3599)
        await asyncio.sleep(0.2)
        assert intents(store) == []
        [timer] = rows(store, schema.timers)
        assert timer.state == "pending"
        clock.advance(1)
        await wait_for(lambda: len(notified) == 1)
        [intent] = intents(store)
        assert intent.template_id == "feedback-request"
        assert intent.received_at == timer.fire_at  # the send became due when the timer fired
        [fired] = rows(store, schema.timers)
        assert (fired.state, fired.claimed_by) == ("fired", "n1")
        [enrollment] = rows(store, schema.enrollments)
        assert enrollment.state == "completed"
        assert [line.split(":")[0] for line in trace(store, enrollment.id)] == [
            "entered", "waiting", "waited", "intent", "completed",
        ]  # fmt: skip
    finally:
        await timers.stop()


async def test_timers_survive_a_restart_and_late_ones_fire_at_once(
    store: Store, clock: ManualClock
) -> None:
    registry = registry_of(DELAYED)
    enroll(store, clock, registry, ["u1", "u2"])
    timers = service(store, clock, registry)
    await timers.start()
    await timers.stop()  # the engine goes down ...
    clock.advance(5 * 3600)  # ... and comes back hours after the timers were due
    timers = service(store, clock, registry)
    await timers.start()
    try:
        await wait_for(lambda: len(intents(store)) == 2)
    finally:
        await timers.stop()
    assert {row.state for row in rows(store, schema.timers)} == {"fired"}


async def test_poke_wakes_the_service_for_a_sooner_timer(store: Store) -> None:
    clock = SystemClock()
    registry = registry_of({**DELAYED, "params": {"delay": "1s"}})
    timers = service(store, clock, registry, poll_s=60.0)
    await timers.start()
    try:
        await asyncio.sleep(0.1)  # asleep now, for up to a minute
        enroll(store, clock, registry, ["u1"])
        [timer] = rows(store, schema.timers)
        timers.poke(timer.fire_at)
        await wait_for(lambda: len(intents(store)) == 1, timeout=3.0)
    finally:
        await timers.stop()


def test_two_nodes_never_fire_the_same_timer(any_store: Store, clock: ManualClock) -> None:
    registry = registry_of(DELAYED)
    users = [f"u{n}" for n in range(200)]
    enroll(any_store, clock, registry, users)
    clock.advance(3600)
    nodes = [service(any_store, clock, registry, node=f"n{i}", batch=25) for i in range(3)]
    fired: list[int] = []
    stale: list[int] = []
    errors: list[BaseException] = []

    def drain(timers: TimerService) -> None:
        try:
            while True:
                outcome = timers.fire_due()
                fired.append(outcome.fired)
                stale.append(outcome.stale)
                if not outcome.fired and not outcome.stale:
                    return
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=drain, args=(n,)) for n in nodes]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert not errors
    assert sum(fired) == 200
    assert sum(stale) == 0  # no node ever took a timer another node had fired
    sent = intents(any_store)
    assert len(sent) == 200
    assert len({row.contact_id for row in sent}) == 200
    assert {row.state for row in rows(any_store, schema.timers)} == {"fired"}


@pytest.mark.postgres
def test_an_enrollment_held_by_the_decide_worker_is_skipped(
    pg_url: str, clock: ManualClock
) -> None:
    """PostgreSQL: the timer skips (rather than waits for) an enrollment decide has locked.

    On SQLite writers are serialised and the claim's ``WHERE state = 'pending'`` decides.
    """
    any_store = open_store(pg_url)
    registry = registry_of(DELAYED)
    enroll(any_store, clock, registry, ["u1"])
    clock.advance(3600)
    e = schema.enrollments
    with any_store.engine.connect() as other, other.begin():
        other.execute(sa.select(e.c.id).with_for_update()).all()  # what decide does
        outcome = service(any_store, clock, registry).fire_due()
        assert (outcome.fired, outcome.stale) == (0, 0)
        assert {row.state for row in rows(any_store, schema.timers)} == {"pending"}
    outcome = service(any_store, clock, registry).fire_due()
    assert outcome.fired == 1
    any_store.dispose()


def test_a_stale_timer_does_nothing(store: Store, clock: ManualClock) -> None:
    registry = registry_of(DELAYED)
    enroll(store, clock, registry, ["u1"])
    with store.begin() as conn:
        conn.execute(sa.update(schema.enrollments).values(state="exited", exit_reason="manual"))
    clock.advance(3600)
    outcome = service(store, clock, registry).fire_due()
    assert (outcome.fired, outcome.stale) == (0, 1)
    assert intents(store) == []


def test_waiting_for_is_sql_null_unless_waiting_for_an_event(
    store: Store, clock: ManualClock
) -> None:
    registry = registry_of(DELAYED)
    enroll(store, clock, registry, ["u1"])
    e = schema.enrollments
    with store.begin() as conn:
        found = conn.execute(sa.select(sa.func.count()).where(e.c.waiting_for.is_(None))).scalar()
    assert found == 1


async def test_a_timer_that_cannot_be_continued_does_not_hold_up_the_others(
    store: Store, clock: ManualClock
) -> None:
    branching = {
        **DELAYED,
        "steps": [
            {"id": "wait", "type": "wait", "duration": "1h"},
            {
                "id": "big",
                "type": "branch",
                "condition": {"property": "order_id", "op": "exists", "value": False},
                "else": "exit",
            },
            {"id": "ask", "type": "send", "template": "feedback-request"},
        ],
    }
    registry = registry_of(branching)
    enroll(store, clock, registry, ["good", "broken"])
    e = schema.enrollments
    with store.begin() as conn:  # a damaged row, as a hand edit might leave it
        conn.execute(sa.update(e).where(e.c.contact_id == "broken").values(trigger={}))
    timers = service(store, clock, registry)
    await timers.start()
    try:
        clock.advance(3600)
        await wait_for(lambda: {r.state for r in rows(store, schema.timers)} == {"fired", "failed"})
    finally:
        await timers.stop()
    assert [row.contact_id for row in intents(store)] == ["good"]
    [failed] = rows(store, schema.timers, schema.timers.c.state == "failed")
    [broken] = rows(store, e, e.c.contact_id == "broken")
    assert failed.enrollment_id == broken.id
