"""The demo shop: a deterministic, realistic Segment stream, paced into a real nats-server."""

from __future__ import annotations

import asyncio
import base64
import itertools
import re
import time
from collections import Counter
from typing import Any

import orjson
import pytest
from aiohttp import web

from engine import bus
from engine.demo import (
    SAFE_DOMAINS,
    DemoShop,
    DemoStats,
    activity_name,
    run_demo,
    run_demo_http,
)
from engine.ingest.validate import parse_event

ISO_MS = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")
EMAIL = re.compile(r"^[a-z0-9._]+@[a-z0-9.-]+\.[a-z]{2,}$")
SAMPLE = 20_000


def _fixed_shop(seed: int) -> DemoShop:
    """A shop whose ids and clock are deterministic too."""
    counter = itertools.count()
    ticks = itertools.count()
    return DemoShop(
        seed,
        new_id=lambda: f"{next(counter):032x}",
        clock=lambda: 1_800_000_000.0 + next(ticks) * 0.0137,
    )


@pytest.fixture(scope="module")
def sample() -> list[dict[str, Any]]:
    return DemoShop(11).events(SAMPLE)


def _contact(event: dict[str, Any], aliases: dict[str, str]) -> str:
    if event.get("userId"):
        return str(event["userId"])
    anon = str(event["anonymousId"])
    return aliases.get(anon, f"anon:{anon}")


def _aliases(events: list[dict[str, Any]]) -> dict[str, str]:
    """anonymousId -> userId, from identify calls that carry both (log-ins and sign-ups)."""
    return {
        e["anonymousId"]: e["userId"]
        for e in events
        if e["type"] == "identify" and e.get("anonymousId") and e.get("userId")
    }


# ---------------------------------------------------------------- the generator


def test_same_seed_same_stream() -> None:
    assert _fixed_shop(7).events(3_000) == _fixed_shop(7).events(3_000)
    assert _fixed_shop(7).events(500) != _fixed_shop(8).events(500)

    # With the real clock and ids only messageId, timestamp and sign-up dates differ.
    def content(event: dict[str, Any]) -> dict[str, Any]:
        kept = {k: v for k, v in event.items() if k not in ("messageId", "timestamp")}
        if "traits" in kept:
            kept["traits"] = {k: v for k, v in kept["traits"].items() if k != "created_at"}
        return kept

    first = [content(e) for e in DemoShop(7).events(3_000)]
    second = [content(e) for e in DemoShop(7).events(3_000)]
    assert first == second


def test_population_and_catalog() -> None:
    shop = DemoShop(3)
    people = shop.shoppers
    assert len(people) >= 1_000
    assert len({p.user_id for p in people}) == len(people)
    assert len({p.email for p in people}) == len(people)
    assert len({p.anonymous_id for p in people}) == len(people)
    domains = Counter(p.email.split("@")[1] for p in people)
    assert {"gmail.com", "outlook.com", "yahoo.com", "example.com"} <= set(domains)
    assert all(EMAIL.match(p.email) for p in people)
    assert len({p.timezone for p in people}) >= 8
    assert 0.4 < sum(p.registered for p in people) / len(people) < 0.8  # the rest are prospects

    assert 50 <= len(shop.products) <= 70
    assert len({p.product_id for p in shop.products}) == len(shop.products)
    assert len({p.sku for p in shop.products}) == len(shop.products)
    assert len({p.category for p in shop.products}) >= 5
    for product in shop.products:
        assert re.fullmatch(r"https://shop\.example/p/[a-z0-9-]+", product.url)
        assert product.image_url.startswith("https://shop.example/")
        assert product.price > 0

    safe = DemoShop(3, domains=SAFE_DOMAINS)
    assert {p.email.split("@")[1] for p in safe.shoppers} <= set(SAFE_DOMAINS)


def test_every_event_is_segment_shaped(sample: list[dict[str, Any]]) -> None:
    ids = [e["messageId"] for e in sample]
    assert len(set(ids)) == len(ids)
    for event in sample:
        assert re.fullmatch(r"[0-9a-f]{32}", event["messageId"])
        assert event["type"] in ("track", "identify", "page")
        assert event.get("userId") or event.get("anonymousId")
        assert ISO_MS.match(event["timestamp"]), event["timestamp"]
        context = event["context"]
        assert context["library"]["name"] == "campaign-demo"
        assert context["ip"] and context["userAgent"] and "/" in context["timezone"]
        if event["type"] == "track":
            assert isinstance(event["event"], str) and event["event"]
            assert isinstance(event["properties"], dict)
        elif event["type"] == "page":
            assert event["name"] and event["properties"]["url"].startswith("https://shop.example/")
        else:
            assert event["userId"] and EMAIL.match(event["traits"]["email"])
            assert event["traits"]["first_name"] and event["traits"]["last_name"]
    assert len({e["context"]["timezone"] for e in sample}) >= 8
    orjson.dumps(sample)  # JSON-ready throughout


def test_the_engine_validator_accepts_every_event(sample: list[dict[str, Any]]) -> None:
    for raw in sample:
        event = parse_event(raw)
        assert event.message_id == raw["messageId"]
        assert event.contact_key == raw.get("userId", f"anon:{raw.get('anonymousId')}")
        assert event.timestamp > 1_600_000_000
    signed_up = parse_event(next(e for e in sample if e.get("event") == "Signed Up"))
    assert signed_up.traits["email"] and signed_up.traits["first_name"]


def test_the_mix_is_realistic(sample: list[dict[str, Any]]) -> None:
    names = Counter(activity_name(e) for e in sample)
    assert names.most_common(1)[0][0] == "Product Viewed"
    for name in (
        "Page Viewed",
        "Identified",
        "Products Searched",
        "Product List Viewed",
        "Product Added",
        "Cart Viewed",
        "Checkout Started",
        "Order Completed",
        "Signed Up",
        "Order Shipped",
        "Order Delivered",
        "Consent Updated",
        "Geofence Entered",
    ):
        assert names[name] > 0, name
    # Only shoppers who gave location consent walk into a geofence.
    granted: dict[str, bool] = {}
    for event in sample:
        if event.get("event") == "Consent Updated":
            granted[event["userId"]] = event["properties"]["granted"]
        elif event.get("event") == "Geofence Entered":
            assert granted.get(event["userId"]) is True
    # The funnel narrows.
    assert (
        names["Product Viewed"]
        > names["Product Added"]
        > names["Checkout Started"]
        > names["Order Completed"]
    )

    # Most carts are abandoned: their owner never completes an order in the sample.
    aliases = _aliases(sample)
    carts = {_contact(e, aliases) for e in sample if e.get("event") == "Product Added"}
    buyers = {_contact(e, aliases) for e in sample if e.get("event") == "Order Completed"}
    abandoned = carts - buyers
    assert len(abandoned) / len(carts) > 0.6
    assert len(buyers) > 50 and buyers <= carts  # every buyer filled a cart first

    # Browse abandonment: the same person looking at the same product several times.
    views = Counter(
        (_contact(e, aliases), e["properties"]["product_id"])
        for e in sample
        if e.get("event") == "Product Viewed"
    )
    assert sum(1 for n in views.values() if n >= 3) > 50

    # Anonymous visitors sign up and are identified right after, under the same userId.
    for i, event in enumerate(sample):
        if event.get("event") == "Signed Up":
            assert EMAIL.match(event["traits"]["email"])
            assert event["traits"]["first_name"] and event["traits"]["last_name"]
            follow = next(
                (e for e in sample[i + 1 :] if e.get("anonymousId") == event["anonymousId"]),
                None,
            )
            if follow is None:
                assert i > len(sample) - 1_000  # the sample ends mid-session
                continue
            assert follow["type"] == "identify" and follow["userId"] == event["userId"]
    assert any(not e.get("userId") for e in sample)  # anonymous browsing exists


def test_orders_have_products_totals_and_fulfilment(sample: list[dict[str, Any]]) -> None:
    orders = {e["properties"]["order_id"]: e for e in sample if e.get("event") == "Order Completed"}
    assert orders
    for event in orders.values():
        props = event["properties"]
        assert event["userId"]  # only account holders check out
        assert props["currency"] == "USD" and props["products"]
        subtotal = sum(p["price"] * p["quantity"] for p in props["products"])
        assert props["subtotal"] == pytest.approx(subtotal)
        assert props["revenue"] == pytest.approx(subtotal - props["discount"])
        assert props["total"] == pytest.approx(
            subtotal - props["discount"] + props["shipping"] + props["tax"], abs=0.011
        )
        for item in props["products"]:
            assert {"product_id", "sku", "name", "price", "quantity", "url"} <= set(item)

    shipped = [e for e in sample if e.get("event") == "Order Shipped"]
    assert shipped
    position = {id(e): i for i, e in enumerate(sample)}
    for event in shipped:
        props = event["properties"]
        assert props["carrier"] in ("UPS", "FedEx", "USPS", "DHL")
        assert props["tracking_number"] and props["tracking_url"].startswith("https://")
        order = orders[props["order_id"]]  # shipped orders were placed earlier in the stream
        assert position[id(order)] < position[id(event)]
        assert event["userId"] == order["userId"]
    shipped_ids = {e["properties"]["order_id"] for e in shipped}
    delivered = [e for e in sample if e.get("event") == "Order Delivered"]
    assert delivered and {e["properties"]["order_id"] for e in delivered} <= shipped_ids


def test_returning_shoppers_and_logins(sample: list[dict[str, Any]]) -> None:
    aliases = _aliases(sample)
    # Registered shoppers browsing logged out, then logging in, tie their device to the account.
    logins = [
        e for e in sample if e["type"] == "identify" and e.get("anonymousId") and e.get("userId")
    ]
    assert logins and aliases
    # Shoppers come back: some contacts have events far apart in the stream (several visits).
    first: dict[str, int] = {}
    returning = set()
    for i, event in enumerate(sample):
        who = _contact(event, aliases)
        if who in first and i - first[who] > 2_000:
            returning.add(who)
        first.setdefault(who, i)
    assert len(returning) > 50


def test_generator_is_cheap() -> None:
    shop = DemoShop(5)
    shop.events(2_000)  # warm up
    started = time.perf_counter()
    shop.events(20_000)
    rate = 20_000 / (time.perf_counter() - started)
    assert rate > 10_000, f"the generator alone makes only {rate:,.0f} events/s"


# ---------------------------------------------------------------- publishing to NATS


async def test_paces_500_per_second_into_jetstream(nats_url: str, nats_token: str) -> None:
    nc = await bus.connect(nats_url, token=nats_token)
    try:
        js = nc.jetstream()
        await bus.ensure_streams(js)
        progress: list[DemoStats] = []
        stats = await run_demo(
            nc, rate=500, duration=2.0, seed=3, on_progress=progress.append, bench_stamp=True
        )
        assert stats.published == 1_000 and stats.missed == 0
        assert stats.acked == 1_000 and stats.errors == 0 and stats.unacked == 0
        assert stats.elapsed == pytest.approx(2.0, rel=0.1)
        assert stats.achieved_rate == pytest.approx(500, rel=0.1)
        assert sum(stats.by_name.values()) == stats.published
        assert progress and progress[-1].published == 1_000

        info = await js.stream_info(bus.EVENTS_STREAM)
        assert 950 <= info.state.messages <= 1_050
        seen = set()
        for seq in range(1, info.state.messages + 1, 37):
            msg = await js.get_msg(bus.EVENTS_STREAM, seq)
            event = orjson.loads(msg.data or b"")
            assert msg.headers and msg.headers["Nats-Msg-Id"] == event["messageId"]
            assert msg.subject == bus.event_subject(event)
            if "properties" in event:
                assert abs(event["properties"]["bench_sent_at"] - time.time()) < 30
            seen.add(event["messageId"])
        assert len(seen) > 20
    finally:
        await nc.drain()


async def test_stop_event_and_low_rates(nats_url: str, nats_token: str) -> None:
    nc = await bus.connect(nats_url, token=nats_token)
    try:
        js = nc.jetstream()
        await bus.ensure_streams(js)
        stop = asyncio.Event()
        stopped_at: list[float] = []

        def set_stop() -> None:
            stopped_at.append(time.monotonic())
            stop.set()

        asyncio.get_running_loop().call_later(1.0, set_stop)
        stats = await run_demo(js, rate=4, duration=None, stop=stop, shop=DemoShop(2))
        assert time.monotonic() - stopped_at[0] < 0.25  # the stop is noticed promptly
        # Event k is due at k / rate seconds: 0, 0.25, 0.5, ...
        assert abs(stats.published - (int(stats.elapsed * 4) + 1)) <= 1
        assert stats.acked == stats.published

        # A fraction of an event per second is still paced on schedule: events at 0 s and 2 s.
        stats = await run_demo(js, rate=0.5, duration=3.0)
        assert stats.published == 2 and stats.acked == 2
        assert stats.elapsed == pytest.approx(3.0, rel=0.1)
    finally:
        await nc.drain()


async def test_holds_back_while_the_engine_has_a_backlog(nats_url: str, nats_token: str) -> None:
    nc = await bus.connect(nats_url, token=nats_token)
    try:
        js = nc.jetstream()
        await bus.ensure_streams(js)
        # More than 2 s of traffic at 1,000/s waits to be processed for the first half second
        # of the run (timed from the demo's first look, not from when the test scheduled it).
        first_look: list[float] = []

        def backlog() -> float:
            now = time.monotonic()
            if not first_look:
                first_look.append(now)
            return 10_000.0 if now - first_look[0] < 0.5 else 0.0

        stats = await run_demo(js, rate=1000, duration=1.0, shop=DemoShop(3), backlog=backlog)
        # Nothing went out while held back (the slots were skipped, not saved for a burst);
        # publishing resumed once the engine caught up.
        assert stats.missed >= 300 and stats.published > 0
        assert stats.published + stats.missed == 1000
        assert stats.acked == stats.published
    finally:
        await nc.drain()


async def test_cancelling_stops_cleanly(nats_url: str, nats_token: str) -> None:
    nc = await bus.connect(nats_url, token=nats_token)
    try:
        js = nc.jetstream()
        await bus.ensure_streams(js)
        subscriptions = len(nc._subs)
        task = asyncio.create_task(run_demo(js, rate=2_000, duration=None))
        await asyncio.sleep(0.5)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        await asyncio.sleep(0.1)
        count = (await js.stream_info(bus.EVENTS_STREAM)).state.messages
        assert 0 < count <= 1_100
        await asyncio.sleep(0.3)
        assert (await js.stream_info(bus.EVENTS_STREAM)).state.messages == count  # stopped
        assert len(nc._subs) == subscriptions  # the ack inbox is unsubscribed
    finally:
        await nc.drain()


async def test_core_publish_and_missing_stream(nats_url: str, nats_token: str) -> None:
    nc = await bus.connect(nats_url, token=nats_token)
    try:
        js = nc.jetstream()
        # No stream yet: JetStream publishes are refused and counted, never hang.
        stats = await run_demo(js, rate=200, duration=0.5, ack_timeout=2.0)
        assert stats.published == 100 and stats.errors == 100 and stats.acked == 0
        assert stats.last_error and "no stream" in stats.last_error

        await bus.ensure_streams(js)
        stats = await run_demo(nc, rate=400, duration=0.5, use_jetstream=False)
        assert stats.published == 200 and stats.acked == 0 and stats.errors == 0
        await asyncio.sleep(0.2)
        info = await js.stream_info(bus.EVENTS_STREAM)
        assert info.state.messages == 200
        msg = await js.get_msg(bus.EVENTS_STREAM, 1)
        assert (
            msg.headers and msg.headers["Nats-Msg-Id"] == orjson.loads(msg.data or b"")["messageId"]
        )
    finally:
        await nc.drain()


async def test_rejects_a_bad_rate(nats_url: str, nats_token: str) -> None:
    nc = await bus.connect(nats_url, token=nats_token)
    try:
        with pytest.raises(ValueError, match="rate"):
            await run_demo(nc, rate=0, duration=1)
    finally:
        await nc.drain()


# ---------------------------------------------------------------- publishing over HTTP


async def test_http_batches_with_basic_auth() -> None:
    batches: list[list[dict[str, Any]]] = []
    expected = "Basic " + base64.b64encode(b"wk_demo:").decode()

    async def batch(request: web.Request) -> web.Response:
        if request.headers.get("Authorization") != expected:
            return web.json_response({"error": "bad write key"}, status=401)
        body = await request.json()
        batches.append(body["batch"])
        return web.json_response({"success": True})

    app = web.Application()
    app.router.add_post("/v1/batch", batch)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    try:
        stats = await run_demo_http(
            # 600/s: enough to need batching, little enough to keep up on a loaded machine
            f"http://127.0.0.1:{port}",
            "wk_demo",
            600,
            1.0,
            bench_stamp=True,
        )
        assert stats.published == 600 and stats.acked == 600 and stats.errors == 0
        assert stats.elapsed == pytest.approx(1.0, rel=0.15)
        assert sum(len(b) for b in batches) == 600
        assert max(len(b) for b in batches) <= 100
        assert len(batches) <= 60  # gathered into batches, not one request per tick
        events = [e for b in batches for e in b]
        assert len({e["messageId"] for e in events}) == 600
        assert all("bench_sent_at" in e["properties"] for e in events if "properties" in e)

        refused = await run_demo_http(f"http://127.0.0.1:{port}/v1/batch", "wrong", 100, 0.2)
        assert refused.errors == refused.published == 20 and refused.acked == 0
        assert refused.last_error and "401" in refused.last_error
    finally:
        await runner.cleanup()
