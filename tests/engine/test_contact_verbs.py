"""The "Why" explorer's contact verbs through the real control API of an engine node (embedded
nats-server, SQLite, the capture inbox, a clock the test moves): profile, timeline, segment
memberships with enter/exit times, each enrollment's decisions in order with the relay's reply,
and why a contact did not get a workflow - every first reason the answer can give."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import orjson
import pytest
import sqlalchemy as sa

from engine.bus import events_subject
from engine.clock import ManualClock
from engine.config import load_settings
from engine.control import ControlError, request
from engine.ingest.validate import format_time
from engine.node import Node
from engine.store import schema
from tests.engine.access_support import grant


@pytest.fixture
async def node(tmp_path: Path) -> AsyncIterator[Node]:
    settings = load_settings(
        None,
        environ={},
        overrides={
            "engine": {"data_dir": str(tmp_path / "data"), "node": "w1"},
            "http": {"listen": "127.0.0.1:0"},
            "ingest": {"write_key": "wk-test"},
        },
    )
    node = Node(settings, clock=ManualClock(float(int(time.time()))))
    await node.start()
    assert node.store is not None
    grant(node.store, "ada", "marketer")
    try:
        yield node
    finally:
        await node.stop()


def clock_of(node: Node) -> ManualClock:
    assert isinstance(node.clock, ManualClock)
    return node.clock


async def call(node: Node, verb: str, args: dict[str, Any] | None = None) -> Any:
    assert node.nc is not None
    return await request(node.nc, "w1", verb, args, user="ada", timeout=15)


async def wait_for(predicate: Callable[[], Awaitable[Any]], what: str, timeout: float = 20) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        found = await predicate()
        if found:
            return found
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.05)


async def track(
    node: Node,
    user: str,
    event: str,
    email: str | None = None,
    **properties: Any,
) -> str:
    assert node.js is not None
    now = format_time(node.clock.now())
    body: dict[str, Any] = {
        "type": "track",
        "userId": user,
        "event": event,
        "properties": properties,
        "messageId": uuid.uuid4().hex,
        "timestamp": now,
        "receivedAt": now,
    }
    if email:
        body["context"] = {"traits": {"email": email, "first_name": user.title()}}
    await node.js.publish(
        events_subject("track"), orjson.dumps(body), headers={"Nats-Msg-Id": body["messageId"]}
    )
    return str(body["messageId"])


def rows(node: Node, query: Any) -> list[Any]:
    assert node.store is not None
    with node.store.begin() as conn:
        return list(conn.execute(query))


async def enrolled(node: Node, user: str, workflow: str, state: str) -> Any:
    e = schema.enrollments

    async def found() -> Any:
        got = rows(
            node,
            sa.select(e).where(
                e.c.contact_id == user, e.c.workflow_id == workflow, e.c.state == state
            ),
        )
        return got or None

    return await wait_for(found, f"{user} {state} in {workflow}")


async def processed(node: Node, message_id: str) -> None:
    p = schema.processed_events

    async def found() -> bool:
        return bool(rows(node, sa.select(p.c.message_id).where(p.c.message_id == message_id)))

    await wait_for(found, f"event {message_id} decided")


async def intent_final(node: Node, user: str, workflow: str) -> Any:
    i = schema.intents

    async def found() -> Any:
        got = rows(node, sa.select(i).where(i.c.contact_id == user, i.c.workflow_id == workflow))
        return got[0] if got and got[0].status not in ("queued", "claimed", "sending") else None

    return await wait_for(found, f"the {workflow} email to {user}", timeout=30)


async def test_the_decisions_of_a_real_enrollment_and_why_it_was_sent(node: Node) -> None:
    clock = clock_of(node)
    user, address = "u-ada", f"ada-{uuid.uuid4().hex[:6]}@example.com"
    started = clock.now()
    await track(node, user, "Product Viewed", address, product_id="p1", price=20)
    added = await track(node, user, "Product Added", address, product_id="p1", price=20)
    await enrolled(node, user, "abandoned-cart", "waiting")

    waiting = await call(node, "contacts.why_not", {"contact": user, "workflow": "abandoned-cart"})
    assert waiting["got"] is False and waiting["reason"] == "waiting"
    assert waiting["at"] == pytest.approx(started + 1800)
    assert "waiting for Order Completed" in waiting["answer"]

    clock.advance(31 * 60)  # the wait times out; the reminder goes to the capture inbox
    sent = await intent_final(node, user, "abandoned-cart")
    assert sent.status == "sent"

    [story] = (await call(node, "contacts.enrollments", {"contact": user}))["enrollments"]
    kinds = [d["kind"] for d in story["decisions"]]
    assert kinds == ["entered", "waiting", "timeout", "intent", "sent", "completed"]
    assert story["trigger"]["message_id"] == added
    assert story["state"] == "completed" and story["converted"] is False
    outcome = story["decisions"][4]
    assert outcome["reply"] == sent.reply and sent.reply.startswith("250")
    assert outcome["intent"] == sent.id == story["decisions"][3]["intent"]
    assert [d["label"] for d in story["decisions"]][:3] == [
        "trigger matched",
        "waiting",
        "timed out",
    ]
    times = [d["ts"] for d in story["decisions"]]
    assert times == sorted(times) and times[2] == pytest.approx(started + 1860)

    got = await call(node, "contacts.why_not", {"contact": user, "workflow": "abandoned-cart"})
    assert got["got"] is True and got["reason"] == "sent"
    assert sent.reply in got["answer"] and address in got["answer"]

    profile = await call(node, "contacts.show", {"contact": user})
    assert profile["email"] == address and profile["subscribed"] is True
    assert profile["counts"] == {"events": 2, "enrollments": 1, "emails": 1}
    assert profile["blocked"] == {"marketing": [], "transactional": []}

    line = (await call(node, "contacts.timeline", {"contact": user}))["entries"]
    assert [(e["kind"], e["title"]) for e in line] == [
        ("event", "Product Viewed"),
        ("event", "Product Added"),
        ("email", "abandoned-cart (abandoned-cart)"),
    ]
    assert line[-1]["status"] == "sent"


async def test_the_profile_shows_the_lifetime_value_of_the_contacts_orders(node: Node) -> None:
    user, address = "u-orders", f"orders-{uuid.uuid4().hex[:6]}@example.com"
    await track(node, user, "Order Completed", address, order_id="o1", total=30.5)
    await track(node, user, "Order Completed", address, order_id="o2", revenue=12)

    async def both() -> Any:
        try:
            shown = await call(node, "contacts.show", {"contact": user})
        except ControlError:  # not decided yet: no such contact
            return None
        return shown if shown["orders"]["count"] == 2 else None

    shown = await wait_for(both, "two orders on the profile")
    assert shown["orders"]["lifetime_value"] == pytest.approx(42.5)
    assert shown["orders"]["first_at"] <= shown["orders"]["last_at"]


async def test_why_not_names_the_first_reason(node: Node) -> None:
    clock = clock_of(node)
    # Never the trigger's event: the nearest one is named.
    await track(node, "u-viewer", "Product Viewed", "v@example.com", product_id="p1")
    # The trigger's event, but its condition (browse-abandonment: the 3rd view) does not hold.
    # Converted: ordered while the cart reminder waited; then re-entry blocks a new cart.
    await track(node, "u-buyer", "Product Added", "b@example.com", product_id="p2", price=5)
    await enrolled(node, "u-buyer", "abandoned-cart", "waiting")
    clock.advance(60)
    await track(node, "u-buyer", "Order Completed", "b@example.com", order_id="o1", total=5)
    await enrolled(node, "u-buyer", "abandoned-cart", "exited")
    converted = await call(
        node, "contacts.why_not", {"contact": "u-buyer", "workflow": "abandoned-cart"}
    )
    assert converted["reason"] == "converted"
    assert "goal reached: Order Completed" in converted["answer"]
    clock.advance(3600)
    again = await track(node, "u-buyer", "Product Added", "b@example.com", product_id="p3")
    await processed(node, again)
    blocked = await call(
        node, "contacts.why_not", {"contact": "u-buyer", "workflow": "abandoned-cart"}
    )
    assert blocked["reason"] == "reentry"
    assert "'after 1d'" in blocked["answer"] and "1h" in blocked["answer"]

    # No email address: the enrollment reaches the send and nothing can go.
    await track(node, "u-anon", "Product Added", None, product_id="p4", price=3)
    await enrolled(node, "u-anon", "abandoned-cart", "waiting")

    # Unsubscribed from marketing (a suppression of scope marketing): the cart reminder is
    # suppressed, the order confirmation (transactional) still goes.
    assert node.store is not None
    with node.store.begin() as conn:
        conn.execute(
            schema.suppressions.insert(),
            {
                "address": "unsub@example.com",
                "scope": "marketing",
                "reason": "unsubscribe",
                "source": "test",
                "created_at": clock.now(),
            },
        )
    await track(node, "u-unsub", "Product Added", "unsub@example.com", product_id="p5", price=9)
    await enrolled(node, "u-unsub", "abandoned-cart", "waiting")

    clock.advance(31 * 60)
    await enrolled(node, "u-anon", "abandoned-cart", "completed")
    no_email = await call(
        node, "contacts.why_not", {"contact": "u-anon", "workflow": "abandoned-cart"}
    )
    assert no_email["reason"] == "no_email" and "send-reminder" in no_email["answer"]
    assert "the contact has no email address" in no_email["also"]

    suppressed = await intent_final(node, "u-unsub", "abandoned-cart")
    assert suppressed.status == "suppressed"
    answer = await call(
        node, "contacts.why_not", {"contact": "u-unsub", "workflow": "abandoned-cart"}
    )
    assert answer["reason"] == "suppressed" and answer["category"] == "marketing"
    assert "transactional mail would still go" in answer["answer"]
    assert any("suppression list" in a for a in answer["also"])
    await track(node, "u-unsub", "Order Completed", "unsub@example.com", order_id="o2", total=9)
    order = await intent_final(node, "u-unsub", "order-confirmation")
    assert order.status == "sent"
    transactional = await call(
        node, "contacts.why_not", {"contact": "u-unsub", "workflow": "order-confirmation"}
    )
    assert transactional["got"] is True and transactional["also"] == []
    every = await call(node, "contacts.why_not", {"contact": "u-unsub"})
    by_workflow = {a["workflow"]: a["reason"] for a in every["answers"]}
    assert by_workflow["order-confirmation"] == "sent"
    assert by_workflow["abandoned-cart"] == "suppressed"
    assert by_workflow["welcome-series"] == "no_trigger_event"
    profile = await call(node, "contacts.show", {"contact": "u-unsub"})
    assert profile["blocked"]["transactional"] == [] and profile["blocked"]["marketing"]

    viewer = await call(
        node, "contacts.why_not", {"contact": "u-viewer", "workflow": "abandoned-cart"}
    )
    assert viewer["reason"] == "no_trigger_event"
    assert "no `Product Added` event" in viewer["answer"]
    assert "Nearest: `Product Viewed`" in viewer["answer"]
    # browse-abandonment: Product Viewed, but only the 3rd view of one product within an hour.
    browse = await call(
        node, "contacts.why_not", {"contact": "u-viewer", "workflow": "browse-abandonment"}
    )
    assert browse["reason"] == "trigger_conditions"
    assert "count of Product Viewed" in browse["answer"]

    # Unknown names are refused with the choices.
    with pytest.raises(ControlError, match=r"there is no workflow 'nope'.*abandoned-cart"):
        await call(node, "contacts.why_not", {"contact": "u-viewer", "workflow": "nope"})
    with pytest.raises(ControlError, match="there is no contact 'ghost'"):
        await call(node, "contacts.why_not", {"contact": "ghost", "workflow": "abandoned-cart"})
    with pytest.raises(ControlError, match="limit must be a whole number from 1 to 500"):
        await call(node, "contacts.timeline", {"contact": "u-viewer", "limit": 0})
    with pytest.raises(ControlError, match="unknown argument"):
        await call(node, "contacts.show", {"contact": "u-viewer", "extra": 1})


async def test_memberships_and_a_draft_count_equal_to_the_saved_segment(node: Node) -> None:
    clock = clock_of(node)
    for k in range(12):
        await track(node, f"u-{k:02d}", "Product Viewed", f"p{k}@example.com", price=k)
    last = await track(node, "u-11", "Page Viewed", None)
    await processed(node, last)
    text = "`Product Viewed` where price >= 4 at least once in the last 1 hour"

    draft = await call(node, "segments.preview", {"text": text, "limit": 3})
    assert draft["complete"] is True and draft["scanned"] == draft["total"] == 12
    assert draft["members"] == 8 and len(draft["sample"]) == 3
    assert draft["text"] == "`Product Viewed` where price >= 4 at least once in the last 1 hour"

    await call(node, "segments.save", {"segment": "viewers", "name": "Viewers", "text": text})

    await wait_for(lambda: _built(node), "the build")
    assert (await call(node, "segments.count", {"segment": "viewers"}))["members"] == 8

    # The window passes: members leave on time; the contact's memberships show both times.
    entered_at = clock.now()
    clock.advance(3601)

    async def left() -> bool:
        got = await call(node, "segments.count", {"segment": "viewers"})
        return bool(got["members"] == 0)

    await wait_for(left, "the window to pass")
    mine = (await call(node, "contacts.segments", {"contact": "u-05"}))["segments"]
    assert [(s["segment"], s["member"], s["name"]) for s in mine] == [("viewers", False, "Viewers")]
    [period] = mine[0]["periods"]
    assert period["entered_at"] == pytest.approx(entered_at, abs=1)
    assert period["exited_at"] == pytest.approx(entered_at + 3601, abs=1)
    line = (await call(node, "contacts.timeline", {"contact": "u-05"}))["entries"]
    assert [e["kind"] for e in line] == ["event", "segment", "segment"]

    # A draft now agrees with the live segment again; mistakes name their place.
    assert (await call(node, "segments.preview", {"text": text}))["members"] == 0
    with pytest.raises(ControlError, match=r"line 1, col 27: expected a number after 'least'"):
        await call(node, "segments.preview", {"text": "`Product Viewed` at least lots times"})
    with pytest.raises(ControlError, match="there is no segment 'nope'"):
        await call(node, "segments.preview", {"text": "in segment nope"})


async def _built(node: Node) -> bool:
    builds = (await call(node, "segments.build_status", {"segment": "viewers"}))["builds"]
    return bool(builds and builds[0]["state"] == "done")
