"""Segments with the running services: events from a real nats-server's EVENTS stream through
the decide worker, and the timer service woken for the window edge (manual clock) so a contact
leaves by time alone."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Callable

import orjson
import pytest
from nats.aio.client import Client as NatsClient

from engine.bus import connect, ensure_streams, events_subject
from engine.clock import ManualClock
from engine.decide import DecideWorker, TimerService, WorkflowRegistry
from engine.segments.membership import SegmentRegistry
from engine.store import Store
from engine.telemetry import Telemetry
from tests.engine.segments.segments_support import SegmentRig, segment, track

BROWSING = segment(
    "browsing-x",
    '`Product Viewed` where product_id = "X" at least once in the last 10 minutes'
    " and no `Order Completed` in the last 10 minutes",
)


@pytest.fixture
async def bus(nats_url: str, nats_token: str) -> AsyncIterator[NatsClient]:
    nc = await connect(nats_url, token=nats_token, name="segments-test")
    try:
        await ensure_streams(nc.jetstream())
        yield nc
    finally:
        if nc.is_connected:
            await nc.drain()
        else:
            with contextlib.suppress(ConnectionError):
                await nc.close()


async def eventually(check: Callable[[], bool], what: str, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.02)


async def test_services_keep_membership_by_events_and_by_time(
    bus: NatsClient, store: Store, clock: ManualClock
) -> None:
    segments = SegmentRegistry([BROWSING])
    workflows = WorkflowRegistry()
    telemetry = Telemetry("test")
    # Polling is effectively off: the timer service runs when poked or when the clock moves,
    # and must find the re-check the decide batch stored for the window edge.
    timers = TimerService(
        store=store,
        clock=clock,
        telemetry=telemetry,
        node="test",
        workflows=workflows,
        on_intents=lambda ids: None,
        poll_s=86_400,
        segments=segments,
    )
    worker = DecideWorker(
        js=bus.jetstream(),
        store=store,
        clock=clock,
        telemetry=telemetry,
        node="test",
        workflows=workflows,
        on_intents=lambda ids: None,
        on_timer=timers.poke,
        segments=segments,
    )
    rig = SegmentRig(store, clock, segments, workflows)
    await timers.start()
    await worker.start()
    try:
        t0 = clock.now()
        view = track(clock, "ann", "Product Viewed", product_id="X")
        await bus.jetstream().publish(
            events_subject("track"), orjson.dumps(view), headers={"Nats-Msg-Id": view["messageId"]}
        )
        await eventually(lambda: rig.members("browsing-x") == ["ann"], "ann to enter")
        await asyncio.sleep(0.2)
        clock.advance(599)
        await asyncio.sleep(0.3)
        assert rig.members("browsing-x") == ["ann"]
        clock.advance(1)
        await eventually(lambda: rig.members("browsing-x") == [], "ann to leave by time")
        assert rig.history("browsing-x") == [("ann", "entered", t0), ("ann", "exited", t0 + 600)]
    finally:
        await worker.stop()
        await timers.stop()
