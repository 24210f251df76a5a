"""Pause/resume and reroute while the deliver stage is busy, against real SMTP sinks that count
every message by Message-ID: nothing lost, nothing twice, nothing sent for a paused queue
beyond what was already in flight when the pause was committed."""

from __future__ import annotations

import asyncio
from collections import Counter

import sqlalchemy as sa
from deliver_support import (
    FAST,
    ScriptedSmtp,
    add_contact,
    add_intent,
    make_service,
    statuses,
    wait_for,
)

from engine.clock import SystemClock
from engine.deliver import Route
from engine.deliver.queues import Scope, Selection, pause, reroute, resume
from engine.store import Store, schema

DOMAIN = "shop.example"  # the Message-ID domain of deliver_support's settings


def message_id(intent_id: str) -> str:
    return f"<{intent_id}@{DOMAIN}>"


def received_ids(server: ScriptedSmtp) -> list[str]:
    return [r.message_id for r in server.received]


def in_flight(store: Store, workflow: str) -> set[str]:
    i = schema.intents.c
    with store.begin() as conn:
        rows = conn.execute(
            sa.select(i.id).where(i.workflow_id == workflow, i.status.in_(("claimed", "sending")))
        ).all()
    return {r.id for r in rows}


def add_batch(store: Store, n: int, now: float, start: int = 0) -> dict[str, str]:
    """``n`` intents alternating between workflows browse and cart: id -> workflow."""
    made = {}
    for k in range(start, start + n):
        workflow = "browse" if k % 2 == 0 else "cart"
        made[add_intent(store, f"ok-{k}@example.com", now=now, workflow_id=workflow)] = workflow
    return made


async def test_pause_and_resume_under_load(any_store: Store, smtp_server: ScriptedSmtp) -> None:
    store = any_store
    clock = SystemClock()
    add_contact(store, "c1", "ada@example.com")
    made = add_batch(store, 800, clock.now())
    service = make_service(store, smtp_server.relay(connections=4), clock=clock)
    await service.start()
    try:
        service.notify(list(made))
        await wait_for(lambda: len(smtp_server.received) >= 100, timeout=30, what="first sends")

        paused = pause(
            store,
            Scope("workflow", "browse"),
            actor="ana",
            reason="load test",
            now=clock.now(),
            routes={"default"},
        )
        # In flight now: claimed before the pause, allowed to finish. Taken before the sink's
        # list, so a browse message missing from that list was still in flight here.
        allowed = in_flight(store, "browse")
        before = set(received_ids(smtp_server))
        assert paused["count"] > 0, "the pause must catch a backlog to prove anything"

        # Decide keeps producing while paused: new intents for both workflows, notified.
        more = add_batch(store, 100, clock.now(), start=800)
        made.update(more)
        service.notify(list(more))
        cart = {message_id(i) for i, w in made.items() if w == "cart"}
        await wait_for(
            lambda: cart <= set(received_ids(smtp_server)), timeout=60, what="cart sends"
        )
        await wait_for(lambda: not in_flight(store, "browse"), timeout=30, what="browse drained")
        await asyncio.sleep(0.5)  # ten more polls (every 50 ms) that must claim no browse
        sent_while_paused = {
            m for m in received_ids(smtp_server) if m not in before and m not in cart
        }
        assert sent_while_paused <= {message_id(i) for i in allowed}
        held = [i for i, w in made.items() if w == "browse" and statuses(store)[i] == "queued"]
        assert len(held) >= paused["count"]

        resumed = resume(
            store, Scope("workflow", "browse"), actor="ana", reason="", now=clock.now()
        )
        assert resumed["count"] == len(held)
        await wait_for(
            lambda: len(smtp_server.received) >= len(made), timeout=60, what="every send"
        )
        await service.flush()
    finally:
        await service.stop()

    counts = Counter(received_ids(smtp_server))
    assert set(counts) == {message_id(i) for i in made}  # nothing lost
    assert max(counts.values()) == 1  # nothing twice
    assert set(statuses(store).values()) == {"sent"}


async def test_reroute_under_load(any_store: Store, smtp_server: ScriptedSmtp) -> None:
    store = any_store
    clock = SystemClock()
    relay_b = ScriptedSmtp()
    await relay_b.start()
    add_contact(store, "c1", "ada@example.com")
    made = add_batch(store, 800, clock.now())
    service = make_service(store, smtp_server.relay(connections=4), clock=clock)
    service.routes["relay-b"] = Route(
        "relay-b", relay_b.relay(connections=4), service, tuning=FAST, clock=clock
    )
    try:
        await service.start()
        try:
            service.notify(list(made))
            await wait_for(lambda: len(smtp_server.received) >= 100, timeout=30, what="sends")
            result = reroute(
                store,
                from_route="default",
                to_route="relay-b",
                selection=Selection(),
                actor="ana",
                reason="relay-a slow",
                now=clock.now(),
                routes=set(service.routes),
            )
            assert result["count"] > 0, "the reroute must catch a backlog to prove anything"
            await wait_for(
                lambda: len(smtp_server.received) + len(relay_b.received) >= len(made),
                timeout=60,
                what="every send",
            )
            await service.flush()
        finally:
            await service.stop()
    finally:
        await relay_b.stop()

    on_a, on_b = Counter(received_ids(smtp_server)), Counter(received_ids(relay_b))
    assert max((on_a + on_b).values()) == 1  # nothing twice, not even across relays
    assert set(on_a) | set(on_b) == {message_id(i) for i in made}  # nothing lost
    i = schema.intents.c
    with store.begin() as conn:
        routes = {r.id: r.route for r in conn.execute(sa.select(i.id, i.route))}
    assert {m for m in on_b} == {message_id(k) for k, r in routes.items() if r == "relay-b"}
    assert len(on_b) == result["count"]
    assert set(statuses(store).values()) == {"sent"}
