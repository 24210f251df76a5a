"""EventPublisher against a real nats-server: acks, Nats-Msg-Id, concurrency and failures."""

from __future__ import annotations

import asyncio
import time

import orjson
import pytest
from ingest_support import message_ids
from nats.aio.client import Client as NatsClient

from engine.bus import EVENTS_STREAM, contact_token
from engine.errors import BusError
from engine.ingest.publisher import EventPublisher
from engine.ingest.validate import normalize_for_wire
from engine.natsserver import NatsServer
from engine.telemetry import Telemetry


def event(message_id: str, kind: str = "track") -> dict[str, object]:
    return {"type": kind, "userId": "u1", "event": "Signed Up", "messageId": message_id}


async def test_publish_stores_the_event_with_its_msg_id(bus: NatsClient) -> None:
    js = bus.jetstream()
    publisher = EventPublisher(js, Telemetry("test"))
    wire = normalize_for_wire({"type": "identify", "userId": "u1"}, time.time())
    await publisher.publish(wire)
    msg = await js.get_msg(EVENTS_STREAM, 1)
    # The contact's token in the subject: what partitions it (engine.bus).
    assert msg.subject == f"events.identify.{contact_token('u1')}"
    assert msg.headers == {"Nats-Msg-Id": wire["messageId"]}
    assert orjson.loads(msg.data or b"") == wire


async def test_publish_many_stores_all_and_drops_duplicates(bus: NatsClient) -> None:
    js = bus.jetstream()
    telemetry = Telemetry("test")
    publisher = EventPublisher(js, telemetry)
    events = [event(f"m{i}") for i in range(300)]
    assert await publisher.publish_many(events) == [None] * 300
    assert await publisher.publish_many(events[:10]) == [None] * 10
    assert await message_ids(js) == [f"m{i}" for i in range(300)]
    assert telemetry.counters["events_duplicate_total"] == 10


async def test_an_event_without_message_id_is_a_programming_error(bus: NatsClient) -> None:
    publisher = EventPublisher(bus.jetstream(), Telemetry("test"))
    with pytest.raises(ValueError, match="normalize_for_wire"):
        await publisher.publish({"type": "track", "userId": "u"})
    with pytest.raises(ValueError, match="normalize_for_wire"):
        await publisher.publish_many([event("ok"), {"type": "track", "userId": "u"}])
    # Nothing was sent, not even the valid one before it.
    assert await message_ids(bus.jetstream()) == []


async def test_a_missing_stream_is_a_bus_error(bus: NatsClient) -> None:
    js = bus.jetstream()
    await js.delete_stream(EVENTS_STREAM)
    telemetry = Telemetry("test")
    publisher = EventPublisher(js, telemetry)
    subject = f"events.track.{contact_token('u1')}"
    expected = f"no JetStream stream stores {subject} (is the EVENTS stream set up?)"
    with pytest.raises(BusError) as caught:
        await publisher.publish(event("m1"))
    assert str(caught.value) == expected
    results = await publisher.publish_many([event("m1"), event("m2")])
    assert [str(result) for result in results] == [expected, expected]
    assert telemetry.counters["publish_failures_total"] == 3


async def test_nats_down_is_a_bus_error_per_event(bus: NatsClient, nats_server: NatsServer) -> None:
    publisher = EventPublisher(bus.jetstream(), Telemetry("test"), timeout=0.3)
    nats_server.kill()
    with pytest.raises(BusError) as caught:
        await publisher.publish(event("m1"))
    assert str(caught.value) == "NATS did not acknowledge the event within 0.3 s"
    started = time.monotonic()
    results = await publisher.publish_many([event(f"m{i}") for i in range(5)])
    assert all(isinstance(result, BusError) for result in results)
    assert time.monotonic() - started < 1.0  # one shared timeout, not one per event

    await asyncio.to_thread(nats_server.start)
    for _ in range(200):
        if bus.is_connected:
            break
        await asyncio.sleep(0.05)
    # Publishes buffered during the outage may land on reconnect; retries are deduplicated.
    for _ in range(50):
        results = await publisher.publish_many([event(f"m{i}") for i in range(5)])
        if results == [None] * 5:
            break
        await asyncio.sleep(0.1)  # JetStream may still be recovering the stream
    assert sorted(await message_ids(bus.jetstream())) == [f"m{i}" for i in range(5)]
