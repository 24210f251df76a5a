"""The catalog's part of a decide batch: products, carts, views, purchases, pairs and the
fan-out jobs a catalog change starts (real SQLite store, manual clock)."""

from __future__ import annotations

import pytest

from engine.clock import ManualClock
from engine.decide.registry import WorkflowRegistry
from engine.errors import WorkflowInvalid
from engine.store import Store, schema
from tests.engine.catalog.catalog_support import (
    CatalogRig,
    alert_workflow,
    catalog,
    track,
)


@pytest.fixture
def rig(store: Store, clock: ManualClock) -> CatalogRig:
    workflows = WorkflowRegistry(
        [alert_workflow("drop-10", "price_drop"), alert_workflow("restock", "back_in_stock")]
    )
    return CatalogRig(store, clock, workflows)


def test_catalog_events_describe_products_and_create_no_contact(
    rig: CatalogRig, clock: ManualClock
) -> None:
    t0 = clock.now()
    rig.decide(catalog(clock, "p1", name="Linen Shirt", price=100, currency="usd", stock=3))
    clock.advance(60)
    outcome = rig.decide(catalog(clock, "p1", price=80))
    product = rig.product("p1")
    assert (product.name, product.price, product.previous_price) == ("Linen Shirt", 80, 100)
    assert (product.currency, product.stock, product.source) == ("USD", 3, "catalog")
    assert (product.price_changed_at, product.stock_changed_at) == (t0 + 60, t0)
    assert outcome.processed == 1
    assert rig.rows(schema.contacts, "id") == []
    assert rig.rows(schema.activity, "id") == []


def test_shopper_events_fill_in_but_never_override_the_catalog(
    rig: CatalogRig, clock: ManualClock
) -> None:
    rig.decide(
        track(clock, "ann", "Product Viewed", product_id="p9", name="Mug", price=12.5),
        catalog(clock, "p1", name="Linen Shirt", price=100),
        track(clock, "ann", "Product Viewed", product_id="p1", name="Cheap!", price=1),
        # A value that does not fit is ignored; the event still counts.
        track(clock, "ann", "Product Viewed", product_id="p8", price="free", name="Tote"),
    )
    assert (rig.product("p9").name, rig.product("p9").price) == ("Mug", 12.5)
    assert rig.product("p9").source == "event"
    assert (rig.product("p1").name, rig.product("p1").price) == ("Linen Shirt", 100)
    assert (rig.product("p8").name, rig.product("p8").price) == ("Tote", None)
    assert rig.rows(schema.catalog_fanouts, "id") == []  # a shopper's lower price is no drop
    assert [r.name for r in rig.rows(schema.activity, "id")] == ["Product Viewed"] * 3


def test_cart_follows_adds_removes_and_the_order(rig: CatalogRig, clock: ManualClock) -> None:
    rig.decide(
        track(clock, "ann", "Product Added", product_id="p1", quantity=2),
        track(clock, "ann", "Product Added", product_id="p2"),
    )
    clock.advance(10)
    rig.decide(
        track(clock, "ann", "Product Added", product_id="p1"),
        track(clock, "ann", "Product Removed", product_id="p1"),
    )
    assert rig.interest("ann", "p1").cart_quantity == 2
    assert rig.interest("ann", "p2").cart_quantity == 1
    clock.advance(10)
    bought_at = clock.now()
    order = {"order_id": "o1", "products": [{"product_id": "p1", "quantity": 2}]}
    rig.decide(track(clock, "ann", "Order Completed", **order))
    p1, p2 = rig.interest("ann", "p1"), rig.interest("ann", "p2")
    assert (p1.cart_quantity, p1.bought_at) == (0, bought_at)
    assert (p2.cart_quantity, p2.bought_at) == (0, None)  # the order emptied the cart


def test_views_while_out_of_stock_are_remembered(rig: CatalogRig, clock: ManualClock) -> None:
    rig.decide(catalog(clock, "p1", name="Shirt", stock=0), catalog(clock, "p2", stock=4))
    looked = clock.now()
    rig.decide(
        track(clock, "ann", "Product Viewed", product_id="p1"),
        track(clock, "ann", "Product Viewed", product_id="p2"),
    )
    assert rig.interest("ann", "p1").looked_out_at == looked
    assert rig.interest("ann", "p2").looked_out_at is None


def test_products_viewed_or_bought_together_become_pairs(
    rig: CatalogRig, clock: ManualClock
) -> None:
    rig.decide(track(clock, "ann", "Product Viewed", product_id="a"))
    clock.advance(60)
    rig.decide(
        track(clock, "ann", "Product Viewed", product_id="b"),
        track(clock, "ann", "Product Viewed", product_id="b"),  # a second look: no new pair
    )
    clock.advance(2 * 86_400)  # a day apart: not looked at together
    rig.decide(track(clock, "ann", "Product Viewed", product_id="c"))
    order = {"products": [{"product_id": "a"}, {"product_id": "d"}]}
    rig.decide(track(clock, "bob", "Order Completed", **order))
    pairs = {
        (r.product_id, r.other_id): r.score for r in rig.rows(schema.product_pairs, "product_id")
    }
    assert pairs == {("a", "b"): 1, ("b", "a"): 1, ("a", "d"): 2, ("d", "a"): 2}


def test_a_price_drop_of_at_least_the_threshold_starts_a_fan_out(
    rig: CatalogRig, clock: ManualClock
) -> None:
    rig.workflows.add(alert_workflow("drop-30", "price_drop", min_drop_percent=30))
    rig.decide(catalog(clock, "p1", name="Shirt", price=100))
    assert rig.decide(catalog(clock, "p1", price=95)).fanouts == []  # 5 %: below both
    outcome = rig.decide(catalog(clock, "p1", price=76))  # 20 % below 95
    [job] = rig.rows(schema.catalog_fanouts, "id")
    assert outcome.fanouts == [job.id]
    assert (job.workflow_id, job.kind, job.product_id, job.state) == (
        "drop-10", "price_drop", "p1", "pending",
    )  # fmt: skip
    assert job.event["name"] == "Price Dropped"
    props = job.event["properties"]
    assert (props["price"], props["previous_price"], props["drop_percent"]) == (76, 95, 20.0)
    assert rig.decide(catalog(clock, "p1", price=50)).fanouts != []  # 34 %: both workflows
    assert sorted(j.workflow_id for j in rig.rows(schema.catalog_fanouts, "id")) == [
        "drop-10", "drop-10", "drop-30",
    ]  # fmt: skip


def test_a_product_first_described_by_the_catalog_starts_nothing(
    rig: CatalogRig, clock: ManualClock
) -> None:
    # The shopper said 500; the catalog's first word (80) is no "drop" from a browser's value.
    rig.decide(track(clock, "ann", "Product Viewed", product_id="p1", price=500))
    rig.decide(catalog(clock, "p1", price=80, stock=0))
    rig.decide(catalog(clock, "p2", stock=5))  # stock not known before: not a restock
    assert rig.rows(schema.catalog_fanouts, "id") == []


def test_a_restock_starts_the_back_in_stock_fan_out_once(
    rig: CatalogRig, clock: ManualClock
) -> None:
    rig.decide(catalog(clock, "p1", name="Shirt", stock=0))
    restock = catalog(clock, "p1", stock=12)
    rig.decide(restock)
    rig.decide(restock)  # the same message again (a redelivery): no second job
    rig.decide(catalog(clock, "p1", stock=20))  # more stock: not back in stock again
    [job] = rig.rows(schema.catalog_fanouts, "id")
    assert (job.workflow_id, job.kind) == ("restock", "back_in_stock")
    assert job.event["name"] == "Back In Stock" and job.event["properties"]["stock"] == 12


def test_a_bad_catalog_event_is_a_dead_letter_and_changes_nothing(
    rig: CatalogRig, clock: ManualClock
) -> None:
    rig.decide(catalog(clock, "p1", name="Shirt", price=100))
    outcome = rig.decide(
        catalog(clock, "p1", price=-5),
        catalog(clock, "p1", stock="lots"),
        track(clock, "feed", "Product Updated", name="no id"),
    )
    assert outcome.dead_letters == 3
    reasons = sorted(r.reason for r in rig.rows(schema.dead_letters, "created_at"))
    assert reasons == [
        "properties.price: must be a number of at least 0",
        "properties.product_id: is required (text of 1 to 255 characters)",
        "properties.stock: must be a whole number",
    ]
    assert rig.product("p1").price == 100


@pytest.mark.parametrize(
    ("trigger", "problem"),
    [
        ({"catalog": "price_up", "lookback": "7d", "window": "7d"}, "must be one of"),
        ({"catalog": "price_drop", "lookback": "7d", "window": "7d"}, "min_drop_percent"),
        (
            {"catalog": "price_drop", "min_drop_percent": 150, "lookback": "7d", "window": "7d"},
            "less than 100",
        ),
        ({"catalog": "back_in_stock", "window": "7d"}, "needs lookback"),
        ({"catalog": "back_in_stock", "lookback": "7 days", "window": "7d"}, "lookback: bad"),
        (
            {"catalog": "back_in_stock", "lookback": "7d", "window": "7d", "min_drop_percent": 5},
            "unknown key(s) min_drop_percent",
        ),
    ],
)
def test_catalog_trigger_mistakes_are_named(trigger: dict[str, object], problem: str) -> None:
    from engine.decide.workflow import parse_workflow

    with pytest.raises(WorkflowInvalid, match="trigger") as caught:
        parse_workflow(
            {
                "id": "w",
                "name": "w",
                "category": "marketing",
                "trigger": trigger,
                "steps": [{"id": "s", "type": "send", "template": "t"}],
            },
            source="w.toml",
        )
    assert problem in str(caught.value)
