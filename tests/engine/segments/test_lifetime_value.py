"""Customer lifetime value: kept exactly by decide from each contact's orders, recomputed by the
rebuild, and read by segments (``clv > 200``, ``orders >= 3``), on SQLite and PostgreSQL."""

from __future__ import annotations

import random

import pytest
import sqlalchemy as sa

from engine.clock import ManualClock
from engine.clv import contact_values, rebuild
from engine.segments.membership import SegmentRegistry
from engine.segments.model import OrderValue, SegmentInvalid
from engine.segments.text import format_condition, parse_condition
from engine.store import Store, schema
from tests.engine.segments.segments_support import SegmentRig, identify, segment, track


def values(store: Store, *ids: str) -> dict[str, dict[str, object]]:
    with store.begin() as conn:
        return contact_values(conn, ids)


def test_simulated_orders_give_exact_values(any_store: Store, clock: ManualClock) -> None:
    rng = random.Random(7)
    r = SegmentRig(any_store, clock, SegmentRegistry())
    truth: dict[str, list[tuple[float, float]]] = {f"c{i}": [] for i in range(30)}
    for _ in range(12):  # batches of mixed events, several orders of one contact per batch
        batch = []
        for cid in rng.sample(sorted(truth), 10):
            amount = round(rng.uniform(1, 300), 2)
            key = rng.choice(["revenue", "total", "value"])
            batch.append(track(clock, cid, "Order Completed", order_id=cid, **{key: amount}))
            batch.append(track(clock, cid, "Product Viewed", product_id="p1"))
            truth[cid].append((amount, clock.now()))
            clock.advance(rng.uniform(1, 600))
        r.decide(*batch)
    found = values(any_store, *truth)
    for cid, orders in truth.items():
        if not orders:
            assert found[cid]["orders"] == 0
            continue
        total = sum(a for a, _ in orders)
        assert found[cid]["lifetime_value"] == pytest.approx(round(total, 2), abs=1e-9)
        assert found[cid]["orders"] == len(orders)
        assert found[cid]["average_order_value"] == pytest.approx(round(total / len(orders), 2))
        assert found[cid]["first_order_at"] == pytest.approx(min(t for _, t in orders), abs=1e-3)
        assert found[cid]["last_order_at"] == pytest.approx(max(t for _, t in orders), abs=1e-3)


def test_an_order_counts_once_and_other_events_change_nothing(
    any_store: Store, clock: ManualClock
) -> None:
    r = SegmentRig(any_store, clock, SegmentRegistry())
    order = track(clock, "ann", "Order Completed", total=40, revenue=30)  # revenue comes first
    r.decide(order, identify(clock, "bob", plan="pro"))
    r.decide(order)  # a redelivery or replay
    r.decide(track(clock, "ann", "Order Completed", total="12"))  # not a number: an order of 0
    r.decide(track(clock, "ann", "Product Viewed", revenue=999))
    found = values(any_store, "ann", "bob")
    assert found["ann"]["lifetime_value"] == 30.0
    assert found["ann"]["orders"] == 2
    assert found["ann"]["average_order_value"] == 15.0
    assert found["bob"] == {
        "lifetime_value": 0.0, "orders": 0, "average_order_value": 0.0,
        "first_order_at": None, "last_order_at": None,
    }  # fmt: skip


def test_rebuild_recomputes_the_values_from_activity(any_store: Store, clock: ManualClock) -> None:
    r = SegmentRig(any_store, clock, SegmentRegistry())
    r.decide(
        track(clock, "ann", "Order Completed", total=100),
        track(clock, "bob", "Order Completed", value=20.5),
        identify(clock, "cid", plan="free"),
    )
    clock.advance(60)
    r.decide(track(clock, "ann", "Order Completed", revenue=50))
    before = values(any_store, "ann", "bob", "cid")
    c = schema.contacts
    with any_store.begin() as conn:  # lose them (as a store from before migration 0011 has)
        conn.execute(sa.update(c).values(lifetime_value=7, orders=9, first_order_at=None))
    seen: list[tuple[int, int]] = []
    summary = rebuild(any_store, lambda done, total: seen.append((done, total)), page=2)
    assert values(any_store, "ann", "bob", "cid") == before
    assert before["ann"]["lifetime_value"] == 150.0 and before["ann"]["orders"] == 2
    assert seen == [(2, 3), (3, 3)]
    assert summary["contacts"] == 3 and summary["with_orders"] == 2 and summary["orders"] == 3
    assert summary["lifetime_value"] == 170.5


def test_segments_select_by_lifetime_value_and_orders(any_store: Store, clock: ManualClock) -> None:
    big = segment("big-spenders", "clv > 200")
    loyal = segment("loyal", "orders >= 3 and aov < 100")
    r = SegmentRig(any_store, clock, SegmentRegistry([big, loyal]))
    r.decide(identify(clock, "ann", plan="pro"), identify(clock, "bob"))
    assert r.members("big-spenders") == [] and r.members("loyal") == []
    r.decide(track(clock, "ann", "Order Completed", total=150))
    assert r.members("big-spenders") == []
    r.decide(track(clock, "ann", "Order Completed", total=60))  # 210 now
    assert r.members("big-spenders") == ["ann"]
    for amount in (10, 20, 30):
        r.decide(track(clock, "bob", "Order Completed", total=amount))
    assert r.members("loyal") == ["bob"]
    r.decide(track(clock, "bob", "Order Completed", total=500))  # aov 140: leaves loyal
    assert r.members("loyal") == []
    assert r.members("big-spenders") == ["ann", "bob"]


@pytest.mark.parametrize(
    ("text", "tree"),
    [
        ("clv > 200", OrderValue("clv", ">", 200)),
        ("orders >= 3", OrderValue("orders", ">=", 3)),
        ("aov <= 49.5", OrderValue("aov", "<=", 49.5)),
    ],
)
def test_the_text_form_round_trips(text: str, tree: OrderValue) -> None:
    assert parse_condition(text) == tree
    assert format_condition(tree) == text
    combined = parse_condition(f'trait plan = "pro" and not {text}')
    assert parse_condition(format_condition(combined)) == combined


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('clv > "200"', "line 1, col 7: expected a number (clv compares with a number)"),
        ("orders contains 3", "line 1, col 8: expected an operator (= != < > <= >=)"),
        ("clv", "line 1, col 4: expected an operator"),
    ],
)
def test_bad_value_conditions_are_positioned_errors(text: str, message: str) -> None:
    with pytest.raises(SegmentInvalid) as caught:
        parse_condition(text)
    assert message in str(caught.value)


def test_invalid_value_atoms_cannot_be_built() -> None:
    with pytest.raises(SegmentInvalid, match="unknown order measure"):
        OrderValue("ltv", ">", 1)
    with pytest.raises(SegmentInvalid, match="compares with a number"):
        OrderValue("clv", ">", True)
