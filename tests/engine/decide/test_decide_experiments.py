"""Conversions and experiments inside the decide transaction (real store, ``DecideBatch``).

The deliver stage's "sent" is written to the ledger row here as the deliver stage writes it
(status and finished_at); the end-to-end test in tests/engine/test_experiments_e2e.py sends
for real.
"""

from __future__ import annotations

import itertools
from collections import Counter
from typing import Any

import orjson
import pytest
import sqlalchemy as sa
from decide_support import identify, intents, registry_of, rows, trace, track

from engine.clock import ManualClock
from engine.decide.batch import DecideBatch, Delivery
from engine.decide.registry import WorkflowRegistry
from engine.decide.workflow import parse_workflow
from engine.errors import WorkflowInvalid
from engine.experiments.assign import assign
from engine.experiments.model import HOLDOUT
from engine.ingest.validate import parse_event
from engine.store import Store, schema

_seq = itertools.count(1)

CART: dict[str, Any] = {
    "id": "cart",
    "name": "Cart",
    "category": "marketing",
    "trigger": {"event": "Product Added"},
    "goal": {"event": "Order Completed", "attribution_window": "2d"},
    "steps": [
        {
            "id": "remind",
            "type": "send",
            "template": "abandoned-cart",
            "holdout": 20,
            "variants": [
                {"id": "a", "subject": "You left something behind"},
                {"id": "b", "template": "cart-b", "sender": "Ann <ann@shop.example>"},
            ],
        },
        {"id": "pause", "type": "wait", "duration": "1d"},
    ],
}


def delivery(event: dict[str, Any]) -> Delivery:
    return Delivery(
        data=orjson.dumps(event),
        subject="events.track",
        stream_seq=next(_seq),
        msg_id=None,
        published_at=1_800_000_000.0,
    )


def runner(store: Store, clock: ManualClock, registry: WorkflowRegistry) -> DecideBatch:
    return DecideBatch(store=store, registry=registry, clock=clock, parse=parse_event)


def mark_sent(store: Store, at: float) -> None:
    """What the deliver stage writes when the relay accepts the mail."""
    i = schema.intents
    with store.begin() as conn:
        conn.execute(
            sa.update(i).where(i.c.status == "queued").values(status="sent", finished_at=at)
        )


def test_a_goal_after_the_mail_is_a_conversion_with_revenue_and_timings(
    any_store: Store, clock: ManualClock
) -> None:
    wf = {**CART, "steps": [{"id": "remind", "type": "send", "template": "abandoned-cart"}]}
    batch = runner(any_store, clock, registry_of(wf))
    triggered = clock.now()
    batch.run([delivery(identify(clock, "u1", {"email": "u1@example.com"}))])
    batch.run([delivery(track(clock, "u1", "Product Added", {"sku": "x"}))])
    clock.advance(60)
    mark_sent(any_store, clock.now())
    clock.advance(3600)
    order = track(clock, "u1", "Order Completed", {"order_id": "o1", "revenue": 42.5})
    outcome = batch.run([delivery(order)])
    [conversion] = rows(any_store, schema.conversions)
    [intent] = intents(any_store)
    assert (conversion.workflow_id, conversion.step_id, conversion.intent_id) == (
        "cart",
        "remind",
        intent.id,
    )
    assert (conversion.event_id, conversion.trigger_name, conversion.revenue) == (
        order["messageId"],
        "Product Added",
        42.5,
    )
    assert conversion.converted_at - conversion.sent_at == pytest.approx(3600)
    assert conversion.sent_at - conversion.triggered_at == pytest.approx(60, abs=1)
    assert triggered <= conversion.triggered_at
    assert [c.workflow_id for c in outcome.conversions] == ["cart"]
    # The same order again (a replay) converts nothing more.
    batch.run([delivery(order)])
    assert len(rows(any_store, schema.conversions)) == 1


def test_no_conversion_outside_the_window_or_without_a_sent_mail(
    store: Store, clock: ManualClock
) -> None:
    wf = {**CART, "steps": [{"id": "remind", "type": "send", "template": "abandoned-cart"}]}
    batch = runner(store, clock, registry_of(wf))
    batch.run([delivery(identify(clock, "u1", {"email": "u1@example.com"}))])
    batch.run([delivery(track(clock, "u1", "Product Added"))])
    # Queued but not sent yet: an order now is not attributed to it.
    batch.run([delivery(track(clock, "u1", "Order Completed", {"total": 10}))])
    assert rows(store, schema.conversions) == []
    mark_sent(store, clock.now())
    clock.advance(2 * 86400 + 1)  # past the 2d window
    batch.run([delivery(track(clock, "u1", "Order Completed", {"total": 10}))])
    assert rows(store, schema.conversions) == []


def test_goal_where_conditions_and_the_revenue_property_are_honoured(
    store: Store, clock: ManualClock
) -> None:
    wf = {
        **CART,
        "goal": {
            "event": "Order Completed",
            "where": [{"property": "total", "op": "gte", "value": 50}],
            "revenue": "total",
        },
        "steps": [{"id": "remind", "type": "send", "template": "abandoned-cart"}],
    }
    batch = runner(store, clock, registry_of(wf))
    batch.run([delivery(identify(clock, "u1", {"email": "u1@example.com"}))])
    batch.run([delivery(track(clock, "u1", "Product Added"))])
    mark_sent(store, clock.now())
    clock.advance(10)
    batch.run([delivery(track(clock, "u1", "Order Completed", {"total": 20, "revenue": 1}))])
    assert rows(store, schema.conversions) == []
    clock.advance(10)
    batch.run([delivery(track(clock, "u1", "Order Completed", {"total": 80, "revenue": 1}))])
    [conversion] = rows(store, schema.conversions)
    assert conversion.revenue == 80


def test_variants_are_assigned_by_hash_and_the_holdout_gets_nothing(
    any_store: Store, clock: ManualClock
) -> None:
    registry = registry_of(CART)
    batch = runner(any_store, clock, registry)
    [experiment] = registry.get("cart").experiments()  # type: ignore[union-attr]
    users = [f"u{n}" for n in range(200)]
    batch.run([delivery(identify(clock, u, {"email": f"{u}@example.com"})) for u in users])
    batch.run([delivery(track(clock, u, "Product Added")) for u in users])
    exposures = {r.contact_id: r for r in rows(any_store, schema.experiment_exposures)}
    assert len(exposures) == 200
    for user, row in exposures.items():
        assert row.variant == assign(experiment, user)  # deterministic, reproducible
    arms = Counter(row.variant for row in exposures.values())
    assert set(arms) == {"a", "b", HOLDOUT}
    assert 20 <= arms[HOLDOUT] <= 60  # 20% of 200, loosely
    mailed = {i.contact_id: i for i in intents(any_store)}
    held = {u for u, row in exposures.items() if row.variant == HOLDOUT}
    assert held.isdisjoint(mailed)
    assert len(mailed) == 200 - len(held)
    for user, intent in mailed.items():
        row = exposures[user]
        assert row.intent_id == intent.id
        if row.variant == "a":
            assert intent.template_id == "abandoned-cart"
            assert intent.context["experiment"] == {
                "id": "cart.remind",
                "variant": "a",
                "subject": "You left something behind",
            }
        else:
            assert intent.template_id == "cart-b"
            assert intent.context["experiment"]["sender"] == "Ann <ann@shop.example>"
    # A holdout enrollment ends, and its trace says why.
    held_user = sorted(held)[0]
    [enrollment] = rows(any_store, schema.enrollments, schema.enrollments.c.contact_id == held_user)
    assert enrollment.state == "exited"
    assert any(
        "holdout of experiment cart.remind" in line for line in trace(any_store, enrollment.id)
    )
    # Goals mark the latest exposure converted, holdout included, once.
    clock.advance(600)
    mark_sent(any_store, clock.now())
    buyers = [held_user, *sorted(mailed)[:3]]
    batch.run([delivery(track(clock, u, "Order Completed", {"total": 5})) for u in buyers])
    batch.run([delivery(track(clock, u, "Order Completed", {"total": 7})) for u in buyers])
    converted = {
        r.contact_id: r
        for r in rows(any_store, schema.experiment_exposures)
        if r.converted_at is not None
    }
    assert set(converted) == set(buyers)
    assert all(r.revenue == 5 for r in converted.values())
    # Each order is a conversion of the last mail (revenue adds up); the holdout had no mail.
    credited = rows(any_store, schema.conversions)
    assert len(credited) == 6
    assert len({c.intent_id for c in credited}) == 3
    assert held_user not in {c.contact_id for c in credited}


def test_a_promoted_winner_goes_to_everyone_but_the_holdout(
    store: Store, clock: ManualClock
) -> None:
    with store.begin() as conn:
        conn.execute(
            schema.experiments.insert(),
            {
                "id": "cart.remind",
                "workflow_id": "cart",
                "state": "promoted",
                "winner": "b",
                "decided_at": clock.now(),
                "actor": "test",
            },
        )
    batch = runner(store, clock, registry_of(CART))
    users = [f"u{n}" for n in range(60)]
    batch.run([delivery(identify(clock, u, {"email": f"{u}@example.com"})) for u in users])
    batch.run([delivery(track(clock, u, "Product Added")) for u in users])
    arms = Counter(r.variant for r in rows(store, schema.experiment_exposures))
    assert set(arms) == {"b", HOLDOUT}
    assert {i.template_id for i in intents(store)} == {"cart-b"}


def test_a_split_on_the_delay_waits_as_long_as_the_arm_says(
    store: Store, clock: ManualClock
) -> None:
    wf = {
        **CART,
        "steps": [
            {
                "id": "delay",
                "type": "wait",
                "variants": [{"id": "30m", "duration": "30m"}, {"id": "60m", "duration": "60m"}],
            },
            {"id": "remind", "type": "send", "template": "abandoned-cart"},
        ],
    }
    batch = runner(store, clock, registry_of(wf))
    users = [f"u{n}" for n in range(40)]
    batch.run([delivery(track(clock, u, "Product Added")) for u in users])
    arms = {r.contact_id: r.variant for r in rows(store, schema.experiment_exposures)}
    timers = {r.contact_id: r.fire_at - clock.now() for r in rows(store, schema.timers)}
    assert set(arms.values()) == {"30m", "60m"}
    for user, arm in arms.items():
        assert timers[user] == pytest.approx(1800 if arm == "30m" else 3600)


@pytest.mark.parametrize(
    ("step", "problem"),
    [
        ({"holdout": 60, "variants": [{"id": "a"}]}, "holdout must be a percentage from 0 to 50"),
        ({"variants": [{"id": "a"}, {"id": "a"}]}, "the variant id 'a' is used twice"),
        ({"variants": [{"id": "a", "weight": 0}]}, "weight must be a positive number"),
        ({"variants": [{"id": "holdout"}]}, "id must be a short lower-case name"),
        ({"variants": [{"id": "a", "colour": "red"}]}, "unknown key(s) colour"),
        ({"variants": [{"id": "a", "subject": "x\r\nBcc: y"}]}, "subject must be one line"),
        ({"promote": True}, "promote without variants"),
    ],
)
def test_bad_experiments_are_refused_with_the_reason(step: dict[str, Any], problem: str) -> None:
    wf = {**CART, "steps": [{"id": "remind", "type": "send", "template": "t", **step}]}
    with pytest.raises(WorkflowInvalid, match="step 'remind'") as caught:
        parse_workflow(wf, source="test.toml")
    assert problem in str(caught.value)
