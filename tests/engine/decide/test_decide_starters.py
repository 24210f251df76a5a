"""The starter workflows, end to end: real Segment events on a real stream, decided by the
worker, continued by the timer service, with time driven by a manual clock."""

from __future__ import annotations

import pytest
from conftest import MakeStack
from decide_support import identify, page, rows, starters, trace, track

from engine.clock import ManualClock
from engine.store import Store, schema

MINUTE, HOUR, DAY = 60.0, 3600.0, 86400.0


def shopper(clock: ManualClock, user: str) -> dict[str, object]:
    return identify(clock, user, {"email": f"{user}@example.com", "first_name": user.title()})


async def test_welcome_series_over_days(make_stack: MakeStack, clock: ManualClock) -> None:
    stack = await make_stack()
    await stack.send(shopper(clock, "ann"), track(clock, "ann", "Signed Up"))
    await stack.settle()
    assert stack.sends("ann") == ["welcome-1"]
    await stack.advance(2 * DAY - MINUTE)
    assert stack.sends("ann") == ["welcome-1"]
    await stack.advance(MINUTE)
    assert stack.sends("ann") == ["welcome-1", "welcome-2"]
    await stack.advance(2 * DAY)
    assert stack.sends("ann") == ["welcome-1", "welcome-2", "welcome-3"]
    # Signing up again (reentry = once) starts nothing.
    await stack.send(track(clock, "ann", "Signed Up"))
    await stack.advance(5 * DAY)
    assert stack.sends("ann") == ["welcome-1", "welcome-2", "welcome-3"]
    [enrollment] = stack.enrollments("ann", "welcome-series")
    assert enrollment.state == "completed"


@pytest.mark.parametrize("where", ["traits", "context"])
async def test_signing_up_with_traits_on_the_track_call_mails_at_once(
    make_stack: MakeStack, clock: ManualClock, where: str
) -> None:
    """A new shopper's first event can be ``Signed Up`` carrying the email in its traits
    (top level, or ``context.traits`` as Segment's libraries send it): welcome-1 goes at once."""
    traits = {"email": "newbie@example.com", "first_name": "Nia"}
    extra = {"traits": traits} if where == "traits" else {"context": {"traits": traits}}
    stack = await make_stack()
    await stack.send(track(clock, "nia", "Signed Up", **extra))
    await stack.settle()
    assert stack.sends("nia") == ["welcome-1"]


async def test_abandoned_cart_sends_after_the_delay(
    make_stack: MakeStack, clock: ManualClock
) -> None:
    stack = await make_stack()
    await stack.send(
        shopper(clock, "bob"), track(clock, "bob", "Product Added", {"product_id": "p1"})
    )
    await stack.settle()
    await stack.advance(29 * MINUTE)
    assert stack.sends("bob") == []
    await stack.advance(MINUTE)
    assert stack.sends("bob") == ["abandoned-cart"]
    [enrollment] = stack.enrollments("bob", "abandoned-cart")
    assert enrollment.state == "completed"
    kinds = [line.split(":")[0] for line in trace(stack.store, enrollment.id)]
    assert kinds == ["entered", "waiting", "timeout", "intent", "completed"]


async def test_abandoned_cart_is_cancelled_by_an_order(
    make_stack: MakeStack, clock: ManualClock
) -> None:
    stack = await make_stack()
    await stack.send(
        shopper(clock, "cat"), track(clock, "cat", "Product Added", {"product_id": "p1"})
    )
    await stack.settle()
    await stack.advance(10 * MINUTE)
    await stack.send(track(clock, "cat", "Order Completed", {"order_id": "o1"}))
    await stack.settle()
    await stack.advance(HOUR)
    assert stack.sends("cat") == ["order-confirmation"]
    [enrollment] = stack.enrollments("cat", "abandoned-cart")
    assert enrollment.state == "exited"
    assert enrollment.exit_reason.startswith("goal reached: Order Completed")
    [timer] = rows(stack.store, schema.timers, schema.timers.c.enrollment_id == enrollment.id)
    assert timer.state == "cancelled"


async def test_abandoned_cart_delay_is_a_setting(
    make_stack: MakeStack, store: Store, clock: ManualClock
) -> None:
    registry = starters({"abandoned-cart": {"delay": "10m"}})
    stack = await make_stack(registry=registry)
    await stack.send(
        shopper(clock, "dan"), track(clock, "dan", "Product Added", {"product_id": "p1"})
    )
    await stack.settle()
    await stack.advance(10 * MINUTE)
    assert stack.sends("dan") == ["abandoned-cart"]


async def test_more_products_added_while_waiting_make_one_reminder(
    make_stack: MakeStack, clock: ManualClock
) -> None:
    stack = await make_stack()
    await stack.send(shopper(clock, "eve"))
    for product in ("p1", "p2", "p3"):
        await stack.send(track(clock, "eve", "Product Added", {"product_id": product}))
        await stack.settle()
        await stack.advance(5 * MINUTE)
    await stack.advance(HOUR)
    assert stack.sends("eve") == ["abandoned-cart"]
    assert len(stack.enrollments("eve", "abandoned-cart")) == 1
    assert (
        stack.telemetry.counters[
            'enrollments_skipped_total{reason="reentry",workflow="abandoned-cart"}'
        ]
        == 2
    )


async def test_browse_abandonment_needs_three_views_of_one_product(
    make_stack: MakeStack, clock: ManualClock
) -> None:
    stack = await make_stack()
    await stack.send(shopper(clock, "fay"))
    views = ["p1", "p2", "p1", "p2"]  # two views each: below the threshold
    for product in views:
        await stack.send(track(clock, "fay", "Product Viewed", {"product_id": product}))
        await stack.advance(5 * MINUTE)
    assert stack.enrollments("fay", "browse-abandonment") == []
    # At 0:62 a third view of p1, but the one at 0:00 left the hour: two in the window.
    await stack.advance(42 * MINUTE)
    await stack.send(track(clock, "fay", "Product Viewed", {"product_id": "p1"}))
    await stack.settle()
    assert stack.enrollments("fay", "browse-abandonment") == []
    # At 0:63 another: 0:10, 0:62 and 0:63 are three within the hour.
    await stack.advance(MINUTE)
    await stack.send(track(clock, "fay", "Product Viewed", {"product_id": "p1"}))
    await stack.settle()
    [enrollment] = stack.enrollments("fay", "browse-abandonment")
    assert enrollment.trigger["properties"] == {"product_id": "p1"}
    await stack.advance(30 * MINUTE)
    assert stack.sends("fay") == ["browse-abandonment"]
    # Viewing it three times again soon after: reentry is limited.
    for _ in range(3):
        await stack.send(track(clock, "fay", "Product Viewed", {"product_id": "p1"}))
        await stack.advance(MINUTE)
    await stack.advance(HOUR)
    assert stack.sends("fay") == ["browse-abandonment"]


async def test_browse_abandonment_is_cancelled_by_adding_that_product(
    make_stack: MakeStack, clock: ManualClock
) -> None:
    stack = await make_stack()
    await stack.send(shopper(clock, "gus"), shopper(clock, "hal"))
    for _ in range(3):
        await stack.send(
            track(clock, "gus", "Product Viewed", {"product_id": "p1"}),
            track(clock, "hal", "Product Viewed", {"product_id": "p1"}),
        )
        await stack.advance(MINUTE)
    await stack.settle()
    await stack.send(
        track(clock, "gus", "Product Added", {"product_id": "p1"}),  # the viewed product
        track(clock, "hal", "Product Added", {"product_id": "p9"}),  # another one
    )
    await stack.settle()
    await stack.advance(HOUR)
    assert stack.sends("gus") == ["abandoned-cart"]
    assert sorted(stack.sends("hal")) == ["abandoned-cart", "browse-abandonment"]
    [gus] = stack.enrollments("gus", "browse-abandonment")
    assert (gus.state, gus.exit_reason) == ("exited", "exit after step 'wait-for-add'")


async def test_re_engagement_on_the_return_visit_after_30_days(
    make_stack: MakeStack, clock: ManualClock
) -> None:
    stack = await make_stack()
    await stack.send(shopper(clock, "ivy"), page(clock, "ivy"))  # a first visit is no return
    await stack.settle()
    await stack.advance(29 * DAY)
    await stack.send(page(clock, "ivy"))
    await stack.settle()
    assert stack.sends("ivy") == []
    await stack.advance(30 * DAY)
    await stack.send(track(clock, "ivy", "Product Viewed", {"product_id": "p1"}))  # the return
    await stack.send(page(clock, "ivy"))  # the same visit goes on: no second mail
    await stack.settle()
    assert stack.sends("ivy") == ["re-engagement"]
    # Away again for 31 days: inactive long enough, and the last mail was over 30 days ago.
    await stack.advance(31 * DAY)
    await stack.send(page(clock, "ivy"))
    await stack.settle()
    assert stack.sends("ivy") == ["re-engagement", "re-engagement"]


async def test_feedback_request_a_week_after_delivery(
    make_stack: MakeStack, clock: ManualClock
) -> None:
    stack = await make_stack()
    await stack.send(shopper(clock, "jo"), track(clock, "jo", "Order Shipped", {"order_id": "o1"}))
    await stack.settle()
    assert stack.sends("jo") == ["shipping-update"]
    await stack.advance(2 * DAY)
    await stack.send(track(clock, "jo", "Order Delivered", {"order_id": "o1"}))
    await stack.settle()
    await stack.advance(7 * DAY - MINUTE)
    assert stack.sends("jo") == ["shipping-update"]
    await stack.advance(MINUTE)
    assert stack.sends("jo") == ["shipping-update", "feedback-request"]
    categories = {row.template_id: row.category for row in rows(stack.store, schema.intents)}
    assert categories == {"shipping-update": "transactional", "feedback-request": "marketing"}


async def test_waits_and_goals_on_sqlite_and_postgresql(
    make_stack: MakeStack, any_store: Store, clock: ManualClock
) -> None:
    """The worker and timer service together on both stores (row locks on PostgreSQL)."""
    registry = starters()
    stack = await make_stack(registry=registry, on_store=any_store)
    await stack.send(shopper(clock, "kim"), shopper(clock, "lee"))
    await stack.send(
        track(clock, "kim", "Product Added", {"product_id": "p1"}),
        track(clock, "lee", "Product Added", {"product_id": "p2"}),
    )
    await stack.settle()
    await stack.advance(5 * MINUTE)
    await stack.send(track(clock, "kim", "Order Completed", {"order_id": "o1"}))
    await stack.settle()
    await stack.advance(30 * MINUTE)
    assert stack.sends("kim") == ["order-confirmation"]
    assert stack.sends("lee") == ["abandoned-cart"]
    e = schema.enrollments
    cart = rows(any_store, e, e.c.workflow_id == "abandoned-cart")
    assert {row.contact_id: row.state for row in cart} == {"kim": "exited", "lee": "completed"}
