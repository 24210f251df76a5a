"""Dry runs of draft workflows and segments over events recorded in a real EVENTS stream, on
a real store: the expected counts are known from how the recording was made, and nothing is
sent or stored."""

from __future__ import annotations

import time
from typing import Any

import orjson
import pytest
import sqlalchemy as sa
from decide_support import identify, track
from nats.aio.client import Client as NatsClient

from engine.bus import DECIDE_CONSUMER, EVENTS_STREAM, events_subject
from engine.clock import ManualClock
from engine.decide.workflow import parse_workflow
from engine.dry_run.run import (
    Progress,
    dry_run_segment,
    dry_run_workflow,
    replay,
    window_seconds,
)
from engine.dry_run.workflows import WorkflowSimulation
from engine.errors import DryRunError, WorkflowInvalid
from engine.pacing.policy import Pacing
from engine.pacing.quiet import QuietHours
from engine.segments.membership import SegmentIndex
from engine.segments.model import SegmentInvalid
from engine.store import Store, schema

HOUR = 3600.0
WRITTEN = (
    schema.intents,
    schema.enrollments,
    schema.timers,
    schema.enrollment_log,
    schema.contacts,
    schema.activity,
    schema.processed_events,
)

CART = {
    "id": "draft-cart",
    "name": "Draft cart reminder",
    "category": "marketing",
    "trigger": {"event": "Product Added"},
    "steps": [
        {
            "id": "wait-for-order",
            "type": "wait_until",
            "event": "Order Completed",
            "match": ["product_id"],
            "timeout": "1h",
            "on_event": "exit",
            "on_timeout": "remind",
        },
        {"id": "remind", "type": "send", "template": "abandoned-cart"},
    ],
}


async def record(nc: NatsClient, *events: dict[str, Any]) -> None:
    """Publish events as ingest does: they are the recording."""
    js = nc.jetstream()
    for event in events:
        subject = events_subject(str(event["type"]))
        headers = {"Nats-Msg-Id": str(event["messageId"])}
        await js.publish(subject, orjson.dumps(event), headers=headers)


def row_counts(store: Store) -> dict[str, int]:
    with store.begin() as conn:
        return {
            t.name: int(conn.execute(sa.select(sa.func.count()).select_from(t)).scalar() or 0)
            for t in WRITTEN
        }


async def cart_recording(nc: NatsClient, clock: ManualClock) -> None:
    """Four shoppers add to cart at t0; one orders in time, one orders too late, one never
    orders (and adds twice), one has no address."""
    t0 = clock.now()
    people = {
        "u1": "ann@example.com",
        "u2": "bob@example.org",
        "u3": "cy@example.com",
    }
    await record(nc, *(identify(clock, u, {"email": e}) for u, e in people.items()))
    await record(
        nc,
        track(clock, "u1", "Product Added", {"product_id": "p1", "price": 10}),
        track(clock, "u2", "Product Added", {"product_id": "p2", "price": 10}),
        track(clock, "u3", "Product Added", {"product_id": "p3", "price": 10}),
        track(clock, "u4", "Product Added", {"product_id": "p4", "price": 10}),
    )
    clock.set(t0 + 600)
    await record(nc, track(clock, "u2", "Product Added", {"product_id": "p2b", "price": 5}))
    clock.set(t0 + 1800)  # u1 orders within the hour: the wait ends on the event
    await record(nc, track(clock, "u1", "Order Completed", {"product_id": "p1"}))
    clock.set(t0 + 2 * HOUR)  # u3 orders after the timeout: the reminder was already due
    await record(nc, track(clock, "u3", "Order Completed", {"product_id": "p3"}))
    clock.set(t0 + 3 * HOUR)


async def test_draft_workflow_counts_waits_both_ways_and_sends_nothing(
    bus: NatsClient, store: Store, clock: ManualClock
) -> None:
    t0 = clock.now()
    await cart_recording(bus, clock)
    before = await bus.jetstream().consumer_info(EVENTS_STREAM, DECIDE_CONSUMER)
    progress = Progress()
    result = await dry_run_workflow(
        bus.jetstream(),
        store,
        CART,
        since_s=HOUR,
        until=clock.now(),
        pacing=Pacing(),
        progress=progress,
    )
    assert progress.scanned == progress.total == 10
    assert result["events"] == {"scanned": 10, "unreadable": 0, "triggering": 5}
    # u1 ordered in time (exit); u2 twice and u3 timed out (3 reminders); u4 has no address.
    assert result["enrollments"]["entered"] == 5
    assert result["enrollments"]["exited"] == 1
    emails = result["emails"]
    assert emails["would_send"] == 3
    assert emails["recipients"] == 2
    assert emails["no_email"] == 1
    assert emails["capped"] == 0
    sent_to = sorted(s["email"] for s in result["sample"])
    assert sent_to == ["bob@example.org", "bob@example.org", "cy@example.com"]
    # Each reminder goes out when its wait timed out: an hour after its cart.
    assert sorted(s["at"] for s in result["sample"]) == [t0 + HOUR, t0 + HOUR, t0 + 600 + HOUR]
    assert result["per_domain"] == [
        {"domain": "example.org", "count": 2},
        {"domain": "example.com", "count": 1},
    ]
    assert sum(h["count"] for h in result["per_hour"]) == 3
    # Nothing was written, sent or consumed.
    assert row_counts(store) == dict.fromkeys((t.name for t in WRITTEN), 0)
    after = await bus.jetstream().consumer_info(EVENTS_STREAM, DECIDE_CONSUMER)
    assert after.num_pending == before.num_pending == 10
    assert after.delivered.stream_seq == before.delivered.stream_seq
    consumers = await bus.jetstream().consumers_info(EVENTS_STREAM)
    assert [c.name for c in consumers] == [DECIDE_CONSUMER]


async def test_cap_binds_and_suppression_list_counts(
    bus: NatsClient, any_store: Store, clock: ManualClock
) -> None:
    store = any_store  # SQLite and PostgreSQL
    await cart_recording(bus, clock)
    with store.begin() as conn:
        conn.execute(
            schema.suppressions.insert(),
            {
                "address": "cy@example.com",
                "scope": "marketing",
                "reason": "unsubscribe",
                "source": "test",
                "created_at": clock.now(),
            },
        )
    result = await dry_run_workflow(
        bus.jetstream(), store, CART, since_s=HOUR, until=clock.now(), pacing=Pacing(per_day=1)
    )
    emails = result["emails"]
    # bob's second reminder is the second marketing mail of his day: the cap drops it.
    assert emails["capped"] == 1
    assert emails["suppressed"] == 1
    assert emails["would_send"] == 1
    assert [s["email"] for s in result["sample"]] == ["bob@example.org"]
    day = result["caps"][0]
    assert day["capped"] == 1 and day["contacts"] == 1
    assert day["period"] == "2027-01-15"
    assert "1 marketing mail a day" in day["limit"]
    assert result["suppressed_reasons"] == [
        {"reason": "suppressed: cy@example.com unsubscribed from marketing", "count": 1}
    ]
    assert row_counts(store)["intents"] == 0


async def test_quiet_hours_move_sends_to_the_morning(
    bus: NatsClient, store: Store, clock: ManualClock
) -> None:
    clock.set(1_800_000_000.0 + 15 * HOUR)  # 23:00 UTC
    await record(
        bus,
        identify(clock, "night", {"email": "owl@example.net", "timezone": "UTC"}),
        track(clock, "night", "Signed Up"),
    )
    clock.advance(60)
    definition = {
        "id": "welcome-draft",
        "name": "Welcome",
        "category": "marketing",
        "trigger": {"event": "Signed Up"},
        "steps": [{"id": "hello", "type": "send", "template": "welcome"}],
    }
    quiet = Pacing(quiet=QuietHours.parse("22:00-07:00"))
    result = await dry_run_workflow(
        bus.jetstream(), store, definition, since_s=HOUR, until=clock.now(), pacing=quiet
    )
    assert result["emails"]["would_send"] == 1
    assert result["emails"]["deferred_quiet_hours"] == 1
    morning = 1_800_000_000.0 + 23 * HOUR  # 07:00 UTC the next day
    assert result["per_hour"] == [{"hour": morning, "count": 1}]
    assert result["sample"][0]["at"] == morning and result["sample"][0]["deferred"]


async def test_draft_segment_entries(bus: NatsClient, store: Store, clock: ManualClock) -> None:
    await cart_recording(bus, clock)
    result = await dry_run_segment(
        bus.jetstream(),
        store,
        "`Product Added` at least 2 times in the last 1 day",
        index=SegmentIndex.build([]),
        since_s=HOUR,
        until=clock.now(),
    )
    # Only u2 added twice: one entry, mailable at bob's address, at his second add.
    assert result["contacts"]["entered"] == 1
    assert result["contacts"]["members_at_end"] == 1
    assert result["emails"]["would_send"] == 1
    assert result["sample"][0]["email"] == "bob@example.org"
    assert row_counts(store) == dict.fromkeys((t.name for t in WRITTEN), 0)


async def test_bad_input_is_refused_clearly(
    bus: NatsClient, store: Store, clock: ManualClock
) -> None:
    await cart_recording(bus, clock)
    js = bus.jetstream()
    with pytest.raises(DryRunError, match="10 events were recorded in this window, more than"):
        await dry_run_workflow(
            js, store, CART, since_s=HOUR, until=clock.now(), pacing=Pacing(), max_events=5
        )
    with pytest.raises(WorkflowInvalid, match="wait_until without timeout"):
        broken = {**CART, "steps": [{**CART["steps"][0], "timeout": None}, CART["steps"][1]]}
        del broken["steps"][0]["timeout"]
        await dry_run_workflow(js, store, broken, since_s=HOUR, until=clock.now(), pacing=Pacing())
    with pytest.raises(DryRunError, match="entering segment 'vip'"):
        on_segment = {**CART, "trigger": {"segment_entered": "vip"}}
        await dry_run_workflow(
            js, store, on_segment, since_s=HOUR, until=clock.now(), pacing=Pacing()
        )
    with pytest.raises(SegmentInvalid, match="line 1"):
        await dry_run_segment(
            js, store, "did at least", index=SegmentIndex.build([]), since_s=HOUR, until=0.0
        )
    for bad in ("soon", 0, -5, True, "90d"):
        with pytest.raises(DryRunError, match="since"):
            window_seconds(bad)
    consumers = await js.consumers_info(EVENTS_STREAM)
    assert [c.name for c in consumers] == [DECIDE_CONSUMER]


async def test_stored_mail_holds_its_place_under_the_cap_and_waits_past_the_end(
    bus: NatsClient, store: Store, clock: ManualClock
) -> None:
    """A contact known long before the window, who already got a marketing mail today (a
    stored, sent intent): the draft's mail on the same day is capped; a draft whose wait
    outlasts the recording reports the enrollment as still waiting and sends nothing."""
    t0 = clock.now()
    with store.begin() as conn:
        conn.execute(
            schema.contacts.insert(),
            {
                "id": "old",
                "email": "old@example.com",
                "traits": {},
                "consent": {},
                "first_seen_at": t0 - 30 * 86400,
                "last_seen_at": t0 + 3600,
                "updated_at": t0,
            },
        )
        conn.execute(
            schema.intents.insert(),
            {
                "id": "sent-today",
                "dedup_key": "sent-today",
                "workflow_id": "newsletter",
                "workflow_version": 1,
                "step_id": "send",
                "contact_id": "old",
                "event_id": "e0",
                "template_id": "newsletter",
                "route": "default",
                "category": "marketing",
                "to_addr": "old@example.com",
                "domain": "example.com",
                "context": {},
                "status": "sent",
                "attempts": 1,
                "next_attempt_at": t0 - 600,
                "received_at": t0 - 600,
                "decided_at": t0 - 600,
                "priority": 50,
                "cap_day": "2027-01-15",
                "cap_week": "2027-W02",
            },
        )
    await record(bus, track(clock, "old", "Signed Up"))
    clock.advance(60)
    welcome = {
        "id": "welcome-draft",
        "name": "Welcome",
        "category": "marketing",
        "trigger": {"event": "Signed Up"},
        "steps": [{"id": "hello", "type": "send", "template": "welcome"}],
    }
    before = row_counts(store)
    result = await dry_run_workflow(
        bus.jetstream(), store, welcome, since_s=HOUR, until=clock.now(), pacing=Pacing(per_day=1)
    )
    assert result["emails"]["capped"] == 1 and result["emails"]["would_send"] == 0
    assert result["caps"][0]["period"] == "2027-01-15"
    slow = {
        **welcome,
        "steps": [{"id": "later", "type": "wait", "duration": "1d"}, *welcome["steps"]],
    }
    result = await dry_run_workflow(
        bus.jetstream(), store, slow, since_s=HOUR, until=clock.now(), pacing=Pacing(per_day=1)
    )
    assert result["enrollments"]["waiting"] == 1
    assert result["emails"]["would_send"] == 0 and result["emails"]["decided"] == 0
    assert row_counts(store) == before
    with store.begin() as conn:
        status = conn.execute(sa.select(schema.intents.c.status)).scalar_one()
    assert status == "sent"


async def test_cancel_stops_between_chunks(
    bus: NatsClient, store: Store, clock: ManualClock
) -> None:
    await cart_recording(bus, clock)
    progress = Progress()
    with pytest.raises(DryRunError, match="cancelled"):
        await dry_run_workflow(
            bus.jetstream(),
            store,
            CART,
            since_s=HOUR,
            until=clock.now(),
            pacing=Pacing(),
            progress=progress,
            cancelled=lambda: True,
        )
    assert progress.total == 10 and progress.scanned == 0
    consumers = await bus.jetstream().consumers_info(EVENTS_STREAM)
    assert [c.name for c in consumers] == [DECIDE_CONSUMER]


async def test_progress_counts_up_chunk_by_chunk(
    bus: NatsClient, store: Store, clock: ManualClock
) -> None:
    await cart_recording(bus, clock)
    simulation = WorkflowSimulation(
        parse_workflow(CART, source="test"), store=store, pacing=Pacing(), until=clock.now()
    )
    progress = Progress()
    seen: list[tuple[int, int]] = []

    def cancelled() -> bool:
        seen.append((progress.scanned, progress.total))
        return False

    result = await replay(
        bus.jetstream(),
        simulation,
        start=time.time() - HOUR,
        progress=progress,
        cancelled=cancelled,
        chunk=3,
    )
    assert seen == [(0, 10), (3, 10), (6, 10), (9, 10)]
    assert result["events"]["scanned"] == 10 and result["complete"] is True
    assert result["window"]["recorded_from"] is not None
