"""Fan-out of price-drop and back-in-stock alerts: who gets one, at most one per window, and a
large audience walked a chunk per transaction (real SQLite store, manual clock)."""

from __future__ import annotations

import pytest
import sqlalchemy as sa

from engine.catalog.fanout import Fanout
from engine.clock import ManualClock
from engine.decide.registry import WorkflowRegistry
from engine.store import Store, schema
from tests.engine.catalog.catalog_support import (
    DAY,
    CatalogRig,
    alert_workflow,
    catalog,
    track,
)


@pytest.fixture
def rig(store: Store, clock: ManualClock) -> CatalogRig:
    workflows = WorkflowRegistry(
        [
            alert_workflow("drop", "price_drop", lookback="7d", window="3d"),
            alert_workflow("restock", "back_in_stock", lookback="7d", window="3d"),
        ]
    )
    return CatalogRig(store, clock, workflows)


def test_price_drop_mails_recent_lookers_who_did_not_buy(
    rig: CatalogRig, clock: ManualClock
) -> None:
    rig.decide(catalog(clock, "p1", name="Shirt", price=100, stock=5))
    rig.decide(track(clock, "old", "Product Viewed", product_id="p1"))
    clock.advance(2 * DAY)
    rig.decide(
        track(clock, "ann", "Product Viewed", product_id="p1"),
        track(clock, "bob", "Product Added", product_id="p1"),
        track(clock, "cat", "Product Viewed", product_id="p1"),
        track(clock, "cat", "Order Completed", products=[{"product_id": "p1"}]),
        track(clock, "dan", "Product Viewed", product_id="p2"),
    )
    clock.advance(6 * DAY)  # "old" looked 8 days ago: outside the 7-day lookback
    rig.decide(catalog(clock, "p1", price=80))
    assert rig.alerted("drop") == []  # nothing until the fan-out runs
    [step] = rig.fan_out()
    assert (step.enrolled, step.done) == (2, True)
    assert rig.alerted("drop") == ["ann", "bob"]
    intent = rig.intents()[0]
    assert intent.template_id == "drop" and intent.event_id.startswith("catalog-")
    props = intent.context["event"]["properties"]
    assert intent.context["event"]["name"] == "Price Dropped"
    assert (props["product_id"], props["price"], props["previous_price"]) == ("p1", 80, 100)
    [job] = rig.rows(schema.catalog_fanouts, "id")
    assert (job.state, job.enrolled) == ("done", 2)


def test_at_most_one_alert_per_contact_and_product_per_window(
    rig: CatalogRig, clock: ManualClock
) -> None:
    rig.decide(catalog(clock, "p1", name="Shirt", price=100))
    rig.decide(track(clock, "ann", "Product Viewed", product_id="p1"))
    rig.decide(catalog(clock, "p1", price=80))
    rig.fan_out()
    clock.advance(DAY)
    rig.decide(track(clock, "ann", "Product Viewed", product_id="p1"))
    rig.decide(catalog(clock, "p1", price=60))  # another drop within the 3-day window
    [step] = rig.fan_out()
    assert (step.enrolled, step.skipped) == (0, 1)
    assert len(rig.alerted("drop")) == 1
    clock.advance(3 * DAY)
    rig.decide(track(clock, "ann", "Product Viewed", product_id="p1"))
    rig.decide(catalog(clock, "p1", price=40))  # the window has passed
    rig.fan_out()
    assert rig.alerted("drop") == ["ann", "ann"]


def test_back_in_stock_mails_those_who_looked_while_it_was_out(
    rig: CatalogRig, clock: ManualClock
) -> None:
    rig.decide(catalog(clock, "p1", name="Shirt", price=50, stock=3))
    rig.decide(track(clock, "early", "Product Viewed", product_id="p1"))  # in stock then
    rig.decide(catalog(clock, "p1", stock=0))
    clock.advance(60)
    rig.decide(
        track(clock, "ann", "Product Viewed", product_id="p1"),
        track(clock, "bob", "Product Added", product_id="p1"),
    )
    clock.advance(DAY)
    rig.decide(catalog(clock, "p1", stock=7))
    rig.fan_out()
    assert rig.alerted("restock") == ["ann", "bob"]
    assert rig.alerted("drop") == []
    [intent] = [i for i in rig.intents() if i.contact_id == "ann"]
    assert intent.context["event"]["name"] == "Back In Stock"


def test_a_large_audience_is_walked_a_chunk_per_transaction(
    rig: CatalogRig, clock: ManualClock, store: Store
) -> None:
    rig.decide(catalog(clock, "p1", name="Shirt", price=100))
    viewers = [f"u{n:04d}" for n in range(250)]
    for start in range(0, 250, 50):
        rig.decide(
            *(
                track(clock, u, "Product Viewed", product_id="p1")
                for u in viewers[start : start + 50]
            )
        )
    rig.decide(catalog(clock, "p1", price=50))
    fanout = Fanout(store, clock, rig.workflows, chunk=100)
    first = fanout.step()
    assert (first.enrolled, first.done) == (100, False)
    [job] = rig.rows(schema.catalog_fanouts, "id")
    assert (job.state, job.after, job.enrolled) == ("pending", "u0099", 100)
    # Between chunks the store is free: a decide batch commits (and its contact is counted).
    rig.decide(track(clock, "u0200", "Product Viewed", product_id="p9"))
    steps = [fanout.step(), fanout.step()]
    assert [s.enrolled for s in steps] == [100, 50] and steps[-1].done
    assert fanout.step().job_id is None
    assert rig.alerted("drop") == viewers
    # The walk decided again from the start (a crash before the cursor moved): nothing twice.
    with store.begin() as conn:
        conn.execute(sa.update(schema.catalog_fanouts).values(state="pending", after=None))
        conn.execute(sa.delete(schema.catalog_alerts))
    while fanout.step().job_id is not None:
        pass
    assert len(rig.intents()) == 250


def test_catalog_and_fan_out_on_sqlite_and_postgresql(any_store: Store, clock: ManualClock) -> None:
    rig = CatalogRig(any_store, clock, WorkflowRegistry([alert_workflow("drop", "price_drop")]))
    rig.decide(catalog(clock, "p1", name="Shirt", price=100))
    rig.decide(
        track(clock, "ann", "Product Viewed", product_id="p1"),
        track(clock, "ann", "Product Viewed", product_id="p2"),
        track(clock, "bob", "Product Added", product_id="p1", quantity=3),
    )
    rig.decide(track(clock, "ann", "Product Viewed", product_id="p1"))  # updates the row
    rig.decide(catalog(clock, "p1", price=70))
    steps = rig.fan_out(chunk=1)
    assert [s.enrolled for s in steps] == [1, 1, 0]
    assert rig.alerted("drop") == ["ann", "bob"]
    assert rig.interest("bob", "p1").cart_quantity == 3
    assert len(rig.rows(schema.product_pairs, "product_id")) == 2
