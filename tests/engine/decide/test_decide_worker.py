"""The decide worker on a real nats-server: pulling, dedup across redeliveries and replays,
dead letters that never stall the stream, stream order, acks, telemetry and stop."""

from __future__ import annotations

import asyncio
import time
from types import SimpleNamespace

import orjson
import pytest
from conftest import MakeStack
from decide_support import DecideStack, identify, intents, rows, starters, track
from nats.aio.client import Client as NatsClient

from engine.bus import DECIDE_CONSUMER, EVENTS_STREAM, ensure_streams, stream_partitions
from engine.clock import ManualClock
from engine.decide import DecideWorker
from engine.decide.worker import MAKE_WAY_MAX
from engine.errors import BusError
from engine.events import Event
from engine.ingest.validate import parse_event
from engine.store import Store, schema
from engine.telemetry import Telemetry


async def test_an_order_makes_one_confirmation_and_reports_it(
    make_stack: MakeStack, clock: ManualClock
) -> None:
    stack = await make_stack()
    await stack.send(
        identify(clock, "u1", {"email": "ann@example.com"}),
        track(clock, "u1", "Order Completed", {"order_id": "o1", "total": 30}),
    )
    await stack.settle()
    [intent] = intents(stack.store)
    assert (intent.template_id, intent.to_addr, intent.category) == (
        "order-confirmation",
        "ann@example.com",
        "transactional",
    )
    assert stack.notified == [intent.id]
    counters = stack.telemetry.counters
    assert counters["events_processed_total"] == 2
    assert counters['intents_created_total{workflow="order-confirmation"}'] == 1
    assert stack.telemetry.histograms['stage_seconds{stage="decide"}'].count == 2
    assert stack.telemetry.histograms['db_commit_seconds{stage="decide"}'].count >= 1


async def test_the_same_message_id_twice_makes_one_intent(
    make_stack: MakeStack, clock: ManualClock
) -> None:
    stack = await make_stack()
    await stack.send(identify(clock, "u1", {"email": "ann@example.com"}))
    order = track(clock, "u1", "Order Completed", {"order_id": "o1"})
    # Different Nats-Msg-Id headers get both copies past JetStream's duplicate window check.
    await stack.send(order, header_id="first-publish")
    await stack.settle()
    await stack.send(order, header_id="second-publish")
    await stack.settle()
    assert stack.sends() == ["order-confirmation"]
    assert stack.telemetry.counters["events_duplicate_total"] == 1


async def test_replaying_the_stream_makes_no_new_intents(
    make_stack: MakeStack, clock: ManualClock
) -> None:
    stack = await make_stack()
    for n in range(5):
        user = f"u{n}"
        await stack.send(
            identify(clock, user, {"email": f"{user}@example.com"}),
            track(clock, user, "Order Completed", {"order_id": f"o{n}"}),
            track(clock, user, "Signed Up"),
        )
    await stack.settle()
    before = [row.id for row in intents(stack.store)]
    assert len(before) == 10
    await stack.stop()
    # Delete the durable consumer and create it again: it starts from the first message.
    await stack.js.delete_consumer(EVENTS_STREAM, DECIDE_CONSUMER)
    await ensure_streams(stack.js)
    info = await stack.js.consumer_info(EVENTS_STREAM, DECIDE_CONSUMER)
    assert info.num_pending == 15
    await stack.start()
    await stack.settle()
    assert [row.id for row in intents(stack.store)] == before
    assert stack.telemetry.counters["events_duplicate_total"] == 15


async def test_bad_messages_become_dead_letters_and_the_next_event_is_processed(
    make_stack: MakeStack, clock: ManualClock
) -> None:
    stack = await make_stack()
    await stack.send_raw(b"{not json")
    await stack.send_raw(orjson.dumps({"type": "track", "event": "Order Completed"}))
    await stack.send(
        track(clock, "u1", "Order Completed", context={"traits": {"email": "a@example.com"}})
    )
    await stack.settle()
    reasons = sorted(row.reason for row in rows(stack.store, schema.dead_letters))
    assert reasons[0].startswith("payload: not valid JSON")
    assert reasons[1] == "userId: is required (or anonymousId)"
    assert stack.sends() == ["order-confirmation"]
    assert stack.telemetry.counters["dead_letters_total"] == 2
    info = await stack.js.consumer_info(EVENTS_STREAM, DECIDE_CONSUMER)
    assert info.num_ack_pending == 0 and info.num_pending == 0


@pytest.mark.parametrize("email_first", [True, False])
async def test_events_of_a_contact_apply_in_stream_order(
    make_stack: MakeStack, clock: ManualClock, email_first: bool
) -> None:
    stack = await make_stack()
    await stack.stop()  # publish first, so both events arrive in one batch
    who = identify(clock, "u1", {"email": "ann@example.com"})
    order = track(clock, "u1", "Order Completed", {"order_id": "o1"})
    await stack.send(*((who, order) if email_first else (order, who)))
    await stack.start()
    await stack.settle()
    [enrollment] = stack.enrollments("u1", "order-confirmation")
    assert stack.sends() == (["order-confirmation"] if email_first else [])
    assert enrollment.state == "completed"


async def test_stop_finishes_the_batch_in_hand(make_stack: MakeStack, clock: ManualClock) -> None:
    stack = await make_stack()
    await stack.stop()
    for n in range(300):
        await stack.send(track(clock, f"u{n}", "Product Viewed", {"product_id": "p"}))
    await stack.start(batch=100)
    worker = stack.worker
    assert worker is not None
    await asyncio.sleep(0.05)
    await stack.stop()
    # The server applies acks apart from answering consumer_info, so a loaded machine may
    # show the last batch's acks a moment late; stranded messages would stay ack-pending
    # for the whole ack_wait.
    deadline = time.monotonic() + 5
    info = await stack.js.consumer_info(EVENTS_STREAM, DECIDE_CONSUMER)
    while info.num_ack_pending and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
        info = await stack.js.consumer_info(EVENTS_STREAM, DECIDE_CONSUMER)
    processed = len(rows(stack.store, schema.processed_events))
    # Everything committed was acked, nothing acked was left uncommitted.
    assert info.num_ack_pending == 0
    assert processed + info.num_pending == 300
    await stack.start()
    await stack.settle()
    assert len(rows(stack.store, schema.processed_events)) == 300


async def test_start_fails_clearly_without_the_consumer(
    make_stack: MakeStack, store: Store, clock: ManualClock
) -> None:
    stack = await make_stack()
    await stack.stop()
    await stack.js.delete_consumer(EVENTS_STREAM, DECIDE_CONSUMER)
    with pytest.raises(BusError, match="cannot bind to consumer decide of EVENTS"):
        await stack.start()
    await stack.stop()


async def test_a_message_that_breaks_the_decision_is_isolated_as_a_dead_letter(
    bus: NatsClient, store: Store, clock: ManualClock
) -> None:
    """An unexpected failure (a bug, not bad input) must not stall the stream either."""

    def parse(data: object, *, received_at: float | None = None) -> Event:
        if isinstance(data, dict) and data.get("event") == "Poison":
            raise RuntimeError("boom")
        return parse_event(data, received_at=received_at)

    registry = starters()
    notified: list[str] = []
    worker = DecideWorker(
        js=bus.jetstream(),
        store=store,
        clock=clock,
        telemetry=Telemetry("test"),
        node="test",
        workflows=registry,
        on_intents=notified.extend,
        parse=parse,
    )
    stack = DecideStack(nc=bus, store=store, clock=clock, registry=registry)
    email = {"context": {"traits": {"email": "a@example.com"}}}
    await stack.send(
        track(clock, "u1", "Order Completed", {"order_id": "o1"}, **email),
        track(clock, "u1", "Poison"),
        track(clock, "u2", "Order Completed", {"order_id": "o2"}, **email),
    )
    await worker.start()
    try:
        await stack.settle()
    finally:
        await worker.stop()
    [dead] = rows(store, schema.dead_letters)
    assert dead.reason == "decide failed: RuntimeError: boom"
    assert sorted(row.contact_id for row in intents(store)) == ["u1", "u2"]
    assert len(notified) == 2


async def test_consumer_lag_is_sampled(bus: NatsClient, store: Store, clock: ManualClock) -> None:
    stack = DecideStack(nc=bus, store=store, clock=clock, registry=starters())
    for n in range(5):
        await stack.send(track(clock, f"u{n}", "Product Viewed"))
    telemetry = Telemetry("test")
    worker = DecideWorker(
        js=bus.jetstream(),
        store=store,
        clock=clock,
        telemetry=telemetry,
        node="test",
        workflows=stack.registry,
        on_intents=lambda ids: None,
        lag_interval=0.05,
    )
    await worker.start()
    try:
        await stack.settle()
        for _ in range(100):
            if telemetry.gauges.get("consumer_lag") == 0:
                break
            await asyncio.sleep(0.02)
    finally:
        await worker.stop()
    assert telemetry.gauges["consumer_lag"] == 0
    assert telemetry.counters["events_processed_total"] == 5


async def test_make_way_lets_awaited_replies_in_first() -> None:
    """A batch decided on the loop first lets the loop turn while a mail transaction awaits
    its reply, so the reply is not held behind the whole batch."""
    loop = asyncio.get_running_loop()
    reply = loop.create_future()
    loop.call_soon(lambda: loop.call_soon(reply.set_result, "250 ok"))  # two turns away
    await DecideWorker._make_way(SimpleNamespace(urgent=lambda: not reply.done()))  # type: ignore[arg-type]
    assert reply.done()


async def test_make_way_is_bounded() -> None:
    """A deliver stage that is always busy delays each batch by at most MAKE_WAY_MAX."""
    started = time.perf_counter()
    await DecideWorker._make_way(SimpleNamespace(urgent=lambda: True))  # type: ignore[arg-type]
    assert time.perf_counter() - started < MAKE_WAY_MAX + 0.05  # generous: a shared machine


async def test_a_node_on_automatic_partitions_joins_the_layout_the_stream_has(
    bus: NatsClient,
) -> None:
    js = bus.jetstream()
    assert await stream_partitions(js) == 1  # laid by the fixture: one partition
    await ensure_streams(js, partitions=4)
    assert await stream_partitions(js) == 4
    names = {c.name for c in await js.consumers_info(EVENTS_STREAM)}
    assert {f"{DECIDE_CONSUMER}-{p}" for p in range(4)} <= names
    await js.delete_stream(EVENTS_STREAM)
    assert await stream_partitions(js) is None  # no stream yet: the node's default applies
