"""Catalog data at send time (the cart at current prices and stock, recently viewed,
recommendations) through the starter templates, and the re-check that drops an alert the
catalog took back (real SQLite store, manual clock)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from engine.catalog.send_data import alert_stale, attach
from engine.clock import ManualClock
from engine.decide.registry import WorkflowRegistry
from engine.render import Renderer, load_template_dir
from engine.store import Store
from tests.engine.catalog.catalog_support import CatalogRig, alert_workflow, catalog, track

TEMPLATES = Path(__file__).resolve().parents[3] / "templates" / "emails"
SHOP = {"name": "Northwind", "url": "https://northwind.example", "address": "1 Quay St"}


@pytest.fixture
def rig(store: Store, clock: ManualClock) -> CatalogRig:
    rig = CatalogRig(store, clock, WorkflowRegistry([alert_workflow("drop", "price_drop")]))
    rig.decide(
        catalog(clock, "shirt", name="Linen Shirt", price=60, currency="USD", stock=10,
                url="/p/shirt"),
        catalog(clock, "apron", name="Apron", price=40, currency="USD", stock=2, url="/p/apron"),
        catalog(clock, "mug", name="Mug", price=12, currency="USD", stock=0),
        catalog(clock, "tote", name="Tote", price=20, currency="USD", stock=8, url="/p/tote"),
        catalog(clock, "cap", name="Cap", price=15, currency="USD", url="/p/cap"),
    )  # fmt: skip
    # Other shoppers pair the shirt with the mug (sold out), the tote and the cap.
    for user, other in (
        ("o1", "mug"),
        ("o2", "mug"),
        ("o3", "tote"),
        ("o4", "tote"),
        ("o5", "cap"),
    ):
        rig.decide(track(clock, user, "Product Viewed", product_id="shirt"))
        clock.advance(1)
        rig.decide(track(clock, user, "Product Viewed", product_id=other))
    return rig


def context(event: str, **properties: Any) -> dict[str, Any]:
    return {"event": {"name": event, "properties": properties, "ts": 0.0}}


def test_the_cart_and_recommendations_are_current(rig: CatalogRig, clock: ManualClock) -> None:
    rig.decide(
        track(clock, "ann", "Product Viewed", product_id="shirt"),
        track(clock, "ann", "Product Added", product_id="apron", quantity=2, price=45),
    )
    clock.advance(60)
    rig.decide(track(clock, "ann", "Product Added", product_id="shirt"))
    rig.decide(catalog(clock, "apron", price=35))  # cheaper since she added it
    ctx = context("Product Added", product_id="shirt")
    assert attach(rig.store, [("ann", ctx)], clock.now()) == 1
    assert [(i["product_id"], i["quantity"], i["price"]) for i in ctx["cart"]] == [
        ("shirt", 1, 60), ("apron", 2, 35),
    ]  # fmt: skip
    assert ctx["cart"][1]["stock_note"] == "Only 2 left" and ctx["cart"][1]["low_stock"]
    assert ctx["cart_total"] == 60 + 70
    assert ctx["product"]["name"] == "Linen Shirt"
    assert [p["product_id"] for p in ctx["recently_viewed"]] == ["shirt"]
    # Paired with the shirt: tote (2), mug (2, sold out: left out), cap (1).
    assert [p["product_id"] for p in ctx["recommendations"]] == ["tote", "cap"]

    renderer = Renderer(load_template_dir(TEMPLATES))
    ctx.update(contact={"first_name": "Ann"}, properties={}, shop=SHOP, unsubscribe_url="u")
    text = renderer.render("abandoned-cart", ctx).text
    assert "Linen Shirt" in text and "$60.00" in text
    assert "$35.00 \u00d7 2" in text and "Only 2 left" in text and "$45.00" not in text
    assert "You might also like" in text and "Tote" in text and "Mug" not in text


def test_browse_abandonment_shows_the_product_as_it_is_now(
    rig: CatalogRig, clock: ManualClock
) -> None:
    rig.decide(track(clock, "bob", "Product Viewed", product_id="apron", name="Apron", price=40))
    rig.decide(catalog(clock, "apron", price=30, stock=1))
    ctx = context("Product Viewed", product_id="apron", name="Apron", price=40)
    attach(rig.store, [("bob", ctx)], clock.now())
    ctx.update(properties=ctx["event"]["properties"], shop=SHOP, unsubscribe_url="u")
    rendered = Renderer(load_template_dir(TEMPLATES)).render("browse-abandonment", ctx)
    assert "$30.00 \u00b7 Only 1 left" in rendered.text and "$40.00" not in rendered.text
    assert rendered.subject == "Still thinking about the Apron?"


def test_an_alert_the_catalog_took_back_is_stale(rig: CatalogRig, clock: ManualClock) -> None:
    drop = context("Price Dropped", product_id="shirt", price=50, previous_price=60)
    restock = context("Back In Stock", product_id="mug", stock=4)
    attach(rig.store, [("ann", drop), ("ann", restock)], clock.now())
    assert alert_stale(drop) == "expired: the price of shirt went back up (50 -> 60)"
    assert alert_stale(restock) == "expired: mug is out of stock again"
    rig.decide(catalog(clock, "shirt", price=45), catalog(clock, "mug", stock=4))
    drop, restock = drop | {"product": None}, restock | {"product": None}
    attach(rig.store, [("ann", drop), ("ann", restock)], clock.now())
    assert alert_stale(drop) is None and alert_stale(restock) is None
    # An ordinary event is never stale, whatever its product does.
    viewed = context("Product Viewed", product_id="mug", price=1)
    attach(rig.store, [("ann", viewed)], clock.now())
    assert viewed["product"]["in_stock"] is True and alert_stale(viewed) is None
